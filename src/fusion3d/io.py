"""Small I/O helpers shared by every stage: atomic writes, NIfTI and TSV round trips."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # nibabel is imported where an image is read or written
    import nibabel as nib

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.tsv``...) so
    writers that infer the format from the name still work. On an exception
    the temporary file is removed and ``path`` is left untouched, so a failed or
    killed job never leaves a file that looks complete.
    """
    path = Path(path)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{suffix}", dir=path.parent)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"{path}: cannot write here ({exc.strerror}; is the folder read-only or full?)",
        ) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared files
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    dtype: np.dtype | type | None = None,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Write ``array`` with ``affine`` to ``path`` atomically (qform and sform set)."""
    array = np.asarray(array)
    if dtype is not None:
        array = array.astype(dtype)
    import nibabel as nib

    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=header)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    if dtype is not None:
        img.set_data_dtype(dtype)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def load_nifti(path: str | os.PathLike, ndim: int | None = 3) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI image as ``(float32 array, affine)``, checking what a stage needs.

    Raises ``ValueError`` naming the file when it is unreadable, has the wrong
    number of dimensions or holds NaN/Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise ValueError(f"{path}: cannot read NIfTI ({exc})") from exc
    if ndim is not None:
        if data.ndim == 4 and data.shape[3] == 1 and ndim == 3:
            data = data[..., 0]
        if data.ndim != ndim:
            raise ValueError(f"{path}: expected a {ndim}D image, got shape {data.shape}")
    if not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"{path}: {n_bad} NaN/Inf voxels")
    return data, img.affine.copy()


def one_line(text: object) -> str:
    """``text`` on one line: newlines, carriage returns and tabs become spaces, runs of spaces one.

    Every reason of ``excluded.tsv``, ``missing.tsv`` and ``flags.tsv`` goes through it, so a
    row never spans two lines (nibabel's messages hold newlines) nor gains a column.
    """
    return re.sub(r"\s+", " ", str(text)).strip()


def write_tsv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a tab-separated table atomically (no index)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
    return path


def read_tsv(path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """Read a tab-separated table written by :func:`write_tsv`."""
    return pd.read_csv(path, sep="\t", **kwargs)
