"""What the ``train`` stage needs to know of one network: its training recipe.

Every trained method of the study (DC2Fusion in 2D and 3D, and the published 2D networks
SwinFuse, MATR and DILRAN) trains through the same loop (:mod:`fusion3d.learned.training`:
the streaming loader, exact resume, fingerprints, validation-based selection, DDP). What
differs between them is a :class:`Recipe`:

- ``architecture``: the architecture key (``"dcfb"``, ``"swinfuse"``, ``"matr"``,
  ``"dilran"``), written into every checkpoint so that inference rebuilds the right
  network. (A *method* is a study method of :mod:`fusion3d.methods`, e.g. ``"dcfb3d"``,
  whose :attr:`~fusion3d.methods.Method.architecture` names its recipe; a *network* is
  the ``nn.Module``);
- ``model_class``: the network (``spatial_dims``, ``size_divisor``, ``init_args``, a
  ``forward`` for training and a ``fuse(mri, pet)`` for inference, both on ``(B, 1, *S)``
  tensors on the [0, 1] scale);
- ``defaults``: the published training settings, as train-config keys. The keys of
  :data:`COMMON_DEFAULTS` exist for every recipe; a recipe may add its own (loss weights,
  optimiser constants, schedule). They and their checks (``check_config``) live in
  :mod:`fusion3d.learned.settings`, without torch, one class per architecture that the
  recipe inherits: the driver checks a study's config with the same code;
- :meth:`Recipe.build_loss`: a module whose ``forward(fwd, mri, pet)`` runs ``fwd`` (the
  model's forward, possibly DDP-wrapped, already under autocast, returning float32) on the
  training batch and returns ``(loss, {term: float})``;
- :meth:`Recipe.build_optimizer` and :meth:`Recipe.build_scheduler` (stepped once per epoch);
- :meth:`Recipe.on_fresh_start`: a data-dependent initialisation before epoch 1 (DC2Fusion
  calibrates its output scale), or nothing;
- :meth:`Recipe.convert_published`: a state_dict saved by the published code ->
  ``(init_args, our state_dict)`` (``fusion3d import-weights``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from fusion3d.learned.settings import (
    COMMON_DEFAULTS,
    RUN_CONTROL_KEYS,
    TrainSettings,
    check_positive_number,
)

__all__ = ["COMMON_DEFAULTS", "RUN_CONTROL_KEYS", "Recipe", "check_positive_number"]


class Recipe(TrainSettings):
    """The training recipe of one architecture (see the module docstring).

    Subclasses inherit their architecture's settings (``architecture``, ``defaults``,
    ``check_config``: :mod:`fusion3d.learned.settings`, no torch), set ``model_class`` and
    implement :meth:`build_loss`; the other methods have the common behaviour: Adam with the
    recipe's ``lr`` (and ``betas``/``eps`` when its defaults have them), a constant
    learning rate, no data-dependent initialisation.
    """

    model_class: type[nn.Module]

    # -- building ----------------------------------------------------------------------------
    def build_model(self, model_config: Mapping[str, Any]) -> nn.Module:
        """The network from its constructor arguments (``models.<method>`` of the config).

        Raises ValueError naming a key the network does not have (or its new spelling).
        """
        from fusion3d.learned.models.shared import check_keys, constructor_keys

        config = dict(model_config)
        check_keys(
            f"{self.model_class.__name__} model config",
            config,
            constructor_keys(self.model_class),
            getattr(self.model_class, "renamed_args", None),
        )
        return self.model_class(**config)

    def build_loss(self, cfg: Mapping[str, Any], model: nn.Module) -> nn.Module:
        """The loss module: ``loss(fwd, mri, pet) -> (scalar loss, {term: float})``."""
        raise NotImplementedError(f"recipe {self.architecture!r} has no loss")

    def build_optimizer(
        self, params: Iterable[nn.Parameter], cfg: Mapping[str, Any], device: torch.device
    ) -> torch.optim.Optimizer:
        """Adam with ``lr`` (and ``betas``, ``eps``, ``weight_decay`` when ``cfg`` has them)."""
        from fusion3d.learned.devices import make_adam

        extra = {k: cfg[k] for k in ("betas", "eps", "weight_decay") if k in cfg}
        if "betas" in extra:
            extra["betas"] = tuple(float(b) for b in extra["betas"])
        return make_adam(params, cfg["lr"], fused=cfg["fused_adam"], device=device, **extra)

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any]
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The learning-rate schedule, stepped once per epoch (default: constant)."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    # -- training hooks ------------------------------------------------------------------------
    def on_fresh_start(
        self, model: nn.Module, mri: torch.Tensor, pet: torch.Tensor, cfg: Mapping[str, Any]
    ) -> str | None:
        """A data-dependent initialisation on the first batch before epoch 1; returns a log line."""
        return None

    # -- published weights -----------------------------------------------------------------
    def convert_published(
        self, state: dict[str, torch.Tensor], **sizes: Any
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        """A state_dict saved by the published code -> ``(init_args, our state_dict)``."""
        raise NotImplementedError(f"recipe {self.architecture!r} cannot import published weights")

    def __repr__(self) -> str:
        return f"<Recipe {self.architecture}>"
