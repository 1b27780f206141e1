"""Where does DC2Fusion's 4-voxel block pattern come from? The ratio of each candidate.

The network is the default study's (``config/config.yaml`` ``models.dcfb3d``: patch 4,
embed 16, depths 1-1-2-1, 64^3). Every experiment fuses a smooth random pair (white noise
with amplitude spectrum ``1/|k|^3``, in [0, 1] inside a ball of radius 27 voxels, zero
outside) and measures the fused volume inside the ball with
:func:`fusion3d.evaluation.block_pattern.block_pattern_ratio` (power at 1/4 and 1/8
cycles/voxel over its neighbours, per axis; about 1 without a pattern). The inputs
themselves read about 1. Variants, each built with the same seeds (so every module they
share has the same random weights):

- ``as built``: the network as the config builds it (``variant: fixed``);
- ``published variant``: ``variant: published`` (every switch of the published code);
- ``offsets zero``: every deformable offset forced to 0 (the offset layer's weights
  zeroed; with the aligned grid the sampling is then the identity);
- ``overlapping embed``: the patch embedding ``Conv(k=4, s=4)`` replaced by an
  overlapping ``Conv(k=8, s=4, pad=2)`` (same token grid, no hard patch borders at the
  input);
- ``trilinear head``: the final expansion ``ConvTranspose(k=4, s=4)`` (``head_up``, the
  published ``reverse_patch_embedding``, models/DC2Fusion.py:762) replaced by trilinear
  x4 upsampling and a 3^3 convolution (same channels);
- ``upsampling: trilinear``: the model key of that name (``DC2Fusion(upsampling=
  "trilinear")``): the head as above and also the decoder's ``ConvTranspose(k=2, s=2)``
  upsamplers (published ``PatchExpand``, models/DC2Fusion.py:435) replaced by trilinear x2
  and a 3^3 convolution.

Also printed: the ratio of ``head_up``'s output channels (median over channels, before the
final 3^3 convolution), and the share of the fused volume's intensity power at 1/4 that its
mean 4^3 stamp holds (the average over the blocks inside the ball of each block minus its
own mean: the part of the pattern that is the same in every block; it means something only
where the 1/4 ratio is well above 1).

With ``--train-steps N`` (default 100, about as many steps as the default study's 12
epochs; 0 to skip) the ``as built``, ``trilinear head`` and ``upsampling: trilinear``
networks (the first seed's) are then trained for
``N`` steps on fresh smooth random pairs (the study's loss, Adam, lr ``--lr``), measured
after 0, N/4, N/2 and N steps, and at the end with the offsets forced to zero. With ``--model model.pt`` a trained checkpoint is measured too (as trained, offsets
zero, ``head_up`` channels, stamp share), on the smooth pair or on ``--pair MRI PET MASK``
(model-grid NIfTI files of a study).

About 5 minutes on one core with the default 100 training steps (20 s without). Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_block_candidates.py [--seeds 0 1 2] \\
        [--train-steps 100] [--model results/train/dcfb3d/seed-3407/model.pt \\
        --pair MRI.nii.gz PET.nii.gz MASK.nii.gz]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from fusion3d.evaluation.block_pattern import block_pattern_ratio, line_power
from fusion3d.learned.models.dcfb import DC2Fusion, build_model
from fusion3d.learned.models.layers import DeformableSampler

ROOT = Path(__file__).resolve().parents[1]
GRID = 64
PERIODS = (4, 8)


def smooth_field(rng: np.random.Generator, beta: float = 3.0) -> np.ndarray:
    """White noise with amplitude spectrum ``1/|k|^beta``, scaled to [0, 1]."""
    f = np.fft.fftfreq(GRID)
    k2 = f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2
    noise = rng.standard_normal((GRID,) * 3)
    x = np.fft.ifftn(np.fft.fftn(noise) / np.maximum(k2, GRID**-2.0) ** (beta / 2)).real
    return (x - x.min()) / (x.max() - x.min())


def ball(radius: float = 27.0) -> np.ndarray:
    g = np.indices((GRID,) * 3) - GRID / 2 + 0.5
    return (g**2).sum(0) < radius**2


def smooth_pair(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MRI-like and PET-like smooth volumes, zero outside the ball, and the ball."""
    rng = np.random.default_rng(seed)
    mask = ball()
    mri = smooth_field(rng, 2.5) * mask
    pet = smooth_field(rng, 3.5) * mask
    return mri.astype(np.float32), pet.astype(np.float32), mask


#: Columns: (period, signal) of block_pattern_ratio, each the mean over the three axes.
COLUMNS = tuple((p, s) for p in PERIODS for s in ("gradient", "intensity"))
HEADER = (
    f"{'':29s}"
    + "".join(f"{f'1/{p} {s[:4]}':>11s}" for p, s in COLUMNS)
    + f"{'head_up ch':>12s}{'stamp':>9s}"
)


def ratios(vol: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mean over axes of the ratio for each of :data:`COLUMNS`."""
    return np.array([np.mean(block_pattern_ratio(vol, mask, p, signal=s)) for p, s in COLUMNS])


def fmt(r: np.ndarray) -> str:
    return "".join(f"{v:11.2f}" for v in r)


def coherent_share(vol: np.ndarray, mask: np.ndarray, p: int = 4) -> float:
    """Share of the intensity power at ``1/p`` (mean over axes) in the mean ``p^3`` stamp.

    The stamp is the average, over the blocks wholly inside ``mask``, of each block minus
    its own mean: the part of the pattern that is the same in every block (what a stride-p
    transposed convolution of a constant gives). 1: all of it; near 0: the pattern changes
    from block to block (or there is none).
    """
    n = vol.shape[0] // p
    blocks = vol.reshape(n, p, n, p, n, p).transpose(0, 2, 4, 1, 3, 5)  # (n, n, n, p, p, p)
    inside = mask.reshape(n, p, n, p, n, p).all(axis=(1, 3, 5))
    centred = blocks[inside] - blocks[inside].mean(axis=(1, 2, 3), keepdims=True)
    tile = np.tile(centred.mean(axis=0), (n, n, n))
    shares = [
        line_power(tile, mask, a, [1 / p], signal="intensity")[0]
        / line_power(vol, mask, a, [1 / p], signal="intensity")[0]
        for a in range(3)
    ]
    return float(np.mean(shares))


class TrilinearUp(nn.Module):
    """Trilinear upsampling by ``factor`` then a 3^3 convolution ``cin -> cout``."""

    def __init__(self, cin: int, cout: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=self.factor, mode="trilinear", align_corners=False)
        return self.conv(up)


def zero_offsets(model: nn.Module) -> nn.Module:
    for mod in model.modules():
        if isinstance(mod, DeformableSampler):
            with torch.no_grad():
                mod.offset.weight.zero_()
    return model


def overlapping_embed(model: DC2Fusion) -> DC2Fusion:
    p = model.patch_size
    model.patch_embed = nn.Conv3d(
        model.in_channels, model.embed_dim, 2 * p, stride=p, padding=p // 2
    )
    return model


def trilinear_head(model: DC2Fusion) -> DC2Fusion:
    e = model.embed_dim
    model.head_up = TrilinearUp(2 * e, e // 2, model.patch_size)
    return model


def build(config: dict, seed: int, edit: Callable | None = None, **extra) -> DC2Fusion:
    torch.manual_seed(seed)
    model = build_model({**config, **extra})
    if edit is not None:
        torch.manual_seed(seed + 1000)  # the replacement's own weights, seeded
        model = edit(model)
    return model.eval()


def fuse(model: nn.Module, mri: np.ndarray, pet: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fused volume and ``head_up``'s output channels ``(C, *S)``."""
    seen = {}
    hook = model.head_up.register_forward_hook(lambda m, i, o: seen.setdefault("up", o))
    with torch.no_grad():
        out = model(torch.from_numpy(mri)[None, None], torch.from_numpy(pet)[None, None])
    hook.remove()
    return out[0, 0].numpy().astype(np.float64), seen["up"][0].numpy().astype(np.float64)


def channel_ratio(up: np.ndarray, mask: np.ndarray) -> float:
    """Median over channels of the mean over axes of the 1/4 ratio."""
    return float(np.median([np.nanmean(block_pattern_ratio(c, mask, 4)) for c in up]))


def measure(model: nn.Module, pair) -> tuple[dict, float, np.ndarray]:
    mri, pet, mask = pair
    fused, up = fuse(model, mri, pet)
    return ratios(fused, mask), channel_ratio(up, mask), fused


def report(name: str, runs: list[tuple[dict, float, np.ndarray]], mask: np.ndarray) -> None:
    """One line: median over seeds of each column, head_up channels, stamp share."""
    med = np.median([r[0] for r in runs], axis=0)
    up = np.median([r[1] for r in runs])
    share = np.median([coherent_share(r[2], mask) for r in runs])
    print(f"{name:29s}{fmt(med)}{up:12.2f}{share:9.2f}")


def train(
    model: nn.Module, steps: int, lr: float, seed: int, on_step: Callable[[int, nn.Module], None]
) -> nn.Module:
    """``steps`` Adam steps of the study's loss on fresh smooth pairs; ``on_step(k, model)``
    at ``k = 0`` and after a quarter, a half and all of the steps (model in eval mode)."""
    from fusion3d.learned.losses import FusionLoss

    loss_fn = FusionLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    marks = {0, steps // 4, steps // 2, steps}
    for step in range(steps + 1):
        if step in marks:
            on_step(step, model.eval())
        if step == steps:
            break
        model.train()
        mri, pet, _ = smooth_pair(10_000 + seed * 1000 + step)
        m, p = torch.from_numpy(mri)[None, None], torch.from_numpy(pet)[None, None]
        loss, _ = loss_fn(model(m, p), m, p)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def load_pair(paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from fusion3d.io import load_nifti

    mri, pet, mask = (load_nifti(p)[0] for p in paths)
    return mri.astype(np.float32), pet.astype(np.float32), mask > 0.5


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run every experiment, print one line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-4, help="the study's dcfb3d lr")
    ap.add_argument("--model", type=Path, help="a trained dcfb3d checkpoint to measure too")
    ap.add_argument("--pair", nargs=3, metavar=("MRI", "PET", "MASK"), help="model-grid NIfTI")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    config = yaml.safe_load(args.config.read_text())["models"]["dcfb3d"]
    print(f"models.dcfb3d of {args.config}: {config}; grid {GRID}^3, seeds {args.seeds}")
    print(
        "block_pattern_ratio at 1/4 and 1/8 cycles/voxel of the gradient and of the intensity,\n"
        "mean over axes, median over seeds (~1 = no pattern); head_up ch: its output channels\n"
        "(1/4, gradient, median over channels); stamp: share of the fused volume's intensity\n"
        "power at 1/4 in its mean 4^3 stamp (the same pattern in every block)\n"
    )
    print(HEADER)
    pairs = {s: smooth_pair(s) for s in args.seeds}
    mask = ball()
    inputs = [ratios(pairs[s][k], mask) for s in args.seeds for k in (0, 1)]
    print(f"{'inputs (MRI, PET)':29s}{fmt(np.median(inputs, axis=0))}")

    variants: dict[str, tuple[Callable | None, dict]] = {
        "as built": (None, {}),
        "published variant": (None, {"variant": "published"}),
        "offsets zero": (zero_offsets, {}),
        "overlapping embed": (overlapping_embed, {}),
        "trilinear head": (trilinear_head, {}),
        "upsampling: trilinear": (None, {"upsampling": "trilinear"}),
    }
    for name, (edit, extra) in variants.items():
        runs = [measure(build(config, s, edit, **extra), pairs[s]) for s in args.seeds]
        report(name, runs, mask)

    if args.train_steps > 0:
        s = args.seeds[0]
        print(f"\ntraining (Adam lr {args.lr}, seed {s}, fresh smooth pairs), after k steps:")
        for name in ("as built", "trilinear head", "upsampling: trilinear"):
            edit, extra = variants[name]
            t0 = time.perf_counter()

            def show(k: int, model: nn.Module, name: str = name) -> None:
                runs = [measure(model, pairs[t]) for t in args.seeds]
                report(f"{name}, k={k}", runs, mask)

            model = train(build(config, s, edit, **extra), args.train_steps, args.lr, s, show)
            runs = [measure(zero_offsets(copy.deepcopy(model)), pairs[t]) for t in args.seeds]
            report("  and offsets zero", runs, mask)
            print(f"{'':29s}({time.perf_counter() - t0:.0f} s)")

    if args.model:
        from fusion3d.learned.inference import load_model

        model = load_model(args.model, "cpu", method="dcfb3d").eval()
        pair = load_pair(args.pair) if args.pair else pairs[args.seeds[0]]
        where = "the given pair" if args.pair else "the smooth pair"
        print(f"\n{args.model} on {where}:")
        if args.pair:
            print(f"{'input MRI':29s}{fmt(ratios(pair[0], pair[2]))}")
            print(f"{'input PET':29s}{fmt(ratios(pair[1], pair[2]))}")
        report("trained model", [measure(model, pair)], pair[2])
        report("  offsets zero", [measure(zero_offsets(copy.deepcopy(model)), pair)], pair[2])


if __name__ == "__main__":
    main()
