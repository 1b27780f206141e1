"""Training curves of the networks (loss terms and validation metrics per epoch)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

import pandas as pd

from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.report.figures import history_stop, plot_training_curves

    histories = {n: pd.read_csv(p) for n, p in zip(snakemake.params.labels, snakemake.input.histories)}
    for name, hist in histories.items():  # where and why each network stopped (history.csv's stop)
        log.info("%s: %s", name, history_stop(hist) or "no stop mark (interrupted, or an older run)")
    plot_training_curves(histories, [snakemake.output.png, snakemake.output.pdf])
