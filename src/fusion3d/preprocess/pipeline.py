"""Per-subject preprocessing of one T1 + FDG PET pair (Clinica t1-linear / pet-linear style).

:func:`preprocess_pair` runs named steps, each a documented function of this module
(its wall time is recorded under the step's name in the QC record's ``times_s``):

1. ``load`` (:func:`load_pair`): read and reorient both images to RAS;
2. ``n4`` (:func:`bias_correct`): N4 bias-field correction of the T1;
3. ``brain_extraction`` (:func:`extract_brain`): the brain mask and its volume;
4. ``t1_to_mni`` (:func:`register_t1_to_mni`): brain -> MNI152 at ``registration_mm``;
5. ``pet_to_t1`` (:func:`clip_pet`, :func:`register_pet_to_t1`): PET low-intensity
   clip, rigid PET -> T1;
6. ``resample`` (:func:`save_transforms`, :func:`resample_to_mni`): T1, mask and PET
   resampled ONCE to the MNI grid (PET with the composed [T1->MNI, PET->T1] transforms);
7. ``suvr`` (:func:`fusion3d.preprocess.suvr.suvr`): SUVR in the reference region;
8. ``write`` (:func:`write_images`): MNI-space images and the paper's model-input grid;
9. ``qc_figure`` and ``qc`` (:func:`quality_control`): the QC figure, the QC record
   and its absolute-bound flags (:func:`fusion3d.preprocess.qc.evaluate_flags`).

Flagged subjects still get every output.

Options (:data:`DEFAULT_OPTIONS`, overridden by the ``options`` of :func:`preprocess_pair`):

- ``brain_extraction`` ("deepbet"): "deepbet" (CNN, weights in its wheel)
  or "ants" (nilearn MNI brain mask warped by affine + masked SyN).
- ``t1_to_mni`` ("affine"): "affine" or "syn" (affine + SyN; a warp field
  ``..._xfm.nii.gz`` is then written beside the affine ``.mat``).
- ``registration_mm`` (3.0): resolution at which registrations run
  (PET->T1 at ``max(3, registration_mm)``).
- ``registration_iterations`` ([100, 50, 25]): iterations of the three
  levels (shrink 4/2/1, smoothing 2/1/0 voxels) of each linear registration.
- ``mni_resolution_mm`` (1.5): voxel size of the MNI output grid.
- ``n4_resolution_mm`` (3.0): N4 fits the bias field on a copy at this
  resolution (None: the full-resolution T1) and applies it at full resolution.
- ``n4_shrink`` (2): N4 shrink factor (applied to that copy).
- ``n4_iterations`` ([50, 50, 30, 20]): N4 iterations per fitting level.
- ``pet_clip_percentile`` (1.0): PET values below this percentile (and
  below 0) are raised to it before registration and resampling.
- ``suvr_region`` ("pons"): "pons" (eroded 6 mm) or "cerebellum" (grey).
- ``suvr_trim`` (0.1): fraction cut from each tail for the trimmed mean.
- ``grid`` (64): model-input cube side (the paper uses 128).
- ``qc_bounds``: overrides of the absolute QC bounds, whose defaults
  (:data:`fusion3d.preprocess.qc.DEFAULT_BOUNDS`) are set from real anatomy:
  ``mask_ml_min``/``mask_ml_max``, ``min_similarity_gain``, ``min_pet_mi``,
  ``min_mni_ncc``, ``min_ref_voxels``, ``max_pet_peak_offset_mm``.
"""

from __future__ import annotations

import logging
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from fusion3d.io import load_nifti, save_nifti
from fusion3d.preprocess import brain as _brain
from fusion3d.preprocess import geometry, qc, qc_peak, registration, suvr
from fusion3d.preprocess.outputs import output_paths

#: Default options; every key is documented in the module docstring.
DEFAULT_OPTIONS: dict = {
    "brain_extraction": "deepbet",
    "t1_to_mni": "affine",
    "registration_mm": 3.0,
    "registration_iterations": [100, 50, 25],
    "mni_resolution_mm": 1.5,
    "n4_resolution_mm": 3.0,
    "n4_shrink": 2,
    "n4_iterations": [50, 50, 30, 20],
    "pet_clip_percentile": 1.0,
    "suvr_region": "pons",
    "suvr_trim": 0.1,
    "grid": 64,
    "qc_bounds": dict(qc.DEFAULT_BOUNDS),
}


def resolve_options(options: dict | None) -> dict:
    """Merge ``options`` over :data:`DEFAULT_OPTIONS`, rejecting unknown keys and values."""
    opts = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_OPTIONS.items()}
    for key, value in (options or {}).items():
        if key not in opts:
            raise ValueError(f"unknown preprocess option {key!r}; known: {sorted(opts)}")
        if key == "qc_bounds":
            unknown = set(value) - set(opts["qc_bounds"])
            if unknown:
                raise ValueError(f"unknown qc_bounds keys {sorted(unknown)}")
            opts["qc_bounds"].update(value)
        else:
            opts[key] = value
    if opts["brain_extraction"] not in _brain.METHODS:
        raise ValueError(f"brain_extraction must be one of {_brain.METHODS}")
    if opts["t1_to_mni"] not in ("affine", "syn"):
        raise ValueError("t1_to_mni must be 'affine' or 'syn'")
    if opts["suvr_region"] not in suvr.REGIONS:
        raise ValueError(f"suvr_region must be one of {suvr.REGIONS}")
    if not 0 <= float(opts["pet_clip_percentile"]) < 100:
        raise ValueError("pet_clip_percentile must be in [0, 100)")
    if int(opts["grid"]) < 2:
        raise ValueError("grid must be >= 2")
    for key in ("registration_mm", "mni_resolution_mm", "n4_resolution_mm"):
        if opts[key] is None and key == "n4_resolution_mm":
            continue
        if not float(opts[key]) > 0:
            raise ValueError(f"{key} must be > 0")
    if int(opts["n4_shrink"]) < 1:
        raise ValueError("n4_shrink must be >= 1")
    for key, n in (("registration_iterations", 3), ("n4_iterations", None)):
        its = list(opts[key])
        if not its or any(int(i) < 1 for i in its) or (n is not None and len(its) != n):
            what = f"{n} positive integers" if n else "positive integers"
            raise ValueError(f"{key} must be {what}, got {opts[key]!r}")
        opts[key] = [int(i) for i in its]
    return opts


def _load_ras(path: str | os.PathLike) -> nib.Nifti1Image:
    """Read a 3D NIfTI and reorient it to RAS; a constant image is an error naming the file."""
    data, affine = load_nifti(path, ndim=3)  # ValueError/FileNotFoundError naming the file
    if np.ptp(data) == 0:
        raise ValueError(f"{path}: image is constant ({float(data.flat[0])}), nothing to register")
    return geometry.reorient_ras(nib.Nifti1Image(data, affine))


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _similarity(fixed, moving, transforms, mask: np.ndarray, metric: str) -> float:
    """Similarity (``"mi"`` or ``"ncc"``) of ``fixed`` and ``moving`` warped by ``transforms``."""
    import ants

    if transforms:
        warped = ants.apply_transforms(fixed, moving, transforms, interpolator="linear")
    else:  # identity in world coordinates
        warped = ants.resample_image_to_target(moving, fixed, interp_type="linear")
    f, m = fixed.numpy(), warped.numpy()
    if metric == "mi":
        return registration.mutual_information(f, m, mask)
    return registration.ncc(f, m, mask)


_LOG = logging.getLogger(__name__)

#: What each timed step of :func:`preprocess_pair` did, for its line in the subject's log.
STEP_LABELS = {
    "load": "load T1 and PET (reoriented to RAS)",
    "n4": "N4 bias-field correction",
    "brain_extraction": "brain extraction",
    "t1_to_mni": "registration T1 -> MNI152",
    "pet_to_t1": "registration PET -> T1 (rigid, with the left-right check)",
    "resample": "resampling onto the MNI grid",
    "suvr": "SUVR normalisation",
    "write": "writing the MNI and model-grid images",
    "qc_figure": "QC figure",
}


class _Clock:
    """Wall time of each named step, as recorded in the QC record's ``times_s`` and logged."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.start = self.last = time.perf_counter()

    def tick(self, step: str) -> None:
        """Record the time since the previous tick (or the start) as ``step``."""
        now = time.perf_counter()
        self.times[step] = round(now - self.last, 3)
        self.last = now
        _LOG.info("step %s (%s): %.2f s", step, STEP_LABELS.get(step, step), self.times[step])

    def finish(self) -> dict[str, float]:
        """Add the ``total`` time and return every step's time."""
        self.times["total"] = round(time.perf_counter() - self.start, 3)
        _LOG.info("preprocessing done: %.2f s in all", self.times["total"])
        return self.times


@dataclass
class _Brain:
    """The bias-corrected T1 and its brain mask (all on the T1 grid).

    ``full`` is the skull-stripped T1, or the whole head when the mask is empty
    (so that a subject whose extraction failed still runs, flagged).
    """

    t1_n4: object  # ants.ANTsImage
    mask: np.ndarray
    mask_img: object  # ants.ANTsImage, float 0/1
    full: object  # ants.ANTsImage
    empty: bool
    volume_ml: float


@dataclass
class _MniImages:
    """T1, brain mask and PET (not yet SUVR) resampled once onto the MNI output grid."""

    t1: np.ndarray
    mask: np.ndarray
    pet: np.ndarray
    affine: np.ndarray
    template: np.ndarray
    head: np.ndarray | None = None  # the bias-corrected T1 before skull stripping (QC figure)


def load_pair(mri_path: str | os.PathLike, pet_path: str | os.PathLike) -> tuple:
    """Step "load": read both images, reorient them to RAS; return ``(t1_ras, t1, pet)``.

    ``t1_ras`` is the nibabel T1 (its affine gives voxel volumes); ``t1`` and ``pet``
    are the ANTs images. Starts the registration worker, whose start-up then
    overlaps N4 and brain extraction.
    """
    t1_ras, pet_ras = _load_ras(mri_path), _load_ras(pet_path)
    registration.start_registration_worker()
    return t1_ras, registration.nib_to_ants(t1_ras), registration.nib_to_ants(pet_ras)


def bias_correct(t1, opts: dict):
    """Step "n4": N4 bias-field correction (fitted at ``n4_resolution_mm``, applied at full resolution)."""
    resolution = opts["n4_resolution_mm"]
    return _brain.n4(
        t1,
        shrink_factor=int(opts["n4_shrink"]),
        resolution_mm=None if resolution is None else float(resolution),
        iterations=tuple(opts["n4_iterations"]),
    )


def extract_brain(t1_n4, t1_affine: np.ndarray, opts: dict, flags: list) -> _Brain:
    """Step "brain_extraction": the brain mask by ``opts["brain_extraction"]`` and its volume.

    A failed extraction is not fatal: it adds a ``brain_extraction_failed`` flag to
    ``flags`` and leaves an empty mask (the subject then runs on the whole head).
    """
    try:
        mask = _brain.extract_brain(
            t1_n4, opts["brain_extraction"], registration_mm=float(opts["registration_mm"])
        )
    except Exception as exc:  # a failed extraction is a flag, not a crash
        flags.append(
            qc.flag(
                "brain_extraction_failed",
                f"brain extraction failed: {type(exc).__name__}: {exc}",
                figure="mask_volume_ml",
                value=0.0,
                bound="extraction succeeds",
            )
        )
        mask = np.zeros(t1_n4.shape, dtype=bool)
    empty = not mask.any()
    mask_img = t1_n4.new_image_like(mask.astype(np.float32))
    return _Brain(
        t1_n4=t1_n4,
        mask=mask,
        mask_img=mask_img,
        full=t1_n4 if empty else t1_n4 * mask_img,
        empty=empty,
        volume_ml=_brain.mask_volume_ml(mask, t1_affine),
    )


def register_t1_to_mni(brain_reg, opts: dict, tmp: str) -> tuple[list[str], dict]:
    """Step "t1_to_mni": register the brain to MNI152 (affine, or affine + SyN).

    ``brain_reg`` is the brain at ``registration_mm``. Returns the forward
    transforms (ANTs order) and the QC record: the template correlation inside
    the template brain mask before and after.
    """
    reg_mm = float(opts["registration_mm"])
    tpl_reg = registration.nib_to_ants(geometry.mni_template(reg_mm, "t1"))
    tpl_mask_reg = geometry.mni_template(reg_mm, "mask").get_fdata() > 0
    kind = "SyN" if opts["t1_to_mni"] == "syn" else "Affine"
    sched = {"iterations": tuple(opts["registration_iterations"])}
    res = registration.register(tpl_reg, brain_reg, kind, outprefix=f"{tmp}/t1mni_", schedule=sched)
    transforms = list(res["fwdtransforms"])
    record = {
        "metric": "ncc",
        "transform": kind,
        "similarity_before": _similarity(tpl_reg, brain_reg, [], tpl_mask_reg, "ncc"),
        "similarity_after": _similarity(tpl_reg, brain_reg, transforms, tpl_mask_reg, "ncc"),
    }
    return transforms, record


def clip_pet(pet, opts: dict):
    """Raise PET values below the ``pet_clip_percentile`` percentile (and below 0) to it."""
    pet_arr = pet.numpy()
    lo = max(0.0, float(np.percentile(pet_arr, float(opts["pet_clip_percentile"]))))
    return pet.new_image_like(np.maximum(pet_arr, lo).astype(np.float32))


def register_pet_to_t1(brain: _Brain, brain_reg, pet_clip, opts: dict, tmp: str) -> tuple:
    """Step "pet_to_t1": rigid PET -> T1 registration (Mattes MI) onto the brain.

    The PET runs at ``max(3, registration_mm)``; the fixed image is the brain at
    ``registration_mm`` (the whole head when the mask is empty). Returns the
    transform file and the QC record: mutual information inside the brain
    before and after, the peak check (:func:`fusion3d.preprocess.qc_peak.peak_check`: the
    found pose's distance from the similarity's peak), and the left-right check (:func:`fusion3d.preprocess.qc.left_right_check`:
    the PET mirrored left-right, registered the same way).
    """
    reg_mm = float(opts["registration_mm"])
    t1_reg = registration.resample_to_resolution(brain.t1_n4, reg_mm)
    mask_reg = registration.resample_to_resolution(brain.mask_img, reg_mm).numpy() > 0.5
    pet_reg = registration.resample_to_resolution(pet_clip, 3.0 if reg_mm < 3 else reg_mm)
    if brain.empty:
        fixed, eval_mask = t1_reg, t1_reg.numpy() > np.percentile(t1_reg.numpy(), 50)
    else:
        fixed, eval_mask = brain_reg, mask_reg
    sched = {"iterations": tuple(opts["registration_iterations"])}
    res = registration.register(fixed, pet_reg, "Rigid", outprefix=f"{tmp}/pett1_", schedule=sched)
    mat = res["fwdtransforms"][0]
    record = {
        "metric": "mi",
        "transform": "Rigid",
        "similarity_before": _similarity(fixed, pet_reg, [], eval_mask, "mi"),
        "similarity_after": _similarity(fixed, pet_reg, [mat], eval_mask, "mi"),
    }
    # is the found pose the similarity's peak? (issue 38: holds on real FDG's noise)
    record["peak"] = qc_peak.peak_check(fixed, pet_reg, mat, eval_mask)
    # the mirrored PET registered the same way: a header that lies shows as a better fit
    record["left_right"] = qc.left_right_check(
        fixed, pet_reg, eval_mask, f"{tmp}/", schedule=sched, as_is=record["similarity_after"]
    )
    return mat, record


def save_transforms(t1mni: list[str], pett1_mat: str, paths: dict[str, Path]) -> dict[str, str]:
    """Copy the T1 -> MNI (affine, and warp if any) and PET -> T1 transforms to their outputs."""
    t1mni_mat = [p for p in t1mni if p.endswith(".mat")][0]
    registration.copy_transform(t1mni_mat, paths["xfm_t1_mni"])
    registration.copy_transform(pett1_mat, paths["xfm_pet_t1"])
    files = {k: str(paths[k]) for k in ("xfm_t1_mni", "xfm_pet_t1")}
    warps = [p for p in t1mni if p.endswith(".nii.gz")]
    if warps:
        registration.copy_transform(warps[0], paths["xfm_t1_mni_warp"])
        files["xfm_t1_mni_warp"] = str(paths["xfm_t1_mni_warp"])
    return files


def resample_to_mni(brain: _Brain, pet_clip, t1mni: list[str], pett1_mat: str, opts: dict):
    """Step "resample": T1, mask and PET resampled ONCE onto the MNI output grid.

    The PET goes through the composed ``[T1->MNI, PET->T1]`` transforms; the T1 is
    clipped at 0 and masked (unless the mask is empty).
    """
    import ants

    tpl_out = geometry.mni_template(float(opts["mni_resolution_mm"]), "t1")
    ref = registration.nib_to_ants(tpl_out)
    mask = ants.apply_transforms(ref, brain.mask_img, t1mni, interpolator="linear").numpy() > 0.5
    t1 = ants.apply_transforms(ref, brain.full, t1mni, interpolator="linear").numpy()
    t1 = np.clip(t1, 0, None) * (mask if not brain.empty else 1)
    pet = ants.apply_transforms(ref, pet_clip, t1mni + [pett1_mat], interpolator="linear").numpy()
    head = ants.apply_transforms(ref, brain.t1_n4, t1mni, interpolator="linear").numpy()
    return _MniImages(
        t1=t1,
        mask=mask,
        pet=pet,
        affine=tpl_out.affine,
        template=tpl_out.get_fdata(),
        head=np.clip(head, 0, None),
    )


def write_images(mni: _MniImages, pet_suvr: np.ndarray, paths: dict, grid: int) -> dict[str, str]:
    """Step "write": the MNI-space images and the model-input grid (``grid``^3) images."""
    save_nifti(mni.t1.astype(np.float32), mni.affine, paths["t1_mni"], dtype=np.float32)
    save_nifti(mni.mask.astype(np.uint8), mni.affine, paths["mask_mni"], dtype=np.uint8)
    save_nifti(pet_suvr, mni.affine, paths["pet_mni"], dtype=np.float32)
    model = geometry.to_model_grid(mni.t1, pet_suvr, mni.mask, mni.affine, int(grid))
    save_nifti(*model["mri"], paths["t1_model"], dtype=np.float32)
    save_nifti(*model["pet"], paths["pet_model"], dtype=np.float32)
    save_nifti(*model["mask"], paths["mask_model"], dtype=np.uint8)
    names = ("t1_mni", "mask_mni", "pet_mni", "t1_model", "pet_model", "mask_model")
    return {k: str(paths[k]) for k in names}


def quality_control(record: dict, opts: dict, flags: list, paths: dict) -> dict:
    """Step "qc": apply the absolute QC bounds to ``record`` and write the QC JSON.

    ``record["flags"]`` becomes the step flags already raised (``flags``) followed
    by those of :func:`fusion3d.preprocess.qc.evaluate_flags`.
    """
    record["flags"] = flags + qc.evaluate_flags(record, opts["qc_bounds"])
    qc.write_json(record, paths["qc_json"])
    return record


def preprocess_pair(
    mri_path: str | os.PathLike,
    pet_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    subject_id: str,
    *,
    options: dict | None = None,
    threads: int = 1,
) -> dict:
    """Preprocess one T1/FDG pair into MNI space and the model-input grid (steps: module doc).

    Parameters
    ----------
    mri_path, pet_path : path
        T1 NIfTI and 3D FDG PET NIfTI, any orientation.
    out_dir : path
        Output folder (created); the files are those of :func:`output_paths`.
    subject_id : str
        File prefix, e.g. ``sub-ADNI002S0295_ses-M000``.
    options : dict, optional
        Overrides of :data:`DEFAULT_OPTIONS` (every key is described in the module doc).
    threads : int
        ITK and torch threads. ITK fixes its thread count at its first use in a
        process; when that count differs from ``threads`` the whole call runs in
        a freshly spawned process (see :func:`registration.configure_threads`),
        so the count always takes effect. ``qc["itk_threads"]`` records it.

    Returns
    -------
    dict
        ``{"files": {name: path}, "qc": qc dict}``; ``qc["flags"]`` lists the flag
        records of :func:`fusion3d.preprocess.qc.flag` (empty when the subject passed).

    Raises
    ------
    FileNotFoundError, ValueError
        When an input cannot be read (the message names the file) or an option is invalid.
    """
    opts = resolve_options(options)
    itk_threads = registration.configure_threads(threads)
    if itk_threads != int(threads):
        return registration.call_in_fresh_process(
            preprocess_pair,
            str(mri_path),
            str(pet_path),
            str(out_dir),
            subject_id,
            env={registration.ITK_THREADS_VAR: str(int(threads))},
            options=options,
            threads=threads,
        )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    record = {
        "subject_id": subject_id,
        "inputs": {"mri": str(mri_path), "pet": str(pet_path)},
        "options": opts,
        "threads": threads,
        "itk_threads": itk_threads,
    }
    return _run_steps(mri_path, pet_path, output_paths(out_dir, subject_id), opts, record)


def _run_steps(mri_path, pet_path, paths: dict[str, Path], opts: dict, record: dict) -> dict:
    """Run the steps of :func:`preprocess_pair` in order; fill ``record``; return the result."""
    clock, flags = _Clock(), []
    t1_ras, t1, pet = load_pair(mri_path, pet_path)
    clock.tick("load")
    t1_n4 = bias_correct(t1, opts)
    clock.tick("n4")
    brain = extract_brain(t1_n4, t1_ras.affine, opts, flags)
    clock.tick("brain_extraction")
    brain_reg = registration.resample_to_resolution(brain.full, float(opts["registration_mm"]))
    with tempfile.TemporaryDirectory(prefix="fusion3d_pre_") as tmp:
        t1mni, t1mni_qc = register_t1_to_mni(brain_reg, opts, tmp)
        clock.tick("t1_to_mni")
        pet_clip = clip_pet(pet, opts)
        pett1_mat, pett1_qc = register_pet_to_t1(brain, brain_reg, pet_clip, opts, tmp)
        flags.extend(qc.left_right_flags(pett1_qc["left_right"]))
        clock.tick("pet_to_t1")
        files = save_transforms(t1mni, pett1_mat, paths)
        mni = resample_to_mni(brain, pet_clip, t1mni, pett1_mat, opts)
        clock.tick("resample")
    ref_mask = suvr.reference_region(opts["suvr_region"], mni.pet.shape, mni.affine)
    pet_suvr, ref_value, ref_n = suvr.suvr(mni.pet, ref_mask, float(opts["suvr_trim"]))
    clock.tick("suvr")
    files.update(write_images(mni, pet_suvr, paths, opts["grid"]))
    clock.tick("write")
    title = record["subject_id"]
    voxel_mm = float(opts["mni_resolution_mm"])
    qc.qc_figure(
        mni.t1, mni.mask, pet_suvr, mni.template, paths["qc_png"], title, mni.head, voxel_mm
    )
    clock.tick("qc_figure")
    record.update(
        {
            "mask_volume_ml": round(brain.volume_ml, 2),
            "registration": {"t1_to_mni": t1mni_qc, "pet_to_t1": pett1_qc},
            "suvr": {
                "region": opts["suvr_region"],
                "reference_value": float(ref_value) if np.isfinite(ref_value) else 0.0,
                "reference_voxels": ref_n,
            },
            "times_s": clock.finish(),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
        }
    )
    quality_control(record, opts, flags, paths)
    files.update({"qc_json": str(paths["qc_json"]), "qc_png": str(paths["qc_png"])})
    return {"files": files, "qc": record}
