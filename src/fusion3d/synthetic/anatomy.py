"""Synthetic head anatomy in MNI space and its rendering as a subject's T1 MPRAGE.

The brain is nilearn's MNI152 2009a template (T1, GM, WM, brain mask, 1 mm),
loaded offline. Around it we build a plausible head on a padded MNI grid: a CSF
rim, a three-layer skull (dark tables, brighter diploe), muscle, bright scalp
fat, orbits with eyes, a lower face/jaw block and a neck with a spinal cord. A
subject's T1 is this head seen through the subject's true mapping
``m = A @ x + d(x)`` (``x``: T1 world mm, ``m``: MNI mm), times a smooth bias
field, with Rician noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fusion3d.synthetic.geometry import map_grid

#: Padding (voxels = mm) added to the 197x233x189 template on each side: (low, high) per axis.
PAD = ((22, 22), (14, 14), (78, 6))

# T1 intensities of the non-brain tissues, on the template's scale (WM ~0.9).
_CSF = 0.14
_BONE = 0.04
_DIPLOE = 0.48
_MUSCLE = 0.38
_FAT = 1.02
_VITREOUS = 0.10
_CORD = 0.72


@dataclass(frozen=True)
class TemplateSpace:
    """The synthetic head on a padded 1 mm MNI grid (all arrays share ``affine``).

    Attributes
    ----------
    affine : (4, 4) array
        Voxel-to-MNI-mm affine of the padded grid.
    t1 : float32 array
        T1 intensity of the whole head (template scale, WM ~0.9, air 0).
    brain : float32 array
        Template brain mask (0/1); the ground-truth brain.
    gm, wm : float32 arrays
        Template grey/white matter probabilities (0 outside the brain).
    tissue : int8 array
        Coarse labels outside the brain: 0 air, 1 brain, 2 CSF, 3 bone, 4 diploe,
        5 muscle/soft tissue, 6 fat, 7 eye, 8 cord.
    """

    affine: np.ndarray
    t1: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    tissue: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the padded grid."""
        return tuple(self.t1.shape)

    def mm_grid(self) -> list[np.ndarray]:
        """Open (broadcastable) MNI mm coordinates of the padded grid: ``[x, y, z]``."""
        return [
            (np.arange(n, dtype=np.float32) + np.float32(self.affine[a, 3]))[
                tuple(slice(None) if b == a else None for b in range(3))
            ]
            for a, n in enumerate(self.shape)
        ]


def _load_templates() -> dict[str, np.ndarray | object]:
    """Load the nilearn MNI152 2009a maps (offline) as float32 arrays plus the affine."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    out: dict[str, np.ndarray | object] = {"affine": t1.affine.copy()}
    out["t1"] = np.asarray(t1.dataobj, dtype=np.float32)
    out["gm"] = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, np.float32)
    out["wm"] = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, np.float32)
    out["brain"] = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, np.float32)
    for key in ("t1", "gm", "wm", "brain"):
        if out[key].shape != (197, 233, 189):
            raise ValueError(
                f"nilearn MNI152 {key} template has shape {out[key].shape}, expected 197x233x189"
            )
    return out


def _ellipsoid(grid: list[np.ndarray], center, radii) -> np.ndarray:
    """Normalised ellipsoid radius ``sum(((x - c) / r)^2) ** 0.5`` on an open grid."""
    acc = 0.0
    for g, c, r in zip(grid, center, radii, strict=True):
        acc = acc + ((g - np.float32(c)) / np.float32(r)) ** 2
    return np.sqrt(acc)


def _upsample2(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear 2x upsampling of a ``[::2, ::2, ::2]`` subsample back to ``shape``."""
    out = coarse
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        new_shape = list(out.shape)
        new_shape[axis] = 2 * m
        up = np.empty(new_shape, dtype=np.float32)
        sl = [slice(None)] * 3
        sl[axis] = slice(0, None, 2)
        up[tuple(sl)] = out
        nxt = np.concatenate(
            [np.take(out, range(1, m), axis=axis), np.take(out, [m - 1], axis=axis)], axis=axis
        )
        sl[axis] = slice(1, None, 2)
        up[tuple(sl)] = 0.5 * (out + nxt)
        sl[axis] = slice(0, n)
        out = up[tuple(sl)]
    return np.ascontiguousarray(out)


@functools.lru_cache(maxsize=1)
def template_space() -> TemplateSpace:
    """Build (once per process) the synthetic head on the padded MNI grid.

    Returns
    -------
    TemplateSpace
        The head model; deterministic (its small texture uses a fixed seed).
    """
    tpl = _load_templates()
    pad = PAD
    affine = np.array(tpl["affine"], dtype=np.float64)
    affine[:3, 3] -= [p[0] for p in pad]
    t1 = np.pad(tpl["t1"], pad)
    brain = (np.pad(tpl["brain"], pad) > 0.5).astype(np.float32)
    gm = np.pad(tpl["gm"], pad) * brain
    wm = np.pad(tpl["wm"], pad) * brain
    shape = t1.shape
    space = TemplateSpace(affine, t1, brain, gm, wm, np.zeros(shape, np.int8))
    x, y, z = space.mm_grid()

    # Intracranial envelope: brain with sulci closed, then distance outward (computed at 2 mm).
    coarse = ndimage.gaussian_filter(brain[::2, ::2, ::2], sigma=2.0) > 0.3
    dist = _upsample2(ndimage.distance_transform_edt(~coarse).astype(np.float32) * 2.0, shape)
    # Small smooth texture so the skull/scalp thickness varies a little.
    rng = np.random.default_rng(20240611)
    wobble = ndimage.gaussian_filter(rng.standard_normal(coarse.shape).astype(np.float32), 4.0)
    wobble = _upsample2(wobble / (wobble.std() + 1e-6), shape)
    dist_out = dist + 0.8 * wobble  # outer layers only

    # Medulla centre at the template's lowest slices: the cord continues from there.
    low = brain[:, :, pad[2][0] : pad[2][0] + 4].sum(axis=2) > 0
    ci, cj = np.argwhere(low).mean(axis=0) if low.any() else np.array([shape[0] / 2, shape[1] / 2])
    cx, cy = affine[0, 3] + ci, affine[1, 3] + cj
    z_brain_bottom = affine[2, 3] + pad[2][0]
    r_cord = np.sqrt((x - np.float32(cx)) ** 2 + (y - np.float32(cy)) ** 2)
    below = z < np.float32(z_brain_bottom + 1)

    # Head outline: skull shell + scalp, a lower face/jaw block and a neck.
    shell = dist_out <= 14.0
    face = _ellipsoid([x, y, z], (0.0, 8.0, -48.0), (62.0, 82.0, 48.0)) <= 1.0
    neck_r = _ellipsoid([x, y], (0.0, cy + 8.0), (52.0, 56.0))
    neck = (neck_r <= 1.0) & (z < -30.0)
    head = shell | face | neck
    depth = _upsample2(
        ndimage.distance_transform_edt(head[::2, ::2, ::2]).astype(np.float32) * 2.0, shape
    )
    depth += 0.6 * wobble

    tissue = np.zeros(shape, np.int8)
    tissue[head] = 5
    tissue[head & (depth <= 5.0)] = 6
    skull_zone = dist <= 8.0
    foramen = below & (r_cord < 10.0)
    tissue[skull_zone & ~foramen] = 3
    tissue[skull_zone & (dist > 3.8) & (dist <= 6.4) & ~foramen] = 4
    tissue[(dist <= 2.4) & ~foramen] = 2
    # Orbits: globes in orbital fat, below the frontal lobes.
    for sx in (-1.0, 1.0):
        orbit = _ellipsoid([x, y, z], (sx * 32.0, 50.0, -36.0), (17.0, 17.0, 15.0)) <= 1.0
        globe = _ellipsoid([x, y, z], (sx * 32.0, 54.0, -36.0), (11.5, 11.5, 11.5)) <= 1.0
        free = dist > 3.0
        tissue[orbit & free] = 6
        tissue[globe & free] = 7
    # Spinal cord in CSF inside a bony ring, below the template's medulla.
    tissue[below & (r_cord < 14.0)] = 3
    tissue[below & (r_cord < 9.0)] = 2
    tissue[below & (r_cord < 5.5)] = 8
    tissue[brain > 0] = 1

    values = np.array([0.0, 0.0, _CSF, _BONE, _DIPLOE, _MUSCLE, _FAT, _VITREOUS, _CORD], np.float32)
    head_t1 = values[tissue]
    texture = 1.0 + 0.06 * wobble
    head_t1 *= np.where(tissue >= 4, texture, np.float32(1.0)).astype(np.float32)
    head_t1 = ndimage.gaussian_filter(head_t1, sigma=0.6)
    inside = brain > 0
    # Brain voxels keep the template T1; a soft edge blends into the CSF rim.
    head_t1[inside] = np.maximum(t1[inside], np.float32(0.25))
    head_t1 = ndimage.gaussian_filter(head_t1, sigma=0.4).astype(np.float32)
    return TemplateSpace(affine, head_t1, brain, gm, wm, tissue)


@dataclass(frozen=True)
class T1Grid:
    """Acquisition grid of the synthetic T1 (sagittal MPRAGE-like, voxel order P-I-R).

    Attributes
    ----------
    shape : 3 ints
        Voxels along (anterior->posterior, superior->inferior, left->right).
    zooms : 3 floats
        Voxel size in mm along the same axes.
    """

    shape: tuple[int, int, int] = (192, 192, 160)
    zooms: tuple[float, float, float] = (1.25, 1.25, 1.2)

    #: World direction of each voxel axis (columns): posterior, inferior, right.
    @property
    def axes(self) -> np.ndarray:
        """Unit world directions (RAS) of the voxel axes, one per column."""
        return np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def render_t1(
    space: TemplateSpace,
    t1_to_mni: np.ndarray,
    field: np.ndarray,
    vox2world: np.ndarray,
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the head and the brain mask on a subject's T1 grid (no bias, no noise).

    Parameters
    ----------
    space : TemplateSpace
        The MNI-space head model.
    t1_to_mni : (4, 4) array
        Affine part ``A`` of the subject's T1-world -> MNI mapping.
    field : array, ``shape + (3,)``
        Displacement ``d`` (mm, MNI axes) at each T1 voxel.
    vox2world, shape
        The T1 grid.

    Returns
    -------
    (t1, brainmask)
        Noise-free float32 T1 (template scale) and the uint8 true brain mask.
    """
    coords = map_grid(vox2world, shape, t1_to_mni, np.linalg.inv(space.affine), field)
    t1 = ndimage.map_coordinates(
        space.t1, coords, order=1, mode="constant", cval=0.0, output=np.float32
    )
    brain = ndimage.map_coordinates(
        space.brain, coords, order=1, mode="constant", cval=0.0, output=np.float32
    )
    return t1, (brain >= 0.5).astype(np.uint8)


def smooth_log_bias(
    vox2world: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator, strength: float
) -> np.ndarray:
    """A smooth log bias field: a random low-order polynomial of world position.

    Terms up to second order in ``x / 100 mm`` (so the field varies over the
    head, not within a gyrus), scaled so that its range is about ``+-strength``.
    """
    idx = [np.arange(n, dtype=np.float64) - (n - 1) / 2.0 for n in shape]  # centred grid
    coords = []
    for c in range(3):
        parts = [
            (vox2world[c, a] * idx[a])[tuple(slice(None) if b == a else None for b in range(3))]
            for a in range(3)
        ]
        coords.append((parts[0] + parts[1] + parts[2]) / 100.0)
    lin = rng.uniform(-1.0, 1.0, 3)
    quad = rng.uniform(-1.0, 1.0, 3)
    field = sum(lin[c] * coords[c] + quad[c] * coords[c] ** 2 for c in range(3))
    field = np.broadcast_to(np.asarray(field, dtype=np.float32), tuple(shape))
    field = field - np.float32(field.mean())
    field *= np.float32(strength) / max(float(np.abs(field).max()), 1e-6)
    return field.astype(np.float32)


def bias_and_noise(
    clean: np.ndarray,
    vox2world: np.ndarray,
    rng: np.random.Generator,
    *,
    gain: float,
    bias_strength: float,
    noise_fraction: float,
) -> np.ndarray:
    """Apply a smooth multiplicative bias field and Rician noise; returns int16.

    Parameters
    ----------
    clean : float32 array
        Noise-free image (template scale, WM ~0.9).
    vox2world : (4, 4) array
        Grid affine (the bias field is smooth in world mm).
    rng : numpy.random.Generator
        Source of randomness.
    gain : float
        Scanner intensity of 1.0 on the template scale.
    bias_strength : float
        Amplitude of the log bias field (about +-``bias_strength``).
    noise_fraction : float
        Noise standard deviation relative to ``gain``.
    """
    logb = smooth_log_bias(vox2world, clean.shape, rng, bias_strength)
    img = clean * np.exp(logb, out=logb) * np.float32(gain)
    sigma = np.float32(noise_fraction * gain)
    n1 = rng.standard_normal(clean.shape, dtype=np.float32)
    img += sigma * n1
    np.square(img, out=img)
    rng.standard_normal(clean.shape, dtype=np.float32, out=n1)
    n1 *= sigma
    np.square(n1, out=n1)
    img += n1
    np.sqrt(img, out=img)
    return np.clip(np.rint(img), 0, 32767).astype(np.int16)
