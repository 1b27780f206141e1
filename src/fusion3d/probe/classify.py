"""Does a fused image keep the diagnosis? Cross-validated classifiers on regional features.

For one task (AD vs CN by default) and one feature set (a method's fused volumes, or a
reference: the T1 alone, as regional means and as regional GM volumes, the PET alone, and
side by side T1 + PET means and T1 GM volumes + PET means):

- The subjects of the task's classes are split by repeated stratified k-fold
  (:func:`make_folds`; 10 x 5 by default). The splits depend only on the subjects, their
  labels and ``seed``, so every method is scored on the same folds.
- In each outer fold: standardise + L2 logistic regression with balanced class weights,
  C chosen by an inner stratified k-fold on the training part only (ROC AUC; what
  ``GridSearchCV`` does, measured equal, without its overhead).
- Each subject gets one out-of-fold probability per repeat; their mean over repeats is
  the subject's score. ``auc`` is the ROC AUC of these scores (one-vs-rest macro AUC for
  the three-class task); ``auc_sd_repeats`` the sd of the repeats' own AUCs.
- 95 % CI: stratified bootstrap over subjects of the scores (percentile).
- Against the reference (T1 + PET): DeLong's test for two correlated ROC curves on the
  same subjects (binary tasks), a paired permutation test (scores swapped per subject)
  for the three-class AUC; Holm-corrected over the methods of a task.
- Below ``min_per_class`` subjects in a class, no number is computed: each row carries
  the reason (the probe is not fitted on a handful of subjects).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger("fusion3d")

#: Tasks by name: their classes, the negative class first for a binary task.
TASKS: dict[str, tuple[str, ...]] = {
    "AD_vs_CN": ("CN", "AD"),
    "CN_vs_MCI": ("CN", "MCI"),
    "CN_vs_MCI_vs_AD": ("CN", "MCI", "AD"),
}
#: The reference feature sets and their labels, in the probe table's order: the regional
#: means of the model-grid T1 and PET, the T1's regional grey-matter volumes (``t1vol``,
#: :mod:`fusion3d.probe.volumes`, when given), and side by side: ``t1_pet`` (means of both)
#: and ``t1vol_pet`` (T1 volumes + PET means).
REFERENCES: dict[str, str] = {
    "t1": "T1 alone (regional means)",
    "t1vol": "T1 alone (GM volumes)",
    "pet": "PET alone",
    "t1_pet": "T1 + PET (regional means, side by side)",
    "t1vol_pet": "T1 GM volumes + PET means (side by side)",
}
#: The reference sets read from feature tables (the others join two of them); ``t1vol`` optional.
SOURCES: tuple[str, ...] = ("t1", "pet", "t1vol")
#: Columns of ``tables/probe.tsv``.
TABLE_COLUMNS: tuple[str, ...] = (
    "task",
    "method",
    "label",
    "seed",
    "kind",
    "n_subjects",
    "n_per_class",
    "auc",
    "ci_low",
    "ci_high",
    "auc_sd_repeats",
    "reference",
    "p_vs_reference",
    "p_holm",
    "test",
    "c_median",
    "n_features",
    "status",
    "reason",
)


@dataclass(frozen=True)
class ProbeSettings:
    """Settings of the probe: the ``probe:`` config section (:meth:`from_config`), whose
    defaults live in the config schema alone."""

    folds: int
    repeats: int
    seed: int
    c_grid: tuple[float, ...]
    inner_folds: int
    min_per_class: int
    n_bootstrap: int
    n_permutations: int
    reference: str
    tasks: tuple[str, ...]
    max_iter: int = 5000  # the solver's, not a study setting

    def __post_init__(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"probe.tasks: unknown task(s) {unknown}; known: {list(TASKS)}")
        if self.folds < 2 or self.repeats < 1 or self.inner_folds < 2:
            raise ValueError(
                f"probe: folds ({self.folds}) and inner_folds ({self.inner_folds}) must be >= 2, "
                f"repeats ({self.repeats}) >= 1"
            )
        if self.min_per_class < 2:
            raise ValueError(f"probe.min_per_class must be >= 2, got {self.min_per_class}")
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ValueError(f"probe.C: positive values expected, got {list(self.c_grid)}")
        if self.reference not in REFERENCES:
            raise ValueError(f"probe.reference must be one of {list(REFERENCES)}")

    @classmethod
    def from_config(cls, cfg: Mapping) -> ProbeSettings:
        """From the resolved ``probe:`` section (keys as in the config schema; every one of
        them is needed).

        Raises
        ------
        ValueError
            Naming the keys the section lacks.
        """
        names = {
            "folds": "folds",
            "repeats": "repeats",
            "seed": "seed",
            "C": "c_grid",
            "inner_folds": "inner_folds",
            "min_per_class": "min_per_class",
            "bootstrap": "n_bootstrap",
            "permutations": "n_permutations",
            "reference": "reference",
            "tasks": "tasks",
        }
        missing = sorted(set(names) - set(cfg))
        if missing:
            raise ValueError(f"probe: config key(s) {missing} missing (resolve the config first)")
        kwargs = {names[k]: v for k, v in cfg.items() if k in names}
        for key in ("c_grid", "tasks"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass
class ProbeResult:
    """What :func:`run_probe` returns: the table, the folds and the subjects' scores."""

    table: pd.DataFrame
    folds: pd.DataFrame
    scores: pd.DataFrame
    notes: list[str] = field(default_factory=list)


# --- Subjects and folds -------------------------------------------------------------------


def task_labels(groups: pd.Series, task: str) -> pd.Series:
    """The subjects of ``task``'s classes with their class name, sorted by subject id."""
    classes = TASKS[task]
    y = groups[groups.isin(classes)].astype(str)
    return y.sort_index(kind="stable")


def too_few_reason(y: pd.Series, task: str, min_per_class: int) -> str | None:
    """Why ``task`` cannot be probed on ``y`` (a class under ``min_per_class``), else None."""
    counts = y.value_counts()
    short = [c for c in TASKS[task] if int(counts.get(c, 0)) < min_per_class]
    if not short:
        return None
    have = ", ".join(f"{c} {int(counts.get(c, 0))}" for c in TASKS[task])
    return (
        f"too few subjects for {task}: {have}; probe.min_per_class is {min_per_class} "
        f"(short: {', '.join(short)})"
    )


def make_folds(y: pd.Series, folds: int, repeats: int, seed: int) -> pd.DataFrame:
    """Repeated stratified k-fold of the subjects of ``y``: each subject's test fold per repeat.

    Depends only on ``y`` (its subject ids and labels), ``folds``, ``repeats`` and ``seed``;
    the number of folds is lowered to the smallest class size when that is smaller.
    Returns columns ``repeat``, ``fold``, ``subject_id``, ``label``.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    y = y.sort_index(kind="stable")
    k = int(min(folds, y.value_counts().min()))
    if k < 2:
        raise ValueError(
            f"make_folds: every class needs >= 2 subjects, got {y.value_counts().to_dict()}"
        )
    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    rows = []
    subjects = y.index.to_numpy()
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y.to_numpy())):
        for j in test:
            rows.append((i // k, i % k, subjects[j], y.iloc[j]))
    return pd.DataFrame(rows, columns=["repeat", "fold", "subject_id", "label"])


# --- Classifier -----------------------------------------------------------------------


def _logistic(settings: ProbeSettings, C: float):
    from sklearn.linear_model import LogisticRegression

    # Balanced class weights: every fold's model has the same (even) prior, so its intercept
    # does not follow the fold's class mix. Without them a strongly penalised model scores
    # each test fold by its training prevalence, and the pooled out-of-fold AUC measures the
    # folds' sizes instead of the images (seen on 12 CN / 8 AD: 0.63 instead of 0.99).
    return LogisticRegression(
        C=float(C), l1_ratio=0.0, class_weight="balanced", max_iter=settings.max_iter
    )


def _fit(X: np.ndarray, codes: np.ndarray, C: float, settings: ProbeSettings):
    """Standardise + L2 logistic regression fitted on ``X``; returns ``(scaler, model)``."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    return scaler, _logistic(settings, C).fit(scaler.transform(X), codes)


def choose_c(
    X: np.ndarray, codes: np.ndarray, settings: ProbeSettings, n_classes: int, random_state: int
) -> float:
    """The C of ``settings.c_grid`` with the best mean inner-fold ROC AUC (nested CV).

    Stratified k-fold on ``X`` only (an outer fold's training part); the scaler is fitted
    inside each inner training part. Ties go to the smallest C (the strongest penalty),
    as ``GridSearchCV`` picks the first of equal ranks in a grid sorted ascending.
    """
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    smallest = int(np.bincount(codes, minlength=n_classes).min())
    inner_k = min(settings.inner_folds, smallest)
    if inner_k < 2:
        raise ValueError("choose_c: a class has fewer than 2 training subjects")
    grid = sorted(settings.c_grid)
    totals = np.zeros(len(grid))
    inner = StratifiedKFold(inner_k, shuffle=True, random_state=random_state)
    for train, valid in inner.split(X, codes):
        scaler = StandardScaler().fit(X[train])
        x_train, x_valid = scaler.transform(X[train]), scaler.transform(X[valid])
        for i, C in enumerate(grid):
            model = _logistic(settings, C).fit(x_train, codes[train])
            totals[i] += roc_auc(codes[valid], model.predict_proba(x_valid))
    return float(grid[int(np.argmax(totals))])


def out_of_fold_scores(
    X: np.ndarray,
    codes: np.ndarray,
    folds: pd.DataFrame,
    subjects: Sequence[str],
    settings: ProbeSettings,
    n_classes: int,
) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold class probabilities, ``(repeats, n_subjects, n_classes)``, and the chosen Cs.

    ``X`` rows follow ``subjects``; ``codes`` are class indices 0..n_classes-1. In each
    outer fold C is chosen on the training part (:func:`choose_c`), then the model is
    refitted on the whole training part and scores the held-out subjects.
    """
    from sklearn.exceptions import ConvergenceWarning

    position = {s: i for i, s in enumerate(subjects)}
    repeats = int(folds["repeat"].max()) + 1
    out = np.full((repeats, len(subjects), n_classes), np.nan)
    chosen: list[float] = []
    for (repeat, fold), part in folds.groupby(["repeat", "fold"], sort=True):
        test = np.array([position[s] for s in part["subject_id"]])
        train = np.setdiff1d(np.arange(len(subjects)), test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            C = choose_c(
                X[train],
                codes[train],
                settings,
                n_classes,
                settings.seed + 1000 * int(repeat) + int(fold),
            )
            scaler, model = _fit(X[train], codes[train], C, settings)
        out[int(repeat)][test] = model.predict_proba(scaler.transform(X[test]))
        chosen.append(C)
    if np.isnan(out).any():
        raise ValueError("out_of_fold_scores: a subject was in no test fold of some repeat")
    return out, chosen


# --- AUC, CI and paired tests ---------------------------------------------------------


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney U / (m n)); ties count one half."""
    positive = np.asarray(positive, dtype=bool)
    m = int(positive.sum())
    n = positive.size - m
    if m == 0 or n == 0:
        raise ValueError("binary_auc: both classes are needed")
    ranks = stats.rankdata(scores)
    return float((ranks[positive].sum() - m * (m + 1) / 2.0) / (m * n))


def roc_auc(codes: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC: binary (``scores`` (n,) or (n, 2), class 1 positive), or for more classes
    the one-vs-rest macro mean over classes of the row-normalised probabilities (as
    scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``)."""
    codes = np.asarray(codes)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 1:
        return binary_auc(codes == 1, scores)
    probs = scores / scores.sum(axis=1, keepdims=True)
    return float(np.mean([binary_auc(codes == c, probs[:, c]) for c in range(scores.shape[1])]))


def bootstrap_ci(
    codes: np.ndarray, scores: np.ndarray, n_bootstrap: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of :func:`roc_auc` from a bootstrap that resamples subjects within each class."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    values = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        idx = np.concatenate([rng.choice(members, size=members.size) for members in by_class])
        values[b] = roc_auc(codes[idx], scores[idx])
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _delong_components(
    codes: np.ndarray, scores: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components V10 (per positive) and V01 (per negative)."""
    pos, neg = scores[codes == 1], scores[codes == 0]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    return float(psi.mean()), psi.mean(axis=1), psi.mean(axis=0)


def delong_test(
    codes: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray
) -> tuple[float, float]:
    """DeLong, DeLong & Clarke-Pearson (1988): ``(z, two-sided p)`` for AUC(a) - AUC(b).

    Both score vectors belong to the same subjects (``codes`` 0/1). Identical curves
    (zero variance of the difference) give ``(0, 1)``.
    """
    codes = np.asarray(codes)
    if set(np.unique(codes)) != {0, 1}:
        raise ValueError("delong_test: binary labels 0/1 expected")
    auc_a, v10_a, v01_a = _delong_components(codes, np.asarray(scores_a, float))
    auc_b, v10_b, v01_b = _delong_components(codes, np.asarray(scores_b, float))
    m, n = v10_a.size, v01_a.size
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    contrast = np.array([1.0, -1.0])
    var = float(contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n)
    diff = auc_a - auc_b
    if var <= 1e-15:
        return 0.0, 1.0
    z = diff / np.sqrt(var)
    return float(z), float(2.0 * stats.norm.sf(abs(z)))


def delong_variance(codes: np.ndarray, scores: np.ndarray) -> float:
    """DeLong's variance of one AUC."""
    _, v10, v01 = _delong_components(np.asarray(codes), np.asarray(scores, float))
    return float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)


def paired_permutation_test(
    codes: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, n_permutations: int, seed: int
) -> float:
    """Two-sided p of AUC(a) - AUC(b) when each subject's two scores are swapped at random."""
    rng = np.random.default_rng(seed)
    observed = abs(roc_auc(codes, scores_a) - roc_auc(codes, scores_b))
    hits = 0
    for _ in range(n_permutations):
        swap = rng.random(len(codes)) < 0.5
        shape = (-1,) + (1,) * (np.ndim(scores_a) - 1)
        a = np.where(swap.reshape(shape), scores_b, scores_a)
        b = np.where(swap.reshape(shape), scores_a, scores_b)
        hits += abs(roc_auc(codes, a) - roc_auc(codes, b)) >= observed - 1e-12
    return float((1 + hits) / (1 + n_permutations))


# --- The probe ----------------------------------------------------------------------------


def split_key(key: str) -> tuple[str, int | None]:
    """A feature set's key -> ``(method, seed)``: ``"dcfb3d/seed-3407"`` ->
    ``("dcfb3d", 3407)``; ``"average/deterministic"`` -> ``("average", None)``; a
    reference (``"t1"``, ``"pet"``) -> ``(reference, None)``."""
    from fusion3d.methods import run_seed

    if "/" in key:
        method, run = key.split("/", 1)
        return method, run_seed(run)
    return key, None


def _describe(key: str) -> tuple[str, str, int | None, str]:
    """``(method, label, seed, kind)`` of a feature set's key."""
    from fusion3d.methods import BY_NAME

    method, seed = split_key(key)
    if method in REFERENCES:
        return method, REFERENCES[method], None, "reference"
    if method not in BY_NAME:
        raise ValueError(f"probe: unknown feature set {key!r}")
    m = BY_NAME[method]
    label = m.label if seed is None else f"{m.label} seed {seed}"
    return method, label, seed, m.kind


def _score_frame(task, key, subjects, y, mean_scores, classes) -> pd.DataFrame:
    frame = pd.DataFrame({"task": task, "features": key, "subject_id": subjects, "label": y})
    if len(classes) == 2:
        frame["score"] = mean_scores[:, 1]
    else:
        for c, name in enumerate(classes):
            frame[f"score_{name}"] = mean_scores[:, c]
    return frame


def _side_by_side(a: pd.DataFrame, b: pd.DataFrame, prefix_a: str, prefix_b: str) -> pd.DataFrame:
    """Two feature tables as one, columns prefixed, only the subjects both have."""
    return pd.concat([a.add_prefix(prefix_a), b.add_prefix(prefix_b)], axis=1, join="inner")


def feature_sets(
    features: Mapping[str, pd.DataFrame], groups: pd.Series, reference: str = "t1_pet"
) -> tuple[dict[str, pd.DataFrame], list[str], set[str], list[str]]:
    """The feature sets with the side-by-side references added, their order, the subjects all
    of them have, and a note per set that lacks some subject.

    ``t1_pet`` joins the T1's and the PET's regional means; with a ``t1vol`` table (the T1's
    regional GM volumes) ``t1vol_pet`` joins it to the PET's means. The order is the
    references in :data:`REFERENCES` order (t1, t1vol, pet, t1_pet, t1vol_pet), then the
    methods as given.
    """
    for needed in ("t1", "pet"):
        if needed not in features:
            raise ValueError(f"run_probe: the {needed!r} feature table is required (reference)")
    sets = dict(features)
    sets["t1_pet"] = _side_by_side(features["t1"], features["pet"], "t1:", "pet:")
    if "t1vol" in features:
        sets["t1vol_pet"] = _side_by_side(features["t1vol"], features["pet"], "t1vol:", "pet:")
    order = [k for k in REFERENCES if k in sets] + [k for k in features if k not in SOURCES]
    if reference not in sets:
        raise ValueError(
            f"run_probe: the reference {reference!r} needs feature table(s) that were not given "
            f"(have {sorted(features)})"
        )
    notes: list[str] = []
    subjects = set(groups.index)
    for key in order:
        missing = subjects - set(sets[key].index)
        if missing:
            notes.append(
                f"{key}: no features for {len(missing)} subject(s), e.g. {sorted(missing)[:3]}"
            )
        subjects &= set(sets[key].index)
    return sets, order, subjects, notes


def _probe_one(
    frame: pd.DataFrame,
    codes: np.ndarray,
    folds: pd.DataFrame,
    settings: ProbeSettings,
    n_classes: int,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One feature set on one task: ``(mean probabilities, score, row values)``."""
    ids = list(frame.index)
    usable = frame.columns[frame.notna().all()]
    X = frame[usable].to_numpy(dtype=np.float64)
    probs, chosen = out_of_fold_scores(X, codes, folds, ids, settings, n_classes)
    mean = probs.mean(axis=0)
    score = mean[:, 1] if n_classes == 2 else mean
    per_repeat = [roc_auc(codes, p[:, 1] if n_classes == 2 else p) for p in probs]
    lo, hi = bootstrap_ci(codes, score, settings.n_bootstrap, settings.seed)
    values = {
        "auc": roc_auc(codes, score),
        "ci_low": lo,
        "ci_high": hi,
        "auc_sd_repeats": float(np.std(per_repeat, ddof=1)) if len(per_repeat) > 1 else 0.0,
        "c_median": float(np.median(chosen)),
        "n_features": int(len(usable)),
        "status": "ok",
        "reason": "",
    }
    return mean, score, values


def _against_reference(
    codes: np.ndarray, scores: Mapping[str, np.ndarray], settings: ProbeSettings, n_classes: int
) -> dict[str, dict]:
    """``p_vs_reference``, ``p_holm`` and ``test`` of every set but the reference."""
    from fusion3d.evaluation.statistics import holm

    ref = scores[settings.reference]
    out: dict[str, dict] = {}
    for key, score in scores.items():
        if key == settings.reference:
            continue
        if n_classes == 2:
            _, p = delong_test(codes, score, ref)
            test = "DeLong"
        else:
            p = paired_permutation_test(codes, score, ref, settings.n_permutations, settings.seed)
            test = f"paired permutation ({settings.n_permutations})"
        out[key] = {"p_vs_reference": p, "test": test}
    adjusted = holm([v["p_vs_reference"] for v in out.values()])
    for values, p_holm in zip(out.values(), adjusted, strict=True):
        values["p_holm"] = float(p_holm)
    return out


def _rows_of_task(task, y, sets, order, settings):
    """The table rows, fold table and score tables of one task (rows only when skipped)."""
    classes = TASKS[task]
    counts = y.value_counts()
    base = {
        "task": task,
        "n_subjects": len(y),
        "n_per_class": "; ".join(f"{c} {int(counts.get(c, 0))}" for c in classes),
        "reference": settings.reference,
    }
    described = {}
    for key in order:
        method, label, seed, kind = _describe(key)
        described[key] = {**base, "method": method, "label": label, "seed": seed, "kind": kind}
    reason = too_few_reason(y, task, settings.min_per_class)
    if reason:
        log.warning("probe: %s: no AUC computed: %s", task, reason)
        rows = [{**described[k], "status": "skipped", "reason": reason} for k in order]
        return rows, None, []
    folds = make_folds(y, settings.folds, settings.repeats, settings.seed)
    codes = np.array([classes.index(v) for v in y.to_numpy()])
    ids = list(y.index)
    scores, rows, score_tables = {}, {}, []
    for key in order:
        mean, scores[key], values = _probe_one(
            sets[key].loc[ids], codes, folds, settings, len(classes)
        )
        rows[key] = {**described[key], **values}
        score_tables.append(_score_frame(task, key, ids, y.to_numpy(), mean, classes))
        log.info(
            "probe: %s %s: AUC %.3f [%.3f, %.3f]",
            task,
            key,
            values["auc"],
            values["ci_low"],
            values["ci_high"],
        )
    for key, values in _against_reference(codes, scores, settings, len(classes)).items():
        rows[key].update(values)
    return [rows[k] for k in order], folds.assign(task=task), score_tables


def run_probe(
    features: Mapping[str, pd.DataFrame],
    groups: pd.Series,
    settings: ProbeSettings,
) -> ProbeResult:
    """Probe every feature set on every task of ``settings`` (see the module docstring).

    Parameters
    ----------
    features : mapping
        Feature tables (subjects x regions) by key: ``"t1"`` and ``"pet"`` (the references'
        regional means; ``"t1_pet"`` is built from them), optionally ``"t1vol"`` (the T1's
        regional GM volumes; ``"t1vol_pet"`` is built from it and ``"pet"``), a classic
        method's name, or ``"<network>/seed-<seed>"``. Only subjects every table has are probed (a note
        names the tables that lack some).
    groups : pandas.Series
        Diagnosis (CN/MCI/AD) by subject id.
    """
    sets, order, subjects, notes = feature_sets(features, groups, settings.reference)
    rows, fold_tables, score_tables = [], [], []
    for task in settings.tasks:
        y = task_labels(groups[groups.index.isin(subjects)], task)
        task_rows, folds, scores = _rows_of_task(task, y, sets, order, settings)
        rows += task_rows
        score_tables += scores
        if folds is not None:
            fold_tables.append(folds)
    fold_columns = ["task", "repeat", "fold", "subject_id", "label"]
    table = pd.DataFrame(rows).reindex(columns=list(TABLE_COLUMNS))
    table["seed"] = table["seed"].astype("Int64")  # a network's seed; empty for the others
    return ProbeResult(
        table=table,
        folds=pd.concat(fold_tables, ignore_index=True)[fold_columns]
        if fold_tables
        else pd.DataFrame(columns=fold_columns),
        scores=pd.concat(score_tables, ignore_index=True)
        if score_tables
        else pd.DataFrame(columns=["task", "features", "subject_id", "label"]),
        notes=notes,
    )
