"""Per-subject preprocessing of one T1 + FDG PET pair (Clinica t1-linear / pet-linear style).

Steps: reorient to RAS -> N4 -> brain extraction -> T1->MNI (affine, optional
SyN) at ``registration_mm`` -> PET low-intensity clip -> PET->T1 rigid ->
T1, mask and PET resampled ONCE to the MNI grid (PET with the composed
[T1->MNI, PET->T1] transforms) -> SUVR -> the paper's model-input geometry ->
QC json + figure. Flagged subjects still get every output.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from fusion3d.io import load_nifti, save_nifti
from fusion3d.preprocess import brain as _brain
from fusion3d.preprocess import geometry, qc, registration, suvr

#: Default options; every key is documented in :func:`preprocess_pair`.
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
    "qc_bounds": {
        "mask_ml_min": 800.0,
        "mask_ml_max": 2400.0,
        "min_similarity_gain": -0.02,
        "min_pet_mi": 0.15,
        "min_mni_ncc": 0.75,
        "min_ref_voxels": 20,
    },
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


def output_paths(out_dir: str | os.PathLike, subject_id: str) -> dict[str, Path]:
    """Paths of every file :func:`preprocess_pair` writes."""
    d, p = Path(out_dir), subject_id
    return {
        "t1_mni": d / f"{p}_space-MNI152_desc-preproc_T1w.nii.gz",
        "mask_mni": d / f"{p}_space-MNI152_desc-brain_mask.nii.gz",
        "pet_mni": d / f"{p}_space-MNI152_desc-suvr_pet.nii.gz",
        "t1_model": d / f"{p}_desc-model_T1w.nii.gz",
        "pet_model": d / f"{p}_desc-model_pet.nii.gz",
        "mask_model": d / f"{p}_desc-model_mask.nii.gz",
        "xfm_t1_mni": d / f"{p}_from-T1w_to-MNI152_mode-image_xfm.mat",
        "xfm_pet_t1": d / f"{p}_from-pet_to-T1w_mode-image_xfm.mat",
        "xfm_t1_mni_warp": d / f"{p}_from-T1w_to-MNI152_mode-image_xfm.nii.gz",
        "qc_json": d / f"{p}_qc.json",
        "qc_png": d / f"{p}_qc.png",
    }


def _load_ras(path: str | os.PathLike) -> nib.Nifti1Image:
    data, affine = load_nifti(path, ndim=3)  # ValueError/FileNotFoundError naming the file
    if np.ptp(data) == 0:
        raise ValueError(f"{path}: image is constant ({float(data.flat[0])}), nothing to register")
    return geometry.reorient_ras(nib.Nifti1Image(data, affine))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _similarity(fixed, moving, transforms, mask: np.ndarray, metric: str) -> float:
    import ants

    if transforms:
        warped = ants.apply_transforms(fixed, moving, transforms, interpolator="linear")
    else:  # identity in world coordinates
        warped = ants.resample_image_to_target(moving, fixed, interp_type="linear")
    f, m = fixed.numpy(), warped.numpy()
    if metric == "mi":
        return registration.mutual_information(f, m, mask)
    return registration.ncc(f, m, mask)


def preprocess_pair(
    mri_path: str | os.PathLike,
    pet_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    subject_id: str,
    *,
    options: dict | None = None,
    threads: int = 1,
) -> dict:
    """Preprocess one T1/FDG pair into MNI space and the model-input grid.

    Parameters
    ----------
    mri_path, pet_path : path
        T1 NIfTI and 3D FDG PET NIfTI, any orientation.
    out_dir : path
        Output folder (created).
    subject_id : str
        File prefix, e.g. ``sub-ADNI002S0295_ses-M000``.
    options : dict, optional
        Overrides of :data:`DEFAULT_OPTIONS`:

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
        - ``qc_bounds``: ``mask_ml_min``/``mask_ml_max`` (800/2400 ml),
          ``min_similarity_gain`` (-0.02: similarity may not fall by more),
          ``min_pet_mi`` (0.15 nats, PET->T1 MI after), ``min_mni_ncc``
          (0.75, T1->MNI correlation after), ``min_ref_voxels`` (20).
    threads : int
        ITK and torch threads. ITK fixes its thread count at its first use in a
        process; when that count differs from ``threads`` the whole call runs in
        a freshly spawned process (see :func:`registration.configure_threads`),
        so the count always takes effect. ``qc["itk_threads"]`` records it.

    Returns
    -------
    dict
        ``{"files": {name: path}, "qc": qc dict}``; ``qc["flags"]`` lists
        ``{"flag", "reason"}`` records (empty when the subject passed).

    Raises
    ------
    FileNotFoundError, ValueError
        When an input cannot be read (the message names the file) or an option is invalid.
    """
    import ants

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
    paths = output_paths(out_dir, subject_id)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    flags: list[dict[str, str]] = []
    t0 = time.perf_counter()

    def tick(step: str, start: float) -> float:
        now = time.perf_counter()
        times[step] = round(now - start, 3)
        return now

    t1_ras, pet_ras = _load_ras(mri_path), _load_ras(pet_path)
    registration.start_registration_worker()  # its start-up overlaps N4 and brain extraction
    t1 = registration.nib_to_ants(t1_ras)
    pet = registration.nib_to_ants(pet_ras)
    t = tick("load", t0)

    t1_n4 = _brain.n4(
        t1,
        shrink_factor=int(opts["n4_shrink"]),
        resolution_mm=None if opts["n4_resolution_mm"] is None else float(opts["n4_resolution_mm"]),
        iterations=tuple(opts["n4_iterations"]),
    )
    t = tick("n4", t)

    reg_mm = float(opts["registration_mm"])
    try:
        mask = _brain.extract_brain(t1_n4, opts["brain_extraction"], registration_mm=reg_mm)
    except Exception as exc:  # a failed extraction is a flag, not a crash
        flags.append(qc.flag("brain_extraction_failed", f"{type(exc).__name__}: {exc}"))
        mask = np.zeros(t1_n4.shape, dtype=bool)
    mask_ml = _brain.mask_volume_ml(mask, t1_ras.affine)
    t = tick("brain_extraction", t)

    empty = not mask.any()
    mask_img = t1_n4.new_image_like(mask.astype(np.float32))
    # With an empty mask fall back to the whole head so that the subject still runs.
    brain_full = t1_n4 if empty else t1_n4 * mask_img
    brain_reg = registration.resample_to_resolution(brain_full, reg_mm)
    tpl_reg = registration.nib_to_ants(geometry.mni_template(reg_mm, "t1"))
    tpl_mask_reg = geometry.mni_template(reg_mm, "mask").get_fdata() > 0

    sched = {"iterations": tuple(opts["registration_iterations"])}
    reg_qc: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fusion3d_pre_") as tmp:
        kind = "SyN" if opts["t1_to_mni"] == "syn" else "Affine"
        res = registration.register(
            tpl_reg, brain_reg, kind, outprefix=f"{tmp}/t1mni_", schedule=sched
        )
        t1mni = list(res["fwdtransforms"])
        t1mni_mat = [p for p in t1mni if p.endswith(".mat")][0]
        reg_qc["t1_to_mni"] = {
            "metric": "ncc",
            "transform": kind,
            "similarity_before": _similarity(tpl_reg, brain_reg, [], tpl_mask_reg, "ncc"),
            "similarity_after": _similarity(tpl_reg, brain_reg, t1mni, tpl_mask_reg, "ncc"),
        }
        t = tick("t1_to_mni", t)

        pet_arr = pet.numpy()
        lo = max(0.0, float(np.percentile(pet_arr, float(opts["pet_clip_percentile"]))))
        pet_clip = pet.new_image_like(np.maximum(pet_arr, lo).astype(np.float32))
        t1_reg = registration.resample_to_resolution(t1_n4, reg_mm)
        mask_reg_img = registration.resample_to_resolution(mask_img, reg_mm)
        mask_reg = mask_reg_img.numpy() > 0.5
        pet_reg = registration.resample_to_resolution(pet_clip, 3.0 if reg_mm < 3 else reg_mm)
        fixed = brain_reg if not empty else t1_reg
        eval_mask = mask_reg if not empty else t1_reg.numpy() > np.percentile(t1_reg.numpy(), 50)
        res = registration.register(
            fixed, pet_reg, "Rigid", outprefix=f"{tmp}/pett1_", schedule=sched
        )
        pett1_mat = res["fwdtransforms"][0]
        reg_qc["pet_to_t1"] = {
            "metric": "mi",
            "transform": "Rigid",
            "similarity_before": _similarity(fixed, pet_reg, [], eval_mask, "mi"),
            "similarity_after": _similarity(fixed, pet_reg, [pett1_mat], eval_mask, "mi"),
        }
        t = tick("pet_to_t1", t)

        registration.copy_transform(t1mni_mat, paths["xfm_t1_mni"])
        registration.copy_transform(pett1_mat, paths["xfm_pet_t1"])
        files = {k: str(paths[k]) for k in ("xfm_t1_mni", "xfm_pet_t1")}
        warps = [p for p in t1mni if p.endswith(".nii.gz")]
        if warps:
            registration.copy_transform(warps[0], paths["xfm_t1_mni_warp"])
            files["xfm_t1_mni_warp"] = str(paths["xfm_t1_mni_warp"])

        # One resampling per output, at the output resolution.
        tpl_out_nib = geometry.mni_template(float(opts["mni_resolution_mm"]), "t1")
        ref = registration.nib_to_ants(tpl_out_nib)
        out_affine = tpl_out_nib.affine
        mask_mni = ants.apply_transforms(ref, mask_img, t1mni, interpolator="linear").numpy() > 0.5
        t1_mni = ants.apply_transforms(ref, brain_full, t1mni, interpolator="linear").numpy()
        t1_mni = np.clip(t1_mni, 0, None) * (mask_mni if not empty else 1)
        pet_mni = ants.apply_transforms(
            ref, pet_clip, t1mni + [pett1_mat], interpolator="linear"
        ).numpy()
        t = tick("resample", t)

    ref_mask = suvr.reference_region(opts["suvr_region"], pet_mni.shape, out_affine)
    pet_suvr, ref_value, ref_n = suvr.suvr(pet_mni, ref_mask, float(opts["suvr_trim"]))
    t = tick("suvr", t)

    save_nifti(t1_mni.astype(np.float32), out_affine, paths["t1_mni"], dtype=np.float32)
    save_nifti(mask_mni.astype(np.uint8), out_affine, paths["mask_mni"], dtype=np.uint8)
    save_nifti(pet_suvr, out_affine, paths["pet_mni"], dtype=np.float32)
    model = geometry.to_model_grid(t1_mni, pet_suvr, mask_mni, out_affine, int(opts["grid"]))
    save_nifti(*model["mri"], paths["t1_model"], dtype=np.float32)
    save_nifti(*model["pet"], paths["pet_model"], dtype=np.float32)
    save_nifti(*model["mask"], paths["mask_model"], dtype=np.uint8)
    files.update({k: str(paths[k]) for k in ("t1_mni", "mask_mni", "pet_mni")})
    files.update({k: str(paths[k]) for k in ("t1_model", "pet_model", "mask_model")})
    t = tick("write", t)

    qc.qc_figure(
        t1_mni, mask_mni, pet_suvr, tpl_out_nib.get_fdata(), paths["qc_png"], title=subject_id
    )
    t = tick("qc_figure", t)
    times["total"] = round(time.perf_counter() - t0, 3)

    record = {
        "subject_id": subject_id,
        "inputs": {"mri": str(mri_path), "pet": str(pet_path)},
        "options": opts,
        "threads": threads,
        "itk_threads": itk_threads,
        "mask_volume_ml": round(mask_ml, 2),
        "registration": reg_qc,
        "suvr": {
            "region": opts["suvr_region"],
            "reference_value": float(ref_value) if np.isfinite(ref_value) else 0.0,
            "reference_voxels": ref_n,
        },
        "times_s": times,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    record["flags"] = flags + qc.evaluate_flags(record, opts["qc_bounds"])
    qc.write_json(record, paths["qc_json"])
    files.update({"qc_json": str(paths["qc_json"]), "qc_png": str(paths["qc_png"])})
    return {"files": files, "qc": record}
