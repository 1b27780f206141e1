"""What the converters (DICOM and NIfTI: :mod:`~fusion3d.ingest.convert`; ECAT:
:mod:`~fusion3d.ingest.ecat`) share: the error of an image that cannot be turned into a
trustworthy volume, and the stacking of a series' frames."""

from __future__ import annotations

import numpy as np


class ConversionError(ValueError):
    """An image that cannot be turned into a trustworthy volume; the message says why."""


def stack_frames(frames: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack 3D frames ``(label, data, affine)`` that share one grid into a 4D array.

    Returns the 4D array and the common affine. A trailing singleton 4th axis is dropped.

    Raises
    ------
    ConversionError
        Naming the frame whose shape or affine differs from the first one.
    """
    ref_label, ref_data, ref_affine = frames[0]
    ref_shape = ref_data.shape[:3]
    stacked = []
    for label, data, affine in frames:
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3 or data.shape != ref_shape:
            raise ConversionError(f"frame {label} has shape {data.shape}, expected {ref_shape}")
        if not np.allclose(affine, ref_affine, atol=1e-4):
            raise ConversionError(f"frame {label} is on another grid than {ref_label}")
        stacked.append(data)
    return np.stack(stacked, axis=3), np.asarray(ref_affine, float)
