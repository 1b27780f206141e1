"""SwinFuse port (fusion3d.learned.models.swinfuse) and its recipe (recipes.swinfuse)."""

from __future__ import annotations

import json
from math import exp

import numpy as np
import pytest
import torch

from fusion3d.learned.models.published import convert_swinfuse as convert_published_state_dict
from fusion3d.learned.models.swinfuse import SwinFuse, attention_fusion_weight
from fusion3d.learned.recipes.swinfuse import (
    MSSSIM_WEIGHTS,
    SWINFUSE_RECIPE,
    SwinFuseLoss,
    msssim,
    training_images,
)

torch.set_num_threads(1)

TINY = {"img_size": 16, "window_size": 4, "embed_dim": 8, "depths": [2, 2, 2]}


def tiny(**kw) -> SwinFuse:
    torch.manual_seed(0)
    return SwinFuse(**{**TINY, **kw}).eval()


def pair(size: int, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = (xx**2 + yy**2 < 0.6).float()
    mri = (disc * (0.5 + 0.3 * torch.sin(5 * xx)))[None, None].repeat(b, 1, 1, 1)
    mri = (mri + 0.05 * torch.rand(b, 1, size, size, generator=g)).clamp(0, 1)
    pet = (disc * torch.exp(-((xx - 0.2) ** 2 + yy**2) / 0.2))[None, None].repeat(b, 1, 1, 1)
    return mri, pet


# -- network --------------------------------------------------------------------------------
def test_published_defaults_and_names():
    m = SwinFuse()
    args = m.init_args
    assert (args["img_size"], args["embed_dim"], args["window_size"]) == (224, 96, 7)
    assert (args["depths"], args["num_heads"], args["fusion_type"]) == (
        [6, 6, 6],
        [1, 2, 4],
        "l1_mean",
    )
    keys = m.state_dict().keys()
    for k in (
        "patch_embed.proj.weight",
        "patch_embed.norm.weight",
        "EN1_0.blocks.0.attn.relative_position_bias_table",
        "EN2_0.blocks.5.mlp.fc2.bias",
        "EN3_0.blocks.1.attn_mask",
        "norm_up.weight",
        "conv.weight",
        "prelu.weight",
    ):
        assert k in keys
    assert m.spatial_dims == 2 and m.size_divisor == 1
    json.dumps(args)


@pytest.mark.parametrize("size", [64, 128])
def test_shapes(size):
    m = tiny()
    mri, pet = pair(size)
    with torch.no_grad():
        assert m.fuse(mri, pet).shape == (2, 1, size, size)
        assert m.fuse(mri[:, :, :40, :24], pet[:, :, :40, :24]).shape == (2, 1, 40, 24)
    grid = SwinFuse(**{**TINY, "img_size": size, "window_size": 8}).eval()
    with torch.no_grad():
        assert grid(mri * 2 - 1).shape == (2, 1, size, size)
        assert grid.fuse(mri, pet).shape == (2, 1, size, size)


def test_forward_checks_sizes():
    m = tiny()
    with pytest.raises(ValueError, match="img_size"):
        m(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="multiple of window_size"):
        SwinFuse(img_size=64, window_size=7)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m.fuse(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))


def test_init_args_rebuild_gives_identical_outputs():
    m = tiny(run_all_blocks=True)
    again = SwinFuse(**json.loads(json.dumps(m.init_args))).eval()
    again.load_state_dict(m.state_dict())
    mri, pet = pair(32)
    with torch.no_grad():
        assert torch.equal(m.fuse(mri, pet), again.fuse(mri, pet))
        assert torch.equal(m(mri[:, :, :16, :16]), again(mri[:, :, :16, :16]))


def test_only_the_first_block_runs_and_unused_are_frozen():
    m = tiny()
    x = pair(16)[0] * 2 - 1
    m(x).sum().backward()
    for name, p in m.named_parameters():
        used = ".blocks.0." in name or not (
            ".blocks." in name or "norm_up" in name or "prelu" in name
        )
        assert p.requires_grad == used, name
        assert (p.grad is not None) == used, name
    full = tiny(run_all_blocks=True)
    full(x).sum().backward()
    assert full.EN1_0.blocks[1].attn.qkv.weight.grad is not None
    with torch.no_grad():  # blocks 1.. change the published forward only with run_all_blocks
        m.EN1_0.blocks[1].mlp.fc2.bias.add_(1.0)
        assert torch.equal(m(x), tiny()(x))


# -- published weights ----------------------------------------------------------------------
def test_convert_published_state_dict_loads_and_agrees():
    m = tiny(num_heads=[2, 2, 4])
    state = m.state_dict()
    init_args, ours = convert_published_state_dict(state)
    assert init_args == m.init_args
    again = SwinFuse(**init_args).eval()
    again.load_state_dict(ours)
    mri, pet = pair(16)
    with torch.no_grad():
        assert torch.equal(again.fuse(mri, pet), m.fuse(mri, pet))
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}}
    assert convert_published_state_dict(wrapped)[0] == init_args
    no_mask = {k: v for k, v in state.items() if not k.endswith("attn_mask")}
    assert convert_published_state_dict(no_mask, img_size=16)[0]["img_size"] == 16


def test_convert_names_bad_keys():
    state = tiny().state_dict()
    missing = {k: v for k, v in state.items() if k != "conv.weight"}
    with pytest.raises(ValueError, match=r"missing: conv\.weight \(expected \(1, 8, 1, 1\)\)"):
        convert_published_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected: head\.extra \(found \(1,\)\)"):
        convert_published_state_dict({**state, "head.extra": torch.zeros(1)})
    bad = {**state, "EN1_0.blocks.0.mlp.fc2.bias": torch.zeros(5)}
    with pytest.raises(
        ValueError, match=r"EN1_0\.blocks\.0\.mlp\.fc2\.bias \(expected \(8,\), found \(5,\)\)"
    ):
        convert_published_state_dict(bad)
    with pytest.raises(ValueError, match="embed_dim: given 16, the weights say 8"):
        convert_published_state_dict(state, embed_dim=16)


# -- fusion rule and inference conventions --------------------------------------------------
def test_fusion_rule_equals_its_formula():
    g = torch.Generator().manual_seed(1)
    t1, t2 = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    a, b = t1.double().numpy(), t2.double().numpy()
    eps = 1e-5
    r1, r2 = np.abs(a).sum((2, 3), keepdims=True) / 20, np.abs(b).sum((2, 3), keepdims=True) / 20
    c1, c2 = np.abs(a).sum(1, keepdims=True) / 3, np.abs(b).sum(1, keepdims=True) / 3
    row = (np.exp(r1) * a + np.exp(r2) * b) / (np.exp(r1) + np.exp(r2) + eps)
    col = (np.exp(c1) * a + np.exp(c2) * b) / (np.exp(c1) + np.exp(c2) + eps)
    got = attention_fusion_weight(t1.double(), t2.double(), "l1_mean", eps).numpy()
    np.testing.assert_allclose(got, row + col, rtol=1e-12)
    assert torch.allclose(attention_fusion_weight(t1, t2), attention_fusion_weight(t2, t1))
    r1, r2 = (
        np.sqrt((a**2).sum((2, 3), keepdims=True)) / 20,
        np.sqrt((b**2).sum((2, 3), keepdims=True)) / 20,
    )
    c1, c2 = np.sqrt((a**2).sum(1, keepdims=True)) / 3, np.sqrt((b**2).sum(1, keepdims=True)) / 3
    row = (np.exp(r1) * a + np.exp(r2) * b) / (np.exp(r1) + np.exp(r2) + eps)
    col = (np.exp(c1) * a + np.exp(c2) * b) / (np.exp(c1) + np.exp(c2) + eps)
    got = attention_fusion_weight(t1.double(), t2.double(), "l2_mean").numpy()
    np.testing.assert_allclose(got, row + col, rtol=1e-12)


def test_fuse_returns_the_unit_scale():
    mri, pet = pair(24)
    with torch.no_grad():
        out = tiny().fuse(mri, pet)
        raw = tiny(output_stretch=False, quantize_output=False).fuse(mri, pet)
    assert out.amin(dim=(1, 2, 3)).tolist() == [0.0, 0.0] and out.amax() == 1.0
    assert torch.equal(torch.round(out * 255), out * 255)
    assert 0 < raw.min() and raw.max() < 1
    lo, hi = raw.amin(dim=(1, 2, 3), keepdim=True), raw.amax(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out, torch.floor((raw - lo) / (hi - lo) * 255) / 255, atol=1.5 / 255)
    with torch.no_grad():
        flat = tiny().fuse(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    assert torch.equal(flat, torch.zeros_like(flat))


def test_fuse_pads_with_mid_grey_and_tiles():
    m = tiny(output_stretch=False, quantize_output=False)
    mri, pet = pair(20, b=1)
    pad = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        got = m.fuse(mri, pet)
        to = m.to_network_scale
        big_m, big_p = pad.clone(), pad.clone()
        big_m[:, :, :20, :20], big_p[:, :, :20, :20] = to(mri), to(pet)
        want = torch.zeros(1, 1, 32, 32)
        for i in (0, 16):
            for j in (0, 16):
                sl = (slice(None), slice(None), slice(i, i + 16), slice(j, j + 16))
                want[sl] = m.fuse_tiles(big_m[sl], big_p[sl])
    assert torch.allclose(got, want[:, :, :20, :20], atol=1e-6)


# -- loss, recipe ---------------------------------------------------------------------------
def _ssim_direct(x: np.ndarray, y: np.ndarray, win: int = 11) -> tuple[float, float]:
    """The published SSIM and CS by explicit window sums (valid positions only)."""
    win = min(win, *x.shape[2:])
    g = np.array([exp(-((i - win // 2) ** 2) / (2 * 1.5**2)) for i in range(win)])
    w = np.outer(g / g.sum(), g / g.sum())
    big_l = (255 if x.max() > 128 else 1) - (-1 if x.min() < -0.5 else 0)
    c1, c2 = (0.01 * big_l) ** 2, (0.03 * big_l) ** 2
    ss, cs = [], []
    for n in range(x.shape[0]):
        for i in range(x.shape[2] - win + 1):
            for j in range(x.shape[3] - win + 1):
                a, b = x[n, 0, i : i + win, j : j + win], y[n, 0, i : i + win, j : j + win]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
                cov = (w * a * b).sum() - ma * mb
                cs.append((2 * cov + c2) / (va + vb + c2))
                ss.append((2 * ma * mb + c1) * cs[-1] / (ma**2 + mb**2 + c1))
    return float(np.mean(ss)), float(np.mean(cs))


def test_msssim_and_loss_terms_equal_direct_computation():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    out = (x * 0.7 + 0.2 * torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64)).clamp(-1, 1)
    a, b = out.numpy(), x.numpy()
    sims, css = [], []
    for _ in range(5):
        s, c = _ssim_direct(a, b)
        sims.append((s + 1) / 2)
        css.append((c + 1) / 2)
        a = a.reshape(2, 1, a.shape[2] // 2, 2, a.shape[3] // 2, 2).mean((3, 5))
        b = b.reshape(2, 1, b.shape[2] // 2, 2, b.shape[3] // 2, 2).mean((3, 5))
    w = np.array(MSSSIM_WEIGHTS, dtype=np.float32).astype(np.float64)
    want = np.prod(np.array(css[:-1]) ** w[:-1] * sims[-1] ** w[-1])
    got = float(msssim(out, x, normalize=True))
    assert got == pytest.approx(want, rel=1e-6)

    mri, pet = pair(16, b=1)
    loss = SwinFuseLoss(16, ssim_weight=1000.0)
    seen = {}

    def fwd(t):
        seen["x"] = t
        return torch.tanh(0.8 * t)

    total, terms = loss(fwd, mri, pet)
    x = seen["x"]
    assert x.shape == (2, 1, 16, 16)  # MRI and PET stacked: two single images
    o = torch.tanh(0.8 * x)
    assert terms["pixel"] == pytest.approx(float((o - x).abs().mean() / 2), rel=1e-6)
    assert terms["ssim"] == pytest.approx(float((1 - msssim(o, x, normalize=True)) / 2), rel=1e-6)
    assert float(total) == pytest.approx(terms["pixel"] + 1000 * terms["ssim"], rel=1e-6)


def test_training_images_follow_the_published_pipeline():
    x = torch.tensor([[[[0.1, 0.2], [0.3, 0.5]]]])
    q = torch.round(x * 255)  # 26, 51, 76, 128
    want = torch.floor((q - 26) * 255 / (128 - 26) + 0.5)
    assert torch.equal(training_images(x, 2), (want - 127.5) / 127.5)
    assert torch.equal(training_images(torch.full((1, 1, 2, 2), 0.4), 2), -torch.ones(1, 1, 2, 2))
    big = training_images(torch.rand(1, 1, 5, 7), 11)
    assert big.shape == (1, 1, 11, 11) and big.min() == -1 and big.max() == 1
    with pytest.raises(ValueError, match="train_resize"):
        training_images(x, 4, resize=False)
    pil = pytest.importorskip("PIL.Image")
    for n_in in (64, 128, 97, 300):
        src = torch.rand(1, 1, n_in, n_in).mul(255).round() / 255
        ours = (training_images(src, 224, stretch=False) * 127.5 + 127.5).round()
        u8 = (src[0, 0] * 255).round().numpy().astype(np.uint8)
        img = pil.fromarray(u8).resize((224, 224), pil.NEAREST)
        assert np.array_equal(ours[0, 0].numpy().astype(np.uint8), np.asarray(img)), n_in


def test_recipe_defaults_and_checks():
    r = SWINFUSE_RECIPE
    cfg = r.all_defaults()
    assert r.architecture == "swinfuse" and r.model_class is SwinFuse
    assert (cfg["lr"], cfg["epochs"], cfg["batch_size"], cfg["ssim_weight"]) == (
        1e-5,
        50,
        2,
        1000.0,
    )
    r.check_config(cfg, {})
    for key, bad in (("ssim_weight", -1), ("betas", [0.9]), ("eight_bit", "yes"), ("eps", 0)):
        with pytest.raises(ValueError, match=key):
            r.check_config({**r.all_defaults(), key: bad}, {})


def test_a_few_adam_steps_lower_the_loss():
    torch.manual_seed(0)
    r = SWINFUSE_RECIPE
    model = r.build_model({**TINY, "embed_dim": 8, "drop_path_rate": 0.0})
    cfg = {**r.all_defaults(), "lr": 3e-3}
    r.check_config(cfg, {})
    loss_fn = r.build_loss(cfg, model)
    opt = r.build_optimizer(model.parameters(), cfg, torch.device("cpu"))
    mri, pet = pair(16, b=1)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss, _ = loss_fn(model, mri, pet)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
