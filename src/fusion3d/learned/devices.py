"""Devices and numeric precision for the networks: one place for training and inference.

- :func:`resolve_device` picks the device (``None``: CUDA when usable, else the CPU).
- :func:`require_gpu` is the "no silent CPU fallback" check: a study configured with
  ``resources.gpu: true`` stops at once when no usable CUDA device is there, with a
  message saying what was found and how to run on the CPU on purpose.
- :func:`autocast_context` is the bf16 autocast switch (``amp`` in the train config).
- :func:`to_device` is the (non-blocking from pinned memory) host -> device copy.
- :func:`apply_channels_last`, :func:`make_adam` and :func:`maybe_compile` are the
  throughput switches of the train config (``channels_last``, ``fused_adam``, ``compile``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

import torch
from torch import nn

__all__ = [
    "AMP_CHOICES",
    "GPUUnavailableError",
    "apply_channels_last",
    "autocast_context",
    "cuda_report",
    "make_adam",
    "maybe_compile",
    "require_gpu",
    "resolve_device",
    "to_device",
]

log = logging.getLogger(__name__)

AMP_CHOICES = ("auto", "bf16", "off")

CPU_ON_PURPOSE = (
    "To run on the CPU on purpose, set `resources: {gpu: false}` in the study config (or "
    "add a second --configfile holding that line); to use a GPU, install the CUDA build of "
    "torch that fits the driver (see README) and run where `nvidia-smi` lists a GPU."
)


class GPUUnavailableError(RuntimeError):
    """A GPU was required (``resources.gpu: true``) but no usable CUDA device was found."""


def cuda_report() -> dict[str, object]:
    """What this process sees of CUDA: torch version, CUDA build, visible devices, count.

    Returns
    -------
    dict
        ``torch``, ``cuda_build`` (``torch.version.cuda`` or ``None`` for a CPU-only
        build), ``cuda_visible_devices`` (the environment variable, ``None`` when unset),
        ``device_count`` and ``available`` (``torch.cuda.is_available()``).
    """
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_count": torch.cuda.device_count() if torch.version.cuda else 0,
        "available": bool(torch.cuda.is_available()),
    }


def require_gpu(gpus: int = 1, *, what: str = "resources.gpu: true") -> torch.device:
    """Return the CUDA device, or stop with :class:`GPUUnavailableError` (never a CPU fallback).

    Parameters
    ----------
    gpus : int
        How many devices the job needs (``resources.gpus``).
    what : str
        The setting that asked for the GPU, named in the message.

    Raises
    ------
    GPUUnavailableError
        When CUDA is not usable or fewer than ``gpus`` devices are visible; the message
        lists the torch version, whether torch is a CUDA build, ``CUDA_VISIBLE_DEVICES``
        and the device count, and says how to run on the CPU on purpose.
    """
    info = cuda_report()
    if info["available"] and int(info["device_count"]) >= gpus:
        return torch.device("cuda")
    build = f"CUDA {info['cuda_build']} build" if info["cuda_build"] else "a CPU-only build"
    visible = info["cuda_visible_devices"]
    found = (
        f"torch {info['torch']} ({build}), CUDA_VISIBLE_DEVICES="
        f"{'<unset>' if visible is None else repr(visible)}, "
        f"{info['device_count']} CUDA device(s) visible, torch.cuda.is_available()="
        f"{info['available']}"
    )
    raise GPUUnavailableError(
        f"{what} asks for {gpus} GPU(s) but none usable was found: {found}. {CPU_ON_PURPOSE}"
    )


def resolve_device(device: str | torch.device | None, *, gpu: bool = False) -> torch.device:
    """The device to run the networks on.

    Parameters
    ----------
    device : str or torch.device, optional
        An explicit device (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ``None`` picks CUDA
        when usable, else the CPU with a warning.
    gpu : bool
        The study asked for a GPU (``resources.gpu``): without a usable CUDA device
        this raises :class:`GPUUnavailableError` instead of falling back to the CPU.

    Raises
    ------
    GPUUnavailableError
        ``gpu`` is true, or ``device`` names CUDA, and no usable CUDA device exists.
    """
    if gpu:
        cuda = require_gpu()
        if device is None:
            return cuda
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("no CUDA device found: running the network on the CPU (slow)")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        require_gpu((dev.index or 0) + 1, what=f"device {str(device)!r}")
    elif gpu:
        raise GPUUnavailableError(
            f"resources.gpu: true but device {str(device)!r} was requested; {CPU_ON_PURPOSE}"
        )
    if dev.type == "cpu":
        log.warning("running the network on the CPU (slow)")
    return dev


def autocast_context(device: torch.device, amp: str | bool | None = "auto"):
    """bf16 autocast for ``amp`` "auto" on CUDA or "bf16"; a null context otherwise.

    ``amp``: ``"auto"`` (bf16 on CUDA, full precision elsewhere), ``"bf16"`` (bf16 on
    any device, also the CPU) or ``"off"`` (also ``False``/``None``; ``True`` = bf16).
    """
    if amp in ("off", False, None, "none"):
        return contextlib.nullcontext()
    if amp == "auto":
        if device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if amp in ("bf16", True):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {amp!r}")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to ``device``; non-blocking when the source is pinned and the target is CUDA."""
    return tensor.to(device, non_blocking=device.type == "cuda" and tensor.is_pinned())


def memory_format(spatial_dims: int, channels_last: bool) -> torch.memory_format:
    """``torch.channels_last_3d`` (3D) / ``torch.channels_last`` (2D) when switched on."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def apply_channels_last(model: nn.Module, spatial_dims: int, enabled: bool) -> nn.Module:
    """Store the convolution weights channels-last (``train.channels_last``); a no-op when off."""
    if enabled:
        model.to(memory_format=memory_format(spatial_dims, True))
    return model


def make_adam(
    params: Iterable[nn.Parameter], lr: float, *, fused: bool, device: torch.device, **kwargs
) -> torch.optim.Adam:
    """Adam, fused into one kernel per step when ``fused`` and the device supports it.

    ``kwargs`` (``betas``, ``eps``, ``weight_decay``) go to :class:`torch.optim.Adam`.

    PyTorch's fused Adam exists for CUDA and (torch >= 2.4) the CPU; where it does not,
    the default (for-each) implementation is used with an info line. Both compute the
    same update up to floating-point rounding.
    """
    if fused:
        try:
            params = list(params)
            return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:  # device without fused Adam
            log.info("fused Adam unavailable on %s (%s): using the default Adam", device, exc)
    return torch.optim.Adam(params, lr=lr, **kwargs)


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``train.compile`` is on, else the model itself.

    The compiled module shares the parameters of ``model``; save ``model``'s state,
    not the compiled wrapper's.
    """
    if not enabled:
        return model
    return torch.compile(model)
