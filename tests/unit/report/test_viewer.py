"""The per-subject viewer pages and the report's front page (fusion3d.report.viewer, fusion3d.report.frontpage)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_parts

from fusion3d.report import frontpage, viewer


def test_sprite_tiles_sagittal_slices_superior_up():
    data = np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4)
    sprite = viewer.to_sprite(data)
    rows, cols = viewer.sprite_layout(data.shape)
    assert (rows, cols) == (3, 2) and sprite.shape == (rows * 4, cols * 3)
    r, c = divmod(3, cols)
    tile = sprite[r * 4 : (r + 1) * 4, c * 3 : (c + 1) * 3]
    assert np.array_equal(tile, data[3, :, ::-1].T)  # row 0 is the top (superior) slice


@pytest.fixture
def subject(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = {}
    for name in ("t1", "pet", "average", "dcfb3d"):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((16, 16, 16), dtype=np.float32), affine), paths[name])
    qc = {
        "subject_id": "sub-X_ses-M000",
        "mask_volume_ml": 1400.0,
        "flags": [],
        "registration": {
            "t1_to_mni": {"metric": "ncc", "similarity_before": 0.2, "similarity_after": 0.5}
        },
    }
    paths["qc"] = tmp_path / "qc.json"
    paths["qc"].write_text(json.dumps(qc))
    return paths


def test_subject_page_is_self_contained_with_every_method(subject, tmp_path):
    labels = {"dcfb3d": "DC2Fusion (ours)", "average": "Weighted average", "pca": "PCA"}
    metrics = pd.DataFrame(
        {
            "method": ["dcfb3d", "dcfb3d", "average"],
            "protocol": "paper",
            "metric": "psnr",
            "value": [10.0, 12.0, 9.0],
            "seed": [1, 2, np.nan],
        }
    )
    page = viewer.write_subject_page(
        tmp_path / "out" / "sub-X_ses-M000.html",
        subject_id="sub-X_ses-M000",
        t1=subject["t1"],
        pet=subject["pet"],
        fused={"average": subject["average"], "dcfb3d": subject["dcfb3d"]},
        labels=labels,
        info={"group": "AD", "split": "test"},
        qc_json=subject["qc"],
        qc_png=None,
        flags=["mask_volume (absolute): too small"],
        metrics=metrics,
    )
    text = page.read_text()
    assert "function brainsprite(" in text  # the script is inlined, nothing is fetched
    assert "http://" not in text and "https://" not in text
    for key in ("t1", "pet", "dcfb3d", "average"):
        assert f'id="sprite-{key}" src="data:image/png;base64,' in text
    assert "sprite-pca" not in text  # a method without a fused volume gets no button
    assert text.index("button-dcfb3d") < text.index("button-average")  # the study's order
    assert "<td>11</td>" in text  # the network's value averaged over its seeds
    assert "too small" in text and "1400" in text
    assert page.stat().st_size < 200_000


def test_unreadable_fused_volume_names_the_file(subject, tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        viewer.write_subject_page(
            tmp_path / "p.html",
            subject_id="s",
            t1=subject["t1"],
            pet=subject["pet"],
            fused={"average": bad},
            labels={"average": "Weighted average"},
            info={},
            qc_json=subject["qc"],
            qc_png=None,
            flags=[],
            metrics=pd.DataFrame(),
        )


def test_front_page_renders_the_cohort_tables_and_links(tmp_path):
    table1 = tmp_path / "table1.md"
    table1.write_text(
        "| Method | PSNR |\n|---|---|\n| DC2Fusion (ours) | **20.1 +- 1.0** |\n"
        "| Maximum | 18.0 +- 2.0 |\n\nThe paper's FMI column is FSIM here.\n"
    )
    split = pd.DataFrame(
        {
            "subject_id": ["sub-A_ses-M000", "sub-B_ses-M000"],
            "group": ["CN", "AD"],
            "split": ["test", "excluded"],
            "split_reason": ["", "qc flag mask_volume"],
        }
    )
    text = frontpage.front_page(
        pairs=split[["subject_id", "group"]],
        excluded=pd.DataFrame({"reason": ["not the preferred series", "not the preferred series"]}),
        split=split,
        flags=pd.DataFrame({"subject_id": ["sub-B_ses-M000"], "flag": ["mask_volume"]}),
        qc=pd.DataFrame({"subject_id": ["sub-A_ses-M000"], "mask_volume_ml": ["1400.5"]}),
        table1_md=table1,
        paper_vs_ours_md=None,
        figures=["fusion_panel.png"],
        viewers=True,
    )
    targets = "\n".join(
        f".. _{t}: #"
        for t in (
            "fusion_panel.png",
            "Tables",
            "Viewer",
            "sub-A_ses-M000.html",
            "sub-B_ses-M000.html",
        )
    )
    body = publish_parts(
        text + "\n" + targets,
        writer_name="html",
        settings_overrides={"report_level": 2, "halt_level": 2},
    )["html_body"]
    assert "2 image pairs" in body and "not the preferred series: 2" in body
    assert "<strong>20.1 +- 1.0</strong>" in body and "FSIM here" in body
    assert "mask_volume: 1 subject" in body and "1.4e+03" in body
    assert 'href="#">sub-A_ses-M000.html' in body
