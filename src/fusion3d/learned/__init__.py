"""The learned fusion: the study's networks, their training recipes, training and inference.

``models`` (DC2Fusion, SwinFuse, MATR, DILRAN; what they share; one converter per network for
the weights its published code saved), ``recipes`` (each architecture's published training
settings, loss and optimiser), ``losses``, ``data`` (pairs and the published augmentation),
``loader`` (the streaming data pipeline), ``devices`` (device, AMP and throughput switches),
``distributed`` (torchrun), ``training`` (the training stage, one module per step),
``inference`` and ``weights`` (``fusion3d import-weights``). Import the modules directly:
importing this package loads no torch.

Words: an *architecture* (``"dcfb"``, ``"swinfuse"``, ``"matr"``, ``"dilran"``) names a network
and its recipe, and is what a checkpoint records; a *method* (``"dcfb3d"``, ``"dcfb2d"``,
``"pca"``, ...) is a study method of :mod:`fusion3d.methods`, and a network method has an
architecture.
"""
