"""Write a download as the BIDS dataset ``clinica convert adni-to-bids`` makes of it.

Clinica (0.12.0 on PyPI) could not be used to name the files: importing its converter's naming
functions pulls its whole dependency tree (cattrs, pydra, nilearn's and nimare's stacks, vtk,
xgboost, ...), which the project does not install. The layout follows ../shared/ADNI.md and
the naming table of Clinica 0.12's ``adni-to-bids`` converter, written here as data:

- subject ``011_S_0002`` -> ``sub-ADNI011S0002``; session from VISCODE (``bl`` -> ``ses-M000``,
  ``m12`` -> ``ses-M012``), matched by date as the converter does;
- one T1w per session (the converter's preference), ``anat/<sub>_<ses>_T1w.nii.gz``;
- PET ``pet/<sub>_<ses>_trc-<tracer>_rec-<step>_pet.nii.gz`` with the tracer labels
  ``18FFDG``, ``18FAV45``, ... and the step labels of :data:`CLINICA_REC`;
- images converted with dcm2niix (``-b y -z y``): JSON sidecars beside them;
- ``participants.tsv`` (``participant_id``, ``alternative_id_1``, ``sex``, ``diagnosis_sc``),
  ``sub-*/sub-*_sessions.tsv`` (``session_id``, ``diagnosis`` CN/MCI/AD, ``examination_date``,
  ``age``) and ``sub-*/ses-*/sub-*_ses-*_scans.tsv`` (``filename``, ``acq_time``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fusion3d.ingest import clinical
from fusion3d.ingest.convert import dicom_to_nifti
from fusion3d.ingest.locate import locate_image, scan_download
from fusion3d.ingest.manifest import read_manifests
from fusion3d.ingest.select import DEFAULT_T1_PREFERENCE, is_tracer, normalise_description, t1_rank

#: Clinica 0.12's ``rec-`` label of each ADNI PET processing step.
CLINICA_REC = {
    "ADNI Brain PET: Raw": "raw",
    "Co-registered Dynamic": "coregdyn",
    "Co-registered, Averaged": "coregavg",
    "Coreg, Avg, Standardized Image and Voxel Size": "coregstd",
    "Coreg, Avg, Std Img and Vox Siz, Uniform Resolution": "coregiso8",
    "Coreg, Avg, Std Img and Vox Siz, Uniform 6mm Res": "coregiso6",
}
#: Clinica's tracer labels (BIDS ``trc-``) by the description's leading word.
CLINICA_TRACERS = {"AV45": "18FAV45", "FBB": "18FFBB", "AV1451": "18FAV1451", "PIB": "11CPIB"}
CLINICA_DIAGNOSIS = {"CN": "CN", "MCI": "MCI", "Dementia": "AD", "AD": "AD"}


def bids_subject(ptid: str) -> str:
    """``011_S_0002`` -> ``sub-ADNI011S0002``."""
    return "sub-ADNI" + ptid.replace("_S_", "S")


def _pet_name(description: str) -> str | None:
    """``trc-<tracer>_rec-<step>`` of a PET description, None for a step Clinica does not take."""
    words = description.split()
    tracer = CLINICA_TRACERS.get(words[0], "18FFDG")
    step = description[len(words[0]) + 1 :] if words[0] in CLINICA_TRACERS else description
    for name, rec in CLINICA_REC.items():
        if normalise_description(name) == normalise_description(step):
            return f"trc-{tracer}_rec-{rec}"
    return None


def _write_volume(files: list[Path], fmt: str, target: Path, work: Path) -> dict:
    """The image as dcm2niix writes it (4D when dynamic), its sidecar returned."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dicom":
        volume, sidecar = dicom_to_nifti(files, work)
        shutil.copyfile(volume, target)
        return json.loads(sidecar.read_text()) if sidecar else {}
    images = [nib.load(str(p)) for p in sorted(files)]
    if len(images) == 1:
        nib.save(images[0], str(target))
    else:
        data = np.stack([np.asarray(i.dataobj) for i in images], axis=3)
        nib.save(nib.Nifti1Image(data, images[0].affine, images[0].header), str(target))
    return {}


def _session(rows, date: pd.Timestamp, ids, first: pd.Timestamp) -> tuple[str, pd.Series | None]:
    row = clinical.visit_row(rows, date, ids, 180)
    session = clinical.viscode_session(row["VISCODE"]) if row is not None else None
    return session or clinical.months_session(date, first), row


def _images(download: Path, manifests) -> pd.DataFrame:
    """Every located T1 / PET image of the download with the fields the layout needs."""
    manifest = read_manifests(manifests)
    manifest = manifest[manifest["problem"] == ""]
    index = scan_download(download)
    rows = []
    for r in manifest.to_dict("records"):
        files, fmt, _ = locate_image(index, r["Image Data ID"], r["Subject"])
        if fmt is None:
            continue
        desc, mod = r["Description"], str(r["Modality"]).upper()
        if mod.startswith("MR"):
            rank = t1_rank(desc, DEFAULT_T1_PREFERENCE)
            if rank is None:
                continue
            name, kind = "T1w", "t1"
        else:
            name, kind, rank = _pet_name(desc), "pet", (0,)
            if name is None:
                continue
            name += "_pet"
        rows.append({**r, "files": files, "fmt": fmt, "name": name, "kind": kind, "rank": rank})
    return pd.DataFrame(rows)


def write_clinica_bids(download: Path, manifests, adnimerge: Path, out: Path) -> Path:
    """Write the download as Clinica's ``adni-to-bids`` output under ``out``; returns ``out``."""
    images = _images(Path(download), manifests)
    merged = clinical.index_adnimerge(clinical.read_adnimerge(adnimerge))
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(
        json.dumps({"Name": "ADNI", "BIDSVersion": "1.9.0", "DatasetType": "raw"}) + "\n"
    )
    people, work = [], Path(tempfile.mkdtemp(prefix="clinica_fixture_"))
    for ptid, subject in images.groupby("Subject", sort=True):
        sub, first = bids_subject(ptid), subject["Acq Date"].min()
        sessions, scans = {}, {}
        best_t1 = {}
        for r in subject.sort_values("Image Data ID").to_dict("records"):
            ses, row = _session(merged.get(ptid), r["Acq Date"], [r["Image Data ID"]], first)
            if r["kind"] == "t1":  # one T1w per session, by the converter's preference
                if ses in best_t1 and best_t1[ses][0] <= r["rank"]:
                    continue
                best_t1[ses] = (r["rank"], r)
                continue
            _write_one(out, sub, ses, r, work, scans)
            sessions.setdefault(ses, (row, r))
        for ses, (_, r) in best_t1.items():
            _, row = _session(merged.get(ptid), r["Acq Date"], [r["Image Data ID"]], first)
            _write_one(out, sub, ses, r, work, scans)
            sessions.setdefault(ses, (row, r))
        _write_subject_tables(out, sub, sessions, scans)
        r0 = subject.iloc[0]
        dx = _diagnosis(merged.get(ptid), None, r0)
        people.append(
            {"participant_id": sub, "alternative_id_1": ptid, "sex": r0["Sex"], "diagnosis_sc": dx}
        )
    shutil.rmtree(work, ignore_errors=True)
    pd.DataFrame(people).to_csv(out / "participants.tsv", sep="\t", index=False)
    return out


def _write_one(out: Path, sub: str, ses: str, r: dict, work: Path, scans: dict) -> None:
    folder = "anat" if r["kind"] == "t1" else "pet"
    rel = f"{folder}/{sub}_{ses}_{r['name']}.nii.gz"
    sidecar = _write_volume(r["files"], r["fmt"], out / sub / ses / rel, work)
    if r["kind"] == "pet" and "TracerName" not in sidecar and not is_tracer(r["Description"]):
        sidecar["TracerName"] = "FDG"
    (out / sub / ses / rel.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar) + "\n")
    scans.setdefault(ses, []).append({"filename": rel, "acq_time": r["Acq Date"].isoformat()})


def _diagnosis(rows, row, r) -> str:
    group, raw = clinical.diagnosis(row if row is not None else None, r.get("Group", ""))
    if group is None and rows is not None and len(rows):
        group, raw = clinical.diagnosis(rows.iloc[0], r.get("Group", ""))
    return CLINICA_DIAGNOSIS.get(raw, group or "n/a")


def _write_subject_tables(out: Path, sub: str, sessions: dict, scans: dict) -> None:
    rows = []
    for ses, (row, r) in sorted(sessions.items()):
        rows.append(
            {
                "session_id": ses,
                "diagnosis": _diagnosis(None, row, r),
                "examination_date": r["Acq Date"].date().isoformat(),
                "age": r.get("Age", "n/a"),
            }
        )
        pd.DataFrame(scans[ses]).to_csv(
            out / sub / ses / f"{sub}_{ses}_scans.tsv", sep="\t", index=False
        )
    pd.DataFrame(rows).to_csv(out / sub / f"{sub}_sessions.tsv", sep="\t", index=False)
