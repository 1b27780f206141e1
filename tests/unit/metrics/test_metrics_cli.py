"""Tests of the ``metrics`` command line (NIfTI and PNG inputs, errors)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy import ndimage
from skimage import io as skio

from fusion3d.io import save_nifti
from fusion3d.metrics import compute_metrics
from fusion3d.metrics.cli import load_image, main, register


@pytest.fixture(scope="module")
def volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    mri = ndimage.gaussian_filter(rng.random((24, 26, 12)), 1.5)
    mri = (mri - mri.min()) / (mri.max() - mri.min())
    mri[:3] = 0.0
    pet = ndimage.gaussian_filter(mri, 2.0)
    fused = 0.5 * (mri + pet)
    return fused.astype(np.float32), mri.astype(np.float32), pet.astype(np.float32)


def test_nifti_volume_protocol(tmp_path, volumes, capsys):
    paths = []
    for name, vol in zip(("f", "m", "p"), volumes, strict=True):
        paths.append(str(save_nifti(vol, np.eye(4), tmp_path / f"{name}.nii.gz")))
    mask = volumes[1] > 0.2
    save_nifti(mask.astype(np.uint8), np.eye(4), tmp_path / "mask.nii.gz")
    argv = ["metrics", *paths, "--protocol", "volume", "--mask", str(tmp_path / "mask.nii.gz")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = compute_metrics(*volumes, protocol="volume", mask=mask)
    assert printed == pytest.approx(expected, rel=1e-6)
    assert main(argv[1:]) == 0  # the sub-command word is optional
    assert json.loads(capsys.readouterr().out) == printed


def test_png_inputs_are_scaled_to_unit_range(tmp_path, volumes, capsys):
    slices = [np.round(v[..., 6] * 255).astype(np.uint8) for v in volumes]
    paths = []
    for name, sl in zip(("f", "m", "p"), slices, strict=True):
        skio.imsave(tmp_path / f"{name}.png", sl, check_contrast=False)
        paths.append(str(tmp_path / f"{name}.png"))
    assert load_image(paths[0]) == pytest.approx(slices[0] / 255.0)
    assert main([*paths, "--protocol", "paper"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = compute_metrics(*(s / 255.0 for s in slices), protocol="paper")
    assert printed == pytest.approx(expected, rel=1e-9)


def test_errors_are_reported(tmp_path, volumes, capsys):
    path = str(save_nifti(volumes[0], np.eye(4), tmp_path / "f.nii.gz"))
    missing = str(tmp_path / "missing.nii.gz")
    assert main([path, missing, path, "--protocol", "paper"]) == 2
    assert "missing.nii.gz: file not found" in capsys.readouterr().err
    other = str(save_nifti(volumes[0][:-1], np.eye(4), tmp_path / "g.nii.gz"))
    assert main([path, other, path, "--protocol", "volume"]) == 2
    assert "shape mismatch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([path, path, path, "--protocol", "bogus"])


def test_register_adds_subcommand():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["metrics", "a", "b", "c", "--protocol", "suite2d"])
    assert (args.fused, args.mri, args.pet, args.protocol, args.mask) == (
        "a",
        "b",
        "c",
        "suite2d",
        None,
    )
    assert callable(args.func)
