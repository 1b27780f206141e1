"""The learned fusion: the DC2Fusion network, its loss, data, training and inference.

``models`` (network and the published-weights key map), ``losses``, ``data`` (pairs and the
published augmentation), ``loader`` (the streaming data pipeline), ``devices`` (device, AMP and
throughput switches), ``distributed`` (torchrun), ``training`` and ``inference``. Import the
modules directly: importing this package loads no torch.
"""
