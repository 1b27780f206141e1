"""Cohort lists of ADNI image IDs: reading them, IDA search strings, completeness of a download.

A cohort list (e.g. the DC2Fusion authors' ``ImageID.csv``) holds image IDs only, one line
comma-separated or one per line, ``I``-prefixed or bare. :func:`check_completeness` says which of
them a download lacks, and why, before any conversion runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from fusion3d.io import atomic_path

MISSING_REASONS = ("not in any collection CSV", "in CSV but no file", "file unreadable")
_ID_RE = re.compile(r"^[Ii]?(\d+)$")


class IncompleteCohortError(RuntimeError):
    """The download lacks cohort images; ``missing`` and ``summary`` hold the details."""

    def __init__(self, message: str, missing: pd.DataFrame, summary: dict):
        super().__init__(message)
        self.missing = missing
        self.summary = summary


def _normalise(token: str) -> str | None:
    match = _ID_RE.match(token.strip().strip('"').strip("'").strip())
    return f"I{int(match.group(1))}" if match else None


def normalise_ids(ids: Iterable[str | int]) -> list[str]:
    """``["123", "I45", 7]`` -> ``["I123", "I45", "I7"]`` (order kept, duplicates dropped).

    Raises
    ------
    ValueError
        Naming the first value that is not an image ID.
    """
    out: dict[str, None] = {}
    for value in ids:
        norm = _normalise(str(value))
        if norm is None:
            raise ValueError(f"not an ADNI image ID: {value!r}")
        out[norm] = None
    return list(out)


def read_cohort(path: str | os.PathLike) -> list[str]:
    """Read a cohort list: one line comma-separated or one per line, bare or ``I``-prefixed.

    A first line without any ID (a header such as ``Image Data ID``) is skipped.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file and the offending token, or when the file holds no ID.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cohort list not found")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    ids: dict[str, None] = {}
    for number, line in enumerate(lines, start=1):
        tokens = [t for t in re.split(r"[,;\s]+", line) if t.strip().strip("\"'")]
        norms = [_normalise(t) for t in tokens]
        if number == 1 and tokens and all(n is None for n in norms):
            continue  # a header line
        for token, norm in zip(tokens, norms, strict=True):
            if norm is None:
                raise ValueError(f"{path}: line {number}: not an ADNI image ID: {token!r}")
            ids[norm] = None
    if not ids:
        raise ValueError(f"{path}: no image IDs in the cohort list")
    return list(ids)


def ida_search_batches(ids: Iterable[str | int], batch_size: int = 200) -> list[str]:
    """Comma-joined ``I``-prefixed IDs, ``batch_size`` per string, for IDA's Image ID field."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = normalise_ids(ids)
    return [",".join(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]


def write_search_batches(
    ids: Iterable[str | int], out_path: str | os.PathLike, batch_size: int = 200
) -> Path:
    """Write :func:`ida_search_batches` one per line (atomically); returns ``out_path``."""
    batches = ida_search_batches(ids, batch_size)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        tmp.write_text("".join(b + "\n" for b in batches), encoding="utf-8")
    return out_path


def _readable(files: list[Path]) -> str:
    """Empty string when every file is non-empty and the first one opens, else the problem."""
    for path in files:
        try:
            if path.stat().st_size == 0:
                return f"zero-byte file {path.name}"
        except OSError as exc:
            return f"cannot stat {path.name} ({exc.strerror})"
    try:
        with open(files[0], "rb") as handle:
            handle.read(4)
    except OSError as exc:
        return f"cannot open {files[0].name} ({exc.strerror})"
    return ""


def check_completeness(
    cohort_ids: Iterable[str | int] | str | os.PathLike,
    manifest: pd.DataFrame,
    download_dir: str | os.PathLike,
    *,
    allow_incomplete: bool = False,
    index=None,
) -> tuple[pd.DataFrame, dict]:
    """Check that every cohort image is in some collection CSV and readable on disk.

    Parameters
    ----------
    cohort_ids
        Image IDs, or the path of a cohort list.
    manifest
        The table from :func:`fusion3d.ingest.read_manifests`.
    download_dir
        The download folder (holding ``ADNI/``).
    allow_incomplete
        Return instead of raising when images are missing.
    index
        A :class:`fusion3d.ingest.locate.DownloadIndex` already built (else one walk here).

    Returns
    -------
    (missing, summary)
        ``missing``: columns ``image_id``, ``ptid``, ``reason`` (one of :data:`MISSING_REASONS`),
        ``detail``. ``summary``: ``n_expected``, ``n_found``, ``n_missing``,
        ``missing_by_reason``, ``n_not_in_cohort`` (manifest images outside the cohort).

    Raises
    ------
    IncompleteCohortError
        When images are missing and ``allow_incomplete`` is false.
    """
    from fusion3d.ingest.locate import locate_image, scan_download

    if isinstance(cohort_ids, str | os.PathLike):
        ids = read_cohort(cohort_ids)
    else:
        ids = normalise_ids(cohort_ids)
    if index is None:
        index = scan_download(download_dir)
    subject_of = dict(zip(manifest["Image Data ID"], manifest["Subject"], strict=True))
    rows = []
    for image_id in ids:
        ptid = subject_of.get(image_id)
        if ptid is None:
            rows.append((image_id, "", MISSING_REASONS[0], ""))
            continue
        files, _, why = locate_image(index, image_id, ptid)
        if not files:
            rows.append((image_id, ptid, MISSING_REASONS[1], why))
            continue
        problem = _readable(files)
        if problem:
            rows.append((image_id, ptid, MISSING_REASONS[2], problem))
    missing = pd.DataFrame(rows, columns=["image_id", "ptid", "reason", "detail"])
    by_reason = {r: int((missing["reason"] == r).sum()) for r in MISSING_REASONS}
    cohort = set(ids)
    summary = {
        "n_expected": len(ids),
        "n_found": len(ids) - len(missing),
        "n_missing": len(missing),
        "missing_by_reason": {k: v for k, v in by_reason.items() if v},
        "n_not_in_cohort": int(sum(1 for i in subject_of if i not in cohort)),
    }
    if len(missing) and not allow_incomplete:
        raise IncompleteCohortError(
            "cohort incomplete: " + describe_summary(summary), missing, summary
        )
    return missing, summary


def describe_summary(summary: dict) -> str:
    """One sentence for a completeness summary (used in errors and logs)."""
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["missing_by_reason"].items()) or "none"
    return (
        f"{summary['n_expected']} images expected, {summary['n_found']} found, "
        f"{summary['n_missing']} missing ({reasons}); {summary['n_not_in_cohort']} downloaded "
        "images are not in the cohort list"
    )
