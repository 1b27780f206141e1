"""Scoring: every fused image of every subject against its MRI and PET, in the protocols of
:mod:`fusion3d.metrics`, into the long table (:mod:`fusion3d.evaluation.long_table`); the
evaluation pass (:func:`evaluate_pass`, sources prepared once per subject) and its shards."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from fusion3d.evaluation.long_table import LONG_COLUMNS, check_columns
from fusion3d.io import load_nifti

MetricsFn = Callable[..., Mapping[str, float]]


def _check_evaluation_inputs(
    method: str, index: pd.DataFrame, protocols: Sequence[str] | str, subjects: pd.DataFrame
) -> list[str]:
    """Check :func:`evaluate_method`'s tables and protocols; return the protocols as a list."""
    check_columns(index, ("subject_id", "fused_path"), f"{method} index")
    check_columns(
        subjects, ("subject_id", "split", "group", "mri_path", "pet_path"), "subjects table"
    )
    protocols = [protocols] if isinstance(protocols, str) else list(protocols)
    if not protocols:
        raise ValueError("protocols: at least one protocol is needed")
    if index.empty:
        raise ValueError(f"{method} index: no fused images listed")
    for name, frame in (("subjects table", subjects), (f"{method} index", index)):
        dup = frame["subject_id"][frame["subject_id"].duplicated()].tolist()
        if dup:
            raise ValueError(f"{name}: duplicate subject_id {dup[:5]}")
    unknown = sorted(set(index["subject_id"]) - set(subjects["subject_id"]))
    if unknown:
        raise ValueError(f"{method} index: subject_id(s) not in the subjects table: {unknown[:5]}")
    return protocols


def _load_sources(subject_id: str, sub: pd.Series) -> tuple:
    """One subject's MRI, PET and mask (``None`` without one), checked to share one shape."""
    mri, _ = load_nifti(sub["mri_path"])
    pet, _ = load_nifti(sub["pet_path"])
    if pet.shape != mri.shape:
        raise ValueError(
            f"{subject_id}: {sub['pet_path']} has shape {pet.shape} but {sub['mri_path']} "
            f"has {mri.shape}"
        )
    mask = None
    mask_path = sub.get("mask_path")
    if isinstance(mask_path, str | os.PathLike) and str(mask_path).strip():
        mask_arr, _ = load_nifti(mask_path)
        if mask_arr.shape != mri.shape:
            raise ValueError(
                f"{subject_id}: mask {mask_path} has shape {mask_arr.shape}, images {mri.shape}"
            )
        mask = mask_arr > 0.5
    return mri, pet, mask


def _check_fused_shape(subject_id: str, fused_path, fused, sub: pd.Series, shape) -> None:
    if fused.shape != shape:
        raise ValueError(
            f"{subject_id}: {fused_path} has shape {fused.shape} but {sub['mri_path']} has {shape}"
        )


def _subject_rows(
    subject_id: str, sub: pd.Series, jobs: list[tuple[int, str, object]], protocols, fn
) -> list[tuple[int, dict[str, object]]]:
    """Rows of one subject for every ``(entry, method, fused_path)`` of ``jobs``.

    The sources are loaded once; without ``fn`` their source-side metric work is done
    once too (:class:`fusion3d.metrics.prepared.SubjectSources`) and reused for every
    fused image.
    """
    mri, pet, mask = _load_sources(subject_id, sub)
    if fn is None:
        from fusion3d.metrics.prepared import SubjectSources, score

        prepared = SubjectSources(mri, pet, mask)

        def fn(fused, _mri, _pet, *, protocol, mask=None):
            return score(fused, prepared, protocol)

    rows = []
    for entry, method, fused_path in jobs:
        fused, _ = load_nifti(fused_path)
        _check_fused_shape(subject_id, fused_path, fused, sub, mri.shape)
        for protocol in protocols:
            for metric, value in fn(fused, mri, pet, protocol=protocol, mask=mask).items():
                row = {"subject_id": subject_id, "split": sub["split"], "group": sub["group"]}
                row.update(method=method, protocol=protocol, metric=str(metric))
                rows.append((entry, {**row, "value": float(value)}))
    return rows


def evaluate_methods(
    entries: Sequence[tuple[str, pd.DataFrame]],
    *,
    protocols: Sequence[str],
    subjects: pd.DataFrame,
    metrics_fn: MetricsFn | None = None,
) -> list[pd.DataFrame]:
    """:func:`evaluate_method` for several fused indexes, all fused images of a subject in one pass.

    Each subject's sources are loaded and prepared once and every fused image of it (any
    method, any seed) is scored against them: the sources' side of the metrics (phase
    congruency, gradients, histograms, VIF pyramids, ...) is computed once per subject
    instead of once per fused image. Memory: one subject's sources and one fused image.

    Parameters
    ----------
    entries
        ``(method, index)`` pairs, as :func:`evaluate_method` takes them (a method may
        appear more than once, e.g. once per seed).
    protocols, subjects, metrics_fn
        As for :func:`evaluate_method`; with ``metrics_fn`` nothing is prepared (each
        call gets the images).

    Returns
    -------
    list of pandas.DataFrame
        One long table per entry (columns :data:`LONG_COLUMNS`, in its index order).
    """
    checked = [_check_evaluation_inputs(m, ix, protocols, subjects) for m, ix in entries]
    protocols = checked[0] if checked else []
    info = subjects.set_index("subject_id")
    jobs: dict[str, list[tuple[int, str, object]]] = {}
    for entry, (method, index) in enumerate(entries):
        for subject_id, path in zip(index["subject_id"], index["fused_path"], strict=True):
            jobs.setdefault(subject_id, []).append((entry, method, path))
    rows: list[list[dict[str, object]]] = [[] for _ in entries]
    for subject_id, subject_jobs in jobs.items():
        for entry, row in _subject_rows(
            subject_id, info.loc[subject_id], subject_jobs, protocols, metrics_fn
        ):
            rows[entry].append(row)
    return [pd.DataFrame(r, columns=list(LONG_COLUMNS)) for r in rows]


def evaluate_method(
    method: str,
    index: pd.DataFrame,
    *,
    protocols: Sequence[str],
    subjects: pd.DataFrame,
    metrics_fn: MetricsFn | None = None,
) -> pd.DataFrame:
    """Compute every metric of every protocol for each fused volume of one method.

    Parameters
    ----------
    method
        Method key written into the ``method`` column.
    index
        The method's fused index: columns ``subject_id``, ``fused_path``.
    protocols
        Protocol names passed to ``compute_metrics`` (e.g. ``"paper"``).
    subjects
        Columns ``subject_id``, ``split``, ``group``, ``mri_path``, ``pet_path``,
        ``mask_path`` (``mask_path`` may be absent or empty: no mask).
    metrics_fn
        ``compute_metrics(fused, mri, pet, *, protocol, mask=None) -> dict``; default:
        the prepared path of :mod:`fusion3d.metrics.prepared` (the same values as
        :func:`fusion3d.metrics.compute_metrics`).

    Returns
    -------
    pandas.DataFrame
        Long table with the columns of :data:`LONG_COLUMNS`, in index order.

    Raises
    ------
    ValueError
        Missing columns, no protocols, duplicate or unknown subject ids, a
        fused image whose shape differs from its sources.
    """
    return evaluate_methods(
        [(method, index)], protocols=protocols, subjects=subjects, metrics_fn=metrics_fn
    )[0]


def evaluate_pass(
    entries: Sequence[tuple[str, object, pd.DataFrame]],
    *,
    protocols: Sequence[str],
    subjects: pd.DataFrame,
    shard: int = 0,
    n_shards: int = 1,
) -> pd.DataFrame:
    """One shard of the evaluation pass: every fused image of a share of the subjects.

    The subjects listed in any index, sorted, are dealt to ``n_shards`` shards in turn
    (subject ``i`` to shard ``i % n_shards``); this shard's subjects are scored with
    :func:`evaluate_methods` (sources prepared once per subject, every method and seed).

    Parameters
    ----------
    entries
        ``(method, seed, index)``: a fused index per method and seed (``seed`` ``None``
        for a classic method).
    protocols, subjects
        As for :func:`evaluate_method`.
    shard, n_shards
        Which share of the subjects (``0 <= shard < n_shards``).

    Returns
    -------
    pandas.DataFrame
        The long tables of every entry, one after the other, with a ``seed`` column.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard: {shard} is not in 0..{n_shards - 1}")
    ids = sorted({str(s) for _, _, index in entries for s in index["subject_id"]})
    mine = set(ids[shard::n_shards])
    kept = []
    for method, seed, index in entries:
        part = index[index["subject_id"].astype(str).isin(mine)]
        if not part.empty:
            kept.append((method, seed, part))
    tables = evaluate_methods(
        [(m, ix) for m, _, ix in kept], protocols=protocols, subjects=subjects
    )
    out = [t.assign(seed=seed) for (_, seed, _), t in zip(kept, tables, strict=True)]
    columns = [*LONG_COLUMNS, "seed"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns)


def select_pass_rows(
    passes: Sequence[pd.DataFrame], method: str, seed, index: pd.DataFrame
) -> pd.DataFrame:
    """One method's (and seed's) rows of the :func:`evaluate_pass` shards, in index order.

    Raises
    ------
    ValueError
        When a subject of ``index`` has no rows in the shards (naming it).
    """
    long = pd.concat(passes, ignore_index=True)
    sel = long[long["method"].astype(str) == method]
    if seed is not None:
        sel = sel[pd.to_numeric(sel["seed"], errors="coerce") == int(seed)]
    missing = sorted(set(index["subject_id"].astype(str)) - set(sel["subject_id"].astype(str)))
    if missing:
        raise ValueError(f"{method} (seed {seed}): no metric rows for {missing[:5]} in the shards")
    order = {s: i for i, s in enumerate(index["subject_id"].astype(str))}
    sel = sel[sel["subject_id"].astype(str).isin(order)]
    key = sel["subject_id"].astype(str).map(order)
    sel = sel.assign(_order=key.to_numpy()).sort_values("_order", kind="stable")
    return sel[list(LONG_COLUMNS)].reset_index(drop=True)
