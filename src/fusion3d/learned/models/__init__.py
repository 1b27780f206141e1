"""Fusion networks: DC2Fusion (DCFB blocks) in 2D and 3D."""

from fusion3d.learned.models.dcfb import DC2Fusion, build_model, l1nw_fusion

__all__ = ["DC2Fusion", "build_model", "l1nw_fusion"]
