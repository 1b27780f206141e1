"""BIDS-style names and writers for the ingested images (Clinica's ADNI naming)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from fusion3d.io import atomic_path, save_nifti, write_tsv

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


#: Required BIDS-PET sidecar keys that may be ``"n/a"`` when the source does not give them.
PET_TEXT_KEYS = (
    "AcquisitionMode",
    "AttenuationCorrection",
    "InjectedMass",
    "InjectedMassUnits",
    "InjectedRadioactivityUnits",
    "Manufacturer",
    "ManufacturersModelName",
    "ModeOfAdministration",
    "ReconFilterType",
    "ReconMethodImplementationVersion",
    "ReconMethodName",
    "SpecificRadioactivity",
    "SpecificRadioactivityUnits",
    "TracerName",
    "TracerRadionuclide",
    "Units",
)
#: Required BIDS-PET keys the validator accepts only as numbers, booleans, arrays or a time:
#: the value written when the source lacks the key (the key is then listed in
#: ``FieldsNotInSource``; docs/outputs.md).
PET_PLACEHOLDERS = {
    "InjectedRadioactivity": 0,
    "InjectionStart": 0,
    "ScanStart": 0,
    "ImageDecayCorrected": False,
    "ImageDecayCorrectionTime": 0,
    "ReconFilterSize": 0,
    "ReconMethodParameterLabels": [],
    "ReconMethodParameterUnits": [],
    "ReconMethodParameterValues": [],
}


def _static_frames(out: dict, missing: list[str]) -> None:
    """One frame for the static image written: the source's frames summed into one window."""
    durations = out.get("FrameDuration")
    starts = out.get("FrameTimesStart")
    if not isinstance(durations, list) or not durations:
        missing.append("FrameDuration")
        durations = [0]
    if not isinstance(starts, list) or len(starts) != len(durations):
        if starts is not None:
            out["SourceFrameTimesStart"] = starts
        missing.append("FrameTimesStart")
        starts = [out.get("ScanStart", 0)] + [None] * (len(durations) - 1)
    if len(durations) > 1:
        out["SourceFrameDuration"], out["SourceFrameTimesStart"] = durations, starts
    out["FrameDuration"] = [float(sum(durations))] if len(durations) > 1 else durations
    out["FrameTimesStart"] = [starts[0]]


def pet_sidecar(sidecar: dict) -> dict:
    """``sidecar`` with every required BIDS-PET key (BIDS 1.9) for the static image written.

    Keys the source gives are kept. Text keys it lacks become ``"n/a"``; keys BIDS requires
    as numbers, arrays or a time take :data:`PET_PLACEHOLDERS` (``TimeZero``: the acquisition
    time, else ``00:00:00``) and are listed in ``FieldsNotInSource``. Frames of a dynamic
    source, averaged into one volume, become one frame spanning them (the source's lists are
    kept as ``SourceFrameDuration`` / ``SourceFrameTimesStart``).
    """
    out = dict(sidecar)
    missing: list[str] = []
    for key in PET_TEXT_KEYS:
        if key not in out or out[key] in (None, ""):
            out[key] = "n/a"
            missing.append(key)
    if not out.get("TimeZero"):
        acq = str(out.get("AcquisitionTime", ""))[:8]
        out["TimeZero"] = acq if re.fullmatch(r"\d\d:\d\d:\d\d", acq) else "00:00:00"
        missing.append("TimeZero")
    for key, value in PET_PLACEHOLDERS.items():
        if key not in out:
            out[key] = value
            missing.append(key)
    _static_frames(out, missing)
    if missing:
        out["FieldsNotInSource"] = sorted(set(missing) | set(out.get("FieldsNotInSource", [])))
    return out


def write_participants(table, bids_dir: str | os.PathLike) -> Path:
    """Write ``participants.tsv``; empty and missing cells become ``n/a`` as BIDS requires."""
    table = table.astype(object).where(table.notna(), "n/a")
    table = table.map(lambda v: "n/a" if isinstance(v, str) and not v.strip() else v)
    return write_tsv(table, Path(bids_dir) / "participants.tsv")


def write_readme(bids_dir: str | os.PathLike, source: str) -> Path:
    """Write the ``README`` of the ingested tree: what it holds and where it came from."""
    path = Path(bids_dir) / "README"
    with atomic_path(path) as tmp:
        tmp.write_text(
            f"T1w and FDG PET pairs of {source}, chosen and converted by fusion3d's ingest\n"
            "(one pair per subject and session; pairs.tsv and excluded.tsv in ingest/ say which\n"
            "images were used and why the others were not). PET sidecar keys the source does\n"
            "not give are n/a, or listed in FieldsNotInSource (fusion3d docs/outputs.md).\n"
        )
    return path


def write_dataset_description(
    bids_dir: str | os.PathLike, name: str = "ADNI (ingested by fusion3d)"
) -> Path:
    """Write ``dataset_description.json`` at the root of the BIDS tree."""
    return write_json(
        {
            "Name": name,
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "Authors": ["fusion3d ingest"],
            "GeneratedBy": [{"Name": "fusion3d.ingest"}],
        },
        Path(bids_dir) / "dataset_description.json",
    )
