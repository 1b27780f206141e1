"""Fusion metrics: the paper's slice protocol, a 3D volume protocol and the 2D field's suite.

Use :func:`compute_metrics` with ``protocol`` in :data:`PROTOCOLS`.

The names below are imported on first use, so that a light submodule (e.g.
:mod:`fusion3d.metrics.names`, which tables and figures read) costs no metric code (numba,
OpenCV, FFTW).
"""

from __future__ import annotations

from fusion3d.lazy import lazy_getattr

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "PAPER_NAMES": "protocols",
    "PROTOCOLS": "protocols",
    "PSNR_MAX_DB": "core",
    "SUITE_NAMES": "suite",
    "VOLUME_NAMES": "protocols",
    "compute_metrics": "protocols",
    "paper_slice_index": "protocols",
}

__all__ = sorted(_EXPORTS)


#: Import a name of :data:`_EXPORTS` from its submodule on first use.
__getattr__ = lazy_getattr(__name__, _EXPORTS)
