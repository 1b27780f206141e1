"""Generate the embedded synthetic ADNI-shaped cohort (rule synthetic_cohort)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

import json

from fusion3d.io import atomic_path
from fusion3d.jobs import script_logging, set_threads

with script_logging(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    from fusion3d.synthetic import generate_cohort

    out_dir = Path(snakemake.params.out_dir)
    summary = generate_cohort(
        out_dir,
        n_subjects=snakemake.params.n_subjects,
        seed=snakemake.params.seed,
        quirks=snakemake.params.quirks,
        threads=snakemake.threads,
        diagnosis_effects=snakemake.params.diagnosis_effects,
        pet=dict(snakemake.params.pet),
        regional_uptake_variation=dict(snakemake.params.regional_uptake_variation),
    )
    download = out_dir / "download"
    manifests = sorted(
        str(p) for p in download.glob("*.csv") if p.name not in ("ADNIMERGE.csv", "cohort_image_ids.csv")
    )
    spec = {
        "download_dir": str(download),
        "manifests": manifests,
        "adnimerge": str(download / "ADNIMERGE.csv"),
        "image_ids": str(download / "cohort_image_ids.csv"),
        "truth_dir": str(out_dir / "truth"),
        "n_images": int(len(summary)),
    }
    log.info("synthetic cohort: %d images, manifests %s", len(summary), manifests)
    with atomic_path(snakemake.output.cohort) as tmp:
        tmp.write_text(json.dumps(spec, indent=2) + "\n")
