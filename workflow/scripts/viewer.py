"""One interactive viewer page per subject, and the pages the report embeds (rule viewer)."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.subjects import match_inputs, read_split, split_with_inputs
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    import pandas as pd

    from fusion3d.io import read_tsv
    from fusion3d.methods import BY_NAME
    from fusion3d.report.viewer import write_report_pages, write_viewer_pages

    start = time.perf_counter()
    every = ("train", "val", "test", "excluded")
    split = split_with_inputs(read_split(snakemake.input.split), snakemake.input.images, every)
    subjects = list(split["subject_id"])
    methods = snakemake.params.methods
    indexes = {m: snakemake.input[m] for m in methods}
    out_dir = Path(snakemake.output.pages)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = write_viewer_pages(
        out_dir,
        split=split,
        indexes=indexes,
        labels={m: BY_NAME[m].label for m in methods},
        qc_jsons=match_inputs(snakemake.input.qc, subjects, "qc_json"),
        qc_pngs=match_inputs(snakemake.input.qc_png, subjects, "qc_png"),
        flags=read_tsv(snakemake.input.flags, dtype=str, keep_default_na=False),
        long=pd.read_csv(snakemake.input.long, sep="\t"),
        fused_splits=snakemake.params.fused_splits,
    )
    embedded = write_report_pages(
        out_dir,
        snakemake.output.report_pages,
        split=split,
        indexes=indexes,
        choice=snakemake.params.report,
        n_figure_subjects=snakemake.params.n_figure_subjects,
    )
    seconds = time.perf_counter() - start
    sizes = [p.stat().st_size for p in pages]
    log.info(
        "%d viewer pages in %.1f s (%.2f s a page), %.2f MB a page (largest %.2f MB)",
        len(pages),
        seconds,
        seconds / max(len(pages), 1),
        sum(sizes) / max(len(sizes), 1) / 1e6,
        max(sizes, default=0) / 1e6,
    )
    log.info(
        "the report embeds %d page(s) (viewer.report: %s), %.2f MB; fused volumes on the pages of %s",
        len(embedded),
        snakemake.params.report,
        sum(p.stat().st_size for p in embedded) / 1e6,
        ", ".join(snakemake.params.fused_splits) or "no split",
    )
