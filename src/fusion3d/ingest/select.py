"""Choose one T1 and one FDG PET per visit, by configurable preference lists, and pair them.

Descriptions are compared after normalisation (case, ``_``/``;``/spaces), so the CSV form
``MPR; GradWarp; B1 Correction; N3; Scaled`` and the folder form ``MPR__GradWarp__...`` agree.
Preference entries may use shell wildcards (``*``). ``_ND`` (non-distortion-corrected) T1
variants are only chosen when nothing else exists at that visit.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

DEFAULT_T1_PREFERENCE: tuple[str, ...] = (
    "MPR; GradWarp; B1 Correction; N3; Scaled",
    "MPR; GradWarp; B1 Correction; N3; Scaled_2",
    "MPR-R; GradWarp; B1 Correction; N3; Scaled",
    "MPR-R; GradWarp; B1 Correction; N3; Scaled_2",
    "MPR; GradWarp; N3; Scaled",
    "MPR-R; GradWarp; N3; Scaled",
    "MPR; N3; Scaled",
    "MPR-R; N3; Scaled",
    "MPR; GradWarp; N3; Scaled_2",
    "MPR; N3; Scaled_2",
    "MT1; GradWarp; N3m",
    "MT1; N3m",
    "MPRAGE",
    "Accelerated Sagittal MPRAGE",
    "Sagittal 3D Accelerated MPRAGE",
    "MPRAGE Repeat",
    "Repeat MPRAGE",
)
DEFAULT_FDG_PREFERENCE: tuple[str, ...] = (
    "Coreg, Avg, Std Img and Vox Siz, Uniform Resolution",
    "Coreg, Avg, Std Img and Vox Siz, Uniform 6mm Res",
    "Coreg, Avg, Standardized Image and Voxel Size",
    "Co-registered, Averaged",
    "Co-registered Dynamic",
    "ADNI Brain PET: Raw FDG",
)
_TRACER_RE = re.compile(
    r"\b(av45|av-45|av 45|fbb|av1451|av-1451|pib|florbetapir|florbetaben|flortaucipir|"
    r"flutemetamol|nav4694|mk6240|mk-6240|pi2620|pi-2620|tau|amyloid)\b"
)
_ND_RE = re.compile(r"(?:^|\s)nd(?:\s|$)")


def normalise_description(text: str) -> str:
    """Lower case, ``_`` and ``;`` to spaces, whitespace collapsed, no spaces before commas."""
    text = re.sub(r"[_;]", " ", str(text).lower())
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+,", ",", text)


def is_tracer(description: str) -> bool:
    """True for an amyloid or tau PET description (AV45, FBB, AV1451, PIB, ...)."""
    return bool(_TRACER_RE.search(normalise_description(description)))


def preference_rank(description: str, preference: Sequence[str]) -> int | None:
    """Index of the first preference entry matching ``description`` (normalised), else None."""
    norm = normalise_description(description)
    for rank, pattern in enumerate(preference):
        if fnmatch.fnmatchcase(norm, normalise_description(pattern)):
            return rank
    return None


def t1_rank(description: str, preference: Sequence[str]) -> tuple[bool, int] | None:
    """``(is_nd, rank)`` of a T1 description (an ``_ND`` suffix is stripped to find the rank)."""
    norm = normalise_description(description)
    nd = bool(_ND_RE.search(norm))
    stripped = _ND_RE.sub(" ", norm).strip() if nd else norm
    rank = preference_rank(stripped, preference)
    return None if rank is None else (nd, rank)


def pet_rec_label(description: str) -> str:
    """BIDS ``rec-`` label of an FDG processing step, as Clinica names them."""
    norm = normalise_description(description)
    if "uniform" in norm:
        return "coregiso"
    if "standardized" in norm or "std img" in norm:
        return "coregstd"
    if "dynamic" in norm:
        return "coregdyn"
    if "co-registered" in norm or "coreg" in norm:
        return "coregavg"
    if "raw" in norm:
        return "raw"
    slug = re.sub(r"[^a-z0-9]", "", norm)
    return slug[:24] or "unknown"


@dataclass(frozen=True)
class Candidate:
    """One usable image of a subject (located, supported format, T1 or FDG)."""

    image_id: str
    ptid: str
    kind: str  # "t1" or "fdg"
    description: str
    date: pd.Timestamp
    rank: tuple
    visit: str = ""

    @property
    def number(self) -> int:
        """The numeric image ID (for stable tie-breaks)."""
        return int(self.image_id[1:])


@dataclass(frozen=True)
class Pair:
    """A chosen T1 + FDG pair of one subject."""

    mri: Candidate
    pet: Candidate

    @property
    def days_apart(self) -> int:
        """Absolute days between the two acquisitions."""
        return abs(int((self.mri.date - self.pet.date).days))


def _best_per_date(cands: list[Candidate], label: str) -> tuple[list[Candidate], dict[str, str]]:
    best: dict[pd.Timestamp, Candidate] = {}
    for cand in sorted(cands, key=lambda c: (c.rank, c.number)):
        best.setdefault(cand.date, cand)
    excluded = {
        c.image_id: f"lower-preference {label} at the same visit (chose {best[c.date].image_id})"
        for c in cands
        if best[c.date] is not c
    }
    return sorted(best.values(), key=lambda c: c.date), excluded


def select_subject(
    candidates: list[Candidate], *, max_days_apart: int = 180, visits: str = "baseline"
) -> tuple[list[Pair], dict[str, str]]:
    """Pair the T1 and FDG candidates of one subject.

    At each acquisition date the best T1 (``_ND`` last, then preference rank, then lowest ID)
    and the best FDG are kept. T1 and FDG sessions are matched one to one, same ``Visit`` first,
    then closest dates, never more than ``max_days_apart`` days apart. ``visits="baseline"`` keeps
    the earliest pair, ``"all"`` every pair.

    Returns
    -------
    (pairs, excluded)
        ``excluded`` maps every candidate not in a pair to the reason.
    """
    if visits not in ("baseline", "all"):
        raise ValueError(f"visits must be 'baseline' or 'all', got {visits!r}")
    t1s = [c for c in candidates if c.kind == "t1"]
    fdgs = [c for c in candidates if c.kind == "fdg"]
    if not t1s or not fdgs:
        reason_t1, reason_pet = "no FDG PET for this subject", "no T1 for this subject"
        return [], {c.image_id: reason_t1 if c.kind == "t1" else reason_pet for c in candidates}
    t_sessions, excluded = _best_per_date(t1s, "T1")
    p_sessions, more = _best_per_date(fdgs, "FDG PET")
    excluded.update(more)
    options = []
    for t in t_sessions:
        for p in p_sessions:
            days = abs(int((t.date - p.date).days))
            if days <= max_days_apart:
                same_visit = bool(t.visit) and t.visit == p.visit
                options.append((not same_visit, days, t.date, p.date, t, p))
    options.sort(key=lambda o: o[:4])
    used_t: dict[str, str] = {}
    used_p: dict[str, str] = {}
    pairs: list[Pair] = []
    for *_, t, p in options:
        if t.image_id in used_t or p.image_id in used_p:
            continue
        used_t[t.image_id] = p.image_id
        used_p[p.image_id] = t.image_id
        pairs.append(Pair(t, p))
    pairs.sort(key=lambda pr: (pr.mri.date, pr.pet.date))
    eligible_t = {o[4].image_id for o in options}
    eligible_p = {o[5].image_id for o in options}
    for t in t_sessions:
        if t.image_id not in used_t:
            excluded[t.image_id] = (
                "its FDG PET candidates were paired with closer T1 scans"
                if t.image_id in eligible_t
                else f"no FDG PET within {max_days_apart} days"
            )
    for p in p_sessions:
        if p.image_id not in used_p:
            excluded[p.image_id] = (
                "its T1 candidates were paired with closer FDG PET scans"
                if p.image_id in eligible_p
                else f"no T1 within {max_days_apart} days"
            )
    if visits == "baseline" and len(pairs) > 1:
        for pair in pairs[1:]:
            excluded[pair.mri.image_id] = "follow-up visit (visits=baseline)"
            excluded[pair.pet.image_id] = "follow-up visit (visits=baseline)"
        pairs = pairs[:1]
    return pairs, excluded
