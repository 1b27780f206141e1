"""BIDS-style names and writers for the ingested images (Clinica's ADNI naming)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from fusion3d.io import atomic_path, save_nifti

_PTID_RE = re.compile(r"^(\d{3})_S_(\d{4})$")


def participant_label(ptid: str) -> str:
    """``"011_S_0002"`` -> ``"sub-ADNI011S0002"``.

    Raises
    ------
    ValueError
        If ``ptid`` is not of the form ``SSS_S_RRRR``.
    """
    match = _PTID_RE.match(str(ptid).strip())
    if not match:
        raise ValueError(f"subject {ptid!r}: not an ADNI PTID (SSS_S_RRRR)")
    return f"sub-ADNI{match.group(1)}S{match.group(2)}"


def t1_path(bids_dir: Path, participant: str, session: str) -> Path:
    """``<bids>/<sub>/<ses>/anat/<sub>_<ses>_T1w.nii.gz``."""
    return Path(bids_dir) / participant / session / "anat" / f"{participant}_{session}_T1w.nii.gz"


def pet_path(bids_dir: Path, participant: str, session: str, rec: str) -> Path:
    """``<bids>/<sub>/<ses>/pet/<sub>_<ses>_trc-18FFDG_rec-<rec>_pet.nii.gz``."""
    name = f"{participant}_{session}_trc-18FFDG_rec-{rec}_pet.nii.gz"
    return Path(bids_dir) / participant / session / "pet" / name


def sidecar_path(image: Path) -> Path:
    """The JSON sidecar beside ``image`` (``x.nii.gz`` -> ``x.json``)."""
    return image.with_name(image.name.split(".nii")[0] + ".json")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")
    return path


def write_image(
    data: np.ndarray, affine: np.ndarray, path: Path, sidecar: dict, dtype=np.float32
) -> Path:
    """Write a NIfTI and its JSON sidecar atomically."""
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(np.dtype(dtype))
        if data.min() < info.min or data.max() > info.max or not np.all(data == np.round(data)):
            dtype = np.float32
    save_nifti(data, affine, path, dtype=dtype)
    write_json(sidecar, sidecar_path(path))
    return path


def write_dataset_description(bids_dir: str | os.PathLike) -> Path:
    """Write ``dataset_description.json`` at the root of the BIDS tree."""
    return write_json(
        {
            "Name": "ADNI (ingested by fusion3d)",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": "fusion3d.ingest"}],
        },
        Path(bids_dir) / "dataset_description.json",
    )
