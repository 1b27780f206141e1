"""Fuse every subject with a classic baseline (rule baseline)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import write_tsv
from fusion3d.subjects import read_split, split_items, split_with_inputs
from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.baselines import fuse_items

    items = split_items(split_with_inputs(read_split(snakemake.input.split), snakemake.input.images))
    index = fuse_items(
        snakemake.wildcards.method, items, snakemake.params.out_dir, params=dict(snakemake.params.params)
    )
    write_tsv(index, snakemake.output.index)
    log.info("%d fused volumes", len(index))
