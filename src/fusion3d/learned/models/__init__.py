"""The study's fusion networks, one module each, and what they share.

``dcfb`` (DC2Fusion, 2D and 3D; its blocks in ``layers``), ``swinfuse``, ``matr`` and
``dilran`` (the paper's published 2D baselines, ported); ``swin`` (window helpers of the
Swin-style networks); ``shared`` (stochastic depth, the 8-bit input grid, state-dict
unwrapping, key checks); ``published`` (one converter per network for the weights saved by
its published code). Only DC2Fusion is imported here; import the others' modules directly.
"""

from fusion3d.learned.models.dcfb import DC2Fusion, build_model, l1nw_fusion

__all__ = ["DC2Fusion", "build_model", "l1nw_fusion"]
