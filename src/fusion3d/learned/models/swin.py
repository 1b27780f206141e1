"""Swin-transformer window helpers in 2D, shared by the published 2D baselines.

SwinFuse (``net.py:30-68, 152-171`` of Zhishe-Wang/SwinFuse) and MATR (``Networks/net.py:184-256``
of tthinking/MATR) both build on the Swin reference code, and their window partition, its
inverse, the relative-position index and the shifted-window attention mask are the same
functions there, and so is their MLP (:class:`Mlp`); here they are one implementation. (DC2Fusion's windows, in 2D and 3D, are
:mod:`fusion3d.learned.models.layers`.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "Mlp",
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]


def window_partition(x: Tensor, ws: int) -> Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws, ws, C)``.

    SwinFuse ``net.py:30``, MATR ``net.py:184-190``.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition` (SwinFuse ``net.py:37``, MATR ``net.py:193-198``)."""
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def relative_position_index(ws: int) -> Tensor:
    """``(ws^2, ws^2)`` index into the ``(2 ws - 1)^2`` bias table.

    SwinFuse ``net.py:59-68``, MATR ``net.py:95-103``.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> Tensor:
    """``(nW, ws^2, ws^2)`` attention mask of the shifted windows.

    Regions of the shifted image get labels; token pairs of one window with different labels
    get -100. SwinFuse ``net.py:152-171``, MATR ``calculate_mask`` (``net.py:235-256``).
    """
    img_mask = torch.zeros((1, h, w, 1))
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for hs in slices:
        for wsl in slices:
            img_mask[:, hs, wsl, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, ws).view(-1, ws * ws)
    mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class Mlp(nn.Module):
    """``fc1`` -> GELU -> dropout -> ``fc2`` -> dropout (SwinFuse ``net.py:11``, MATR
    ``net.py:164-180``): ``(..., dim) -> (..., dim)``, parameters ``fc1``, ``fc2``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
