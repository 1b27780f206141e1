"""The block pattern of a study's fused volumes beside the same measure of their MRI and PET.

For each subject of ``--split`` (test by default) it reads the fused volume listed in
``<results>/fused/<method>/<run>/index.tsv`` and the subject's model-grid MRI, PET and brain
mask (columns ``model_mri``, ``model_pet``, ``model_mask`` of ``<results>/split/split.tsv``,
the files the infer rule fused), and measures along each axis the power at ``1/P`` cycles per
voxel over the power beside it (:func:`fusion3d.evaluation.block_pattern.block_pattern_ratio`,
the same estimator for the three images) for each period ``P`` of ``--periods`` (default: the
patch size and twice it: the network's last and second-to-last upsampling). It prints the
median over subjects per image and axis (about 1: no pattern; the subjects' range below) and,
with ``--figure``, draws a crop of one axial slice of the first subject: MRI, PET and fused
image, and under each its high-pass residual (the slice minus a ``P``-voxel moving average,
which keeps a ``P``-periodic pattern whole), with the ``P``-voxel grid of the network's patches
drawn over them.

Usage::

    python benchmarks/bench_block_pattern.py --results results --method dcfb3d \\
        --run seed-3407 [--figure /tmp/blocks.png] [--patch-size 4] [--crop 24]

Paths in the tables are taken as they are when absolute, else relative to the current folder,
else relative to the folder that holds ``--results`` (the workflow's working folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fusion3d.evaluation.block_pattern import block_pattern_ratio, high_pass
from fusion3d.io import load_nifti, read_tsv

IMAGES = ("fused", "mri", "pet")


def resolve(path: str, results: Path) -> Path:
    """A path of a results table: absolute, relative to the cwd, or to ``results``' parent."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for base in (results.parent, results):
        for cand in (base / p, base / Path(*p.parts[1:]) if len(p.parts) > 1 else base / p):
            if cand.exists():
                return cand
    raise FileNotFoundError(f"{path}: not found as is, nor under {results.parent} or {results}")


def subjects(results: Path, method: str, run: str, split: str) -> pd.DataFrame:
    """``subject_id, fused, mri, pet, mask`` (resolved paths) of the subjects of ``split``."""
    index_path = results / "fused" / method / run / "index.tsv"
    split_path = results / "split" / "split.tsv"
    for p in (index_path, split_path):
        if not p.is_file():
            sys.exit(f"{p}: not found (is {results} a study's results folder?)")
    index = read_tsv(index_path, dtype=str)
    table = read_tsv(split_path, dtype=str, keep_default_na=False)
    if split != "all":
        table = table[table["split"] == split]
    rows = table.merge(index, on="subject_id", how="inner")
    if rows.empty:
        sys.exit(f"no subject of split {split!r} in {index_path}")
    return pd.DataFrame(
        {
            "subject_id": rows["subject_id"],
            **{
                name: [str(resolve(p, results)) for p in rows[col]]
                for name, col in (
                    ("fused", "fused_path"),
                    ("mri", "model_mri"),
                    ("pet", "model_pet"),
                    ("mask", "model_mask"),
                )
            },
        }
    ).reset_index(drop=True)


def measure(items: pd.DataFrame, periods: list[int]) -> pd.DataFrame:
    """One row per subject, image, period and axis: the ratio."""
    rows = []
    for item in items.itertuples(index=False):
        mask = load_nifti(item.mask)[0] > 0.5
        for image in IMAGES:
            vol = load_nifti(getattr(item, image))[0]
            for period in periods:
                ratios = block_pattern_ratio(vol, mask, period)
                for axis, r in enumerate(ratios):
                    rows.append((item.subject_id, image, period, axis, float(r)))
    return pd.DataFrame(rows, columns=["subject_id", "image", "period", "axis", "ratio"])


def print_table(frame: pd.DataFrame) -> None:
    """Median over subjects per image, period and axis, with the subjects' range."""
    n = frame["subject_id"].nunique()
    print(f"power at 1/P over its neighbours (1 = no P-periodic pattern), median of {n} subjects")
    for period, part in frame.groupby("period"):
        print(f"\nP = {period} voxels")
        print(f"{'image':6s}" + "".join(f"{'axis ' + str(a):>22s}" for a in range(3)))
        for image in IMAGES:
            cells = []
            for axis in range(3):
                r = part[(part["image"] == image) & (part["axis"] == axis)]["ratio"]
                cells.append(f"{r.median():7.2f} ({r.min():5.2f}-{r.max():5.2f})")
            print(f"{image:6s}" + "".join(f"{c:>22s}" for c in cells))


def crop_box(mask: np.ndarray, size: int, period: int) -> tuple[int, slice, slice]:
    """Axial slice through the mask's centre and a ``size``-voxel square on the block grid."""
    centre = np.argwhere(mask).mean(0).round().astype(int)
    k = int(centre[2])
    starts = []
    for axis in (0, 1):
        n = mask.shape[axis]
        s = int(np.clip(centre[axis] - size // 2, 0, max(n - size, 0)))
        starts.append(s - s % period)
    return k, slice(starts[0], starts[0] + size), slice(starts[1], starts[1] + size)


def draw_figure(item: pd.Series, out: Path, period: int, size: int, ratios: pd.DataFrame) -> None:
    """MRI, PET, fused crop (top) and their high-pass residuals (bottom), P-voxel grid drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mask = load_nifti(item["mask"])[0] > 0.5
    k, rows, cols = crop_box(mask, size, period)
    fig = Figure(figsize=(9, 6.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    for j, image in enumerate(IMAGES):
        vol = load_nifti(item[image])[0]
        sl = vol[:, :, k]
        hp = high_pass(sl, period)
        r = ratios[(ratios["image"] == image) & (ratios["period"] == period)]
        per_axis = "/".join(f"{v:.1f}" for v in r.sort_values("axis")["ratio"])
        for i, (img, title) in enumerate(
            ((sl[rows, cols], f"{image} (ratio {per_axis})"), (hp[rows, cols], "high-pass"))
        ):
            ax = axes[i, j]
            if i == 0:
                ax.imshow(img.T, cmap="gray", origin="lower", interpolation="nearest")
            else:
                lim = float(np.abs(img).max()) or 1.0
                ax.imshow(
                    img.T,
                    cmap="RdBu_r",
                    vmin=-lim,
                    vmax=lim,
                    origin="lower",
                    interpolation="nearest",
                )
            for g in range(0, size + 1, period):
                ax.axvline(g - 0.5, color="yellow", lw=0.5, alpha=0.7)
                ax.axhline(g - 0.5, color="yellow", lw=0.5, alpha=0.7)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"{item['subject_id']}, axial slice {k}, voxels {rows.start}-{rows.stop - 1} x "
        f"{cols.start}-{cols.stop - 1}; {period}-voxel grid",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    print(f"\nfigure: {out}")


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure every subject, print the table, draw the figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"), help="a study's results")
    ap.add_argument("--method", default="dcfb3d")
    ap.add_argument("--run", default="seed-3407")
    ap.add_argument("--split", default="test", help="train, val, test or all")
    ap.add_argument("--patch-size", type=int, default=4, help="the network's patch size")
    ap.add_argument(
        "--periods", type=int, nargs="+", help="periods P to measure (default: patch, 2 x patch)"
    )
    ap.add_argument("--figure", type=Path, help="write the zoomed figure here (.png or .pdf)")
    ap.add_argument("--crop", type=int, default=24, help="side of the figure's crop in voxels")
    ap.add_argument("--csv", type=Path, help="also write every subject's ratios here")
    args = ap.parse_args(argv)
    periods = args.periods or [args.patch_size, 2 * args.patch_size]
    items = subjects(args.results, args.method, args.run, args.split)
    print(f"{args.results}: {args.method} {args.run}, {len(items)} subjects ({args.split})")
    frame = measure(items, periods)
    print_table(frame)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if args.figure:
        first = items.iloc[0]
        draw_figure(
            first,
            args.figure,
            args.patch_size,
            args.crop,
            frame[frame["subject_id"] == first["subject_id"]],
        )


if __name__ == "__main__":
    main()
