"""Regional means of one method's fused volumes, or of the T1 or PET, or the T1's regional GM
volumes gathered from rule probe_volumes (rules probe_features*)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's library

from fusion3d.subjects import read_split, split_with_inputs
from fusion3d.jobs import script_logging

with script_logging(snakemake.log[0]) as log:
    from fusion3d.io import read_tsv
    from fusion3d.probe.atlas import ATLAS_SOURCE, load_atlas
    from fusion3d.probe.features import feature_table, gather_rows, read_features, write_features

    splits = tuple(snakemake.params.splits)
    source = snakemake.params.source
    if source == "t1vol":
        split = read_split(snakemake.input.split)
        subjects = sorted(split.loc[split["split"].isin(splits), "subject_id"].astype(str))
        rows = [read_features(path) for path in snakemake.input.volumes]
        frame = gather_rows(rows, subjects, "probe: regional GM volumes (rule probe_volumes)")
        what = "regional GM volumes (ml)"
    else:
        split = split_with_inputs(read_split(snakemake.input.split), snakemake.input.images, splits)
        split = split[split["split"].isin(splits)]
        masks = dict(zip(split["subject_id"], split["model_mask"], strict=True))
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
        what = "regional means"
    write_features(frame, snakemake.output.features)
    log.info("%d subjects x %d %s (%s)", *frame.shape, what, ATLAS_SOURCE)
