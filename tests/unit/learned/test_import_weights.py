"""Tests for fusion3d.learned.models.published: weights saved by the published DC2Fusion code.

The published state_dict is built here from the published module definitions
(``models/DC2Fusion.py``: ``DC2Fusion`` -> ``swin`` = ``FusionModel`` + ``out_conv``), written
out independently of the mapping under test, with random values.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from fusion3d.cli import main
from fusion3d.learned.inference import load_model
from fusion3d.learned.models.published import convert_dc2fusion as convert_state_dict
from fusion3d.learned.weights import import_weights

torch.set_num_threads(1)
E, DEPTHS, HEADS = 12, [1, 2, 1, 1], [3, 6, 12, 24]  # 4 stages, as the published U-net


def _block(prefix: str, c: int, mlp_ratio: float = 4.0) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of one published CrossTransformerBlock3D with ``c`` channels."""
    h, hid = c // 8, int(c * mlp_ratio)
    shapes = {
        "norm1.weight": (c,),
        "norm1.bias": (c,),
        "proj_q.weight": (2 * c, 2 * c, 1, 1, 1),
        "proj_q.bias": (2 * c,),
        "conv_offset.0.weight": (2 * c, 1, 3, 3, 3),
        "conv_offset.0.bias": (2 * c,),
        "conv_offset.1.norm.weight": (2 * c,),
        "conv_offset.1.norm.bias": (2 * c,),
        "conv_offset.3.weight": (3, 2 * c, 1, 1, 1),
        "dwconv3x3.0.weight": (c, 2, 7, 7, 7),
        "dwconv3x3.0.bias": (c,),
        "dwconv3x3.1.weight": (c,),
        "dwconv3x3.1.bias": (c,),
        "dwconv3x3.1.running_mean": (c,),
        "dwconv3x3.1.running_var": (c,),
        "dwconv3x3.1.num_batches_tracked": (),
        "projection.weight": (c, c, 1, 1, 1),
        "projection.bias": (c,),
        "channel_interaction.1.weight": (h, c, 1, 1, 1),
        "channel_interaction.1.bias": (h,),
        "channel_interaction.2.norm.weight": (h,),
        "channel_interaction.2.norm.bias": (h,),
        "channel_interaction.4.weight": (c, h, 1, 1, 1),
        "channel_interaction.4.bias": (c,),
        "spatial_interaction.0.weight": (h, c, 1, 1, 1),
        "spatial_interaction.0.bias": (h,),
        "spatial_interaction.1.norm.weight": (h,),
        "spatial_interaction.1.norm.bias": (h,),
        "spatial_interaction.3.weight": (1, h, 1, 1, 1),
        "spatial_interaction.3.bias": (1,),
        "proj.weight": (c, 2 * c),
        "proj.bias": (c,),
        "mlp.fc1.weight": (hid, c),
        "mlp.fc1.bias": (hid,),
        "mlp.fc2.weight": (c, hid),
        "mlp.fc2.bias": (c,),
    }
    for name in ("q", "k", "v", "proj"):
        shapes[f"cross_attn.{name}.weight"] = (c, c)
        shapes[f"cross_attn.{name}.bias"] = (c,)
    return {prefix + k: v for k, v in shapes.items()}


def published_shapes(e: int = E, depths=DEPTHS, patch: int = 4) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the published ``DC2Fusion(embed_dim=e)`` with these depths."""
    n = len(depths)
    dims = [e * 2**i for i in range(n)]
    out: dict[str, tuple[int, ...]] = {
        "swin.patch_embed.proj.weight": (e, 1, patch, patch, patch),
        "swin.patch_embed.proj.bias": (e,),
        "swin.norm.weight": (dims[-1],),
        "swin.norm.bias": (dims[-1],),
        "swin.norm2.weight": (2 * e,),
        "swin.norm2.bias": (2 * e,),
        "swin.reverse_patch_embedding.weight": (2 * e, e // 2, patch, patch, patch),
        "swin.reverse_patch_embedding.bias": (e // 2,),
        "out_conv.weight": (2, e // 2, 3, 3, 3),
        "out_conv.bias": (2,),
    }
    for i in range(n):  # encoder: BasicLayer(dims[i]) with PatchMerging except the last
        for j in range(depths[i]):
            out.update(_block(f"swin.layers.{i}.blocks.{j}.", dims[i]))
        if i < n - 1:
            out[f"swin.layers.{i}.downsample.down_conv.weight"] = (2 * dims[i], dims[i], 2, 2, 2)
            out[f"swin.layers.{i}.downsample.down_conv.bias"] = (2 * dims[i],)
            out[f"swin.layers.{i}.downsample.norm.weight"] = (2 * dims[i],)
            out[f"swin.layers.{i}.downsample.norm.bias"] = (2 * dims[i],)
    for u, i in enumerate(reversed(range(n))):  # decoder: coarsest first, PatchExpand if i > 0
        out[f"swin.concat_back_dim.{u}.weight"] = (dims[i], 2 * dims[i])
        out[f"swin.concat_back_dim.{u}.bias"] = (dims[i],)
        for j in range(depths[i]):
            out.update(_block(f"swin.up_layers.{u}.blocks.{j}.", dims[i]))
        if i > 0:
            out[f"swin.up_layers.{u}.downsample.up_conv.weight"] = (dims[i], dims[i] // 2, 2, 2, 2)
            out[f"swin.up_layers.{u}.downsample.up_conv.bias"] = (dims[i] // 2,)
            out[f"swin.up_layers.{u}.downsample.norm.weight"] = (dims[i] // 2,)
            out[f"swin.up_layers.{u}.downsample.norm.bias"] = (dims[i] // 2,)
    return out


def published_state(**kwargs) -> dict[str, torch.Tensor]:
    """A random published state_dict (positive running variances, integer counter)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in published_shapes(**kwargs).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(17)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


@pytest.fixture
def published_file(tmp_path):
    state = published_state()
    path = tmp_path / "published_best.pth"
    torch.save(state, path)
    return path, state


def test_import_and_load(published_file, tmp_path, caplog):
    src, pub = published_file
    out = tmp_path / "imported.pt"
    with caplog.at_level(logging.INFO, logger="fusion3d.learned.models.published"):
        import_weights("dc2fusion", src, out, window_size=1)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any("swin.concat_back_dim.0.weight" in m for m in dropped)  # the unused bottleneck
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["variant"] == "published" and ckpt["source"] == "published_best.pth"
    model = load_model(out)
    assert ckpt["init_args"] == model.init_args and ckpt["architecture"] == "dcfb"
    assert model.init_args["variant"] == "published"
    assert model.init_args["depths"] == DEPTHS and model.init_args["embed_dim"] == E
    assert model.init_args["num_heads"] == HEADS and model.init_args["window_size"] == 1
    ours = model.state_dict()
    c1 = 2 * E  # stage 1 channels
    blk = "swin.layers.1.blocks.1."
    assert torch.equal(ours["encoder.1.blocks.1.qv.weight"][:c1], pub[blk + "cross_attn.q.weight"])
    assert torch.equal(ours["encoder.1.blocks.1.qv.weight"][c1:], pub[blk + "cross_attn.v.weight"])
    assert torch.equal(ours["encoder.1.blocks.1.qv.bias"][c1:], pub[blk + "cross_attn.v.bias"])
    assert torch.equal(ours["encoder.1.blocks.1.k.weight"], pub[blk + "cross_attn.k.weight"])
    assert torch.equal(
        ours["encoder.1.blocks.1.attn_proj.weight"], pub[blk + "cross_attn.proj.weight"]
    )
    assert torch.equal(
        ours["encoder.1.blocks.1.sampler.proj_in.weight"], pub[blk + "proj_q.weight"][..., 0, 0, 0]
    )
    assert torch.equal(
        ours["encoder.1.blocks.1.sampler.offset.weight"],
        pub[blk + "conv_offset.3.weight"].flatten(1),
    )
    assert torch.equal(
        ours["encoder.1.blocks.1.conv_norm.running_var"], pub[blk + "dwconv3x3.1.running_var"]
    )
    assert int(ours["encoder.1.blocks.1.conv_norm.num_batches_tracked"]) == 17
    assert torch.equal(
        ours["encoder.1.blocks.1.spatial_gate.fc2.weight"],
        pub[blk + "spatial_interaction.3.weight"].flatten(1),
    )
    # decoder: published up_layers.{u} (coarsest first) is our decoder stage 3 - u
    assert torch.equal(
        ours["decoder.1.blocks.1.blend.weight"], pub["swin.up_layers.2.blocks.1.proj.weight"]
    )
    assert torch.equal(
        ours["decoder.3.blocks.0.mlp.fc1.weight"], pub["swin.up_layers.0.blocks.0.mlp.fc1.weight"]
    )
    assert torch.equal(ours["skip_proj.2.weight"], pub["swin.concat_back_dim.1.weight"])
    assert torch.equal(ours["skip_proj.0.bias"], pub["swin.concat_back_dim.3.bias"])
    assert torch.equal(
        ours["upsample.2.conv.weight"], pub["swin.up_layers.0.downsample.up_conv.weight"]
    )
    assert torch.equal(ours["upsample.0.norm.bias"], pub["swin.up_layers.2.downsample.norm.bias"])
    assert torch.equal(
        ours["downsample.2.conv.weight"], pub["swin.layers.2.downsample.down_conv.weight"]
    )
    assert torch.equal(ours["bottleneck_norm.weight"], pub["swin.norm.weight"])
    assert torch.equal(ours["head_norm.weight"], pub["swin.norm2.weight"])
    assert torch.equal(ours["head_up.weight"], pub["swin.reverse_patch_embedding.weight"])
    assert torch.equal(ours["head_out.weight"], pub["out_conv.weight"])
    assert torch.equal(ours["patch_embed.bias"], pub["swin.patch_embed.proj.bias"])
    # every published value but the dropped bottleneck landed somewhere
    n_pub = sum(v.numel() for k, v in pub.items() if not k.startswith("swin.concat_back_dim.0."))
    assert n_pub == sum(v.numel() for v in ours.values())
    with torch.no_grad():  # window 1: divisor 4 * 2**3 * 1 = 32
        fused = model(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32))
    assert fused.shape == (1, 1, 32, 32, 32) and torch.isfinite(fused).all()


def test_cli_import_weights(published_file, tmp_path, capsys):
    src, _ = published_file
    out = tmp_path / "cli.pt"
    assert main(["import-weights", str(src), str(out), "--set", "num_heads=[3, 6, 12, 24]"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["variant"] == "published" and printed["window_size"] == 2
    assert load_model(out).init_args == printed
    assert main(["import-weights", str(src), str(tmp_path / "x.pt"), "--set", "embed_dim=16"]) == 2
    err = capsys.readouterr().err
    assert "embed_dim" in err and "16" in err and "12" in err


def test_missing_key_is_named():
    state = published_state()
    del state["swin.up_layers.1.blocks.0.cross_attn.v.bias"]
    with pytest.raises(
        ValueError, match=r"lacks the key.*swin\.up_layers\.1\.blocks\.0\.cross_attn\.v\.bias"
    ):
        convert_state_dict(state)


def test_unexpected_key_is_named():
    state = published_state()
    state["swin.layers.0.blocks.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(
        ValueError, match=r"unexpected key.*swin\.layers\.0\.blocks\.0\.extra\.weight"
    ):
        convert_state_dict(state)


def test_shape_mismatch_names_key_and_shapes():
    state = published_state()
    state["swin.layers.2.blocks.0.conv_offset.0.weight"] = torch.zeros(96, 1, 5, 5, 5)
    with pytest.raises(ValueError) as err:
        convert_state_dict(state)
    msg = str(err.value)
    assert "swin.layers.2.blocks.0.conv_offset.0.weight" in msg
    assert "(96, 1, 5, 5, 5)" in msg and "(96, 1, 3, 3, 3)" in msg


def test_heads_needed_when_not_four_stages():
    state = published_state(depths=[1, 1, 1])
    with pytest.raises(ValueError, match="num_heads"):
        convert_state_dict(state)
    init_args, _ = convert_state_dict(state, num_heads=[3, 6, 12])
    assert init_args["depths"] == [1, 1, 1]


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled module: refused by weights_only
    with pytest.raises(ValueError, match="state_dict"):
        import_weights("dc2fusion", path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


LABELS = {"swinfuse": "SwinFuse", "matr": "MATR", "dilran": "DILRAN", "dc2fusion": "DC2Fusion"}


@pytest.mark.parametrize(
    "method, sizes",
    [
        ("swinfuse", {"img_size": 32, "window_size": 8, "embed_dim": 8, "num_heads": [1, 1, 2]}),
        ("matr", {}),
        ("dilran", {"channels": 8, "recon_channels": [8, 4]}),
    ],
)
def test_cli_imports_each_baseline_and_the_checkpoint_fuses(method, sizes, tmp_path, capsys):
    """import-weights --method M: a published-named state_dict (our names are the published
    ones) becomes a checkpoint of M that load_model rebuilds with the same outputs."""
    from fusion3d.learned.recipes import recipe_for

    torch.manual_seed(0)
    published = recipe_for(method).build_model(sizes).eval()
    src = tmp_path / f"{method}.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in published.state_dict().items()}}, src)
    out = tmp_path / f"{method}.pt"
    sets = [a for k, v in sizes.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(["import-weights", "--method", method, str(src), str(out), *sets]) == 0
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["architecture"] == method and ckpt["variant"] == "published"
    model = load_model(out, method=method)
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.fuse(x, y), published.fuse(x, y), rtol=0, atol=0)
    # another method's weights are refused, naming the network the keys show
    other = "matr" if method != "matr" else "dilran"
    assert main(["import-weights", "--method", other, str(src), str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert f"this looks like {LABELS[method]} weights: pass --method {method}" in err
    with pytest.raises(ValueError, match=f"a checkpoint of '{method}', not of '{other}'"):
        load_model(out, method=other)
