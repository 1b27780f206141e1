"""Preprocessing accuracy against the synthetic ground truth (rule qc_accuracy)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

import pandas as pd

from fusion3d.io import write_tsv
from fusion3d.ingest.sources import read_cohort_spec
from fusion3d.jobs import script_logging
from fusion3d.subjects import match_inputs, read_pairs

with script_logging(snakemake.log[0]) as log:
    from fusion3d.preprocess.accuracy import accuracy_from_files

    pairs = read_pairs(snakemake.input.pairs)
    keys = ("mask_mni", "xfm_t1_mni", "xfm_pet_t1")
    files = {key: match_inputs(snakemake.input[key], pairs["subject_id"], key) for key in keys}
    spec = read_cohort_spec(snakemake.input.cohort)
    if not spec.get("truth_dir"):
        raise ValueError(f"{snakemake.input.cohort}: no truth_dir (not a synthetic cohort)")
    truth_root = Path(spec["truth_dir"])
    rows = []
    for row in pairs.itertuples():
        sid = row.subject_id
        acc = accuracy_from_files({key: files[key][sid] for key in keys}, truth_root / row.ptid)
        rows.append({"subject_id": sid, "ptid": row.ptid, **acc})
        log.info("%s: %s", sid, acc)
    write_tsv(pd.DataFrame(rows), snakemake.output.accuracy)
