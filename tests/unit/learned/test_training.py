"""Tests for fusion3d.learned.training: outputs, checkpoints, exact resume, config checks."""

from __future__ import annotations

import hashlib
import json
import logging
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from fusion3d.io import save_nifti
from fusion3d.learned.models import DC2Fusion
from fusion3d.learned.training import (
    calibrate_output_scale,
    resolve_train_config,
    train_model,
    training_fingerprint,
)

torch.set_num_threads(1)
MODEL = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), patch_size=2, window_size=2)


def make_cohort(root, n_subjects=4, size=16):
    """Synthetic model-grid pairs: a ball with different MRI / PET textures."""
    z, y, x = np.mgrid[:size, :size, :size] / size
    ball = ((z - 0.5) ** 2 + (y - 0.5) ** 2 + (x - 0.5) ** 2) < 0.16
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    items = []
    for i in range(n_subjects):
        mri = ball * (0.5 + 0.3 * np.sin(8 * x + i))
        pet = ball * (0.4 + 0.3 * np.cos(6 * y + i))
        m = save_nifti(mri, affine, root / f"s{i}_mri.nii.gz", dtype=np.float32)
        p = save_nifti(pet, affine, root / f"s{i}_pet.nii.gz", dtype=np.float32)
        items.append((f"sub-{i}", m, p))
    return items


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def test_train_writes_outputs(cohort, tmp_path):
    out = tmp_path / "run"
    path = train_model(
        cohort[:3], cohort[3:], out, model_config=MODEL, train_config={"epochs": 2, "lr": 1e-3}
    )
    assert path == out / "model.pt"
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2]
    for col in ("lr", "loss", "lncc_mri", "ssim_pet", "l1_mri", "val_psnr", "val_ssim", "seconds"):
        assert col in hist.columns
    assert np.isfinite(hist["loss"].iloc[1:]).all()
    assert hist["lr"].iloc[2] < hist["lr"].iloc[1]  # poly decay
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    for key in ("init_args", "variant", "fingerprint", "train_config", "split", "model_state"):
        assert key in last
    for key in ("optimizer_state", "scheduler_state"):
        assert key in last
    assert last["epoch"] == 2
    assert set(last["rng"]) == {"torch", "numpy", "python"}
    assert last["split"]["train"] == [[str(x) for x in item] for item in cohort[:3]]
    best = torch.load(path, weights_only=True)
    assert best["variant"] == "fixed" and best["fingerprint"] == last["fingerprint"]
    # self-describing: every constructor argument resolved, the model rebuilds from it alone
    assert best["init_args"]["mlp_ratio"] == 4.0 and best["init_args"]["embed_dim"] == 8
    model = DC2Fusion(**best["init_args"])
    model.load_state_dict(best["model_state"])
    assert best["epoch"] == int(hist.loc[hist["epoch"] > 0, "val_score"].idxmax())


def test_exact_resume(cohort, tmp_path):
    cfg = {"epochs": 3, "lr": 1e-3, "augment": True}
    full = train_model(cohort[:2], cohort[3:], tmp_path / "a", model_config=MODEL, train_config=cfg)
    part = tmp_path / "b"
    train_model(
        cohort[:2],
        cohort[3:],
        part,
        model_config=MODEL,
        train_config={**cfg, "stop_after_epoch": 1},
    )
    assert torch.load(part / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    # resume with a perturbed global RNG: the per-epoch seeding must make it irrelevant
    torch.manual_seed(12345)
    np.random.seed(1)
    train_model(cohort[:2], cohort[3:], part, model_config=MODEL, train_config=cfg)
    sa = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    sb = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert pd.read_csv(part / "history.csv")["epoch"].tolist() == [0, 1, 2, 3]
    assert full.exists()


def _patience_stop(scores, patience):
    """The epoch at which ``patience`` stops a run with these validation scores (epochs 1..),
    by the criterion that selects model.pt (strictly above the best so far); None: never."""
    best, since = -math.inf, 0
    for epoch, score in enumerate(scores, start=1):
        best, since = (score, 0) if score > best else (best, since + 1)
        if since >= patience:
            return epoch
    return None


def _same_weights(a, b):
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_patience_stops_where_validation_stops_improving_also_after_resume(
    cohort, tmp_path, caplog
):
    """A killed and resumed run stops where an uninterrupted one stops; a larger patience
    (here: none) resumes it to the cap, as if it had never stopped."""
    caplog.set_level(logging.INFO, logger="fusion3d")
    cfg = {"epochs": 8, "lr": 1e-2, "augment": False}

    def train(out, **changes):
        train_model(
            cohort[:2], cohort[3:], out, model_config=MODEL, train_config={**cfg, **changes}
        )
        return pd.read_csv(out / "history.csv")

    ref = train(tmp_path / "ref")  # patience off: the cap, as before
    assert ref["stop"].tolist()[-1] == "cap" and ref["stop"].iloc[:-1].isna().all()
    stop = _patience_stop(ref["val_score"].iloc[1:].tolist(), patience=3)
    assert stop is not None and stop < cfg["epochs"] - 1  # this cohort stops early

    whole = train(tmp_path / "whole", patience=3)
    assert whole["epoch"].tolist() == list(range(stop + 1))
    assert whole["stop"].iloc[-1] == "patience" and whole["stop"].iloc[:-1].isna().all()
    assert f"stopped after epoch {stop}: patience" in caplog.text

    part = tmp_path / "part"
    train(part, patience=3, stop_after_epoch=stop - 1)  # killed one check before the stop
    killed = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert killed["epoch"] == stop - 1 and killed["checks_since_best"] == 2
    assert "stop" not in pd.read_csv(part / "history.csv").columns  # interrupted: no mark
    resumed = train(part, patience=3)
    assert _same_weights(tmp_path / "whole", part)
    cols = [c for c in whole.columns if c != "seconds"]
    pd.testing.assert_frame_equal(resumed[cols], whole[cols])
    last = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == stop and last["checks_since_best"] == 3

    caplog.clear()  # run again: it has stopped, nothing is trained
    again = train(part, patience=3)
    assert "resuming from" in caplog.text and f"stopped after epoch {stop}" in caplog.text
    pd.testing.assert_frame_equal(again[cols], whole[cols])

    # patience is run control: resumed without it, the run goes on to the cap exactly as
    # the run that never had it (same weights, same history, the mark moves to the cap)
    longer = train(part, patience=None)
    assert _same_weights(tmp_path / "ref", part)
    cols = [c for c in ref.columns if c != "seconds"]
    pd.testing.assert_frame_equal(longer[cols], ref[cols])


def test_bad_inputs(cohort, tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        resolve_train_config({"epoch": 3})
    with pytest.raises(ValueError, match="epochs"):
        resolve_train_config({"epochs": 0})
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"train_config\['patience'\] must be None or a pos"):
            resolve_train_config({"patience": bad})
    assert resolve_train_config({})["patience"] is None  # off: published epoch counts
    with pytest.raises(ValueError, match="weights"):
        resolve_train_config({"loss_weights": {"mri": 1.0}})
    with pytest.raises(ValueError, match="divisible"):
        train_model(
            cohort[:1],
            cohort[3:],
            tmp_path,
            model_config={**MODEL, "patch_size": 4},
            train_config={"epochs": 1},
        )
    with pytest.raises(FileNotFoundError):
        train_model(
            [("x", tmp_path / "nope.nii.gz", tmp_path / "nope2.nii.gz")],
            [],
            tmp_path,
            model_config=MODEL,
            train_config={},
        )


def test_calibrate_output_scale():
    torch.manual_seed(0)
    model = DC2Fusion(**MODEL, drop_path_rate=0.0)  # deterministic train-mode forward
    mri, pet = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    before = {k: v.clone() for k, v in model.named_buffers()}
    calibrate_output_scale(model, mri, pet)
    for k, v in model.named_buffers():  # BatchNorm statistics untouched
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        fused = model(mri, pet)
    # F is homogeneous of degree 2 in the last conv: the scale is hit up to BN batch noise
    assert float(fused.abs().mean()) == pytest.approx(float((mri + pet).mean() / 2), rel=1e-3)


def test_train_2d(cohort, tmp_path):
    path = train_model(
        cohort[:2],
        cohort[3:],
        tmp_path,
        model_config={**MODEL, "spatial_dims": 2},
        train_config={"epochs": 3, "slices_per_volume": 3, "batch_size": 2},
        time_budget_s=0.0,  # stops after the first epoch
    )
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["init_args"]["spatial_dims"] == 2
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["epoch"].tolist() == [0, 1]
    assert np.isfinite(hist["val_score"]).all()


def test_epoch_samples_are_built_one_at_a_time(cohort, tmp_path):
    """An epoch streams its samples (no list of volumes): every subject once in 3D."""
    from fusion3d.learned.loader import EpochSampler, PairDataset, make_loader, prepare_sources

    sources = prepare_sources(cohort, tmp_path / "cache")
    dataset3d = PairDataset(sources)
    loader = make_loader(dataset3d, EpochSampler(len(dataset3d), seed=5), batch_size=1)
    seen = list(loader)
    assert len(seen) == len(cohort)  # every subject once per 3D epoch
    got = sorted(float(m.double().sum()) for m, _ in seen)
    expected = [float(nib.load(m).get_fdata().sum()) for _, m, _ in cohort]
    assert got == pytest.approx(sorted(expected))
    dataset2d = PairDataset(sources, spatial_dims=2, picks_per_subject=3)
    slices = list(make_loader(dataset2d, EpochSampler(len(dataset2d), seed=5), batch_size=1))
    assert len(slices) == 3 * len(cohort) and slices[0][0].shape == (1, 1, 16, 16)


def _stale_dirs(root):
    return sorted(p for p in root.iterdir() if p.name.startswith("stale-"))


def test_state_of_another_run_is_set_aside_and_training_starts_fresh(cohort, tmp_path, caplog):
    """Resume only the same split rows, model config and training config; else set aside."""
    caplog.set_level(logging.INFO, logger="fusion3d")
    state = tmp_path / "state"
    cfg = {"epochs": 2, "lr": 1e-3, "augment": False, "calibrate_output": False}

    def train(items=cohort[:1], model=MODEL, **changes):
        caplog.clear()
        train_model(items, cohort[3:], state, model_config=model, train_config={**cfg, **changes})
        return caplog.text, pd.read_csv(state / "history.csv")["epoch"].tolist()

    # unchanged: resumes (stop_after_epoch is run control, not part of the fingerprint)
    train(stop_after_epoch=1)
    text, epochs = train()
    assert "resuming from" in text and epochs == [0, 1, 2] and not _stale_dirs(state)
    first = torch.load(state / "checkpoints" / "last.pt", weights_only=True)

    for changes, named in [
        ({"lr": 2e-3}, "train config lr 0.001 -> 0.002"),
        ({"items": cohort[1:2]}, "split train added: 1 (sub-1); train removed: 1 (sub-0)"),
        ({"model": {**MODEL, "embed_dim": 16}}, "model config embed_dim 8 -> 16"),
    ]:
        before = torch.load(state / "checkpoints" / "last.pt", weights_only=True)
        n_stale = len(_stale_dirs(state))
        text, epochs = train(**changes)
        assert "set aside" in text and named in text, text
        assert "resuming" not in text and epochs == [0, 1, 2]  # a fresh start
        stale = _stale_dirs(state)
        assert len(stale) == n_stale + 1  # old state kept, never deleted
        kept = torch.load(stale[-1] / "checkpoints" / "last.pt", weights_only=True)
        assert kept["fingerprint"] == before["fingerprint"]
        assert (stale[-1] / "model.pt").exists() and (stale[-1] / "history.csv").exists()
        now = torch.load(state / "checkpoints" / "last.pt", weights_only=True)
        assert now["fingerprint"]["sha256"] != before["fingerprint"]["sha256"]
    assert first["fingerprint"]["sha256"] != now["fingerprint"]["sha256"]


def test_checkpoint_without_fingerprint_is_set_aside(cohort, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fusion3d")
    cfg = {"epochs": 1, "augment": False}
    train_model(cohort[:1], [], tmp_path, model_config=MODEL, train_config=cfg)
    last = tmp_path / "checkpoints" / "last.pt"
    old = torch.load(last, weights_only=True)
    del old["fingerprint"]  # as written by an older version
    torch.save(old, last)
    train_model(cohort[:1], [], tmp_path, model_config=MODEL, train_config=cfg)
    assert "no fingerprint" in caplog.text and len(_stale_dirs(tmp_path)) == 1


def test_fingerprint_is_sha256_of_canonical_json():
    split = {"train": [["a", "m.nii.gz", "p.nii.gz"]], "val": []}
    init_args = {"embed_dim": 8, "depths": [1, 1]}
    cfg = resolve_train_config({"epochs": 3})

    def sha(value):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    fp = training_fingerprint(split, init_args, cfg)
    assert fp["split"] == sha(split) and fp["model_config"] == sha(init_args)
    run_control = {
        "stop_after_epoch",
        "patience",
        "num_workers",
        "cache",
        "compile",
        "channels_last",
        "fused_adam",
    }
    assert fp["train_config"] == sha({k: v for k, v in cfg.items() if k not in run_control})
    parts = {k: fp[k] for k in ("split", "model_config", "train_config")}
    assert fp["sha256"] == sha(parts)
    # run control does not change it; what is trained does
    stopped = resolve_train_config({"epochs": 3, "stop_after_epoch": 1})
    assert training_fingerprint(split, init_args, stopped) == fp
    patient = resolve_train_config({"epochs": 3, "patience": 2})
    assert training_fingerprint(split, init_args, patient) == fp
    other = {"train": [["a", "m2.nii.gz", "p.nii.gz"]], "val": []}
    assert training_fingerprint(other, init_args, cfg)["sha256"] != fp["sha256"]


def test_rotation_interval_follows_the_model_variant():
    assert resolve_train_config({})["rotation_interval"] == "symmetric"
    assert resolve_train_config({}, {"variant": "fixed"})["rotation_interval"] == "symmetric"
    assert resolve_train_config({}, {"variant": "published"})["rotation_interval"] == "published"
    explicit = resolve_train_config({"rotation_interval": "symmetric"}, {"variant": "published"})
    assert explicit["rotation_interval"] == "symmetric"
    with pytest.raises(ValueError, match="rotation_interval"):
        resolve_train_config({"rotation_interval": "both"})
    assert resolve_train_config({"poly_power": 0})["poly_power"] == 0  # constant lr
    with pytest.raises(ValueError, match="poly_power"):
        resolve_train_config({"poly_power": -1})


def test_train_model_reads_as_short_documented_steps():
    """No function of the training library over 80 lines; every one documented."""
    import ast
    import importlib
    import inspect
    import pkgutil

    import fusion3d.learned.data as training_data
    import fusion3d.learned.training as training

    modules = [training_data] + [
        importlib.import_module(f"{training.__name__}.{info.name}")
        for info in pkgutil.iter_modules(training.__path__)
    ]
    for module in modules:
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 80, (module.__name__, node.name)
                assert ast.get_docstring(node), (module.__name__, node.name)


# ---------------------------------------------------------------------------------------------
# The published augmentation (DC2Fusion's train_diff.py, MONAI 1.6.1 semantics)
# ---------------------------------------------------------------------------------------------


def _volume(seed, shape=(8, 8, 8)):
    return torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(seed))


def test_rotation_equals_monai_rotate():
    """Geometry, axis naming and sign as MONAI's Rotate (bilinear, border padding)."""
    from monai.transforms import Rotate

    from fusion3d.learned.data import rotate, rotation_matrix

    img = _volume(0, (10, 14, 9))[0]
    for k, axis in enumerate("xyz"):
        angles = [0.0, 0.0, 0.0]
        angles[k] = 0.2
        expected = Rotate(angles, keep_size=True, padding_mode="border", align_corners=False)(img)
        got = rotate(img[None], rotation_matrix(3, axis, 0.2))[0]
        assert torch.allclose(got, torch.as_tensor(expected), atol=1e-5), axis
    img2 = _volume(1, (16, 11))[0]
    expected = Rotate(-0.15, keep_size=True, padding_mode="border", align_corners=False)(img2)
    got = rotate(img2[None], rotation_matrix(2, "z", -0.15))[0]
    assert torch.allclose(got, torch.as_tensor(expected), atol=1e-5)


@pytest.mark.parametrize("interval", ["symmetric", "published"])
def test_rotation_draws_follow_the_interval(interval):
    from scipy import stats

    from fusion3d.learned.data import AugmentConfig, draw_rotations

    cfg = AugmentConfig(rot_interval=interval)
    gen = torch.Generator().manual_seed(0)
    n = 4000
    draws = [dict(draw_rotations(3, gen, cfg)) for _ in range(n)]
    for axis in "xyz":
        angles = np.array([d[axis] for d in draws if axis in d])
        assert abs(len(angles) / n - 0.1) < 0.02, axis  # p = 0.1 per axis (sd 0.005)
        if interval == "published":  # MONAI reads range_x=[0.2, 0.2] as the interval [0.2, 0.2]
            assert np.all(angles == 0.2)
        else:  # U(-0.2, 0.2)
            assert stats.kstest(angles, stats.uniform(-0.2, 0.4).cdf).pvalue > 0.01
    both = sum("x" in d and "y" in d for d in draws) / n
    assert abs(both - 0.01) < 0.006  # the axes are independent
    assert {a for _ in range(200) for a, _ in draw_rotations(2, gen, cfg)} == {"z"}  # 2D


def test_augmented_pairs_span_exactly_the_unit_interval():
    """ScaleIntensityd on both images: min 0 and max 1 after every draw."""
    from fusion3d.learned.data import augment_pair

    gen = torch.Generator().manual_seed(3)
    shifted = 0
    for i in range(200):
        m, p = 0.2 + 0.5 * _volume(2 * i), 0.7 * _volume(2 * i + 1)  # neither spans [0, 1]
        batch = (m, p) if i % 2 else (m[..., 0], p[..., 0])  # 3D and 2D batches
        am, ap = augment_pair(*batch, gen)
        for x in (am, ap):
            assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        shifted += not torch.allclose(am, (batch[0] - batch[0].min()) / np.ptp(batch[0].numpy()))
    assert 100 < shifted < 200  # the MRI's contrast / noise changed most draws, not all
    am, ap = augment_pair(torch.full((1, 1, 4, 4, 4), 0.3), torch.ones(1, 1, 4, 4, 4), gen)
    assert torch.equal(am, torch.zeros_like(am)) and torch.equal(ap, torch.zeros_like(ap))


def test_published_rotations_seen_in_the_augmented_pet():
    """Through augment_pair: each axis rotates the PET by +0.2 rad with p = 0.1, in x, y, z order."""
    from itertools import combinations

    from monai.transforms import Rotate

    from fusion3d.learned.data import AugmentConfig, augment_pair

    pet = _volume(7)
    candidates = {}
    for r in range(4):
        for axes in combinations("xyz", r):
            img = pet[0]
            for axis in axes:  # the published pipeline: three RandRotated in turn
                angles = [0.2 if a == axis else 0.0 for a in "xyz"]
                img = Rotate(angles, padding_mode="border", align_corners=False)(img)
            img = torch.as_tensor(img)
            candidates[axes] = (img - img.min()) / (img.max() - img.min())
    gen = torch.Generator().manual_seed(11)
    cfg = AugmentConfig(rot_interval="published")
    counts = dict.fromkeys("xyz", 0)
    n = 600
    for _ in range(n):
        _, ap = augment_pair(_volume(8), pet, gen, cfg)
        match = [k for k, c in candidates.items() if torch.allclose(ap[0], c, atol=1e-5)]
        assert len(match) == 1
        for axis in match[0]:
            counts[axis] += 1
    for axis, count in counts.items():
        assert abs(count / n - 0.1) < 0.04, (axis, count)  # sd 0.012


def test_contrast_follows_monai_adjust_contrast():
    """Probability 0.5, gamma ~ U(0.1, 2), MONAI's AdjustContrast formula; MRI only."""
    from monai.transforms import AdjustContrast
    from scipy import stats

    from fusion3d.learned.data import AugmentConfig, augment_mri_intensity

    ramp = torch.linspace(0.0, 1.0, 64).reshape(1, 1, 4, 4, 4)
    cfg = AugmentConfig(noise_prob=0.0)
    gen = torch.Generator().manual_seed(5)
    gammas = []
    n = 600
    for _ in range(n):
        out = augment_mri_intensity(ramp, gen, cfg)
        if not torch.equal(out, ramp):
            # recover gamma at a mid voxel: out = (x / (1 + 1e-7)) ** gamma for min 0, max 1
            i = 30
            gamma = math.log(float(out.flatten()[i])) / math.log(
                float(ramp.flatten()[i]) / (1 + 1e-7)
            )
            expected = AdjustContrast(gamma)(ramp)
            assert torch.allclose(out, torch.as_tensor(expected), atol=1e-5)
            gammas.append(gamma)
    assert abs(len(gammas) / n - 0.5) < 0.07  # sd 0.02
    assert stats.kstest(gammas, stats.uniform(0.1, 1.9).cdf).pvalue > 0.01


def test_noise_follows_monai_random_gaussian_noise():
    """p = 0.5, mean 0.5, std ~ U(0, 0.1) per image (MONAI's sample_std=True)."""
    from scipy import stats

    from fusion3d.learned.data import AugmentConfig, augment_mri_intensity

    mri = _volume(4, (16, 16, 16))
    cfg = AugmentConfig(gamma_prob=0.0)
    gen = torch.Generator().manual_seed(6)
    means, stds = [], []
    n = 400
    for _ in range(n):
        noise = (augment_mri_intensity(mri, gen, cfg) - mri).double()
        if bool(noise.abs().max() > 0):
            means.append(float(noise.mean()))
            stds.append(float(noise.std()))
    assert abs(len(stds) / n - 0.5) < 0.08  # sd 0.025
    assert abs(np.mean(means) - 0.5) < 0.002
    # the std of each noisy image is uniform on (0, 0.1), not fixed at 0.1
    assert stats.kstest(stds, stats.uniform(0.0, 0.1).cdf).pvalue > 0.01
    assert abs(np.mean(stds) - 0.05) < 0.006


def test_learning_benchmark_runs_on_a_split(cohort, tmp_path, capsys):
    """benchmarks/bench_learning.py: every network, one row per epoch, TSV and figure."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_learning.py"
    spec = importlib.util.spec_from_file_location("bench_learning", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [
        {"subject_id": s, "split": part, "group": "CN", "model_mri": m, "model_pet": p}
        for (s, m, p), part in zip(cohort, ("train", "train", "val", "test"), strict=True)
    ]
    pd.DataFrame(rows).assign(model_mask="-").to_csv(tmp_path / "split.tsv", sep="\t", index=False)
    config = {
        "models": {"dcfb3d": MODEL, "dcfb2d": {**MODEL, "spatial_dims": 2}},
        "train": {"epochs": 5, "slices_per_volume": 2},
    }
    (tmp_path / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    out = tmp_path / "out"
    bench.main(
        [
            *(
                "--configfile",
                str(tmp_path / "config.yaml"),
                "--split",
                str(tmp_path / "split.tsv"),
            ),
            *("--budget-s", "0", "--lr", "0.002", "--threads", "1", "--out", str(out)),
        ]
    )
    table = pd.read_csv(out / "learning_curves.tsv", sep="\t")
    assert table["network"].tolist() == ["dcfb3d", "dcfb3d", "dcfb2d", "dcfb2d"]  # init + 1 epoch
    assert table["lr"].iloc[1] == 0.002 and np.isfinite(table["val_ssim"]).all()
    assert (out / "learning_curves.png").stat().st_size > 0
    assert "best validation scores" in capsys.readouterr().out
