"""Header checks of every image before it is used: orientation, voxel sizes, field of view.

A NIfTI header can lie without nibabel refusing it. With qform and sform codes 0 nibabel
falls back to its default affine, ``diag(-pixdim)``, a left-right flipped guess, and with
pixdim 0 it sets the voxel sizes to 1 mm; its only trace is an unattributed log line. So
:func:`check_nifti_header` reads the raw header (``check=False``: nothing fixed behind our
back) and refuses, with a one-line reason naming the file, the field and its value:

- a header that is not NIfTI-1/2, an unknown ``datatype``, impossible ``dim``;
- qform and sform codes both 0 (the orientation cannot be known, guessing mirrors), or the
  affine that would be used not finite or singular;
- ``pixdim[1:4]`` zero or not finite;
- an uncompressed file shorter than its header says (truncated).

:func:`check_geometry` (every format: NIfTI, what dcm2niix writes, ECAT) refuses voxel sizes
and fields of view outside the configured ranges (:data:`DEFAULT_HEADER_CHECKS`). A qform and
sform that disagree by more than the tolerance are a flag, not a refusal: the sform is used
(nibabel's rule: the sform when ``sform_code`` > 0, else the qform) and the log says so.
:func:`handedness` and :func:`pair_handedness_flag` compare the sign of the determinant of
the T1's and the PET's affines after each reader's convention (dcm2niix flips the row axis of
the DICOM storage order, so its affines are left-handed when the DICOM is well formed).

:func:`nibabel_messages` captures nibabel's own log lines of the current thread so that the
caller can log them with the file name, and :func:`fusion3d.io.one_line` keeps every table
reason on one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from fusion3d.io import one_line

log = logging.getLogger("fusion3d.ingest")

#: Defaults of ``ingest.header_checks`` (workflow/schemas/config.schema.yaml documents them):
#: plausible voxel sizes (mm, every axis) of a T1 and of a PET, the field of view (mm, every
#: axis, both modalities; no lower bound by default) and the largest distance (mm) between
#: the qform and sform positions of the image's corners before they are said to disagree.
DEFAULT_HEADER_CHECKS: dict = {
    "t1_voxel_mm": (0.5, 4.0),
    "pet_voxel_mm": (0.5, 6.0),
    "fov_mm": (0.0, 800.0),
    "qform_sform_tolerance_mm": 1.0,
}
_MODALITY_KEY = {"t1": "t1_voxel_mm", "fdg": "pet_voxel_mm", "pet": "pet_voxel_mm"}
_LABEL = {"t1": "T1", "fdg": "PET", "pet": "PET"}


class HeaderError(ValueError):
    """An image whose header cannot be trusted; the message is the one-line reason."""


def resolve_header_checks(checks: dict | None) -> dict:
    """Merge ``checks`` over :data:`DEFAULT_HEADER_CHECKS` and check every value.

    Raises
    ------
    ValueError
        Naming the key (``ingest.header_checks.<key>``) of an unknown key or a bad value.
    """
    checks = dict(checks or {})
    unknown = sorted(set(checks) - set(DEFAULT_HEADER_CHECKS))
    if unknown:
        raise ValueError(f"unknown ingest.header_checks key(s): {', '.join(unknown)}")
    merged = {**DEFAULT_HEADER_CHECKS, **{k: v for k, v in checks.items() if v is not None}}
    for key in ("t1_voxel_mm", "pet_voxel_mm", "fov_mm"):
        value = merged[key]
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"ingest.header_checks.{key}: [min, max] in mm, got {value!r}"
            ) from exc
        if not (0 <= lo < hi and np.isfinite(hi)):
            raise ValueError(f"ingest.header_checks.{key}: need 0 <= min < max, got {value!r}")
        merged[key] = (lo, hi)
    tol = merged["qform_sform_tolerance_mm"]
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"ingest.header_checks.qform_sform_tolerance_mm: > 0 mm, got {tol!r}")
    merged["qform_sform_tolerance_mm"] = float(tol)
    return merged


def _fmt(values) -> str:
    """``1 x 0.898 x 0.898`` (4 significant digits each)."""
    return " x ".join(f"{float(v):.4g}" for v in values)


def read_raw_header(path: str | os.PathLike) -> nib.Nifti1Header:
    """The NIfTI-1 or NIfTI-2 header of ``path`` as stored (nothing checked or fixed).

    Raises :class:`HeaderError` when the first field is not a NIfTI ``sizeof_hdr``.
    """
    path = Path(path)
    with nib.openers.ImageOpener(str(path)) as fobj:
        first = fobj.read(4)
        if len(first) < 4:
            raise HeaderError(f"invalid NIfTI header: {path.name}: file shorter than a header")
        sizes = {int.from_bytes(first, "little"), int.from_bytes(first, "big")}
        klass = nib.Nifti1Header if 348 in sizes else nib.Nifti2Header if 540 in sizes else None
        if klass is None:
            size = int.from_bytes(first, "little")
            raise HeaderError(
                f"invalid NIfTI header: {path.name}: sizeof_hdr {size} (348 for NIfTI-1, 540 "
                "for NIfTI-2)"
            )
        fobj.seek(0)
        return klass.from_fileobj(fobj, check=False)


def _check_fields(header, name: str) -> tuple[tuple[int, ...], list[str]]:
    """datatype and dim of a raw header (raising), then its orientation codes and pixdim.

    Returns the data shape and the problems found with the codes and pixdim (the orientation
    first), so that a header with several wrong fields names them all.
    """
    code = int(header["datatype"])
    if code not in nib.nifti1.data_type_codes.code or code in (0, 255):
        raise HeaderError(
            f"invalid NIfTI header: {name}: datatype {code} is not a NIfTI data type code"
        )
    dim = [int(d) for d in header["dim"]]
    if not 1 <= dim[0] <= 7 or any(d < 1 for d in dim[1 : dim[0] + 1]):
        raise HeaderError(
            f"invalid NIfTI header: {name}: dim {dim} (dim[0] must be 1-7 and each of "
            "dim[1..dim[0]] >= 1)"
        )
    for field in ("qform_code", "sform_code"):
        code = int(header[field])
        if code not in nib.nifti1.xform_codes.code:
            raise HeaderError(
                f"invalid NIfTI header: {name}: {field} {code} is not a NIfTI xform code"
            )
    problems = []
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        problems.append(
            "qform_code 0 and sform_code 0 (left and right cannot be told apart; nibabel "
            "would guess a left-right flipped orientation)"
        )
    pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
    if not (np.isfinite(pixdim).all() and (pixdim != 0).all()):
        problems.append(
            f"pixdim[1:4] {_fmt(pixdim)} (voxel sizes must be non-zero and finite; nibabel "
            "would silently use 1 mm)"
        )
    return tuple(dim[1 : dim[0] + 1]), problems


def _affine_problem(affine: np.ndarray) -> str | None:
    """Why ``affine`` cannot map voxels to the world (not finite, singular), else None."""
    if not np.isfinite(affine).all():
        return "not finite"
    det = float(np.linalg.det(affine[:3, :3]))
    scale = float(np.prod(np.linalg.norm(affine[:3, :3], axis=0)))
    if not scale > 0 or abs(det) < 1e-6 * scale:
        return f"singular (determinant {det:.3g})"
    return None


def _corners(shape) -> np.ndarray:
    """The 8 corner voxels of a grid, homogeneous (4, 8)."""
    n = [max(int(s) - 1, 0) for s in shape[:3]]
    pts = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    return pts.T


def _choose_affine(header, name: str, shape, tolerance: float) -> tuple[np.ndarray, str, list]:
    """The affine nibabel's rule picks (sform if sform_code > 0, else qform), checked.

    Returns ``(affine, "sform" or "qform", flags)``; a qform and sform more than ``tolerance``
    mm apart at a corner of the grid add a ``qform_sform_disagree`` flag.
    """
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    forms = {}
    for form, code in (("sform", scode), ("qform", qcode)):
        if code == 0:
            continue
        with np.errstate(all="ignore"):
            affine = header.get_sform() if form == "sform" else header.get_qform()
        problem = _affine_problem(np.asarray(affine, dtype=float))
        if problem is not None:
            raise HeaderError(
                f"invalid NIfTI header: {name}: {form} (code {code}) is {problem}: the "
                "orientation cannot be known"
            )
        forms[form] = np.asarray(affine, dtype=float)
    source = "sform" if "sform" in forms else "qform"
    flags = []
    if len(forms) == 2:
        pts = _corners(shape)
        gap = float(np.linalg.norm((forms["sform"] - forms["qform"]) @ pts, axis=0).max())
        mirrored = np.sign(np.linalg.det(forms["sform"][:3, :3])) != np.sign(
            np.linalg.det(forms["qform"][:3, :3])
        )
        if gap > tolerance or mirrored:
            what = ", and one is the mirror image of the other" if mirrored else ""
            reason = (
                f"qform and sform of {name} disagree by {gap:.1f} mm (tolerance "
                f"{tolerance:g} mm){what}; using the sform (nibabel's rule: the sform when "
                "sform_code > 0; tools that read the qform see another position)"
            )
            flags.append({"flag": "qform_sform_disagree", "reason": reason})
    return forms[source], source, flags


def _check_size(path: Path, header, shape) -> None:
    """An uncompressed single-file NIfTI must hold the bytes its header promises."""
    if not path.name.endswith(".nii"):
        return
    expected = int(header["vox_offset"]) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise HeaderError(
            f"truncated NIfTI: {path.name}: {actual} of the {expected} bytes that the header "
            "promises (file damaged or incomplete)"
        )


def check_nifti_header(path: str | os.PathLike, checks: dict, name: str | None = None) -> dict:
    """Check the raw header of one NIfTI file before nibabel loads (and fixes) it.

    Parameters
    ----------
    path
        A ``.nii`` or ``.nii.gz`` file.
    checks
        Resolved ``ingest.header_checks`` (:func:`resolve_header_checks`).
    name
        How the file is named in reasons (default its file name; for what dcm2niix wrote, the
        DICOM series it came from).

    Returns
    -------
    dict
        ``affine`` (the one nibabel will use), ``affine_source`` ("sform" or "qform"),
        ``shape`` and ``flags`` (records ``{"flag", "reason"}``, logged here).

    Raises
    ------
    HeaderError
        With the one-line reason: file, field, value.
    """
    path = Path(path)
    name = name or path.name
    header = read_raw_header(path)
    shape, problems = _check_fields(header, name)
    if problems:
        kind = (
            "no orientation" if problems[0].startswith("qform_code 0") else "invalid NIfTI header"
        )
        raise HeaderError(f"{kind}: {name}: {'; '.join(problems)}")
    affine, source, flags = _choose_affine(header, name, shape, checks["qform_sform_tolerance_mm"])
    _check_size(path, header, shape)
    for item in flags:
        log.warning("%s", item["reason"])
    return {"affine": affine, "affine_source": source, "shape": shape, "flags": flags}


def check_geometry(
    affine: np.ndarray, shape, modality: str | None, checks: dict, name: str
) -> None:
    """Refuse an affine that is not finite or singular, or implausible voxel sizes or FOV.

    ``modality`` is "t1" or "fdg"/"pet" (which voxel range of ``checks`` applies; None checks
    no voxel range); ``shape`` the 3D grid. Every reason names ``name``, the values and the
    config key.

    Raises
    ------
    HeaderError
    """
    affine = np.asarray(affine, dtype=float)
    problem = _affine_problem(affine)
    if problem is not None:
        raise HeaderError(f"invalid affine: {name}: the voxel-to-world affine is {problem}")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    key = _MODALITY_KEY.get(modality or "", "")
    lo, hi = checks[key] if key else (0.0, np.inf)
    if not ((zooms >= lo) & (zooms <= hi)).all():
        raise HeaderError(
            f"implausible voxel size: {name}: {_fmt(zooms)} mm ({_LABEL[modality]} voxels "
            f"must be {lo:g}-{hi:g} mm, ingest.header_checks.{key})"
        )
    fov = zooms * np.asarray(shape[:3], dtype=float)
    flo, fhi = checks["fov_mm"]
    if not ((fov >= flo) & (fov <= fhi)).all():
        raise HeaderError(
            f"implausible field of view: {name}: {_fmt(fov)} mm ({flo:g}-{fhi:g} mm on every "
            "axis for a head, ingest.header_checks.fov_mm)"
        )


def handedness(affine: np.ndarray, fmt: str) -> int:
    """+1 (right-handed) or -1 (left-handed) storage of an image after its reader's convention.

    The sign of ``det(affine[:3, :3])``, times -1 for DICOM: dcm2niix flips the row axis of
    the DICOM storage order (whose frame row x column x slice normal is right-handed), so its
    NIfTI affines are left-handed for every well-formed series. NIfTI and ECAT affines count
    as they are.
    """
    sign = 1 if np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]) > 0 else -1
    return -sign if fmt == "dicom" else sign


def pair_handedness_flag(t1: tuple, pet: tuple) -> dict | None:
    """The ``handedness`` flag of a pair whose T1 and PET storage handedness differ, else None.

    ``t1`` and ``pet`` are ``(name, affine, format)``. A difference is legal for NIfTI (LAS
    and RAS storage both exist) but is how a header-mirrored image shows, so it is flagged
    for a look, not excluded.
    """
    signs = [handedness(affine, fmt) for _, affine, fmt in (t1, pet)]
    if signs[0] == signs[1]:
        return None
    words = ["right-handed" if s > 0 else "left-handed" for s in signs]
    reason = (
        f"handedness differs: T1 {t1[0]} ({t1[2]}) is {words[0]}, PET {pet[0]} ({pet[2]}) is "
        f"{words[1]} (sign of the affine determinant after each reader's convention): one of "
        "them may be mirrored left-right"
    )
    return {"flag": "handedness", "reason": reason}


class _ThreadCapture(logging.Filter):
    """A filter on nibabel's logger that keeps the records of capturing threads for them."""

    def __init__(self) -> None:
        super().__init__()
        self.buckets: dict[int, list[str]] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        bucket = self.buckets.get(record.thread)
        if bucket is None:
            return True
        bucket.append(one_line(record.getMessage()))
        return False


_CAPTURE = _ThreadCapture()
_NIBABEL_LOGGERS = ("nibabel.global", "nibabel")


@contextlib.contextmanager
def nibabel_messages() -> Iterator[list[str]]:
    """Collect the log messages nibabel emits in this thread (instead of printing them).

    Yields the list the messages go to; other threads' messages pass as before. The caller
    logs them with the file name (nibabel's own lines name no file).
    """
    with _CAPTURE.lock:
        for name in _NIBABEL_LOGGERS:
            logger = logging.getLogger(name)
            if _CAPTURE not in logger.filters:
                logger.addFilter(_CAPTURE)
    ident = threading.get_ident()
    bucket: list[str] = []
    outer = _CAPTURE.buckets.get(ident)
    _CAPTURE.buckets[ident] = bucket
    try:
        yield bucket
    finally:
        if outer is None:
            _CAPTURE.buckets.pop(ident, None)
        else:
            outer.extend(bucket)
            _CAPTURE.buckets[ident] = outer
