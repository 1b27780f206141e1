"""Turn the files of one image into a checked 3D volume: DICOM via dcm2niix, NIfTI and ECAT 7
via nibabel (ECAT in :mod:`fusion3d.ingest.ecat`).

dcm2niix silently interpolates over a missing slice (it writes an ``_Eq_`` volume and exits 0),
so :func:`check_dicom_series` checks completeness first: contiguous InstanceNumbers, equal
spacing of the slice positions along the normal, one matrix size, complete pixel data.
Dynamic series (several frames), raw PET stored as one NIfTI per frame and the frames of ECAT
files are averaged into one static image by one function, :func:`average_frames`.

Every header is checked before its image is used (:mod:`fusion3d.ingest.headers`): a NIfTI's
raw header before nibabel loads it (what dcm2niix wrote included), the geometry of every
format after it is read; nibabel's own log lines are logged again with the file name.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from fusion3d.ingest.frames import ConversionError, stack_frames
from fusion3d.ingest.headers import (
    HeaderError,
    check_geometry,
    check_nifti_header,
    nibabel_messages,
    one_line,
    resolve_header_checks,
)

log = logging.getLogger("fusion3d.ingest")

_REQUIRED_TAGS = (
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
)


@dataclass
class ConvertedImage:
    """A checked 3D volume ready to write.

    Attributes
    ----------
    data
        3D float32 array (frames already averaged).
    affine
        4x4 voxel -> RAS mm.
    sidecar
        Metadata for the JSON sidecar (dcm2niix's when converted from DICOM).
    n_frames
        Number of frames averaged (1 for a static image).
    dtype
        The dtype to write (the source's for an unscaled single frame, else float32).
    flags
        Header flags ``{"flag", "reason"}`` (e.g. qform and sform disagree); not refusals.
    affine_source
        Which NIfTI affine was used ("sform" or "qform"; "" for ECAT).
    """

    data: np.ndarray
    affine: np.ndarray
    sidecar: dict = field(default_factory=dict)
    n_frames: int = 1
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    flags: list = field(default_factory=list)
    affine_source: str = ""


def find_dcm2niix() -> str:
    """Path of the dcm2niix binary: next to ``sys.executable`` (the PyPI wheel) or on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("dcm2niix", path=search)
    if found is None:
        raise ConversionError("dcm2niix not found next to the Python interpreter or on PATH")
    return found


def _read_header(path: Path):
    """One DICOM file's header, checked: not empty, readable, required tags, full pixel data.

    Returns ``(dataset, frames in the file)``.
    """
    if path.stat().st_size == 0:
        raise ConversionError(f"zero-byte file {path.name}")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for broken files
        raise ConversionError(f"unreadable DICOM {path.name} ({one_line(exc)})") from exc
    missing = [t for t in _REQUIRED_TAGS if t not in ds]
    if missing:
        raise ConversionError(f"DICOM {path.name} lacks {', '.join(missing)}")
    if "PixelData" not in ds:
        raise ConversionError(f"DICOM {path.name} has no pixel data")
    n_frames_file = int(getattr(ds, "NumberOfFrames", 1) or 1)
    expected = (
        int(ds.Rows)
        * int(ds.Columns)
        * (int(ds.BitsAllocated) // 8)
        * int(getattr(ds, "SamplesPerPixel", 1))
        * n_frames_file
    )
    syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    compressed = bool(syntax is not None and syntax.is_compressed)
    try:
        n_bytes = len(ds.PixelData)
    except Exception as exc:
        raise ConversionError(f"truncated pixel data in {path.name} ({one_line(exc)})") from exc
    if (not compressed and n_bytes < expected) or n_bytes == 0:
        raise ConversionError(
            f"truncated pixel data in {path.name} ({n_bytes} of {expected} bytes)"
        )
    return ds, n_frames_file


def _check_one_series(datasets: list) -> np.ndarray:
    """One series, one matrix size, one orientation, contiguous unique InstanceNumbers.

    Returns the orientation rows (one per file).
    """
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise ConversionError(f"{len(series)} DICOM series under one image ID")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise ConversionError(f"inconsistent Rows/Columns in the series: {sorted(sizes)}")
    orient = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if not np.allclose(orient, orient[0], atol=1e-4):
        raise ConversionError("inconsistent ImageOrientationPatient in the series")
    instances = sorted(int(ds.InstanceNumber) for ds in datasets)
    if len(set(instances)) != len(instances):
        raise ConversionError("duplicate InstanceNumber in the series")
    gaps = sorted(set(range(instances[0], instances[-1] + 1)) - set(instances))
    if gaps:
        shown = ", ".join(str(g) for g in gaps[:5])
        raise ConversionError(f"missing slice(s): InstanceNumber {shown} absent")
    return orient


def _check_slice_positions(datasets: list, orient: np.ndarray) -> tuple[int, int, float]:
    """Every slice position in every frame, equally spaced along the normal.

    Returns ``(n_slices, n_frames, slice_spacing)``.
    """
    normal = np.cross(orient[0, :3], orient[0, 3:])
    proj = np.array(
        [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in datasets]
    )
    positions, counts = np.unique(np.round(proj, 3), return_counts=True)
    if len(set(counts.tolist())) > 1:
        raise ConversionError(
            "missing slice(s): slice positions appear in unequal numbers of frames"
        )
    spacing = 0.0
    if len(positions) > 1:
        steps = np.diff(positions)
        spacing = float(np.median(steps))
        if spacing <= 1e-3:
            raise ConversionError("slice positions do not advance along the normal")
        bad = np.abs(steps - spacing) > max(0.01 * spacing, 1e-3)
        if bad.any():
            worst = float(steps[bad].max())
            raise ConversionError(
                f"missing slice(s) or unequal slice spacing: gap of {worst:.3f} mm "
                f"(expected {spacing:.3f} mm)"
            )
    return len(positions), int(counts[0]), spacing


def check_dicom_series(files: list[Path]) -> dict:
    """Check that ``files`` form one complete DICOM series before conversion.

    Returns
    -------
    dict
        ``n_files``, ``n_slices``, ``n_frames``, ``rows``, ``columns``, ``slice_spacing``.

    Raises
    ------
    ConversionError
        Zero-byte or unreadable file, truncated pixel data, missing tag, several series or
        matrix sizes, duplicate or missing InstanceNumbers, unequal slice spacing.
    """
    if not files:
        raise ConversionError("no DICOM files")
    headers = [_read_header(path) for path in files]
    if any(n > 1 for _, n in headers):  # enhanced multi-frame: geometry is per frame
        return {"n_files": len(files), "n_slices": None, "n_frames": None}
    datasets = [ds for ds, _ in headers]
    orient = _check_one_series(datasets)
    n_slices, n_frames, spacing = _check_slice_positions(datasets, orient)
    return {
        "n_files": len(files),
        "n_slices": n_slices,
        "n_frames": n_frames,
        "rows": int(datasets[0].Rows),
        "columns": int(datasets[0].Columns),
        "slice_spacing": spacing,
    }


def average_frames(data: np.ndarray) -> tuple[np.ndarray, int]:
    """Average the frames of a dynamic image (4th axis) into one static volume.

    One function serves every source format: a dynamic DICOM series (dcm2niix writes 4D), raw
    PET stored as one NIfTI per frame, and the frames of an ECAT 7 file. The frames are averaged
    with equal weights (ADNI's dynamic FDG frames are 6 x 5 min), in float64, and returned as
    float32 with the number of frames; a 3D ``data`` comes back unchanged with 1.
    """
    if data.ndim != 4:
        return data, 1
    return data.mean(axis=3, dtype=np.float64).astype(np.float32), int(data.shape[3])


def _finish(
    data: np.ndarray, affine: np.ndarray, sidecar: dict, source_dtype, scaled
) -> ConvertedImage:
    """Average frames, check the values (finite, not all zero) and choose the dtype to write."""
    data, n_frames = average_frames(data)
    if data.ndim != 3:
        raise ConversionError(f"expected a 3D or 4D image, got shape {data.shape}")
    finite = np.isfinite(data)
    if not finite.any():
        raise ConversionError("image holds only NaN/Inf values")
    if not finite.all():
        raise ConversionError(f"image holds {int((~finite).sum())} NaN/Inf voxels")
    if not np.any(data):
        raise ConversionError("image is empty (all zero)")
    dtype = np.dtype(np.float32)
    if n_frames == 1 and not scaled and source_dtype is not None:
        dtype = np.dtype(source_dtype)
    if n_frames > 1:
        sidecar = {**sidecar, "FramesAveraged": n_frames}
    return ConvertedImage(
        data.astype(np.float32), np.asarray(affine, float), sidecar, n_frames, dtype
    )


def _relog(name: str, messages: list[str]) -> None:
    """Log nibabel's captured messages about ``name`` with the file name."""
    for message in messages:
        log.warning("nibabel on %s: %s", name, message)


def _load_nifti_file(
    path: Path, checks: dict, name: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.dtype, bool, dict]:
    """Check the raw header (:func:`check_nifti_header`), then load one NIfTI file.

    Returns ``(data, affine, dtype on disk, scaled, header report)``.
    """
    name = name or path.name
    if path.stat().st_size == 0:
        raise ConversionError(f"zero-byte file {name}")
    with nibabel_messages() as messages:
        try:
            report = check_nifti_header(path, checks, name)
            img = nib.load(str(path))
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except HeaderError as exc:
            raise ConversionError(str(exc)) from exc
        except Exception as exc:  # nibabel raises many types for broken files
            raise ConversionError(f"corrupt NIfTI: {name}: {one_line(exc)}") from exc
        finally:
            _relog(name, messages)
    if not np.allclose(img.affine, report["affine"], atol=1e-4):
        raise ConversionError(f"invalid NIfTI header: {name}: nibabel read another affine")
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled = not (slope in (None, 1.0) and inter in (None, 0.0)) or (
        isinstance(slope, float) and np.isnan(slope)
    )
    return data, img.affine.copy(), img.get_data_dtype(), bool(scaled), report


def load_nifti_image(files: list[Path], checks: dict | None = None) -> ConvertedImage:
    """Load one NIfTI, or one NIfTI per frame (same grid), averaging frames into 3D.

    Every file's raw header is checked first (``checks``: resolved ``ingest.header_checks``,
    default :data:`fusion3d.ingest.headers.DEFAULT_HEADER_CHECKS`).
    """
    checks = checks or resolve_header_checks(None)
    loaded = [_load_nifti_file(p, checks) for p in files]
    flags = [f for *_, report in loaded for f in report["flags"]]
    source = loaded[0][4]["affine_source"]
    if len(loaded) == 1:
        data, affine, dtype, scaled, _ = loaded[0]
        img = _finish(data, affine, {}, dtype, scaled)
    else:
        frames = [(p.name, data, aff) for p, (data, aff, *_) in zip(files, loaded, strict=True)]
        data, affine = stack_frames(frames)
        img = _finish(data, affine, {}, None, True)
    img.flags, img.affine_source = flags, source
    return img


def dicom_to_nifti(files: list[Path], workdir: str | os.PathLike) -> tuple[Path, Path | None]:
    """Convert one checked DICOM series with dcm2niix (nipype ``Dcm2niix``) in a private folder.

    Returns the NIfTI and its JSON sidecar (``None`` if dcm2niix wrote none). The files live in a
    fresh folder under ``workdir`` that the caller removes.
    """
    from nipype.interfaces.dcm2nii import Dcm2niix

    logging.getLogger("nipype.interface").setLevel(logging.WARNING)
    binary = find_dcm2niix()
    tmp = Path(tempfile.mkdtemp(prefix="dcm2niix_", dir=workdir))
    src, out = tmp / "src", tmp / "out"
    src.mkdir()
    out.mkdir()
    for i, path in enumerate(files):
        os.symlink(os.path.realpath(path), src / f"{i:06d}.dcm")
    conv = Dcm2niix(
        source_dir=str(src),
        output_dir=str(out),
        out_filename="image",
        compress="y",
        bids_format=True,
        merge_imgs=False,
        single_file=False,
        terminal_output="allatonce",
    )
    conv.inputs.environ = {
        "PATH": os.pathsep.join([str(Path(binary).parent), os.environ.get("PATH", "")])
    }
    try:
        conv.run()
    except Exception as exc:  # nipype wraps a non-zero exit in RuntimeError/OSError
        raise ConversionError(f"dcm2niix failed ({str(exc).strip().splitlines()[-1]})") from exc
    volumes = sorted(out.glob("*.nii.gz")) + sorted(out.glob("*.nii"))
    if any("_Eq_" in v.name for v in volumes):
        raise ConversionError("dcm2niix interpolated over uneven slices (_Eq_ output)")
    if len(volumes) != 1:
        names = ", ".join(v.name for v in volumes) or "nothing"
        raise ConversionError(f"dcm2niix wrote {len(volumes)} images ({names}), expected 1")
    volume = volumes[0]
    sidecar = volume.with_name(volume.name.split(".nii")[0] + ".json")
    return volume, sidecar if sidecar.exists() else None


def _dicom_name(files: list[Path]) -> str:
    """How a converted DICOM series is named in reasons: its first file and the count."""
    more = f" + {len(files) - 1} files" if len(files) > 1 else ""
    return f"DICOM series {files[0].name}{more} (as written by dcm2niix)"


def _convert_dicom(files: list[Path], workdir, checks: dict) -> ConvertedImage:
    """Check and convert one DICOM series; what dcm2niix wrote goes through the NIfTI checks."""
    import json

    info = check_dicom_series(files)
    volume, sidecar_path = dicom_to_nifti(files, workdir)
    try:
        data, affine, dtype, scaled, report = _load_nifti_file(volume, checks, _dicom_name(files))
        sidecar = json.loads(sidecar_path.read_text()) if sidecar_path else {}
    finally:
        shutil.rmtree(volume.parent.parent, ignore_errors=True)
    if info.get("n_frames") and info["n_frames"] > 1 and data.ndim == 3:
        raise ConversionError(f"expected {info['n_frames']} frames, dcm2niix wrote one volume")
    img = _finish(data, affine, sidecar, dtype, scaled)
    img.flags, img.affine_source = report["flags"], report["affine_source"]
    return img


def convert_image(
    files: list[Path],
    fmt: str,
    workdir: str | os.PathLike,
    *,
    modality: str | None = None,
    checks: dict | None = None,
) -> ConvertedImage:
    """Turn the files of one image (``fmt`` ``"dicom"``, ``"nifti"`` or ``"ecat"``) into a volume.

    Frames (a dynamic DICOM series, one NIfTI per frame, the frames of ECAT 7 files) are
    averaged into one static image by :func:`average_frames`. Headers are checked first
    (:mod:`fusion3d.ingest.headers`; ``checks`` are resolved ``ingest.header_checks``,
    default :data:`~fusion3d.ingest.headers.DEFAULT_HEADER_CHECKS`); ``modality`` ("t1" or
    "fdg") chooses the voxel-size range, None checks no voxel range.

    Raises
    ------
    ConversionError
        With a one-line reason fit for excluded.tsv.
    """
    checks = checks or resolve_header_checks(None)
    name = files[0].name if files else "no file"
    if fmt == "nifti":
        img = load_nifti_image(files, checks)
    elif fmt == "ecat":
        from fusion3d.ingest.ecat import read_ecat_image

        with nibabel_messages() as messages:
            try:
                data, affine, sidecar = read_ecat_image(files)
            finally:
                _relog(name, messages)
        img = _finish(data, affine, sidecar, None, True)
    elif fmt == "dicom":
        img = _convert_dicom(files, workdir, checks)
        name = _dicom_name(files)
    else:
        raise ConversionError(f"unsupported format {fmt!r}")
    try:
        check_geometry(img.affine, img.data.shape, modality, checks, name)
    except HeaderError as exc:
        raise ConversionError(str(exc)) from exc
    return img
