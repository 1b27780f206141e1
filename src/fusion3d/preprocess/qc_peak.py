"""Is the PET -> T1 pose at the similarity's peak? The QC check that holds on real FDG PET.

Mutual information depends on the PET's noise, resolution and contrast: real FDG scores
0.07-0.11 nats at the true pose where clean synthetic PET scores 0.3, so no absolute floor
separates good registrations from bad ones (issue 38). Whether the found pose is the peak of
the similarity does not depend on its height. :func:`peak_check` moves the found pose by
``+-PEAK_STEP_MM`` along each axis and turns it by ``+-PEAK_STEP_DEG`` about each axis
(through the brain mask's centre), scores each of the 12 neighbours by the QC's mutual
information, and fits a parabola per degree of freedom through the three scores: its vertex
is the estimated distance from the found pose to the peak. The figure is
``pet_to_t1_peak_offset_mm``, the length of the six vertex offsets (rotations as the arc they
sweep at ``PEAK_RADIUS_MM``, the cortex's distance from the centre); a degree of freedom
whose three scores are not a peak (not concave) counts as ``PEAK_OFFSET_CAP_MM``.

The offset is a ratio of similarity differences, so a noisier or smoother PET, which scales
the similarity and its curvature together, leaves it where it was (docs/outputs.md: measured
over noise levels and resolutions by ``benchmarks/bench_qc.py``).
"""

from __future__ import annotations

import numpy as np

#: Translation step (mm) and rotation step (degrees) of the neighbours of the found pose.
PEAK_STEP_MM = 3.0
PEAK_STEP_DEG = 3.0
#: Radius (mm) at which a rotation's offset is counted as an arc: the cortex's distance from
#: the brain's centre.
PEAK_RADIUS_MM = 60.0
#: Offset (mm) of a degree of freedom whose three scores are not concave, and the largest
#: offset reported.
PEAK_OFFSET_CAP_MM = 20.0


def _rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about coordinate ``axis``."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def neighbour_moves(
    step_mm: float = PEAK_STEP_MM, step_deg: float = PEAK_STEP_DEG
) -> list[tuple[str, int, float, np.ndarray, np.ndarray]]:
    """The 12 neighbour moves: ``(kind, axis, sign, rotation 3x3, translation mm)``."""
    moves = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            t = np.zeros(3)
            t[axis] = sign * step_mm
            moves.append(("shift", axis, sign, np.eye(3), t))
    for axis in range(3):
        for sign in (-1.0, 1.0):
            moves.append(("turn", axis, sign, _rotation(axis, sign * step_deg), np.zeros(3)))
    return moves


def parabola_offset(minus: float, centre: float, plus: float, step: float) -> float:
    """Vertex of the parabola through ``(-step, minus), (0, centre), (step, plus)``.

    Returns the vertex's position (units of ``step``), or ``inf`` when the three are not
    concave (the found pose is no peak along this direction).
    """
    curvature = 2.0 * centre - minus - plus
    if not curvature > 0:
        return float("inf")
    return 0.5 * step * (plus - minus) / curvature


def peak_offset(scores: dict, centre: float) -> dict:
    """Combine the neighbours' ``scores`` (keys ``(kind, axis, sign)``) into the peak figures.

    Returns ``peak_offset_mm`` (capped at :data:`PEAK_OFFSET_CAP_MM`), the per-axis offsets
    ``shift_mm`` and ``turn_deg``, and ``best_neighbour_gain`` (the best neighbour's score
    over the found pose's, minus 1).
    """
    shift, turn, total = [], [], 0.0
    for kind, step, out in (("shift", PEAK_STEP_MM, shift), ("turn", PEAK_STEP_DEG, turn)):
        for axis in range(3):
            x = parabola_offset(scores[(kind, axis, -1.0)], centre, scores[(kind, axis, 1.0)], step)
            out.append(x)
            mm = abs(x) if kind == "shift" else abs(np.deg2rad(x)) * PEAK_RADIUS_MM
            total += min(mm, PEAK_OFFSET_CAP_MM) ** 2
    best = max(scores.values())
    return {
        "peak_offset_mm": round(min(float(np.sqrt(total)), PEAK_OFFSET_CAP_MM), 3),
        "shift_mm": [round(float(min(max(v, -99.0), 99.0)), 3) for v in shift],
        "turn_deg": [round(float(min(max(v, -99.0), 99.0)), 3) for v in turn],
        "best_neighbour_gain": round(best / centre - 1.0, 4) if centre > 0 else 0.0,
    }


def move_transform(rotation: np.ndarray, translation: np.ndarray, centre):
    """An ANTsTransform of a rigid move about ``centre`` (physical coordinates)."""
    import ants

    return ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=rotation,
        translation=tuple(float(v) for v in translation),
        center=tuple(float(v) for v in centre),
    )


def mask_centre(image, mask: np.ndarray) -> np.ndarray:
    """Physical (ANTs) coordinates of the centre of ``mask`` on ``image``'s grid."""
    idx = np.argwhere(mask > 0).mean(axis=0) if np.any(mask > 0) else np.array(mask.shape) / 2
    direction = np.asarray(image.direction, dtype=float)
    spacing = np.asarray(image.spacing, dtype=float)
    return np.asarray(image.origin, dtype=float) + direction @ (idx * spacing)


def peak_check(fixed, moving, transform, mask: np.ndarray) -> dict:
    """Score the found pose and its 12 neighbours; return the figures of :func:`peak_offset`.

    Parameters
    ----------
    fixed, moving : ANTsImage
        The T1 (brain) and the PET as registered (the pipeline's ``pet_to_t1`` images).
    transform : str or ANTsTransform or None
        The found pose (the registration's ``.mat``, fixed -> moving points); None: identity.
    mask : ndarray
        Boolean mask on ``fixed``'s grid where the mutual information is computed.

    Returns
    -------
    dict
        ``mi`` (the found pose's score) and the figures of :func:`peak_offset`.
    """
    import ants

    from fusion3d.preprocess.registration import mutual_information

    if isinstance(transform, str):
        transform = ants.read_transform(transform)
    centre = mask_centre(fixed, mask)
    fixed_arr = fixed.numpy()

    def score(move) -> float:
        chain = [t for t in (transform, move) if t is not None]
        if chain:
            tx = ants.compose_ants_transforms(chain) if len(chain) > 1 else chain[0]
            warped = ants.apply_ants_transform_to_image(tx, moving, fixed, interpolation="linear")
        else:
            warped = ants.resample_image_to_target(moving, fixed, interp_type="linear")
        return mutual_information(fixed_arr, warped.numpy(), mask)

    found = score(None)
    scores = {
        (kind, axis, sign): score(move_transform(rot, t, centre))
        for kind, axis, sign, rot, t in neighbour_moves()
    }
    return {"mi": round(found, 4), **peak_offset(scores, found)}
