"""Builders of small fake LONI IDA downloads (DICOM via pydicom, NIfTI via nibabel) for the tests.

Everything follows the real IDA naming: ``ADNI/<PTID>/<Description>/<date>/<I|S...>/`` with files
named ``ADNI_<PTID>_<MR|PT>_<Desc>_Br_<17 digits>_S<series>_I<image>.<ext>``.
"""

from __future__ import annotations

import csv
import datetime as dt
import struct
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from fusion3d.ingest.manifest import IDA_HEADER

FULL_HEADER = IDA_HEADER
PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.128"
MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"


def folder_description(description: str) -> str:
    """The IDA folder form of a description: spaces and ``;`` become ``_``, commas stay."""
    return description.replace(" ", "_").replace(";", "_")


def image_folder(
    download: Path, ptid: str, description: str, date: str, leaf: str, time: str = "10_24_06.0"
) -> Path:
    """``download/ADNI/<PTID>/<Desc>/<YYYY-MM-DD_HH_MM_SS.0>/<leaf>`` (created)."""
    folder = (
        Path(download) / "ADNI" / ptid / folder_description(description) / f"{date}_{time}" / leaf
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def file_name(
    ptid: str,
    modality: str,
    description: str,
    series: int,
    image: int,
    ext: str,
    n: int | None,
    pet_token: str = "PT",
) -> str:
    """The IDA file name of one file of an image (``pet_token`` "PET" for the newer IDA names)."""
    mod = "MR" if modality.upper().startswith("MR") else pet_token
    extra = f"_{n}" if n is not None else ""
    return (
        f"ADNI_{ptid}_{mod}_{folder_description(description)}_Br_20120203154609620{extra}"
        f"_S{series}_I{image}.{ext}"
    )


def write_dicom_series(
    download: Path,
    *,
    ptid: str,
    description: str,
    image_id: int,
    date: str = "2012-01-31",
    series_id: int | None = None,
    shape: tuple[int, int, int] = (6, 5, 4),
    pixel_spacing: tuple[float, float] = (2.0, 1.5),
    slice_spacing: float = 2.5,
    origin: Sequence[float] = (-10.0, -20.0, -30.0),
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    n_frames: int = 1,
    modality: str = "PT",
    data: np.ndarray | None = None,
) -> list[Path]:
    """Write one DICOM series (one file per slice and frame) in the IDA layout.

    ``shape`` is ``(rows, columns, slices)``; ``data`` (optional) has shape
    ``(rows, columns, slices[, frames])`` of non-negative integers. ``pixel_spacing`` is the
    DICOM ``PixelSpacing`` (row spacing, column spacing). Returns the files in instance order.
    """
    rows, cols, nslices = shape
    series_id = series_id if series_id is not None else image_id + 1000
    if data is None:
        rng = np.random.default_rng(image_id)
        data = rng.integers(10, 1000, size=(rows, cols, nslices, n_frames)).astype(np.uint16)
    if data.ndim == 3:
        data = data[..., None]
    folder = image_folder(download, ptid, description, date, f"I{image_id}")
    row_dir = np.asarray(orientation[:3], dtype=float)
    col_dir = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row_dir, col_dir)
    study_uid, series_uid = generate_uid(), generate_uid()
    sop_class = PET_SOP_CLASS if modality == "PT" else MR_SOP_CLASS
    paths = []
    instance = 1
    for frame in range(n_frames):
        for k in range(nslices):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            sop_uid = generate_uid()
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.PatientID = ptid
            ds.PatientName = ptid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 1
            ds.InstanceNumber = instance
            ds.Modality = modality
            ds.SeriesDescription = description
            ds.StudyDate = date.replace("-", "")
            ds.SeriesDate = ds.StudyDate
            ds.AcquisitionDate = ds.StudyDate
            ds.AcquisitionTime = f"10{frame * 5:02d}00.000000"
            ds.SeriesTime = "100000.000000"
            ds.StudyTime = "100000.000000"
            position = np.asarray(origin, dtype=float) + k * slice_spacing * normal
            ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
            ds.PixelSpacing = [f"{pixel_spacing[0]:.4f}", f"{pixel_spacing[1]:.4f}"]
            ds.SliceThickness = f"{slice_spacing:.4f}"
            ds.Rows = rows
            ds.Columns = cols
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleSlope = "1"
            ds.RescaleIntercept = "0"
            if modality == "PT":
                ds.Units = "BQML"
                ds.NumberOfSlices = nslices
                ds.NumberOfTimeSlices = n_frames
                ds.ImageIndex = instance
                ds.FrameReferenceTime = str(frame * 300000)
                ds.ActualFrameDuration = 300000
            ds.PixelData = np.ascontiguousarray(data[:, :, k, frame].astype(np.uint16)).tobytes()
            path = folder / file_name(
                ptid, modality, description, series_id, image_id, "dcm", instance
            )
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
            instance += 1
    return paths


def write_nifti_image(
    download: Path,
    *,
    ptid: str,
    description: str,
    image_id: int,
    date: str = "2012-01-31",
    series_id: int | None = None,
    modality: str = "MRI",
    shape: tuple[int, int, int] = (6, 7, 5),
    affine: np.ndarray | None = None,
    frames: Sequence[np.ndarray] | None = None,
    data: np.ndarray | None = None,
    compress: bool = False,
) -> list[Path]:
    """Write an image as NIfTI in the IDA layout: one file, or one file per frame if ``frames``."""
    series_id = series_id if series_id is not None else image_id + 1000
    affine = np.diag([1.0, 1.2, 1.5, 1.0]) if affine is None else affine
    folder = image_folder(download, ptid, description, date, f"S{series_id}")
    ext = "nii.gz" if compress else "nii"
    if frames is None:
        if data is None:
            rng = np.random.default_rng(image_id)
            data = rng.uniform(1, 100, size=shape).astype(np.float32)
        frames = [data]
        numbers: list[int | None] = [None]
    else:
        numbers = list(range(1, len(frames) + 1))
    paths = []
    for number, frame in zip(numbers, frames, strict=True):
        path = folder / file_name(ptid, modality, description, series_id, image_id, ext, number)
        nib.save(nib.Nifti1Image(np.asarray(frame), affine), path)
        paths.append(path)
    return paths


def write_manifest(
    path: Path,
    rows: Sequence[dict],
    *,
    header: Sequence[str] = FULL_HEADER,
    bom: bool = False,
    blank_lines: bool = False,
) -> Path:
    """Write an IDA collection CSV (all fields quoted); missing keys are written empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(col, "") for col in header])
            if blank_lines:
                handle.write("\r\n")
    return path


def manifest_row(
    image_id: int | str,
    ptid: str,
    description: str,
    date: str,
    *,
    modality: str = "MRI",
    group: str = "CN",
    sex: str = "F",
    age: str = "72",
    visit: str = "1",
    fmt: str = "NiFTI",
) -> dict:
    """One manifest row; ``date`` is ISO (``YYYY-MM-DD``) and is written as M/D/YYYY."""
    day = dt.date.fromisoformat(date)
    return {
        "Image Data ID": image_id if isinstance(image_id, str) else f"I{image_id}",
        "Subject": ptid,
        "Group": group,
        "Sex": sex,
        "Age": age,
        "Visit": visit,
        "Modality": modality,
        "Description": description,
        "Type": "Processed",
        "Acq Date": f"{day.month}/{day.day}/{day.year}",
        "Format": fmt,
        "Downloaded": "",
    }


T1_DESC = "MPR; GradWarp; B1 Correction; N3; Scaled"
FDG_DESC = "Coreg, Avg, Std Img and Vox Siz, Uniform Resolution"


def add_subject(
    download: Path,
    ptid: str,
    *,
    t1_id: int,
    pet_id: int,
    t1_date: str = "2012-01-20",
    pet_date: str = "2012-01-31",
    group: str = "CN",
    t1_desc: str = T1_DESC,
    pet_desc: str = FDG_DESC,
) -> list[dict]:
    """Write a T1 (NIfTI) and an FDG PET (DICOM) for one subject; return their manifest rows."""
    write_nifti_image(download, ptid=ptid, description=t1_desc, image_id=t1_id, date=t1_date)
    write_dicom_series(download, ptid=ptid, description=pet_desc, image_id=pet_id, date=pet_date)
    return [
        manifest_row(t1_id, ptid, t1_desc, t1_date, group=group),
        manifest_row(pet_id, ptid, pet_desc, pet_date, modality="PET", group=group, fmt="DCM"),
    ]


# ----------------------------------------------------------------------------- ECAT 7
# nibabel reads ECAT 7 but cannot create one from an array (``EcatImage.from_image`` raises
# NotImplementedError; ``to_filename`` only rewrites an image loaded from a file), so the test
# files are built here byte by byte from the ECAT 7.2 layout (CTI "ECAT Software Operating
# Instructions 7.2", Appendix B; the same byte offsets as minc-tools' ECAT header table):
# big-endian, 512-byte blocks numbered from 1; block 1 the main header, block 2 the matrix
# list, then per frame one subheader block followed by the voxels (x fastest, then y, planes).
ECAT_BLOCK = 512
#: ECAT 7.2 main header: (offset, struct format) of the fields written.
ECAT_MAIN = {
    "magic_number": (0, "14s"),
    "sw_version": (46, ">h"),
    "system_type": (48, ">h"),
    "file_type": (50, ">h"),
    "ecat_calibration_factor": (144, ">f"),
    "calibration_units": (148, ">h"),
    "study_description": (296, "32s"),
    "patient_orientation": (330, ">h"),
    "num_planes": (352, ">h"),
    "num_frames": (354, ">h"),
    "data_units": (466, "32s"),
}
#: ECAT 7.2 image subheader: (offset, struct format) of the fields written.
ECAT_SUB = {
    "data_type": (0, ">h"),
    "num_dimensions": (2, ">h"),
    "x_dimension": (4, ">h"),
    "y_dimension": (6, ">h"),
    "z_dimension": (8, ">h"),
    "x_offset": (10, ">f"),
    "y_offset": (14, ">f"),
    "z_offset": (18, ">f"),
    "scale_factor": (26, ">f"),
    "x_pixel_size": (34, ">f"),
    "y_pixel_size": (38, ">f"),
    "z_pixel_size": (42, ">f"),
    "frame_duration": (46, ">i"),
    "frame_start_time": (50, ">i"),
}


def _pack_block(fields: dict, values: dict) -> bytearray:
    """One 512-byte block with ``values`` written at the offsets of ``fields``."""
    block = bytearray(ECAT_BLOCK)
    for name, value in values.items():
        offset, fmt = fields[name]
        struct.pack_into(fmt, block, offset, value)
    return block


def ecat7_bytes(
    frames: Sequence[np.ndarray],
    *,
    voxel_mm: tuple[float, float, float] = (2.0, 2.0, 2.5),
    scale_factors: Sequence[float] | None = None,
    calibration: float = 1.0,
    orientation: int = 3,
    file_type: int = 7,
    offsets_cm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    frame_duration_ms: int = 300_000,
) -> bytes:
    """An ECAT 7 image file (Volume16, Sun int16) holding ``frames`` (each (x, y, planes)).

    ``frames`` are the stored integers; a reader should give ``stored x scale_factor x
    calibration`` per frame. ``orientation`` is the main header's ``patient_orientation``
    (3 = head-first supine, 8 = unknown), ``file_type`` its file type (7 = Volume16).
    """
    n = len(frames)
    assert 1 <= n <= 31, "one matrix-list block holds 31 frames"
    scale_factors = list(scale_factors or [1.0] * n)
    shape = frames[0].shape
    main = _pack_block(
        ECAT_MAIN,
        {
            "magic_number": b"MATRIX72",
            "sw_version": 72,
            "system_type": 962,
            "file_type": file_type,
            "ecat_calibration_factor": calibration,
            "calibration_units": 1,
            "study_description": b"FDG BRAIN",
            "patient_orientation": orientation,
            "num_planes": shape[2],
            "num_frames": n,
            "data_units": b"Bq/ml",
        },
    )
    directory = np.zeros((32, 4), dtype=">i4")
    directory[0] = (31 - n, 2, 0, n)
    body = bytearray()
    block = 3
    for k, (frame, scale) in enumerate(zip(frames, scale_factors, strict=True)):
        voxels = np.asarray(frame, dtype=">i2").tobytes(order="F")
        voxels += bytes(-len(voxels) % ECAT_BLOCK)
        n_blocks = len(voxels) // ECAT_BLOCK
        matrix_id = (k + 1) | (1 << 16) | (1 << 24)  # frame k+1, plane 1, gate 1
        directory[k + 1] = (matrix_id, block, block + n_blocks, 1)
        sub = {
            "data_type": 6,
            "num_dimensions": 3,
            "x_dimension": shape[0],
            "y_dimension": shape[1],
            "z_dimension": shape[2],
            "x_offset": offsets_cm[0],
            "y_offset": offsets_cm[1],
            "z_offset": offsets_cm[2],
            "scale_factor": scale,
            "x_pixel_size": voxel_mm[0] / 10.0,
            "y_pixel_size": voxel_mm[1] / 10.0,
            "z_pixel_size": voxel_mm[2] / 10.0,
            "frame_duration": frame_duration_ms,
            "frame_start_time": k * frame_duration_ms,
        }
        body += _pack_block(ECAT_SUB, sub) + voxels
        block += 1 + n_blocks
    return bytes(main) + directory.tobytes() + bytes(body)


def write_ecat_image(
    download: Path,
    *,
    ptid: str,
    image_id: int,
    description: str = "ADNI Brain PET: Raw FDG",
    date: str = "2012-01-31",
    series_id: int | None = None,
    frames: Sequence[np.ndarray] | None = None,
    pet_token: str = "PET",
    **ecat_kw,
) -> list[Path]:
    """Write one raw FDG as an ECAT 7 ``.v`` file in the IDA layout (``br_raw``, leaf ``I<id>``).

    ``frames`` default to three 6x5x4 frames of seeded integers; ``ecat_kw`` go to
    :func:`ecat7_bytes`.
    """
    series_id = series_id if series_id is not None else image_id + 1000
    if frames is None:
        rng = np.random.default_rng(image_id)
        frames = [rng.integers(10, 1000, size=(6, 5, 4)) for _ in range(3)]
    folder = image_folder(download, ptid, description, date, f"I{image_id}")
    name = file_name(ptid, "PET", description, series_id, image_id, "v", None, pet_token)
    path = folder / name.replace("_Br_", "_br_raw_")
    path.write_bytes(ecat7_bytes(frames, **ecat_kw))
    return [path]
