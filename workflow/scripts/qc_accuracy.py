"""Preprocessing accuracy against the synthetic ground truth (rule qc_accuracy)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

import pandas as pd

from fusion3d.io import write_tsv
from fusion3d.workflow import read_pairs, script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.preprocess import accuracy_against_truth

    rows = []
    for row in read_pairs(snakemake.input.pairs).itertuples():
        sid = row.subject_id
        acc = accuracy_against_truth(
            Path(snakemake.params.preprocess_dir) / sid, sid, Path(snakemake.params.truth_dir) / row.ptid
        )
        rows.append({"subject_id": sid, "ptid": row.ptid, **acc})
        log.info("%s: %s", sid, acc)
    write_tsv(pd.DataFrame(rows), snakemake.output.accuracy)
