"""Quality control: flag rules, the per-subject QC figure and the cohort QC tables."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.io import atomic_path, one_line

#: Absolute QC bounds (the defaults of the ``qc_bounds`` preprocessing option). They catch
#: gross failures on any cohort and are set from real anatomy, not from the template (sources
#: and measurements: README, "Quality control"):
#:
#: - ``mask_ml_min``/``mask_ml_max``: brain-mask volume (ml); adult intracranial brain masks
#:   are roughly 1,000-1,800 ml (real heads: 1,480-1,790 ml), widened by 100-200 ml;
#: - ``min_mni_ncc``: T1 -> MNI152 correlation after registration: real heads reach
#:   0.53-0.61 (the warped-template synthetic heads 0.77-0.82); the MNI-space T1 of the
#:   tests' real head gives 0.22-0.35 moved by 10 mm, 0.30-0.33 turned by 15 degrees;
#: - ``max_pet_peak_offset_mm``: the PET -> T1 pose's distance from the peak of the similarity
#:   (:mod:`fusion3d.preprocess.qc_peak`), the primary PET -> T1 check: it does not move with
#:   the PET's noise or resolution (docs/outputs.md, "PET -> T1 QC on realistic FDG PET":
#:   correct registrations of realistic FDG 0.15-1.24 mm, misregistrations of 5 mm or 5
#:   degrees all beyond 2);
#: - ``min_pet_mi``: PET -> T1 mutual information after registration (nats), a last resort
#:   against gross failure only: real FDG scores 0.065-0.11 at the true pose (issue 38), so
#:   the floor sits below every healthy real scan (it was 0.15, which flagged all of them);
#: - ``min_similarity_gain``: a registration may not lower its similarity by more than this;
#: - ``min_ref_voxels``: voxels of the SUVR reference region.
DEFAULT_BOUNDS: dict[str, float] = {
    "mask_ml_min": 900.0,
    "mask_ml_max": 2000.0,
    "min_similarity_gain": -0.02,
    "min_pet_mi": 0.03,
    "min_mni_ncc": 0.35,
    "min_ref_voxels": 20,
    "max_pet_peak_offset_mm": 2.0,
}

#: The key of ``preprocess.qc.bounds`` (or the setting) behind each flag, for the QC storm
#: message (:mod:`fusion3d.preprocess.qc_storm`).
FLAG_KEYS: dict[str, str] = {
    "mask_volume": "preprocess.qc.bounds.mask_ml_min / mask_ml_max",
    "pet_to_t1_similarity": "preprocess.qc.bounds.min_pet_mi",
    "t1_to_mni_similarity": "preprocess.qc.bounds.min_mni_ncc",
    "pet_to_t1_diverged": "preprocess.qc.bounds.min_similarity_gain",
    "t1_to_mni_diverged": "preprocess.qc.bounds.min_similarity_gain",
    "suvr_reference_size": "preprocess.qc.bounds.min_ref_voxels",
    "pet_to_t1_off_peak": "preprocess.qc.bounds.max_pet_peak_offset_mm",
    "pet_left_right": "fusion3d.preprocess.qc.MIRROR_MARGIN",
}

#: QC figures compared with the cohort (columns of ``qc.tsv``): label, the side that is bad
#: ("both", or "low" for similarities: a higher similarity than the cohort is no failure) and
#: the smallest spread used for the robust z (so that in a very uniform cohort a difference
#: too small to matter is not an outlier).
COHORT_FIGURES: dict[str, dict] = {
    "mask_volume_ml": {"label": "brain-mask volume (ml)", "side": "both", "min_spread": 50.0},
    "t1_to_mni_after": {
        "label": "T1->MNI correlation after registration",
        "side": "low",
        "min_spread": 0.02,
    },
    "pet_to_t1_after": {
        "label": "PET->T1 mutual information after registration (nats)",
        "side": "low",
        "min_spread": 0.02,
    },
}

#: Columns of ``flags.tsv``.
FLAG_COLUMNS = ("subject_id", "kind", "flag", "figure", "value", "bound", "reason")

log = logging.getLogger(__name__)


def flag(
    name: str,
    reason: str,
    *,
    kind: str = "absolute",
    figure: str = "",
    value: float | str = "",
    bound: str = "",
) -> dict:
    """One QC flag record.

    ``kind`` is "absolute" (a bound that holds for any cohort failed) or "cohort" (an
    outlier of this cohort); ``figure`` names the QC figure (a column of ``qc.tsv``),
    ``value`` is its value and ``bound`` the bound it failed, e.g. ``">= 0.4"``. The
    reason is kept on one line (a row of ``flags.tsv``).
    """
    if kind not in ("absolute", "cohort"):
        raise ValueError(f"flag kind must be 'absolute' or 'cohort', got {kind!r}")
    return {
        "flag": name,
        "kind": kind,
        "figure": figure,
        "value": value,
        "bound": bound,
        "reason": one_line(reason),
    }


def _g(value: float) -> str:
    """A figure or bound value for a message (4 significant digits)."""
    return f"{float(value):.4g}"


def _mask_flags(ml: float, bounds: dict) -> list[dict]:
    """Flags of the brain-mask volume: empty, or outside [mask_ml_min, mask_ml_max]."""
    if ml <= 0:
        reason = f"mask_volume_ml {ml:g}: brain extraction returned an empty mask"
        return [flag("empty_brain_mask", reason, figure="mask_volume_ml", value=ml, bound="> 0")]
    lo, hi = bounds["mask_ml_min"], bounds["mask_ml_max"]
    if lo <= ml <= hi:
        return []
    bound = f"in [{_g(lo)}, {_g(hi)}]"
    reason = f"mask_volume_ml {ml:.0f} ml outside [{_g(lo)}, {_g(hi)}] ml (absolute bound)"
    return [flag("mask_volume", reason, figure="mask_volume_ml", value=ml, bound=bound)]


def _registration_flags(key: str, label: str, floor: float, reg, min_gain: float) -> list:
    """Flags of one registration: missing, similarity below ``floor``, similarity fell."""
    if reg is None:
        reason = f"{key}_after missing: {label}: registration did not run"
        return [flag(f"{key}_missing", reason, figure=f"{key}_after", bound="registration ran")]
    out = []
    before, after = reg["similarity_before"], reg["similarity_after"]
    if after < floor:
        reason = (
            f"{key}_after ({label} after registration) {after:.3f} < {_g(floor)} (absolute bound)"
        )
        out.append(
            flag(
                f"{key}_similarity",
                reason,
                figure=f"{key}_after",
                value=after,
                bound=f">= {_g(floor)}",
            )
        )
    if after - before < min_gain:
        gain = after - before
        reason = (
            f"{key}_gain {gain:.3f}: {label} fell from {before:.3f} to {after:.3f} "
            f"(bound >= {_g(min_gain)})"
        )
        out.append(
            flag(
                f"{key}_diverged",
                reason,
                figure=f"{key}_gain",
                value=gain,
                bound=f">= {_g(min_gain)}",
            )
        )
    return out


def _peak_flags(reg: dict, bounds: dict) -> list[dict]:
    """The ``pet_to_t1_off_peak`` flag: the found pose is farther from the similarity's peak
    than ``max_pet_peak_offset_mm`` (records without the peak check raise nothing)."""
    peak = reg.get("peak")
    if not peak:
        return []
    offset, bound = float(peak["peak_offset_mm"]), float(bounds["max_pet_peak_offset_mm"])
    if offset <= bound:
        return []
    reason = (
        f"pet_to_t1_peak_offset_mm {offset:.2f} > {_g(bound)}: the PET -> T1 pose is not at the "
        f"peak of its similarity (shifts {peak['shift_mm']} mm, turns {peak['turn_deg']} deg "
        "to the peak): the PET is misregistered"
    )
    return [
        flag(
            "pet_to_t1_off_peak",
            reason,
            figure="pet_to_t1_peak_offset_mm",
            value=offset,
            bound=f"<= {_g(bound)}",
        )
    ]


def evaluate_flags(qc: dict, bounds: dict) -> list[dict]:
    """Apply the absolute QC ``bounds`` (keys of :data:`DEFAULT_BOUNDS`) to one subject's ``qc``.

    Returns the flag records (:func:`flag`, kind "absolute") raised; each names the
    figure, its value and the bound.
    """
    out = _mask_flags(qc.get("mask_volume_ml", 0.0), bounds)
    for key, label, floor in (
        ("pet_to_t1", "PET->T1 mutual information", bounds["min_pet_mi"]),
        ("t1_to_mni", "T1->MNI correlation", bounds["min_mni_ncc"]),
    ):
        reg = qc.get("registration", {}).get(key)
        out += _registration_flags(key, label, floor, reg, bounds["min_similarity_gain"])
    out += _peak_flags(qc.get("registration", {}).get("pet_to_t1") or {}, bounds)
    ref = qc.get("suvr", {})
    value = ref.get("reference_value", 0)
    if not value > 0:
        reason = f"suvr_reference_value {value} <= 0: the SUVR reference mean is not positive"
        out.append(
            flag("suvr_reference", reason, figure="suvr_reference_value", value=value, bound="> 0")
        )
    n, floor = ref.get("reference_voxels", 0), bounds["min_ref_voxels"]
    if n < floor:
        reason = f"suvr_reference_voxels {n} < {floor}: too few SUVR reference voxels"
        out.append(
            flag(
                "suvr_reference_size",
                reason,
                figure="suvr_reference_voxels",
                value=n,
                bound=f">= {floor}",
            )
        )
    return out


def write_json(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n")
    return path


def _mid_slices(vol: np.ndarray) -> list[np.ndarray]:
    c = [s // 2 for s in vol.shape]
    return [np.rot90(vol[c[0], :, :]), np.rot90(vol[:, c[1], :]), np.rot90(vol[:, :, c[2]])]


def _edges(vol: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    v = vol.astype(np.float32)
    g = np.sqrt(sum(ndimage.sobel(v, axis=a) ** 2 for a in range(v.ndim)))
    return g


#: The PET contour of the QC figure: midway between the brain's ``PET_CONTOUR_PERCENTILES``
#: of uptake (25th: white matter; 95th: cortex), on the PET smoothed with a Gaussian of
#: ``PET_CONTOUR_FWHM_MM``. On real FDG the white matter sits above half the brain median, so
#: the former contour (50 % of the median) traced only the brain's outline, which a few mm of
#: misregistration do not change (issue 38); this level runs along the cortical ribbon (the
#: hot grey matter), to be read against the T1's grey matter.
PET_CONTOUR_PERCENTILES = (25.0, 95.0)
PET_CONTOUR_FWHM_MM = 4.0
MASK_COLOUR, PET_COLOUR, TEMPLATE_COLOUR = "#ff0000", "#ffff00", "#00ffff"


def pet_contour_level(
    pet: np.ndarray, mask: np.ndarray, voxel_mm: float = 1.5
) -> tuple[np.ndarray, float]:
    """The smoothed PET and the level of its QC contour (the cortex's uptake).

    Parameters
    ----------
    pet : ndarray
        The PET (SUVR) on the QC grid.
    mask : ndarray
        The brain mask on the same grid; an empty mask takes the voxels above 0.
    voxel_mm : float
        Voxel edge of the grid, for the Gaussian of ``PET_CONTOUR_FWHM_MM``.

    Returns
    -------
    smoothed : ndarray
        The PET smoothed with a Gaussian of ``PET_CONTOUR_FWHM_MM`` FWHM.
    level : float
        Midway between the smoothed PET's ``PET_CONTOUR_PERCENTILES`` within the brain (0.5
        when there is no uptake at all).
    """
    from scipy import ndimage

    sigma = PET_CONTOUR_FWHM_MM / (2.0 * np.sqrt(2.0 * np.log(2.0))) / float(voxel_mm)
    smoothed = ndimage.gaussian_filter(np.nan_to_num(pet).astype(np.float32), sigma)
    inside = smoothed[mask > 0] if np.any(mask > 0) else smoothed[smoothed > 0]
    if not inside.size:
        return smoothed, 0.5
    low, high = np.percentile(inside, PET_CONTOUR_PERCENTILES)
    return smoothed, (0.5 * float(low + high) if high > 0 else 0.5)


def pet_contour_slices(pet: np.ndarray, mask: np.ndarray, voxel_mm: float = 1.5) -> list:
    """The three mid slices (sagittal, coronal, axial) of the region inside the PET contour,
    as the QC figure draws them (boolean arrays)."""
    smoothed, level = pet_contour_level(pet, mask, voxel_mm)
    return [s > level for s in _mid_slices(smoothed)]


def qc_figure(
    t1: np.ndarray,
    mask: np.ndarray,
    pet: np.ndarray,
    template: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    head: np.ndarray | None = None,
    voxel_mm: float = 1.5,
) -> Path:
    """Write the 3x3 QC figure: rows brain mask on the head, PET contour on the head, T1 on
    the template's edges; columns sagittal, coronal, axial.

    Parameters
    ----------
    t1 : ndarray
        The skull-stripped T1 (MNI output grid), under the template's edges.
    mask : ndarray
        The brain mask; its outline (red) is drawn on ``head``, so over- or under-stripping
        shows as an outline inside the brain or out on the skull.
    pet : ndarray
        The SUVR PET; its contour (yellow) is drawn at :func:`pet_contour_level` on the
        smoothed PET, along the cortical ribbon, so a misregistered PET shows as a ribbon
        off the T1's grey matter.
    template : ndarray
        The MNI template (its edges in cyan over ``t1``).
    path : path
        The PNG to write.
    title : str
        Figure title (the subject).
    head : ndarray, optional
        The T1 before skull stripping on the same grid (``t1`` when not given).
    voxel_mm : float
        Voxel edge of the grid (mm), for the PET smoothing.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = t1 if head is None else head
    if not (t1.shape == mask.shape == pet.shape == template.shape == head.shape):
        raise ValueError(f"{path}: qc_figure: all volumes must share one grid")
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    pet_smooth, pet_level = pet_contour_level(pet, mask, voxel_mm)
    tpl_edges = _edges(template)
    tpl_level = float(np.percentile(tpl_edges, 92)) if tpl_edges.any() else 0.5
    rows = [
        ("brain mask on the T1 before skull stripping", head, mask.astype(float), 0.5, MASK_COLOUR),
        (
            "PET cortex contour on the T1 (p{:g}-p{:g} midpoint,\n".format(*PET_CONTOUR_PERCENTILES)
            + f"{pet_level:.2f} SUVR, {PET_CONTOUR_FWHM_MM:g} mm FWHM smoothing)",
            head,
            pet_smooth,
            pet_level,
            PET_COLOUR,
        ),
        ("skull-stripped T1 on MNI edges", t1, tpl_edges, tpl_level, TEMPLATE_COLOUR),
    ]
    for r, (label, under, over, level, colour) in enumerate(rows):
        for c, (u, o) in enumerate(zip(_mid_slices(under), _mid_slices(over), strict=True)):
            ax = axes[r, c]
            ax.imshow(u, cmap="gray")
            if np.ptp(o) > 0 and o.min() < level < o.max():
                ax.contour(o, levels=[level], colors=colour, linewidths=0.8)
            ax.set_axis_off()
            if c == 0:
                ax.set_title(label, fontsize=9, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _read_qc_json(path: Path) -> dict:
    """One subject's QC record; a missing, unreadable or incomplete file is an error naming it."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: QC file not found")
    try:
        qc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if "subject_id" not in qc:
        raise ValueError(f"{path}: missing key 'subject_id'")
    return qc


def _qc_row(qc: dict) -> dict:
    """The ``qc.tsv`` row of one QC record: every figure, step time and the flag count."""
    row = {"subject_id": qc["subject_id"], "mask_volume_ml": qc.get("mask_volume_ml")}
    for key, reg in qc.get("registration", {}).items():
        row[f"{key}_metric"] = reg.get("metric")
        row[f"{key}_before"] = reg.get("similarity_before")
        row[f"{key}_after"] = reg.get("similarity_after")
        if "peak" in reg:
            row[f"{key}_peak_offset_mm"] = reg["peak"].get("peak_offset_mm")
    ref = qc.get("suvr", {})
    row["suvr_reference_value"] = ref.get("reference_value")
    row["suvr_reference_voxels"] = ref.get("reference_voxels")
    for step, sec in qc.get("times_s", {}).items():
        row[f"time_{step}_s"] = sec
    row["peak_rss_mb"] = qc.get("peak_rss_mb")
    return row


def _flag_row(subject_id: str, record: dict) -> dict:
    """A ``flags.tsv`` row; records written before flags had kinds count as absolute."""
    row = {"subject_id": subject_id, "kind": "absolute", "figure": "", "value": "", "bound": ""}
    row.update({k: v for k, v in record.items() if k in FLAG_COLUMNS})
    row["reason"] = one_line(row.get("reason", ""))
    return row


def robust_z(values: pd.Series, min_spread: float = 0.0) -> tuple[float, float, pd.Series]:
    """Robust z of each value: ``(x - median) / max(1.4826 MAD, min_spread)``.

    1.4826 MAD estimates the standard deviation of normal data (Iglewicz & Hoaglin's
    modified z-score uses the same scale). Returns ``(median, spread, z)``; missing
    values get a missing z.
    """
    x = pd.to_numeric(values, errors="coerce")
    median = float(x.median())
    spread = max(1.4826 * float((x - median).abs().median()), float(min_spread))
    if not spread > 0:
        return median, spread, pd.Series(np.nan, index=x.index)
    return median, spread, (x - median) / spread


def _cohort_flag(subject_id: str, figure: str, value: float, lo: float, hi: float, stats) -> dict:
    """The "cohort" flag of one figure of one subject outside ``[lo, hi]``."""
    median, spread, max_z = stats
    spec = COHORT_FIGURES[figure]
    bound = f">= {_g(lo)}" if spec["side"] == "low" else f"in [{_g(lo)}, {_g(hi)}]"
    reason = (
        f"{figure} ({spec['label']}) {_g(value)} outlier in this cohort: bound {bound} "
        f"(cohort median {_g(median)} +- {max_z:g} x robust SD {_g(spread)})"
    )
    record = flag(
        f"{figure}_cohort_outlier", reason, kind="cohort", figure=figure, value=value, bound=bound
    )
    return {"subject_id": subject_id, **record}


def cohort_flags(
    table: pd.DataFrame, *, max_z: float = 3.5, min_subjects: int = 8
) -> tuple[pd.DataFrame, list[dict]]:
    """Compare each subject's figures (:data:`COHORT_FIGURES`) with the cohort's own.

    A subject is an outlier of a figure when its robust z (:func:`robust_z`) exceeds
    ``max_z`` on the figure's bad side. Cohorts with fewer than ``min_subjects`` subjects
    with a value are skipped (a log line says so): a median and a MAD of a handful of
    subjects mean little. Returns the table with a ``<figure>_cohort_z`` column per figure
    (missing when skipped) and the flag rows (``FLAG_COLUMNS``, kind "cohort").
    """
    if not max_z > 0:
        raise ValueError(f"cohort max_z must be > 0, got {max_z}")
    table, rows = table.copy(), []
    for figure, spec in COHORT_FIGURES.items():
        column = f"{figure}_cohort_z"
        table[column] = np.nan
        values = pd.to_numeric(table.get(figure, pd.Series(dtype=float)), errors="coerce")
        n = int(values.notna().sum())
        if n < min_subjects:
            log.info("cohort QC of %s skipped: %d subjects < %d", figure, n, min_subjects)
            continue
        median, spread, z = robust_z(values, spec["min_spread"])
        table[column] = z.round(3)
        lo, hi = median - max_z * spread, median + max_z * spread
        bad = (z < -max_z) | ((z > max_z) & (spec["side"] == "both"))
        for i in table.index[bad.fillna(False).to_numpy()]:
            stats = (median, spread, max_z)
            rows.append(_cohort_flag(table.at[i, "subject_id"], figure, values[i], lo, hi, stats))
        log.info(
            "cohort QC of %s: median %s, robust SD %s, %d outliers",
            figure,
            _g(median),
            _g(spread),
            int(bad.sum()),
        )
    return table, rows


def collect_qc(
    qc_json_paths: Iterable[str | os.PathLike],
    *,
    cohort_max_z: float = 3.5,
    cohort_min_subjects: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather per-subject ``*_qc.json`` into (qc table, flags table), adding the cohort check.

    qc table (``qc.tsv``): one row per subject with every QC figure (mask volume,
    similarities before/after, SUVR reference value and size), each cohort figure's robust
    z (:func:`cohort_flags`), step times, peak RSS, ``n_flags`` and ``flagged``. flags table
    (``flags.tsv``, columns :data:`FLAG_COLUMNS`): the absolute flags of every subject's QC
    record, then the cohort flags, each with its figure, value and bound.
    """
    rows, flags = [], []
    for p in qc_json_paths:
        qc = _read_qc_json(Path(p))
        rows.append(_qc_row(qc))
        flags += [_flag_row(qc["subject_id"], f) for f in qc.get("flags", [])]
    qc_table = pd.DataFrame(rows)
    if len(qc_table):
        qc_table, extra = cohort_flags(
            qc_table, max_z=cohort_max_z, min_subjects=cohort_min_subjects
        )
        flags += extra
    flags_table = pd.DataFrame(flags, columns=list(FLAG_COLUMNS))
    counts = flags_table["subject_id"].value_counts()
    if len(qc_table):
        qc_table["n_flags"] = [int(counts.get(s, 0)) for s in qc_table["subject_id"]]
        qc_table["flagged"] = qc_table["n_flags"] > 0
    return qc_table, flags_table


#: Mutual information (nats) by which the left-right mirrored PET must beat the PET as it is,
#: both registered rigidly to the T1, before the pair is flagged as mirrored (docs/headers.md:
#: on the tests' real head, PET made from it, the PET as it is wins by 0.12 and a mirrored PET
#: loses by 0.12). On real FDG the two hypotheses differ by 0.005-0.022 nats, within the margin
#: either way (issue 38): a weak second line behind the header checks (docs/headers.md).
MIRROR_MARGIN = 0.02


def _mirror_axis(image) -> int:
    """The voxel axis of an ANTsImage closest to world left-right (its direction's x row)."""
    return int(np.argmax(np.abs(np.asarray(image.direction, dtype=float)[0, :])))


def left_right_check(
    fixed,
    moving,
    mask: np.ndarray,
    outprefix: str,
    *,
    schedule: dict | None = None,
    as_is: float | None = None,
) -> dict:
    """Register ``moving`` rigidly to ``fixed`` as it is and mirrored left-right; compare.

    ``fixed`` (the T1, or its brain) and ``moving`` (the PET) are ANTsImages; the mirror flips
    the PET's voxel axis closest to world left-right, on the same grid, so the mirrored
    hypothesis is one rigid registration away from the anatomy whatever the PET's pose. Both
    registrations are :func:`fusion3d.preprocess.registration.register` ("Rigid", Mattes MI,
    centre-of-mass start), scored by the QC's PET -> T1 similarity (mutual information of the
    joint histogram inside ``mask``, a boolean array on ``fixed``'s grid).

    ``as_is``: the similarity of the pipeline's own PET -> T1 registration, when it has run
    (the same registration and score): then only the mirrored PET is registered.

    Returns
    -------
    dict
        ``metric`` ("mi"), ``as_is`` and ``mirrored`` (similarity after each registration),
        ``mirror_gain`` (mirrored - as_is) and ``mirror_axis`` (the flipped voxel axis).
    """
    import ants

    from fusion3d.preprocess import registration

    axis = _mirror_axis(moving)
    flipped = moving.new_image_like(np.ascontiguousarray(np.flip(moving.numpy(), axis)))
    scores = {} if as_is is None else {"as_is": float(as_is)}
    for name, image in (("as_is", moving), ("mirrored", flipped)):
        if name in scores:
            continue
        res = registration.register(
            fixed, image, "Rigid", outprefix=f"{outprefix}lr_{name}_", schedule=schedule
        )
        warped = ants.apply_transforms(fixed, image, res["fwdtransforms"], interpolator="linear")
        scores[name] = registration.mutual_information(fixed.numpy(), warped.numpy(), mask)
    return {
        "metric": "mi",
        "as_is": round(scores["as_is"], 4),
        "mirrored": round(scores["mirrored"], 4),
        "mirror_gain": round(scores["mirrored"] - scores["as_is"], 4),
        "mirror_axis": axis,
    }


def left_right_flags(record: dict, margin: float = MIRROR_MARGIN) -> list[dict]:
    """The ``pet_left_right`` flag when the mirrored PET fits the T1 better by > ``margin``.

    ``record`` is the result of :func:`left_right_check`. The flag names both similarities:
    one of the two images is mirrored (a header that lies), which one the images cannot tell.
    """
    gain = float(record["mirror_gain"])
    if gain <= margin:
        return []
    reason = (
        f"pet_mirror_gain {gain:.3f}: the PET mirrored left-right fits the T1 better "
        f"(mutual information {record['mirrored']:.3f} vs {record['as_is']:.3f} as it is; "
        f"bound <= {_g(margin)}): the PET or the T1 is mirrored, check both headers"
    )
    return [
        flag(
            "pet_left_right",
            reason,
            figure="pet_mirror_gain",
            value=gain,
            bound=f"<= {_g(margin)}",
        )
    ]
