"""Generate a synthetic cohort shaped exactly like a LONI IDA download of ADNI.

``generate_cohort`` writes ``<out_dir>/download/`` (collection CSV, the ``ADNI/``
tree of NIfTI T1s and DICOM PET series, ``ADNIMERGE.csv``, ``cohort_image_ids.csv``)
and ``<out_dir>/truth/<PTID>/`` (truth.json, the true brain mask and the true
nonlinear displacement), as described in ``docs/architecture.md``. Everything is
built inside a hidden temporary folder of ``out_dir`` and renamed into place at
the end, so an interrupted run never leaves a cohort that looks complete.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fusion3d.ingest.manifest import IDA_HEADER
from fusion3d.io import atomic_path, save_nifti
from fusion3d.synthetic.anatomy import (
    LABELS,
    SubjectAnatomy,
    SubjectBrain,
    T1Grid,
    bias_and_noise,
    brain_structure,
    draw_anatomy,
    individual_brain,
    render_subject_t1,
    template_space,
)
from fusion3d.synthetic.dicom import PetSeriesInfo, write_pet_series
from fusion3d.synthetic.disease import REGIONAL_UPTAKE_VARIATION, draw_hypometabolism
from fusion3d.synthetic.geometry import (
    SmoothDisplacement,
    grid_affine,
    homogeneous,
    rigid_part,
    rotation_matrix,
)
from fusion3d.synthetic.pet import (
    PET_AXES,
    PET_SHAPE,
    PET_VOXEL_MM,
    PetMaps,
    RealisticPet,
    add_pet_noise,
    add_realistic_noise,
    amyloid_uptake,
    fdg_uptake,
    pet_maps,
    realistic_pet_model,
    render_pet,
    subject_pet_maps,
)

GROUPS = ("CN", "MCI", "AD")
ADNIMERGE_COLUMNS = (
    "RID",
    "COLPROT",
    "ORIGPROT",
    "PTID",
    "SITE",
    "VISCODE",
    "EXAMDATE",
    "DX_bl",
    "AGE",
    "PTGENDER",
    "PTEDUCAT",
    "APOE4",
    "FDG",
    "MMSE",
    "IMAGEUID",
    "DX",
)
T1_DESCRIPTION = "MPR; GradWarp; B1 Correction; N3; Scaled"
FDG_DESCRIPTION = "Coreg, Avg, Std Img and Vox Siz, Uniform Resolution"
DYNAMIC_DESCRIPTION = "Co-registered Dynamic"
AV45_DESCRIPTION = "AV45 Coreg, Avg, Std Img and Vox Siz, Uniform Resolution"

#: MNI points (mm) that the T1 field of view and the PET field of view are centred on.
HEAD_CENTER_MNI = np.array([0.0, -16.0, -10.0])
BRAIN_CENTER_MNI = np.array([0.0, -18.0, 4.0])

_SITES = (
    2,
    5,
    6,
    11,
    13,
    16,
    18,
    22,
    23,
    27,
    31,
    33,
    35,
    36,
    41,
    52,
    57,
    67,
    73,
    94,
    100,
    109,
    116,
    127,
    128,
    130,
    135,
    137,
    141,
)
_VISIT_NUMBER = {"mri_bl": 1, "pet_bl": 2, "m12": 4}
#: Quantisation step of the stored true displacement (mm); exact in binary.
DISP_STEP_MM = 1.0 / 64.0
#: Smooth T1 -> MNI displacement: amplitude (mm) of each of 6 waves and their wavelengths.
#: The bound ``sum |a| |k|`` on its gradient stays below 1 (the mapping cannot fold).
DEFORMATION_MM = 2.0
DEFORMATION_WAVELENGTH_MM = (80.0, 160.0)

_t1_grid = T1Grid()


@contextlib.contextmanager
def t1_grid_override(grid: T1Grid) -> Iterator[None]:
    """Temporarily render T1s on ``grid`` (tests use a coarse grid to run fast)."""
    global _t1_grid
    old = _t1_grid
    _t1_grid = grid
    try:
        yield
    finally:
        _t1_grid = old


@dataclass
class ImagePlan:
    """One image of the download (one row of the collection CSV)."""

    role: str
    modality: str  # "MR" or "PT" (file names); the CSV says MRI / PET
    description: str
    type: str
    acq: dt.datetime
    visit: int
    viscode: str
    fmt: str  # "NiFTI" or "DCM"
    image_id: int = 0
    series_id: int = 0
    processed: str = ""  # 17-digit processing timestamp


@dataclass
class SubjectPlan:
    """Everything decided about a subject before any image is rendered."""

    index: int
    ptid: str
    rid: int
    site: int
    group: str
    group_raw: str
    dx_bl: str
    protocol: str
    sex: str
    age: float
    educ: int
    apoe4: int
    mmse: int
    hypo_scale: float
    in_cohort: bool = True
    images: list[ImagePlan] = field(default_factory=list)
    #: False: the images carry no effect of the diagnosis (see :attr:`effect_group`).
    diagnosis_effects: bool = True
    #: The realistic FDG mode (``cohort.synthetic.pet``); None: the default PET.
    pet_model: RealisticPet | None = None
    #: The regional part of the natural FDG uptake variation, (sigma mm, rms)
    #: (``cohort.synthetic.regional_uptake_variation``); None: not drawn.
    regional_variation: tuple[float, float] | None = None

    @property
    def effect_group(self) -> str:
        """The group whose atrophy and uptake the images show: ``group``, or ``"CN"`` for every
        subject of a cohort drawn without diagnosis effects (the labels stay)."""
        return self.group if self.diagnosis_effects else "CN"

    def image(self, role: str) -> ImagePlan | None:
        """The image with ``role`` or None."""
        return next((im for im in self.images if im.role == role), None)


def default_group_counts(n_subjects: int) -> dict[str, int]:
    """Split ``n_subjects`` in the proportion 8 CN : 4 MCI : 4 AD (largest remainder).

    Ties in the remainder go to AD, then MCI, so small cohorts keep a patient.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    share = {"CN": 0.5, "MCI": 0.25, "AD": 0.25}
    counts = {g: int(np.floor(n_subjects * s)) for g, s in share.items()}
    priority = {"AD": 0, "MCI": 1, "CN": 2}
    order = sorted(share, key=lambda g: (-(n_subjects * share[g] - counts[g]), priority[g]))
    for g in order[: n_subjects - sum(counts.values())]:
        counts[g] += 1
    return counts


def _check_args(n_subjects, seed, group_counts, quirks, threads) -> dict[str, int]:
    """Validate the arguments of :func:`generate_cohort`; return the group counts."""
    if (
        isinstance(n_subjects, bool)
        or not isinstance(n_subjects, int | np.integer)
        or n_subjects < 1
    ):
        raise ValueError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    if n_subjects > 1000:
        raise ValueError(f"n_subjects must be <= 1000, got {n_subjects}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(quirks, bool):
        raise ValueError(f"quirks must be True or False, got {quirks!r}")
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if group_counts is None:
        return default_group_counts(int(n_subjects))
    if not isinstance(group_counts, dict):
        raise ValueError(
            f"group_counts must be a dict like {{'CN': 8, 'MCI': 4, 'AD': 4}}, got {group_counts!r}"
        )
    unknown = set(group_counts) - set(GROUPS)
    if unknown:
        raise ValueError(
            f"group_counts: unknown group(s) {sorted(unknown)}; allowed {list(GROUPS)}"
        )
    counts = {}
    for g in GROUPS:
        v = group_counts.get(g, 0)
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise ValueError(f"group_counts[{g!r}] must be a non-negative integer, got {v!r}")
        counts[g] = int(v)
    if sum(counts.values()) != n_subjects:
        raise ValueError(
            f"group_counts {counts} sum to {sum(counts.values())}, but n_subjects is {n_subjects}"
        )
    return counts


def _desc_folder(description: str) -> str:
    """IDA folder/file form of a description: spaces and ';' become '_', commas stay."""
    return description.replace(" ", "_").replace(";", "_")


def _draw_subject(
    rng: np.random.Generator,
    i: int,
    group: str,
    in_cohort: bool,
    plans: list[SubjectPlan],
    diagnosis_effects: bool = True,
) -> SubjectPlan:
    """Draw one subject's identity, protocol, demographics and baseline T1/FDG dates.

    The hypometabolism scale is :func:`fusion3d.synthetic.disease.draw_hypometabolism`;
    without ``diagnosis_effects`` it is a CN's from the same draw (the stream, and so
    every identity and date, stays that of the cohort with effects).
    """
    first_day = dt.date(2006, 1, 1).toordinal()
    last_day = dt.date(2012, 11, 30).toordinal()  # leaves room for a 12-month follow-up in 2013
    day = dt.date.fromordinal(int(rng.integers(first_day, last_day + 1)))
    protocol = "ADNI1" if day.year <= 2009 else ("ADNIGO" if day.year == 2010 else "ADNI2")
    rid_range = {"ADNI1": (2, 1450), "ADNIGO": (2002, 2400), "ADNI2": (4001, 5300)}[protocol]
    used_ptids, used_rids = {p.ptid for p in plans}, {p.rid for p in plans}
    while True:
        site = int(rng.choice(_SITES))
        rid = int(rng.integers(*rid_range))
        ptid = f"{site:03d}_S_{rid:04d}"
        if ptid not in used_ptids and rid not in used_rids:
            break
    if group == "MCI":
        group_raw = "MCI" if protocol == "ADNI1" else str(rng.choice(["EMCI", "LMCI"]))
        dx_bl = "LMCI" if group_raw == "MCI" else group_raw
    else:
        group_raw = dx_bl = group
    z_hypo = float(rng.standard_normal())
    hypo = draw_hypometabolism(group if diagnosis_effects else "CN", z_hypo)
    mmse = {"CN": (28, 31), "MCI": (24, 30), "AD": (20, 27)}[group]
    apoe_p = {"CN": [0.7, 0.25, 0.05], "MCI": [0.5, 0.4, 0.1], "AD": [0.35, 0.45, 0.2]}[group]
    mri = dt.datetime.combine(
        day,
        dt.time(int(rng.integers(8, 17)), int(rng.integers(0, 60)), int(rng.integers(0, 60))),
    )
    pet = mri + dt.timedelta(
        days=int(rng.integers(0, 46)),
        hours=int(rng.integers(-3, 4)),
        minutes=int(rng.integers(0, 60)),
    )
    plan = SubjectPlan(
        index=i,
        ptid=ptid,
        rid=rid,
        site=site,
        group=group,
        group_raw=group_raw,
        dx_bl=dx_bl,
        protocol=protocol,
        sex=str(rng.choice(["M", "F"])),
        age=round(float(rng.uniform(60.0, 90.0)), 1),
        educ=int(rng.integers(12, 21)),
        apoe4=int(rng.choice(3, p=apoe_p)),
        mmse=int(rng.integers(*mmse)),
        hypo_scale=round(hypo, 4),
        in_cohort=in_cohort,
        diagnosis_effects=diagnosis_effects,
    )
    visit = _VISIT_NUMBER
    plan.images.append(
        ImagePlan("t1", "MR", T1_DESCRIPTION, "Processed", mri, visit["mri_bl"], "bl", "NiFTI")
    )
    if plan.in_cohort:
        plan.images.append(
            ImagePlan("fdg", "PT", FDG_DESCRIPTION, "Processed", pet, visit["pet_bl"], "bl", "DCM")
        )
    return plan


def _add_quirks(cohort: list[SubjectPlan], rng: np.random.Generator) -> None:
    """Add what a real download holds beside the pairs (see :func:`generate_cohort`)."""
    n = len(cohort)
    s = cohort[0 % n]
    t1 = s.image("t1")
    for k, desc in enumerate(("MPRAGE", "MPRAGE Repeat")):
        when = t1.acq + dt.timedelta(minutes=9 * k - 18)
        s.images.append(
            ImagePlan(f"t1_original_{k + 1}", "MR", desc, "Original", when, t1.visit, "bl", "NiFTI")
        )
    s = cohort[1 % n]
    fdg = s.image("fdg")
    fdg.role, fdg.description = "fdg_dynamic", DYNAMIC_DESCRIPTION
    s = cohort[2 % n]
    pet = s.image("fdg") or s.image("fdg_dynamic")
    av45 = pet.acq + dt.timedelta(days=int(rng.integers(20, 60)), hours=1)
    s.images.append(
        ImagePlan("av45", "PT", AV45_DESCRIPTION, "Processed", av45, pet.visit, "bl", "DCM")
    )
    s = cohort[3 % n]
    pet = s.image("fdg") or s.image("fdg_dynamic")
    m12 = pet.acq + dt.timedelta(days=365 + int(rng.integers(-15, 16)))
    s.images.append(
        ImagePlan(
            "fdg_m12", "PT", FDG_DESCRIPTION, "Processed", m12, _VISIT_NUMBER["m12"], "m12", "DCM"
        )
    )


def _assign_ids(plans: list[SubjectPlan], rng: np.random.Generator) -> None:
    """Give every image its image/series IDs (growing with the date, like LONI's) and stamp."""
    images = sorted((im for p in plans for im in p.images), key=lambda im: (im.acq, im.role))
    image_ids = np.sort(rng.choice(np.arange(30000, 999999), size=len(images), replace=False))
    series_ids = np.sort(rng.choice(np.arange(10000, 400000), size=len(images), replace=False))
    for im, iid, sid in zip(images, image_ids, series_ids, strict=True):
        im.image_id, im.series_id = int(iid), int(sid)
        when = im.acq + dt.timedelta(
            days=int(rng.integers(2, 40)), seconds=int(rng.integers(0, 86400))
        )
        im.processed = f"{when:%Y%m%d%H%M%S}{int(rng.integers(0, 1000)):03d}"


def _plan_cohort(
    n_subjects: int, seed: int, counts: dict[str, int], quirks: bool, diagnosis_effects: bool = True
) -> list[SubjectPlan]:
    """Draw identities, diagnoses, dates and image IDs of every subject.

    One stream seeded by ``(seed, 1)``: the group order, then each subject
    (:func:`_draw_subject`), the quirks (:func:`_add_quirks`) and the IDs
    (:func:`_assign_ids`), in this order.
    """
    rng = np.random.default_rng([seed, 1])
    groups = [g for g in GROUPS for _ in range(counts[g])]
    groups = [groups[i] for i in rng.permutation(len(groups))]
    if quirks:
        groups.append(str(rng.choice(GROUPS)))
    plans: list[SubjectPlan] = []
    for i, group in enumerate(groups):
        plans.append(_draw_subject(rng, i, group, i < n_subjects, plans, diagnosis_effects))
    if quirks:
        _add_quirks(plans[:n_subjects], rng)
    _assign_ids(plans, rng)
    return plans


def _image_folder(plan: SubjectPlan, im: ImagePlan) -> Path:
    """``ADNI/<PTID>/<Description>/<YYYY-MM-DD_HH_MM_SS.0>/<S or I id>``."""
    leaf = f"I{im.image_id}" if (im.modality == "PT") else f"S{im.series_id}"
    return (
        Path("ADNI")
        / plan.ptid
        / _desc_folder(im.description)
        / f"{im.acq:%Y-%m-%d_%H_%M_%S}.0"
        / leaf
    )


def _file_name(plan: SubjectPlan, im: ImagePlan, number: int | None, ext: str) -> str:
    """``ADNI_<PTID>_<MR|PT>_<Desc>_<Br|br_raw>_<17 digits>[_<n>]_S<series>_I<image>.<ext>``."""
    kind = "br_raw" if im.type == "Original" else "Br"
    n = f"_{number}" if number is not None else ""
    return f"ADNI_{plan.ptid}_{im.modality}_{_desc_folder(im.description)}_{kind}_{im.processed}{n}_S{im.series_id}_I{im.image_id}.{ext}"


def _age_at(plan: SubjectPlan, when: dt.datetime) -> float:
    """The subject's age (years) at ``when``: the drawn age counts from the first image."""
    first = min(im.acq for im in plan.images)
    return plan.age + (when - first).days / 365.25


def _t1_header(description: str) -> nib.Nifti1Header:
    """A NIfTI header in mm/s whose ``descrip`` holds the series description."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = description.encode("ascii")[:79]
    return header


def _save_displacement(field: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write the displacement as int16 multiples of ``DISP_STEP_MM`` (scl_slope), atomically."""
    img = nib.Nifti1Image(np.rint(field / DISP_STEP_MM).astype(np.int16), affine)
    img.header.set_slope_inter(DISP_STEP_MM, 0.0)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_intent("vector", name="t1_to_mni_disp_mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _summary_row(plan: SubjectPlan, im: ImagePlan, path: Path, n_files: int, root: Path) -> dict:
    """One row of :func:`generate_cohort`'s summary table for an image written at ``path``."""
    return {
        "ptid": plan.ptid,
        "group": plan.group,
        "role": im.role,
        "in_cohort": plan.in_cohort and im.role in ("t1", "fdg", "fdg_dynamic"),
        "image_id": f"I{im.image_id}",
        "series_id": f"S{im.series_id}",
        "modality": "MRI" if im.modality == "MR" else "PET",
        "description": im.description,
        "type": im.type,
        "visit": im.visit,
        "viscode": im.viscode,
        "acq_date": im.acq.date().isoformat(),
        "format": im.fmt,
        "n_files": n_files,
        "path": str(path.relative_to(root)),
    }


@dataclass
class T1Pose:
    """Where a subject's head sits in its T1 scan: the true T1 -> MNI mapping and the T1 grid.

    Attributes
    ----------
    t1_to_mni : (4, 4) array
        ``A``: T1 world mm -> MNI mm (rotation, scaling, translation).
    t1_affine : (4, 4) array
        Voxel-to-world affine of the T1 grid.
    shape : 3 ints
        Shape of the T1 grid.
    displacement : SmoothDisplacement
        ``d`` as a function of T1 world mm (used to render the PET).
    field : float32 array, ``shape + (3,)``
        ``d`` on the T1 grid, quantised to :data:`DISP_STEP_MM` (what the T1 is
        rendered with and what the truth stores).
    """

    t1_to_mni: np.ndarray
    t1_affine: np.ndarray
    shape: tuple[int, int, int]
    displacement: SmoothDisplacement
    field: np.ndarray


def _brain_points_t1(t1_to_mni: np.ndarray, step: int = 29) -> np.ndarray:
    """Every ``step``-th template brain voxel, carried to T1 world by ``A^-1`` (N, 3) mm."""
    st, space = brain_structure(), template_space()
    mni = st.ijk[:, ::step].T.astype(np.float64) + space.affine[:3, 3]
    inv = np.linalg.inv(t1_to_mni)
    return mni @ inv[:3, :3].T + inv[:3, 3]


def _draw_t1_pose(rng: np.random.Generator, grid: T1Grid, anatomy: SubjectAnatomy) -> T1Pose:
    """Draw the head pose, scale it to the subject's size and shape, draw the displacement.

    ``A = S @ R`` plus a translation: ``R`` a rotation of up to 12 degrees about
    each axis, ``S`` the subject's size and shape (:meth:`SubjectAnatomy.mni_scale`).
    ``d`` is a sum of :data:`DEFORMATION_MM` waves with its affine part over the
    brain removed, so that ``A`` stays the best affine of the anatomy.
    """
    rot = rotation_matrix(rng.uniform(-12.0, 12.0, 3))
    scale = anatomy.mni_scale(brain_structure().volume_ml)
    head_world = rng.uniform(-15.0, 15.0, 3)
    lin = scale @ rot
    t1_to_mni = homogeneous(lin, HEAD_CENTER_MNI - lin @ head_world)
    t1_affine = grid_affine(
        grid.axes, grid.zooms, grid.shape, head_world + rng.uniform(-3.0, 3.0, 3)
    )
    disp = SmoothDisplacement.random(
        rng, amplitude_mm=DEFORMATION_MM, wavelength_mm=DEFORMATION_WAVELENGTH_MM
    ).without_affine_part(_brain_points_t1(t1_to_mni))
    dfield = disp.on_grid(t1_affine, grid.shape)
    np.multiply(np.rint(dfield / np.float32(DISP_STEP_MM)), np.float32(DISP_STEP_MM), out=dfield)
    return T1Pose(t1_to_mni, t1_affine, tuple(grid.shape), disp, dfield)


def _write_t1_images(
    plan: SubjectPlan, clean: np.ndarray, pose: T1Pose, rng: np.random.Generator, root: Path
) -> list[dict]:
    """Write the processed T1 and any original (raw) MPRAGEs of one subject; return their rows."""
    download = root / "download"
    t1_plan = plan.image("t1")
    gain = float(rng.uniform(900.0, 1300.0))
    bias, noise = float(rng.uniform(0.04, 0.10)), float(rng.uniform(0.025, 0.04))
    t1 = bias_and_noise(
        clean, pose.t1_affine, rng, gain=gain, bias_strength=bias, noise_fraction=noise
    )
    path = download / _image_folder(plan, t1_plan) / _file_name(plan, t1_plan, None, "nii")
    save_nifti(t1, pose.t1_affine, path, dtype=np.int16, header=_t1_header(T1_DESCRIPTION))
    rows = [_summary_row(plan, t1_plan, path, 1, root)]
    del t1
    for im in plan.images:
        if im.role.startswith("t1_original"):
            raw = bias_and_noise(
                clean,
                pose.t1_affine,
                rng,
                gain=float(rng.uniform(300.0, 700.0)),
                bias_strength=0.22,
                noise_fraction=0.03,
            )
            path = download / _image_folder(plan, im) / _file_name(plan, im, None, "nii")
            save_nifti(raw, pose.t1_affine, path, dtype=np.int16, header=_t1_header(im.description))
            rows.append(_summary_row(plan, im, path, 1, root))
    return rows


def _pet_volume(
    plan: SubjectPlan, im: ImagePlan, pose: T1Pose, maps: PetMaps, pet_to_t1, pet_affine, fwhm, rng
) -> tuple[np.ndarray, float, float, float]:
    """Render one PET image (uptake, PSF, noise, activity); return (volume, hypo, frame, start).

    ``volume`` is 3D, or 4D with 6 frames for the dynamic FDG; ``hypo`` is the
    applied hypometabolism scale; frame length and start are in minutes.
    """
    space = template_space()
    hypo = plan.hypo_scale
    if im.role == "av45":
        load = {"CN": 0.15, "MCI": 0.6, "AD": 1.0}[plan.effect_group] * float(rng.uniform(0.7, 1.0))
        uptake = amyloid_uptake(maps, load)
    else:
        if im.role == "fdg_m12" and plan.effect_group != "CN":
            hypo = min(hypo + 0.04, 0.5)
        model = plan.pet_model
        uptake = fdg_uptake(maps, hypo, None if model is None else model.white_matter)
    model = plan.pet_model
    psf = fwhm if model is None else model.psf_fwhm_mm
    clean_pet = render_pet(
        uptake, space, pose.t1_to_mni, pose.displacement, pet_to_t1, pet_affine, PET_SHAPE, psf
    )
    del uptake
    activity = float(rng.uniform(7000.0, 11000.0))
    if model is not None:
        frame, start = (
            (5.0 if im.role == "fdg_dynamic" else 30.0),
            (50.0 if im.role == "av45" else 30.0),
        )
        return _realistic_volume(clean_pet, im, model, activity, rng), hypo, frame, start
    if im.role == "fdg_dynamic":
        frames = [
            add_pet_noise(clean_pet * np.float32(1.0 + 0.02 * rng.standard_normal()), rng, 0.05)
            * np.float32(activity)
            for _ in range(6)
        ]
        return np.stack(frames, axis=-1), hypo, 5.0, 30.0
    volume = add_pet_noise(clean_pet, rng, 0.02) * np.float32(activity)
    return volume, hypo, 30.0, (50.0 if im.role == "av45" else 30.0)


def _realistic_volume(clean_pet, im: ImagePlan, model: RealisticPet, activity: float, rng):
    """The realistic-mode PET (:func:`add_realistic_noise`); a dynamic FDG's 6 frames of 5
    minutes each hold a sixth of the counts (``sqrt(6)`` times the noise)."""
    if im.role != "fdg_dynamic":
        return add_realistic_noise(clean_pet, rng, model, PET_VOXEL_MM) * np.float32(activity)
    frame = RealisticPet(
        noise=min(model.noise * np.sqrt(6.0), 0.99),
        fwhm_mm=model.fwhm_mm,
        recon_fwhm_mm=model.recon_fwhm_mm,
        white_matter=model.white_matter,
    )
    frames = [add_realistic_noise(clean_pet, rng, frame, PET_VOXEL_MM) for _ in range(6)]
    return np.stack(frames, axis=-1) * np.float32(activity)


def _write_pet_image(
    plan: SubjectPlan,
    im: ImagePlan,
    pose: T1Pose,
    maps: PetMaps,
    seed: int,
    series_number: int,
    rng: np.random.Generator,
    root: Path,
) -> tuple[dict, dict]:
    """Draw one PET session's pose, render and write its DICOM series; return (row, truth entry).

    Each session has its own rigid pose ``B`` (PET world -> T1 world), near the
    anatomical (AC-PC-like) orientation as ADNI's "Std Img" step makes it.
    """
    residual = rotation_matrix(rng.uniform(-6.0, 6.0, 3))
    pet_to_t1 = homogeneous(rigid_part(pose.t1_to_mni).T @ residual, rng.uniform(-15.0, 15.0, 3))
    brain_center = np.append(BRAIN_CENTER_MNI, 1.0)
    center = np.linalg.inv(pet_to_t1) @ np.linalg.inv(pose.t1_to_mni) @ brain_center
    pet_affine = grid_affine(
        PET_AXES, (PET_VOXEL_MM,) * 3, PET_SHAPE, center[:3] + rng.uniform(-2.0, 2.0, 3)
    )
    fwhm = float(rng.uniform(6.0, 8.0))
    volume, hypo, frame_minutes, start = _pet_volume(
        plan, im, pose, maps, pet_to_t1, pet_affine, fwhm, rng
    )
    info = PetSeriesInfo(
        ptid=plan.ptid,
        sex=plan.sex,
        age_years=int(_age_at(plan, im.acq)),
        acq_datetime=f"{im.acq:%Y%m%d%H%M%S}",
        description=im.description,
        series_number=series_number,
        uid_seed=(seed, plan.ptid, im.image_id, im.series_id),
        tracer="AV45" if im.role == "av45" else "FDG",
        frame_minutes=frame_minutes,
        start_minutes=start,
    )
    folder = root / "download" / _image_folder(plan, im)
    files = write_pet_series(
        volume, pet_affine, folder, info, lambda n, im=im: _file_name(plan, im, n, "dcm")
    )
    entry = {
        "role": im.role,
        "image_id": f"I{im.image_id}",
        "description": im.description,
        "pet_to_t1_affine": pet_to_t1.tolist(),
        "pet_vox2world": pet_affine.tolist(),
        "psf_fwhm_mm": round(fwhm if plan.pet_model is None else plan.pet_model.fwhm_mm, 4),
        "hypometabolism_scale": hypo if im.role != "av45" else None,
    }
    return _summary_row(plan, im, folder, len(files), root), entry


def _volumes_ml(labels: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Volumes (ml) of the brain mask and of each tissue label on the T1 grid."""
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(LABELS))
    out = {"brain": round(float((labels > 0).sum() * voxel_ml), 2)}
    out.update({name: round(float(counts[v] * voxel_ml), 2) for name, v in LABELS.items() if v > 0})
    return out


def _truth_record(
    plan: SubjectPlan, seed: int, pose: T1Pose, anatomy: SubjectAnatomy, labels: np.ndarray
) -> dict:
    """The subject's ``truth.json`` before its PET sessions are added."""
    return {
        "ptid": plan.ptid,
        "group": plan.group,
        "group_raw": plan.group_raw,
        "diagnosis_effects": plan.diagnosis_effects,
        "t1_image_id": f"I{plan.image('t1').image_id}",
        "pet_image_id": None,
        "seed": int(seed),
        "t1_to_mni_affine": pose.t1_to_mni.tolist(),
        "pet_to_t1_affine": None,
        "hypometabolism_scale": plan.hypo_scale,
        "regional_uptake_variation": (
            None
            if plan.regional_variation is None
            else dict(zip(("sigma_mm", "rms"), plan.regional_variation, strict=True))
        ),
        "displacement_file": "t1_to_mni_displacement.nii.gz",
        "brainmask_file": "t1_brainmask.nii.gz",
        "labels_file": "t1_labels.nii.gz",
        "labels": dict(LABELS),
        "anatomy": anatomy.to_json(),
        "volumes_ml": _volumes_ml(labels, pose.t1_affine),
        "other_pet": [],
    }


def _add_pet_truth(truth: dict, entry: dict) -> None:
    """Record a PET session in ``truth``: the baseline FDG at the top level, others in a list."""
    if entry["role"] in ("fdg", "fdg_dynamic"):
        truth["pet_image_id"] = entry["image_id"]
        truth["pet_to_t1_affine"] = entry["pet_to_t1_affine"]
        truth["pet_vox2world"] = entry["pet_vox2world"]
        truth["pet_description"] = entry["description"]
        truth["pet_psf_fwhm_mm"] = entry["psf_fwhm_mm"]
    else:
        truth["other_pet"].append(entry)


def _write_truth(
    truth: dict, brainmask: np.ndarray, labels: np.ndarray, pose: T1Pose, tdir: Path
) -> None:
    """Write the true brain mask and labels, the quantised displacement and ``truth.json``."""
    save_nifti(brainmask, pose.t1_affine, tdir / "t1_brainmask.nii.gz", dtype=np.uint8)
    save_nifti(labels, pose.t1_affine, tdir / "t1_labels.nii.gz", dtype=np.uint8)
    _save_displacement(pose.field, pose.t1_affine, tdir / "t1_to_mni_displacement.nii.gz")
    with atomic_path(tdir / "truth.json") as tmp:
        tmp.write_text(json.dumps(truth, indent=2) + "\n")


def _subject_anatomy(plan: SubjectPlan, seed: int) -> tuple[SubjectAnatomy, SubjectBrain]:
    """Draw a subject's anatomy and build its brain, from the stream ``(seed, 5, plan.index)``."""
    rng = np.random.default_rng([seed, 5, plan.index])
    anatomy = draw_anatomy(rng, plan.effect_group, plan.sex, plan.age)
    return anatomy, individual_brain(template_space(), anatomy, rng, plan.regional_variation)


def _render_subject(plan: SubjectPlan, seed: int, root: Path, grid: T1Grid) -> list[dict]:
    """Render and write every image of one subject (and its truth); return summary rows.

    Steps: draw the subject's anatomy and build its brain -> draw the T1 pose ->
    render the head on the T1 grid -> write the T1 images -> for each PET
    session: draw its pose, render and write it -> write the truth. The anatomy
    comes from the stream ``(seed, 5, plan.index)``, every other draw from
    ``(seed, 2, plan.index)`` in this order, so a subject's bytes do not depend
    on the others.
    """
    anatomy, brain = _subject_anatomy(plan, seed)
    rng = np.random.default_rng([seed, 2, plan.index])
    pose = _draw_t1_pose(rng, grid, anatomy)
    clean, brainmask, labels = render_subject_t1(
        template_space(), brain, pose.t1_to_mni, pose.field, pose.t1_affine, pose.shape
    )
    rows = _write_t1_images(plan, clean, pose, rng, root)
    del clean
    if not plan.in_cohort:
        return rows
    maps = subject_pet_maps(pet_maps(), brain)
    del brain
    truth = _truth_record(plan, seed, pose, anatomy, labels)
    for im in plan.images:
        if im.modality != "PT":
            continue
        series_number = 3 + len(truth["other_pet"])
        row, entry = _write_pet_image(plan, im, pose, maps, seed, series_number, rng, root)
        rows.append(row)
        _add_pet_truth(truth, entry)
    _write_truth(truth, brainmask, labels, pose, root / "truth" / plan.ptid)
    return rows


def _write_csv(path: Path, header, rows, quote_all: bool) -> None:
    """Write a CSV atomically (all fields quoted, as IDA does, or minimally)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(
            fh, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator="\n"
        )
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(plans: list[SubjectPlan], seed: int, download: Path) -> None:
    """Collection CSV, ADNIMERGE.csv and cohort_image_ids.csv."""
    downloaded = dt.date(2024, 1, 8) + dt.timedelta(days=seed % 250)
    mdy = lambda d: f"{d.month}/{d.day}/{d.year}"  # noqa: E731
    rows = []
    for p in plans:
        for im in sorted(p.images, key=lambda im: (im.acq, im.role)):
            rows.append(
                [
                    f"I{im.image_id}",
                    p.ptid,
                    p.group_raw,
                    p.sex,
                    str(int(_age_at(p, im.acq))),
                    str(im.visit),
                    "MRI" if im.modality == "MR" else "PET",
                    im.description,
                    im.type,
                    mdy(im.acq),
                    im.fmt,
                    mdy(downloaded),
                ]
            )
    rows.sort(key=lambda r: (r[1], dt.datetime.strptime(r[9], "%m/%d/%Y"), r[0]))
    name = f"FUSION3D_SYNTHETIC_{downloaded.month}_{downloaded.day}_{downloaded.year}.csv"
    _write_csv(download / name, IDA_HEADER, rows, quote_all=True)

    rng = np.random.default_rng([seed, 3])
    merge = []
    for p in plans:
        dx = {"CN": "CN", "MCI": "MCI", "AD": "Dementia"}[p.group]
        t1 = p.image("t1")
        fdg_bl = p.image("fdg") or p.image("fdg_dynamic")
        fdg_value = lambda hypo: f"{1.30 * (1.0 - 0.6 * hypo) + 0.04 * rng.standard_normal():.4f}"  # noqa: E731
        common = [p.rid, p.protocol, p.protocol, p.ptid, p.site]
        sex = "Male" if p.sex == "M" else "Female"
        demographics = [p.dx_bl, f"{p.age:.1f}", sex, p.educ, p.apoe4]
        bl_fdg = fdg_value(p.hypo_scale) if fdg_bl else ""
        bl_date = t1.acq.date().isoformat()
        merge.append([*common, "bl", bl_date, *demographics, bl_fdg, p.mmse, t1.image_id, dx])
        m12 = p.image("fdg_m12")
        if m12 is not None:
            hypo = min(p.hypo_scale + 0.04, 0.5) if p.group != "CN" else 0.0
            m12_fdg = fdg_value(hypo)  # drawn before the MMSE change: the generator's order
            mmse = max(p.mmse - int(rng.integers(0, 3)), 0)
            m12_date = m12.acq.date().isoformat()
            merge.append([*common, "m12", m12_date, *demographics, m12_fdg, mmse, "", dx])
    _write_csv(download / "ADNIMERGE.csv", ADNIMERGE_COLUMNS, merge, quote_all=False)

    ids = []
    for p in plans:
        if p.in_cohort:
            ids += [
                f"I{p.image('t1').image_id}",
                f"I{(p.image('fdg') or p.image('fdg_dynamic')).image_id}",
            ]
    with atomic_path(download / "cohort_image_ids.csv") as tmp:
        tmp.write_text(",".join(ids) + "\n")


def regional_variation_of(spec: dict | None) -> tuple[float, float] | None:
    """``(sigma_mm, rms)`` of a ``cohort.synthetic.regional_uptake_variation`` mapping (keys
    ``rms`` and ``sigma_mm``); None when ``spec`` is None or its rms is 0."""
    if spec is None:
        return None
    unknown = sorted(set(spec) - {"rms", "sigma_mm"})
    if unknown:
        raise ValueError(
            f"cohort.synthetic.regional_uptake_variation: unknown keys {unknown} "
            "(known: ['rms', 'sigma_mm'])"
        )
    rms = float(spec.get("rms", REGIONAL_UPTAKE_VARIATION[1]))
    sigma = float(spec.get("sigma_mm", REGIONAL_UPTAKE_VARIATION[0]))
    if not 0.0 <= rms < 0.5 or not sigma > 0.0:
        raise ValueError(
            "cohort.synthetic.regional_uptake_variation: need 0 <= rms < 0.5 and sigma_mm > 0, "
            f"got rms {rms} and sigma_mm {sigma}"
        )
    return None if rms == 0.0 else (sigma, rms)


def _plans(
    n_subjects, seed, counts, quirks, diagnosis_effects, pet, regional=None
) -> list[SubjectPlan]:
    """The cohort's plans (:func:`_plan_cohort`), each with the realistic PET model of
    ``cohort.synthetic.pet`` (None: off) and the regional uptake variation (None: off)."""
    if not isinstance(diagnosis_effects, bool):
        raise ValueError(f"diagnosis_effects must be True or False, got {diagnosis_effects!r}")
    model = realistic_pet_model(pet)
    variation = regional_variation_of(regional)
    plans = _plan_cohort(n_subjects, seed, counts, quirks, diagnosis_effects)
    for p in plans:
        p.pet_model = model
        p.regional_variation = variation
    return plans


def _render_job(args: tuple) -> list[dict]:
    """Worker entry point: :func:`_render_subject` on one ``(plan, seed, root, grid)`` tuple."""
    plan, seed, root, grid = args
    return _render_subject(plan, seed, root, grid)


def _render_all(plans: list[SubjectPlan], seed: int, root: Path, threads: int) -> list[list[dict]]:
    """Render every subject under ``root``, in ``threads`` forked workers when more than one."""
    template_space()  # build once before any worker forks
    brain_structure()
    pet_maps()
    jobs = [(p, seed, root, _t1_grid) for p in plans]
    if threads > 1 and len(plans) > 1:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(int(threads), len(plans)), mp_context=ctx) as pool:
            return list(pool.map(_render_job, jobs))
    return [_render_job(job) for job in jobs]


def generate_cohort(
    out_dir: str | os.PathLike,
    *,
    n_subjects: int = 16,
    seed: int = 0,
    group_counts: dict[str, int] | None = None,
    quirks: bool = True,
    threads: int = 1,
    diagnosis_effects: bool = True,
    pet: dict | None = None,
    regional_uptake_variation: dict | None = None,
) -> pd.DataFrame:
    """Write a synthetic ADNI-shaped download and its ground truth under ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Receives ``download/`` and ``truth/`` (both replaced if present).
    n_subjects : int
        Number of intended T1 + FDG pairs (the cohort list).
    seed : int
        Seed; the same seed gives byte-identical CSVs, NIfTI and DICOM files.
    group_counts : dict, optional
        Subjects per group, keys among CN/MCI/AD, summing to ``n_subjects``.
        Default: 8 CN / 4 MCI / 4 AD scaled to ``n_subjects``.
    quirks : bool
        Add what a real download holds beside the pairs: original MPRAGE and
        MPRAGE Repeat T1s, a dynamic-only FDG, an AV45 scan, a 12-month FDG and
        one extra subject with only a T1.
    threads : int
        Worker processes rendering subjects in parallel.
    diagnosis_effects : bool
        True (ADNI-like): atrophy and FDG hypometabolism grow from CN to MCI to AD.
        False: every subject's images are drawn as a CN's would be (same identities,
        dates and labels), a null cohort for the diagnostic probe (:mod:`fusion3d.probe`).
    pet : dict, optional
        ``cohort.synthetic.pet`` (:func:`fusion3d.synthetic.pet.realistic_pet_model`). None
        gives the clean PET (the cohorts before 2026-12-07, byte for byte); the workflow
        passes the config's, realistic by default (the schema's defaults).
    regional_uptake_variation : dict, optional
        ``cohort.synthetic.regional_uptake_variation`` (``rms``, ``sigma_mm``;
        :func:`regional_variation_of`): the regional part of every subject's natural FDG
        uptake variation. None (or rms 0) draws none, as the cohorts before 2026-12-07; the
        workflow passes the config's (:data:`fusion3d.synthetic.disease.REGIONAL_UPTAKE_VARIATION`).

    Returns
    -------
    pandas.DataFrame
        One row per image written: ptid, group, role, in_cohort, image_id,
        series_id, modality, description, type, visit, viscode, acq_date, format,
        n_files, path (relative to ``out_dir``).
    """
    counts = _check_args(n_subjects, seed, group_counts, quirks, threads)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    args = (diagnosis_effects, pet, regional_uptake_variation)
    plans = _plans(int(n_subjects), int(seed), counts, quirks, *args)
    root = out / f".synthetic-partial-{os.getpid()}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    try:
        results = _render_all(plans, int(seed), root, threads)
        _write_tables(plans, int(seed), root / "download")
        for name in ("download", "truth"):
            target = out / name
            if target.exists():
                old = root / f"old-{name}"
                os.replace(target, old)
            os.replace(root / name, target)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = pd.DataFrame([r for rows in results for r in rows])
    return summary.sort_values(["ptid", "acq_date", "role"], kind="stable").reset_index(drop=True)
