"""Tests for fusion3d.evaluation.block_pattern: the p-periodic pattern ratio."""

from __future__ import annotations

import numpy as np
import pytest

from fusion3d.evaluation.block_pattern import block_pattern_ratio, high_pass, line_power

N = 64


def smooth_volume(seed: int, beta: float = 3.0) -> np.ndarray:
    """A smooth random 64^3 volume in [0, 1]: white noise with amplitude spectrum 1/|k|^beta."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(N)
    k2 = f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2
    x = np.fft.ifftn(
        np.fft.fftn(rng.standard_normal((N, N, N))) / np.maximum(k2, N**-2) ** (beta / 2)
    )
    x = x.real
    return (x - x.min()) / (x.max() - x.min())


def ball_mask(radius: float = 26.0) -> np.ndarray:
    g = np.indices((N, N, N)) - N / 2 + 0.5
    return (g**2).sum(0) < radius**2


def blocks(seed: int, shift: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Random levels in [0, 1], constant over 4x4x4 blocks, the grid shifted by ``shift``."""
    rng = np.random.default_rng(seed + 1000)
    b = np.kron(rng.uniform(0, 1, (N // 4,) * 3), np.ones((4, 4, 4)))
    return np.roll(b, shift, axis=(0, 1, 2))


SEEDS = range(4)


@pytest.mark.parametrize("seed", SEEDS)
def test_smooth_volume_ratio_near_one(seed):
    # observed 0.86..1.13 over 10 seeds; the bound leaves room
    r = block_pattern_ratio(smooth_volume(seed), ball_mask())
    assert r.shape == (3,)
    assert np.all((r > 0.75) & (r < 1.3)), r


@pytest.mark.parametrize("seed", SEEDS)
def test_block_pattern_gives_large_ratio(seed):
    # 10 % of 4x4x4 blocks mixed in: observed 5.2..10.5 over 10 seeds
    v = smooth_volume(seed)
    r = block_pattern_ratio(0.9 * v + 0.1 * blocks(seed), ball_mask())
    assert np.all(r > 3.0), r
    # 5 % still stands out from the smooth volume alone (observed 2.4..6.0)
    r5 = block_pattern_ratio(0.95 * v + 0.05 * blocks(seed), ball_mask())
    assert np.all(r5 > 1.8), r5


def test_periodic_kernel_pattern_gives_large_ratio():
    # the same 4x4x4 pattern in every block: what a stride-4 transposed conv of a constant gives
    v = smooth_volume(0)
    tile = np.tile(np.random.default_rng(7).uniform(0, 1, (4, 4, 4)), (N // 4,) * 3)
    r = block_pattern_ratio(0.95 * v + 0.05 * tile, ball_mask())
    assert np.all(r > 4.0), r
    assert np.all(
        block_pattern_ratio(0.95 * v + 0.05 * tile, ball_mask(), signal="intensity") > 2.5
    )


@pytest.mark.parametrize("shift", [(1, 2, 3), (2, 2, 2), (3, 0, 1)])
def test_phase_of_blocks_does_not_matter(shift):
    v, mask = smooth_volume(1), ball_mask()
    r0 = block_pattern_ratio(0.9 * v + 0.1 * blocks(1), mask)
    r1 = block_pattern_ratio(0.9 * v + 0.1 * blocks(1, shift), mask)
    np.testing.assert_allclose(r1, r0, rtol=0.3)  # observed within 21 %


def test_scale_and_offset_do_not_matter():
    v, mask = 0.9 * smooth_volume(2) + 0.1 * blocks(2), ball_mask()
    np.testing.assert_allclose(block_pattern_ratio(30 * v + 7, mask), block_pattern_ratio(v, mask))


def test_other_period_and_harmonic():
    v, mask = smooth_volume(3), ball_mask()
    b8 = np.kron(np.random.default_rng(3).uniform(0, 1, (8, 8, 8)), np.ones((8, 8, 8)))
    # fewer block edges per voxel than 4-voxel blocks: observed 2.5..5.5 over 10 seeds
    assert np.all(block_pattern_ratio(0.9 * v + 0.1 * b8, mask, patch_size=8) > 1.8)
    r2 = block_pattern_ratio(0.9 * v + 0.1 * blocks(3), mask, harmonic=2)  # Nyquist
    assert np.all(r2 > 3.0), r2


def test_2d_image():
    v = smooth_volume(0)[:, :, 32]
    mask = ball_mask()[:, :, 32]
    assert block_pattern_ratio(v, mask).shape == (2,)


def test_constant_volume_gives_nan():
    assert np.isnan(block_pattern_ratio(np.ones((N, N, N)), ball_mask())).all()


def test_line_power_of_a_pure_tone():
    n = np.arange(N)
    vol = np.broadcast_to(np.cos(2 * np.pi * n / 4), (8, 8, N)).copy()
    p = line_power(vol, np.ones_like(vol), 2, [0.25, 0.15], signal="intensity")
    assert p[0] > 1e3 * p[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": np.ones((N, N, N - 1))}, "mask shape"),
        ({"mask": np.zeros((N, N, N))}, "mask is empty"),
        ({"volume": np.ones((N, N))[..., None, None]}, "2D or 3D"),
        ({"volume": np.full((N, N, N), np.nan)}, "non-finite"),
        ({"patch_size": 1}, "patch_size"),
        ({"patch_size": 4.0}, "patch_size"),
        ({"harmonic": 3}, "harmonic"),
        ({"signal": "phase"}, "signal"),
        ({"offsets": ()}, "offsets"),
        ({"offsets": (3, 3)}, "offsets"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"volume": np.ones((N, N, N)), "mask": ball_mask()}
    extra = {k: v for k, v in kwargs.items() if k not in args}
    args.update({k: v for k, v in kwargs.items() if k in args})
    with pytest.raises(ValueError, match=match):
        block_pattern_ratio(args["volume"], args["mask"], **extra)


def test_axis_too_short_raises():
    with pytest.raises(ValueError, match="too short"):
        block_pattern_ratio(np.random.default_rng(0).random((64, 64, 12)), np.ones((64, 64, 12)))


def test_high_pass_keeps_period_removes_smooth():
    n = np.arange(64, dtype=float)
    ramp = np.broadcast_to(0.1 * n, (64, 64))
    tone = np.broadcast_to(np.array([1.0, -1.0, 1.0, -1.0] * 16), (64, 64))
    hp = high_pass(ramp + tone, 4)
    inner = (slice(4, -4), slice(4, -4))
    # an even box is centred half a voxel off: the ramp leaves a constant 0.05
    np.testing.assert_allclose(hp[inner] - tone[inner], 0.05, atol=1e-9)
    with pytest.raises(ValueError, match="size"):
        high_pass(ramp, 0)
