"""Train one network with one seed, resuming from its last checkpoint when there is one (rule train)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

import shutil

from fusion3d.io import atomic_path
from fusion3d.subjects import read_split, split_items, split_with_inputs
from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.learned.training import train_model, train_with_torchrun

    # image paths from the job's declared inputs (split.tsv names the subjects and their split)
    split = split_with_inputs(read_split(snakemake.input.split), snakemake.input.images, ("train", "val"))
    state_dir = Path(snakemake.params.state_dir)
    args = (split_items(split, ("train",)), split_items(split, ("val",)), state_dir)
    kwargs = dict(
        model_config=dict(snakemake.params.model_config),
        train_config=dict(snakemake.params.train_config),
        gpu=snakemake.params.gpu,
        threads=snakemake.threads,
        method=snakemake.wildcards.method,
    )
    if snakemake.params.gpus > 1:  # N processes on this node: torchrun, data-parallel
        model_path = train_with_torchrun(*args, nproc=snakemake.params.gpus, **kwargs)
    else:
        model_path = train_model(*args, **kwargs)
    # The declared outputs are copies: the state folder (checkpoints) survives a rerun.
    for source, target in ((model_path, snakemake.output.model), (state_dir / "history.csv", snakemake.output.history)):
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    log.info("model: %s", snakemake.output.model)
