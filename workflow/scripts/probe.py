"""The diagnostic probe of every feature set on the same folds (rule probe)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.subjects import read_split
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.io import write_tsv
    from fusion3d.probe import ProbeSettings, probe_from_tables
    from fusion3d.probe.figure import plot_probe

    settings = ProbeSettings.from_config(snakemake.params.settings)
    keys = list(snakemake.params.feature_sets)
    paths = dict(zip(keys, snakemake.input.features, strict=True))
    result = probe_from_tables(
        paths, read_split(snakemake.input.split), settings, snakemake.params.settings["splits"]
    )
    for note in result.notes:
        log.warning("probe: %s", note)
    write_tsv(result.table, snakemake.output.table)
    write_tsv(result.folds, snakemake.output.folds)
    write_tsv(result.scores, snakemake.output.scores)
    plot_probe(
        result.table,
        result.scores,
        [snakemake.output.auc_png, snakemake.output.auc_pdf],
        snakemake.output.roc_png,
    )
    done = result.table[result.table["status"] == "ok"]
    log.info(
        "probe: %d feature sets x %d task(s); %d rows with an AUC",
        len(keys) + 1, len(settings.tasks), len(done),
    )
