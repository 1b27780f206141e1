"""DC2Fusion at the paper's scale on a GPU: step time, peak memory, data wait, projected study time.

At the sizes of ``config/adni.yaml`` (128^3, embed 96, depths 2-2-6-2: 97.6 M parameters,
batch 1) it prints, for each throughput variant (fp32 / bf16 autocast, with and without
``torch.compile``, with and without channels-last):

- the median training step time (forward, loss, backward, Adam; fused Adam unless
  ``--no-fused-adam``) and the peak GPU memory allocated by torch;
- the median inference time per subject;

then, with the fastest bf16 variant, how long a training step waits for data from the
real streaming DataLoader (``fusion3d.learned.loader``: memory-mapped cache, augmentation
in ``--workers`` worker processes, pinned memory, non-blocking copies) on a synthetic
cohort written to a temporary folder; and the projections: the paper's 500-epoch training
(594 subjects) on 1 and ``--gpus`` GPUs, and inference on 660 subjects. The N-GPU figure
assumes ideal data-parallel scaling (``ceil(594 / N)`` steps per epoch at the one-GPU
step time): a bound, not a measurement.

Without a usable CUDA device it says what it found and exits 0; ``--smoke`` then runs the
same code on the CPU with a tiny network (a check of the code path, not a figure)::

    .venv/bin/python benchmarks/bench_gpu.py                      # on a GPU machine
    .venv/bin/python benchmarks/bench_gpu.py --gpus 4 --no-compile
    .venv/bin/python benchmarks/bench_gpu.py --smoke              # anywhere

``--cpu`` measures the switches that mean something on a CPU (channels-last; fused Adam
against ``--no-fused-adam``) for the network of ``--configfile`` at ``--grid``::

    .venv/bin/python benchmarks/bench_gpu.py --cpu --configfile config/config.yaml --grid 64
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from fusion3d.io import save_nifti
from fusion3d.learned.data import augment_pair
from fusion3d.learned.devices import (
    apply_channels_last,
    autocast_context,
    cuda_report,
    make_adam,
    maybe_compile,
    memory_format,
    to_device,
)
from fusion3d.learned.loader import EpochSampler, PairDataset, make_loader, prepare_sources
from fusion3d.learned.losses import FusionLoss
from fusion3d.learned.models import DC2Fusion

ROOT = Path(__file__).resolve().parents[1]
SMOKE_MODEL = dict(
    spatial_dims=3, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 1, 1], patch_size=2, window_size=2
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default=str(ROOT / "config" / "adni.yaml"))
    ap.add_argument("--network", default="dcfb3d", help="models.<network> of the config")
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    ap.add_argument("--no-fused-adam", action="store_true")
    ap.add_argument("--gpus", type=int, default=4, help="N of the N-GPU projection")
    ap.add_argument("--workers", type=int, default=6, help="DataLoader workers")
    ap.add_argument("--data-subjects", type=int, default=8, help="synthetic cohort size")
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--train-subjects", type=int, default=594)
    ap.add_argument("--infer-subjects", type=int, default=660)
    ap.add_argument("--smoke", action="store_true", help="without CUDA: tiny CPU run")
    ap.add_argument(
        "--cpu", action="store_true", help="measure channels-last (and Adam) on the CPU instead"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads with --cpu")
    return ap.parse_args(argv)


def model_config(args: argparse.Namespace) -> dict:
    """The network's constructor arguments (the config's, or the tiny smoke network)."""
    if args.smoke:
        return dict(SMOKE_MODEL)
    cfg = yaml.safe_load(Path(args.configfile).read_text())
    try:
        return dict(cfg["models"][args.network])
    except KeyError as exc:
        raise SystemExit(f"{args.configfile}: no key models.{args.network}") from exc


def sync(device: torch.device) -> None:
    """Wait for the device (timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(mcfg: dict, device: torch.device, channels_last: bool, compiled: bool, fused: bool):
    """Model (channels-last, compiled as asked), its loss and optimizer, on ``device``."""
    torch.manual_seed(0)
    model = DC2Fusion(**mcfg).to(device)
    apply_channels_last(model, model.spatial_dims, channels_last)
    opt = make_adam(model.parameters(), 1e-4, fused=fused, device=device)
    loss_fn = FusionLoss(model.spatial_dims).to(device)
    return model, maybe_compile(model, compiled), loss_fn, opt


def train_step(run, loss_fn, opt, mri, pet, device, amp) -> float:
    """One optimisation step; returns its loss (synchronised)."""
    with autocast_context(device, amp):
        fused = run(mri, pet)
    loss, _ = loss_fn(fused.float(), mri, pet)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def timed(fn, n: int, device: torch.device) -> list[float]:
    """Wall times of ``n`` calls of ``fn``, each synchronised with the device."""
    times = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def bench_variant(args, mcfg, device, amp, compiled, channels_last) -> dict:
    """Step time, peak memory and inference time of one throughput variant."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, run, loss_fn, opt = build(mcfg, device, channels_last, compiled, not args.no_fused_adam)
    fmt = memory_format(model.spatial_dims, channels_last)
    shape = (1, 1) + (args.grid,) * model.spatial_dims
    mri = torch.rand(shape, device=device).contiguous(memory_format=fmt)
    pet = torch.rand(shape, device=device).contiguous(memory_format=fmt)
    model.train()
    step = functools.partial(train_step, run, loss_fn, opt, mri, pet, device, amp)
    warm = timed(step, args.warmup, device)
    times = timed(step, args.steps, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    model.eval()
    with torch.inference_mode():
        infer = functools.partial(_infer, run, mri, pet, device, amp)
        timed(infer, args.warmup, device)
        infer_times = timed(infer, args.steps, device)
    n_params = sum(p.numel() for p in model.parameters())
    del model, run, opt
    return {
        "variant": f"{'bf16' if amp == 'bf16' else 'fp32'}"
        f"{' +compile' if compiled else ''}{' +channels_last' if channels_last else ''}",
        "params": n_params,
        "first_steps_s": sum(warm),
        "step_s": statistics.median(times),
        "peak_gib": peak,
        "infer_s": statistics.median(infer_times),
        "amp": amp,
        "compiled": compiled,
        "channels_last": channels_last,
    }


def _infer(run, mri, pet, device, amp) -> None:
    """One inference forward pass."""
    with autocast_context(device, amp):
        run(mri, pet)


def synthetic_cohort(folder: Path, n: int, grid: int) -> list[tuple[str, Path, Path]]:
    """``n`` random model-grid pairs (a ball of noise) written as NIfTI."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:grid, :grid, :grid] / grid
    ball = ((z - 0.5) ** 2 + (y - 0.5) ** 2 + (x - 0.5) ** 2) < 0.16
    items = []
    for i in range(n):
        mri = (ball * rng.random(ball.shape)).astype(np.float32)
        pet = (ball * rng.random(ball.shape)).astype(np.float32)
        m = save_nifti(mri, np.eye(4), folder / f"s{i}_mri.nii.gz", dtype=np.float32)
        p = save_nifti(pet, np.eye(4), folder / f"s{i}_pet.nii.gz", dtype=np.float32)
        items.append((f"s{i}", m, p))
    return items


def bench_data_wait(args, mcfg, device, best: dict) -> dict:
    """Train two epochs from the real loader; time each step's wait for its batch."""
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        items = synthetic_cohort(Path(tmp), args.data_subjects, args.grid)
        t0 = time.perf_counter()
        sources = prepare_sources(items, Path(tmp) / "cache")
        cache_s = time.perf_counter() - t0
        dataset = PairDataset(sources, seed=3407, augment=augment_pair)
        sampler = EpochSampler(len(dataset), seed=3407)
        loader = make_loader(
            dataset, sampler, batch_size=1, num_workers=args.workers, device=device, seed=3407
        )
        model, run, loss_fn, opt = build(
            mcfg, device, best["channels_last"], best["compiled"], not args.no_fused_adam
        )
        fmt = memory_format(model.spatial_dims, best["channels_last"])
        waits, steps = [], []
        for epoch in (1, 2):  # the first epoch starts the workers
            sampler.set_epoch(epoch)
            it = iter(loader)
            while True:
                t0 = time.perf_counter()
                try:
                    mri, pet = next(it)
                except StopIteration:
                    break
                mri = to_device(mri, device).contiguous(memory_format=fmt)
                pet = to_device(pet, device).contiguous(memory_format=fmt)
                t1 = time.perf_counter()
                train_step(run, loss_fn, opt, mri, pet, device, best["amp"])
                sync(device)
                if epoch == 2:
                    waits.append(t1 - t0)
                    steps.append(time.perf_counter() - t0)
    return {
        "cache_s_per_subject": cache_s / args.data_subjects,
        "wait_s": statistics.median(waits),
        "step_s": statistics.median(steps),
        "wait_fraction": sum(waits) / sum(steps),
    }


def projections(args, best: dict) -> list[str]:
    """The paper's training on 1 and N GPUs and inference on all subjects, as lines."""
    lines = []
    for n in sorted({1, args.gpus}):
        steps = args.epochs * math.ceil(args.train_subjects / n)
        hours = steps * best["step_s"] / 3600
        lines.append(
            f"projected training, {args.epochs} epochs x {args.train_subjects} subjects on "
            f"{n} GPU(s) ({best['variant']}): {steps} steps x {best['step_s']:.3f} s = "
            f"{hours:.1f} h{' (ideal scaling)' if n > 1 else ''} (validation not included)"
        )
    infer_min = args.infer_subjects * best["infer_s"] / 60
    lines.append(
        f"projected inference, {args.infer_subjects} subjects on 1 GPU ({best['variant']}): "
        f"{infer_min:.1f} min (forward passes only)"
    )
    return lines


def variants(args) -> list[tuple[str, bool, bool]]:
    """``(amp, compile, channels_last)`` to measure."""
    if args.smoke:  # each code path once: fp32, and bf16 with channels-last
        return [("off", False, False), ("bf16", False, True)]
    if args.cpu:  # the switches that mean something on a CPU
        return [("off", False, False), ("off", False, True)]
    compiles = (False,) if args.no_compile else (False, True)
    return [(amp, c, cl) for amp in ("off", "bf16") for c in compiles for cl in (False, True)]


def pick_device(args) -> torch.device | None:
    """CUDA when usable (unless ``--cpu``); else the CPU for ``--smoke``/``--cpu``; else None."""
    info = cuda_report()
    if info["available"] and not args.cpu:
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
        return device
    if not args.cpu:
        print(f"no usable CUDA device: {info}; the GPU figures are not measured here")
    if args.smoke:
        args.grid, args.steps, args.warmup = 16, 1, 1
        args.workers, args.data_subjects = min(args.workers, 2), 2
        torch.set_num_threads(1)
        print("--smoke: a tiny network on the CPU (checks the code path; not a figure)")
        return torch.device("cpu")
    if args.cpu:
        torch.set_num_threads(args.threads)
        print(f"--cpu: the CPU with {args.threads} threads; torch {torch.__version__}")
        return torch.device("cpu")
    return None


def run_variants(args, mcfg: dict, device: torch.device) -> list[dict]:
    """Measure every variant (a failing compiled variant is reported and skipped)."""
    results = []
    for amp, compiled, channels_last in variants(args):
        try:
            results.append(bench_variant(args, mcfg, device, amp, compiled, channels_last))
        except Exception as exc:  # e.g. torch.compile failing on this model: report, go on
            if not compiled:
                raise
            print(f"{amp} +compile{' +channels_last' if channels_last else ''}: failed ({exc!r})")
    adam = "Adam" if args.no_fused_adam else "fused Adam"
    print(f"network: {mcfg} ({results[0]['params'] / 1e6:.2f} M parameters), grid {args.grid}")
    for r in results:
        peak = "n/a (CPU)" if math.isnan(r["peak_gib"]) else f"{r['peak_gib']:.2f} GiB"
        print(
            f"{r['variant']:<26} train step ({adam}) {r['step_s']:.3f} s (first {args.warmup}: "
            f"{r['first_steps_s']:.1f} s), peak GPU memory {peak}, "
            f"inference {r['infer_s']:.3f} s/subject"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or say why not) and print one line per figure."""
    args = parse_args(argv)
    device = pick_device(args)
    if device is None:
        return 0
    mcfg = model_config(args)
    results = run_variants(args, mcfg, device)
    if args.cpu:
        print(f"load average (1, 5, 15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
        return 0
    best = min((r for r in results if r["amp"] == "bf16"), key=lambda r: r["step_s"])
    data = bench_data_wait(args, mcfg, device, best)
    print(
        f"data loading ({args.workers} workers, {best['variant']}): step waits "
        f"{data['wait_s'] * 1000:.1f} ms for its batch (median; {100 * data['wait_fraction']:.1f}% "
        f"of the time), step {data['step_s']:.3f} s; cache written at "
        f"{data['cache_s_per_subject']:.2f} s/subject"
    )
    for line in projections(args, best):
        print(f"{'[smoke, not a figure] ' if args.smoke else ''}{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
