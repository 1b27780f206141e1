"""Fusion metrics: the paper's slice protocol, a 3D volume protocol and the 2D field's suite.

Use :func:`compute_metrics` with ``protocol`` in :data:`PROTOCOLS`.
"""

from fusion3d.metrics.core import PSNR_MAX_DB
from fusion3d.metrics.protocols import (
    PAPER_NAMES,
    PROTOCOLS,
    VOLUME_NAMES,
    compute_metrics,
    paper_slice_index,
)
from fusion3d.metrics.suite import SUITE_NAMES

__all__ = [
    "PAPER_NAMES",
    "PROTOCOLS",
    "PSNR_MAX_DB",
    "SUITE_NAMES",
    "VOLUME_NAMES",
    "compute_metrics",
    "paper_slice_index",
]
