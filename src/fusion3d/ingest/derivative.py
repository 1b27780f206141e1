"""The per-subject preprocessing outputs as a BIDS derivative dataset (``derivatives/preprocess``).

The preprocess rule writes ``preprocess/<subject>/<subject>_<suffix>`` (flat, by subject and
session; :mod:`fusion3d.preprocess.outputs`). :func:`write_derivative` lays the same files out
as BIDS wants a derivative (``sub-*/ses-*/anat|pet/``), as hard links (copies where links are
not possible), with ``dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy``,
``SourceDatasets``: the ingested raw tree), a README and the PET sidecars.

Which outputs go where (:data:`LAYOUT`): the MNI-space T1, brain mask and SUVR PET, and the
model-grid T1, PET and mask (``space-individual``: the subject's T1 grid resampled to the model
grid) are BIDS images. The affine transforms (``_xfm.mat``, BIDS has no transform files yet)
and the QC record and figure sit beside them under their own names and are listed in
``.bidsignore``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import pandas as pd

from fusion3d.ingest import bids
from fusion3d.preprocess.outputs import subject_file

#: Preprocessing output key -> (BIDS datatype folder, name after ``<sub>_<ses>_``).
LAYOUT = {
    "t1_mni": ("anat", "space-MNI152_desc-preproc_T1w.nii.gz"),
    "mask_mni": ("anat", "space-MNI152_desc-brain_mask.nii.gz"),
    "pet_mni": ("pet", "trc-18FFDG_space-MNI152_desc-suvr_pet.nii.gz"),
    "t1_model": ("anat", "space-individual_res-model_desc-preproc_T1w.nii.gz"),
    "mask_model": ("anat", "space-individual_res-model_desc-brain_mask.nii.gz"),
    "pet_model": ("pet", "trc-18FFDG_space-individual_res-model_desc-suvr_pet.nii.gz"),
    "xfm_t1_mni": ("anat", "from-T1w_to-MNI152_mode-image_xfm.mat"),
    "xfm_pet_t1": ("pet", "from-pet_to-T1w_mode-image_xfm.mat"),
    "xfm_t1_mni_warp": ("anat", "from-T1w_to-MNI152_mode-image_xfm.nii.gz"),
    "qc_json": ("", "desc-qc_fusion3d.json"),
    "qc_png": ("", "desc-qc_fusion3d.png"),
}
#: Files BIDS does not describe, kept beside the images and named in ``.bidsignore``.
BIDSIGNORE = ("*_xfm.mat", "*_xfm.nii.gz", "*_desc-qc_fusion3d.json", "*_desc-qc_fusion3d.png")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _pet_sidecar(raw_pet: Path) -> dict:
    """The raw PET's sidecar with every required BIDS-PET key, values now SUVR (unitless)."""
    raw = bids.sidecar_path(raw_pet)
    sidecar = json.loads(raw.read_text()) if raw.is_file() else {}
    return {**bids.pet_sidecar(sidecar), "Units": "unitless"}


#: What each derived image is (its sidecar's ``Description``).
DESCRIPTIONS = {
    "t1_mni": "bias-corrected, skull-stripped T1 in MNI152 space",
    "mask_mni": "brain mask in MNI152 space",
    "pet_mni": "FDG SUVR (pons reference) in MNI152 space",
    "t1_model": "T1 on the model grid (MNI152 space resampled), scaled to [0, 1]",
    "mask_model": "brain mask on the model grid",
    "pet_model": "FDG SUVR on the model grid, scaled to [0, 1]",
}


def _sidecar(key: str, image: Path, raw_pet: Path, raw_t1: str) -> dict:
    """The sidecar of one derived image: the keys BIDS requires of a derivative of its kind."""
    sidecar = _pet_sidecar(raw_pet) if key.startswith("pet") else {}
    sidecar["Description"] = DESCRIPTIONS[key]
    sidecar["Sources"] = [raw_t1] if key.startswith(("t1", "mask")) else [raw_t1, str(raw_pet)]
    sidecar["SpatialReference"] = (
        "MNI152 2009a template as nilearn ships it (nilearn.datasets.load_mni152_template)"
    )
    if "_model" in key:
        shape = "x".join(str(n) for n in nib.load(str(image)).shape[:3])
        sidecar["Resolution"] = f"the model grid: {shape} voxels covering the MNI152 brain box"
    if not key.startswith("mask"):  # the T1 is the brain, the PET the whole field of view
        sidecar["SkullStripped"] = key.startswith("t1")
    return sidecar


def write_subject(out: Path, row: dict, preprocess_dir: Path) -> list[Path]:
    """Lay out one subject's outputs under ``out``; returns the files written.

    ``row`` holds the subject's ``participant_id``, ``session_id``, ``mri_path`` and
    ``pet_path`` (the raw images, for the sidecars).
    """
    sub, ses = row["participant_id"], row["session_id"]
    subject = f"{sub}_{ses}"
    written = []
    for key, (datatype, name) in LAYOUT.items():
        src = subject_file(Path(preprocess_dir) / subject, subject, key)
        if not src.is_file():  # the warp exists only with preprocess.t1_to_mni: syn
            continue
        dst = out / sub / ses / datatype / f"{subject}_{name}"
        _link(src, dst)
        written.append(dst)
        if key in DESCRIPTIONS:
            sidecar = _sidecar(key, dst, Path(row["pet_path"]), str(row["mri_path"]))
            bids.write_json(sidecar, bids.sidecar_path(dst))
    return written


def write_derivative(
    pairs_tsv: str | os.PathLike,
    preprocess_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    raw_bids: str = "../../bids",
    relative_to: str | os.PathLike | None = None,
) -> Path:
    """Write the BIDS derivative of every subject of ``pairs.tsv`` under ``out_dir``.

    Parameters
    ----------
    pairs_tsv
        The ingest table (``participant_id``, ``session_id``, ``pet_path``).
    preprocess_dir
        The preprocess rule's folder (``<root>/preprocess``).
    out_dir
        The derivative's root (``<root>/derivatives/preprocess``).
    raw_bids
        ``SourceDatasets`` URL of the raw tree, relative to ``out_dir``.
    relative_to
        The folder ``pairs.tsv``'s paths are relative to (the working directory when None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = pd.read_csv(pairs_tsv, sep="\t", dtype=str, keep_default_na=False)
    base = Path(relative_to) if relative_to else Path.cwd()
    for row in pairs.to_dict("records"):
        row["pet_path"] = str(base / row["pet_path"])
        write_subject(out, row, Path(preprocess_dir))
    bids.write_json(
        {
            "Name": "fusion3d preprocessing (T1 and FDG PET in MNI152 space and on the model grid)",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "Authors": ["fusion3d preprocess"],
            "GeneratedBy": [{"Name": "fusion3d", "Description": "preprocess rule"}],
            "SourceDatasets": [{"URL": raw_bids}],
        },
        out / "dataset_description.json",
    )
    (out / ".bidsignore").write_text("\n".join(BIDSIGNORE) + "\n")
    (out / "README").write_text(
        "Per-subject preprocessing of fusion3d (docs/outputs.md): the T1, brain mask and FDG\n"
        "SUVR in MNI152 space and on the model grid, the affine transforms and the QC record.\n"
        "The same files as results/preprocess/<subject>/, linked into the BIDS layout.\n"
    )
    return out
