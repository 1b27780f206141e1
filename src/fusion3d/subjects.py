"""The study's subject tables: ``ingest/pairs.tsv`` and ``split/split.tsv``, and the one
helper that matches a job's declared inputs to its subjects (:func:`match_inputs`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from fusion3d.io import read_tsv
from fusion3d.preprocess.outputs import subject_file

SUBJECT_PATTERN = r"sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+"


PAIRS_COLUMNS = (
    "participant_id",
    "session_id",
    "ptid",
    "group",
    "mri_path",
    "pet_path",
)


def subject_id(participant_id: str, session_id: str) -> str:
    """The per-subject label used in file names: ``<participant>_<session>``."""
    return f"{participant_id}_{session_id}"


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``ingest/pairs.tsv`` and add a ``subject_id`` column.

    Raises
    ------
    ValueError
        If a required column is missing or a subject appears twice.
    """
    frame = read_tsv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PAIRS_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    frame["subject_id"] = [
        subject_id(p, s) for p, s in zip(frame["participant_id"], frame["session_id"], strict=True)
    ]
    duplicated = frame["subject_id"][frame["subject_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path}: subject listed twice: {', '.join(sorted(set(duplicated)))}")
    return frame


_PAIRS_CACHE: dict[tuple[str, float], pd.DataFrame] = {}


def read_pairs_cached(path: str | os.PathLike) -> pd.DataFrame:
    """:func:`read_pairs`, cached by path and modification time (input functions call it often)."""
    key = (str(path), os.stat(path).st_mtime)
    if key not in _PAIRS_CACHE:
        _PAIRS_CACHE[key] = read_pairs(path)
    return _PAIRS_CACHE[key]


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``split/split.tsv`` (one row per subject, with its split and model-grid images)."""
    frame = read_tsv(path, dtype=str, keep_default_na=False)
    for column in ("subject_id", "split", "group", "model_mri", "model_pet", "model_mask"):
        if column not in frame.columns:
            raise ValueError(f"{path}: missing column {column!r}")
    return frame


#: split.tsv columns of the model-grid images, and their preprocessing output keys.
MODEL_COLUMNS: dict[str, str] = {
    "model_mri": "t1_model",
    "model_pet": "pet_model",
    "model_mask": "mask_model",
}


def match_inputs(
    paths: Iterable[str | os.PathLike], subject_ids: Iterable[str], key: str
) -> dict[str, str]:
    """Each subject's preprocessing output ``key`` among a job's declared input ``paths``.

    The one way a job matches its declared inputs to subjects: a subject's file is the one
    named :func:`fusion3d.preprocess.outputs.subject_file` ``(subject, key)``, so a job
    reads only what Snakemake gave it, whatever order the paths come in.

    Raises
    ------
    ValueError
        Naming the file a subject lacks among ``paths``.
    """
    by_name = {Path(p).name: str(p) for p in paths}
    out = {}
    for sid in subject_ids:
        name = subject_file(".", sid, key).name
        if name not in by_name:
            raise ValueError(f"{name}: not among the job's declared inputs")
        out[sid] = by_name[name]
    return out


def split_with_inputs(
    split: pd.DataFrame, images: Iterable[str], splits: tuple[str, ...] = ("train", "val", "test")
) -> pd.DataFrame:
    """The split with the model-grid images of its subjects taken from a job's declared inputs.

    ``images`` are the job's ``snakemake.input`` files (every subject's model-grid MRI, PET
    and mask); each subject in ``splits`` gets its file by :func:`match_inputs`.

    Raises
    ------
    ValueError
        If an image of a subject in ``splits`` is not among ``images``.
    """
    images = [str(p) for p in images]
    out = split.copy()
    used = out["split"].isin(splits)
    subjects = list(out.loc[used, "subject_id"])
    for column, key in MODEL_COLUMNS.items():
        found = match_inputs(images, subjects, key)
        out[column] = [
            found[sid] if flag else path
            for sid, flag, path in zip(out["subject_id"], used, out[column], strict=True)
        ]
    return out


def split_items(
    split: pd.DataFrame, splits: tuple[str, ...] = ("train", "val", "test")
) -> list[tuple[str, str, str]]:
    """``(subject_id, mri_path, pet_path)`` of the subjects in ``splits`` (model-grid images)."""
    rows = split[split["split"].isin(splits)]
    return list(zip(rows["subject_id"], rows["model_mri"], rows["model_pet"], strict=True))


def evaluation_subjects(split: pd.DataFrame) -> pd.DataFrame:
    """The subject table of the evaluation stage: subject_id, split, group and image paths."""
    rows = split[split["split"].isin(("train", "val", "test"))]
    return pd.DataFrame(
        {
            "subject_id": rows["subject_id"].to_numpy(),
            "split": rows["split"].to_numpy(),
            "group": rows["group"].to_numpy(),
            "mri_path": rows["model_mri"].to_numpy(),
            "pet_path": rows["model_pet"].to_numpy(),
            "mask_path": rows["model_mask"].to_numpy(),
        }
    )
