"""Quality control: flag rules, the per-subject QC figure and the cohort QC tables."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.io import atomic_path


def flag(name: str, reason: str) -> dict[str, str]:
    """One QC flag record."""
    return {"flag": name, "reason": reason}


def evaluate_flags(qc: dict, bounds: dict) -> list[dict[str, str]]:
    """Apply the QC bounds to the measured ``qc`` values; return the flags raised.

    Bounds keys: ``mask_ml_min``, ``mask_ml_max``, ``min_similarity_gain``,
    ``min_pet_mi``, ``min_mni_ncc``, ``min_ref_voxels``.
    """
    out: list[dict[str, str]] = []
    ml = qc.get("mask_volume_ml", 0.0)
    if ml <= 0:
        out.append(flag("empty_brain_mask", "brain extraction returned an empty mask"))
    elif not bounds["mask_ml_min"] <= ml <= bounds["mask_ml_max"]:
        out.append(
            flag(
                "mask_volume",
                f"brain mask {ml:.0f} ml outside [{bounds['mask_ml_min']}, {bounds['mask_ml_max']}] ml",
            )
        )
    for key, label, floor in (
        ("pet_to_t1", "PET->T1 mutual information", bounds["min_pet_mi"]),
        ("t1_to_mni", "T1->MNI correlation", bounds["min_mni_ncc"]),
    ):
        reg = qc.get("registration", {}).get(key)
        if reg is None:
            out.append(flag(f"{key}_missing", f"{label}: registration did not run"))
            continue
        before, after = reg["similarity_before"], reg["similarity_after"]
        if after < floor:
            out.append(
                flag(f"{key}_similarity", f"{label} after registration {after:.3f} < {floor}")
            )
        if after - before < bounds["min_similarity_gain"]:
            out.append(
                flag(
                    f"{key}_diverged",
                    f"{label} fell from {before:.3f} to {after:.3f} "
                    f"(gain < {bounds['min_similarity_gain']})",
                )
            )
    ref = qc.get("suvr", {})
    if not ref.get("reference_value", 0) > 0:
        out.append(flag("suvr_reference", f"SUVR reference mean {ref.get('reference_value')} <= 0"))
    if ref.get("reference_voxels", 0) < bounds["min_ref_voxels"]:
        out.append(
            flag(
                "suvr_reference_size",
                f"{ref.get('reference_voxels', 0)} reference voxels < {bounds['min_ref_voxels']}",
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


def qc_figure(
    t1: np.ndarray,
    mask: np.ndarray,
    pet: np.ndarray,
    template: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Write the 3x3 QC figure (rows: mask contour on T1; PET contour on T1; T1 on template edges).

    All inputs are on the same (MNI output) grid. Columns: sagittal, coronal, axial.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (t1.shape == mask.shape == pet.shape == template.shape):
        raise ValueError("qc_figure: all volumes must share one grid")
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    pos = pet[pet > 0]
    pet_level = float(np.percentile(pos, 60)) if pos.size else 0.5
    tpl_edges = _edges(template)
    tpl_level = float(np.percentile(tpl_edges, 92)) if tpl_edges.any() else 0.5
    rows = [
        ("brain mask on T1", t1, mask.astype(float), 0.5, "r"),
        ("PET contour on T1", t1, pet, pet_level, "y"),
        ("T1 on MNI edges", t1, tpl_edges, tpl_level, "c"),
    ]
    for r, (label, under, over, level, colour) in enumerate(rows):
        for c, (u, o) in enumerate(zip(_mid_slices(under), _mid_slices(over), strict=True)):
            ax = axes[r, c]
            ax.imshow(u, cmap="gray")
            if np.ptp(o) > 0 and o.min() < level < o.max():
                ax.contour(o, levels=[level], colors=colour, linewidths=0.7)
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


def collect_qc(qc_json_paths: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather per-subject ``*_qc.json`` into (qc table, flags table).

    qc table: one row per subject (subject_id, mask_volume_ml, similarities,
    step times, peak RSS, n_flags, flagged). flags table: subject_id, flag, reason.
    """
    rows, flags = [], []
    for p in qc_json_paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p}: QC file not found")
        try:
            qc = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON ({exc})") from exc
        if "subject_id" not in qc:
            raise ValueError(f"{p}: missing key 'subject_id'")
        row = {"subject_id": qc["subject_id"], "mask_volume_ml": qc.get("mask_volume_ml")}
        for key, reg in qc.get("registration", {}).items():
            row[f"{key}_metric"] = reg.get("metric")
            row[f"{key}_before"] = reg.get("similarity_before")
            row[f"{key}_after"] = reg.get("similarity_after")
        row["suvr_reference_value"] = qc.get("suvr", {}).get("reference_value")
        for step, sec in qc.get("times_s", {}).items():
            row[f"time_{step}_s"] = sec
        row["peak_rss_mb"] = qc.get("peak_rss_mb")
        row["n_flags"] = len(qc.get("flags", []))
        row["flagged"] = row["n_flags"] > 0
        rows.append(row)
        for f in qc.get("flags", []):
            flags.append({"subject_id": qc["subject_id"], "flag": f["flag"], "reason": f["reason"]})
    qc_table = pd.DataFrame(rows)
    flags_table = pd.DataFrame(flags, columns=["subject_id", "flag", "reason"])
    return qc_table, flags_table
