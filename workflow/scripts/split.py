"""Seeded, stratified train/val/test split of the subjects that passed QC (rule split)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.io import read_tsv
from fusion3d.preprocess.outputs import MODEL_KEYS, subject_file
from fusion3d.split import make_split, write_split
from fusion3d.subjects import read_pairs
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    pairs = read_pairs(snakemake.input.pairs)
    flags = read_tsv(snakemake.input.flags, dtype=str, keep_default_na=False)
    excluded = {}
    if snakemake.params.on_flag == "exclude" and len(flags):
        for sid, group in flags.groupby("subject_id"):
            excluded[sid] = "QC: " + "; ".join(group["reason"].astype(str))
    cfg = snakemake.params.split
    table = make_split(
        pairs, seed=cfg["seed"], fractions=cfg["fractions"], stratify=cfg["stratify"], excluded=excluded
    )
    base = Path(snakemake.params.preprocess_dir)
    for column, key in zip(("model_mri", "model_pet", "model_mask"), MODEL_KEYS, strict=True):
        table[column] = [str(subject_file(base / sid, sid, key)) for sid in table["subject_id"]]
    write_split(table, snakemake.output.split)
    log.info("split: %s", table["split"].value_counts().to_dict())
