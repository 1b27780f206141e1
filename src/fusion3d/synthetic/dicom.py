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
import pydicom
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
    ncol, nrow, nslice, nframe = vol.shape
    iop, spacing, slice_step, slice_mm = _geometry(vox2world)
    origin = _LPS @ vox2world[:3, 3]
    slope = max(float(vol.max()), 1e-6) / 32000.0
    # (frame, slice, row, column): each slice is then a contiguous block of bytes.
    pixels = np.ascontiguousarray(np.rint(vol / slope).astype(np.int16).transpose(3, 2, 1, 0))

    study_uid = stable_uid("study", *info.uid_seed)
    series_uid = stable_uid("series", *info.uid_seed)
    frame_uid = stable_uid("frame-of-reference", *info.uid_seed)
    date, time = info.acq_datetime[:8], info.acq_datetime[8:14]
    nuclide = ("Fluorodeoxyglucose", "F^18^[^18^Fluorine]", 6586.2)
    if info.tracer == "AV45":
        nuclide = ("Florbetapir", "F^18^[^18^Fluorine]", 6586.2)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in range(nframe):
        start_ms = (info.start_minutes + t * info.frame_minutes) * 60000.0
        hh, mm, ss = int(time[:2]), int(time[2:4]), int(time[4:6])
        frame_sec = hh * 3600 + mm * 60 + ss + int(t * info.frame_minutes * 60)
        frame_time = f"{frame_sec // 3600 % 24:02d}{frame_sec // 60 % 60:02d}{frame_sec % 60:02d}"
        for k in range(nslice):
            number = t * nslice + k + 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
            sop_uid = stable_uid("sop", number, *info.uid_seed)
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.SOPClassUID = PositronEmissionTomographyImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = time
            ds.AcquisitionTime = ds.ContentTime = frame_time
            ds.Modality = "PT"
            ds.Manufacturer = "fusion3d synthetic"
            ds.InstitutionName = "fusion3d"
            ds.StudyDescription = "ADNI Brain PET"
            ds.SeriesDescription = info.description
            ds.PatientName = info.ptid
            ds.PatientID = info.ptid
            ds.PatientSex = info.sex
            ds.PatientAge = f"{int(info.age_years):03d}Y"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.StudyID = "1"
            ds.SeriesNumber = info.series_number
            ds.AcquisitionNumber = t + 1
            ds.InstanceNumber = number
            ds.ImageIndex = number
            ds.NumberOfSlices = nslice
            ds.NumberOfTimeSlices = nframe
            ds.FrameReferenceTime = _ds(start_ms + info.frame_minutes * 30000.0)
            ds.ActualFrameDuration = int(round(info.frame_minutes * 60000.0))
            ds.Units = "BQML"
            ds.CountsSource = "EMISSION"
            ds.SeriesType = ["DYNAMIC" if nframe > 1 else "STATIC", "IMAGE"]
            ds.DecayCorrection = "START"
            ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM"]
            ds.PatientPosition = "HFS"
            ds.ImagePositionPatient = [_ds(v) for v in origin + k * slice_step]
            ds.ImageOrientationPatient = [_ds(v) for v in iop]
            ds.PixelSpacing = [_ds(v) for v in spacing]
            ds.SliceThickness = _ds(slice_mm)
            ds.SliceLocation = _ds(float((origin + k * slice_step)[2]))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = nrow
            ds.Columns = ncol
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = _ds(slope)
            ds.RescaleType = "BQML"
            radio = Dataset()
            radio.Radiopharmaceutical = nuclide[0]
            radio.RadiopharmaceuticalStartTime = time
            radio.RadionuclideTotalDose = "370000000"
            radio.RadionuclideHalfLife = _ds(nuclide[2])
            code = Dataset()
            code.CodeValue = "C-111A1"
            code.CodingSchemeDesignator = "SRT"
            code.CodeMeaning = "^18^Fluorine"
            radio.RadionuclideCodeSequence = [code]
            ds.RadiopharmaceuticalInformationSequence = [radio]
            for key, value in info.extra.items():
                setattr(ds, key, value)
            ds.PixelData = pixels[t, k].tobytes()
            path = out / file_name(number)
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written


def read_series_geometry(path: str | os.PathLike) -> dict[str, object]:
    """Return a few header fields of one slice file (for tests and checks)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "Modality": ds.Modality,
        "SOPClassUID": str(ds.SOPClassUID),
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "PatientID": str(ds.PatientID),
        "SeriesDescription": str(ds.SeriesDescription),
        "InstanceNumber": int(ds.InstanceNumber),
    }
