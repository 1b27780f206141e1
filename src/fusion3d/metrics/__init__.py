"""Fusion metrics: the paper's slice protocol, a 3D volume protocol and the 2D field's suite.

Use :func:`compute_metrics` with ``protocol`` in :data:`PROTOCOLS`.

The names below are imported on first use, so that a light submodule (e.g.
:mod:`fusion3d.metrics.names`, which tables and figures read) costs no metric code (numba,
OpenCV, FFTW).
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    """Import ``name`` from its submodule on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fusion3d.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fusion3d.metrics.{_EXPORTS[name]}"), name)
