"""Read and validate LONI IDA collection CSVs (the "manifests" of a download).

The IDA export changed over the years: image IDs with or without the ``I`` prefix, optional
columns that come and go, a UTF-8 BOM, blank lines. :func:`read_manifests` accepts all of those,
checks the required columns before anything else runs and returns one normalised table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

#: The header of a LONI IDA collection CSV, in the order IDA writes it (all fields quoted).
IDA_HEADER = (
    "Image Data ID",
    "Subject",
    "Group",
    "Sex",
    "Age",
    "Visit",
    "Modality",
    "Description",
    "Type",
    "Acq Date",
    "Format",
    "Downloaded",
)
REQUIRED_COLUMNS = ("Image Data ID", "Subject", "Modality", "Description", "Acq Date")
OPTIONAL_COLUMNS = ("Group", "Sex", "Age", "Visit", "Type", "Format", "Downloaded")
#: Columns added by :func:`read_manifests`.
EXTRA_COLUMNS = ("source_file", "problem")
_ID_RE = re.compile(r"^[Ii]?(\d+)$")
_PTID_RE = re.compile(r"^\d{3}_S_\d{4}$")


class ManifestError(ValueError):
    """A collection CSV that cannot be used; the message names the file and the problem."""


def normalise_image_id(value: object) -> str | None:
    """``"I123"``, ``"123"``, ``123`` or ``"i123 "`` -> ``"I123"``; anything else -> ``None``."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip().strip('"').strip()
    if text.endswith(".0") and text[:-2].isdigit():  # a float-typed column
        text = text[:-2]
    match = _ID_RE.match(text)
    return f"I{int(match.group(1))}" if match else None


def parse_acq_date(value: object) -> pd.Timestamp:
    """Parse an IDA acquisition date (``M/D/YYYY``, or ISO ``YYYY-MM-DD``); ``NaT`` if invalid."""
    text = str(value).strip() if value is not None else ""
    for fmt in ("%m/%d/%Y", "%Y-%m-%d", "%m/%d/%y"):
        try:
            return pd.to_datetime(text, format=fmt)
        except (ValueError, TypeError):
            continue
    return pd.NaT


def _read_one(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ManifestError(f"{path}: collection CSV not found")
    if path.stat().st_size == 0:
        raise ManifestError(f"{path}: empty collection CSV (0 bytes)")
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
            encoding="utf-8-sig",
            skipinitialspace=False,
        )
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(f"{path}: empty collection CSV (no header)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable CSV ({exc})") from exc
    frame.columns = [str(c).strip().lstrip("\ufeff").strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing required column(s) {', '.join(repr(c) for c in missing)} "
            f"(found: {', '.join(repr(c) for c in frame.columns)})"
        )
    frame = frame[~(frame.apply(lambda r: all(str(v).strip() == "" for v in r), axis=1))]
    if frame.empty:
        raise ManifestError(f"{path}: collection CSV has a header but no rows")
    for col in OPTIONAL_COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
    for col in frame.columns:
        frame[col] = frame[col].astype(str).str.strip()
    frame["source_file"] = str(path)
    return frame


def read_manifests(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read one or more IDA collection CSVs into one normalised table.

    Parameters
    ----------
    paths
        One path or several. Every file must exist, be non-empty and have the
        :data:`REQUIRED_COLUMNS`; optional columns (:data:`OPTIONAL_COLUMNS`) are added empty
        when absent, extra columns are kept.

    Returns
    -------
    pandas.DataFrame
        One row per image ID: ``Image Data ID`` normalised to ``I<digits>``, ``Acq Date`` as
        datetime, plus ``source_file`` and ``problem`` (empty when the row is usable, else why
        not: unparseable ID or date, malformed subject, duplicate ID with conflicting rows).
        Identical duplicate rows (same required fields) are merged.

    Raises
    ------
    ManifestError
        Naming the file and the problem (missing file, empty file, missing column).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ManifestError("no collection CSV given")
    frames = [_read_one(p) for p in paths]
    frame = pd.concat(frames, ignore_index=True, sort=False).fillna("")
    raw_ids = frame["Image Data ID"].tolist()
    frame["Image Data ID"] = [normalise_image_id(v) or str(v) for v in raw_ids]
    frame["Acq Date"] = [parse_acq_date(v) for v in frame["Acq Date"]]
    problems = []
    for raw, subject, date in zip(raw_ids, frame["Subject"], frame["Acq Date"], strict=True):
        if normalise_image_id(raw) is None:
            problems.append(f"unparseable image ID {raw!r}")
        elif not _PTID_RE.match(subject):
            problems.append(f"malformed subject ID {subject!r} (expected SSS_S_RRRR)")
        elif pd.isna(date):
            problems.append("unparseable Acq Date")
        else:
            problems.append("")
    frame["problem"] = problems
    return _merge_duplicates(frame)


def _merge_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Merge identical rows of one image ID; flag IDs whose rows disagree."""
    key = ["Subject", "Modality", "Description", "Acq Date"]
    keep: list[int] = []
    for _, group in frame.groupby("Image Data ID", sort=False):
        first = group.index[0]
        if len(group) > 1:
            distinct = group[key].astype(str).drop_duplicates()
            if len(distinct) > 1:
                files = sorted(set(group["source_file"]))
                frame.loc[first, "problem"] = (
                    "duplicate image ID with conflicting rows (" + ", ".join(files) + ")"
                )
        keep.append(first)
    return frame.loc[sorted(keep)].reset_index(drop=True)
