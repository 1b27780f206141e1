"""ANTsPy glue: nibabel <-> ANTs images, registration, and ANTs transform <-> RAS matrices.

ANTs conventions (the source of most bugs, so they are spelled out):
ANTs images and transforms live in LPS physical millimetres, while NIfTI affines
are RAS. An ANTs affine ``.mat`` written by ``ants.registration(fixed, moving)``
maps points of the FIXED space to points of the MOVING space:
``y = M (x - c) + c + t`` (``c`` the fixed parameters, ``M``/``t`` the parameters).
:func:`ants_affine_to_ras` turns that into a 4x4 RAS matrix in either direction.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from fusion3d.io import atomic_path

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


ITK_THREADS_VAR = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"

#: The thread count ITK was (or will be) initialised with in this process; None = not yet known.
_ITK_THREADS: int | None = None

#: Seed of every ANTs registration (ANTs' sampling otherwise follows the clock).
RANDOM_SEED = 20260


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int) -> int:
    """Set ITK and torch thread counts; return the count ITK uses in this process.

    ITK (inside ANTsPy) reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` ONCE, when
    its first filter runs; later changes of the variable are ignored by every
    later ANTs call of the process (measured with ANTsPy 0.6.3). So the first
    call of this function fixes the ITK count of the process: it sets the
    variable, and if ``ants`` was already imported (it may already have run
    with the variable's previous value) it conservatively assumes that value
    (or the CPU count when unset). :func:`threads_effective` tells whether a
    later request can be honoured in-process; :func:`fusion3d.preprocess.preprocess_pair`
    runs in a fresh process otherwise.
    """
    global _ITK_THREADS
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    threads = int(threads)
    if _ITK_THREADS is None:
        previous = os.environ.get(ITK_THREADS_VAR)
        if "ants" in sys.modules and previous != str(threads):
            try:
                _ITK_THREADS = int(previous) if previous is not None else _cpu_count()
            except ValueError:
                _ITK_THREADS = _cpu_count()
        else:
            _ITK_THREADS = threads
    if _ITK_THREADS == threads:
        os.environ[ITK_THREADS_VAR] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    return _ITK_THREADS


def threads_effective(threads: int) -> bool:
    """True when ITK in this process runs (or will run) with ``threads`` threads."""
    return _ITK_THREADS is None or _ITK_THREADS == int(threads)


def itk_threads_report(threads: int) -> dict:
    """Configure ``threads`` and report ``{"requested", "itk", "env"}`` (used by tests)."""
    itk = configure_threads(threads)
    return {"requested": int(threads), "itk": itk, "env": os.environ.get(ITK_THREADS_VAR)}


def call_in_fresh_process(fn, /, *args, env: dict[str, str] | None = None, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a new interpreter (see :mod:`fusion3d.preprocess.worker`).

    Used when ITK in this process is already fixed to another thread count: the
    child starts with no ITK state and ``env`` (e.g. the wanted
    ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``), so the count takes effect there.
    """
    from fusion3d.preprocess import worker

    return worker.call_in_fresh_process(fn, *args, env=env, **kwargs)


@contextmanager
def ants_seed(seed: int = RANDOM_SEED):
    """Within the block, every ``ants.registration`` gets ``--random-seed seed``.

    ANTsPy 0.6.3 has no ``random_seed`` argument: it appends ``--random-seed``
    when ``ants.config._random_seed`` is set, so that is set and restored here
    (without ``ants.set_ants_deterministic``, which would also force one thread).
    """
    import ants.config

    old = ants.config._random_seed
    ants.config._random_seed = int(seed)
    try:
        yield
    finally:
        ants.config._random_seed = old


def itk_threads() -> int:
    """The ITK thread count of this process (configured, else from the environment/CPUs)."""
    if _ITK_THREADS is not None:
        return _ITK_THREADS
    try:
        return int(os.environ.get(ITK_THREADS_VAR, "")) or _cpu_count()
    except ValueError:
        return _cpu_count()


_SINGLE_THREAD_ENV = {ITK_THREADS_VAR: "1", "OMP_NUM_THREADS": "1"}


def _single_thread_worker():
    from fusion3d.preprocess import worker

    return worker.shared_worker(_SINGLE_THREAD_ENV, preload=("ants",))


def start_registration_worker() -> None:
    """Start (without waiting) the single-threaded registration worker if one will be needed.

    Its ~2 s of start-up (a fresh interpreter importing ANTsPy) then overlaps
    the work done before the first registration.
    """
    if itk_threads() != 1:
        _single_thread_worker()


def _image_state(image) -> tuple:
    return (
        image.numpy(),
        tuple(image.origin),
        tuple(image.spacing),
        np.asarray(image.direction, dtype=float),
    )


def _image_from_state(state: tuple):
    import ants

    data, origin, spacing, direction = state
    return ants.from_numpy(data, origin=origin, spacing=spacing, direction=direction)


def _registration_here(fixed, moving, seed: int, kwargs: dict) -> dict:
    import ants

    with ants_seed(seed):
        res = ants.registration(fixed=fixed, moving=moving, **kwargs)
    return {
        "fwdtransforms": list(res["fwdtransforms"]),
        "invtransforms": list(res["invtransforms"]),
    }


def _registration_task(fixed: tuple, moving: tuple, seed: int, kwargs: dict) -> dict:
    kwargs = {
        k: _image_from_state(v[1]) if isinstance(v, tuple) and v[:1] == ("__image__",) else v
        for k, v in kwargs.items()
    }
    return _registration_here(_image_from_state(fixed), _image_from_state(moving), seed, kwargs)


def ants_registration(fixed, moving, *, seed: int = RANDOM_SEED, **kwargs) -> dict:
    """Deterministic ``ants.registration(fixed, moving, **kwargs)``.

    Two runs with the same inputs give bit-identical transforms. ANTs' random
    sampling is seeded with ``seed`` (``--random-seed``), but that is not enough:
    ITK's multi-threaded Mattes / joint-histogram MI metrics accumulate their
    joint histogram from several threads in a run-dependent order, so with
    more than one ITK thread the result changes from run to run (measured: 4
    of 4 runs differed with 2 threads, Pool or Platform threader; GC and mean
    squares were stable, 1 thread always is). So when this process's ITK uses
    more than one thread the registration runs in a single-threaded helper
    process (started once per process and reused), and in-process otherwise.

    Returns
    -------
    dict
        ``fwdtransforms`` and ``invtransforms`` (paths under ``outprefix``).
    """
    if itk_threads() == 1:
        return _registration_here(fixed, moving, seed, kwargs)
    state = {
        k: ("__image__", _image_state(v)) if hasattr(v, "numpy") and hasattr(v, "spacing") else v
        for k, v in kwargs.items()
    }
    return _single_thread_worker().call(
        _registration_task, _image_state(fixed), _image_state(moving), int(seed), state
    )


def nib_to_ants(img: nib.Nifti1Image):
    """Convert a 3D nibabel image (any orientation) to an ANTsImage with the same world."""
    import ants

    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    lps = _LPS @ img.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(
        data,
        origin=tuple(float(v) for v in lps[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def ants_to_nib(image) -> nib.Nifti1Image:
    """Convert an ANTsImage to a nibabel image (RAS affine)."""
    direction = np.asarray(image.direction, dtype=float)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.spacing, dtype=float)
    lps[:3, 3] = np.asarray(image.origin, dtype=float)
    return nib.Nifti1Image(image.numpy().astype(np.float32), _LPS @ lps)


def ants_affine_to_ras(transform, direction: str = "fixed_to_moving") -> np.ndarray:
    """Convert an ANTs affine transform (object or ``.mat`` path) to a 4x4 RAS matrix.

    Parameters
    ----------
    transform : ants.ANTsTransform or path
        An affine-family ANTs transform (``AffineTransform``, ``Euler3DTransform``...).
    direction : {"fixed_to_moving", "moving_to_fixed"}
        ``fixed_to_moving`` is ANTs' own sense (a fixed-space point to the moving
        space point it samples); ``moving_to_fixed`` is its inverse, i.e. the
        matrix that carries moving-image anatomy onto the fixed image.

    Returns
    -------
    (4, 4) ndarray acting on RAS world millimetres.
    """
    import ants

    if isinstance(transform, (str, os.PathLike)):
        if not Path(transform).exists():
            raise FileNotFoundError(f"{transform}: transform file not found")
        transform = ants.read_transform(str(transform))
    params = np.asarray(transform.parameters, dtype=float)
    center = np.asarray(transform.fixed_parameters, dtype=float)
    if params.size != 12 or center.size != 3:
        raise ValueError(
            f"not a 3D affine transform (parameters {params.size}, fixed {center.size})"
        )
    m = params[:9].reshape(3, 3)
    t = params[9:]
    lps = np.eye(4)
    lps[:3, :3] = m
    lps[:3, 3] = t + center - m @ center
    ras = _LPS @ lps @ _LPS
    if direction == "fixed_to_moving":
        return ras
    if direction == "moving_to_fixed":
        return np.linalg.inv(ras)
    raise ValueError(f"direction must be 'fixed_to_moving' or 'moving_to_fixed', got {direction!r}")


def ras_to_ants_affine(matrix: np.ndarray):
    """Build an ANTs ``AffineTransform`` (fixed -> moving sense) from a 4x4 RAS matrix."""
    import ants

    lps = _LPS @ np.asarray(matrix, dtype=float) @ _LPS
    tx = ants.create_ants_transform(
        transform_type="AffineTransform", precision="float", dimension=3
    )
    tx.set_parameters(np.concatenate([lps[:3, :3].ravel(), lps[:3, 3]]))
    tx.set_fixed_parameters(np.zeros(3))
    return tx


def copy_transform(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy an ANTs transform file to ``dst`` atomically."""
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def resample_to_resolution(image, resolution_mm: float):
    """Resample an ANTsImage to isotropic ``resolution_mm`` (linear)."""
    import ants

    return ants.resample_image(image, (resolution_mm,) * 3, use_voxels=False, interp_type=0)


#: Default multi-resolution schedule of the linear registrations (images at ~3 mm).
FAST_SCHEDULE: dict = {
    "iterations": (100, 50, 25),
    "shrink_factors": (4, 2, 1),
    "smoothing_sigmas": (2, 1, 0),
    "sampling_rate": 0.2,
}


def register(
    fixed,
    moving,
    transform: str,
    *,
    mask=None,
    initial_transform: str | None = None,
    outprefix: str,
    fast: bool = True,
    schedule: dict | None = None,
    seed: int = RANDOM_SEED,
) -> dict:
    """Run ``ants.registration`` deterministically and return its result dict.

    ``transform`` is an ANTsPy ``type_of_transform`` ("Rigid", "Affine", "SyN"...).
    Mattes mutual information with regular (grid) sampling; ``fast`` uses
    :data:`FAST_SCHEDULE` (overridden key by key by ``schedule``), adapted to
    images at 2-4 mm. Deterministic: see :func:`ants_registration` (whose
    result dict, ``fwdtransforms``/``invtransforms`` only, is returned).
    """
    kwargs: dict = {}
    if fast:
        sched = {**FAST_SCHEDULE, **(schedule or {})}
        unknown = set(sched) - set(FAST_SCHEDULE)
        if unknown:
            raise ValueError(f"unknown registration schedule keys {sorted(unknown)}")
        n = len(sched["iterations"])
        if not (len(sched["shrink_factors"]) == len(sched["smoothing_sigmas"]) == n):
            raise ValueError(
                "schedule iterations, shrink_factors and smoothing_sigmas differ in length"
            )
        kwargs.update(
            aff_iterations=tuple(int(v) for v in sched["iterations"]),
            aff_shrink_factors=tuple(int(v) for v in sched["shrink_factors"]),
            aff_smoothing_sigmas=tuple(sched["smoothing_sigmas"]),
            aff_random_sampling_rate=float(sched["sampling_rate"]),
        )
    if mask is not None:
        kwargs["mask"] = mask
    if initial_transform is not None:
        kwargs["initial_transform"] = initial_transform
    return ants_registration(
        fixed, moving, seed=seed, type_of_transform=transform, outprefix=outprefix, **kwargs
    )


def mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray, bins: int = 32) -> float:
    """Mutual information (nats) of ``a`` and ``b`` inside ``mask`` (joint histogram)."""
    m = mask > 0
    if m.sum() < 10:
        return 0.0
    x, y = a[m].astype(np.float64), b[m].astype(np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    hist, _, _ = np.histogram2d(x, y, bins=bins)
    pxy = hist / hist.sum()
    px, py = pxy.sum(1, keepdims=True), pxy.sum(0, keepdims=True)
    nz = pxy > 0
    return float((pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])).sum())


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` inside ``mask`` (0 when undefined)."""
    m = mask > 0
    if m.sum() < 10:
        return 0.0
    x, y = a[m].astype(np.float64), b[m].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0
