"""Tests for fusion3d.learned.loader: cache, per-sample seeding, sharding, worker independence."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from fusion3d.io import save_nifti
from fusion3d.learned.loader import (
    EpochSampler,
    PairDataset,
    SampleKey,
    make_loader,
    prepare_sources,
    sample_seed,
)

torch.set_num_threads(1)


def make_items(root, n=3, size=8, shapes=None):
    """Random pairs with a zero border (so 2D foreground slices are a strict subset)."""
    rng = np.random.default_rng(1)
    items = []
    for i in range(n):
        shape = shapes[i] if shapes else (size,) * 3
        mri = np.zeros(shape, np.float32)
        mri[1:-1, 1:-1, 2:-2] = rng.random((shape[0] - 2, shape[1] - 2, shape[2] - 4))
        pet = rng.random(shape).astype(np.float32)
        m = save_nifti(mri, np.eye(4), root / f"m{i}.nii.gz", dtype=np.float32)
        p = save_nifti(pet, np.eye(4), root / f"p{i}.nii.gz", dtype=np.float32)
        items.append((f"sub-{i}", m, p))
    return items


def noise_augment(mri, pet, gen):
    """A toy augmentation: all its randomness comes from ``gen``."""
    return mri + torch.rand(mri.shape, generator=gen), pet * float(torch.rand(1, generator=gen))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return make_items(tmp_path_factory.mktemp("loader"), n=5)


def test_sample_seed_follows_the_seed_sequence_recipe():
    expected = int(np.random.SeedSequence([3407, 2, 5]).generate_state(1, np.uint64)[0])
    assert sample_seed(3407, 2, 5) == expected & (2**63 - 1)
    seeds = {sample_seed(3407, e, i) for e in range(3) for i in range(4)}
    assert len(seeds) == 12


def test_cache_written_once_atomically_and_memory_mapped(items, tmp_path):
    sources = prepare_sources(items, tmp_path / "cache")
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == len(items) and all(f.suffix == ".npy" for f in files)
    assert not [f for f in files if ".part" in f.name]
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = prepare_sources(items, tmp_path / "cache")
    assert [f.stat().st_mtime_ns for f in sorted((tmp_path / "cache").iterdir())] == mtimes
    assert again == sources
    for src, (_, m, p) in zip(sources, items, strict=True):
        mri, pet = src.read()
        assert isinstance(mri.base, np.memmap) or isinstance(mri, np.memmap)
        np.testing.assert_array_equal(mri, nib.load(m).get_fdata(dtype=np.float32))
        np.testing.assert_array_equal(pet, nib.load(p).get_fdata(dtype=np.float32))
        assert src.shape == (8, 8, 8)


def test_without_cache_reads_nifti(items):
    sources = prepare_sources(items)
    assert all(s.cache_path is None for s in sources)
    mri, _ = sources[1].read()
    np.testing.assert_array_equal(mri, nib.load(items[1][1]).get_fdata(dtype=np.float32))


@pytest.mark.parametrize("cache", [False, True])
def test_bad_items_name_the_file(tmp_path, cache):
    cache_dir = tmp_path / "c" if cache else None
    cube = make_items(tmp_path, n=2, shapes=[(8, 8, 8), (10, 10, 10)])
    with pytest.raises(ValueError, match=r"m1\.nii\.gz: shape \(10, 10, 10\) differs"):
        prepare_sources(cube, cache_dir)
    (tmp_path / "flat").mkdir()
    flat = make_items(tmp_path / "flat", n=1, shapes=[(8, 8, 6)])
    with pytest.raises(ValueError, match="must be a cube"):
        prepare_sources(flat, cache_dir)
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        prepare_sources([("s", tmp_path / "nope.nii.gz", cube[0][2])], cache_dir)
    with pytest.raises(ValueError, match="empty list"):
        prepare_sources([], cache_dir)


def test_sampler_order_and_sharding():
    s = EpochSampler(7, seed=3407)
    s.set_epoch(3)
    gen = torch.Generator().manual_seed((3407 * 1_000_003 + 3) % 2**63)
    expected = torch.randperm(7, generator=gen).tolist()
    assert [k.index for k in s] == expected
    assert all(k.epoch == 3 for k in s)
    shards = []
    for rank in range(3):
        r = EpochSampler(7, seed=3407, rank=rank, world_size=3)
        r.set_epoch(3)
        shards.append([k.index for k in r])
        assert len(r) == 3
    padded = expected + expected[:2]  # 9 = 3 ranks x 3, the start repeated
    assert shards == [padded[0::3], padded[1::3], padded[2::3]]
    s.set_epoch(4)
    assert [k.index for k in s] != expected
    with pytest.raises(ValueError, match="rank 2 not in"):
        EpochSampler(4, seed=0, rank=2, world_size=2)


def test_dataset_3d_2d_and_per_sample_seeding(items, tmp_path):
    sources = prepare_sources(items, tmp_path / "cache")
    plain = PairDataset(sources)
    mri, pet = plain[1]
    assert mri.shape == (1, 8, 8, 8)
    np.testing.assert_array_equal(mri[0].numpy(), nib.load(items[1][1]).get_fdata())
    two_d = PairDataset(sources, spatial_dims=2, picks_per_subject=4, seed=5)
    assert len(two_d) == 20
    m2, _ = two_d[SampleKey(1, 6)]  # subject 1, 3rd pick
    vol = nib.load(items[1][1]).get_fdata(dtype=np.float32)
    gen = torch.Generator().manual_seed(sample_seed(5, 1, 6))
    fg = np.flatnonzero(vol.reshape(-1, 8).any(axis=0))
    s = fg[int(torch.randint(len(fg), (1,), generator=gen))]
    np.testing.assert_array_equal(m2[0].numpy(), vol[..., s])
    aug = PairDataset(sources, seed=5, augment=noise_augment)
    a1, b1 = aug[SampleKey(2, 3)]
    a2, b2 = aug[SampleKey(2, 3)]
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(b1, b2)
    a3, _ = aug[SampleKey(3, 3)]
    assert not torch.equal(a1, a3)
    gen = torch.Generator().manual_seed(sample_seed(5, 2, 3))
    vol3 = torch.from_numpy(nib.load(items[3][1]).get_fdata(dtype=np.float32))[None, None]
    ref_m, _ = noise_augment(vol3, torch.zeros_like(vol3), gen)
    torch.testing.assert_close(a1, ref_m[0])
    with pytest.raises(IndexError):
        plain[5]
    with pytest.raises(ValueError, match="picks_per_subject"):
        PairDataset(sources, spatial_dims=3, picks_per_subject=2)


def _epoch_batches(dataset, sampler, workers, epochs=(1, 2)):
    loader = make_loader(dataset, sampler, batch_size=2, num_workers=workers, seed=7)
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out += [(m.clone(), p.clone()) for m, p in loader]
    return out


def test_batches_do_not_depend_on_workers_and_leave_the_global_rng_alone(items, tmp_path):
    sources = prepare_sources(items, tmp_path / "cache")
    ds = PairDataset(sources, spatial_dims=2, picks_per_subject=3, seed=11, augment=noise_augment)
    state = torch.get_rng_state()
    b0 = _epoch_batches(ds, EpochSampler(len(ds), seed=11), 0)
    assert torch.equal(torch.get_rng_state(), state)
    b2 = _epoch_batches(ds, EpochSampler(len(ds), seed=11), 2)
    assert len(b0) == len(b2) == 2 * 8  # 15 samples, batches of 2, two epochs
    for (m0, p0), (m2, p2) in zip(b0, b2, strict=True):
        assert m0.shape[0] in (1, 2) and m0.shape[1:] == (1, 8, 8)
        torch.testing.assert_close(m0, m2, rtol=0, atol=0)
        torch.testing.assert_close(p0, p2, rtol=0, atol=0)


def test_ranks_together_see_every_sample_as_one_rank_does(items, tmp_path):
    sources = prepare_sources(items, tmp_path / "cache")
    ds = PairDataset(sources, seed=3, augment=noise_augment)
    single = {k: ds[k][0] for k in EpochSampler(len(ds), seed=3)}
    seen = {}
    for rank in range(2):
        sampler = EpochSampler(len(ds), seed=3, rank=rank, world_size=2)
        for k in sampler:
            torch.testing.assert_close(ds[k][0], single[k])
            seen[k] = True
    assert set(seen) == set(single)


def test_make_loader_options(items, tmp_path):
    ds = PairDataset(prepare_sources(items))
    sampler = EpochSampler(len(ds), seed=0)
    loader = make_loader(ds, sampler, batch_size=1, num_workers=2, device=torch.device("cpu"))
    assert loader.persistent_workers and loader.prefetch_factor == 2 and not loader.pin_memory
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(ds, sampler, batch_size=1, num_workers=-1)


# ---------------------------------------------------------------------------------------------
# The loader inside training: worker count, on-device validation
# ---------------------------------------------------------------------------------------------

MODEL = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), patch_size=2, window_size=2)


def ball_items(root, n=3, size=16):
    """Model-grid pairs of a textured ball (values in [0, 1])."""
    z, y, x = np.mgrid[:size, :size, :size] / size
    ball = ((z - 0.5) ** 2 + (y - 0.5) ** 2 + (x - 0.5) ** 2) < 0.16
    items = []
    for i in range(n):
        mri = ball * (0.5 + 0.3 * np.sin(8 * x + i))
        pet = ball * (0.4 + 0.3 * np.cos(6 * y + i))
        m = save_nifti(mri, np.eye(4), root / f"b{i}_mri.nii.gz", dtype=np.float32)
        p = save_nifti(pet, np.eye(4), root / f"b{i}_pet.nii.gz", dtype=np.float32)
        items.append((f"sub-{i}", m, p))
    return items


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_training_gives_the_same_weights_with_0_and_2_workers(tmp_path, spatial_dims):
    from fusion3d.learned.training import train_model

    items = ball_items(tmp_path)
    cfg = {"epochs": 2, "lr": 1e-3, "augment": True, "slices_per_volume": 2, "batch_size": 2}
    states = {}
    for workers in (0, 2, 2):
        out = tmp_path / f"w{workers}-{len(states)}"
        train_model(
            items[:2],
            items[2:],
            out,
            model_config={**MODEL, "spatial_dims": spatial_dims},
            train_config={**cfg, "num_workers": workers},
            threads=1,
        )
        states[out.name] = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    (a, sa), (b, sb), (c, sc) = states.items()
    for key in sa["model_state"]:
        assert torch.equal(sa["model_state"][key], sb["model_state"][key]), (a, b, key)
        assert torch.equal(sb["model_state"][key], sc["model_state"][key]), (b, c, key)
    assert sa["fingerprint"] == sb["fingerprint"]  # the worker count is not part of it


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_on_device_validation_matches_the_host_recipe(tmp_path, spatial_dims):
    """PSNR/SSIM of the clipped fused volume, computed on the host one pair at a time."""
    from fusion3d.learned.inference import fuse_volume
    from fusion3d.learned.losses import psnr, ssim
    from fusion3d.learned.models import DC2Fusion
    from fusion3d.learned.training import validation_scores

    items = ball_items(tmp_path)
    torch.manual_seed(0)
    model = DC2Fusion(**MODEL, spatial_dims=spatial_dims).eval()
    cpu = torch.device("cpu")
    ps, ss = [], []
    with torch.no_grad():
        for _, m_path, p_path in items:
            mri = nib.load(m_path).get_fdata(dtype=np.float32)
            pet = nib.load(p_path).get_fdata(dtype=np.float32)
            f = torch.from_numpy(fuse_volume(model, mri, pet, cpu))[None, None]
            for src in (mri, pet):
                s = torch.from_numpy(src)[None, None]
                ps.append(float(psnr(f, s).clamp(max=100.0)))
                ss.append(float(ssim(f, s)))
    scores = validation_scores(model, prepare_sources(items, tmp_path / "cache"), cpu, "off")
    assert scores["val_psnr"] == pytest.approx(np.mean(ps), abs=1e-5)
    assert scores["val_ssim"] == pytest.approx(np.mean(ss), abs=1e-5)
    assert scores["val_score"] == pytest.approx(0.1 * np.mean(ps) + np.mean(ss), abs=1e-5)


def test_validation_every_k_epochs_and_at_the_last(tmp_path):
    import pandas as pd

    from fusion3d.learned.training import train_model

    items = ball_items(tmp_path)
    out = tmp_path / "state"
    train_model(
        items[:2],
        items[2:],
        out,
        model_config=MODEL,
        train_config={"epochs": 3, "lr": 1e-3, "val_every": 2},
        threads=1,
    )
    hist = pd.read_csv(out / "history.csv").set_index("epoch")
    validated = hist.index[hist["val_score"].notna()].tolist()
    assert validated == [0, 2, 3]  # the initialisation, every 2nd epoch, the last
    best = torch.load(out / "model.pt", weights_only=True)
    assert best["epoch"] == int(hist.loc[[2, 3], "val_score"].idxmax())
    with pytest.raises(ValueError, match="val_every"):
        train_model(items[:2], [], out, model_config=MODEL, train_config={"val_every": 0})
