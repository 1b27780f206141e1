"""Ingest a BIDS dataset (``cohort.source: bids``): T1w + FDG PET pairs from any BIDS tree.

The dataset is indexed with bids2table (faster than pybids on a 660-subject layout:
``benchmarks/bench_bids_index.py``, docs/usage.md). Every T1w (``anat/``) and PET (``pet/``)
NIfTI becomes a :class:`BidsCandidate`; PET of another tracer than FDG (``trc-`` entity, else
the sidecar's ``TracerName``) is excluded with the reason. The candidates then go through the
steps of the IDA path (:mod:`fusion3d.ingest.run`): pairing by :func:`select_subject` (visit
rule, ``max_days_apart``), conversion with the header checks and frame averaging, fallback to
the next candidate when an image fails, ``pairs.tsv`` / ``excluded.tsv`` / ``header_flags.tsv``.

Choice rules (documented in docs/usage.md):

- several T1w in a session: the lowest ``run-`` (then the file name);
- several FDG PET in a session: the ``rec-`` label earliest in ``ingest.fdg_preference`` read
  as Clinica names the steps (:func:`fusion3d.ingest.select.pet_rec_label`), then the lowest
  ``run-``; the others are rows of ``excluded.tsv`` naming the one chosen;
- dates come from ``scans.tsv`` (``acq_time``), else ``sessions.tsv`` (``acq_time`` or
  Clinica's ``examination_date``). When a subject's images are not all dated, T1 and PET pair
  only within a session, and sessions count in label order (``ses-M000`` before ``ses-M012``).

Diagnosis: the column ``cohort.diagnosis_column`` of the subject's ``sessions.tsv`` at the
session, else of ``participants.tsv``, mapped by ``cohort.diagnosis_map``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fusion3d.ingest import bids
from fusion3d.ingest.run import (
    HEADER_FLAG_COLUMNS,
    MISSING_COLUMNS,
    IngestPlan,
    NoPairsError,
    Study,
    SubjectResult,
    choose_and_convert,
    exclusion_row,
    exclusion_summary,
    header_flag_rows,
    one_line_table,
    resolve_options,
    result_tables,
    write_kept,
)
from fusion3d.ingest.select import Candidate, Pair, normalise_description, pet_rec_label
from fusion3d.ingest.sources import BidsInputError, bids_description_file
from fusion3d.io import read_tsv, write_tsv

log = logging.getLogger("fusion3d.ingest")

#: Diagnosis labels mapped to the study's groups unless ``cohort.diagnosis_map`` says otherwise
#: (Clinica writes CN, MCI, AD; ADNIMERGE's DX says Dementia; DX_bl says EMCI, LMCI, SMC).
DEFAULT_DIAGNOSIS_MAP = {
    "CN": "CN",
    "SMC": "CN",
    "MCI": "MCI",
    "EMCI": "MCI",
    "LMCI": "MCI",
    "AD": "AD",
    "Dementia": "AD",
}
#: Session label given to the images of a dataset without sessions.
NO_SESSION = "ses-01"
_FDG_RE = re.compile(r"fdg|fluorodeoxyglucose", re.IGNORECASE)
_CLINICA_ADNI_RE = re.compile(r"^ADNI(\d{3})S(\d{4})$")
_NA = ("", "n/a", "nan", "NaN", "None")


@dataclass(frozen=True)
class BidsCandidate(Candidate):
    """A T1w or FDG PET of the dataset; ``image_id`` is its path inside the dataset."""

    order: int = 0
    session: str = ""
    dated: bool = True
    rec: str = ""

    @property
    def number(self) -> int:
        """Tie-break: the index of the file in name order."""
        return self.order


def index_images(bids_dir: str | os.PathLike) -> pd.DataFrame:
    """Every T1w (``anat/``) and PET (``pet/``) NIfTI of the dataset, one row each.

    Columns: ``sub``, ``ses`` (a ``ses-`` label, :data:`NO_SESSION` without sessions),
    ``suffix``, ``trc``, ``rec``, ``run``, ``rel`` (path inside the dataset), ``path``.
    """
    import bids2table

    bids_description_file(bids_dir)
    table = bids2table.index_dataset(Path(bids_dir)).to_pandas()
    keep = table["ext"].isin([".nii", ".nii.gz"]) & (
        ((table["datatype"] == "anat") & (table["suffix"] == "T1w"))
        | ((table["datatype"] == "pet") & (table["suffix"] == "pet"))
    )
    images = table[keep].copy()
    images["ses"] = [f"ses-{s}" if isinstance(s, str) and s else NO_SESSION for s in images["ses"]]
    images["rel"] = images["path"].astype(str)
    images["path"] = [str(Path(r) / p) for r, p in zip(images["root"], images["rel"], strict=True)]
    for col in ("trc", "rec"):
        images[col] = [v if isinstance(v, str) else "" for v in images[col]]
    images["run"] = [int(v) if pd.notna(v) else 0 for v in images["run"]]
    images = images.sort_values("rel").reset_index(drop=True)
    return images[["sub", "ses", "suffix", "trc", "rec", "run", "rel", "path"]]


def read_sidecar(image: str | os.PathLike) -> dict:
    """The image's JSON metadata with BIDS inheritance (bids2table); {} when it has none."""
    import bids2table

    try:
        return dict(bids2table.load_bids_metadata(Path(image)))
    except (OSError, ValueError) as exc:
        raise BidsInputError(f"{image}: unreadable JSON sidecar: {exc}") from exc


def ptid_of(sub: str) -> str:
    """The subject's source ID: a Clinica ADNI label ``ADNI011S0002`` -> ``011_S_0002``."""
    match = _CLINICA_ADNI_RE.match(sub)
    return f"{match.group(1)}_S_{match.group(2)}" if match else sub


@dataclass
class ClinicalTables:
    """The dataset's tables: participants (by ``sub-`` label), sessions (by subject and session),
    acquisition dates (by image path inside the dataset)."""

    participants: dict[str, dict]
    sessions: dict[tuple[str, str], dict]
    scan_dates: dict[str, pd.Timestamp]


def _read_table(path: Path) -> pd.DataFrame:
    """A BIDS TSV as text (``n/a`` kept as text)."""
    try:
        return read_tsv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BidsInputError(f"{path}: unreadable TSV: {exc}") from exc


def _date(value) -> pd.Timestamp | None:
    """A date from an ``acq_time`` / ``examination_date`` cell, None when absent."""
    if value is None or str(value).strip() in _NA:
        return None
    stamp = pd.to_datetime(str(value).strip(), errors="coerce")
    return None if pd.isna(stamp) else pd.Timestamp(stamp).normalize()


def read_clinical(bids_dir: str | os.PathLike, subjects) -> ClinicalTables:
    """Read ``participants.tsv``, each subject's ``sessions.tsv`` and each session's ``scans.tsv``."""
    root = Path(bids_dir)
    participants: dict[str, dict] = {}
    if (root / "participants.tsv").is_file():
        frame = _read_table(root / "participants.tsv")
        if "participant_id" not in frame.columns:
            raise BidsInputError(f"{root / 'participants.tsv'}: no participant_id column")
        participants = {r["participant_id"]: r for r in frame.to_dict("records")}
    sessions: dict[tuple[str, str], dict] = {}
    dates: dict[str, pd.Timestamp] = {}
    for sub in sorted(set(subjects)):
        path = root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv"
        if path.is_file():
            for row in _read_table(path).to_dict("records"):
                sessions[(f"sub-{sub}", str(row.get("session_id", "")))] = row
        for scans in sorted((root / f"sub-{sub}").glob("**/*_scans.tsv")):
            frame = _read_table(scans)
            for row in frame.to_dict("records"):
                when = _date(row.get("acq_time"))
                if when is not None:
                    rel = (scans.parent / str(row.get("filename", ""))).relative_to(root)
                    dates[rel.as_posix()] = when
    return ClinicalTables(participants, sessions, dates)


def check_diagnosis_column(tables: ClinicalTables, column: str, bids_dir) -> None:
    """Raise :class:`BidsInputError` when neither table has the diagnosis column."""
    in_sessions = any(column in row for row in tables.sessions.values())
    in_participants = any(column in row for row in tables.participants.values())
    if not (in_sessions or in_participants):
        raise BidsInputError(
            f"{Path(bids_dir) / 'participants.tsv'}: no column {column!r} "
            "(config key cohort.diagnosis_column), nor in any sessions.tsv"
        )


def diagnosis_of(
    tables: ClinicalTables, participant: str, session: str, column: str, mapping: dict
) -> tuple[str | None, str]:
    """``(group, raw label)`` at the session (sessions.tsv, else participants.tsv).

    ``group`` is None when the label is missing or not a key of ``mapping``.
    """
    raw = ""
    for row in (tables.sessions.get((participant, session)), tables.participants.get(participant)):
        value = str((row or {}).get(column, "")).strip()
        if value not in _NA:
            raw = value
            break
    return mapping.get(raw), raw


def _session_date(tables: ClinicalTables, participant: str, session: str) -> pd.Timestamp | None:
    row = tables.sessions.get((participant, session)) or {}
    return _date(row.get("acq_time")) or _date(row.get("examination_date"))


def _tracer(row: dict, sidecar: dict) -> str:
    """The PET's tracer: the ``trc-`` label, else the sidecar's ``TracerName`` ('' if neither)."""
    return row["trc"] or str(sidecar.get("TracerName", "")).strip()


def _description(row: dict) -> str:
    """A readable description of an image from its entities (``trc-18FFDG rec-coregavg``)."""
    parts = [f"{k}-{row[k]}" for k in ("trc", "rec") if row[k]]
    parts += [f"run-{row['run']}"] if row["run"] else []
    return " ".join(parts + [row["suffix"]])


def clinica_rec_label(description: str) -> str:
    """The ``rec-`` label Clinica 0.12 gives an ADNI FDG step (``Uniform Resolution`` ->
    ``coregiso8``, ``Uniform 6mm Res`` -> ``coregiso6``; the others as
    :func:`fusion3d.ingest.select.pet_rec_label`)."""
    norm = normalise_description(description)
    if "uniform 6mm" in norm:
        return "coregiso6"
    if "uniform" in norm:
        return "coregiso8"
    return pet_rec_label(description)


def _rec_rank(rec: str, preference) -> int:
    """Rank of a ``rec-`` label in ``ingest.fdg_preference`` read as Clinica's labels.

    ``coregiso`` (older Clinica, and fusion3d's own output) ranks as ``coregiso8``; a label
    not in the list ranks last.
    """
    labels = list(dict.fromkeys(clinica_rec_label(p) for p in preference))
    rec = "coregiso8" if rec == "coregiso" else rec
    return labels.index(rec) if rec in labels else len(labels)


def _classify(plan: IngestPlan, row: dict, sidecar: dict) -> tuple[str, tuple] | None:
    """``(kind, rank)`` of a T1w or FDG PET; None (with an exclusion row) for another tracer."""
    desc = _description(row)
    if row["suffix"] == "T1w":
        return "t1", (False, row["run"])
    tracer = _tracer(row, sidecar)
    if not tracer:
        reason = "PET without tracer (no trc- entity, no TracerName in its sidecar)"
    elif not _FDG_RE.search(tracer):
        reason = f"tracer {tracer} is not FDG"
    else:
        return "fdg", (_rec_rank(row["rec"], plan.options["fdg_preference"]), row["run"])
    plan.excluded.append(exclusion_row(ptid_of(row["sub"]), row["rel"], desc, reason))
    return None


def plan_bids(bids_dir: str | os.PathLike, options: dict | None = None) -> IngestPlan:
    """Index the dataset and pair T1w with FDG PET per subject, without reading pixel data.

    ``plan.candidates`` is keyed by the subject's ``sub-`` label; ``plan.located`` maps each
    image's path inside the dataset to ``([file], "nifti")``; ``plan.index`` holds the
    :class:`ClinicalTables`.
    """
    opts = resolve_options(options)
    images = index_images(bids_dir)
    tables = read_clinical(bids_dir, images["sub"])
    plan = IngestPlan(manifest=pd.DataFrame(), index=tables, options=opts)
    rows_by_sub: dict[str, list] = {}
    for order, row in enumerate(images.to_dict("records")):
        found = _classify(plan, row, read_sidecar(row["path"]) if row["suffix"] == "pet" else {})
        if found is not None:
            rows_by_sub.setdefault(row["sub"], []).append((order, row, *found))
    for sub, rows in rows_by_sub.items():
        participant = f"sub-{sub}"
        dates = [
            tables.scan_dates.get(r["rel"]) or _session_date(tables, participant, r["ses"])
            for _, r, *_ in rows
        ]
        dated = all(d is not None for d in dates)
        sessions = sorted({r["ses"] for _, r, *_ in rows})
        step = pd.Timedelta(days=opts["max_days_apart"] + 1)
        for (order, row, kind, rank), when in zip(rows, dates, strict=True):
            if not dated:  # undated: sessions never pair with each other, in label order
                when = pd.Timestamp("1900-01-01") + sessions.index(row["ses"]) * step
            plan.located[row["rel"]] = ([Path(row["path"])], "nifti")
            plan.candidates.setdefault(participant, []).append(
                BidsCandidate(
                    row["rel"],
                    ptid_of(sub),
                    kind,
                    _description(row),
                    when,
                    rank,
                    row["ses"],
                    order=order,
                    session=row["ses"],
                    dated=dated,
                    rec=row["rec"],
                )
            )
    return plan


@dataclass
class BidsStudy:
    """What every subject's ingest shares: the IDA path's study state (its ADNI tables empty),
    the source dataset and the diagnosis keys."""

    study: Study
    source_dir: Path
    diagnosis_column: str
    diagnosis_map: dict[str, str]


def _visit(pair: Pair, participant: str, bs: BidsStudy, used: dict) -> tuple[dict | None, str]:
    """Session, group, sex and age of one pair, or (None, reason)."""
    tables = bs.study.plan.index
    session = pair.mri.session
    group, raw = diagnosis_of(tables, participant, session, bs.diagnosis_column, bs.diagnosis_map)
    if group is None:
        if not raw:
            return None, f"no diagnosis ({bs.diagnosis_column!r} empty at {session})"
        return None, f"unknown diagnosis label {raw!r} (not a key of cohort.diagnosis_map)"
    if session in used:
        return None, f"session {session} already used by {used[session]}"
    used[session] = pair.mri.image_id
    person = tables.participants.get(participant, {})
    ses_row = tables.sessions.get((participant, session), {})
    sex = str(person.get("sex", "")).strip()
    age = next(
        (
            str(r.get("age")).strip()
            for r in (ses_row, person)
            if str(r.get("age", "")).strip() not in _NA
        ),
        "",
    )
    return {"session": session, "group": group, "group_raw": raw, "sex": sex, "age": age}, ""


def _write_pair(pair: Pair, participant: str, session: str, bs: BidsStudy, converted, flags):
    """The pair's T1w and FDG PET under ``results/bids`` with their sidecars."""
    out = bs.study.bids_dir
    rec = pair.pet.rec or "unknown"
    paths = (bids.t1_path(out, participant, session), bids.pet_path(out, participant, session, rec))
    for cand, path in zip((pair.mri, pair.pet), paths, strict=True):
        img = converted[cand.image_id]
        source = bs.source_dir / cand.image_id
        sidecar = {
            **read_sidecar(source),
            **img.sidecar,
            "SourceImageID": cand.image_id,
            "SourceDatasetPath": str(source),
            "SourceFormat": "nifti",
        }
        if cand.dated:
            sidecar["AcquisitionDate"] = cand.date.date().isoformat()
        if img.affine_source:
            sidecar["HeaderAffine"] = img.affine_source
        reasons = [f["reason"] for f in flags if f["image_id"] == cand.image_id]
        if reasons:
            sidecar["HeaderFlags"] = reasons
        if cand.kind == "fdg":
            sidecar = bids.pet_sidecar(sidecar)
        bids.write_image(img.data, img.affine, path, sidecar, dtype=img.dtype)
    return paths


def _pair_row(pair: Pair, participant: str, visit: dict, paths) -> dict:
    """The pair's row of pairs.tsv (dates ``n/a`` when the dataset gives none)."""
    dated = pair.mri.dated
    return {
        "participant_id": participant,
        **{k: visit[k] for k in ("group", "group_raw", "sex", "age")},
        "session_id": visit["session"],
        "ptid": pair.mri.ptid,
        "mri_image_id": pair.mri.image_id,
        "pet_image_id": pair.pet.image_id,
        "mri_date": pair.mri.date.date().isoformat() if dated else "n/a",
        "pet_date": pair.pet.date.date().isoformat() if dated else "n/a",
        "days_apart": pair.days_apart if dated else "n/a",
        "mri_path": paths[0],
        "pet_path": paths[1],
    }


def _process_subject(participant: str, bs: BidsStudy) -> SubjectResult:
    """One subject: choose and convert (with fallback), session and diagnosis, write, record."""
    result = SubjectResult()
    plan = bs.study.plan
    pairs, reasons, converted = choose_and_convert(participant, plan, bs.study.workdir)
    used: dict[str, str] = {}
    for pair in pairs:
        visit, why = _visit(pair, participant, bs, used)
        if visit is None:
            reasons.update(dict.fromkeys((pair.mri.image_id, pair.pet.image_id), why))
            continue
        flags = header_flag_rows(pair, converted, plan)
        paths = _write_pair(pair, participant, visit["session"], bs, converted, flags)
        result.pairs.append(_pair_row(pair, participant, visit, paths))
        result.flags.extend(flags)
    cands = {c.image_id: c for c in plan.candidates[participant]}
    for image_id, reason in reasons.items():
        cand = cands[image_id]
        result.excluded.append(exclusion_row(cand.ptid, image_id, cand.description, reason))
    return result


def _process_or_exclude(participant: str, bs: BidsStudy) -> SubjectResult:
    """:func:`_process_subject`, turning an unexpected error into exclusion rows."""
    try:
        return _process_subject(participant, bs)
    except Exception as exc:  # one bad subject never stops the cohort
        log.exception("%s: ingest failed", participant)
        res = SubjectResult()
        for c in bs.study.plan.candidates[participant]:
            res.excluded.append(
                exclusion_row(c.ptid, c.image_id, c.description, f"ingest error: {exc}")
            )
        return res


def _write_outputs(bs: BidsStudy, rows: SubjectResult, outputs: dict, keep_dir) -> tuple:
    """Write the BIDS tree's tables, excluded.tsv, header_flags.tsv, missing.tsv, pairs.tsv."""
    study = bs.study
    pairs, excluded, participants = result_tables(
        rows.pairs, rows.excluded, study.plan.options["relative_to"]
    )
    bids.write_dataset_description(
        study.bids_dir, name=f"{bs.source_dir.name} (ingested by fusion3d)"
    )
    bids.write_readme(study.bids_dir, f"BIDS dataset {bs.source_dir}")
    bids.write_participants(participants, study.bids_dir)
    where = write_kept(excluded, outputs["excluded"], keep_dir)
    flags = one_line_table(pd.DataFrame(rows.flags, columns=list(HEADER_FLAG_COLUMNS)))
    write_kept(flags, outputs["header_flags"], keep_dir)
    write_kept(pd.DataFrame(columns=list(MISSING_COLUMNS)), outputs["missing"], keep_dir)
    write_tsv(pairs, outputs["pairs"])
    log.info("ingest: %d pairs, %d images excluded", len(pairs), len(excluded))
    log.warning("%s", exclusion_summary(excluded, {}))
    return pairs, excluded, where


def run_bids_ingest(
    *,
    source_dir: str | os.PathLike,
    bids_dir: str | os.PathLike,
    pairs_tsv: str | os.PathLike,
    excluded_tsv: str | os.PathLike,
    options: dict | None = None,
    diagnosis_column: str = "diagnosis",
    diagnosis_map: dict | None = None,
    threads: int = 1,
    keep_dir: str | os.PathLike | None = None,
    require_pairs: bool = False,
    header_flags_tsv: str | os.PathLike | None = None,
    missing_tsv: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Ingest the BIDS dataset ``source_dir`` into ``bids_dir``, ``pairs.tsv`` and the tables.

    Parameters
    ----------
    source_dir
        The dataset's root (``cohort.bids_dir``; holds ``dataset_description.json``).
    bids_dir, pairs_tsv, excluded_tsv, header_flags_tsv, missing_tsv
        Outputs, as :func:`fusion3d.ingest.run.run_ingest` writes them (missing.tsv is empty:
        a BIDS dataset has no cohort list).
    options
        The ``ingest`` options (:func:`fusion3d.ingest.run.resolve_options`).
    diagnosis_column, diagnosis_map
        ``cohort.diagnosis_column`` and ``cohort.diagnosis_map`` (default
        :data:`DEFAULT_DIAGNOSIS_MAP`).
    threads, keep_dir, require_pairs
        As for :func:`fusion3d.ingest.run.run_ingest`.

    Returns the pairs table as written. Raises :class:`BidsInputError` for a folder without
    ``dataset_description.json``, an unreadable table, or a diagnosis column found in neither
    ``participants.tsv`` nor any ``sessions.tsv``; :class:`NoPairsError` with ``require_pairs``
    when nothing pairs (every table written first).
    """
    source = Path(source_dir)
    plan = plan_bids(source, options)
    check_diagnosis_column(plan.index, diagnosis_column, source)
    study = Study(plan, Path(bids_dir), Path(tempfile.mkdtemp(prefix="fusion3d_bids_")), {}, {}, {})
    study.bids_dir.mkdir(parents=True, exist_ok=True)
    mapping = dict(DEFAULT_DIAGNOSIS_MAP if diagnosis_map is None else diagnosis_map)
    bs = BidsStudy(study, source, diagnosis_column, mapping)
    rows = SubjectResult(excluded=list(plan.excluded))
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
            for res in pool.map(lambda p: _process_or_exclude(p, bs), sorted(plan.candidates)):
                rows.pairs.extend(res.pairs)
                rows.excluded.extend(res.excluded)
                rows.flags.extend(res.flags)
    finally:
        shutil.rmtree(study.workdir, ignore_errors=True)
    excluded_tsv = Path(excluded_tsv)
    outputs = {
        "pairs": Path(pairs_tsv),
        "excluded": excluded_tsv,
        "header_flags": Path(header_flags_tsv or excluded_tsv.with_name("header_flags.tsv")),
        "missing": Path(missing_tsv or excluded_tsv.with_name("missing.tsv")),
    }
    pairs, excluded, where = _write_outputs(bs, rows, outputs, keep_dir)
    if require_pairs and pairs.empty:
        n_images = len(plan.located) + len(plan.excluded)
        raise NoPairsError(
            f"no T1w + FDG PET pair found among {n_images} images of {source}; "
            f"every image and its reason: {where}",
            excluded,
        )
    return pairs
