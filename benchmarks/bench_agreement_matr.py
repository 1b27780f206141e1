"""Forward agreement of our MATR port with the published MATR code (tthinking/MATR).

The published network (``Networks/net.py``, ``Networks/layers.py``) and loss
(``losses/__init__.py``) run UNMODIFIED in a separate Python environment, in a subprocess
(nothing of them is imported into this interpreter); our
:mod:`fusion3d.learned.models.matr` and :mod:`fusion3d.learned.recipes.matr` run here,
with the same weights and inputs. Printed: the largest relative difference
``max |ours - published| / max |published|`` of

- ``infer``: the published inference (Test.py: 8-bit ``'L'`` images, ``ToTensor``,
  channel 0 = PET, channel 1 = MRI, ``model.eval()``) against our ``MATR.fuse`` fed the
  [0, 1] float slices (it rounds them to 8 bits itself);
- ``train``: the training forward (Train.py: ``model.train()``, BatchNorm batch
  statistics) and the BatchNorm running statistics it leaves behind (``bn_stats``);
- ``loss`` (float32 only: the published SSIM cannot run in float64): the four weighted
  loss terms of Train.py:118-121 against our ``MATRLoss``;

in float32 and float64, for random seeded weights (the published model's own
initialisation, BatchNorm statistics and affines randomised, exported by the reference and
loaded here with ``convert_published_state_dict``) and for the shipped trained weights
``models/model_10.pth``. Inputs: two axial slices of nilearn's MNI152 T1 (levels 80 and 100
of 189) with a pseudo-PET (the grey-matter map blurred by 4 mm) at 64, 128 and 256 (the
published AANLIB size) pixels, and the authors' own sample pair
``source images/PET-MRI`` (256 x 256). Usage::

    git clone https://github.com/tthinking/MATR && git -C MATR archive HEAD | tar -x -C /tmp/matr_pub
    .venv/bin/python benchmarks/bench_agreement_matr.py --published-dir /tmp/matr_pub \\
        [--reference-python /tmp/matr_ref/bin/python]

Without ``--reference-python`` a venv is built in a temporary folder
(``pip install torch==2.13.0``, then ``torchvision==0.28.0 timm numpy pillow``; timm
imports torchvision, whose PyPI wheel needs the PyPI (CUDA) torch build rather than a
``+cpu`` one).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from fusion3d.learned.models.matr import MATR
from fusion3d.learned.models.published import convert_matr as convert_published_state_dict
from fusion3d.learned.recipes.matr import LOSS_TERMS, MATR_RECIPE, MATRLoss

SIZES = (64, 128, 256)
DTYPES = ("float32", "float64")
LEVELS = (80, 100)

#: Run by the reference interpreter: argv = published checkout, inputs .npz, outputs .npz.
REFERENCE_SCRIPT = r"""
import sys, warnings
sys.dont_write_bytecode = True
warnings.simplefilter("ignore")
import numpy as np, torch
from PIL import Image
import torchvision.transforms as transforms
sys.path.insert(0, sys.argv[1])
from Networks.net import MODEL as net
from losses import ssim_ir, ssim_vi, RMI_ir, RMI_vi
torch.set_num_threads(1)
data, out = np.load(sys.argv[2]), {}

def random_state():
    torch.manual_seed(0)
    model = net(in_channel=2)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2),
                              (m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 1.5)):
                t.data.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.state_dict()

states = {"random": random_state(),
          "shipped": torch.load(sys.argv[1] + "/models/model_10.pth", map_location="cpu")}
torch.save(states["random"], sys.argv[3] + ".random.pth")

def inputs(case, dtype):
    pet, mri = data[case + "/pet_u8"], data[case + "/mri_u8"]  # (B, H, W) uint8
    if dtype == "float32":  # Test.py / Train.py: PIL 'L' image -> ToTensor
        tran = transforms.ToTensor()
        t = lambda a: torch.stack([tran(Image.fromarray(s, "L")) for s in a])
    else:
        t = lambda a: torch.from_numpy(a).double()[:, None] / 255
    ir, vi = t(pet), t(mri)
    return torch.cat((ir, vi), 1), ir, vi

for case in data["cases"]:
    for wname, state in states.items():
        for dtype in ("float32", "float64"):
            key = f"{case}/{wname}/{dtype}"
            x, ir, vi = inputs(case, dtype)
            model = net(in_channel=2)
            model.load_state_dict(state)
            model = model.to(getattr(torch, dtype))
            model.eval()
            with torch.no_grad():
                out[key + "/infer"] = model(x).numpy()
            model.train()
            fused = model(x)
            out[key + "/train"] = fused.detach().numpy()
            for name, buf in model.named_buffers():
                if "running" in name:
                    out[key + "/bn/" + name] = buf.numpy()
            if dtype == "float32":
                w = [1, 1, 1, 2.5]  # Train.py:33, the calls of Train.py:118-121
                terms = [w[0] * ssim_ir(fused, ir), w[1] * ssim_vi(fused, vi),
                         w[2] * RMI_ir(fused, ir), w[3] * RMI_vi(fused, vi)]
                out[key + "/loss"] = np.array([float(t) for t in terms])
np.savez(sys.argv[3], **out)
"""


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Crop to the non-zero box, pad to a square, resize to ``size`` (linear), clip [0, 1]."""
    rows, cols = np.nonzero(img > 0.02 * img.max())
    img = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    n = max(img.shape)
    pad = [((n - s) // 2, n - s - (n - s) // 2) for s in img.shape]
    img = np.pad(img, pad)
    return np.clip(ndimage.zoom(img, size / n, order=1), 0.0, 1.0)


def mni_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{size: (mri, pet)}``: two axial MNI152 slices and a pseudo-PET, float in [0, 1]."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1).get_fdata().astype(np.float32)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata().astype(np.float32)
    t1, pet = t1 / t1.max(), ndimage.gaussian_filter(gm, 4.0)
    pet = 0.15 * (t1 > 0.05) + pet / pet.max()
    pet = pet / pet.max()
    cases = {}
    for size in SIZES:
        mri = np.stack([_square(t1[:, :, z].T[::-1], size) for z in LEVELS])
        pets = np.stack([_square(pet[:, :, z].T[::-1], size) for z in LEVELS])
        cases[f"mni{size}"] = (mri.astype(np.float32), pets.astype(np.float32))
    return cases


def sample_case(published_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The authors' PET-MRI sample as Test.py reads it (``convert('L')``), / 255."""
    from PIL import Image

    folder = published_dir / "source images" / "PET-MRI"
    read = [np.asarray(Image.open(folder / f).convert("L")) for f in ("MRI.bmp", "PET.bmp")]
    return tuple((a[None].astype(np.float32) / 255) for a in read)


def to_u8(x: np.ndarray) -> np.ndarray:
    """The 8-bit image the published pipeline would read: ``round(255 clip(x, 0, 1))``."""
    return np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


def reference(cases: dict, published_dir: Path, python: str, tmp: Path) -> dict:
    """Run the published code on ``cases`` in ``python``; returns its outputs."""
    arrays = {"cases": np.array(list(cases))}
    for name, (mri, pet) in cases.items():
        arrays[name + "/mri_u8"], arrays[name + "/pet_u8"] = to_u8(mri), to_u8(pet)
    np.savez(tmp / "in.npz", **arrays)
    (tmp / "ref.py").write_text(REFERENCE_SCRIPT)
    cmd = [python, str(tmp / "ref.py"), str(published_dir), str(tmp / "in.npz"), str(tmp / "out")]
    subprocess.run(cmd, check=True)
    return dict(np.load(tmp / "out.npz"))


def load_ours(state_path: Path, dtype: torch.dtype) -> MATR:
    """Our MATR with a published state_dict (``convert_published_state_dict``)."""
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    init_args, ours = convert_published_state_dict(state)
    model = MATR(**init_args)
    model.load_state_dict(ours, strict=True)
    return model.to(dtype)


def ours_case(model: MATR, mri: np.ndarray, pet: np.ndarray, want_loss: bool) -> dict:
    """Our inference, training forward (through MATRLoss), BN statistics and loss terms."""
    dtype = next(model.parameters()).dtype
    m, p = (torch.from_numpy(a)[:, None].to(dtype) for a in (mri, pet))
    res = {}
    with torch.no_grad():
        res["infer"] = model.fuse(m, p).numpy()
    model.train()
    seen = {}

    def fwd(a, b):
        seen["out"] = model(a, b)
        return seen["out"]

    loss_fn = MATRLoss(MATR_RECIPE.defaults["loss_weights"], model.quantize_input)
    if want_loss:
        _, terms = loss_fn(fwd, m, p)
        res["loss"] = np.array([terms[k] for k in LOSS_TERMS])
    else:  # what MATRLoss does before the forward pass: the 8-bit rounding
        fwd(model.prepare(m), model.prepare(p))
    res["train"] = seen["out"].detach().numpy()
    res["bn"] = {n: b.numpy() for n, b in model.named_buffers() if "running" in n}
    return res


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max |b|``."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-300))


def compare(cases: dict, ref: dict, states: dict[str, Path]) -> list[tuple]:
    """Rows ``(case, weights, dtype, infer, train, bn_stats, loss)`` of relative differences."""
    rows = []
    for case, (mri, pet) in cases.items():
        for wname, path in states.items():
            for dtype in DTYPES:
                key = f"{case}/{wname}/{dtype}"
                model = load_ours(path, getattr(torch, dtype))
                got = ours_case(model, mri, pet, want_loss=dtype == "float32")
                bn = max(rel(v, ref[f"{key}/bn/{n}"]) for n, v in got["bn"].items())
                loss = rel(got["loss"], ref[key + "/loss"]) if "loss" in got else float("nan")
                rows.append(
                    (
                        case,
                        wname,
                        dtype,
                        rel(got["infer"], ref[key + "/infer"]),
                        rel(got["train"], ref[key + "/train"]),
                        bn,
                        loss,
                    )
                )
    return rows


def controls(cases: dict, ref: dict, shipped: Path) -> dict[str, float]:
    """Deliberate mistakes, to show that the comparison sees them (mni128, shipped, f32)."""
    mri, pet = (torch.from_numpy(a)[:, None] for a in cases["mni128"])
    want = ref["mni128/shipped/float32/infer"]
    model = load_ours(shipped, torch.float32)
    raw = load_ours(shipped, torch.float32)
    raw.quantize_input = False
    with torch.no_grad():
        return {
            "MRI and PET channels swapped": rel(model.fuse(pet, mri).numpy(), want),
            "no 8-bit rounding of the inputs": rel(raw.fuse(mri, pet).numpy(), want),
        }


def build_reference_venv(folder: Path) -> str:
    """A venv with the published code's dependencies; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "torchvision==0.28.0", "timm", "numpy", "pillow"], check=True)
    python = str(folder / "bin" / "python")
    check = subprocess.run([python, "-c", "import timm, torchvision"], capture_output=True)
    if check.returncode:
        raise SystemExit(
            f"{folder}: timm/torchvision do not import ({check.stderr.decode()[-300:]}); "
            f"torchvision's PyPI wheel needs the PyPI torch build (not +cpu): build a venv "
            f"with PIP_CONFIG_FILE=/dev/null and pass --reference-python"
        )
    return python


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--published-dir", type=Path, required=True, help="MATR checkout")
    ap.add_argument("--reference-python", help="python of a venv with torch, timm, pillow")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = mni_cases()
    cases["sample256"] = sample_case(args.published_dir)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        python = args.reference_python or build_reference_venv(tmp / "venv")
        ref = reference(cases, args.published_dir, python, tmp)
        states = {
            "random": tmp / "out.random.pth",
            "shipped": args.published_dir / "models/model_10.pth",
        }
        rows = compare(cases, ref, states)
        control = controls(cases, ref, states["shipped"])
    print("max |ours - published| / max |published|  (loss: float32 only)")
    print(
        f"{'case':10} {'weights':8} {'dtype':8} {'infer':>9} {'train':>9} {'bn_stats':>9} {'loss':>9}"
    )
    for case, w, dt, *vals in rows:
        print(f"{case:10} {w:8} {dt:8} " + " ".join(f"{v:9.2e}" for v in vals))
    for dt in DTYPES:
        worst = [max(r[3:6]) for r in rows if r[2] == dt]
        print(f"largest {dt}: forward/inference {max(worst):.2e}")
    losses = [r[6] for r in rows if r[2] == "float32"]
    print(f"largest float32 loss-term difference: {max(losses):.2e}")
    for name, value in control.items():
        print(f"control (must not agree), {name}: infer {value:.2e}")


if __name__ == "__main__":
    main()
