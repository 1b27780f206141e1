"""Geometry of the synthetic cohort: random poses, a smooth analytic displacement, grid maps.

All matrices are 4x4 homogeneous transforms acting on millimetre coordinates.
Grids are described by a voxel-to-world affine and a shape; every mapping of a
whole grid is evaluated by broadcasting 1D index vectors, because each world
coordinate of a regular grid is an affine function of ``(i, j, k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation_matrix(angles_deg: np.ndarray | list[float]) -> np.ndarray:
    """Return the 3x3 rotation ``Rz @ Ry @ Rx`` for angles (degrees) about x, y, z.

    Parameters
    ----------
    angles_deg : array-like of 3 floats
        Rotation angles about the x, y and z axes, in degrees.

    Returns
    -------
    numpy.ndarray
        A proper rotation matrix (orthonormal, determinant +1).
    """
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def homogeneous(linear: np.ndarray, translation: np.ndarray | list[float]) -> np.ndarray:
    """Build a 4x4 matrix from a 3x3 linear part and a translation vector."""
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = translation
    return out


def rigid_part(affine: np.ndarray) -> np.ndarray:
    """Return the rotation of the polar decomposition of a 4x4 affine's linear part."""
    u, _, vt = np.linalg.svd(affine[:3, :3])
    rot = u @ vt
    if np.linalg.det(rot) < 0:  # pragma: no cover - our affines never reflect
        u[:, -1] *= -1
        rot = u @ vt
    return rot


def grid_affine(
    axes: np.ndarray, zooms: tuple[float, float, float], shape: tuple[int, int, int], center
) -> np.ndarray:
    """Voxel-to-world affine of a grid whose centre lies at ``center``.

    Parameters
    ----------
    axes : (3, 3) array
        Unit world direction of each voxel axis, one per column.
    zooms : 3 floats
        Voxel size (mm) along each voxel axis.
    shape : 3 ints
        Grid shape.
    center : 3 floats
        World position (mm) of the grid centre.
    """
    lin = np.asarray(axes, dtype=np.float64) * np.asarray(zooms, dtype=np.float64)[None, :]
    mid = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    return homogeneous(lin, np.asarray(center, dtype=np.float64) - lin @ mid)


@dataclass(frozen=True)
class SmoothDisplacement:
    """A smooth displacement field ``d(x) = sum_k a_k sin(w_k . x + phi_k)``.

    ``x`` is a world point (mm) and ``d`` is in mm. With a few low-frequency
    waves of ~1 mm amplitude the field is smooth and ``x -> A x + d(x)`` stays
    invertible for near-identity ``A``.

    Attributes
    ----------
    amplitudes : (K, 3) array
        Displacement vector of each wave (mm).
    wavevectors : (K, 3) array
        Angular wave vectors (rad/mm).
    phases : (K,) array
        Phase of each wave (rad).
    linear : (3, 4) array, optional
        An affine term ``L @ [x, 1]`` added to the waves (mm); None for none.
        :meth:`without_affine_part` sets it so that the field has no affine
        component over a set of points.
    """

    amplitudes: np.ndarray
    wavevectors: np.ndarray
    phases: np.ndarray
    linear: np.ndarray | None = None

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        n_waves: int = 6,
        amplitude_mm: float = 1.3,
        wavelength_mm: tuple[float, float] = (70.0, 160.0),
    ) -> SmoothDisplacement:
        """Draw a random field of ``n_waves`` waves."""
        directions = rng.standard_normal((n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength_mm, size=n_waves)
        amplitudes = rng.standard_normal((n_waves, 3))
        amplitudes *= amplitude_mm / np.linalg.norm(amplitudes, axis=1, keepdims=True)
        return cls(
            amplitudes=amplitudes,
            wavevectors=directions * (2 * np.pi / wavelengths)[:, None],
            phases=rng.uniform(0, 2 * np.pi, size=n_waves),
        )

    def at_points(self, points: np.ndarray) -> np.ndarray:
        """Evaluate at world points of shape ``(N, 3)``; returns ``(N, 3)`` mm."""
        phase = points @ self.wavevectors.T + self.phases[None, :]
        out = np.sin(phase) @ self.amplitudes
        if self.linear is not None:
            out = out + points @ self.linear[:, :3].T + self.linear[:, 3]
        return out

    def without_affine_part(self, points: np.ndarray) -> SmoothDisplacement:
        """The same field minus its least-squares affine fit over ``points`` (N, 3) mm.

        Over those points the returned field has no affine component, so that an
        affine registration of the displaced anatomy still finds the affine that
        the field is added to.
        """
        design = np.c_[points, np.ones(len(points))]
        fit, *_ = np.linalg.lstsq(design, self.at_points(points), rcond=None)  # (4, 3)
        linear = (np.zeros((3, 4)) if self.linear is None else self.linear) - fit.T
        return SmoothDisplacement(self.amplitudes, self.wavevectors, self.phases, linear)

    def on_grid(self, vox2world: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """Evaluate at every voxel centre of a grid; returns ``shape + (3,)`` float32 mm."""
        comps = np.zeros((3,) + tuple(shape), dtype=np.float32)
        idx = [np.arange(n, dtype=np.float64) for n in shape]
        phase = np.empty(tuple(shape), dtype=np.float32)
        for a, w, phi in zip(self.amplitudes, self.wavevectors, self.phases, strict=True):
            coef = w @ vox2world[:3, :3]
            const = w @ vox2world[:3, 3] + phi
            p0 = (coef[0] * idx[0] + const).astype(np.float32)[:, None, None]
            p1 = (coef[1] * idx[1]).astype(np.float32)[None, :, None]
            p2 = (coef[2] * idx[2]).astype(np.float32)[None, None, :]
            np.add(p0 + p1, p2, out=phase)
            np.sin(phase, out=phase)
            for c in range(3):
                comps[c] += np.float32(a[c]) * phase
        if self.linear is not None:
            lin = self.linear @ vox2world  # (3, 4): displacement as an affine function of the index
            for c in range(3):
                comps[c] += (
                    (np.float32(lin[c, 0]) * idx[0] + np.float32(lin[c, 3])).astype(np.float32)[
                        :, None, None
                    ]
                    + (np.float32(lin[c, 1]) * idx[1]).astype(np.float32)[None, :, None]
                    + (np.float32(lin[c, 2]) * idx[2]).astype(np.float32)[None, None, :]
                )
        return np.stack(comps, axis=-1)


def map_grid(
    vox2world: np.ndarray,
    shape: tuple[int, int, int],
    world_to_target: np.ndarray,
    target_world2vox: np.ndarray,
    field: np.ndarray | None = None,
) -> np.ndarray:
    """Target-grid voxel coordinates of every voxel of a source grid.

    The source voxel ``v`` sits at world point ``x = vox2world @ v``. Its target
    point is ``m = world_to_target @ x + field[v]``, where ``field`` is an optional
    displacement (mm, target world axes) already evaluated on the source grid,
    shape ``shape + (3,)``. Returns ``(3,) + shape`` float32 voxel indices into
    the target grid, ready for :func:`scipy.ndimage.map_coordinates`.
    """
    lin = target_world2vox @ world_to_target @ vox2world
    idx = [np.arange(n, dtype=np.float32) for n in shape]
    coords = np.empty((3,) + tuple(shape), dtype=np.float32)
    for c in range(3):
        coords[c] = (
            (np.float32(lin[c, 0]) * idx[0] + np.float32(lin[c, 3]))[:, None, None]
            + (np.float32(lin[c, 1]) * idx[1])[None, :, None]
            + (np.float32(lin[c, 2]) * idx[2])[None, None, :]
        )
    if field is not None:
        if field.shape != tuple(shape) + (3,):
            raise ValueError(f"field shape {field.shape} does not match grid {tuple(shape)} + (3,)")
        t2v = target_world2vox[:3, :3]
        for c in range(3):
            for e in range(3):
                if t2v[c, e] != 0.0:
                    coords[c] += np.float32(t2v[c, e]) * field[..., e]
    return coords
