"""Is a probe AUC the disease model's or its cohort's draw? The PET probe over redrawn cohorts.

One 40-subject cohort gives one AUC, and with 10 AD subjects it moves a lot with their
draws. This benchmark takes a finished study on a synthetic cohort (``bench_probe.py``'s
or the convergence study's ``results/``) and redraws each subject's hypometabolism scale
from the disease model (:func:`fusion3d.synthetic.disease.draw_hypometabolism`, its
group's distribution) many times, keeping everything else of that subject: anatomy,
natural uptake variation, noise, registration, preprocessing. Each subject's MNI-space
SUVR PET is re-weighted by ``(1 - s_new H) / (1 - s_old H)`` (``H`` smoothed to the
subject's PET resolution; :func:`fusion3d.synthetic.pet.reweight_hypometabolism`), put on
the model grid as preprocessing does, and probed as the workflow probes (regional means,
the same classifier, folds and settings). Draw 0 is the cohort as drawn: it must give the
study's own PET features back (checked, and printed).

It prints, per draw, the PET-alone AUC (and T1 GM volumes + PET when the study has the
volumes) and the univariate AUC of the FDG meta-ROI (Landau et al. 2011's regions), then
their mean, sd and range over the redraws.

    .venv/bin/python benchmarks/bench_probe.py --out /tmp/probe40 --n-subjects 40 --methods average
    .venv/bin/python benchmarks/bench_probe_draws.py --results /tmp/probe40/results \\
        --configfile /tmp/probe40/bench_probe.yaml --draws 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import ndimage
from snakemake.utils import update_config

from fusion3d.config import resolve
from fusion3d.io import load_nifti
from fusion3d.preprocess.geometry import to_model_grid
from fusion3d.probe.atlas import atlas_on_grid, load_atlas
from fusion3d.probe.classify import (
    ProbeSettings,
    binary_auc,
    feature_sets,
    make_folds,
    out_of_fold_scores,
    roc_auc,
    task_labels,
)
from fusion3d.probe.features import read_features, regional_means
from fusion3d.synthetic.disease import META_ROI, draw_hypometabolism
from fusion3d.synthetic.pet import hypometabolism_on_grid, reweight_hypometabolism

REPO = Path(__file__).resolve().parents[1]


def load_subjects(results: Path) -> list[dict]:
    """Every subject of the split with its MNI images, group and true hypometabolism scale."""
    split = pd.read_csv(results / "split" / "split.tsv", sep="\t", dtype=str)
    subjects = []
    for row in split.itertuples():
        truth = json.loads((results / "synthetic" / "truth" / row.ptid / "truth.json").read_text())
        folder = results / "preprocess" / row.subject_id
        stem = folder / row.subject_id
        t1, affine = load_nifti(f"{stem}_space-MNI152_desc-preproc_T1w.nii.gz")
        pet, _ = load_nifti(f"{stem}_space-MNI152_desc-suvr_pet.nii.gz")
        mask, _ = load_nifti(f"{stem}_space-MNI152_desc-brain_mask.nii.gz")
        model_pet, _ = load_nifti(row.model_pet)
        model_mask, model_affine = load_nifti(row.model_mask)
        subjects.append(
            {
                "subject_id": row.subject_id,
                "group": row.group,
                "scale": float(truth["hypometabolism_scale"]),
                "fwhm_mm": float(truth["pet_psf_fwhm_mm"]),
                "t1": t1,
                "pet": pet,
                "mask": mask,
                "affine": affine,
                "model_pet": model_pet,
                "model_mask": model_mask,
                "model_affine": model_affine,
            }
        )
    return subjects


def regional_variation(
    rng: np.random.Generator, mask: np.ndarray, affine: np.ndarray, rms: float, sigma_mm: float
) -> np.ndarray:
    """``1 + f``: a smooth random field ``f`` (Gaussian ``sigma_mm``) of ``rms`` in ``mask``."""
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), sigma_mm / voxel)
    inside = mask > 0
    field = (field - field[inside].mean()) / field[inside].std()
    return (1.0 + rms * field).astype(np.float32)


def draw_features(
    subjects: list[dict],
    scales: list[float],
    atlas,
    grid: int,
    meta_ids,
    variation: tuple[np.random.Generator, float, float] | None = None,
):
    """The PET's regional means and meta-ROI mean of every subject at ``scales`` (and, with
    ``variation`` = (rng, rms, sigma mm), each PET times its own :func:`regional_variation`)."""
    rows, meta, worst = [], [], 0.0
    for subject, scale in zip(subjects, scales, strict=True):
        hypo = subject.setdefault(
            "hypo",
            hypometabolism_on_grid(subject["pet"].shape, subject["affine"], subject["fwhm_mm"]),
        )
        pet = reweight_hypometabolism(subject["pet"], hypo, subject["scale"], scale)
        if variation is not None:
            rng, rms, sigma = variation
            pet = pet * regional_variation(rng, subject["mask"], subject["affine"], rms, sigma)
        model = to_model_grid(subject["t1"], pet, subject["mask"], subject["affine"], grid)
        volume, affine = model["pet"]
        if scale == subject["scale"]:
            worst = max(worst, float(np.abs(volume - subject["model_pet"]).max()))
        labels = subject.setdefault("labels", atlas_on_grid(atlas, volume.shape, affine))
        mask = subject["model_mask"]
        rows.append(regional_means(volume, labels, atlas.ids, mask))
        meta.append(float(volume[np.isin(labels, meta_ids) & (mask > 0)].mean()))
    index = pd.Index([s["subject_id"] for s in subjects], name="subject_id")
    return pd.DataFrame(np.vstack(rows), index=index, columns=atlas.names), np.asarray(meta), worst


def probe_auc(frame: pd.DataFrame, y: pd.Series, settings: ProbeSettings) -> float:
    """The probe's AD vs CN AUC of one feature set (its folds, classifier and C choice; the
    mean out-of-fold probability over repeats, as ``tables/probe.tsv``), without the CI."""
    codes = (y == "AD").to_numpy().astype(int)
    folds = make_folds(y, settings.folds, settings.repeats, settings.seed)
    ids = list(y.index)
    X = frame.loc[ids].dropna(axis=1).to_numpy(dtype=np.float64)
    probs, _ = out_of_fold_scores(X, codes, folds, ids, settings, 2)
    return roc_auc(codes, probs.mean(axis=0)[:, 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a finished study's results/")
    parser.add_argument(
        "--configfile",
        type=Path,
        nargs="*",
        default=[REPO / "config" / "config.yaml"],
        help="the study's config file(s), merged in order as Snakemake does (the probe's "
        "settings, the grid); bench_probe.py --methods writes one whole file",
    )
    parser.add_argument("--draws", type=int, default=12, help="redrawn cohorts (besides draw 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="TSV of the per-draw AUCs")
    parser.add_argument(
        "--regional-variation",
        type=float,
        nargs=2,
        metavar=("RMS", "SIGMA_MM"),
        help="what-if: multiply every redrawn subject's PET by 1 + a smooth random field of "
        "this rms and Gaussian sigma (mm), a finer natural variation than the generator's",
    )
    args = parser.parse_args(argv)

    config: dict = {}
    for path in args.configfile:
        update_config(config, yaml.safe_load(path.read_text()))
    config = resolve(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    probe_config = dict(config["probe"], tasks=["AD_vs_CN"])
    settings = ProbeSettings.from_config(probe_config)
    grid = int(config["preprocess"]["grid"])

    start = time.perf_counter()
    subjects = load_subjects(args.results)
    groups = pd.Series([s["group"] for s in subjects], index=[s["subject_id"] for s in subjects])
    features = args.results / "probe" / "features"
    fixed = {"t1": read_features(features / "t1.tsv")}
    if (features / "t1vol.tsv").exists():
        fixed["t1vol"] = read_features(features / "t1vol.tsv")
    atlas = load_atlas()
    meta_ids = atlas.ids[atlas.regions["label"].isin(META_ROI).to_numpy()]
    study_pet = read_features(features / "pet.tsv")
    print(
        f"{len(subjects)} subjects ({groups.value_counts().to_dict()}) loaded in "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )

    rng = np.random.default_rng(args.seed)
    ad, cn = (groups == "AD").to_numpy(), (groups == "CN").to_numpy()
    y = task_labels(groups, "AD_vs_CN")
    rows = []
    for draw in range(args.draws + 1):
        if draw == 0:
            scales = [s["scale"] for s in subjects]
        else:
            z = rng.standard_normal(len(subjects))
            scales = [
                draw_hypometabolism(s["group"], float(v)) for s, v in zip(subjects, z, strict=True)
            ]
        variation = None
        if draw > 0 and args.regional_variation:
            variation = (rng, *args.regional_variation)
        pet, meta, worst = draw_features(subjects, scales, atlas, grid, meta_ids, variation)
        if draw == 0:
            gap = float(np.nanmax(np.abs(pet.to_numpy() - study_pet.loc[pet.index].to_numpy())))
            print(
                f"draw 0 (the cohort as drawn): model-grid PET within {worst:.1e} of the study's, "
                f"regional means within {gap:.1e}",
                flush=True,
            )
            if gap > 1e-4:
                raise SystemExit("draw 0 does not give the study's PET features back")
        sets = feature_sets({**fixed, "pet": pet}, groups, settings.reference)[0]
        auc = {k: probe_auc(sets[k], y, settings) for k in ("pet", "t1vol_pet") if k in sets}
        row = {
            "draw": draw,
            "pet": float(auc["pet"]),
            "t1vol_pet": float(auc.get("t1vol_pet", np.nan)),
            "meta_roi": binary_auc(ad[ad | cn], -meta[ad | cn]),
            "ad_below_cn_pct": 100 * (1 - meta[ad].mean() / meta[cn].mean()),
            "ad_cv_pct": 100 * meta[ad].std(ddof=1) / meta[ad].mean(),
            "cn_cv_pct": 100 * meta[cn].std(ddof=1) / meta[cn].mean(),
            "ad_scales": " ".join(f"{s:.2f}" for s, a in zip(scales, ad, strict=True) if a),
        }
        rows.append(row)
        print(
            f"draw {draw:2d}: PET {row['pet']:.3f}  GM volumes + PET {row['t1vol_pet']:.3f}  "
            f"meta-ROI {row['meta_roi']:.3f}  (AD {row['ad_below_cn_pct']:.1f} % below CN; "
            f"CV AD {row['ad_cv_pct']:.1f} %, CN {row['cn_cv_pct']:.1f} %)",
            flush=True,
        )
    frame = pd.DataFrame(rows)
    redrawn = frame[frame["draw"] > 0]
    print(
        f"\nover {len(redrawn)} redrawn cohorts (AD vs CN, {int(ad.sum())} AD / {int(cn.sum())} CN):"
    )
    for key, label in (
        ("pet", "PET alone"),
        ("t1vol_pet", "GM volumes + PET"),
        ("meta_roi", "meta-ROI"),
    ):
        v = redrawn[key]
        print(
            f"  {label:17s} mean {v.mean():.3f}  sd {v.std(ddof=1):.3f}  "
            f"range {v.min():.3f}-{v.max():.3f}  (the cohort as drawn: {frame[key].iloc[0]:.3f})"
        )
    print(f"{(time.perf_counter() - start) / 60:.1f} min")
    if args.out:
        frame.to_csv(args.out, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
