"""``fusion3d fuse`` and ``fusion3d import-weights`` as users meet them (issue 36).

One test per point of the issue: the network recognised from the keys, a published
state_dict given to ``fuse``, ``fuse --set`` for networks, MATR's non-square switch at fuse
time, unknown and old-spelled keys, the help and ``fusion3d methods``, and the 8-bit PNG
rule of each published script; then every bad argument of both commands: exit code 2 and
one line on stderr, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fusion3d.apply import PNG_RULES, describe_methods, read_png, to_uint8
from fusion3d.cli import main
from fusion3d.learned.inference import load_model
from fusion3d.learned.recipes import recipe_for
from fusion3d.methods import METHODS

torch.set_num_threads(1)

SIZES = {
    "matr": {},
    "dilran": {"channels": 8, "recon_channels": [8, 4]},
    "swinfuse": {"img_size": 32, "window_size": 8, "embed_dim": 8, "num_heads": [1, 1, 2]},
}
LABELS = {"matr": "MATR", "dilran": "DILRAN", "swinfuse": "SwinFuse"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Published-named state_dicts of the three 2D networks, our checkpoints of them, PNGs."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    for method, sizes in SIZES.items():
        net = recipe_for(method).build_model(sizes).eval()
        torch.save(net.state_dict(), root / f"{method}.pth")
        sets = [a for k, v in sizes.items() for a in ("--set", f"{k}={json.dumps(v)}")]
        assert (
            main(["import-weights", str(root / f"{method}.pth"), str(root / f"{method}.pt"), *sets])
            == 0
        )
    rng = np.random.default_rng(0)
    for name, shape in (
        ("mri", (32, 32)),
        ("pet", (32, 32)),
        ("mri_wide", (32, 48)),
        ("pet_wide", (32, 48)),
    ):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode="L").save(
            root / f"{name}.png"
        )
    return root


def _run(args, capsys):
    """``main(args)``: (exit code, stdout, stderr lines)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _raw_fuse(model, root, mri="mri", pet="pet"):
    """The network's float output on the two PNGs, unclipped (what a published script casts)."""
    m, p = read_png(root / f"{mri}.png"), read_png(root / f"{pet}.png")
    with torch.inference_mode():
        return model.fuse(torch.from_numpy(m)[None, None], torch.from_numpy(p)[None, None])[
            0, 0
        ].numpy()


# 1. import-weights recognises the network --------------------------------------------------------
@pytest.mark.parametrize("method", sorted(SIZES))
def test_import_weights_recognises_the_network(method, files, tmp_path, capsys):
    src = files / f"{method}.pth"
    ckpt = torch.load(files / f"{method}.pt", weights_only=True)  # made without --method
    assert ckpt["architecture"] == method and ckpt["variant"] == "published"
    other = "dilran" if method != "dilran" else "matr"
    code, _, err = _run(["import-weights", "--method", other, src, tmp_path / "x.pt"], capsys)
    assert code == 2 and err == [
        f"fusion3d import-weights: error: {src}: this looks like {LABELS[method]} weights: "
        f"pass --method {method}"
    ]
    torch.save({"conv.weight": torch.zeros(1, 1, 3, 3)}, tmp_path / "other.pth")
    code, _, err = _run(["import-weights", tmp_path / "other.pth", tmp_path / "x.pt"], capsys)
    assert code == 2 and len(err) == 1 and "match no published network" in err[0]
    assert "--method" in err[0]


# 2. fuse given a published state_dict ---------------------------------------------------------------
def test_fuse_given_a_published_state_dict_prints_the_import_command(files, capsys):
    src = files / "matr.pth"
    args = ["fuse", "--method", "matr", "--weights", src, files / "mri.png", files / "pet.png"]
    code, _, err = _run([*args, files / "out.png"], capsys)
    assert code == 2 and err == [
        f"fusion3d fuse: error: {src}: a state_dict saved by the published MATR code, not a "
        f"fusion3d checkpoint; convert it first: fusion3d import-weights --method matr {src} "
        f"{files / 'matr-fusion3d.pt'}"
    ]


# 3. fuse --set applies a network's inference-time keys, and checks every key -------------------------
def test_fuse_set_applies_inference_keys_and_refuses_others(files, tmp_path, capsys):
    base = ["fuse", "--method", "dilran", "--weights", files / "dilran.pt"]
    pngs = [files / "mri.png", files / "pet.png"]
    assert _run([*base, *pngs, tmp_path / "a.png"], capsys)[0] == 0
    code, *_ = _run([*base, "--set", "inference_norm=running", *pngs, tmp_path / "b.png"], capsys)
    assert code == 0
    running = load_model(files / "dilran.pt", overrides={"inference_norm": "running"})
    expected = to_uint8(_raw_fuse(running, files), PNG_RULES["dilran"])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), expected)
    assert not np.array_equal(
        np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    )
    code, _, err = _run([*base, "--set", "no_such_key=1", *pngs, tmp_path / "c.png"], capsys)
    assert code == 2 and err == [
        "fusion3d fuse: error: --set for DILRAN: unknown key(s) ['no_such_key']; known: "
        "inference_norm, quantize_input"
    ]
    assert not (tmp_path / "c.png").exists()
    code, _, err = _run([*base, "--set", "channels=4", *pngs, tmp_path / "c.png"], capsys)
    assert code == 2 and len(err) == 1 and "--set channels is fixed by the checkpoint" in err[0]


# 4. MATR's non-square switch works at fuse time ------------------------------------------------------
def test_matr_non_square_slices_with_fuse_set(files, tmp_path, capsys):
    args = ["fuse", "--method", "matr", "--weights", files / "matr.pt"]
    pngs = [files / "mri_wide.png", files / "pet_wide.png"]
    code, _, err = _run([*args, *pngs, tmp_path / "f.png"], capsys)
    assert code == 2 and len(err) == 1
    assert "fusion3d fuse --set allow_non_square=true" in err[0]
    code, *_ = _run([*args, "--set", "allow_non_square=true", *pngs, tmp_path / "f.png"], capsys)
    assert code == 0
    model = load_model(files / "matr.pt", overrides={"allow_non_square": True})
    expected = to_uint8(_raw_fuse(model, files, "mri_wide", "pet_wide"), "truncate-wrap")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "f.png")), expected)


# 5. unknown keys and the old spelling, in both commands ----------------------------------------------
@pytest.mark.parametrize("method", sorted(SIZES))
def test_unknown_and_old_spelled_keys_are_refused_cleanly(method, files, tmp_path, capsys):
    src = files / f"{method}.pth"
    code, _, err = _run(["import-weights", src, tmp_path / "x.pt", "--set", "bogus=1"], capsys)
    assert code == 2 and len(err) == 1
    assert f"{LABELS[method]}: unknown key(s) ['bogus']; known: " in err[0]
    assert "quantize_input" in err[0] and not (tmp_path / "x.pt").exists()
    code, _, err = _run(
        ["import-weights", src, tmp_path / "x.pt", "--set", "quantise_input=false"], capsys
    )
    assert code == 2 and err == [
        f"fusion3d import-weights: error: {LABELS[method]}: 'quantise_input' is now spelled "
        "'quantize_input'"
    ]


def test_swinfuse_spells_quantize_and_reads_old_checkpoints(files, tmp_path):
    from fusion3d.learned.models.swinfuse import SwinFuse

    args = load_model(files / "swinfuse.pt").init_args
    assert "quantize_input" in args and "quantize_output" in args
    assert not any("quantise" in k for k in args)
    with pytest.raises(TypeError):
        SwinFuse(**SIZES["swinfuse"], quantise_input=False)
    ckpt = torch.load(files / "swinfuse.pt", weights_only=True)
    ckpt["init_args"] = {k.replace("quantize", "quantise"): v for k, v in args.items()}
    ckpt["method"] = ckpt.pop("architecture")  # a checkpoint written before both renames
    torch.save(ckpt, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").init_args == args
    with pytest.raises(ValueError, match="'quantise_output' is now spelled 'quantize_output'"):
        recipe_for("swinfuse").build_model({**SIZES["swinfuse"], "quantise_output": False})


# 6. the help and fusion3d methods -------------------------------------------------------------------
def test_help_points_to_fusion3d_methods_and_methods_lists_every_key(capsys):
    assert main(["import-weights", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "fusion3d methods" in text and "default: recognised from the state_dict's keys" in text
    assert "--num-heads" not in text and "--embed-dim" not in text
    assert main(["fuse", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "fusion3d methods" in text and "--clamp-round" in text
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for m in METHODS:
        assert f"{m.name}: {m.label} ({m.kind}, {m.dims})" in out
    assert "fuse --set keys: levels=4, sigma=1.0" in out  # laplacian
    assert "fuse --set keys (inference): allow_non_square=false, quantize_input=true" in out
    assert "    img_size = 120" in out  # MATR's model keys with defaults
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads(json.dumps(describe_methods()))
    by = {r["name"]: r for r in rows}
    assert by["dilran"]["fuse_keys"] == {"inference_norm": "slice", "quantize_input": True}
    assert by["dcfb3d"]["import_as"] == "dc2fusion" and by["dcfb3d"]["fuse_keys"] == {}
    assert by["wavelet"]["fuse_keys"] == {"wavelet": "db2", "level": 3, "mode": "symmetric"}


# 7. 8-bit PNG output as each published script writes it ----------------------------------------------
VALUES = np.array([-0.01, -0.001, 0.0, 0.002, 0.4999, 0.5, 0.5021, 0.998, 1.0, 1.003], np.float32)


@pytest.mark.parametrize(
    "method, expected",
    [
        # Test.py:67-68 (d * 255).astype(np.uint8): truncated toward zero, wrapped mod 256
        ("matr", [254, 0, 0, 0, 127, 127, 128, 254, 255, 255]),
        # inference.py: clamp(0, 1), then (final * 255).astype(np.uint8)
        ("dilran", [0, 0, 0, 0, 127, 127, 128, 254, 255, 255]),
        ("swinfuse", [0, 0, 0, 0, 127, 127, 128, 254, 255, 255]),
        # no published 2D writer: round(255 clip(F, 0, 1))
        ("dcfb2d", [0, 0, 0, 1, 127, 128, 128, 254, 255, 255]),
    ],
)
def test_each_methods_png_follows_its_published_rule(method, expected):
    got = to_uint8(VALUES, PNG_RULES[method])
    np.testing.assert_array_equal(got, np.array(expected, np.uint8))
    if method == "matr":  # numpy's own cast on this machine, where it wraps (x86-64)
        assert to_uint8(np.float32([-0.01]), "truncate-wrap")[0] == 254
        np.testing.assert_array_equal(got[2:], (VALUES[2:] * 255).astype(np.uint8))
    np.testing.assert_array_equal(
        to_uint8(VALUES, "clamp-round"), np.round(np.clip(VALUES, 0, 1) * 255).astype(np.uint8)
    )


@pytest.mark.parametrize("method", sorted(SIZES))
def test_fuse_writes_the_published_png_and_clamp_round_on_request(method, files, tmp_path, capsys):
    args = [
        "fuse",
        "--method",
        method,
        "--weights",
        files / f"{method}.pt",
        files / "mri.png",
        files / "pet.png",
    ]
    assert _run([*args, tmp_path / "pub.png"], capsys)[0] == 0
    assert _run([*args, "--clamp-round", tmp_path / "round.png"], capsys)[0] == 0
    raw = _raw_fuse(load_model(files / f"{method}.pt"), files)
    published = np.asarray(Image.open(tmp_path / "pub.png"))
    np.testing.assert_array_equal(published, to_uint8(raw, PNG_RULES[method]))
    rounded = np.asarray(Image.open(tmp_path / "round.png"))
    np.testing.assert_array_equal(rounded, np.round(np.clip(raw, 0, 1) * 255).astype(np.uint8))


# every bad argument: exit code 2, one line, no traceback --------------------------------------------
def _bad_arguments(root, tmp):
    pth, pt, mri, pet = root / "matr.pth", root / "matr.pt", root / "mri.png", root / "pet.png"
    out = tmp / "o.png"
    fuse = ["fuse", "--method", "matr", "--weights"]
    return {
        "import: no arguments": ["import-weights"],
        "import: unknown --method": ["import-weights", "--method", "nope", pth, tmp / "x.pt"],
        "import: wrong --method": ["import-weights", "--method", "dilran", pth, tmp / "x.pt"],
        "import: missing file": ["import-weights", tmp / "gone.pth", tmp / "x.pt"],
        "import: not a state_dict": ["import-weights", mri, tmp / "x.pt"],
        "import: unknown key": ["import-weights", pth, tmp / "x.pt", "--set", "bogus=1"],
        "import: old spelling": ["import-weights", pth, tmp / "x.pt", "--set", "quantise_input=1"],
        "import: size against the weights": [
            "import-weights",
            pth,
            tmp / "x.pt",
            "--set",
            "depth=2",
        ],
        "import: bad value type": [
            "import-weights",
            root / "swinfuse.pth",
            tmp / "x.pt",
            "--set",
            'embed_dim="x"',
        ],
        "import: --set without =": ["import-weights", pth, tmp / "x.pt", "--set", "depth"],
        "import: old size flag": ["import-weights", pth, tmp / "x.pt", "--num-heads", "3"],
        "fuse: missing arguments": ["fuse", "--method", "matr", mri],
        "fuse: unknown method": ["fuse", "--method", "nope", mri, pet, out],
        "fuse: no weights": ["fuse", "--method", "matr", mri, pet, out],
        "fuse: published state_dict": [*fuse, pth, mri, pet, out],
        "fuse: checkpoint of another network": [
            "fuse",
            "--method",
            "dilran",
            "--weights",
            pt,
            mri,
            pet,
            out,
        ],
        "fuse: unknown key": [*fuse, pt, "--set", "bogus=1", mri, pet, out],
        "fuse: old spelling": [*fuse, pt, "--set", "quantise_input=false", mri, pet, out],
        "fuse: fixed size": [*fuse, pt, "--set", "depth=2", mri, pet, out],
        "fuse: bad value": [*fuse, pt, "--set", 'allow_non_square="maybe"', mri, pet, out],
        "fuse: classic unknown key": [
            "fuse",
            "--method",
            "pca",
            "--set",
            "x=1",
            tmp / "a.nii.gz",
            tmp / "a.nii.gz",
            tmp / "o.nii.gz",
        ],
        "fuse: non-square MATR": [*fuse, pt, root / "mri_wide.png", root / "pet_wide.png", out],
        "fuse: missing image": [*fuse, pt, tmp / "gone.png", pet, out],
        "fuse: PNG with a 3D method": ["fuse", "--method", "pca", mri, pet, out],
        "fuse: missing checkpoint": [*fuse, tmp / "gone.pt", mri, pet, out],
    }


def test_every_bad_argument_exits_2_with_one_line(files, tmp_path, capsys):
    import nibabel as nib

    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)), np.eye(4)),
        tmp_path / "a.nii.gz",
    )
    for name, args in _bad_arguments(files, tmp_path).items():
        code, out, err = _run(args, capsys)
        assert code == 2, (name, code, err)
        assert len(err) == 1 and err[0].startswith("fusion3d"), (name, err)
        assert "Traceback" not in err[0], name
        print(f"{name}: {err[0]}", file=sys.__stdout__)


def test_a_bad_argument_in_a_real_process_prints_one_line(files, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "fusion3d.cli",
        "fuse",
        "--method",
        "matr",
        "--weights",
        str(files / "matr.pt"),
        "--set",
        "bogus=1",
        str(files / "mri.png"),
        str(files / "pet.png"),
        str(tmp_path / "o.png"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "fusion3d fuse: error: --set for MATR: unknown key(s) ['bogus']; known: allow_non_square, quantize_input"
    ]
