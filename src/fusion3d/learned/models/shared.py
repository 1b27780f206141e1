"""What more than one network uses: stochastic depth, the 8-bit input grid, bare state_dicts.

Stochastic depth (drop the residual branch of a whole sample with probability ``p``, scale
the kept ones by ``1 / (1 - p)``) comes in three floating-point forms here, because each
network's trained weights and seeded training runs are defined by its own:

- :class:`DropPath` is MONAI's (``monai.networks.layers.DropPath``): ``x * (mask / keep)``,
  the division skipped when ``keep == 0``. SwinFuse uses it (the published code takes
  timm's, the same function);
- :class:`DCFBDropPath`: ``(x * mask) / keep``. The same value as MONAI's up to one
  rounding (about half of the elements differ in the last bit), which a seeded DC2Fusion
  training would show; DC2Fusion keeps it so that its trainings stay bit-identical;
- :class:`MATRDropPath`: ``x * (mask / keep)`` with an unconditional division, so
  ``p = 1`` gives NaN where MONAI's gives 0. Equal to MONAI's for ``p < 1`` (MATR's
  published rate is 0: it never runs in the published setting).

All three draw the mask with one ``bernoulli_`` call of the same shape, so they consume
the random stream alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from monai.networks.layers import DropPath
from torch import Tensor, nn

__all__ = [
    "STATE_DICT_WRAPPERS",
    "DCFBDropPath",
    "check_keys",
    "constructor_keys",
    "DropPath",
    "MATRDropPath",
    "quantize_8bit",
    "unwrap_state_dict",
]

#: Keys under which a saved file may hold its state_dict (the first that holds tensors wins).
STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "model_state")


def _mask(x: Tensor, keep: float) -> Tensor:
    """One Bernoulli(keep) draw per sample, shaped ``(B, 1, ..., 1)`` to broadcast over ``x``."""
    return x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)


class DCFBDropPath(nn.Module):
    """DC2Fusion's stochastic depth: ``(x * mask) / keep`` (module docstring); ``p`` in [0, 1)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, ...) -> (B, ...)``, identity in eval mode or when ``p == 0``."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        return x * _mask(x, keep) / keep


class MATRDropPath(nn.Module):
    """MATR's stochastic depth: ``x * (mask / keep)``, always divided (module docstring)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, ...) -> (B, ...)``, identity in eval mode or when ``p == 0``."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        return x * _mask(x, keep).div_(keep)


def quantize_8bit(x: Tensor) -> Tensor:
    """Round a [0, 1] image to the 256 levels ``k / 255`` of an 8-bit grey image.

    ``clip(x, 0, 1)``, then ``round(255 x) / 255`` in ``x``'s dtype: what an 8-bit PNG or
    PIL ``'L'`` image divided by 255 gives (torchvision's ``ToTensor``; MATR's and DILRAN's
    published input pipelines).
    """
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def unwrap_state_dict(state: Any, who: str = "published weights") -> dict[str, Tensor]:
    """The bare state_dict (name -> tensor) of what a published script saved.

    Accepts a state_dict or one under a wrapper key of :data:`STATE_DICT_WRAPPERS`; drops
    DataParallel's ``module.`` prefix. Raises ValueError, starting with ``who``, for an
    empty mapping, a non-mapping or entries that are not tensors (naming them).
    """
    if isinstance(state, Mapping):
        for key in STATE_DICT_WRAPPERS:
            inner = state.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, Tensor) for v in inner.values())
            ):
                state = inner
                break
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{who}: expected a non-empty state_dict (a dict of name -> tensor)")
    bad = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{who}: entries that are not tensors: {bad[:5]}{more}")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def constructor_keys(model_class: type) -> dict[str, Any]:
    """The keyword arguments of ``model_class`` with their defaults (its configuration keys)."""
    params = inspect.signature(model_class.__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self"}


def check_keys(who: str, keys: Iterable[str], known: Iterable[str], renamed=None) -> None:
    """Refuse keys that are not ``known``: ValueError starting with ``who``, one line.

    A key of ``renamed`` (old spelling -> new; ``quantise_*`` -> ``quantize_*`` always: the
    project spells it with a z) is named with its new spelling; any other unknown key is
    listed with every known one.
    """
    keys, known = list(keys), sorted(known)
    renamed = {
        **{k: k.replace("quantise", "quantize") for k in keys if "quantise" in k},
        **dict(renamed or {}),
    }
    old = [k for k in keys if k in renamed and k not in known and renamed[k] in known]
    if old:
        spelled = ", ".join(f"{k!r} is now spelled {renamed[k]!r}" for k in old)
        raise ValueError(f"{who}: {spelled}")
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(f"{who}: unknown key(s) {unknown}; known: {', '.join(known) or 'none'}")
