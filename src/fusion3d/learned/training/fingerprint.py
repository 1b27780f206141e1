"""Training: the fingerprint of a run (what a checkpoint belongs to) and what changed."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

from fusion3d.learned.inference import checkpoint_architecture
from fusion3d.learned.recipes import RUN_CONTROL_KEYS
from fusion3d.learned.training.config import Item, plain
from fusion3d.learned.training.run import TrainingRun

log = logging.getLogger(__name__)


def split_rows(train_items: Sequence[Item], val_items: Sequence[Item]) -> dict:
    """The split rows a run trains on: ``{"train": [[id, mri, pet], ...], "val": [...]}``."""
    return {
        name: [[str(part) for part in item] for item in items]
        for name, items in (("train", train_items), ("val", val_items))
    }


def _sha256_json(value) -> str:
    """SHA-256 of the canonical JSON of ``value`` (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def training_fingerprint(split: dict, init_args: dict, cfg: dict) -> dict:
    """What a run's state belongs to: SHA-256 of each part and of the whole.

    Parameters
    ----------
    split : dict
        The split rows (``{"train": [[subject_id, mri_path, pet_path], ...], "val": [...]}``).
    init_args : dict
        The resolved model config (:func:`model_init_args`).
    cfg : dict
        The resolved training config; :data:`RUN_CONTROL_KEYS` are left out.

    Returns
    -------
    dict
        ``{"split": sha, "model_config": sha, "train_config": sha, "sha256": sha}``.
    """
    parts = {
        "split": _sha256_json(split),
        "model_config": _sha256_json(init_args),
        "train_config": _sha256_json(_fingerprinted_train_config(cfg)),
    }
    return {**parts, "sha256": _sha256_json(parts)}


def _fingerprinted_train_config(cfg: dict) -> dict:
    """The training config without :data:`RUN_CONTROL_KEYS`."""
    return {k: v for k, v in cfg.items() if k not in RUN_CONTROL_KEYS}


def fingerprint_changes(ckpt: dict, run: TrainingRun) -> str | None:
    """What differs between a checkpoint and this run, in words; ``None`` when it belongs to it."""
    old = ckpt.get("fingerprint")
    if not isinstance(old, dict) or "sha256" not in old:
        return "the checkpoint has no fingerprint (written by an older fusion3d)"
    if checkpoint_architecture(ckpt) != run.recipe.architecture:
        return f"architecture {checkpoint_architecture(ckpt)!r} -> {run.recipe.architecture!r}"
    if old["sha256"] == run.fingerprint["sha256"]:
        return None
    changes = []
    if old.get("split") != run.fingerprint["split"]:
        changes.append(_split_changes(ckpt.get("split") or {}, run.split))
    if old.get("model_config") != run.fingerprint["model_config"]:
        changes.append("model config " + _dict_changes(ckpt.get("init_args"), run.init_args))
    if old.get("train_config") != run.fingerprint["train_config"]:
        before = _fingerprinted_train_config(ckpt.get("train_config") or {})
        changes.append(
            "train config " + _dict_changes(before, _fingerprinted_train_config(run.cfg))
        )
    return "; ".join(changes) or "fingerprint differs"


def _dict_changes(old: dict | None, new: dict) -> str:
    """``key old -> new`` for every key that differs."""
    old = plain(old or {})
    keys = sorted(set(old) | set(new))
    diffs = [
        f"{k} {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
        for k in keys
        if old.get(k, "<unset>") != new.get(k, "<unset>")
    ]
    return ", ".join(diffs) if diffs else "(values equal, types differ)"


def _split_changes(old: dict, new: dict) -> str:
    """Subjects added, removed or with other image paths, per split part."""
    words = []
    for part in ("train", "val"):
        before = {row[0]: row for row in old.get(part, [])}
        after = {row[0]: row for row in new.get(part, [])}
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        moved = sorted(s for s in set(after) & set(before) if after[s] != before[s])
        for label, subjects in (("added", added), ("removed", removed), ("new paths", moved)):
            if subjects:
                shown = ", ".join(subjects[:5]) + (" ..." if len(subjects) > 5 else "")
                words.append(f"{part} {label}: {len(subjects)} ({shown})")
        if not (added or removed or moved) and list(before) != list(after):
            words.append(f"{part}: order of subjects")
    return "split " + ("; ".join(words) if words else "rows differ")
