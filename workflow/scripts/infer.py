"""Fuse every subject with one trained network (one seed's model; rule infer)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import write_tsv
from fusion3d.subjects import read_split, split_items, split_with_inputs
from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.learned.inference import fuse_items

    # image paths from the job's declared inputs (split.tsv names the subjects and their split)
    items = split_items(split_with_inputs(read_split(snakemake.input.split), snakemake.input.images))
    index = fuse_items(
        snakemake.input.model, items, snakemake.params.out_dir, gpu=snakemake.params.gpu,
        method=snakemake.wildcards.method,
    )
    write_tsv(index, snakemake.output.index)
    log.info("%d fused volumes", len(index))
