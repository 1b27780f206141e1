"""Regional means of one method's fused volumes, or of the T1 or PET (rules probe_features*)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.subjects import read_split, split_with_inputs
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.io import read_tsv
    from fusion3d.probe.atlas import ATLAS_SOURCE, load_atlas
    from fusion3d.probe.features import feature_table, write_features

    splits = tuple(snakemake.params.splits)
    split = split_with_inputs(read_split(snakemake.input.split), snakemake.input.images, splits)
    split = split[split["split"].isin(splits)]
    masks = dict(zip(split["subject_id"], split["model_mask"], strict=True))
    source = snakemake.params.source
    if source:
        column = {"t1": "model_mri", "pet": "model_pet"}[source]
        volumes = dict(zip(split["subject_id"], split[column], strict=True))
    else:
        index = read_tsv(snakemake.input.index, dtype=str, keep_default_na=False)
        volumes = dict(zip(index["subject_id"], index["fused_path"], strict=True))
        missing = sorted(set(masks) - set(volumes))
        if missing:
            raise ValueError(
                f"{snakemake.input.index}: no fused volume for {len(missing)} subject(s) of "
                f"splits {list(splits)}, e.g. {missing[:3]}"
            )
    items = [(s, volumes[s], masks[s]) for s in sorted(masks)]
    frame = feature_table(items, load_atlas())
    write_features(frame, snakemake.output.features)
    log.info("%d subjects x %d regions (%s)", *frame.shape, ATLAS_SOURCE)
