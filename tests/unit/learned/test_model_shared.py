"""What several networks share (fusion3d.learned.models.shared) and the converters' module."""

from __future__ import annotations

import pytest
import torch

from fusion3d.learned.models.published import CONVERTERS, PUBLISHED_NETWORKS, identify_published
from fusion3d.learned.models.shared import (
    DCFBDropPath,
    DropPath,
    MATRDropPath,
    check_keys,
    quantize_8bit,
    unwrap_state_dict,
)


def _draw(module, x, seed=3):
    torch.manual_seed(seed)
    return module.train()(x)


def test_swinfuse_uses_monais_drop_path_and_the_other_two_are_named_differences():
    from monai.networks.layers import DropPath as MonaiDropPath

    assert DropPath is MonaiDropPath
    x = torch.randn(64, 3, 4, 4)
    monai, dcfb, matr = (
        _draw(DropPath(0.2), x),
        _draw(DCFBDropPath(0.2), x),
        _draw(MATRDropPath(0.2), x),
    )
    assert torch.equal(monai, matr)  # MATR's equals MONAI's for p < 1 ...
    torch.testing.assert_close(dcfb, monai, rtol=1e-6, atol=0)  # DC2Fusion's: one rounding apart
    assert not torch.equal(dcfb, monai)  # ... which is why it is kept (bit-identical trainings)
    assert torch.equal((monai == 0), (dcfb == 0))  # the same samples dropped: one RNG draw each
    every = torch.ones(4, 2)
    assert torch.equal(_draw(DropPath(1.0), every), torch.zeros(4, 2))
    assert torch.isnan(_draw(MATRDropPath(1.0), every)).all()  # the unconditional division
    with pytest.raises(ValueError):
        DCFBDropPath(1.0)
    for module in (DropPath(0.5), DCFBDropPath(0.5), MATRDropPath(0.5)):
        assert torch.equal(module.eval()(x), x)


def test_quantize_8bit_and_unwrap_state_dict():
    x = torch.tensor([-0.1, 0.0, 0.5 / 255, 0.5, 1.0, 1.2])
    assert torch.equal(quantize_8bit(x), torch.round(x.clamp(0, 1) * 255) / 255)
    sd = {"a.weight": torch.zeros(2), "b": torch.ones(1)}
    for wrapped in (sd, {"state_dict": sd}, {"model": {f"module.{k}": v for k, v in sd.items()}}):
        got = unwrap_state_dict(wrapped)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="x.pt: entries that are not tensors: \\['epoch'\\]"):
        unwrap_state_dict({**sd, "epoch": 3}, "x.pt")
    with pytest.raises(ValueError, match="non-empty state_dict"):
        unwrap_state_dict({}, "x.pt")


def test_check_keys_names_the_new_spelling_and_the_known_keys():
    check_keys("N", ["a"], ["a", "quantize_input"])
    with pytest.raises(ValueError, match="^N: 'quantise_input' is now spelled 'quantize_input'$"):
        check_keys("N", ["quantise_input"], ["a", "quantize_input"])
    with pytest.raises(
        ValueError, match="^N: unknown key\\(s\\) \\['b'\\]; known: a, quantize_input$"
    ):
        check_keys("N", ["b"], ["quantize_input", "a"])
    with pytest.raises(ValueError, match="known: none$"):
        check_keys("N", ["b"], [])


@pytest.mark.parametrize("network", ["swinfuse", "matr", "dilran"])
def test_one_converter_per_network_and_recognition(network):
    from fusion3d.learned.recipes import recipe_for

    assert set(CONVERTERS) == set(PUBLISHED_NETWORKS)
    sizes = {
        "swinfuse": {"img_size": 16, "window_size": 8, "embed_dim": 8, "num_heads": [1, 1, 2]},
        "dilran": {"channels": 8, "recon_channels": [8, 4]},
        "matr": {},
    }[network]
    net = recipe_for(network).build_model(sizes)
    state = {"model": {f"module.{k}": v for k, v in net.state_dict().items()}}
    assert identify_published(state) == network
    init_args, ours = CONVERTERS[network](
        state, **({"img_size": 16} if network == "swinfuse" else {})
    )
    assert init_args == net.init_args and ours.keys() == net.state_dict().keys()
    assert identify_published({"x": torch.zeros(1)}) is None
