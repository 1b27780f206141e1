"""Ingest a LONI IDA download: plan (metadata only), convert, write BIDS, pairs and exclusions.

:func:`plan_ingest` reads the manifests, walks the download once, classifies every image and
pairs T1 with FDG per subject without touching pixel data (fast enough for DAG-build time).
:func:`run_ingest` converts the chosen images; an image that fails its checks is excluded with
the reason and the subject falls back to its next candidate. One bad subject never stops the
cohort. One subject (:func:`_process_subject`) goes through named steps:

1. :func:`choose_and_convert`: pair its candidates, convert the chosen images, choose again
   without an image that fails;
2. :func:`_participant`: its BIDS label;
3. :func:`_visit_of`: per pair, the session, diagnosis, sex and age (ADNIMERGE, else the CSV);
4. :func:`_write_pair`: the BIDS images and sidecars;
5. :func:`_pair_row`: its row of pairs.tsv; every other candidate becomes an excluded.tsv row.

When nothing pairs, :class:`NoPairsError` counts the excluded images per reason. Every image's
header is checked as it is converted (:mod:`fusion3d.ingest.headers`, option
``header_checks``); header flags that do not refuse an image (qform and sform disagree, T1 and
PET handedness differ) go to ``header_flags.tsv`` and the images' sidecars. Every reason is
written on one line, and ingest ends with a WARNING that counts the excluded images per reason
and names the first few files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fusion3d.ingest import bids, clinical
from fusion3d.ingest.cohort import (
    IncompleteCohortError,
    check_completeness,
    describe_summary,
    read_cohort,
)
from fusion3d.ingest.convert import ConversionError, ConvertedImage, convert_image
from fusion3d.ingest.headers import one_line, pair_handedness_flag, resolve_header_checks
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
    "header_checks": None,
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
HEADER_FLAG_COLUMNS = ("ptid", "image_id", "flag", "reason")
#: File names shown per reason in the closing WARNING of ingest.
SUMMARY_NAMES = 3


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
    merged["header_checks"] = resolve_header_checks(merged["header_checks"])
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


def exclusion_row(ptid: str, image_id: str, description: str, reason: str) -> dict:
    """One row of excluded.tsv."""
    return {"ptid": ptid, "image_id": image_id, "description": description, "reason": reason}


def _classify(plan: IngestPlan, row: tuple, cohort: set[str] | None) -> None:
    """Classify one manifest row: exclude it with the reason, or add it as a T1/FDG candidate.

    ``row`` is ``(image_id, ptid, modality, description, date, visit, problem)``.
    """
    image_id, ptid, modality, desc, date, visit, problem = row
    opts = plan.options
    if cohort is not None and image_id not in cohort:
        what = "amyloid/tau tracer" if is_tracer(desc) else "not used by the study"
        plan.excluded.append(exclusion_row(ptid, image_id, desc, f"not in cohort list ({what})"))
        return
    if problem:
        plan.excluded.append(exclusion_row(ptid, image_id, desc, problem))
        return
    mod = modality.strip().upper()
    kind, rank = None, None
    if mod.startswith("MR"):
        found = t1_rank(desc, opts["t1_preference"])
        kind, rank = ("t1", found) if found is not None else (None, None)
    elif mod.startswith("PT") or mod == "PET":
        if is_tracer(desc):
            plan.excluded.append(exclusion_row(ptid, image_id, desc, "amyloid/tau tracer"))
            return
        found = preference_rank(desc, opts["fdg_preference"])
        kind, rank = ("fdg", (found,)) if found is not None else (None, None)
    if kind is None:
        reason = f"{modality or 'unknown modality'} series not in t1_preference/fdg_preference"
        plan.excluded.append(exclusion_row(ptid, image_id, desc, reason))
        return
    files, fmt, why = locate_image(plan.index, image_id, ptid)
    if fmt is None:
        plan.excluded.append(exclusion_row(ptid, image_id, desc, why))
        return
    plan.located[image_id] = (files, fmt)
    plan.candidates.setdefault(ptid, []).append(
        Candidate(image_id, ptid, kind, desc, date, tuple(rank), str(visit).strip())
    )


def _explain_cohort_exclusions(plan: IngestPlan) -> None:
    """Say what the study uses instead of an image left out of the cohort list."""
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
    columns = ["Image Data ID", "Subject", "Modality", "Description", "Acq Date", "Visit"]
    for row in manifest[columns + ["problem"]].itertuples(index=False, name=None):
        _classify(plan, row, cohort)
    for ptid, cands in plan.candidates.items():
        pairs, excluded = select_subject(
            cands, max_days_apart=opts["max_days_apart"], visits=opts["visits"]
        )
        plan.pairs[ptid] = pairs
        plan.selection_excluded[ptid] = excluded
    if cohort is not None:
        _explain_cohort_exclusions(plan)
    return plan


@dataclass
class SubjectResult:
    """One subject's rows of pairs.tsv and excluded.tsv."""

    pairs: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)


@dataclass
class Study:
    """What every subject's ingest shares: the plan, the clinical tables, the output folders."""

    plan: IngestPlan
    bids_dir: Path
    workdir: Path
    adnimerge: dict[str, pd.DataFrame]
    first_dates: dict[str, pd.Timestamp]
    csv_rows: dict[str, dict]


@dataclass
class _Visit:
    """The BIDS session and the clinical facts of one pair."""

    session: str
    group: str
    group_raw: str
    sex: str
    age: object


def _convert_pairs(
    ptid: str, pairs: list[Pair], plan: IngestPlan, workdir: Path, converted: dict
) -> tuple[str, str] | None:
    """Convert the images of ``pairs`` not converted yet (into ``converted``).

    Returns ``(image_id, reason)`` of the first image that fails, or None when all convert.
    """
    for pair in pairs:
        for cand in (pair.mri, pair.pet):
            if cand.image_id in converted:
                continue
            files, fmt = plan.located[cand.image_id]
            checks = plan.options["header_checks"]
            try:
                converted[cand.image_id] = convert_image(
                    files, fmt, workdir, modality=cand.kind, checks=checks
                )
            except (ConversionError, OSError) as exc:
                reason = one_line(exc)
                log.warning("%s %s (%s): excluded: %s", ptid, cand.image_id, files[0].name, reason)
                return cand.image_id, f"unusable image: {reason}"
    return None


def choose_and_convert(
    ptid: str, plan: IngestPlan, workdir: Path
) -> tuple[list[Pair], dict[str, str], dict[str, ConvertedImage]]:
    """Step 1: choose the subject's pairs and convert their images, falling back on failures.

    An image that fails its checks is excluded with the reason and the choice is made again
    without it, until every chosen image converts (or nothing is left to choose).

    Returns
    -------
    (pairs, reasons, converted)
        The final pairs, ``image_id -> reason`` for every candidate left out, and the converted
        images by ID.
    """
    opts = plan.options
    bad: dict[str, str] = {}
    converted: dict[str, ConvertedImage] = {}
    while True:
        usable = [c for c in plan.candidates[ptid] if c.image_id not in bad]
        pairs, excluded = select_subject(
            usable, max_days_apart=opts["max_days_apart"], visits=opts["visits"]
        )
        failure = _convert_pairs(ptid, pairs, plan, workdir, converted)
        if failure is None:
            return pairs, {**excluded, **bad}, converted
        bad[failure[0]] = failure[1]


def _participant(ptid: str, pairs: list[Pair], reasons: dict[str, str]) -> str | None:
    """Step 2: the BIDS participant label, or None (every paired image excluded with why)."""
    try:
        return bids.participant_label(ptid)
    except ValueError as exc:
        reasons.update({i: str(exc) for p in pairs for i in (p.mri.image_id, p.pet.image_id)})
        return None


def _visit_of(pair: Pair, study: Study, used_sessions: dict[str, str]) -> tuple[_Visit | None, str]:
    """Step 3: session label, diagnosis, sex and age of one pair, or (None, reason).

    The session comes from ADNIMERGE's VISCODE at the visit, else from the months since the
    subject's first acquisition; a diagnosis outside CN/MCI/AD or a session already used by
    another pair of the subject excludes the pair. ``used_sessions`` is updated.
    """
    ptid = pair.mri.ptid
    rows = study.adnimerge.get(ptid)
    ids = (pair.mri.image_id, pair.pet.image_id)
    row = clinical.visit_row(rows, pair.mri.date, ids, study.plan.options["max_days_apart"])
    mri_row = study.csv_rows[pair.mri.image_id]
    group, group_raw = clinical.diagnosis(row, mri_row.get("Group", ""))
    if group is None:
        return None, f"no CN/MCI/AD diagnosis (group {group_raw or 'empty'!r})"
    session = clinical.viscode_session(row["VISCODE"]) if row is not None else None
    if session is None or session in used_sessions:
        session = clinical.months_session(pair.mri.date, study.first_dates[ptid])
    if session in used_sessions:
        return None, f"session {session} already used by {used_sessions[session]}"
    used_sessions[session] = pair.mri.image_id
    sex, age = clinical.sex_and_age(mri_row.get("Sex", ""), mri_row.get("Age", ""), row, rows)
    return _Visit(session, group, group_raw, sex, age), ""


def header_flag_rows(pair: Pair, converted: dict, plan: IngestPlan) -> list[dict]:
    """The header flags of a pair's images and of the pair (handedness), as table rows."""
    rows = []
    for cand in (pair.mri, pair.pet):
        for item in converted[cand.image_id].flags:
            rows.append({"ptid": cand.ptid, "image_id": cand.image_id, **item})
    (t1_files, t1_fmt), (pet_files, pet_fmt) = (
        plan.located[c.image_id] for c in (pair.mri, pair.pet)
    )
    found = pair_handedness_flag(
        (t1_files[0].name, converted[pair.mri.image_id].affine, t1_fmt),
        (pet_files[0].name, converted[pair.pet.image_id].affine, pet_fmt),
    )
    if found is not None:
        log.warning("%s: %s", pair.mri.ptid, found["reason"])
        for cand in (pair.mri, pair.pet):
            rows.append({"ptid": cand.ptid, "image_id": cand.image_id, **found})
    return rows


def _write_pair(
    pair: Pair, participant: str, session: str, converted: dict, study: Study, flags: list
) -> tuple[Path, Path]:
    """Step 4: write the pair's T1 and FDG as BIDS images with their JSON sidecars.

    Each sidecar records the NIfTI affine used (``HeaderAffine``: sform or qform) and the
    image's header flags (``HeaderFlags``, from ``flags``), when there are any.
    """
    t1_out = bids.t1_path(study.bids_dir, participant, session)
    rec = pet_rec_label(pair.pet.description)
    pet_out = bids.pet_path(study.bids_dir, participant, session, rec)
    for cand, out in ((pair.mri, t1_out), (pair.pet, pet_out)):
        img = converted[cand.image_id]
        files, fmt = study.plan.located[cand.image_id]
        sidecar = {
            **img.sidecar,
            "SourceImageID": cand.image_id,
            "SourceDescription": cand.description,
            "AcquisitionDate": cand.date.date().isoformat(),
            "SourceFormat": fmt,
            "SourceFileCount": len(files),
        }
        if img.affine_source:
            sidecar["HeaderAffine"] = img.affine_source
        reasons = [f["reason"] for f in flags if f["image_id"] == cand.image_id]
        if reasons:
            sidecar["HeaderFlags"] = reasons
        if cand.kind == "fdg":
            sidecar = bids.pet_sidecar(sidecar)
        bids.write_image(img.data, img.affine, out, sidecar, dtype=img.dtype)
    return t1_out, pet_out


def _pair_row(pair: Pair, participant: str, visit: _Visit, t1_out: Path, pet_out: Path) -> dict:
    """Step 5: the pair's row of pairs.tsv."""
    return {
        "participant_id": participant,
        "session_id": visit.session,
        "ptid": pair.mri.ptid,
        "group": visit.group,
        "group_raw": visit.group_raw,
        "sex": visit.sex,
        "age": visit.age,
        "mri_image_id": pair.mri.image_id,
        "pet_image_id": pair.pet.image_id,
        "mri_date": pair.mri.date.date().isoformat(),
        "pet_date": pair.pet.date.date().isoformat(),
        "days_apart": pair.days_apart,
        "mri_path": t1_out,
        "pet_path": pet_out,
    }


def _process_subject(ptid: str, study: Study) -> SubjectResult:
    """Ingest one subject: choose and convert (with fallback), label, write BIDS, record.

    Every candidate image of the subject ends as a pair's image or an exclusion row.
    """
    result = SubjectResult()
    pairs, reasons, converted = choose_and_convert(ptid, study.plan, study.workdir)
    participant = _participant(ptid, pairs, reasons)
    used_sessions: dict[str, str] = {}
    for pair in pairs if participant is not None else []:
        visit, why = _visit_of(pair, study, used_sessions)
        if visit is None:
            reasons.update(dict.fromkeys((pair.mri.image_id, pair.pet.image_id), why))
            continue
        flags = header_flag_rows(pair, converted, study.plan)
        t1_out, pet_out = _write_pair(pair, participant, visit.session, converted, study, flags)
        result.pairs.append(_pair_row(pair, participant, visit, t1_out, pet_out))
        result.flags.extend(flags)
    desc_of = {c.image_id: c.description for c in study.plan.candidates[ptid]}
    for image_id, reason in reasons.items():
        result.excluded.append(exclusion_row(ptid, image_id, desc_of[image_id], reason))
    return result


def _process_or_exclude(ptid: str, study: Study) -> SubjectResult:
    """:func:`_process_subject`, turning an unexpected error into exclusion rows."""
    try:
        return _process_subject(ptid, study)
    except Exception as exc:  # one bad subject never stops the cohort
        log.exception("%s: ingest failed", ptid)
        res = SubjectResult()
        for c in study.plan.candidates[ptid]:
            res.excluded.append(
                exclusion_row(ptid, c.image_id, c.description, f"ingest error: {exc}")
            )
        return res


class NoPairsError(RuntimeError):
    """Ingest found no T1 + FDG pair at all; ``excluded`` holds every image and its reason."""

    def __init__(self, message: str, excluded: pd.DataFrame):
        super().__init__(message)
        self.excluded = excluded

    @classmethod
    def from_exclusions(cls, n_images: int, excluded: pd.DataFrame, where: Path) -> NoPairsError:
        """The error for ``n_images`` manifest images, all excluded, the table kept at ``where``."""
        return cls(
            f"no T1 + FDG pair found among {n_images} images of the collection CSV(s); "
            f"excluded images by reason: {summarise_reasons(excluded)}; every image and its "
            f"reason: {where}",
            excluded,
        )


def reason_kind(reason: str) -> str:
    """The kind of an exclusion reason: its text before any detail (``": ..."``, ``" (...)"``).

    ``"unusable image: missing slice(s): ..."`` -> ``"unusable image"``; ``"lower-preference T1
    at the same visit (chose I101)"`` -> ``"lower-preference T1 at the same visit"``.
    """
    return re.split(r": | \(", str(reason), maxsplit=1)[0].strip() or str(reason)


def summarise_reasons(excluded: pd.DataFrame, limit: int = 8) -> str:
    """``"3 no FDG PET for this subject; 2 amyloid/tau tracer; ..."``: images per reason kind.

    The most frequent ``limit`` kinds are named (ties in alphabetical order), the rest counted.
    """
    if excluded.empty:
        return "no image in the download"
    counts = excluded["reason"].map(reason_kind).value_counts()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{n} {kind}" for kind, n in ordered[:limit]]
    if len(ordered) > limit:
        rest = sum(n for _, n in ordered[limit:])
        parts.append(f"{rest} for {len(ordered) - limit} other reason(s)")
    return "; ".join(parts)


def write_kept(table: pd.DataFrame, path: Path, keep_dir: Path | None) -> Path:
    """Write ``table`` to ``path`` and, with ``keep_dir``, a copy of the same name there.

    Returns where a reader should look: the copy (it outlives a failed Snakemake job, which
    deletes the job's outputs), else ``path``.
    """
    write_tsv(table, path)
    if keep_dir is None:
        return path
    return write_tsv(table, Path(keep_dir) / Path(path).name)


def _check_cohort(cohort_ids, manifest, download_dir, index, opts, missing_tsv, keep_dir):
    """Completeness of the cohort list: write missing.tsv; raise unless allowed incomplete.

    Returns the cohort's image IDs.
    """
    ids = read_cohort(cohort_ids)
    missing, summary = check_completeness(
        ids, manifest, download_dir, allow_incomplete=True, index=index
    )
    table = one_line_table(missing.reindex(columns=list(MISSING_COLUMNS)))
    where = write_kept(table, Path(missing_tsv), keep_dir)
    log.info("cohort: %s", describe_summary(summary))
    if len(missing) and not opts["allow_incomplete_cohort"]:
        raise IncompleteCohortError(
            f"cohort incomplete: {describe_summary(summary)}; see {where}", missing, summary
        )
    return ids


def _run_subjects(study: Study, threads: int) -> SubjectResult:
    """Ingest every subject with candidates on ``threads`` threads; all rows of the tables."""
    rows = SubjectResult(excluded=list(study.plan.excluded))
    subjects = sorted(study.plan.candidates)
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        for res in pool.map(lambda ptid: _process_or_exclude(ptid, study), subjects):
            rows.pairs.extend(res.pairs)
            rows.excluded.extend(res.excluded)
            rows.flags.extend(res.flags)
    return rows


def one_line_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell on one line (:func:`fusion3d.ingest.headers.one_line`)."""
    table = table.copy()
    for col in table.columns:
        if table[col].dtype == object:
            table[col] = [one_line(v) if isinstance(v, str) else v for v in table[col]]
    return table


def _summary_kind(reason: str) -> str:
    """The kind of a reason for the closing summary; an unusable image's names its problem."""
    head, sep, rest = str(reason).partition("unusable image: ")
    if sep and not head:
        return f"unusable image: {reason_kind(rest)}"
    return reason_kind(reason)


def exclusion_summary(excluded: pd.DataFrame, names: dict[str, str]) -> str:
    """The closing summary: images excluded per reason, with the first few file names.

    ``names`` maps an image ID to its file name (images never located show their ID).
    """
    if excluded.empty:
        return "ingest excluded no image"
    lines = [f"ingest excluded {len(excluded)} image(s):"]
    groups = excluded.groupby(excluded["reason"].map(_summary_kind), sort=False)
    for kind, rows in sorted(groups, key=lambda kv: (-len(kv[1]), kv[0])):
        shown = [names.get(i, i) for i in rows["image_id"].head(SUMMARY_NAMES)]
        more = f" and {len(rows) - SUMMARY_NAMES} more" if len(rows) > SUMMARY_NAMES else ""
        lines.append(f"  {len(rows)} {kind}: {', '.join(shown)}{more}")
    return "\n".join(lines)


def result_tables(pair_rows: list[dict], excluded_rows: list[dict], relative_to) -> tuple:
    """pairs.tsv (paths relative to ``relative_to``, else absolute), excluded.tsv, participants."""
    pairs = pd.DataFrame(pair_rows, columns=list(PAIRS_COLUMNS))
    for col in ("mri_path", "pet_path"):
        pairs[col] = [
            os.path.relpath(p, relative_to) if relative_to else str(Path(p).resolve())
            for p in pairs[col]
        ]
    pairs = pairs.sort_values(["participant_id", "session_id"]).reset_index(drop=True)
    excluded = pd.DataFrame(excluded_rows, columns=list(EXCLUDED_COLUMNS))
    excluded = one_line_table(excluded.sort_values(["ptid", "image_id"]).reset_index(drop=True))
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
    return pairs, excluded, participants


def _new_study(plan: IngestPlan, manifest: pd.DataFrame, adnimerge: dict, bids_dir: Path) -> Study:
    """The shared state of one ingest run (creates ``bids_dir`` and a private work folder)."""
    bids_dir.mkdir(parents=True, exist_ok=True)
    valid = manifest[manifest["problem"] == ""]
    return Study(
        plan=plan,
        bids_dir=bids_dir,
        workdir=Path(tempfile.mkdtemp(prefix="fusion3d_ingest_")),
        adnimerge=adnimerge,
        first_dates=valid.groupby("Subject")["Acq Date"].min().to_dict(),
        csv_rows={r["Image Data ID"]: r for r in manifest.to_dict("records")},
    )


def _write_outputs(
    study: Study, rows: SubjectResult, outputs: tuple[Path, Path, Path], keep_dir
) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Write participants.tsv, excluded.tsv, header_flags.tsv and pairs.tsv; log the summary.

    ``outputs`` is ``(pairs_tsv, excluded_tsv, header_flags_tsv)``. Returns the pairs and
    excluded tables and where a reader should look for excluded.tsv (the copy in ``keep_dir``).
    """
    pairs_tsv, excluded_tsv, flags_tsv = outputs
    relative_to = study.plan.options["relative_to"]
    pairs, excluded, participants = result_tables(rows.pairs, rows.excluded, relative_to)
    bids.write_dataset_description(study.bids_dir)
    bids.write_readme(study.bids_dir, "a LONI IDA download of ADNI")
    bids.write_participants(participants, study.bids_dir)
    where = write_kept(excluded, excluded_tsv, keep_dir)
    flags = one_line_table(pd.DataFrame(rows.flags, columns=list(HEADER_FLAG_COLUMNS)))
    write_kept(flags, flags_tsv, keep_dir)
    write_tsv(pairs, pairs_tsv)
    log.info("ingest: %d pairs, %d images excluded", len(pairs), len(excluded))
    names = {i: files[0].name for i, (files, _) in study.plan.located.items() if files}
    log.warning("%s", exclusion_summary(excluded, names))
    return pairs, excluded, where


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
    keep_dir: str | os.PathLike | None = None,
    require_pairs: bool = False,
    header_flags_tsv: str | os.PathLike | None = None,
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
        Outputs (pairs.tsv: :data:`PAIRS_COLUMNS`; excluded.tsv: :data:`EXCLUDED_COLUMNS`).
    options
        ``t1_preference``, ``fdg_preference`` (lists of descriptions, wildcards allowed),
        ``max_days_apart`` (180), ``visits`` ("baseline" or "all"), ``relative_to`` (write
        pairs.tsv paths relative to this folder), ``allow_incomplete_cohort`` (False),
        ``header_checks`` (:data:`fusion3d.ingest.headers.DEFAULT_HEADER_CHECKS` keys).
    cohort_ids
        A cohort list file; when given, completeness is checked first and only its images used.
    missing_tsv
        Where the missing cohort images go (default: ``missing.tsv`` beside ``excluded_tsv``).
    threads
        Subjects converted in parallel.
    keep_dir
        A folder (e.g. the job's log folder) that also receives a copy of ``excluded.tsv`` and
        ``missing.tsv``; the errors point to these copies, which outlive a failed job.
    require_pairs
        Raise :class:`NoPairsError` when no pair is found (after writing every table).
    header_flags_tsv
        Where the header flags of the paired images go (:data:`HEADER_FLAG_COLUMNS`; default
        ``header_flags.tsv`` beside ``excluded_tsv``; a copy in ``keep_dir``).

    Returns the pairs table as written. Raises :class:`ManifestError` for a missing, empty or
    malformed collection CSV; :class:`IncompleteCohortError` when cohort images are missing and
    ``allow_incomplete_cohort`` is false (missing.tsv written first); :class:`NoPairsError` with
    ``require_pairs`` when no pair is found (every table written first; the message counts the
    excluded images per reason and names the excluded.tsv to read, the copy if ``keep_dir``).
    """
    opts = resolve_options(options)
    manifest = read_manifests(manifests)
    index = scan_download(download_dir)
    ids = None
    missing_tsv = Path(missing_tsv or Path(excluded_tsv).with_name("missing.tsv"))
    if cohort_ids is not None:
        ids = _check_cohort(cohort_ids, manifest, download_dir, index, opts, missing_tsv, keep_dir)
    else:  # no cohort list: nothing can be missing
        write_kept(pd.DataFrame(columns=list(MISSING_COLUMNS)), missing_tsv, keep_dir)
    adnimerge_rows = clinical.index_adnimerge(
        clinical.read_adnimerge(adnimerge) if adnimerge else None
    )
    plan = plan_ingest(
        download_dir=download_dir, manifest=manifest, options=opts, cohort_ids=ids, index=index
    )
    study = _new_study(plan, manifest, adnimerge_rows, Path(bids_dir))
    try:
        rows = _run_subjects(study, threads)
    finally:
        shutil.rmtree(study.workdir, ignore_errors=True)
    flags_tsv = header_flags_tsv or Path(excluded_tsv).with_name("header_flags.tsv")
    outputs = (Path(pairs_tsv), Path(excluded_tsv), Path(flags_tsv))
    pairs, excluded, where = _write_outputs(study, rows, outputs, keep_dir)
    if require_pairs and pairs.empty:
        raise NoPairsError.from_exclusions(len(manifest), excluded, where)
    return pairs
