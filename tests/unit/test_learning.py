"""Learning, not just running: the training loss goes down on a tiny cohort.

The other training tests check outputs, checkpoints and exact resume; they pass as well
when the optimizer never changes a weight (a detached loss, a zero learning rate, a
frozen network). This one trains the public :func:`fusion3d.training.train_model` on
four 16^3 subjects for a few epochs at a constant learning rate, without augmentation,
and checks that the epoch loss falls and that the selected model fuses the validation
subject better than the untrained network did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fusion3d.io import save_nifti
from fusion3d.training import train_model

#: A tiny 3D network (3 stages, 8 channels) and a fast, deterministic schedule.
MODEL = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), patch_size=2, window_size=2)
TRAIN = {"epochs": 6, "lr": 3e-3, "poly_power": 0.0, "augment": False, "seed": 0}


def tiny_cohort(root, n_subjects: int = 5, size: int = 16) -> list[tuple[str, str, str]]:
    """``(subject_id, mri, pet)`` items: a ball whose MRI and PET carry different textures."""
    z, y, x = np.mgrid[:size, :size, :size] / size
    ball = ((z - 0.5) ** 2 + (y - 0.5) ** 2 + (x - 0.5) ** 2) < 0.16
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    items = []
    for i in range(n_subjects):
        mri = ball * (0.5 + 0.3 * np.sin(8 * x + i))
        pet = ball * (0.4 + 0.3 * np.cos(6 * y + i))
        m = save_nifti(mri, affine, root / f"s{i}_mri.nii.gz", dtype=np.float32)
        p = save_nifti(pet, affine, root / f"s{i}_pet.nii.gz", dtype=np.float32)
        items.append((f"sub-{i}", str(m), str(p)))
    return items


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> pd.DataFrame:
    """The history of one short training run (epoch 0: the untrained network, validated)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("learning")
    items = tiny_cohort(root)
    train_model(items[:4], items[4:], root / "run", model_config=MODEL, train_config=TRAIN)
    return pd.read_csv(root / "run" / "history.csv")


def test_training_loss_goes_down(history):
    loss = history.set_index("epoch")["loss"]
    first, last = loss.loc[1], loss.loc[TRAIN["epochs"]]
    assert np.isfinite(loss.loc[1:]).all()
    # measured: 4.62 -> 2.25 (0.49x), validation SSIM 0.015 -> 0.53; the same run at lr 1e-9
    # (a network that does not learn) stays at 3.33 -> 3.32 (1.00x) and SSIM 0.015: both fail
    assert last < 0.7 * first, loss.tolist()
    assert loss.loc[2:].min() < loss.loc[1]


def test_trained_model_fuses_validation_better_than_untrained(history):
    """Validation SSIM (fused vs sources) of the best epoch beats the untrained network's."""
    ssim = history.set_index("epoch")["val_ssim"]
    assert ssim.loc[1:].max() > ssim.loc[0] + 0.05, ssim.tolist()
