"""Benchmark DC2Fusion: parameter count, training step time, inference time, peak RSS.

Example (the published model's reference figures were taken like this, 64^3, 2 cores)::

    python benchmarks/bench_network.py --spatial-dims 3 --grid 64 --embed-dim 96 \
        --depths 2 2 6 2 --heads 3 6 12 24 --steps 4 --threads 2
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    """Parse the CLI, run the benchmark, print one line per figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spatial-dims", type=int, default=3, choices=(2, 3))
    ap.add_argument("--grid", type=int, default=64, help="edge of the cubic / square input")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--window-size", type=int, default=2)
    ap.add_argument("--embed-dim", type=int, default=96)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 2, 6, 2])
    ap.add_argument("--heads", type=int, nargs="+", default=[3, 6, 12, 24])
    ap.add_argument("--no-softmax", action="store_true", help="published attention (no softmax)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from fusion3d.learned.losses import FusionLoss
    from fusion3d.learned.models import DC2Fusion

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DC2Fusion(
        spatial_dims=args.spatial_dims,
        patch_size=args.patch_size,
        embed_dim=args.embed_dim,
        depths=tuple(args.depths),
        num_heads=tuple(args.heads),
        window_size=args.window_size,
        attention_softmax=not args.no_softmax,
    )
    n_params = sum(p.numel() for p in model.parameters())
    shape = (args.batch, 1) + (args.grid,) * args.spatial_dims
    mri, pet = torch.rand(shape), torch.rand(shape)
    loss_fn = FusionLoss(args.spatial_dims)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    cpu_times: list[float] = []

    def train_step() -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = loss_fn(model(mri, pet), mri, pet)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        cpu_times.append(time.process_time() - c0)
        return time.perf_counter() - t0

    model.train()
    train_step()  # warm-up
    train_times = [train_step() for _ in range(args.steps)]
    cpu_times = cpu_times[1:]
    model.eval()
    infer_times = []
    with torch.inference_mode():
        model(mri, pet)  # warm-up
        for _ in range(args.steps):
            t0 = time.perf_counter()
            model(mri, pet)
            infer_times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"config: {vars(args)}")
    print(f"parameters: {n_params} ({n_params / 1e6:.3f} M)")
    print(
        f"train step: median {statistics.median(train_times):.3f} s "
        f"(min {min(train_times):.3f}, max {max(train_times):.3f}, n={len(train_times)}); "
        f"CPU time median {statistics.median(cpu_times):.3f} s"
    )
    print(f"inference: median {statistics.median(infer_times):.3f} s (n={len(infer_times)})")
    print(f"peak RSS: {peak_mb:.0f} MB")
    print(f"load average (1, 5, 15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
