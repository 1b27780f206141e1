"""Regenerate the SUVR reference-region masks shipped with fusion3d (MNI152 2009a, 1 mm).

Run ``python src/fusion3d/data/make_reference_regions.py``.
Nothing is downloaded: the masks are built from nilearn's bundled MNI152 2009a
template, brain mask, grey- and white-matter maps plus simple anatomical
definitions in MNI millimetres (see README.md in this folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# Pons: ellipsoid centre and semi-axes (mm, MNI x/y/z), from the atlas position of
# the basis pontis/tegmentum (midline, anterior to the 4th ventricle).
PONS_CENTER = (0.0, -26.0, -31.0)
PONS_SEMI_AXES = (12.0, 11.0, 11.0)


def _world_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(shape[:3]).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    return xyz.reshape((3, *shape[:3]))


def build_regions() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return ``({"pons": uint8, "cerebellum": uint8}, affine)`` on the 1 mm template grid."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_gm_template

    brain_img = load_mni152_brain_mask(resolution=1)
    brain = np.asarray(brain_img.dataobj) > 0
    affine = brain_img.affine.copy()
    gm = np.asarray(load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    x, y, z = _world_grid(brain.shape, affine)

    cx, cy, cz = PONS_CENTER
    ax, ay, az = PONS_SEMI_AXES
    ell = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0
    pons = ell & brain

    # Cerebellum: posterior fossa below the tentorium, modelled as a plane rising
    # from z = -32 mm at y = -40 mm to z = -8 mm at y = -90 mm; the brainstem
    # (|x| < 12 mm, y > -52 mm) is excluded; grey matter only (GM prob > 0.3).
    tentorium = -32.0 + (-(y + 40.0)) * (24.0 / 50.0)
    fossa = (y < -38.0) & (z < np.minimum(tentorium, -8.0)) & (z > -75.0)
    brainstem = (np.abs(x) < 12.0) & (y > -52.0)
    cereb = fossa & ~brainstem & brain & (gm > 0.3)
    return {"pons": pons.astype(np.uint8), "cerebellum": cereb.astype(np.uint8)}, affine


def main() -> None:
    """Write ``tpl-MNI152NLin2009a_res-1_desc-<region>_mask.nii.gz`` beside this file."""
    from fusion3d.io import save_nifti

    regions, affine = build_regions()
    for name, mask in regions.items():
        path = HERE / f"tpl-MNI152NLin2009a_res-1_desc-{name}_mask.nii.gz"
        save_nifti(mask, affine, path, dtype=np.uint8)
        print(f"{path.name}: {int(mask.sum())} voxels ({mask.sum() / 1000:.1f} ml)")


if __name__ == "__main__":
    main()
