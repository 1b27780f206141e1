"""Tests for fusion3d.learned.devices: no silent CPU fallback, autocast, throughput switches."""

from __future__ import annotations

import pytest
import torch

from fusion3d.learned import devices
from fusion3d.learned.devices import (
    GPUUnavailableError,
    apply_channels_last,
    autocast_context,
    cuda_report,
    make_adam,
    maybe_compile,
    require_gpu,
    resolve_device,
    to_device,
)


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without a usable CUDA device, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_cuda_report_says_what_is_there(no_cuda):
    info = cuda_report()
    assert info["torch"] == torch.__version__
    assert info["cuda_build"] == torch.version.cuda
    assert info["cuda_visible_devices"] == ""
    assert info["device_count"] == 0 and info["available"] is False


def test_require_gpu_without_cuda_stops_with_what_was_found(no_cuda):
    with pytest.raises(GPUUnavailableError) as err:
        require_gpu()
    msg = str(err.value)
    assert "resources.gpu: true" in msg
    assert torch.__version__ in msg
    assert ("CPU-only build" in msg) == (torch.version.cuda is None)
    assert "CUDA_VISIBLE_DEVICES=''" in msg
    assert "0 CUDA device(s)" in msg
    assert "gpu: false" in msg  # how to run on the CPU on purpose


def test_resolve_device_never_falls_back_to_cpu_when_a_gpu_is_required(no_cuda):
    assert resolve_device(None) == torch.device("cpu")  # no GPU asked for: CPU, with a warning
    with pytest.raises(GPUUnavailableError):
        resolve_device(None, gpu=True)
    with pytest.raises(GPUUnavailableError, match="'cuda:1'"):
        resolve_device("cuda:1")
    with pytest.raises(GPUUnavailableError):
        resolve_device("cpu", gpu=True)


def test_resolve_device_refuses_cpu_when_the_study_asks_for_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(devices.torch.version, "cuda", "12.8")
    assert resolve_device(None, gpu=True) == torch.device("cuda")
    with pytest.raises(GPUUnavailableError, match="device 'cpu' was requested"):
        resolve_device("cpu", gpu=True)


def test_require_gpu_counts_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices.torch.version, "cuda", "12.8")
    assert require_gpu(2) == torch.device("cuda")
    with pytest.raises(GPUUnavailableError, match="asks for 3 GPU"):
        require_gpu(3)


def test_autocast_context():
    lin = torch.nn.Linear(4, 4)
    x = torch.rand(2, 4)
    cpu = torch.device("cpu")
    with autocast_context(cpu, "auto"):  # auto: full precision off CUDA
        assert lin(x).dtype == torch.float32
    with autocast_context(cpu, "off"):
        assert lin(x).dtype == torch.float32
    with autocast_context(cpu, "bf16"):
        assert lin(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp must be"):
        autocast_context(cpu, "fp8")


def test_fused_adam_first_step_follows_the_adam_recipe():
    # Adam's first step (bias-corrected) is p - lr * g / (|g| + eps)
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(10))
    p0 = p.detach().clone()
    opt = make_adam([p], 0.1, fused=True, device=torch.device("cpu"))
    assert opt.defaults.get("fused") in (True, None)  # fused where torch has it for the CPU
    (p * torch.arange(10.0)).sum().backward()
    g = torch.arange(10.0)
    opt.step()
    torch.testing.assert_close(p.detach(), p0 - 0.1 * g / (g.abs() + 1e-8))
    assert make_adam([p], 0.1, fused=False, device=torch.device("cpu")).defaults["fused"] in (
        None,
        False,
    )


def test_channels_last_and_compile_switches():
    conv = torch.nn.Conv3d(2, 4, 3)
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    apply_channels_last(conv, 3, True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    conv2 = torch.nn.Conv2d(2, 4, 3)
    apply_channels_last(conv2, 2, False)
    assert conv2.weight.is_contiguous()
    assert maybe_compile(conv, False) is conv


def test_to_device_copies_values():
    x = torch.rand(3)
    y = to_device(x, torch.device("cpu"))
    torch.testing.assert_close(x, y)


def test_train_and_infer_stop_at_once_when_the_study_asks_for_a_gpu(no_cuda, tmp_path):
    """Before any data or model is read: the paths need not exist."""
    from fusion3d.learned.inference import fuse_items
    from fusion3d.learned.training import train_model

    with pytest.raises(GPUUnavailableError, match="resources.gpu: true"):
        train_model(
            [("s", tmp_path / "no.nii.gz", tmp_path / "no.nii.gz")],
            [],
            tmp_path / "state",
            model_config={},
            train_config={},
            gpu=True,
        )
    with pytest.raises(GPUUnavailableError, match="resources.gpu: true"):
        fuse_items(tmp_path / "no_model.pt", [], tmp_path / "fused", gpu=True)
    assert not (tmp_path / "state").exists() and not (tmp_path / "fused").exists()
