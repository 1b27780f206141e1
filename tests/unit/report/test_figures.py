"""Tests for fusion3d.report.figures: every figure writes a real PNG and PDF, bad input raises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fusion3d.evaluation.long_table import LONG_COLUMNS
from fusion3d.io import save_nifti, write_tsv
from fusion3d.report.figures import (
    centre_slices,
    fusion_panel_from_tables,
    history_stop,
    output_paths,
    pick_panel_subjects,
    plot_fusion_panel,
    plot_metric_boxes,
    plot_qc_montage_pages,
    plot_training_curves,
    training_curves_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_figure_files(paths: list[Path], prefix: Path) -> None:
    assert [p.name for p in paths] == [prefix.name + ".png", prefix.name + ".pdf"]
    png, pdf = paths
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert pdf.stat().st_size > 1000
    assert not [p for p in png.parent.iterdir() if ".part" in p.name]


def volume(seed: int, shape=(10, 12, 8)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_output_paths(tmp_path) -> None:
    assert output_paths(tmp_path / "fig") == [tmp_path / "fig.png", tmp_path / "fig.pdf"]
    assert output_paths(str(tmp_path / "fig.v2")) == [
        tmp_path / "fig.v2.png",
        tmp_path / "fig.v2.pdf",
    ]
    assert output_paths(tmp_path / "a.pdf") == [tmp_path / "a.pdf"]
    assert output_paths([tmp_path / "a.png", tmp_path / "b.pdf"]) == [
        tmp_path / "a.png",
        tmp_path / "b.pdf",
    ]
    with pytest.raises(ValueError, match="a.svg"):
        output_paths([tmp_path / "a.svg"])
    with pytest.raises(ValueError, match="no output"):
        output_paths([])


def test_centre_slices_geometry() -> None:
    vol = np.zeros((5, 7, 9))
    vol[2, 3, 4] = 1.0  # the centre voxel
    vol[4, 3, 4] = 2.0  # +x (right) on the centre row
    sl = centre_slices(vol)
    assert sl["axial"].shape == (7, 5)
    assert sl["coronal"].shape == (9, 5)
    assert sl["sagittal"].shape == (9, 7)
    assert sl["axial"][3, 2] == 1.0 and sl["axial"][3, 4] == 2.0
    assert sl["sagittal"][4, 3] == 1.0
    with pytest.raises(ValueError, match="3D"):
        centre_slices(np.zeros((4, 4)))


def test_fusion_panel(tmp_path) -> None:
    subjects = [
        {
            "subject_id": f"sub-{i}",
            "mri": volume(i),
            "pet": volume(10 + i),
            "fused": {"average": volume(20 + i), "dcfb3d": volume(30 + i)},
        }
        for i in range(4)
    ]
    paths = plot_fusion_panel(subjects, tmp_path / "panel")
    assert_figure_files(paths, tmp_path / "panel")
    # a single subject and method
    single = [{"subject_id": "s", "mri": volume(0), "pet": volume(1), "fused": {"pca": volume(2)}}]
    assert_figure_files(plot_fusion_panel(single, tmp_path / "one"), tmp_path / "one")


def test_fusion_panel_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="empty"):
        plot_fusion_panel([], tmp_path / "x")
    base = {"subject_id": "s", "mri": volume(0), "pet": volume(1)}
    with pytest.raises(ValueError, match="no fused"):
        plot_fusion_panel([{**base, "fused": {}}], tmp_path / "x")
    with pytest.raises(ValueError, match="one shape"):
        plot_fusion_panel([{**base, "fused": {"a": volume(2, (3, 3, 3))}}], tmp_path / "x")
    with pytest.raises(ValueError, match="expected \\['a'\\]"):
        plot_fusion_panel(
            [{**base, "fused": {"a": volume(2)}}, {**base, "fused": {"b": volume(2)}}],
            tmp_path / "x",
        )
    with pytest.raises(ValueError, match="lacks key"):
        plot_fusion_panel([{"subject_id": "s"}], tmp_path / "x")


def long_table(methods: list[str], metrics: list[str], n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        (f"s{i}", "test", "CN", m, "paper", k, float(rng.random()))
        for m in methods
        for k in metrics
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=list(LONG_COLUMNS))


def test_metric_boxes(tmp_path) -> None:
    long = long_table(["dcfb3d", "average", "wavelet"], ["psnr", "ssim", "nmi", "fsim"])
    assert_figure_files(plot_metric_boxes(long, tmp_path / "boxes"), tmp_path / "boxes")
    one = long_table(["average"], ["psnr"], n=1)
    assert_figure_files(plot_metric_boxes(one, tmp_path / "one"), tmp_path / "one")
    with pytest.raises(ValueError, match="no finite values.*'volume'"):
        plot_metric_boxes(long, tmp_path / "x", protocol="volume")
    with pytest.raises(ValueError, match="no finite values"):
        plot_metric_boxes(long.iloc[0:0], tmp_path / "x")


def test_training_curves(tmp_path) -> None:
    epochs = np.arange(1, 6)
    hist = pd.DataFrame(
        {
            "epoch": epochs,
            "loss": 1.0 / epochs,
            "loss_lncc": 0.5 / epochs,
            "val_psnr": 10 + epochs,
            "lr": 1e-4,
        }
    )
    paths = plot_training_curves({"dcfb3d": hist, "dcfb2d": hist * 1.1}, tmp_path / "curves")
    assert_figure_files(paths, tmp_path / "curves")
    single = plot_training_curves({"dcfb3d": hist[["epoch", "loss"]]}, tmp_path / "one")
    assert_figure_files(single, tmp_path / "one")
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves({}, tmp_path / "x")
    with pytest.raises(ValueError, match="'dcfb3d'.*epoch"):
        plot_training_curves({"dcfb3d": hist.drop(columns="epoch")}, tmp_path / "x")
    with pytest.raises(ValueError, match="no 'loss'"):
        plot_training_curves({"dcfb3d": hist[["epoch", "lr"]]}, tmp_path / "x")


def test_training_curves_plot_every_loss_term_of_every_network() -> None:
    epochs = np.arange(0, 4)
    dcfb = pd.DataFrame(
        {
            "epoch": epochs,
            "lr": 1e-4,
            "loss": 3.0,
            "lncc_mri": -0.5,
            "ssim_mri": 0.4,
            "l1_pet": 0.1,
            "val_psnr": 12.0,
            "seconds": 1.0,
        }
    )
    matr = pd.DataFrame(
        {
            "epoch": epochs,
            "lr": 1e-3,
            "loss": 2.0,
            "ssim_ir": 0.3,
            "rmi_vi": 0.2,
            "val_psnr": 11.0,
            "seconds": 1.0,
        }
    )
    fig = training_curves_figure(
        {"dcfb3d seed 1": dcfb, "dcfb3d seed 2": dcfb * 1.01, "matr seed 1": matr}
    )
    axes = fig.axes
    assert len(axes) == 4  # 2 networks x (loss terms, val_psnr)
    labels = [{ln.get_label() for ln in ax.get_lines()} for ax in axes]
    assert {"loss", "lncc_mri", "ssim_mri", "l1_pet"} <= labels[0]  # the history's own names
    assert {"loss", "ssim_ir", "rmi_vi"} <= labels[2]
    assert {"seed 1", "seed 2"} <= labels[1]


def test_training_curves_say_where_and_why_each_run_stopped(tmp_path) -> None:
    """history.csv's ``stop`` column (last row of a finished run) is no loss term; the
    legend of the validation panels names the stop epoch and reason."""
    rows = [{"epoch": e, "lr": 1e-4, "loss": 1.0 / (e + 1), "val_score": 0.1 * e} for e in range(5)]
    rows[-1]["stop"] = "patience"
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    patient = pd.read_csv(tmp_path / "a.csv")  # as the workflow reads it: NaN above the mark
    assert patient.columns.tolist()[:4] == ["epoch", "lr", "loss", "val_score"]
    capped = patient.assign(stop=[None] * 4 + ["cap"])
    interrupted = patient.drop(columns="stop")
    assert history_stop(patient) == "stopped at epoch 4 (patience)"
    assert history_stop(capped) == "stopped at epoch 4 (cap)"
    assert history_stop(interrupted) is None
    fig = training_curves_figure(
        {"dcfb3d seed 1": patient, "dcfb3d seed 2": capped, "dcfb3d seed 3": interrupted}
    )
    loss_ax, val_ax = fig.axes
    loss_labels = [ln.get_label() for ln in loss_ax.get_lines()]
    assert len(loss_labels) == 3 and "loss" in loss_labels and "stop" not in loss_labels
    assert {ln.get_label() for ln in val_ax.get_lines()} == {
        "seed 1, stopped at epoch 4 (patience)",
        "seed 2, stopped at epoch 4 (cap)",
        "seed 3",
    }
    with pytest.raises(ValueError, match="no 'loss'"):
        training_curves_figure({"x": patient[["epoch", "lr", "stop"]]})


def write_png(path: Path, seed: int) -> Path:
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().imshow(np.random.default_rng(seed).random((8, 8)))
    fig.savefig(path, format="png")
    return path


def test_qc_montage_pages(tmp_path) -> None:
    pngs = [write_png(tmp_path / f"sub-{i}_qc.png", i) for i in range(5)]
    pages_dir, pdf = tmp_path / "figs" / "qc_montage", tmp_path / "figs" / "qc_montage.pdf"
    pages = plot_qc_montage_pages(pngs, pages_dir, pdf, per_page=2, ncols=2)
    # 5 subjects at 2 a page -> 3 pages, numbered, and one PDF holding all three
    assert [p.name for p in pages] == ["page-001.png", "page-002.png", "page-003.png"]
    assert sorted(pages_dir.iterdir()) == pages
    for page in pages:
        assert page.read_bytes()[:8] == PNG_SIGNATURE
    pdf_bytes = pdf.read_bytes()
    assert pdf_bytes.startswith(b"%PDF")
    assert pdf_bytes.count(b"/Type /Page") - pdf_bytes.count(b"/Type /Pages") == 3
    one = plot_qc_montage_pages(pngs, tmp_path / "one", tmp_path / "one.pdf")
    assert [p.name for p in one] == ["page-001.png"]
    with pytest.raises(ValueError, match="empty"):
        plot_qc_montage_pages([], tmp_path / "x", tmp_path / "x.pdf")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        plot_qc_montage_pages([tmp_path / "nope.png"], tmp_path / "x", tmp_path / "x.pdf")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        plot_qc_montage_pages([tmp_path / "broken.png"], tmp_path / "x", tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="ncols"):
        plot_qc_montage_pages(pngs, tmp_path / "x", tmp_path / "x.pdf", ncols=0)
    with pytest.raises(ValueError, match="per_page"):
        plot_qc_montage_pages(pngs, tmp_path / "x", tmp_path / "x.pdf", per_page=0)


def test_pick_panel_subjects() -> None:
    split = pd.DataFrame(
        {
            "subject_id": ["c2", "c1", "a1", "m1", "a2", "t1"],
            "split": ["test", "test", "test", "test", "test", "train"],
            "group": ["CN", "CN", "AD", "MCI", "AD", "MCI"],
        }
    )
    assert pick_panel_subjects(split) == ["c1", "m1", "a1"]
    assert pick_panel_subjects(split, n_subjects=5) == ["c1", "m1", "a1", "c2", "a2"]
    assert pick_panel_subjects(split, ["a2", "c2"], n_subjects=3) == ["c2", "a2"]
    with pytest.raises(ValueError, match="no 'test' subject"):
        pick_panel_subjects(split, ["t1"])
    with pytest.raises(ValueError, match="'group'"):
        pick_panel_subjects(split.drop(columns="group"))


def test_fusion_panel_from_tables(tmp_path) -> None:
    rows, idx = [], {"average": [], "dcfb3d": []}
    for i, group in enumerate(["CN", "AD"]):
        sid = f"sub-{i}_ses-M000"
        paths = {
            k: str(save_nifti(volume(10 * i + j), np.eye(4), tmp_path / f"{sid}_{k}.nii.gz"))
            for j, k in enumerate(["mri", "pet", "average", "dcfb3d"])
        }
        rows.append(
            {
                "subject_id": sid,
                "split": "test",
                "group": group,
                "model_mri": paths["mri"],
                "model_pet": paths["pet"],
            }
        )
        for m in idx:
            idx[m].append({"subject_id": sid, "fused_path": paths[m]})
    indexes = {m: write_tsv(pd.DataFrame(v), tmp_path / m / "index.tsv") for m, v in idx.items()}
    out = [tmp_path / "fig" / "panel.png", tmp_path / "fig" / "panel.pdf"]
    paths = fusion_panel_from_tables(pd.DataFrame(rows), indexes, *out, n_subjects=3)
    assert_figure_files(paths, tmp_path / "fig" / "panel")
    bad = {"average": pd.DataFrame({"subject_id": ["x"]})}
    with pytest.raises(ValueError, match="average index: missing column 'fused_path'"):
        fusion_panel_from_tables(pd.DataFrame(rows), bad, tmp_path / "x.png")


def test_fusion_panel_shares_one_window_for_every_fused_image() -> None:
    from fusion3d.report.figures import PET_UNITS, fusion_panel_figure, shared_window

    bright = volume(1)
    subjects = [
        {
            "subject_id": f"s{i}",
            "mri": volume(i),
            "pet": volume(10 + i),
            "fused": {"average": bright, "pca": 0.5 * bright},  # pca: a darker fusion
            "affine": np.diag([2.0, 2.0, 2.0, 1.0]),
        }
        for i in range(2)
    ]
    fig = fusion_panel_figure(subjects)
    ncols = 4
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 6 * ncols
    fused = [im for k, im in enumerate(images) if k % ncols >= 2]
    window = shared_window([bright, 0.5 * bright] * 2)
    assert all(im.get_clim() == pytest.approx(window) for im in fused)
    # the darker fusion stays darker: its pixels sit lower in the one window
    avg, pca = (np.mean([im.get_array().mean() for im in fused[c::2]]) for c in (0, 1))
    assert pca == pytest.approx(0.5 * avg, rel=1e-5)
    pets = {im.get_clim() for k, im in enumerate(images) if k % ncols == 1}
    assert len(pets) == 1  # one PET window, so its colour bar holds for every row
    labels = [ax.get_xlabel() for ax in fig.axes if not ax.images]
    assert PET_UNITS in labels
    assert any(f"[{window[0]:.2f}, {window[1]:.2f}]" in label for label in labels)
    # slice positions in mm from the affine (centre voxel 5, 6, 4 at 2 mm)
    ylabels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert "axial\nz = +8.0 mm" in ylabels and "sagittal\nx = +10.0 mm" in ylabels
    assert any("coronal\ny = +12.0 mm" in y for y in ylabels)


def test_slice_positions_without_an_affine() -> None:
    from fusion3d.report.figures import slice_positions

    assert slice_positions((10, 12, 8), None)["axial"] == "slice 4 / 8"
    moved = np.eye(4)
    moved[:3, 3] = [-5.0, 0.0, 2.5]
    assert slice_positions((10, 12, 8), moved) == {
        "axial": "z = +6.5 mm",
        "coronal": "y = +6.0 mm",
        "sagittal": "x = +0.0 mm",
    }


def test_metric_boxes_state_units_and_n() -> None:
    from fusion3d.report.figures import metric_boxes_figure

    long = long_table(["dcfb3d", "average"], ["psnr", "ssim", "mi"], n=4)
    fig = metric_boxes_figure(long)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in visible] == ["PSNR (dB)", "SSIM (unitless)", "MI (nats)"]
    ticks = [t.get_text() for t in visible[0].get_xticklabels()]
    assert all(t.endswith("(n=4)") for t in ticks) and len(ticks) == 2
    assert "4 subjects" in fig.get_suptitle()
