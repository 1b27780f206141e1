"""fusion3d: a reproducible study pipeline for 3D MRI-PET fusion (DC2Fusion / DCFB)."""

__version__ = "0.1.0"
