"""Learning benchmark: train the study's networks (DC2Fusion 3D and 2D, SwinFuse, MATR, DILRAN)
for an equal wall-clock budget.

Reads the split of a finished (or preprocessed) study, trains every network with the
library's ``fusion3d.learned.training.train_model`` on its training subjects, validates after every
epoch on its validation subjects, and reports the validation PSNR / SSIM per epoch (3D,
fused volume against each source, as the training's model selection). Use it to choose
the training settings (learning rate, schedule, epochs) of a config: every network trains
with its published recipe, then the config's ``train`` keys and ``train.overrides.<network>``
(as the workflow does), then the command line (a key the network's recipe does not have,
e.g. ``--poly-power`` for the baselines, is left out for it). The first of ``train.seeds``
seeds every run unless ``--seed`` is given.

Example (the default study; run from the repository root after ``snakemake --cores 2``)::

    .venv/bin/python benchmarks/bench_learning.py --split results/split/split.tsv \\
        --budget-s 180 --out results/benchmarks/learning

    # the same with another schedule: lr 1e-3, constant, up to 60 epochs in the budget
    .venv/bin/python benchmarks/bench_learning.py --lr 1e-3 --poly-power 0 --epochs 60

Writes ``<out>/learning_curves.tsv`` (one row per network and epoch, the columns of the
training's ``history.csv`` plus ``elapsed_s``, the summed training + validation time of the
epochs so far; row 0 scores the initialisation) and ``<out>/learning_curves.png``
(validation PSNR, SSIM and training loss against that time). Each network stops after the
first epoch that ends past the budget. The training state goes to a temporary folder and
is removed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument("--split", type=Path, default=Path("results/split/split.tsv"))
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("."),
        help="folder the split's image paths are relative to (where snakemake ran)",
    )
    ap.add_argument("--networks", nargs="+", help="default: every network of the config")
    ap.add_argument("--budget-s", type=float, default=180.0, help="wall-clock seconds each")
    ap.add_argument("--epochs", type=int, help="epochs of the poly schedule (and the most run)")
    ap.add_argument("--lr", type=float, help="Adam learning rate")
    ap.add_argument("--poly-power", type=float, help="poly decay exponent (0: constant lr)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--slices-per-volume", type=int, help="2D: slices per volume and epoch")
    ap.add_argument("--no-augment", action="store_true", help="train without augmentation")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/learning"))
    return ap.parse_args(argv)


def study_settings(args: argparse.Namespace) -> tuple[dict, dict, list[str]]:
    """``(model configs, train config per network, networks)`` from the config and the
    command line."""
    from fusion3d.learned.recipes import recipe_for

    config = yaml.safe_load(args.configfile.read_text()) or {}
    models = dict(config.get("models") or {})
    if not models:
        raise SystemExit(f"{args.configfile}: no 'models' section")
    train = dict(config.get("train") or {})
    seeds = train.pop("seeds", [3407])
    per_network = train.pop("overrides", {}) or {}
    overrides = {
        "epochs": args.epochs,
        "lr": args.lr,
        "poly_power": args.poly_power,
        "batch_size": args.batch_size,
        "slices_per_volume": args.slices_per_volume,
        "seed": args.seed,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.setdefault("seed", int(seeds[0]))
    if args.no_augment:
        overrides["augment"] = False
    networks = args.networks or [m for m in config.get("methods", models) if m in models]
    unknown = [n for n in networks if n not in models]
    if unknown:
        raise SystemExit(f"{args.configfile}: no models entry for {unknown}")
    configs = {}
    for n in networks:
        known = recipe_for(n).all_defaults()
        cfg = {**train, **per_network.get(n, {})}
        cfg.update({k: v for k, v in overrides.items() if k in known})
        configs[n] = cfg
    return models, configs, networks


def split_subjects(args: argparse.Namespace) -> tuple[list, list]:
    """Training and validation items of the split, paths resolved against ``--workdir``."""
    from fusion3d.subjects import read_split, split_items

    if not args.split.exists():
        raise SystemExit(f"{args.split}: split not found (run the study first, or pass --split)")
    split = read_split(args.split)

    def resolve(items):
        return [(sid, args.workdir / m, args.workdir / p) for sid, m, p in items]

    train, val = resolve(split_items(split, ("train",))), resolve(split_items(split, ("val",)))
    if not train or not val:
        raise SystemExit(f"{args.split}: needs training and validation subjects")
    return train, val


def train_network(name, model_config, train_config, train, val, args):
    """Train one network for the budget in a temporary state folder; its history rows."""
    import pandas as pd

    from fusion3d.learned.training import train_model

    with tempfile.TemporaryDirectory(prefix=f"bench-learning-{name}-") as state:
        t0 = time.perf_counter()
        train_model(
            train,
            val,
            state,
            model_config=model_config,
            train_config=train_config,
            device=args.device,
            threads=args.threads,
            time_budget_s=args.budget_s,
            method=name,
        )
        wall = time.perf_counter() - t0
        history = pd.read_csv(Path(state) / "history.csv")
    history.insert(0, "network", name)
    history.insert(2, "elapsed_s", history["seconds"].cumsum())
    print(f"\n{name}: {len(history) - 1} epochs in {wall:.0f} s (budget {args.budget_s:.0f} s)")
    print(
        history[["epoch", "elapsed_s", "lr", "loss", "val_psnr", "val_ssim"]].to_string(
            index=False, float_format=lambda v: f"{v:.4g}"
        )
    )
    return history


def plot_curves(table, path: Path) -> None:
    """Validation PSNR, SSIM and training loss against wall-clock time, a line per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "val_psnr": "validation PSNR (dB)",
        "val_ssim": "validation SSIM",
        "loss": "training loss (epoch mean)",
    }
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    for name, rows in table.groupby("network", sort=False):
        for ax, column in zip(axes, panels, strict=True):
            ax.plot(rows["elapsed_s"], rows[column], marker="o", ms=3, label=name)
    for ax, label in zip(axes, panels.values(), strict=True):
        ax.set_xlabel("wall-clock time of the epochs (s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Train every network for the budget; print, tabulate and plot the curves."""
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, str(REPO / "src"))  # the checkout's library
    import pandas as pd

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    models, train_config, networks = study_settings(args)
    train, val = split_subjects(args)
    print(
        f"{len(train)} training / {len(val)} validation subjects; {args.budget_s:.0f} s each; "
        f"train configs {train_config}"
    )
    table = pd.concat(
        [train_network(n, models[n], train_config[n], train, val, args) for n in networks],
        ignore_index=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "learning_curves.tsv", sep="\t", index=False)
    plot_curves(table, args.out / "learning_curves.png")
    best = table[table["epoch"] > 0].groupby("network", sort=False)[["val_psnr", "val_ssim"]]
    print("\nbest validation scores:\n" + best.max().to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out / 'learning_curves.tsv'} and {args.out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
