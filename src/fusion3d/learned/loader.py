"""Stream training pairs from disk through a ``torch.utils.data.DataLoader``.

Host memory does not grow with the cohort: a :class:`PairSource` knows only where
each subject's pair is. By default each pair is read once from its NIfTI files and
written to a memory-mapped cache (``<cache_dir>/<subject>-<key>.npy``, float32
``(2, D, H, W)`` = MRI, PET; written atomically, reused while the source files keep
their size and modification time); a sample then reads only what it needs (one slice
for the 2D network). Without a cache every sample decompresses its NIfTI files.

Reproducibility does not depend on worker scheduling. The sampler runs in the main
process and hands each worker a :class:`SampleKey` ``(epoch, index)``; the worker draws
everything random about that sample (the 2D slice, the augmentation) from its own
generator seeded by :func:`sample_seed` ``(seed, epoch, index)``. So the same seed gives
the same batches for any ``num_workers`` and any number of ranks, and the loader never
touches the global torch RNG (it gets its own ``generator``).

Sharding: :class:`EpochSampler` shuffles the ``n`` samples of an epoch with a generator
seeded by :func:`epoch_seed` ``(seed, epoch)`` (the same permutation on every rank), pads
the order by repeating its start to a multiple of ``world_size`` and gives rank ``r``
the positions ``r, r + world_size, ...`` (as ``DistributedSampler``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from fusion3d.io import atomic_path
from fusion3d.learned.data import foreground_slices, load_item

__all__ = [
    "EpochSampler",
    "PairDataset",
    "PairSource",
    "SampleKey",
    "epoch_seed",
    "make_loader",
    "prepare_sources",
    "sample_generator",
    "sample_seed",
]

Item = tuple[str, str | os.PathLike, str | os.PathLike]
Augment = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


class SampleKey(NamedTuple):
    """What a worker needs to build one sample: the epoch and the sample's index in it."""

    epoch: int
    index: int


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``: ``(seed * 1_000_003 + epoch) mod 2**63``."""
    return (seed * 1_000_003 + epoch) % (2**63)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample: 63 bits of ``numpy.random.SeedSequence([seed, epoch, index])``.

    ``seed`` is taken modulo 2**64 (SeedSequence needs non-negative entropy).
    """
    state = np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`sample_seed`."""
    return torch.Generator().manual_seed(sample_seed(seed, epoch, index))


@dataclass(frozen=True)
class PairSource:
    """Where one subject's model-grid pair lives.

    Attributes
    ----------
    subject_id : str
    mri_path, pet_path : str
        The NIfTI files (read when there is no cache).
    cache_path : str or None
        The ``.npy`` cache ``(2, D, H, W)`` float32, memory-mapped when read.
    shape : tuple of int
        ``(D, H, W)``.
    """

    subject_id: str
    mri_path: str
    pet_path: str
    cache_path: str | None
    shape: tuple[int, ...]

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mri, pet)`` ``(D, H, W)`` float32; memory-mapped (read-only) from the cache."""
        if self.cache_path is not None:
            both = np.load(self.cache_path, mmap_mode="r")
            return both[0], both[1]
        pair = load_item((self.subject_id, self.mri_path, self.pet_path))
        return pair.mri, pair.pet


def _cache_name(item: Item) -> str:
    """``<subject>-<16 hex>.npy``: the key hashes both paths, sizes and modification times."""
    sid, *paths = item
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(sid))
    return f"{safe}-{h.hexdigest()[:16]}.npy"


def _check_grid(shape: tuple[int, ...], first: tuple[int, ...] | None, path) -> None:
    """A model-grid image is a cube, the same for every subject (ValueError names the file)."""
    if len(shape) != 3 or len(set(shape)) != 1:
        raise ValueError(f"{path}: model-grid image must be a cube, got {shape}")
    if first is not None and shape != first:
        raise ValueError(f"{path}: shape {shape} differs from the first item {first}")


def _header_shape(item: Item) -> tuple[int, ...]:
    """The shape of an item's images from the NIfTI headers (no voxel data read)."""
    sid, mri_path, pet_path = item
    for p in (mri_path, pet_path):
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: image of {sid} not found")
    mri_shape = tuple(nib.load(mri_path).shape)
    pet_shape = tuple(nib.load(pet_path).shape)
    if mri_shape != pet_shape:
        raise ValueError(f"{pet_path}: PET shape {pet_shape} differs from MRI {mri_shape}")
    return mri_shape


def _write_cache(item: Item, path: Path) -> tuple[int, ...]:
    """Read one pair from NIfTI and write it as ``(2, D, H, W)`` float32 ``.npy``, atomically."""
    pair = load_item(item)
    both = np.stack([pair.mri, pair.pet]).astype(np.float32, copy=False)
    with atomic_path(path) as tmp:
        np.save(tmp, both)
    return tuple(pair.mri.shape)


def prepare_sources(
    items: Sequence[Item], cache_dir: str | os.PathLike | None = None, *, what: str = "items"
) -> list[PairSource]:
    """Check every item and (with ``cache_dir``) write its cache once; one pair in RAM at a time.

    Raises
    ------
    ValueError
        On an empty list, a malformed item, MRI/PET shape mismatch, a non-cubic grid or
        grids differing between subjects (naming the file).
    FileNotFoundError
        When an image is missing.
    """
    if len(items) == 0:
        raise ValueError(f"{what}: empty list of (subject_id, mri_path, pet_path)")
    sources: list[PairSource] = []
    first = None
    for item in items:
        if len(item) != 3:
            raise ValueError(f"{what}: expected (subject_id, mri_path, pet_path), got {item!r}")
        cache_path = None
        if cache_dir is None:
            shape = _header_shape(item)
        else:
            for p in item[1:]:
                if not Path(p).exists():
                    raise FileNotFoundError(f"{p}: image of {item[0]} not found")
            cache_path = Path(cache_dir) / _cache_name(item)
            if cache_path.exists():
                shape = tuple(np.load(cache_path, mmap_mode="r").shape[1:])
            else:
                shape = _write_cache(item, cache_path)
        _check_grid(shape, first, item[1])
        first = first or shape
        sources.append(
            PairSource(
                str(item[0]),
                str(item[1]),
                str(item[2]),
                None if cache_path is None else str(cache_path),
                shape,
            )
        )
    return sources


class PairDataset(Dataset):
    """Training samples ``(mri, pet)``, each ``(1, *S)`` float32, keyed by :class:`SampleKey`.

    3D (``spatial_dims=3``): sample ``index`` is subject ``index`` (whole volume
    ``(1, D, H, W)``). 2D: ``picks_per_subject`` samples per subject; sample ``index`` is a
    random foreground slice along the last axis (``(1, D, H)``) of subject
    ``index // picks_per_subject``. The slice and the augmentation are drawn, in that
    order, from :func:`sample_generator` ``(seed, key.epoch, key.index)``. An ``int`` key
    means epoch 0 (used for validation, where ``augment`` is ``None``).
    """

    def __init__(
        self,
        sources: Sequence[PairSource],
        *,
        spatial_dims: int = 3,
        picks_per_subject: int = 1,
        seed: int = 0,
        augment: Augment | None = None,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if picks_per_subject < 1 or (spatial_dims == 3 and picks_per_subject != 1):
            raise ValueError(
                f"picks_per_subject must be 1 in 3D and >= 1 in 2D, got {picks_per_subject}"
            )
        self.sources = list(sources)
        self.spatial_dims = spatial_dims
        self.picks_per_subject = picks_per_subject
        self.seed = seed
        self.augment = augment
        self._foreground: dict[int, np.ndarray] = {}  # per worker: a few ints per subject

    def __len__(self) -> int:
        """Samples per epoch."""
        return len(self.sources) * self.picks_per_subject

    def __getitem__(self, key: SampleKey | int) -> tuple[Tensor, Tensor]:
        """Build sample ``key``: ``(mri, pet)``, each ``(1, D, H, W)`` (3D) or ``(1, D, H)`` (2D)."""
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range [0, {len(self)})")
        gen = sample_generator(self.seed, epoch, index)
        subject = index // self.picks_per_subject
        mri, pet = self.sources[subject].read()
        if self.spatial_dims == 2:
            fg = self._foreground_of(subject, mri)
            s = int(fg[int(torch.randint(len(fg), (1,), generator=gen))])
            mri, pet = mri[..., s], pet[..., s]
        m = torch.from_numpy(np.array(mri, dtype=np.float32))[None]  # copy out of the memmap
        p = torch.from_numpy(np.array(pet, dtype=np.float32))[None]
        if self.augment is not None:
            m, p = self.augment(m[None], p[None], gen)  # (1, 1, *S)
            m, p = m[0].contiguous(), p[0].contiguous()
        return m, p

    def _foreground_of(self, subject: int, mri: np.ndarray) -> np.ndarray:
        """Foreground slice indices of a subject (computed once per worker)."""
        if subject not in self._foreground:
            try:
                self._foreground[subject] = foreground_slices(np.asarray(mri))
            except ValueError as exc:
                raise ValueError(f"{self.sources[subject].mri_path}: {exc}") from exc
        return self._foreground[subject]


class EpochSampler(Sampler[SampleKey]):
    """Deterministic shuffled (or ordered) sharding of an epoch's samples over ranks.

    Call :meth:`set_epoch` before each epoch. Every rank draws the same permutation
    from :func:`epoch_seed` ``(seed, epoch)``; the order is padded (repeating its start)
    to a multiple of ``world_size`` and rank ``r`` takes positions ``r::world_size``.
    """

    def __init__(
        self, n: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        if n < 1:
            raise ValueError(f"EpochSampler: need at least one sample, got {n}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"EpochSampler: rank {rank} not in [0, world_size={world_size})")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s permutation (and keys) from the next iteration on."""
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        """The epoch's order of all ``n`` samples (before padding and sharding)."""
        if not self.shuffle:
            return list(range(self.n))
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[SampleKey]:
        """This rank's keys for the current epoch."""
        order = self.order()
        total = len(self) * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        return iter(SampleKey(self.epoch, i) for i in order[self.rank :: self.world_size])

    def __len__(self) -> int:
        """Samples per rank: ``ceil(n / world_size)``."""
        return math.ceil(self.n / self.world_size)


def make_loader(
    dataset: Dataset,
    sampler: Sampler,
    *,
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | None = None,
    prefetch_factor: int = 2,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader built to keep an accelerator busy.

    ``num_workers`` processes build samples ahead (``prefetch_factor`` batches each) and
    stay alive between epochs (persistent workers); batches land in pinned memory when
    ``device`` is CUDA, so :func:`fusion3d.learned.devices.to_device` copies them without
    blocking. The loader draws from its own generator (seeded with ``seed``), never
    from the global torch RNG, so the model's own randomness (drop path) does not
    depend on the loader; samples are seeded per key (see the module docstring).
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = {}
    if num_workers > 0:
        workers = {"prefetch_factor": prefetch_factor, "persistent_workers": True}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device is not None and device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        **workers,
    )
