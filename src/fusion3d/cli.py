"""The ``fusion3d`` command line.

Sub-commands:

- ``fusion3d synthetic OUT_DIR``: write the embedded synthetic ADNI-shaped cohort;
- ``fusion3d metrics FUSED MRI PET --protocol NAME``: fusion metrics as JSON;
- ``fusion3d cohort-search IMAGE_IDS``: LONI IDA advanced-search strings for a cohort list;
- ``fusion3d check-cohort IMAGE_IDS DOWNLOAD_DIR CSV...``: is every cohort image in the download?
- ``fusion3d import-weights [--method M] PUBLISHED.pth OUT.pt``: weights trained with the
  published code of DC2Fusion, SwinFuse, MATR or DILRAN as our checkpoint;
- ``fusion3d fuse --method M [--weights CKPT] MRI PET OUT``: fuse one pair (NIfTI volumes, or
  PNG slices for the 2D networks) with any method;
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

    from fusion3d.learned.weights import import_weights

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
    sizes = {k: v for k, v in sizes.items() if v is not None}
    if args.method != "dc2fusion" and sizes:
        raise ValueError(f"--method {args.method}: the size options are DC2Fusion's; use --set")
    sizes.update(_parse_sets(args.set))
    init_args = import_weights(args.method, args.published, args.out, **sizes)
    print(json.dumps(init_args))
    return 0


def _parse_sets(items: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs (VALUE read as JSON when it parses, else as a string)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _fuse(args: argparse.Namespace) -> int:
    import logging

    from fusion3d.apply import fuse_files

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = fuse_files(
        args.method,
        args.mri,
        args.pet,
        args.out,
        weights=args.weights,
        params=_parse_sets(args.set),
    )
    print(out)
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
        help="convert a state_dict saved by a published network's code into our checkpoint",
        description="Convert a state_dict saved by the published code of DC2Fusion, SwinFuse, "
        "MATR or DILRAN (e.g. MATR's models/model_10.pth, DILRAN's pretrained/last.pt) into a "
        "checkpoint that fusion3d's inference and `fusion3d fuse` read. Sizes are read from the "
        "weights; any missing, unexpected or mis-shaped key is named. DC2Fusion: heads and window "
        "size (not in the weights) default to the published [3, 6, 12, 24] and 2.",
    )
    p.add_argument(
        "--method",
        default="dc2fusion",
        choices=["dc2fusion", "swinfuse", "matr", "dilran"],
        help="whose published weights (default dc2fusion)",
    )
    p.add_argument("published", help="the published model's state_dict (.pth, .pt)")
    p.add_argument("out", help="our checkpoint to write (.pt)")
    p.add_argument("--num-heads", type=int, nargs="+", help="DC2Fusion: heads per stage")
    p.add_argument("--window-size", type=int, help="DC2Fusion: attention window edge (default 2)")
    p.add_argument("--drop-path-rate", type=float, help="DC2Fusion: stochastic depth (0.2)")
    for name in ("spatial-dims", "patch-size", "embed-dim"):
        p.add_argument(f"--{name}", type=int, help="DC2Fusion: check against the weights")
    p.add_argument("--depths", type=int, nargs="+", help="DC2Fusion: check against the weights")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="another constructor size")
    p.set_defaults(func=_import_weights)

    p = sub.add_parser(
        "fuse",
        help="fuse one MRI-PET pair with any method (NIfTI volumes; PNG slices for 2D networks)",
        description="Fuse one MRI-PET pair with a classic method or a network checkpoint "
        "(trained by the workflow or made by import-weights). NIfTI in, NIfTI out (the MRI's "
        "affine); for the 2D networks also 8-bit grey PNG in, PNG out.",
    )
    p.add_argument("--method", required=True, help="a method key (e.g. matr, dcfb3d, pca)")
    p.add_argument("--weights", help="the network's checkpoint (networks only)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a classic method's parameter"
    )
    p.add_argument("mri")
    p.add_argument("pet")
    p.add_argument("out")
    p.set_defaults(func=_fuse)

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
