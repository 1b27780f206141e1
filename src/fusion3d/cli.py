"""The ``fusion3d`` command line.

Sub-commands:

- ``fusion3d synthetic OUT_DIR``: write the embedded synthetic ADNI-shaped cohort;
- ``fusion3d metrics FUSED MRI PET --protocol NAME``: fusion metrics as JSON;
- ``fusion3d cohort-search IMAGE_IDS``: LONI IDA advanced-search strings for a cohort list;
- ``fusion3d check-cohort IMAGE_IDS DOWNLOAD_DIR CSV...``: is every cohort image in the download?
- ``fusion3d import-weights [--method M] PUBLISHED.pth OUT.pt``: weights trained with the
  published code of DC2Fusion, SwinFuse, MATR or DILRAN as our checkpoint (the network is
  recognised from the keys when ``--method`` is left out);
- ``fusion3d fuse --method M [--weights CKPT] MRI PET OUT``: fuse one pair (NIfTI volumes, or
  PNG slices for the 2D networks) with any method;
- ``fusion3d methods``: every method, its kind and its keys with their defaults;
- ``fusion3d version``.

The study itself runs through Snakemake (see the README); these commands are the pieces a
researcher wants on their own. A user mistake (a bad argument, a missing file, a key a method
does not have) ends with exit code 2 and one line on stderr, never a traceback.
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
    init_args = import_weights(args.method, args.published, args.out, **_parse_sets(args.set))
    print(json.dumps(init_args))
    return 0


#: Python's spellings of JSON's true, false and null, accepted as ``--set`` values too.
_PYTHON_LITERALS = {"True": True, "False": False, "None": None}


def _parse_sets(items: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs (VALUE read as JSON when it parses, ``True``/``False``/``None``
    as Python's, else as a string)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = _PYTHON_LITERALS.get(value, value)
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
        clamp_round=args.clamp_round,
    )
    print(out)
    return 0


def _methods(args: argparse.Namespace) -> int:
    from fusion3d.apply import describe_methods

    rows = describe_methods()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}: {row['label']} ({row['kind']}, {row['dims']})")
        if row["kind"] == "network":
            extra = f", import-weights --method {row['import_as']}" if row["import_as"] else ""
            png = f", PNG output: {row['png_rule']}" if row["png_rule"] else ""
            print(f"  architecture {row['architecture']}{extra}{png}")
            print(f"  model keys (config models.{row['name']}), with the constructor's defaults:")
            for key, value in row["model_keys"].items():
                print(f"    {key} = {json.dumps(value)}")
            print(f"  import-weights --set keys: {', '.join(row['import_keys'])}")
        label = "fuse --set keys" if row["kind"] == "classic" else "fuse --set keys (inference)"
        keys = ", ".join(f"{k}={json.dumps(v)}" for k, v in row["fuse_keys"].items())
        print(f"  {label}: {keys or 'none'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, its errors one line on stderr (exit code 2) instead of usage + message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_network_commands(sub) -> None:
    """The sub-commands around the networks: import-weights, fuse, methods."""
    p = sub.add_parser(
        "import-weights",
        help="convert a state_dict saved by a published network's code into our checkpoint",
        description="Convert a state_dict saved by the published code of DC2Fusion, SwinFuse, "
        "MATR or DILRAN (e.g. MATR's models/model_10.pth, DILRAN's pretrained/last.pt) into a "
        "checkpoint that fusion3d's inference and `fusion3d fuse` read. The network is "
        "recognised from the state_dict's keys and shapes; sizes are read from the weights; "
        "any missing, unexpected or mis-shaped key is named. `fusion3d methods` lists every "
        "network's keys and their defaults.",
        epilog="DC2Fusion's heads and window size leave no trace in the weights: they default "
        "to the published [3, 6, 12, 24] and 2 (e.g. --set num_heads=[3,6,12,24] to change).",
    )
    p.add_argument(
        "--method",
        choices=["dc2fusion", "swinfuse", "matr", "dilran"],
        help="whose published weights; default: recognised from the state_dict's keys and "
        "shapes, which tell the four networks apart (a --method the keys contradict is "
        "refused, naming the network the file looks like)",
    )
    p.add_argument("published", help="the published model's state_dict (.pth, .pt)")
    p.add_argument("out", help="our checkpoint to write (.pt)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a constructor size of the network (VALUE as JSON, e.g. num_heads=[3,6,12,24]); "
        "checked against the weights where they record it; keys: `fusion3d methods`",
    )
    p.set_defaults(func=_import_weights)

    p = sub.add_parser(
        "fuse",
        help="fuse one MRI-PET pair with any method (NIfTI volumes; PNG slices for 2D networks)",
        description="Fuse one MRI-PET pair with a classic method or a network checkpoint "
        "(trained by the workflow or made by import-weights; a published state_dict is "
        "refused with the import-weights command that converts it). NIfTI in, NIfTI out (the "
        "MRI's affine, clipped to [0, 1]); for the 2D networks also 8-bit grey PNG in, PNG out, "
        "written as the method's published test script writes it (MATR: (F*255).astype(uint8), "
        "truncated and wrapped; DILRAN and SwinFuse: clamped to [0, 1], truncated; DCFB "
        "slice-wise: rounded) unless --clamp-round. Every method's --set keys and their "
        "defaults: `fusion3d methods`.",
    )
    p.add_argument("--method", required=True, help="a method key (e.g. matr, dcfb3d, pca)")
    p.add_argument("--weights", help="the network's checkpoint (networks only)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a classic method's parameter, or a network's inference-time key (e.g. MATR's "
        "allow_non_square=true); VALUE as JSON; keys: `fusion3d methods`",
    )
    p.add_argument(
        "--clamp-round",
        action="store_true",
        help="write a PNG as round(255 clip(F, 0, 1)) instead of the published script's rule",
    )
    p.add_argument("mri")
    p.add_argument("pet")
    p.add_argument("out")
    p.set_defaults(func=_fuse)

    p = sub.add_parser("methods", help="list every method, its kind, its keys and their defaults")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=_methods)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fusion3d", description=__doc__.split("\n\n")[0])
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

    _add_network_commands(sub)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=lambda args: print(__version__) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or an argparse error, already printed (2)
        return int(stop.code or 0)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as error:
        # a user mistake: one line, no traceback (multi-line messages joined)
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        print(f"fusion3d {args.command}: error: {'; '.join(lines)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
