"""Tests for the DILRAN port (fusion3d.learned.models.dilran) and its recipe."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from fusion3d.learned.models.dilran import DILRAN, sfnn_fusion
from fusion3d.learned.models.published import convert_dilran as convert_published_state_dict
from fusion3d.learned.models.shared import quantize_8bit
from fusion3d.learned.recipes.dilran import (
    DILRAN_RECIPE,
    DilranLoss,
    PerceptualLoss,
    VGG16BNFeatures,
    load_vgg16_bn_features,
    sobel_loss,
)

torch.set_num_threads(1)
TINY = dict(channels=4, dilations=[1, 2], recon_channels=[4])


def _pair(b: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, size, size, generator=g), torch.rand(b, 1, size, size, generator=g)


@pytest.mark.parametrize("size", [64, 128])
def test_shapes(size):
    torch.manual_seed(0)
    model = DILRAN() if size == 64 else DILRAN(channels=8)
    mri, pet = _pair(1, size)
    with torch.no_grad():
        assert model(mri).shape == (1, 1, size, size)
        assert model.fuse(mri, pet).shape == (1, 1, size, size)
    assert model.spatial_dims == 2 and model.size_divisor == 2


def test_odd_size_and_bad_shape_rejected():
    model = DILRAN(**TINY)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.rand(1, 1, 9, 8))
    with pytest.raises(ValueError, match=r"mri must be \(B, 1, H, W\)"):
        model.fuse(torch.rand(1, 2, 8, 8), torch.rand(1, 1, 8, 8))


def test_published_keys_and_default_sizes():
    model = DILRAN()
    keys = model.state_dict()
    assert keys["fe.conv_id.0.weight"].shape == (64, 192, 1, 1)
    assert keys["fe.fe.reduce.weight"].shape == (64, 192, 1, 1)
    assert keys["recon.recon_conv.2.weight"].shape == (1, 32, 3, 3)
    assert "fe.fe.dilran.bnorm.running_var" in keys and "fe.conv2.4.weight" in keys
    assert not any(
        k.startswith(("fe.conv_id", "fe.conv2"))
        for k in DILRAN(keep_unused_layers=False).state_dict()
    )


def test_init_args_rebuild_identical():
    torch.manual_seed(1)
    model = DILRAN(**TINY, inference_norm="running")
    args = json.loads(json.dumps(model.init_args))
    again = DILRAN(**args)
    again.load_state_dict(model.state_dict())
    mri, pet = _pair(2, 16)
    with torch.no_grad():
        assert torch.equal(model.fuse(mri, pet), again.fuse(mri, pet))
        assert torch.equal(model(mri), again(mri))
    assert args["inference_norm"] == "running" and args["dilations"] == [1, 2]


def test_convert_published_state_dict_roundtrip_and_wrappers():
    torch.manual_seed(2)
    model = DILRAN(channels=8, recon_channels=[8, 4])
    state = model.state_dict()
    for wrapped in (
        state,
        {"state_dict": state},
        {"model": {f"module.{k}": v for k, v in state.items()}},
    ):
        init_args, ours = convert_published_state_dict(wrapped)
        assert init_args["channels"] == 8 and init_args["recon_channels"] == [8, 4]
        rebuilt = DILRAN(**init_args)
        rebuilt.load_state_dict(ours)
        mri, pet = _pair(1, 16)
        with torch.no_grad():
            assert torch.equal(rebuilt.fuse(mri, pet), model.fuse(mri, pet))
    with pytest.raises(ValueError, match=r"channels=16 \(weights: 8\)"):
        convert_published_state_dict(state, channels=16)


@pytest.mark.parametrize(
    ("edit", "key", "label"),
    [
        ("drop", "fe.fe.convd2.bias", "missing"),
        ("add", "fe.fe.extra.weight", "unexpected"),
        ("reshape", "fe.fe.reduce.weight", "mis-shaped"),
    ],
)
def test_convert_published_state_dict_names_bad_keys(edit, key, label):
    state = dict(DILRAN(**TINY).state_dict())
    if edit == "drop":
        del state[key]
    elif edit == "add":
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(4, 7, 1, 1)
    with pytest.raises(ValueError, match=label) as err:
        convert_published_state_dict(state, dilations=[1, 2])
    assert key in str(err.value)
    if edit == "reshape":
        assert "(4, 8, 1, 1)" in str(err.value) and "(4, 7, 1, 1)" in str(err.value)


def test_sfnn_equals_direct_formula():
    g = torch.Generator().manual_seed(3)
    f1, f2 = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    got = sfnn_fusion(f1, f2)
    for b in range(2):
        n = []
        for f in (f1[b], f2[b]):
            s = torch.exp(f) / torch.exp(f).sum(0, keepdim=True)
            n.append(max(float(torch.linalg.svdvals(s[c]).sum()) for c in range(3)))
        w1, w2 = n[0] ** 2 / (n[0] ** 2 + n[1] ** 2), n[1] ** 2 / (n[0] ** 2 + n[1] ** 2)
        assert torch.allclose(got[b], w1 * f1[b] + w2 * f2[b], atol=1e-6)
    assert torch.equal(sfnn_fusion(f1, f1), 0.5 * f1 + 0.5 * f1)


class _Expand(torch.nn.Module):
    def forward(self, x, norm="module"):
        return x.expand(-1, 4, -1, -1)


class _Mean(torch.nn.Module):
    def forward(self, f):
        return f.mean(1, keepdim=True)


def test_fuse_is_on_the_unit_scale():
    """With an exact auto-encoder, fuse is the SFNN blend of the 8-bit inputs: in [0, 1]."""
    model = DILRAN(**TINY)
    model.fe, model.recon = _Expand(), _Mean()
    mri, pet = _pair(2, 8, seed=4)
    out = model.fuse(mri, pet)
    assert out.min() >= 0 and out.max() <= 1
    q_m, q_p = quantize_8bit(mri), quantize_8bit(pet)
    expect = sfnn_fusion(q_p.expand(-1, 4, -1, -1), q_m.expand(-1, 4, -1, -1)).mean(1, keepdim=True)
    assert torch.allclose(out, expect)
    x = torch.tensor([0.5 / 255, 0.6 / 255, 1.2, -0.1])
    assert torch.equal(quantize_8bit(x), torch.tensor([0.0, 1 / 255, 1.0, 0.0]))


def test_slice_norm_is_the_published_train_mode_per_slice_and_leaves_stats():
    torch.manual_seed(5)
    model = DILRAN(**TINY)
    mri, pet = _pair(3, 16, seed=5)
    published = copy.deepcopy(model).train()  # published inference.py: no model.eval()
    with torch.no_grad():
        ref = torch.cat([published.fe(mri[i : i + 1]) for i in range(3)])
        before = {k: v.clone() for k, v in model.state_dict().items()}
        got = model.eval().fe(mri, "slice")
        fused = model.fuse(mri, pet)
    assert torch.allclose(got, ref, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        ref_fused = torch.cat(
            [
                published.recon(
                    sfnn_fusion(
                        published.fe(quantize_8bit(pet[i : i + 1])),
                        published.fe(quantize_8bit(mri[i : i + 1])),
                    )
                )
                for i in range(3)
            ]
        )
    assert torch.allclose(fused, ref_fused, atol=1e-5)


def _direct_sobel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    kx = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
    ky = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]
    h, w = x.shape[-2:]
    total = 0.0
    for k in (kx, ky):
        diffs = []
        for i in range(h - 2):
            for j in range(w - 2):
                gx = sum(k[a][b] * x[0, 0, i + a, j + b] for a in range(3) for b in range(3))
                gy = sum(k[a][b] * y[0, 0, i + a, j + b] for a in range(3) for b in range(3))
                diffs.append((abs(gx) - abs(gy)) ** 2)
        total = total + torch.stack(diffs).mean()
    return total


def test_loss_terms_equal_direct_computations(tmp_path):
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(1, 1, 6, 7, generator=g), torch.rand(1, 1, 6, 7, generator=g)
    assert torch.allclose(sobel_loss(x, y), _direct_sobel(x, y), atol=1e-6)
    torch.manual_seed(7)
    vgg = VGG16BNFeatures()
    with torch.no_grad():
        for m in vgg.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path / "vgg16_bn.pt"
    torch.save({**vgg.state_dict(), "classifier.0.weight": torch.zeros(1)}, path)
    feats = load_vgg16_bn_features(path)
    percep = PerceptualLoss(feats, [0, 1, 2]).train()
    a, b = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    f = vgg.features.eval()

    def phi(t):  # published taps: BN 4 and 11 overwritten by their in-place ReLU, BN 21 as is
        t = t.expand(-1, 3, -1, -1)
        return [f[:6](t), f[:13](t), f[:22](t)]

    with torch.no_grad():
        direct = sum(((p - q) ** 2).mean() for p, q in zip(phi(a), phi(b), strict=True))
        assert torch.allclose(percep(a, b), direct, rtol=1e-5)
        loss = DilranLoss(0.2, 0.3, percep, quantize=False)
        total, terms = loss(lambda img: img.flip(0), a, b)
    img = torch.cat([a, b])
    assert terms["mse"] == pytest.approx(float(((img.flip(0) - img) ** 2).mean()), rel=1e-6)
    assert terms["grad"] == pytest.approx(float(sobel_loss(img.flip(0), img)), rel=1e-6)
    expect = terms["mse"] + 0.2 * terms["grad"] + 0.3 * terms["percep"]
    assert float(total) == pytest.approx(expect, rel=1e-5)
    bad = tmp_path / "bad.pt"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="features.0.bias"):
        load_vgg16_bn_features(bad)


def test_recipe_defaults_and_checks():
    cfg = DILRAN_RECIPE.all_defaults()
    assert (cfg["epochs"], cfg["lr"], cfg["batch_size"], cfg["seed"]) == (100, 1e-4, 2, 3407)
    assert cfg["perceptual_weights"] is None and cfg["perceptual_blocks"] == [0, 1, 2]
    DILRAN_RECIPE.check_config(cfg, {})
    loss = DILRAN_RECIPE.build_loss(cfg, DILRAN(**TINY))
    assert loss.perceptual is None and loss.quantize
    for key, bad in (
        ("lambda1", -1),
        ("perceptual_weights", "/nonexistent.pt"),
        ("lr_decay", "yes"),
    ):
        with pytest.raises(ValueError, match=key):
            DILRAN_RECIPE.check_config({**cfg, key: bad}, {})
    opt = DILRAN_RECIPE.build_optimizer(DILRAN(**TINY).parameters(), cfg, torch.device("cpu"))
    step = DILRAN_RECIPE.build_scheduler(opt, {**cfg, "lr_decay": True})
    assert isinstance(step, torch.optim.lr_scheduler.StepLR) and step.step_size == 100


def test_training_steps_lower_the_loss_and_every_trainable_param_gets_a_gradient():
    torch.manual_seed(8)
    cfg = {**DILRAN_RECIPE.all_defaults(), "lr": 1e-2}
    model = DILRAN_RECIPE.build_model(TINY)
    loss_fn = DILRAN_RECIPE.build_loss(cfg, model)
    opt = DILRAN_RECIPE.build_optimizer(model.parameters(), cfg, torch.device("cpu"))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    mri = (0.5 + 0.4 * torch.sin(3 * xx) * torch.cos(2 * yy))[None, None]
    pet = F.avg_pool2d(mri, 3, 1, 1)
    losses = []
    for i in range(15):
        opt.zero_grad()
        loss, terms = loss_fn(model, mri, pet)
        loss.backward()
        if i == 0:
            trainable = [n for n, p in model.named_parameters() if p.requires_grad]
            assert all(p.grad is not None for p in model.parameters() if p.requires_grad), trainable
            frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
            assert frozen and all(
                n.startswith(("fe.conv_id", "fe.conv2", "fe.bnorm", "fe.fe.dilran.bnorm"))
                for n in frozen
            )
        opt.step()
        losses.append(float(loss.detach()))
    assert set(terms) == {"mse", "grad"}
    assert losses[-1] < 0.5 * losses[0]
