"""Regional grey-matter volumes of one subject's MNI-space T1 (rule probe_volumes)."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)  # before ANTs is imported: ITK reads it at its first use
    from fusion3d.probe.atlas import load_atlas
    from fusion3d.probe.features import write_features
    from fusion3d.probe.volumes import subject_gm_volumes

    if snakemake.params.t1_to_mni != "affine":
        log.warning(
            "probe: preprocess.t1_to_mni is %r: the MNI-space T1 is warped nonlinearly, and "
            "unmodulated GM volumes lose most of each brain's shape differences (docs/probe.md)",
            snakemake.params.t1_to_mni,
        )
    start = time.perf_counter()
    frame = subject_gm_volumes(
        snakemake.wildcards.subject, snakemake.input.t1, snakemake.input.mask, load_atlas()
    )
    write_features(frame, snakemake.output.volumes)
    log.info(
        "%s: GM %.1f ml in %d regions, %.1f s",
        snakemake.wildcards.subject,
        float(frame.iloc[0].sum()),
        frame.shape[1],
        time.perf_counter() - start,
    )
