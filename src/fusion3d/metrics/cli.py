"""Command line: ``metrics FUSED MRI PET --protocol NAME [--mask MASK]`` prints JSON.

NIfTI inputs (``.nii``, ``.nii.gz``) are read with :func:`fusion3d.io.load_nifti`;
anything else is read as a 2D image with scikit-image (RGB is converted to grey;
8-bit images are scaled to [0, 1] by 1/255, 16-bit by 1/65535, floats kept). A mask
is read the same way and means ``value > 0``.

Use it through the ``fusion3d`` console script (``fusion3d metrics ...``, added by :func:`register`) or as
``python -m fusion3d.metrics.cli metrics FUSED MRI PET --protocol paper`` (the leading
``metrics`` word may be left out).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusion3d.io import load_nifti
from fusion3d.metrics.protocols import PROTOCOLS, compute_metrics


def load_image(path: str | Path) -> np.ndarray:
    """Load a 2D/3D image as float64 (NIfTI via ``load_nifti``, other formats via skimage).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file cannot be read or is not a 2D/3D image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        data, _ = load_nifti(path, ndim=None)
        data = np.squeeze(data) if data.ndim > 3 else data
    else:
        from skimage import io as skio
        from skimage.color import rgb2gray, rgba2rgb

        try:
            raw = skio.imread(str(path))
        except Exception as exc:  # imageio raises many types for broken files
            raise ValueError(f"{path}: cannot read image ({exc})") from exc
        if raw.ndim == 3 and raw.shape[-1] in (3, 4):
            if raw.dtype == np.uint8:
                raw = raw.astype(np.float64) / 255.0
            elif raw.dtype == np.uint16:
                raw = raw.astype(np.float64) / 65535.0
            raw = rgb2gray(rgba2rgb(raw) if raw.shape[-1] == 4 else raw)
        if raw.dtype == np.uint8:
            data = raw.astype(np.float64) / 255.0
        elif raw.dtype == np.uint16:
            data = raw.astype(np.float64) / 65535.0
        else:
            data = np.asarray(raw, np.float64)
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2D or 3D image, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: NaN/Inf values")
    return np.asarray(data, np.float64)


def run(args: argparse.Namespace) -> int:
    """Compute the metrics named by parsed ``args`` and print them as JSON on stdout."""
    fused, mri, pet = (load_image(p) for p in (args.fused, args.mri, args.pet))
    mask = None if args.mask is None else load_image(args.mask) > 0
    result = compute_metrics(fused, mri, pet, protocol=args.protocol, mask=mask)
    print(json.dumps(result, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``metrics`` sub-command (``func=run``) to an argparse sub-parser set."""
    parser = subparsers.add_parser(
        "metrics",
        help="score a fused image against its MRI and PET",
        description="Print fusion metrics (JSON) of FUSED against MRI and PET.",
    )
    parser.add_argument("fused", help="fused image (.nii/.nii.gz or a 2D image such as PNG)")
    parser.add_argument("mri", help="MRI source, same shape")
    parser.add_argument("pet", help="PET source, same shape")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS, help="metric protocol")
    parser.add_argument("--mask", default=None, help="brain mask (> 0 is brain); default MRI > 0")
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m fusion3d.metrics.cli``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "metrics":
        argv.insert(0, "metrics")
    parser = argparse.ArgumentParser(prog="fusion3d")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"fusion3d metrics: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
