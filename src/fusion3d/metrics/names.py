"""Metric keys and their display labels: the one list the metrics, tables and figures read.

No computation here (and no heavy import), so that tables and figures can name metrics
without loading the metric code.
"""

from __future__ import annotations

#: The evaluation protocols of :func:`fusion3d.metrics.compute_metrics`.
PROTOCOLS: tuple[str, ...] = ("paper", "volume", "suite2d")
#: ``paper`` protocol: the published code's five metrics, then the two other readings of
#: the paper's "FMI".
PAPER_NAMES: tuple[str, ...] = ("psnr", "ssim", "nmi", "mi", "fsim", "fsim_zhang", "fmi_haghighat")
#: ``volume`` protocol (3D, inside the brain mask).
VOLUME_NAMES: tuple[str, ...] = ("psnr", "ssim", "nmi", "mi", "fsim_zhang")
#: ``suite2d`` protocol: MMIF-CDDFuse's evaluator suite.
SUITE_NAMES: tuple[str, ...] = ("en", "sd", "sf", "ag", "mi", "scd", "vif", "qabf", "ssim", "psnr")
#: Metric keys of each protocol.
PROTOCOL_NAMES: dict[str, tuple[str, ...]] = {
    "paper": PAPER_NAMES,
    "volume": VOLUME_NAMES,
    "suite2d": SUITE_NAMES,
}

#: Display labels of metric keys (others are shown upper-cased).
METRIC_LABELS: dict[str, str] = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "nmi": "NMI",
    "fsim": "FSIM",
    "fsim_zhang": "FSIM_Zhang",
    "fmi_haghighat": "FMI_Haghighat",
    "mi": "MI",
    "en": "EN",
    "sd": "SD",
    "sf": "SF",
    "ag": "AG",
    "scd": "SCD",
    "vif": "VIF",
    "qabf": "Qabf",
}

#: Table 1 columns: the paper's PSNR, SSIM, NMI and "FMI" (= ``fsim``), the published
#: code's MI, then the other two FMI readings (the ``paper`` protocol's keys, table order).
TABLE1_METRICS: tuple[str, ...] = (
    "psnr",
    "ssim",
    "nmi",
    "fsim",
    "mi",
    "fsim_zhang",
    "fmi_haghighat",
)

#: Units of the metric values (the same in every protocol; a metric not listed is unitless).
#: ``mi`` is in nats in every protocol (natural-log histograms); ``en`` in bits (log2, as
#: MMIF-CDDFuse); ``sd``, ``sf`` and ``ag`` in grey levels of the 8-bit slices.
METRIC_UNITS: dict[str, str] = {
    "psnr": "dB",
    "mi": "nats",
    "en": "bits",
    "sd": "grey levels",
    "sf": "grey levels / pixel",
    "ag": "grey levels / pixel",
}


def metric_axis_label(metric: str) -> str:
    """``"PSNR (dB)"``, ``"SSIM (unitless)"``: a metric's label with its unit."""
    label = METRIC_LABELS.get(metric, metric.upper())
    return f"{label} ({METRIC_UNITS.get(metric, 'unitless')})"
