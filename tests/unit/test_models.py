"""Tests for fusion3d.models: window partition, deformable sampling, DCFB block, DC2Fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusion3d.models import DC2Fusion, build_model, l1nw_fusion
from fusion3d.models.layers import (
    DCFBBlock,
    DeformableSampler,
    reference_grid,
    window_partition,
    window_reverse,
)

torch.set_num_threads(1)
TINY = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), patch_size=2, window_size=2)


@pytest.mark.parametrize(
    ("spatial", "w"), [((4, 6, 8), 2), ((3, 9, 6), 3), ((6, 10), 2), ((9, 3), 3), ((5, 7, 3), 1)]
)
def test_window_partition_roundtrip(spatial, w):
    x = torch.randn(2, *spatial, 5)
    win = window_partition(x, w)
    n_win = 1
    for s in spatial:
        n_win *= s // w
    assert win.shape == (2 * n_win, w ** len(spatial), 5)
    # the first window is the corner block, flattened row-major
    corner = x[(0,) + tuple(slice(0, w) for _ in spatial)].reshape(-1, 5)
    assert torch.equal(win[0], corner)
    assert torch.equal(window_reverse(win, w, 2, tuple(spatial)), x)


@pytest.mark.parametrize("spatial", [(5, 4, 3), (7, 6), (1, 4, 4)])
def test_reference_grid_is_identity(spatial):
    y = torch.randn(2, 3, *spatial)
    grid = reference_grid(spatial).expand(2, *spatial, len(spatial))
    out = F.grid_sample(y, grid, mode="bilinear", align_corners=True)
    assert torch.allclose(out, y, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sampler_constant_offset_shifts_last_axis(spatial_dims, monkeypatch):
    spatial = (4, 5, 6)[-spatial_dims:]
    dim = 4
    sampler = DeformableSampler(dim, spatial_dims)
    y = torch.randn(1, *spatial, dim)
    off = torch.zeros(1, *spatial, spatial_dims)
    off[..., -1] = 1.0  # +1 voxel along the last axis (W)
    monkeypatch.setattr(sampler, "offsets", lambda x, yy: off)
    y_s, _ = sampler(torch.zeros_like(y), y)
    y_cf = y.movedim(-1, 1)
    # y_s[..., i] == y[..., i + 1]; the last column is clamped to the border
    assert torch.allclose(y_s[..., :-1], y_cf[..., 1:], atol=1e-5)
    assert torch.allclose(y_s[..., -1], y_cf[..., -1], atol=1e-5)


def test_sampler_offsets_bounded():
    sampler = DeformableSampler(4, 3)
    x = torch.randn(1, 4, 4, 4, 4) * 100
    off = sampler.offsets(x, x)
    assert off.shape == (1, 4, 4, 4, 3)
    assert off.abs().max() <= 1.0


@pytest.mark.parametrize(
    ("spatial_dims", "spatial", "dim", "heads", "w"),
    [(3, (2, 4, 6), 8, 2, 2), (3, (3, 5, 7), 6, 3, 1), (2, (6, 10), 8, 4, 2), (2, (9, 3), 4, 1, 3)],
)
def test_dcfb_block_shapes(spatial_dims, spatial, dim, heads, w):
    blk = DCFBBlock(dim, heads, w, spatial_dims=spatial_dims, drop_path=0.1)
    x, y = torch.randn(2, *spatial, dim), torch.randn(2, *spatial, dim)
    out = blk(x, y)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_dcfb_block_rejects_bad_input():
    with pytest.raises(ValueError, match="num_heads"):
        DCFBBlock(8, 3, 2)
    with pytest.raises(ValueError, match="spatial_dims"):
        DCFBBlock(8, 2, 2, spatial_dims=1)
    blk = DCFBBlock(8, 2, 2)
    with pytest.raises(ValueError, match="divisible"):
        blk(torch.randn(1, 3, 4, 4, 8), torch.randn(1, 3, 4, 4, 8))


@pytest.mark.parametrize(
    ("spatial_dims", "shape", "cfg"),
    [
        (3, (1, 1, 16, 16, 16), TINY),
        (3, (2, 1, 16, 32, 48), TINY),
        (2, (3, 1, 32, 48), TINY),
        (2, (2, 1, 16, 16), dict(TINY, depths=(1, 1, 1, 1), num_heads=(1, 2, 1, 2), window_size=1)),
    ],
)
def test_model_shapes(spatial_dims, shape, cfg):
    model = DC2Fusion(spatial_dims=spatial_dims, **cfg)
    mri, pet = torch.rand(shape), torch.rand(shape)
    out = model(mri, pet)
    assert out.shape == shape
    f1, f2 = model.forward_streams(mri, pet)
    assert f1.shape == f2.shape == shape


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(spatial_dims=4),
        dict(depths=(2, 2), num_heads=(3, 6, 12)),
        dict(embed_dim=96, num_heads=(5, 6, 12, 24)),
        dict(embed_dim=7),
        dict(window_size=0),
        dict(patch_size=0),
        dict(drop_path_rate=1.0),
        dict(mlp_ratio=0),
        dict(depths=()),
        dict(depths=(2, 0, 6, 2)),
    ],
)
def test_model_bad_args_raise(kwargs):
    with pytest.raises(ValueError):
        DC2Fusion(**kwargs)


def test_build_model_unknown_key():
    with pytest.raises(ValueError, match="unknown key"):
        build_model({"embed_dim": 8, "depth": (1,)})
    assert isinstance(build_model(dict(TINY)), DC2Fusion)


def test_forward_rejects_bad_grid():
    model = DC2Fusion(**TINY)  # divisor 2 * 4 * 2 = 16
    assert model.size_divisor == 16
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.rand(1, 1, 24, 16, 16), torch.rand(1, 1, 24, 16, 16))
    with pytest.raises(ValueError, match="differ"):
        model(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 32, 16, 16))
    with pytest.raises(ValueError, match="expected"):
        model(torch.rand(1, 16, 16, 16), torch.rand(1, 16, 16, 16))


def test_offsets_receive_gradients():
    torch.manual_seed(0)
    model = DC2Fusion(**TINY)
    out = model(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16))
    out.mean().backward()
    for stage in (model.encoder[0], model.decoder[1]):
        grad = stage.blocks[0].sampler.offset.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_softmax_switch_changes_output():
    torch.manual_seed(0)
    a = DC2Fusion(**TINY, attention_softmax=True).eval()
    b = DC2Fusion(**TINY, attention_softmax=False).eval()
    b.load_state_dict(a.state_dict())
    x, y = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    assert not torch.allclose(a(x, y), b(x, y))


def test_no_softmax_attention_formula():
    blk = DCFBBlock(4, 2, 2, spatial_dims=2, attention_softmax=False)
    q, k, v = (torch.randn(1, 2, 2, 4) for _ in range(3))  # one 2x2 window
    out = blk._attention(q, k, v)
    qh = q.reshape(1, 4, 2, 2).transpose(1, 2)  # (1, heads, N, hd)
    kh = k.reshape(1, 4, 2, 2).transpose(1, 2)
    vh = v.reshape(1, 4, 2, 2).transpose(1, 2)
    expect = ((qh / 2**0.5) @ kh.transpose(-2, -1) @ vh).transpose(1, 2).reshape(1, 2, 2, 4)
    assert torch.allclose(out, expect, atol=1e-6)
    blk.attention_softmax = True
    soft = torch.softmax((qh / 2**0.5) @ kh.transpose(-2, -1), dim=-1) @ vh
    assert torch.allclose(
        blk._attention(q, k, v), soft.transpose(1, 2).reshape(1, 2, 2, 4), atol=1e-6
    )


def test_l1nw_formula():
    f1 = torch.tensor([[[1.0, -2.0]]])  # |f1|_1 = 3
    f2 = torch.tensor([[[0.5, 0.5]]])  # |f2|_1 = 1
    out = l1nw_fusion(f1, f2)
    assert torch.allclose(out, torch.tensor([[[3.5, -5.5]]]))
    # per sample in a batch
    both = l1nw_fusion(torch.cat([f1, 2 * f1]), torch.cat([f2, f2]))
    assert torch.allclose(both[1], 6 * 2 * f1[0] + f2[0])


def test_paper_size_parameter_count():
    n = sum(p.numel() for p in DC2Fusion().parameters())
    print(f"DC2Fusion paper sizes: {n / 1e6:.3f} M parameters")
    # published: 98.75 M incl. an unused Linear(1536 -> 768) (1,180,416 params); see report
    assert abs(n + 1_180_416 - 98.75e6) / 98.75e6 < 0.002


@pytest.mark.parametrize(("spatial_dims", "size"), [(3, 4), (3, 16), (2, 8), (2, 64)])
def test_pair_conv_paths_match_grouped_conv(spatial_dims, size):
    blk = DCFBBlock(8, 2, 2, spatial_dims=spatial_dims)
    pair = torch.randn(1, *([size] * spatial_dims), 16)
    ref = blk.conv_mix(pair.movedim(-1, 1).contiguous())
    assert torch.allclose(blk._pair_conv(pair), ref, atol=1e-4)
