"""The ``fusion3d`` command line.

Sub-commands:

- ``fusion3d synthetic OUT_DIR``: write the embedded synthetic ADNI-shaped cohort;
- ``fusion3d metrics FUSED MRI PET --protocol NAME``: fusion metrics as JSON;
- ``fusion3d cohort-search IMAGE_IDS``: LONI IDA advanced-search strings for a cohort list;
- ``fusion3d check-cohort IMAGE_IDS DOWNLOAD_DIR CSV...``: is every cohort image in the download?
- ``fusion3d import-weights PUBLISHED.pth OUT.pt``: weights trained with the published DC2Fusion
  code as our checkpoint for ``variant: published``;
- ``fusion3d version``.

The study itself runs through Snakemake (see the README); these commands are the pieces a
researcher wants on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusion3d import __version__


def _synthetic(args: argparse.Namespace) -> int:
    from fusion3d.synthetic import generate_cohort

    summary = generate_cohort(
        Path(args.out_dir), n_subjects=args.n_subjects, seed=args.seed, quirks=not args.no_quirks
    )
    print(f"wrote {len(summary)} images to {Path(args.out_dir) / 'download'}")
    return 0


def _cohort_search(args: argparse.Namespace) -> int:
    from fusion3d.ingest.cohort import ida_search_batches, read_cohort, write_search_batches

    ids = read_cohort(args.image_ids)
    batches = ida_search_batches(ids, batch_size=args.batch_size)
    if args.output:
        write_search_batches(ids, args.output, batch_size=args.batch_size)
    for number, batch in enumerate(batches, start=1):
        print(f"# batch {number}/{len(batches)}: {batch.count(',') + 1} image IDs")
        print(batch)
    return 0


def _check_cohort(args: argparse.Namespace) -> int:
    from fusion3d.ingest import read_manifests
    from fusion3d.ingest.cohort import check_completeness, read_cohort

    manifest = read_manifests([Path(p) for p in args.manifests])
    missing, summary = check_completeness(
        read_cohort(args.image_ids), manifest, Path(args.download_dir), allow_incomplete=True
    )
    print(json.dumps(summary, indent=2, default=str))
    if len(missing):
        print(missing.to_csv(sep="\t", index=False), end="")
    return 1 if len(missing) else 0


def _import_weights(args: argparse.Namespace) -> int:
    import logging

    from fusion3d.learned.models.published import import_published_weights

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = {
        "spatial_dims": args.spatial_dims,
        "patch_size": args.patch_size,
        "embed_dim": args.embed_dim,
        "depths": args.depths,
        "num_heads": args.num_heads,
        "window_size": args.window_size,
        "drop_path_rate": args.drop_path_rate,
    }
    init_args = import_published_weights(args.published, args.out, **sizes)
    print(json.dumps(init_args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion3d", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthetic", help="write the embedded synthetic ADNI-shaped cohort")
    p.add_argument("out_dir")
    p.add_argument("--n-subjects", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-quirks", action="store_true", help="pairs only, no extra images")
    p.set_defaults(func=_synthetic)

    from fusion3d.metrics.cli import register

    register(sub)

    p = sub.add_parser("cohort-search", help="LONI IDA advanced-search strings for a cohort list")
    p.add_argument("image_ids", help="file of image IDs (comma- or line-separated)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("-o", "--output", help="also write the batches to this file")
    p.set_defaults(func=_cohort_search)

    p = sub.add_parser("check-cohort", help="check that every cohort image is in a download")
    p.add_argument("image_ids")
    p.add_argument("download_dir")
    p.add_argument("manifests", nargs="+", help="collection CSV(s)")
    p.set_defaults(func=_check_cohort)

    p = sub.add_parser(
        "import-weights",
        help="convert a state_dict saved by the published DC2Fusion code into our checkpoint",
        description="Convert a state_dict saved by the published DC2Fusion code into a checkpoint "
        "of DC2Fusion(variant='published') that fusion3d's inference reads. Sizes are read from "
        "the weights; heads and window size (not in the weights) default to the published "
        "[3, 6, 12, 24] and 2.",
    )
    p.add_argument("published", help="the published model's state_dict (.pth)")
    p.add_argument("out", help="our checkpoint to write (.pt)")
    p.add_argument("--num-heads", type=int, nargs="+", help="heads per stage (default 3 6 12 24)")
    p.add_argument("--window-size", type=int, help="attention window edge (default 2)")
    p.add_argument("--drop-path-rate", type=float, help="stochastic depth (default 0.2)")
    for name in ("spatial-dims", "patch-size", "embed-dim"):
        p.add_argument(f"--{name}", type=int, help="check against the weights (read from them)")
    p.add_argument("--depths", type=int, nargs="+", help="check against the weights")
    p.set_defaults(func=_import_weights)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=lambda args: print(__version__) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"fusion3d: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
