"""Where and how much Alzheimer's disease changes the synthetic brain: the calibrated disease model.

Regions come from the Desikan-Killiany atlas that the probe also uses
(:mod:`fusion3d.probe.atlas`), sampled on the synthetic template's grid. Three effects,
each with its size in the literature (docs/architecture.md, "The disease model"):

- **Medial temporal atrophy** (:data:`MTL_ATROPHY`): the hippocampus, amygdala,
  entorhinal and parahippocampal cortex lose a fraction of their volume. Hippocampal
  volume is about 20-25 % below CN in AD and 10-13 % in MCI (meta-analysis of Shi et al.
  2009, Hum Brain Mapp 30:3507; amygdala alike: Poulin et al. 2011, Psychiatry Res
  194:7; entorhinal: Du et al. 2001, JNNP 71:441), it shrinks with age in CN, and the
  natural spread between people (coefficient of variation about 10 %) makes the groups
  overlap, so that hippocampal volume alone separates AD from CN with an AUC of about
  0.85-0.9. The tissue lost becomes CSF (a wider temporal horn and choroidal fissure):
  every voxel of the structure within ``t`` mm of its surface, with ``t`` chosen per
  structure so that the fraction lost is the one drawn (:func:`erosion_depth_mm`).
- **Cortical thinning in the AD signature** (:data:`SIGNATURE_THINNING_MM`): extra
  thinning of the temporal and parietal cortex, precuneus and posterior cingulate
  (Dickerson et al. 2009, Cereb Cortex 19:497), on top of the small thinning everywhere
  that comes with age.
- **FDG hypometabolism** (:data:`HYPO_SCALE`, :data:`HYPO_REGIONS`): posterior cingulate
  and precuneus, temporo-parietal cortex, then frontal (Minoshima et al. 1997, Ann Neurol
  42:85; Herholz et al. 2002, NeuroImage 17:302; ADNI's FDG meta-ROI, Landau et al. 2011,
  Neurobiol Aging 32:1207), about 15-20 % below CN in AD and 5-10 % in MCI, with a
  spread between people in every group.

The template's own values are CN at age 60 with no disease; a subject's draw is in
:func:`fusion3d.synthetic.anatomy.draw_anatomy` and the hypometabolism scale in
:mod:`fusion3d.synthetic.cohort`; the template's maps are
:func:`fusion3d.synthetic.anatomy.template_disease_maps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Medial temporal structures: (Desikan-Killiany label, share of the drawn volume loss).
MTL_STRUCTURES = (
    ("hippocampus", 1.0),
    ("amygdala", 1.0),
    ("entorhinal", 1.0),
    ("parahippocampal", 0.7),
)
#: Fraction of the medial temporal volume lost: ``at_60 + per_year * (age - 60)`` plus the
#: group's offset, plus ``sd`` (natural spread, every group) and the group's own spread
#: ``sd_<group>``; clipped to [0, 0.7]. With these values a typical subject's hippocampal volume
#: is about 23 % (AD) and 11 % (MCI) below a typical CN's of the same age and folding
#: (held by tests/unit/synthetic/test_disease.py).
MTL_ATROPHY = {
    "at_60": 0.15,
    "per_year": 0.004,
    "MCI": 0.095,
    "AD": 0.20,
    "sd": 0.03,
    "sd_MCI": 0.04,
    "sd_AD": 0.05,
}
#: AD-signature cortex where thinning is larger in disease: (label, weight).
SIGNATURE_REGIONS = (
    ("entorhinal", 1.0),
    ("parahippocampal", 1.0),
    ("temporalpole", 1.0),
    ("inferiortemporal", 1.0),
    ("middletemporal", 0.8),
    ("fusiform", 0.8),
    ("bankssts", 0.8),
    ("inferiorparietal", 0.8),
    ("supramarginal", 0.8),
    ("superiorparietal", 0.6),
    ("precuneus", 1.0),
    ("posteriorcingulate", 0.8),
    ("isthmuscingulate", 1.0),
    ("superiorfrontal", 0.4),
    ("parsopercularis", 0.4),
    ("parstriangularis", 0.4),
)
#: Extra cortical thinning (mm) in the signature (weight 1), by group, and its spread.
SIGNATURE_THINNING_MM = {"CN": 0.0, "MCI": 0.15, "AD": 0.35, "sd": 0.1}
#: FDG hypometabolism: (label, weight of ``H``). Sensorimotor, occipital cortex, the
#: basal ganglia, thalamus and cerebellum are spared, as in AD.
HYPO_REGIONS = (
    ("posteriorcingulate", 1.0),
    ("isthmuscingulate", 1.0),
    ("precuneus", 1.0),
    ("inferiorparietal", 1.0),
    ("supramarginal", 0.85),
    ("bankssts", 0.85),
    ("middletemporal", 0.8),
    ("inferiortemporal", 0.8),
    ("superiorparietal", 0.6),
    ("entorhinal", 0.6),
    ("parahippocampal", 0.6),
    ("hippocampus", 0.5),
    ("superiortemporal", 0.4),
    ("superiorfrontal", 0.4),
    ("rostralmiddlefrontal", 0.45),
    ("caudalmiddlefrontal", 0.4),
    ("parstriangularis", 0.4),
    ("parsopercularis", 0.35),
)
#: Smoothing (Gaussian sigma, mm) of the region weights: effects fade over a few mm
#: instead of following the atlas's borders.
REGION_SIGMA_MM = 2.5
#: Hypometabolism scale ``s`` of ``1 - s * H`` by group: (mean, sd), clipped to [0, 0.6].
#: The uptake in the meta-ROI (posterior cingulate, precuneus, angular/inferior parietal,
#: inferior temporal) is then 15-20 % below CN in AD and 5-10 % in MCI (with the
#: atrophy's partial volume; held by tests/unit/synthetic/test_disease.py).
HYPO_SCALE = {"CN": (0.0, 0.03), "MCI": (0.13, 0.07), "AD": (0.30, 0.12)}
#: Natural variation of every subject's FDG uptake outside the reference regions: a smooth
#: multiplicative field (Gaussian sigma in mm, rms fraction) plus one relative offset for
#: the whole brain (sd), so that the meta-ROI's SUVR varies by about 7-8 % between healthy
#: people, as in ADNI (Landau et al. 2011).
UPTAKE_VARIATION = (25.0, 0.08, 0.06)
#: A finer, regional part of that natural variation, (Gaussian sigma in mm, rms fraction),
#: the workflow's default (``cohort.synthetic.regional_uptake_variation``): healthy people's
#: FDG patterns differ region by region, not only over 25 mm. Without it a healthy pattern
#: is so stable that the probe's regional classifier reads the AD pattern on PET at AUC
#: 0.98-1.00 in every redrawn 40-subject cohort while the meta-ROI alone reads about 0.93
#: (``benchmarks/bench_probe_draws.py``); with it the probe reads 0.980 +- 0.012 (0.96-1.00;
#: ADNI's FDG about 0.85-0.97) and CN's meta-ROI spread is 7.4 % (ADNI's 7-8 %). Chosen on that
#: benchmark, not taken from a source; a wider one is still to be measured
#: (docs/architecture.md, "The disease model"; docs/probe.md).
REGIONAL_UPTAKE_VARIATION = (8.0, 0.08)
#: The FDG meta-ROI of the calibration (Landau et al. 2011's regions, in this atlas's names).
META_ROI = (
    "posteriorcingulate",
    "isthmuscingulate",
    "precuneus",
    "inferiorparietal",
    "inferiortemporal",
)


def draw_hypometabolism(group: str, z: float) -> float:
    """The hypometabolism scale of a subject of ``group`` whose standard normal draw is ``z``."""
    mean, sd = HYPO_SCALE[group]
    return float(np.clip(mean + sd * z, 0.0, 0.6))


def draw_mtl_atrophy(group: str, age: float, z_natural: float, z_group: float) -> float:
    """The medial temporal volume fraction lost (see :data:`MTL_ATROPHY`)."""
    t = MTL_ATROPHY
    value = (
        t["at_60"]
        + t["per_year"] * (age - 60.0)
        + t.get(group, 0.0)
        + t["sd"] * z_natural
        + t.get(f"sd_{group}", 0.0) * z_group
    )
    return float(np.clip(value, 0.0, 0.7))


@dataclass(frozen=True)
class DiseaseMaps:
    """The disease model's maps on a grid (:func:`disease_maps`).

    Attributes
    ----------
    mtl_label : int8 array
        0 outside the medial temporal structures, else ``1 + index`` in :data:`MTL_STRUCTURES`.
    mtl_depth : float32 array
        Distance (mm) from the voxel to the outside of its structure (0 outside every one).
    depth_curves : float array (n_structures, n_depths)
        Fraction of each structure's grey matter within ``DEPTHS_MM`` of its surface.
    signature : float32 array
        Weight in [0, 1] of the AD-signature thinning.
    hypo : float32 array
        Hypometabolism pattern ``H`` in [0, 1] (the reference regions are zeroed by the PET).
    """

    mtl_label: np.ndarray
    mtl_depth: np.ndarray
    depth_curves: np.ndarray
    signature: np.ndarray
    hypo: np.ndarray


#: Erosion depths (mm) at which :attr:`DiseaseMaps.depth_curves` are tabulated.
DEPTHS_MM = np.linspace(0.0, 8.0, 81)


def removed_fraction(depth: np.ndarray, t: float, weights: np.ndarray | None = None) -> float:
    """Fraction of a structure removed by an erosion of ``t`` mm with a 1-mm soft edge."""
    removed = np.clip(t - depth + 1.0, 0.0, 1.0)
    return float(np.average(removed, weights=weights))


def erosion_depth_mm(maps: DiseaseMaps, structure: int, fraction: float) -> float:
    """The erosion depth (mm) that removes ``fraction`` of structure ``structure`` (0-based)."""
    curve = maps.depth_curves[structure]
    return float(np.interp(min(max(fraction, 0.0), float(curve[-1])), curve, DEPTHS_MM))


def _weights(labels: np.ndarray, names: np.ndarray, table, brain: np.ndarray) -> np.ndarray:
    """A smoothed weight map from ``(label, weight)`` pairs, both hemispheres, inside the brain."""
    lut = np.zeros(int(labels.max()) + 1, np.float32)
    for label, weight in table:
        for region_id in np.flatnonzero(names == label):
            lut[region_id] = weight
    out = ndimage.gaussian_filter(lut[labels], REGION_SIGMA_MM)
    return (np.clip(out, 0.0, 1.0) * brain).astype(np.float32)


def disease_maps(
    shape: tuple[int, int, int], affine: np.ndarray, gm: np.ndarray, brain
) -> DiseaseMaps:
    """Build the disease maps on a 1-mm grid (``shape``, voxel -> MNI mm ``affine``).

    ``gm`` (grey-matter fraction) weights the depth curves; ``brain`` (mask) bounds the
    smoothed weights.
    """
    from fusion3d.probe.atlas import atlas_on_grid, load_atlas

    atlas = load_atlas()
    labels = atlas_on_grid(atlas, shape, affine).astype(np.int64)
    names = np.full(int(atlas.ids.max()) + 1, "", dtype=object)
    names[atlas.ids] = atlas.regions["label"].to_numpy()
    mtl_label = np.zeros(shape, np.int8)
    mtl_depth = np.zeros(shape, np.float32)
    curves = []
    for k, (label, _) in enumerate(MTL_STRUCTURES):
        inside = np.isin(labels, np.flatnonzero(names == label))
        mtl_label[inside] = k + 1
        box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(inside))
        depth = ndimage.distance_transform_edt(inside[box]).astype(np.float32)
        mtl_depth[box] = np.where(inside[box], depth, mtl_depth[box])
        d, w = depth[inside[box]], gm[box][inside[box]] + 1e-3
        curves.append([removed_fraction(d, t, w) for t in DEPTHS_MM])
    return DiseaseMaps(
        mtl_label,
        mtl_depth,
        np.asarray(curves),
        _weights(labels, names, SIGNATURE_REGIONS, brain),
        _weights(labels, names, HYPO_REGIONS, brain),
    )


def meta_roi_mask(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """The FDG meta-ROI (:data:`META_ROI`, both hemispheres) on a grid."""
    from fusion3d.probe.atlas import atlas_on_grid, load_atlas

    atlas = load_atlas()
    ids = atlas.regions.loc[atlas.regions["label"].isin(META_ROI), "id"].to_numpy()
    return np.isin(atlas_on_grid(atlas, shape, affine), ids)
