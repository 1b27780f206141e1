"""Write a synthetic PET volume as a DICOM series (PET Image Storage, one file per slice).

Geometry follows the DICOM patient coordinate system (LPS): the series'
ImageOrientationPatient, ImagePositionPatient and PixelSpacing are derived from
the volume's RAS voxel-to-world affine, so dcm2niix reproduces that affine.
UIDs are derived from caller-given strings, so the same inputs give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

_LPS = np.diag([-1.0, -1.0, 1.0])


def stable_uid(*parts: object) -> str:
    """A DICOM UID that depends only on ``parts`` (deterministic, valid length)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


@dataclass
class PetSeriesInfo:
    """Header content of one synthetic PET series.

    Attributes
    ----------
    ptid : str
        ADNI subject ID, written as PatientID and PatientName.
    sex : str
        ``"M"`` or ``"F"``.
    age_years : int
        Age at the scan.
    acq_datetime : str
        ``YYYYMMDDhhmmss`` of the acquisition start.
    description : str
        SeriesDescription (the IDA description).
    series_number : int
        SeriesNumber.
    uid_seed : tuple
        Strings the UIDs are derived from (seed, PTID, image ID...).
    tracer : str
        ``"FDG"`` or ``"AV45"``.
    frame_minutes : float
        Duration of each frame in minutes (the whole scan for static images).
    start_minutes : float
        Acquisition start after injection, minutes.
    extra : dict
        Further keywords set on every slice.
    """

    ptid: str
    sex: str
    age_years: int
    acq_datetime: str
    description: str
    series_number: int
    uid_seed: tuple
    tracer: str = "FDG"
    frame_minutes: float = 30.0
    start_minutes: float = 30.0
    extra: dict = field(default_factory=dict)


def _geometry(vox2world: np.ndarray) -> tuple[list[float], list[float], np.ndarray, float]:
    """IOP, PixelSpacing, slice step (LPS) and slice spacing of a RAS affine."""
    lin = _LPS @ vox2world[:3, :3]
    col_step, row_step, slice_step = lin[:, 0], lin[:, 1], lin[:, 2]
    dc, dr, ds = (float(np.linalg.norm(v)) for v in (col_step, row_step, slice_step))
    rowdir, coldir = col_step / dc, row_step / dr
    normal = np.cross(rowdir, coldir)
    if abs(float(np.dot(normal, slice_step / ds)) - 1.0) > 1e-6:
        raise ValueError(
            "PET grid: the slice axis must be orthogonal to the image plane (right-handed)"
        )
    iop = [float(v) for v in np.concatenate([rowdir, coldir])]
    return iop, [dr, dc], slice_step, ds


def _ds(value: float) -> str:
    """Format a float for a DICOM DS element (at most 16 characters)."""
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.8e}"[:16]


@dataclass(frozen=True)
class _SeriesLayout:
    """What every slice of one series shares: sizes, geometry, scaling, UIDs and times."""

    ncol: int
    nrow: int
    nslice: int
    nframe: int
    iop: list[float]
    spacing: list[float]
    slice_step: np.ndarray
    slice_mm: float
    origin: np.ndarray
    slope: float
    uids: tuple[str, str, str]  # study, series, frame of reference
    date: str
    time: str


def _series_layout(vol: np.ndarray, vox2world: np.ndarray, info: PetSeriesInfo) -> _SeriesLayout:
    """The shared layout of a (C, R, K, T) volume written on the grid ``vox2world``."""
    ncol, nrow, nslice, nframe = vol.shape
    iop, spacing, slice_step, slice_mm = _geometry(vox2world)
    uids = tuple(
        stable_uid(kind, *info.uid_seed) for kind in ("study", "series", "frame-of-reference")
    )
    return _SeriesLayout(
        ncol,
        nrow,
        nslice,
        nframe,
        iop,
        spacing,
        slice_step,
        slice_mm,
        origin=_LPS @ vox2world[:3, 3],
        slope=max(float(vol.max()), 1e-6) / 32000.0,
        uids=uids,
        date=info.acq_datetime[:8],
        time=info.acq_datetime[8:14],
    )


def _frame_time(start: str, t: int, frame_minutes: float) -> str:
    """``hhmmss`` of frame ``t`` of a series started at ``start`` (``hhmmss``)."""
    hh, mm, ss = int(start[:2]), int(start[2:4]), int(start[4:6])
    sec = hh * 3600 + mm * 60 + ss + int(t * frame_minutes * 60)
    return f"{sec // 3600 % 24:02d}{sec // 60 % 60:02d}{sec % 60:02d}"


def _radiopharmaceutical(info: PetSeriesInfo, start: str) -> Dataset:
    """The RadiopharmaceuticalInformationSequence item (FDG or florbetapir, F-18)."""
    radio = Dataset()
    radio.Radiopharmaceutical = "Florbetapir" if info.tracer == "AV45" else "Fluorodeoxyglucose"
    radio.RadiopharmaceuticalStartTime = start
    radio.RadionuclideTotalDose = "370000000"
    radio.RadionuclideHalfLife = _ds(6586.2)
    code = Dataset()
    code.CodeValue = "C-111A1"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "^18^Fluorine"
    radio.RadionuclideCodeSequence = [code]
    return radio


def _study_fields(ds: Dataset, info: PetSeriesInfo, lay: _SeriesLayout) -> None:
    """Patient, study and series elements (the same in every slice of the series)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = PositronEmissionTomographyImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = lay.date
    ds.StudyTime = ds.SeriesTime = lay.time
    ds.Modality = "PT"
    ds.Manufacturer = "fusion3d synthetic"
    ds.InstitutionName = "fusion3d"
    ds.StudyDescription = "ADNI Brain PET"
    ds.SeriesDescription = info.description
    ds.PatientName = info.ptid
    ds.PatientID = info.ptid
    ds.PatientSex = info.sex
    ds.PatientAge = f"{int(info.age_years):03d}Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = lay.uids
    ds.StudyID = "1"
    ds.SeriesNumber = info.series_number
    ds.PatientPosition = "HFS"
    ds.RadiopharmaceuticalInformationSequence = [_radiopharmaceutical(info, lay.time)]


def _frame_fields(ds: Dataset, info: PetSeriesInfo, lay: _SeriesLayout, t: int) -> None:
    """PET frame elements: timing, units, corrections."""
    start_ms = (info.start_minutes + t * info.frame_minutes) * 60000.0
    ds.AcquisitionTime = ds.ContentTime = _frame_time(lay.time, t, info.frame_minutes)
    ds.AcquisitionNumber = t + 1
    ds.NumberOfSlices = lay.nslice
    ds.NumberOfTimeSlices = lay.nframe
    ds.FrameReferenceTime = _ds(start_ms + info.frame_minutes * 30000.0)
    ds.ActualFrameDuration = int(round(info.frame_minutes * 60000.0))
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["DYNAMIC" if lay.nframe > 1 else "STATIC", "IMAGE"]
    ds.DecayCorrection = "START"
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM"]


def _image_fields(ds: Dataset, lay: _SeriesLayout, k: int) -> None:
    """Image-plane geometry and pixel description of slice ``k``."""
    position = lay.origin + k * lay.slice_step
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in lay.iop]
    ds.PixelSpacing = [_ds(v) for v in lay.spacing]
    ds.SliceThickness = _ds(lay.slice_mm)
    ds.SliceLocation = _ds(float(position[2]))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = lay.nrow
    ds.Columns = lay.ncol
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = _ds(lay.slope)
    ds.RescaleType = "BQML"


def _slice_dataset(info: PetSeriesInfo, lay: _SeriesLayout, t: int, k: int) -> Dataset:
    """The header of slice ``k`` of frame ``t`` (InstanceNumber ``t * nslice + k + 1``)."""
    number = t * lay.nslice + k + 1
    sop_uid = stable_uid("sop", number, *info.uid_seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    _study_fields(ds, info, lay)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = number
    ds.ImageIndex = number
    _frame_fields(ds, info, lay, t)
    _image_fields(ds, lay, k)
    for key, value in info.extra.items():
        setattr(ds, key, value)
    return ds


def write_pet_series(
    volume: np.ndarray,
    vox2world: np.ndarray,
    out_dir: str | os.PathLike,
    info: PetSeriesInfo,
    file_name: Callable[[int], str],
) -> list[Path]:
    """Write ``volume`` as a PET DICOM series, one file per slice (and frame).

    Parameters
    ----------
    volume : array (C, R, K) or (C, R, K, T)
        Activity (Bq/mL), indexed (column, row, slice[, frame]).
    vox2world : (4, 4) array
        RAS voxel-to-world affine of the (column, row, slice) indices.
    out_dir : path
        Folder receiving the files (created if needed).
    info : PetSeriesInfo
        Header content.
    file_name : callable
        Maps the 1-based InstanceNumber to a file name.

    Returns
    -------
    list of Path
        The written files, in InstanceNumber order.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim == 3:
        vol = vol[..., None]
    if vol.ndim != 4 or min(vol.shape) < 1:
        raise ValueError(f"PET volume must be 3D or 4D, got shape {volume.shape}")
    if not np.isfinite(vol).all() or vol.min() < 0:
        raise ValueError("PET volume must be finite and non-negative")
    lay = _series_layout(vol, vox2world, info)
    # (frame, slice, row, column): each slice is then a contiguous block of bytes.
    pixels = np.ascontiguousarray(np.rint(vol / lay.slope).astype(np.int16).transpose(3, 2, 1, 0))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in range(lay.nframe):
        for k in range(lay.nslice):
            ds = _slice_dataset(info, lay, t, k)
            ds.PixelData = pixels[t, k].tobytes()
            path = out / file_name(int(ds.InstanceNumber))
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written
