"""MATR port (fusion3d.learned.models.matr) and its recipe (fusion3d.learned.recipes.matr)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusion3d.learned.models.matr import MATR, AdaptiveConv2d
from fusion3d.learned.models.published import convert_matr as convert_published_state_dict
from fusion3d.learned.models.shared import quantize_8bit
from fusion3d.learned.recipes.matr import (
    LOSS_TERMS,
    MATR_RECIPE,
    MATRLoss,
    RMILoss,
    gaussian_window,
    ssim_loss,
)

torch.set_num_threads(1)
TINY = dict(out_channel=4, num_heads=2, depth=1)


def pair(size: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mri = torch.rand(batch, 1, size, size, generator=g)
    pet = F.avg_pool2d(torch.rand(batch, 1, size, size, generator=g), 3, 1, 1)
    return mri, pet


@pytest.fixture(scope="module")
def model() -> MATR:
    torch.manual_seed(0)
    return MATR().eval()


@pytest.mark.parametrize("size", [64, 128])
def test_shapes(model, size):
    mri, pet = pair(size, batch=2 if size == 64 else 1)
    with torch.no_grad():
        assert model(mri, pet).shape == mri.shape
        assert model.fuse(mri, pet).shape == mri.shape
    assert model.spatial_dims == 2 and model.size_divisor == 1


def test_published_sizes(model):
    sd = model.state_dict()
    assert sd["convInput.conv1.weight"].shape == (16, 2, 3, 3)
    assert sd["conv.conv1.ci.weight"].shape == (16, 16)
    assert sd["patch_embed.norm.weight"].shape == (96,)
    assert sd["basicLayer.blocks.2.attn.relative_position_bias_table"].shape == (1, 8)
    assert sd["basicLayer.blocks.0.mlp.fc1.weight"].shape == (64, 16)
    assert len(sd) == 95  # the shipped models/model_10.pth has 95 entries


def test_init_args_rebuild_identical(model):
    args = json.loads(json.dumps(model.init_args))
    rebuilt = MATR(**args)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    mri, pet = pair(32)
    with torch.no_grad():
        assert torch.equal(rebuilt.fuse(mri, pet), model.fuse(mri, pet))
    assert rebuilt.init_args == model.init_args


def test_bad_argument_named():
    with pytest.raises(ValueError, match="depth"):
        MATR(depth=2.5)


def test_convert_identity_and_wrappers(model):
    mri, pet = pair(32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for wrapped in (
        state,
        {"state_dict": state},
        {"model": {"module." + k: v for k, v in state.items()}},
    ):
        args, ours = convert_published_state_dict(wrapped)
        assert args == model.init_args
        net = MATR(**args)
        net.load_state_dict(ours, strict=True)
        with torch.no_grad():
            assert torch.equal(net.eval().fuse(mri, pet), model.fuse(mri, pet))


def test_convert_infers_sizes():
    torch.manual_seed(1)
    tiny = MATR(**TINY, mlp_ratio=2.0, embed_dim=12)
    args, _ = convert_published_state_dict(tiny.state_dict())
    assert args == tiny.init_args
    with pytest.raises(ValueError, match="depth=3 but the weights say 1"):
        convert_published_state_dict(tiny.state_dict(), depth=3)
    with pytest.raises(ValueError, match="unknown key"):
        convert_published_state_dict(tiny.state_dict(), width=3)


def test_convert_names_bad_keys(model):
    state = dict(model.state_dict())
    missing = dict(state)
    del missing["conv.conv1.gd2.weight"]
    with pytest.raises(ValueError, match=r"missing key 'conv.conv1.gd2.weight'"):
        convert_published_state_dict(missing)
    extra = {**state, "head.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"unexpected key 'head.weight'"):
        convert_published_state_dict(extra)
    shaped = {**state, "basicLayer.blocks.1.attn.proj.weight": torch.zeros(16, 15)}
    with pytest.raises(ValueError, match=r"mis-shaped key 'basicLayer.blocks.1.attn.proj.weight'"):
        convert_published_state_dict(shaped)
    bad_block = {**state, "basicLayer.blocks.0.mlp.fc1.weight": torch.zeros(65, 16)}
    with pytest.raises(ValueError, match=r"expected \(64, 16\), found \(65, 16\)"):
        convert_published_state_dict(bad_block)


def test_fuse_is_the_published_inference(model):
    """Quantised inputs, channel 0 = PET, channel 1 = MRI, eval mode, no rescaling."""
    mri, pet = pair(32)
    model.train()
    with torch.no_grad():
        fused = model.fuse(mri, pet)
        assert model.training  # mode restored
        model.eval()
        direct = model.forward_input(torch.cat((quantize_8bit(pet), quantize_8bit(mri)), 1))
    assert torch.equal(fused, direct)
    assert fused.abs().max() <= 1.0  # tanh: the [0, 1] image scale (Test.py writes 255 * out)
    assert not torch.equal(fused, model.forward_input(torch.cat((mri, pet), 1)))


def test_quantize_8bit():
    x = torch.tensor([-0.2, 0.0, 0.6 / 255, 0.31, 1.0, 1.7])
    levels = torch.tensor([0.0, 0.0, 1.0, 79.0, 255.0, 255.0]) / 255
    assert torch.equal(quantize_8bit(x), levels)
    raw = MATR(**TINY, quantize_input=False)
    mri, pet = pair(16)
    with torch.no_grad():
        assert torch.equal(raw.fuse(mri, pet), raw.eval()(mri, pet))


def test_adaptive_conv_direct_formula():
    """One adaptive conv equals its formula written out with loops over the kernel gate."""
    torch.manual_seed(2)
    conv = AdaptiveConv2d(2, 4, 3, padding=1, bias=False).eval()
    for bn in (conv.ce_bn, conv.ci_bn2, conv.ci_bn):
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 2, 6, 6)

    def bn(t, m):
        return (t - m.running_mean[:, None]) / torch.sqrt(
            m.running_var[:, None] + m.eps
        ) * m.weight[:, None] + m.bias[:, None]

    with torch.no_grad():
        lat = F.adaptive_avg_pool2d(x, 3).reshape(2, 9) @ conv.ce.weight.T  # (ic, 5)
        s = torch.relu(bn(lat, conv.ce_bn)) @ conv.gd.weight.T  # (ic, 9)
        m = (torch.relu(bn(lat, conv.ci_bn2)).T @ conv.ci.weight.T).T  # (oc, 5)
        m = torch.relu(bn(m, conv.ci_bn)) @ conv.gd2.weight.T  # (oc, 9)
        gate = torch.sigmoid(s[None] + m[:, None])  # (oc, ic, 9)
        kernel = (gate * conv.weight.reshape(4, 2, 9)).reshape(4, 2, 3, 3)
        assert torch.allclose(conv(x), F.conv2d(x, kernel, padding=1), atol=1e-6)


def test_non_square_switch():
    mri, pet = pair(16)
    mri, pet = mri[..., :12], pet[..., :12]
    strict = MATR(**TINY).eval()
    with pytest.raises(ValueError, match="allow_non_square"):
        strict.fuse(mri, pet)
    loose = MATR(**TINY, allow_non_square=True).eval()
    loose.load_state_dict(strict.state_dict())
    with torch.no_grad():
        assert loose.fuse(mri, pet).shape == mri.shape
        sq = pair(16)
        assert torch.equal(loose.fuse(*sq), strict.fuse(*sq))


def test_channels_last_same_numbers(model):
    mri, pet = pair(32)
    with torch.no_grad():
        a = model.fuse(mri, pet)
        b = model.fuse(*(t.to(memory_format=torch.channels_last) for t in (mri, pet)))
    assert torch.allclose(a, b, atol=1e-6)


def test_training_forward_updates_batchnorm_nine_times():
    net = MATR(**TINY).train()
    net(*pair(16))
    assert int(net.conv.bn1.num_batches_tracked) == 9  # conv is called 9 times (net.py:432-447)
    assert int(net.convInput.bn1.num_batches_tracked) == 1


# -- loss ------------------------------------------------------------------------------------


def test_gaussian_window():
    w = gaussian_window(11)[0, 0].double()
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    assert np.allclose(w.numpy(), np.outer(g, g) / g.sum() ** 2, atol=1e-7)


@pytest.mark.parametrize(("shift", "L"), [(0.0, 1.0), (-0.9, 2.0)])
def test_ssim_one_window_direct(shift, L):
    """An 11 x 11 image has one valid window: SSIM from weighted moments; L from img1."""
    g = torch.Generator().manual_seed(3)
    a = torch.rand(1, 1, 11, 11, generator=g, dtype=torch.float64)
    a[0, 0, 0, 0] += shift
    b = torch.rand(1, 1, 11, 11, generator=g, dtype=torch.float64)
    w = gaussian_window(11)[0, 0].double()
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    va, vb = (w * a * a).sum() - mu_a**2, (w * b * b).sum() - mu_b**2
    cov = (w * a * b).sum() - mu_a * mu_b
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    assert torch.allclose(ssim_loss(a, b), 1 - s, atol=1e-12)


def rmi_direct(fused: np.ndarray, target: np.ndarray) -> float:
    """RMILoss written out with numpy: 0.5 BCE(logits) + 0.5 RMI bound of sigmoid(fused)."""
    bce = np.mean(np.logaddexp(0, fused) - target * fused)
    prob = 1 / (1 + np.exp(-fused))
    pooled = []
    for img in (target, prob):
        padded = np.pad(img, 1, constant_values=-np.inf)
        h, w = (img.shape[0] + 2 - 3) // 3 + 1, (img.shape[1] + 2 - 3) // 3 + 1
        pooled.append(
            np.array(
                [
                    [padded[3 * i : 3 * i + 3, 3 * j : 3 * j + 3].max() for j in range(w)]
                    for i in range(h)
                ]
            )
        )
    vecs = []
    for img in pooled:
        h, w = img.shape
        v = np.array(
            [img[i : i + 3, j : j + 3].ravel() for i in range(h - 2) for j in range(w - 2)]
        ).T
        vecs.append(v - v.mean(axis=1, keepdims=True))
    y, p = vecs
    eps = 5e-4 * np.eye(9)
    m = y @ y.T - (y @ p.T) @ np.linalg.inv(p @ p.T + eps).T @ (y @ p.T).T
    total = 0.5 * np.linalg.slogdet(m + eps)[1] / 9
    return 0.5 * total + 0.5 * bce


def test_rmi_direct():
    g = torch.Generator().manual_seed(4)
    fused = torch.rand(1, 1, 20, 17, generator=g) * 2 - 1
    target = torch.rand(1, 1, 20, 17, generator=g)
    ours = float(RMILoss()(fused, target))
    assert math.isclose(
        ours,
        rmi_direct(fused[0, 0].double().numpy(), target[0, 0].double().numpy()),
        rel_tol=1e-6,
        abs_tol=1e-6,
    )


def test_matr_loss_weighted_sum_and_argument_order():
    g = torch.Generator().manual_seed(5)
    mri = torch.rand(2, 1, 16, 16, generator=g)
    pet = torch.rand(2, 1, 16, 16, generator=g)
    fused = torch.rand(2, 1, 16, 16, generator=g) * 1.6 - 0.8
    seen = {}

    def fwd(m, p):
        seen["mri"], seen["pet"] = m, p
        return fused

    weights = dict(MATR_RECIPE.defaults["loss_weights"])
    loss, terms = MATRLoss(weights)(fwd, mri, pet)
    q_mri, q_pet = quantize_8bit(mri), quantize_8bit(pet)
    assert torch.equal(seen["mri"], q_mri) and torch.equal(seen["pet"], q_pet)
    rmi = RMILoss()
    want = {
        "ssim_pet": 1.0 * ssim_loss(fused, q_pet),
        "ssim_mri": 1.0 * ssim_loss(fused, q_mri),
        "rmi_pet": 1.0 * rmi(fused, q_pet),
        "rmi_mri": 2.5 * rmi(fused, q_mri),
    }
    assert list(terms) == list(LOSS_TERMS)
    for k, v in want.items():
        assert terms[k] == pytest.approx(float(v), rel=1e-12)
    assert float(loss) == pytest.approx(sum(float(v) for v in want.values()), rel=1e-12)
    assert loss.dtype == torch.float64  # the published RMI is double precision


def test_recipe_defaults_and_checks():
    d = MATR_RECIPE.all_defaults()
    assert (d["epochs"], d["batch_size"], d["lr"], d["eps"]) == (10, 64, 1e-3, 1e-8)
    assert d["betas"] == [0.9, 0.999] and d["augment"] is False
    assert MATR_RECIPE.architecture == "matr" and MATR_RECIPE.model_class is MATR
    for key, bad in (("loss_weights", {"ssim_pet": 1.0}), ("betas", [0.9]), ("eps", 0)):
        cfg = {**d, key: bad}
        with pytest.raises(ValueError, match=key):
            MATR_RECIPE.check_config(cfg, {})


def test_few_steps_lower_the_loss():
    torch.manual_seed(0)
    cfg = {**MATR_RECIPE.all_defaults()}
    MATR_RECIPE.check_config(cfg, {})
    net = MATR_RECIPE.build_model(TINY).train()
    loss_fn = MATR_RECIPE.build_loss(cfg, net)
    opt = MATR_RECIPE.build_optimizer(net.parameters(), cfg, torch.device("cpu"))
    sched = MATR_RECIPE.build_scheduler(opt, cfg)
    mri, pet = pair(24, batch=2)
    losses = []
    for _ in range(8):
        loss, _ = loss_fn(net, mri, pet)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    sched.step()
    assert losses[-1] < losses[0]
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["betas"] == (0.9, 0.999)
