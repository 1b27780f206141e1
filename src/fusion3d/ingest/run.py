"""Ingest a LONI IDA download: plan (metadata only), convert, write BIDS, pairs and exclusions.

:func:`plan_ingest` reads the manifests, walks the download once, classifies every image and
pairs T1 with FDG per subject without touching pixel data (fast enough for DAG-build time).
:func:`run_ingest` converts the chosen images; an image that fails its checks is excluded with
the reason and the subject falls back to its next candidate. One bad subject never stops the
cohort.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fusion3d.cohort import (
    IncompleteCohortError,
    check_completeness,
    describe_summary,
    read_cohort,
)
from fusion3d.ingest import bids, clinical
from fusion3d.ingest.convert import ConversionError, convert_image
from fusion3d.ingest.locate import DownloadIndex, locate_image, scan_download
from fusion3d.ingest.manifest import read_manifests
from fusion3d.ingest.select import (
    DEFAULT_FDG_PREFERENCE,
    DEFAULT_T1_PREFERENCE,
    Candidate,
    Pair,
    is_tracer,
    pet_rec_label,
    preference_rank,
    select_subject,
    t1_rank,
)
from fusion3d.io import write_tsv

log = logging.getLogger("fusion3d.ingest")

DEFAULT_OPTIONS = {
    "t1_preference": DEFAULT_T1_PREFERENCE,
    "fdg_preference": DEFAULT_FDG_PREFERENCE,
    "max_days_apart": 180,
    "visits": "baseline",
    "relative_to": None,
    "allow_incomplete_cohort": False,
}
PAIRS_COLUMNS = (
    "participant_id",
    "session_id",
    "ptid",
    "group",
    "group_raw",
    "sex",
    "age",
    "mri_image_id",
    "pet_image_id",
    "mri_date",
    "pet_date",
    "days_apart",
    "mri_path",
    "pet_path",
)
EXCLUDED_COLUMNS = ("ptid", "image_id", "description", "reason")
MISSING_COLUMNS = ("image_id", "ptid", "reason", "detail")


def resolve_options(options: dict | None) -> dict:
    """Merge ``options`` over :data:`DEFAULT_OPTIONS` and check them.

    Raises
    ------
    ValueError
        Naming the key for an unknown key or a bad value.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown ingest option(s): {', '.join(unknown)}")
    merged = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    for key in ("t1_preference", "fdg_preference"):
        value = merged[key]
        value = [value] if isinstance(value, str) else list(value)
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"ingest option {key}: a non-empty list of descriptions is required")
        merged[key] = tuple(value)
    if merged["visits"] not in ("baseline", "all"):
        raise ValueError(f"ingest option visits: 'baseline' or 'all', got {merged['visits']!r}")
    try:
        merged["max_days_apart"] = int(merged["max_days_apart"])
    except (TypeError, ValueError) as exc:
        raise ValueError("ingest option max_days_apart: an integer is required") from exc
    if merged["max_days_apart"] < 0:
        raise ValueError("ingest option max_days_apart: must be >= 0")
    return merged


@dataclass
class IngestPlan:
    """Everything decided from metadata alone.

    Attributes
    ----------
    manifest
        The normalised manifest table.
    index
        The download walk.
    options
        Resolved options.
    candidates
        ``ptid -> [Candidate]``: located, supported T1/FDG images.
    located
        ``image_id -> (files, format)`` for every candidate.
    excluded
        Rows (ptid, image_id, description, reason) decided before pairing.
    pairs
        ``ptid -> [Pair]``: the selection if every image converts.
    selection_excluded
        ``ptid -> {image_id: reason}`` from pairing.
    """

    manifest: pd.DataFrame
    index: DownloadIndex
    options: dict
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)
    located: dict[str, tuple[list[Path], str]] = field(default_factory=dict)
    excluded: list[dict] = field(default_factory=list)
    pairs: dict[str, list[Pair]] = field(default_factory=dict)
    selection_excluded: dict[str, dict[str, str]] = field(default_factory=dict)


def _excl(ptid: str, image_id: str, description: str, reason: str) -> dict:
    return {"ptid": ptid, "image_id": image_id, "description": description, "reason": reason}


def plan_ingest(
    *,
    download_dir: str | os.PathLike,
    manifests=None,
    manifest: pd.DataFrame | None = None,
    options: dict | None = None,
    cohort_ids: list[str] | None = None,
    index: DownloadIndex | None = None,
) -> IngestPlan:
    """Classify, locate and pair every manifest image without reading pixel data.

    Parameters
    ----------
    download_dir
        The download folder (holding ``ADNI/``).
    manifests
        Collection CSV path(s); ignored when ``manifest`` is given.
    manifest
        An already-read manifest table.
    options
        See :func:`run_ingest`.
    cohort_ids
        When given, images outside this list are excluded ("not in cohort list").
    index
        An already-built download index.
    """
    opts = resolve_options(options)
    if manifest is None:
        if manifests is None:
            raise ValueError("plan_ingest needs manifests or manifest")
        manifest = read_manifests(manifests)
    if index is None:
        index = scan_download(download_dir)
    plan = IngestPlan(manifest=manifest, index=index, options=opts)
    cohort = set(cohort_ids) if cohort_ids is not None else None
    columns = [
        "Image Data ID",
        "Subject",
        "Modality",
        "Description",
        "Acq Date",
        "Visit",
        "problem",
    ]
    for image_id, ptid, modality, desc, date, visit, problem in manifest[columns].itertuples(
        index=False, name=None
    ):
        if cohort is not None and image_id not in cohort:
            what = "amyloid/tau tracer" if is_tracer(desc) else "not used by the study"
            plan.excluded.append(_excl(ptid, image_id, desc, f"not in cohort list ({what})"))
            continue
        if problem:
            plan.excluded.append(_excl(ptid, image_id, desc, problem))
            continue
        mod = modality.strip().upper()
        kind, rank = None, None
        if mod.startswith("MR"):
            found = t1_rank(desc, opts["t1_preference"])
            kind, rank = ("t1", found) if found is not None else (None, None)
        elif mod.startswith("PT") or mod == "PET":
            if is_tracer(desc):
                plan.excluded.append(_excl(ptid, image_id, desc, "amyloid/tau tracer"))
                continue
            found = preference_rank(desc, opts["fdg_preference"])
            kind, rank = ("fdg", (found,)) if found is not None else (None, None)
        if kind is None:
            reason = f"{modality or 'unknown modality'} series not in t1_preference/fdg_preference"
            plan.excluded.append(_excl(ptid, image_id, desc, reason))
            continue
        files, fmt, why = locate_image(index, image_id, ptid)
        if fmt is None:
            plan.excluded.append(_excl(ptid, image_id, desc, why))
            continue
        plan.located[image_id] = (files, fmt)
        plan.candidates.setdefault(ptid, []).append(
            Candidate(image_id, ptid, kind, desc, date, tuple(rank), str(visit).strip())
        )
    for ptid, cands in plan.candidates.items():
        pairs, excluded = select_subject(
            cands, max_days_apart=opts["max_days_apart"], visits=opts["visits"]
        )
        plan.pairs[ptid] = pairs
        plan.selection_excluded[ptid] = excluded
    if cohort is not None:
        # Say what the study uses instead, so a reader sees why an image is not in the list.
        for row in plan.excluded:
            if not row["reason"].startswith("not in cohort list (not used"):
                continue
            used = [f"{p.mri.image_id} + {p.pet.image_id}" for p in plan.pairs.get(row["ptid"], [])]
            row["reason"] = (
                f"not in cohort list (subject paired as {'; '.join(used)})"
                if used
                else "not in cohort list (subject not in the cohort)"
                if row["ptid"] not in plan.candidates
                else "not in cohort list"
            )
    return plan


@dataclass
class _SubjectResult:
    pairs: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)


def _process_subject(
    ptid: str,
    plan: IngestPlan,
    bids_dir: Path,
    workdir: Path,
    adnimerge: dict[str, pd.DataFrame],
    first_date: pd.Timestamp,
    csv_rows: dict[str, dict],
) -> _SubjectResult:
    """Convert, fall back on failures, and write one subject's BIDS files."""
    result = _SubjectResult()
    cands = plan.candidates[ptid]
    desc_of = {c.image_id: c.description for c in cands}
    opts = plan.options
    bad: dict[str, str] = {}
    converted = {}
    while True:
        usable = [c for c in cands if c.image_id not in bad]
        pairs, sel_excluded = select_subject(
            usable, max_days_apart=opts["max_days_apart"], visits=opts["visits"]
        )
        failed = False
        for pair in pairs:
            for cand in (pair.mri, pair.pet):
                if cand.image_id in converted:
                    continue
                files, fmt = plan.located[cand.image_id]
                try:
                    converted[cand.image_id] = convert_image(files, fmt, workdir)
                except (ConversionError, OSError) as exc:
                    bad[cand.image_id] = f"unusable image: {exc}"
                    log.warning("%s %s: %s", ptid, cand.image_id, exc)
                    failed = True
                    break
            if failed:
                break
        if not failed:
            break
    reasons = {**sel_excluded, **bad}
    try:
        participant = bids.participant_label(ptid)
    except ValueError as exc:
        reasons.update({i: str(exc) for p in pairs for i in (p.mri.image_id, p.pet.image_id)})
        pairs = []
    rows = adnimerge.get(ptid)
    used_sessions: dict[str, str] = {}
    for pair in pairs:
        ids = (pair.mri.image_id, pair.pet.image_id)
        row = clinical.visit_row(rows, pair.mri.date, ids, opts["max_days_apart"])
        mri_row = csv_rows[pair.mri.image_id]
        group, group_raw = clinical.diagnosis(row, mri_row.get("Group", ""))
        if group is None:
            why = f"no CN/MCI/AD diagnosis (group {group_raw or 'empty'!r})"
            reasons.update(dict.fromkeys(ids, why))
            continue
        session = clinical.viscode_session(row["VISCODE"]) if row is not None else None
        if session is None or session in used_sessions:
            session = clinical.months_session(pair.mri.date, first_date)
        if session in used_sessions:
            why = f"session {session} already used by {used_sessions[session]}"
            reasons.update(dict.fromkeys(ids, why))
            continue
        used_sessions[session] = pair.mri.image_id
        sex, age = clinical.sex_and_age(mri_row.get("Sex", ""), mri_row.get("Age", ""), row, rows)
        mri_img, pet_img = converted[ids[0]], converted[ids[1]]
        t1_out = bids.t1_path(bids_dir, participant, session)
        pet_out = bids.pet_path(bids_dir, participant, session, pet_rec_label(pair.pet.description))
        for cand, img, out in ((pair.mri, mri_img, t1_out), (pair.pet, pet_img, pet_out)):
            files, fmt = plan.located[cand.image_id]
            sidecar = {
                **img.sidecar,
                "SourceImageID": cand.image_id,
                "SourceDescription": cand.description,
                "AcquisitionDate": cand.date.date().isoformat(),
                "SourceFormat": fmt,
                "SourceFileCount": len(files),
            }
            bids.write_image(img.data, img.affine, out, sidecar, dtype=img.dtype)
        result.pairs.append(
            {
                "participant_id": participant,
                "session_id": session,
                "ptid": ptid,
                "group": group,
                "group_raw": group_raw,
                "sex": sex,
                "age": age,
                "mri_image_id": ids[0],
                "pet_image_id": ids[1],
                "mri_date": pair.mri.date.date().isoformat(),
                "pet_date": pair.pet.date.date().isoformat(),
                "days_apart": pair.days_apart,
                "mri_path": t1_out,
                "pet_path": pet_out,
            }
        )
    for image_id, reason in reasons.items():
        result.excluded.append(_excl(ptid, image_id, desc_of[image_id], reason))
    return result


def run_ingest(
    *,
    download_dir: str | os.PathLike,
    manifests,
    adnimerge: str | os.PathLike | None = None,
    bids_dir: str | os.PathLike,
    pairs_tsv: str | os.PathLike,
    excluded_tsv: str | os.PathLike,
    options: dict | None = None,
    cohort_ids: str | os.PathLike | None = None,
    missing_tsv: str | os.PathLike | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """Ingest a LONI IDA download into a BIDS tree, ``pairs.tsv`` and ``excluded.tsv``.

    Parameters
    ----------
    download_dir
        Folder holding ``ADNI/<PTID>/...``.
    manifests
        Collection CSV path(s).
    adnimerge
        ADNIMERGE.csv (diagnosis, visit codes); optional.
    bids_dir, pairs_tsv, excluded_tsv
        Outputs.
    options
        ``t1_preference``, ``fdg_preference`` (lists of descriptions, wildcards allowed),
        ``max_days_apart`` (180), ``visits`` ("baseline" or "all"), ``relative_to`` (write
        pairs.tsv paths relative to this folder), ``allow_incomplete_cohort`` (False).
    cohort_ids
        A cohort list file; when given, completeness is checked first and only its images used.
    missing_tsv
        Where the missing cohort images go (default: ``missing.tsv`` beside ``excluded_tsv``).
    threads
        Subjects converted in parallel.

    Returns
    -------
    pandas.DataFrame
        The pairs table as written.

    Raises
    ------
    ManifestError
        For a missing, empty or malformed collection CSV.
    IncompleteCohortError
        When cohort images are missing and ``allow_incomplete_cohort`` is false (``missing_tsv``
        is written first).
    """
    opts = resolve_options(options)
    manifest = read_manifests(manifests)
    index = scan_download(download_dir)
    ids = None
    if cohort_ids is not None:
        ids = read_cohort(cohort_ids)
        missing, summary = check_completeness(
            ids, manifest, download_dir, allow_incomplete=True, index=index
        )
        missing_tsv = Path(missing_tsv or Path(excluded_tsv).with_name("missing.tsv"))
        write_tsv(missing.reindex(columns=list(MISSING_COLUMNS)), missing_tsv)
        log.info("cohort: %s", describe_summary(summary))
        if len(missing) and not opts["allow_incomplete_cohort"]:
            raise IncompleteCohortError(
                f"cohort incomplete: {describe_summary(summary)}; see {missing_tsv}",
                missing,
                summary,
            )
    adnimerge_rows = clinical.index_adnimerge(
        clinical.read_adnimerge(adnimerge) if adnimerge else None
    )
    plan = plan_ingest(
        download_dir=download_dir, manifest=manifest, options=opts, cohort_ids=ids, index=index
    )
    valid = manifest[manifest["problem"] == ""]
    first_dates = valid.groupby("Subject")["Acq Date"].min().to_dict()
    csv_rows = {r["Image Data ID"]: r for r in manifest.to_dict("records")}
    bids_dir = Path(bids_dir)
    bids_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="fusion3d_ingest_"))
    pair_rows: list[dict] = []
    excluded_rows = list(plan.excluded)

    def work(ptid: str) -> _SubjectResult:
        try:
            return _process_subject(
                ptid, plan, bids_dir, workdir, adnimerge_rows, first_dates[ptid], csv_rows
            )
        except Exception as exc:  # one bad subject never stops the cohort
            log.exception("%s: ingest failed", ptid)
            res = _SubjectResult()
            for c in plan.candidates[ptid]:
                res.excluded.append(_excl(ptid, c.image_id, c.description, f"ingest error: {exc}"))
            return res

    try:
        subjects = sorted(plan.candidates)
        with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
            for res in pool.map(work, subjects):
                pair_rows.extend(res.pairs)
                excluded_rows.extend(res.excluded)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pairs = pd.DataFrame(pair_rows, columns=list(PAIRS_COLUMNS))
    relative_to = opts["relative_to"]
    for col in ("mri_path", "pet_path"):
        pairs[col] = [
            os.path.relpath(p, relative_to) if relative_to else str(Path(p).resolve())
            for p in pairs[col]
        ]
    pairs = pairs.sort_values(["participant_id", "session_id"]).reset_index(drop=True)
    excluded = pd.DataFrame(excluded_rows, columns=list(EXCLUDED_COLUMNS))
    excluded = excluded.sort_values(["ptid", "image_id"]).reset_index(drop=True)
    bids.write_dataset_description(bids_dir)
    participants = (
        pairs.groupby("participant_id", sort=True)
        .agg(
            ptid=("ptid", "first"),
            sex=("sex", "first"),
            age=("age", "first"),
            group=("group", "first"),
            n_sessions=("session_id", "count"),
        )
        .reset_index()
    )
    write_tsv(participants, bids_dir / "participants.tsv")
    write_tsv(excluded, excluded_tsv)
    write_tsv(pairs, pairs_tsv)
    log.info("ingest: %d pairs, %d images excluded", len(pairs), len(excluded))
    return pairs
