"""Tests for fusion3d.learned.models: window partition, deformable sampling, DCFB block, DC2Fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion3d.learned.models import DC2Fusion, build_model, l1nw_fusion
from fusion3d.learned.models.dcfb import SWITCHES, VARIANTS
from fusion3d.learned.models.layers import (
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


# --- variant, single switches, init_args ---------------------------------------------


def _plain(value) -> bool:
    """Only str/int/float/bool and lists of them (torch weights_only-safe, YAML-safe)."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, str | int | float | bool)


@pytest.mark.parametrize("variant", ["fixed", "published"])
def test_init_args_rebuild_identical_network(variant):
    import inspect

    torch.manual_seed(0)
    a = DC2Fusion(**TINY, variant=variant, mlp_ratio=2, drop_path_rate=0).eval()
    args = a.init_args
    assert set(args) == set(inspect.signature(DC2Fusion.__init__).parameters) - {"self"}
    assert all(_plain(v) for v in args.values()) and isinstance(args["depths"], list)
    assert args["variant"] == variant and args["mlp_ratio"] == 2.0
    assert all(args[k] == v for k, v in VARIANTS[variant].items())  # variant expanded
    args["depths"].append(9)  # a copy: the model's own record is unchanged
    assert a.init_args["depths"] == [1, 1, 1]
    b = DC2Fusion(**a.init_args).eval()
    assert b.init_args == a.init_args
    b.load_state_dict(a.state_dict())  # same keys and shapes
    x, y = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    assert torch.equal(a(x, y), b(x, y))


def test_init_args_survive_weights_only_load(tmp_path):
    model = DC2Fusion(**TINY, variant="published", sampling_padding="border")
    torch.save({"config": model.init_args}, tmp_path / "c.pt")
    cfg = torch.load(tmp_path / "c.pt", weights_only=True)["config"]
    assert DC2Fusion(**cfg).init_args == model.init_args


def test_variant_sets_switches_and_single_switch_overrides():
    fixed, published = DC2Fusion(**TINY), DC2Fusion(**TINY, variant="published")
    assert fixed.switches == VARIANTS["fixed"] and published.switches == VARIANTS["published"]
    assert VARIANTS["fixed"].keys() == VARIANTS["published"].keys() == SWITCHES.keys()
    assert all(VARIANTS["fixed"][k] != VARIANTS["published"][k] for k in SWITCHES)
    blk = published.encoder[0].blocks[0]
    assert blk.attention_softmax is False and blk.sampler.padding == "zeros"
    ablation = DC2Fusion(**TINY, variant="published", attention_softmax=True)
    assert ablation.init_args["attention_softmax"] is True
    assert ablation.init_args["sampling_padding"] == "zeros"  # the rest follows the variant
    assert ablation.encoder[0].blocks[0].attention_softmax is True


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(variant="paper"), "variant"),
        (dict(sampling_padding="reflection"), "sampling_padding"),
        (dict(attention_proj="yes"), "attention_proj"),
        (dict(batchnorm_eps=96), "batchnorm_eps"),
    ],
)
def test_bad_switch_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DC2Fusion(**TINY, **kwargs)


def test_build_model_accepts_variant_and_switches():
    model = build_model(dict(TINY, variant="published", conv_pairing="interleaved"))
    assert model.init_args["conv_pairing"] == "interleaved"
    assert model.init_args["offset_scale"] == "published"
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['varient'\]"):
        build_model(dict(TINY, varient="published"))


@pytest.mark.parametrize(("spatial_dims", "shape"), [(3, (16, 16, 16)), (2, (16, 32))])
def test_trilinear_upsampling_builds_and_fuses(spatial_dims, shape):
    torch.manual_seed(0)
    model = DC2Fusion(**TINY, spatial_dims=spatial_dims, upsampling="trilinear").eval()
    assert model.init_args["upsampling"] == "trilinear"
    assert not any(isinstance(m, nn.modules.conv._ConvTransposeNd) for m in model.modules())
    x, y = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    assert model(x, y).shape == (1, 1, *shape)
    again = DC2Fusion(**model.init_args).eval()
    again.load_state_dict(model.state_dict())
    assert torch.equal(again(x, y), model(x, y))


def test_upsampling_default_is_the_published_transposed_conv():
    # the default builds the same modules, in the same order, as before the switch existed
    torch.manual_seed(0)
    a = DC2Fusion(**TINY)
    torch.manual_seed(0)
    b = DC2Fusion(**TINY, upsampling="transposed")
    assert a.init_args["upsampling"] == "transposed" and a.init_args == b.init_args
    ups = [m for m in a.modules() if isinstance(m, nn.modules.conv._ConvTransposeNd)]
    # two decoder upsamplers and head_up (kernel = stride = patch_size, 2 in TINY)
    assert [(m.kernel_size, m.stride) for m in ups] == [((2, 2, 2), (2, 2, 2))] * 3
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    for variant in VARIANTS:  # not part of variant
        assert DC2Fusion(**TINY, variant=variant).init_args["upsampling"] == "transposed"
    with pytest.raises(ValueError, match="upsampling"):
        DC2Fusion(**TINY, upsampling="nearest")


def test_published_variant_parameter_count():
    # Counted on the published model (models/DC2Fusion.py, embed_dim 96 and 12, after the
    # first forward pass materialises LazyBatchNorm3d): 98,751,290 and 2,290,560. It holds
    # the unused bottleneck Linear(8E*2 -> 8E): 1,180,416 and 18,528 parameters.
    for embed_dim, published, unused in ((96, 98_751_290, 1_180_416), (12, 2_290_560, 18_528)):
        model = DC2Fusion(embed_dim=embed_dim, variant="published")
        assert sum(p.numel() for p in model.parameters()) + unused == published


# --- each switch changes the forward pass as documented -------------------------------


def _block_pair(**switch):
    """Two blocks with the same weights, the default one and one with ``switch``."""
    torch.manual_seed(0)
    a = DCFBBlock(8, 2, 2, spatial_dims=3).eval()
    b = DCFBBlock(8, 2, 2, spatial_dims=3, **switch).eval()
    b.load_state_dict(a.state_dict(), strict=False)
    return a, b


def test_padding_switch_differs_only_at_the_edge(monkeypatch):
    spatial, dim = (4, 5, 6), 3
    y = torch.randn(1, *spatial, dim)
    off = torch.zeros(1, *spatial, 3)
    off[..., -1] = 1.0  # one voxel along W: the last column samples just outside the map
    out = {}
    for padding in ("border", "zeros"):
        sampler = DeformableSampler(dim, 3, padding=padding)
        monkeypatch.setattr(sampler, "offsets", lambda x, yy: off)
        out[padding] = sampler(torch.zeros_like(y), y)[0]
    assert torch.allclose(out["border"][..., :-1], out["zeros"][..., :-1], atol=1e-6)
    assert torch.allclose(out["border"][..., -1], y.movedim(-1, 1)[..., -1], atol=1e-5)
    assert torch.allclose(out["zeros"][..., -1], torch.zeros(1, dim, 4, 5), atol=1e-6)


def test_published_reference_grid_formula():
    spatial = (2, 3, 4)  # D, H, W
    grid = reference_grid(spatial, convention="published")
    d, h, w = 1, 2, 3
    # published _get_ref_points: (i + 0.5) divided by the size of the next axis, cyclically
    # (D by H, H by W, W by D), * 2 - 1; returned in grid_sample order (x, y, z) = (W, H, D)
    expect = [2 * (w + 0.5) / 2 - 1, 2 * (h + 0.5) / 4 - 1, 2 * (d + 0.5) / 3 - 1]
    assert torch.allclose(grid[d, h, w], torch.tensor(expect))
    y = torch.randn(1, 2, *spatial)
    out = F.grid_sample(y, grid[None], mode="bilinear", align_corners=True)
    assert not torch.allclose(out, y, atol=1e-3)  # a zero offset is not the identity


def test_offset_scale_switch_bounds():
    spatial = (4, 5, 8)
    x = torch.randn(1, *spatial, 4)
    for scale, largest in (("voxel", [1.0, 1.0, 1.0]), ("published", [3 / 4, 4 / 5, 7 / 8])):
        torch.manual_seed(1)
        sampler = DeformableSampler(4, 3, offset_scale=scale)
        with torch.no_grad():
            sampler.offset.weight.normal_().mul_(1e4)  # saturate tanh
        off = sampler.offsets(x, x)
        assert sampler.largest_offset(spatial) == pytest.approx(largest)
        for axis in range(3):
            assert off[..., axis].abs().max().item() == pytest.approx(largest[axis], rel=1e-4)


def test_batchnorm_eps_switch():
    assert DCFBBlock(8, 2, 2, batchnorm_eps="dim").conv_norm.eps == 8.0
    assert DCFBBlock(8, 2, 2).conv_norm.eps == 1e-5
    model = DC2Fusion(**TINY, variant="published")
    assert model.decoder[2].blocks[0].conv_norm.eps == 32.0  # stage 2: 8 * 2**2 channels


def test_discarded_proj_gets_no_gradient():
    x, y = torch.randn(1, 2, 4, 4, 8), torch.randn(1, 2, 4, 4, 8)
    a, b = _block_pair(attention_proj=False)
    for blk in (a, b):
        blk(x, y).square().sum().backward()
    assert a.attn_proj.weight.grad.abs().sum() > 0
    assert b.attn_proj.weight.grad is None and b.attn_proj.bias.grad is None
    assert b.qv.weight.grad.abs().sum() > 0
    assert not torch.allclose(a(x, y), b(x, y))


def test_sampled_layout_switch():
    blk = DCFBBlock(4, 2, 2, sampled_layout="reshape")
    y_s = torch.arange(2 * 4 * 2 * 2 * 2.0).reshape(2, 4, 2, 2, 2)  # (B, C, D, H, W)
    assert torch.equal(blk._channels_last(y_s), y_s.reshape(2, 2, 2, 2, 4))
    blk.sampled_layout = "permute"
    assert torch.equal(blk._channels_last(y_s), y_s.permute(0, 2, 3, 4, 1))
    x, y = torch.randn(1, 2, 4, 4, 8), torch.randn(1, 2, 4, 4, 8)
    a, b = _block_pair(sampled_layout="reshape")
    assert not torch.allclose(a(x, y), b(x, y))


@pytest.mark.parametrize(("pairing", "x_only"), [("interleaved", 0), ("concatenated", 4)])
def test_conv_pairing_switch(pairing, x_only):
    """Concatenated: groups 0..C/2-1 see two x channels, so they ignore the other stream."""
    torch.manual_seed(0)
    blk = DCFBBlock(8, 2, 2, conv_pairing=pairing).eval()
    seen = []
    blk.conv_norm.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x, y = torch.randn(1, 2, 4, 4, 8), torch.randn(1, 2, 4, 4, 8)
    blk(x, y)
    blk(x, y + torch.randn_like(y))
    unchanged = [torch.equal(seen[0][:, c], seen[1][:, c]) for c in range(8)]
    assert sum(unchanged) == x_only and all(unchanged[:x_only])


def test_shared_norm_switch():
    a, b = _block_pair(shared_norm=True)
    assert not hasattr(b, "norm_attn") and not hasattr(b, "norm2")
    n_a, n_b = (sum(p.numel() for p in m.parameters()) for m in (a, b))
    assert n_a - n_b == 2 * 2 * 8  # two LayerNorms (weight + bias) of 8 channels
    calls = []
    b.norm1.register_forward_hook(lambda *args: calls.append(1))
    b(torch.randn(1, 2, 4, 4, 8), torch.randn(1, 2, 4, 4, 8))
    assert len(calls) == 3  # block input, attention output, MLP input
    with torch.no_grad():  # our two extra norms set to norm1's values: same output
        for norm in (a.norm_attn, a.norm2):
            norm.load_state_dict(a.norm1.state_dict())
    x, y = torch.randn(1, 2, 4, 4, 8), torch.randn(1, 2, 4, 4, 8)
    assert torch.allclose(a(x, y), b(x, y), atol=1e-6)


# --- bf16 autocast --------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(64, 32, 16), (48, 40)])
def test_zero_offset_is_identity_under_bf16_autocast(spatial):
    """The grid and offsets stay fp32: bf16 would move samples by up to ~0.1 voxel."""
    nd = len(spatial)
    sampler = DeformableSampler(4, nd)
    with torch.no_grad():
        sampler.offset.weight.zero_()
    y = torch.rand(1, *spatial, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_s, off = sampler(torch.rand(1, *spatial, 4), y)
        y_s16, _ = sampler(torch.rand(1, *spatial, 4), y.bfloat16())
    assert off.dtype == torch.float32 and torch.count_nonzero(off) == 0
    assert y_s.dtype == torch.float32 and y_s16.dtype == torch.bfloat16
    assert torch.allclose(y_s, y.movedim(-1, 1), atol=1e-5)
    assert torch.allclose(y_s16.float(), y.bfloat16().float().movedim(-1, 1), atol=1e-5)


def test_offsets_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    sampler = DeformableSampler(4, 3)
    x, y = torch.randn(1, 8, 8, 8, 4), torch.randn(1, 8, 8, 8, 4)
    ref = sampler.offsets(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        off = sampler.offsets(x, y)
        fused = DC2Fusion(**TINY)(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16))
    assert off.dtype == torch.float32
    assert torch.allclose(off, ref, atol=0.05)  # bf16 features, fp32 last layer
    assert torch.isfinite(fused).all()


def test_config_schema_names_every_constructor_argument():
    """The models: part of the workflow schema lists exactly DC2Fusion's arguments and values."""
    import inspect
    from pathlib import Path

    import yaml

    schema_path = Path(__file__).parents[3] / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    assert schema["properties"]["models"]["properties"]["dcfb3d"]["$ref"] == "#/$defs/dcfb"
    props = schema["$defs"]["dcfb"]["properties"]
    assert set(props) == set(inspect.signature(DC2Fusion.__init__).parameters) - {"self"}
    assert props["variant"]["enum"] == list(VARIANTS)
    for name, (allowed, _) in SWITCHES.items():
        if "enum" in props[name]:
            assert props[name]["enum"] == list(allowed), name
        else:
            assert props[name]["type"] == "boolean" and set(allowed) == {True, False}, name
