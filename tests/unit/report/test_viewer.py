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


def test_front_page_links_pages_not_embedded_as_files_beside_the_report(tmp_path):
    table1 = tmp_path / "table1.md"
    table1.write_text("| Method | PSNR |\n|---|---|\n| Maximum | 18.0 +- 2.0 |\n")
    split = pd.DataFrame(
        {"subject_id": ["sub-A", "sub-B"], "group": ["CN", "AD"], "split": ["test", "train"]}
    )
    text = frontpage.front_page(
        pairs=split[["subject_id", "group"]],
        excluded=pd.DataFrame({"reason": []}),
        split=split,
        flags=pd.DataFrame({"subject_id": [], "flag": []}),
        qc=pd.DataFrame({"subject_id": ["sub-A"], "mask_volume_ml": ["1400.5"]}),
        table1_md=table1,
        paper_vs_ours_md=None,
        figures=[],
        viewers=True,
        embedded=["sub-A"],
    )
    targets = "\n".join(f".. _{t}: #" for t in ("Tables", "Viewer", "sub-A.html"))
    body = publish_parts(
        text + "\n" + targets,
        writer_name="html",
        settings_overrides={"report_level": 2, "halt_level": 2},
    )["html_body"]
    assert 'href="#">sub-A.html' in body  # the report's own copy
    assert 'href="viewer/sub-B.html">viewer/sub-B.html' in body  # the file beside the report
    assert "of 1 subject(s)" in body


def _split_and_indexes(subject, tmp_path):
    """Three subjects (test, train, excluded) with the same volumes; an index per method."""
    ids = ["sub-T", "sub-R", "sub-X"]
    split = pd.DataFrame(
        {
            "subject_id": ids,
            "group": ["CN", "AD", "CN"],
            "split": ["test", "train", "excluded"],
            "split_reason": ["", "", "qc flag"],
            "model_mri": [str(subject["t1"])] * 3,
            "model_pet": [str(subject["pet"])] * 3,
        }
    )
    indexes = {}
    for method in ("average", "dcfb3d"):
        indexes[method] = tmp_path / f"{method}.tsv"
        pd.DataFrame({"subject_id": ids[:2], "fused_path": [str(subject[method])] * 2}).to_csv(
            indexes[method], sep="\t", index=False
        )
    return split, indexes


def test_only_pages_of_the_fused_splits_carry_fused_volumes(subject, tmp_path):
    split, indexes = _split_and_indexes(subject, tmp_path)
    kwargs = dict(
        split=split,
        indexes=indexes,
        labels={"dcfb3d": "DC2Fusion (ours)", "average": "Weighted average"},
        qc_jsons=dict.fromkeys(split["subject_id"], str(subject["qc"])),
        qc_pngs={},
        flags=pd.DataFrame({"subject_id": [], "flag": [], "kind": [], "reason": []}),
        long=pd.DataFrame({"subject_id": [], "method": [], "protocol": [], "metric": []}),
    )
    pages = viewer.write_viewer_pages(tmp_path / "v", fused_splits=["test"], **kwargs)
    text = {p.stem: p.read_text() for p in pages}
    assert 'id="sprite-dcfb3d"' in text["sub-T"] and 'id="sprite-average"' in text["sub-T"]
    for sid in ("sub-R", "sub-X"):
        assert "sprite-dcfb3d" not in text[sid] and 'id="sprite-t1"' in text[sid]
    assert "viewer.fused_splits = [test]" in text["sub-R"] and "train split" in text["sub-R"]
    assert "not in the evaluated splits" in text["sub-X"]
    every = viewer.write_viewer_pages(tmp_path / "w", fused_splits=["train", "test"], **kwargs)
    assert 'id="sprite-dcfb3d"' in every[1].read_text()
    with pytest.raises(ValueError, match="viewer.fused_splits.*'tets'"):
        viewer.write_viewer_pages(tmp_path / "z", fused_splits=["tets"], **kwargs)


def test_report_embeds_the_pages_that_viewer_report_names(subject, tmp_path):
    split, indexes = _split_and_indexes(subject, tmp_path)
    split = pd.concat([split, split.iloc[[0]].assign(subject_id="sub-U", group="AD")])
    assert viewer.report_subjects(split, "figures", ["sub-U"]) == ["sub-U"]
    assert viewer.report_subjects(split, "test", []) == ["sub-T", "sub-U"]
    assert viewer.report_subjects(split, "all", []) == ["sub-T", "sub-R", "sub-X", "sub-U"]
    assert viewer.report_subjects(split, "none", ["sub-T"]) == []
    with pytest.raises(ValueError, match="viewer.report: 'every'"):
        viewer.report_subjects(split, "every", [])
    pages = tmp_path / "pages"
    pages.mkdir()
    for sid in split["subject_id"]:
        (pages / f"{sid}.html").write_text(f"<p>{sid}</p>")
    # the figure subjects: the fusion panel's choice among the test subjects every method fused
    out = viewer.write_report_pages(
        pages, tmp_path / "report", split=split, indexes=indexes, choice="figures",
        n_figure_subjects=3,
    )  # fmt: skip
    assert [p.name for p in out] == ["sub-T.html"]  # sub-U has no fused volume
    assert out[0].read_text() == "<p>sub-T</p>"
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["sub-T.html"]
    (pages / "sub-T.html").unlink()
    with pytest.raises(ValueError, match="sub-T.html was not written"):
        viewer.copy_report_pages(pages, tmp_path / "report2", ["sub-T"])
