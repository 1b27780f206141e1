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

from fusion3d.synthetic.disease import (
    MTL_STRUCTURES,
    SIGNATURE_THINNING_MM,
    UPTAKE_VARIATION,
    DiseaseMaps,
    disease_maps,
    draw_mtl_atrophy,
    erosion_depth_mm,
)
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


# --- Individual anatomy: size, shape, atrophy and folding of one subject -----------------

#: Brain-mask volume (ml) drawn per sex: normal (mean, sd), truncated at +-2.5 sd. The
#: mask holds the brain with the CSF inside it (as a brain-extraction mask does); the
#: template's is 1,883 ml (nilearn MNI152 2009a mask > 0.5 at 1 mm, measured), larger
#: than an elderly adult's. Real heads measured with deepbet: 1,480-1,790 ml (five public heads).
BRAIN_VOLUME_ML = {"M": (1420.0, 100.0), "F": (1280.0, 100.0)}
#: Lateral-ventricle dilation (mm) at age 60 and per year of age, plus the diagnosis offset.
VENTRICLE_MM = {"at_60": 1.4, "per_year": 0.08, "MCI": 1.0, "AD": 2.4, "sd": 0.5}
#: Cortical thinning everywhere (mm of grey matter turned into CSF at the pial side), same
#: layout; the AD signature's extra thinning is :data:`fusion3d.synthetic.disease.SIGNATURE_THINNING_MM`.
THINNING_MM = {"at_60": 0.1, "per_year": 0.01, "MCI": 0.05, "AD": 0.1, "sd": 0.06}
#: Individual folding: a smooth random displacement of the brain's tissue pattern inside
#: the (unchanged) brain mask, rms length (mm) and correlation scale (Gaussian sigma, mm).
FOLDING_RMS_MM = 4.2
FOLDING_SIGMA_MM = 6.5
#: Regional variation of tissue T1 intensity (myelin, iron): Gaussian sigma (mm), rms fraction.
TISSUE_TEXTURE = (8.0, 0.05)
#: Labels of the true tissue map (``t1_labels.nii.gz``).
LABELS = {"background": 0, "csf": 1, "gm": 2, "wm": 3, "ventricles": 4}


@dataclass(frozen=True)
class SubjectAnatomy:
    """How one subject's brain differs from the template (drawn by :func:`draw_anatomy`).

    Attributes
    ----------
    brain_volume_ml : float
        Target volume of the brain mask (the T1 -> MNI affine scales it to this).
    shape : 3 floats
        Relative extent along MNI x, y, z (product 1): head and brain shape.
    ventricle_dilation_mm : float
        Dilation of the template's lateral ventricles into the surrounding tissue.
    cortical_thinning_mm : float
        Grey matter turned into CSF at the pial side (sulci widen).
    gm_contrast : float
        Relative change of the grey-matter T1 intensity (scanner/subject contrast).
    mtl_atrophy : float
        Fraction of the medial temporal structures' volume lost
        (:data:`fusion3d.synthetic.disease.MTL_ATROPHY`).
    signature_thinning_mm : float
        Extra cortical thinning in the AD signature regions (weight 1).
    """

    brain_volume_ml: float
    shape: tuple[float, float, float]
    ventricle_dilation_mm: float
    cortical_thinning_mm: float
    gm_contrast: float
    mtl_atrophy: float = 0.0
    signature_thinning_mm: float = 0.0

    def mni_scale(self, template_ml: float) -> np.ndarray:
        """Diagonal 3x3 scaling (subject mm -> MNI mm) that brings this brain to the template's size."""
        iso = (template_ml / self.brain_volume_ml) ** (1.0 / 3.0)
        return np.diag(iso / np.asarray(self.shape, dtype=np.float64))

    def to_json(self) -> dict:
        """The parameters as a JSON-ready dict (rounded)."""
        return {
            "brain_volume_target_ml": round(self.brain_volume_ml, 1),
            "shape_xyz": [round(float(v), 4) for v in self.shape],
            "ventricle_dilation_mm": round(self.ventricle_dilation_mm, 3),
            "cortical_thinning_mm": round(self.cortical_thinning_mm, 3),
            "gm_contrast": round(self.gm_contrast, 4),
            "mtl_atrophy": round(self.mtl_atrophy, 4),
            "signature_thinning_mm": round(self.signature_thinning_mm, 3),
        }


def _age_trend(table: dict, group: str, age: float, rng: np.random.Generator) -> float:
    """``at_60 + per_year * (age - 60) + group offset + N(0, sd)``, at least 0."""
    value = table["at_60"] + table["per_year"] * (age - 60.0) + table.get(group, 0.0)
    return max(0.0, float(value + table["sd"] * rng.standard_normal()))


def draw_anatomy(rng: np.random.Generator, group: str, sex: str, age: float) -> SubjectAnatomy:
    """Draw a subject's anatomy from its diagnosis (CN/MCI/AD), sex (M/F) and age (years).

    Brain-mask volume: :data:`BRAIN_VOLUME_ML` by sex, truncated at +-2.5 sd.
    Shape: log-normal extents (sd 4 %) with product 1. Atrophy grows with age
    and is larger for MCI and larger still for AD: ventricle dilation
    (:data:`VENTRICLE_MM`), cortical thinning (:data:`THINNING_MM`), medial temporal
    atrophy and the AD signature's thinning (:mod:`fusion3d.synthetic.disease`).
    """
    if group not in ("CN", "MCI", "AD") or sex not in BRAIN_VOLUME_ML:
        raise ValueError(f"draw_anatomy: unknown group {group!r} or sex {sex!r}")
    mean, sd = BRAIN_VOLUME_ML[sex]
    z = rng.standard_normal()
    while abs(z) > 2.5:
        z = rng.standard_normal()
    log_shape = 0.04 * rng.standard_normal(3)
    shape = np.exp(log_shape - log_shape.mean())
    return SubjectAnatomy(
        brain_volume_ml=float(mean + sd * z),
        shape=tuple(float(v) for v in shape),
        ventricle_dilation_mm=_age_trend(VENTRICLE_MM, group, age, rng),
        cortical_thinning_mm=min(_age_trend(THINNING_MM, group, age, rng), 1.2),
        gm_contrast=float(rng.uniform(-0.06, 0.06)),
        mtl_atrophy=draw_mtl_atrophy(group, age, *rng.standard_normal(2)),
        signature_thinning_mm=max(
            0.0,
            SIGNATURE_THINNING_MM[group] + SIGNATURE_THINNING_MM["sd"] * rng.standard_normal(),
        ),
    )


@functools.lru_cache(maxsize=1)
def template_disease_maps() -> DiseaseMaps:
    """The disease model's maps on the template grid (once per process)."""
    space = template_space()
    return disease_maps(space.shape, space.affine, space.gm, space.brain)


@dataclass(frozen=True)
class BrainStructure:
    """Template-brain maps that individual anatomy is built from (see :func:`brain_structure`).

    Attributes
    ----------
    index : int64 array (N,)
        Flat indices of the template brain voxels in the padded grid.
    ijk : float32 array (3, N)
        Their voxel coordinates.
    ventricle_distance : float32 array
        Distance (mm) to the template's lateral ventricles (0 inside), padded grid.
    tissue_depth : float32 array
        Depth (mm) of tissue (GM + WM >= 0.5) below the nearest CSF or outside voxel.
    t1_coef : (3,) array
        Template T1 ~ ``gm, wm, csf`` fractions (least squares in the brain).
    volume_ml : float
        Template brain-mask volume.
    """

    index: np.ndarray
    ijk: np.ndarray
    ventricle_distance: np.ndarray
    tissue_depth: np.ndarray
    t1_coef: np.ndarray
    volume_ml: float


def _lateral_ventricles(space: TemplateSpace, inside: np.ndarray) -> np.ndarray:
    """Lateral ventricles: the largest deep CSF component near the brain's centre."""
    csf = np.clip(space.brain - space.gm - space.wm, 0.0, 1.0)
    x, y, z = space.mm_grid()
    near_centre = _ellipsoid([x, y, z], (0.0, -12.0, 10.0), (28.0, 46.0, 28.0)) <= 1.0
    deep = ndimage.distance_transform_edt(inside) > 8.0
    labels, n = ndimage.label((csf > 0.5) & near_centre & deep & inside)
    if n == 0:  # pragma: no cover - the template always has ventricles
        raise ValueError("template: no lateral ventricles found")
    sizes = ndimage.sum(np.ones_like(labels), labels, range(1, n + 1))
    return labels == int(np.argmax(sizes)) + 1


@functools.lru_cache(maxsize=1)
def brain_structure() -> BrainStructure:
    """Build (once per process) the template-brain maps, cropped to the brain's bounding box."""
    space = template_space()
    inside = space.brain > 0
    box = tuple(slice(max(int(i.min()) - 4, 0), int(i.max()) + 5) for i in np.nonzero(inside))
    sub_affine = space.affine.copy()
    sub_affine[:3, 3] += [b.start for b in box]
    sub = TemplateSpace(
        sub_affine, space.t1[box], space.brain[box], space.gm[box], space.wm[box], space.tissue[box]
    )
    ventricles = _lateral_ventricles(sub, inside[box])
    vent_dist = np.full(space.shape, 100.0, np.float32)
    vent_dist[box] = ndimage.distance_transform_edt(~ventricles)
    depth = np.zeros(space.shape, np.float32)
    depth[box] = ndimage.distance_transform_edt((space.gm + space.wm)[box] >= 0.5)
    csf = np.clip(space.brain - space.gm - space.wm, 0.0, 1.0)
    design = np.c_[space.gm[inside], space.wm[inside], csf[inside]]
    coef, *_ = np.linalg.lstsq(design, space.t1[inside], rcond=None)
    index = np.flatnonzero(inside)
    ijk = np.stack(np.unravel_index(index, space.shape)).astype(np.float32)
    return BrainStructure(index, ijk, vent_dist, depth, coef, float(inside.sum()) / 1000.0)


@dataclass(frozen=True)
class SubjectBrain:
    """One subject's brain inside the template's (unchanged) brain mask.

    Attributes
    ----------
    t1 : float32 array
        The head of :class:`TemplateSpace` with this subject's brain (padded grid).
    labels : int8 array
        True tissue labels (:data:`LABELS`) on the padded grid, 0 outside the brain.
    gm, wm : float32 arrays (N,)
        Grey and white matter fractions at :attr:`BrainStructure.index`.
    mtl_label : int8 array (N,)
        Medial temporal structure at those voxels (:attr:`DiseaseMaps.mtl_label`), 0 elsewhere.
    uptake_variation : float32 array (N,)
        This person's smooth regional variation of FDG uptake (a relative change).
    """

    t1: np.ndarray
    labels: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mtl_label: np.ndarray | None = None
    uptake_variation: np.ndarray | None = None

    def structure_volumes_ml(self) -> dict[str, float]:
        """Grey-matter volume (ml, template space) of each medial temporal structure."""
        return {
            name: float(self.gm[self.mtl_label == k + 1].sum()) / 1000.0
            for k, (name, _) in enumerate(MTL_STRUCTURES)
        }


def _smooth_noise(
    rng: np.random.Generator, ijk: np.ndarray, n: int, sigma_mm: float, rms: float
) -> np.ndarray:
    """``n`` smooth random fields at the points ``ijk`` (voxels = mm), shape (n, N).

    White noise on a 2 mm lattice over the points' bounding box, smoothed by a
    Gaussian of ``sigma_mm``, scaled to an rms of ``rms`` per field, interpolated
    linearly at the points.
    """
    lo = ijk.min(axis=1) - 4.0
    shape = tuple(int(v) for v in np.ceil((ijk.max(axis=1) - lo) / 2.0) + 4)
    coarse_pts = (ijk - lo[:, None].astype(np.float32)) / np.float32(2.0)
    out = np.empty((n, ijk.shape[1]), np.float32)
    for c in range(n):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_mm / 2)
        noise *= np.float32(rms / (noise.std() + 1e-6))
        out[c] = ndimage.map_coordinates(noise, coarse_pts, order=1, mode="nearest")
    return out


def individual_brain(
    space: TemplateSpace,
    anatomy: SubjectAnatomy,
    rng: np.random.Generator,
    regional_variation: tuple[float, float] | None = None,
) -> SubjectBrain:
    """Build a subject's brain: the template's tissue pattern, folded and atrophied.

    Steps: displace the template's GM, WM and T1 inside the brain mask by a
    smooth random field (individual folding, :data:`FOLDING_RMS_MM`); dilate the
    lateral ventricles by ``anatomy.ventricle_dilation_mm`` (tissue within that
    distance becomes CSF); thin the cortex by ``anatomy.cortical_thinning_mm``, plus
    ``anatomy.signature_thinning_mm`` times the AD-signature weight (grey matter that
    shallow below CSF becomes CSF); erode each medial temporal structure from its surface
    so that it loses ``anatomy.mtl_atrophy`` of its volume (times its share,
    :data:`fusion3d.synthetic.disease.MTL_STRUCTURES`); change the T1 by the
    template's own tissue intensities (a linear fit) for the tissue removed, and
    the grey-matter intensity by ``anatomy.gm_contrast``; vary tissue intensity
    regionally (:data:`TISSUE_TEXTURE`); last, draw the smooth regional variation of FDG
    uptake (:data:`fusion3d.synthetic.disease.UPTAKE_VARIATION`), and with
    ``regional_variation`` = (sigma mm, rms) its finer, regional part
    (:data:`fusion3d.synthetic.disease.REGIONAL_UPTAKE_VARIATION`; None or rms 0: not drawn,
    the brains before 2026-12-07). The brain mask is the template's, so the true brain mask
    stays exact.
    """
    st = brain_structure()
    disease = template_disease_maps()
    fold_rms = FOLDING_RMS_MM / np.sqrt(3.0)  # per axis
    points = st.ijk + _smooth_noise(rng, st.ijk, 3, FOLDING_SIGMA_MM, fold_rms)

    def sample(volume: np.ndarray) -> np.ndarray:
        """``volume`` at the displaced brain voxels (linear)."""
        return ndimage.map_coordinates(volume, points, order=1, mode="nearest", output=np.float32)

    gm0, wm0, t1_0 = sample(space.gm), sample(space.wm), sample(space.t1)
    vent_dist, depth = sample(st.ventricle_distance), sample(st.tissue_depth)
    signature, mtl_depth = sample(disease.signature), sample(disease.mtl_depth)
    mtl_label = ndimage.map_coordinates(disease.mtl_label, points, order=0, mode="nearest")
    r, t = np.float32(anatomy.ventricle_dilation_mm), np.float32(anatomy.cortical_thinning_mm)
    t = t + np.float32(anatomy.signature_thinning_mm) * signature
    to_ventricle = np.clip(r - vent_dist + 1.0, 0.0, 1.0)
    to_sulcus = np.clip(t - depth + 1.0, 0.0, 1.0)
    erosion = np.zeros(len(MTL_STRUCTURES) + 1, np.float32)
    for k, (_, share) in enumerate(MTL_STRUCTURES):
        erosion[k + 1] = erosion_depth_mm(disease, k, anatomy.mtl_atrophy * share)
    to_mtl = np.where(mtl_label > 0, np.clip(erosion[mtl_label] - mtl_depth + 1.0, 0.0, 1.0), 0.0)
    gm = gm0 * (1.0 - np.maximum(np.maximum(to_ventricle, to_sulcus), to_mtl))
    wm = wm0 * (1.0 - to_ventricle)
    c_gm, c_wm, c_csf = (np.float32(c) for c in st.t1_coef)
    t1_brain = t1_0 + (c_gm - c_csf) * (gm - gm0) + (c_wm - c_csf) * (wm - wm0)
    t1_brain += np.float32(anatomy.gm_contrast) * c_gm * gm
    t1_brain *= 1.0 + _smooth_noise(rng, st.ijk, 1, TISSUE_TEXTURE[0], TISSUE_TEXTURE[1])[0]
    t1 = space.t1.copy()
    t1.flat[st.index] = np.clip(t1_brain, 0.0, None)

    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    label = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1).astype(np.int8)
    label[(label == LABELS["csf"]) & (vent_dist <= r + 0.5)] = LABELS["ventricles"]
    labels = np.zeros(space.shape, np.int8)
    labels.flat[st.index] = label
    sigma, rms, sd_global = UPTAKE_VARIATION
    variation = _smooth_noise(rng, st.ijk, 1, sigma, rms)[0]
    variation += np.float32(sd_global * rng.standard_normal())
    if regional_variation is not None and regional_variation[1] > 0:
        variation += _smooth_noise(rng, st.ijk, 1, *regional_variation)[0]
    return SubjectBrain(
        t1.astype(np.float32),
        labels,
        gm.astype(np.float32),
        wm.astype(np.float32),
        mtl_label.astype(np.int8),
        variation,
    )


def render_subject_t1(
    space: TemplateSpace,
    brain: SubjectBrain,
    t1_to_mni: np.ndarray,
    field: np.ndarray,
    vox2world: np.ndarray,
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample a subject's head, brain mask and tissue labels on its T1 grid.

    As :func:`render_t1` with the subject's brain; returns the noise-free float32
    T1, the uint8 true brain mask and the uint8 true labels (:data:`LABELS`;
    nearest neighbour, every mask voxel at least CSF, 0 outside the mask).
    """
    coords = map_grid(vox2world, shape, t1_to_mni, np.linalg.inv(space.affine), field)
    t1 = ndimage.map_coordinates(brain.t1, coords, order=1, mode="constant", output=np.float32)
    mask = ndimage.map_coordinates(
        space.brain, coords, order=1, mode="constant", cval=0.0, output=np.float32
    )
    mask = (mask >= 0.5).astype(np.uint8)
    labels = ndimage.map_coordinates(brain.labels, coords, order=0, mode="constant", cval=0)
    labels = np.where(mask > 0, np.maximum(labels, LABELS["csf"]), 0).astype(np.uint8)
    return t1, mask, labels
