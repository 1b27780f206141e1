"""Forward agreement of :class:`fusion3d.learned.models.dilran.DILRAN` with the published code.

The published DILRAN (simonZhou86/dilran: ``model_v5.py``, ``our_utils.fusion_strategy``
and, with ``--loss``, ``loss.loss_func2``) runs UNMODIFIED in a separate Python
environment (nothing of it is imported into this interpreter), on the same weights and
inputs as our port, and this script prints the largest relative difference
``max |ours - published| / max |published|`` of each output::

    python3.11 -m venv /tmp/dilran_ref && /tmp/dilran_ref/bin/pip install torch==2.13.0
    /tmp/dilran_ref/bin/pip install numpy==2.3.5 scikit-image torchmetrics "torchvision<0.29"
    mkdir -p /tmp/dilran_pub && git -C dilran archive HEAD | tar -x -C /tmp/dilran_pub
    .venv/bin/python benchmarks/bench_agreement_dilran.py --published-dir /tmp/dilran_pub \\
        --reference-python /tmp/dilran_ref/bin/python [--loss]

Without ``--reference-python`` the environment is built in a temporary folder (pip,
torch 2.13.0 first). Weights: "random" (a seeded ``model_v5.fullModel()`` with its
BatchNorm affine parameters and running statistics also drawn at random, exported by the
reference and loaded here with :func:`convert_published_state_dict`) and "shipped"
(``pretrained/last.pt`` of the checkout). Inputs: two axial slices of nilearn's bundled
MNI152 T1 (cropped to the head, resized) and a pseudo-PET (the bundled grey-matter map plus
0.3 x the white-matter map, 4 mm blur), at 64^2, 128^2 and the published 256^2, in float32
and float64. Outputs compared:

- ``forward``: the training forward ``model(x)`` in train mode on the batch of the four
  images (both slices of both modalities), as the published training does;
- ``fuse``: the published test path of ``inference.py`` (train-mode model, one slice at a
  time: ``model.fe`` of the CT (here the PET) and of the MRI, ``fusion_strategy(..., "SFNN")``,
  ``model.recon``) on the 8-bit inputs the published data hold (``round(255 x) / 255``
  computed by the reference in its dtype), against our ``DILRAN.fuse(mri, pet)`` given the
  unquantised slices (it quantises them itself);
- ``loss`` (``--loss``): ``loss_func2(vgg, model(x), x, 0.2, 0.2, [0, 1, 2])`` with a seeded
  random torchvision ``vgg16_bn`` against our recipe's loss given that VGG as a weights file
  (float32 only: the published Sobel kernels are float32 tensors), at 64^2.
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

from fusion3d.learned.models.dilran import DILRAN
from fusion3d.learned.models.published import convert_dilran as convert_published_state_dict

SIZES = (64, 128, 256)
DTYPES = ("float32", "float64")
AXIAL = (80, 100)  # slices of the 1 mm MNI152 template (197 x 233 x 189)

#: Run by the reference interpreter: argv = checkout, inputs .npz, work folder, "loss"|"".
REFERENCE_SCRIPT = r"""
import copy, sys, warnings
sys.dont_write_bytecode = True
warnings.simplefilter("ignore")
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from model_v5 import fullModel
from our_utils import fusion_strategy
pub, data, work, with_loss = sys.argv[1], np.load(sys.argv[2]), sys.argv[3], sys.argv[4] == "loss"
torch.manual_seed(0)
rand = fullModel()
with torch.no_grad():
    for m in rand.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2.0)
torch.save(rand.state_dict(), work + "/random.pt")
weights = {"random": rand.state_dict(),
           "shipped": torch.load(pub + "/pretrained/last.pt", map_location="cpu")}
if with_loss:
    from torchvision.models import vgg16_bn
    from loss import loss_func2
    torch.manual_seed(1)
    vgg = vgg16_bn(weights=None)
    torch.save(vgg.state_dict(), work + "/vgg16_bn_random.pt")
out = {}
for wname, state in weights.items():
    for dtype in ("float32", "float64"):
        dt = getattr(torch, dtype)
        for key in data.files:
            if not key.endswith("/mri"):
                continue
            size = key.split("/")[0]
            # the published test tensors: 8-bit PNGs / 255 (dataset_loader.py lines 83-84)
            q_mri, q_pet = (torch.round(torch.from_numpy(data[size + m]).to(dt) * 255) / 255
                            for m in ("/mri", "/pet"))
            x = torch.from_numpy(data[size + "/batch"]).to(dt)
            model = fullModel().to(dt); model.load_state_dict(state)
            tag = f"{wname}/{dtype}/{size}"
            out[tag + "/forward"] = model(x).detach().numpy()
            model = fullModel().to(dt); model.load_state_dict(state)  # inference.py: no eval()
            fused = []
            for s in range(q_mri.shape[0]):
                ct_fe = model.fe(q_pet[s].unsqueeze(0))
                mri_fe = model.fe(q_mri[s].unsqueeze(0))
                f = fusion_strategy(ct_fe, mri_fe, torch.device("cpu"), "SFNN")
                fused.append(model.recon(f).detach())
            out[tag + "/fuse"] = torch.cat(fused).numpy()
            if with_loss and size == "64" and dtype == "float32":  # loss.py: float32 kernels
                model = fullModel().to(dt); model.load_state_dict(state)
                v = copy.deepcopy(vgg).to(dt)
                terms = loss_func2(v, model(x), x, 0.2, 0.2, [0, 1, 2], torch.device("cpu"))
                out[tag + "/loss"] = np.array([float(t) for t in terms])
np.savez(work + "/ref.npz", **out)
"""


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    return ndimage.zoom(img, (size / img.shape[0], size / img.shape[1]), order=1)[:size, :size]


def make_inputs() -> dict[str, np.ndarray]:
    """Per size: ``mri``/``pet`` (2, 1, N, N) float32 slices in [0, 1] and the 4-image batch."""
    import nibabel as nib
    import nilearn

    data = Path(nilearn.__file__).parent / "datasets" / "data"
    t1 = nib.load(data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").get_fdata()
    gm = nib.load(data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").get_fdata()
    wm = nib.load(data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").get_fdata()
    pet = ndimage.gaussian_filter(gm + 0.3 * wm, 4.0 / 2.355)
    nz = np.argwhere(t1 > 0.05 * t1.max())
    x0, y0, x1, y1 = *nz.min(0)[:2], *(nz.max(0)[:2] + 1)
    side = max(x1 - x0, y1 - y0)
    out = {}
    for size in SIZES:
        pair = []
        for vol in (t1, pet):
            sl = [np.zeros((side, side)) for _ in AXIAL]
            for s, k in zip(sl, AXIAL, strict=True):
                crop = np.rot90(vol[x0:x1, y0:y1, k])
                s[: crop.shape[0], : crop.shape[1]] = crop
            arr = np.stack([_resize(s, size) for s in sl])[:, None]
            pair.append((arr - arr.min()) / (arr.max() - arr.min()))
        mri, pet_s = (a.astype(np.float32) for a in pair)
        out[f"{size}/mri"], out[f"{size}/pet"] = mri, pet_s
        out[f"{size}/batch"] = np.concatenate([mri, pet_s])
    return out


def build_reference_env(folder: Path) -> str:
    """A venv with the published code's dependencies (torch 2.13.0 first)."""
    py = folder / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    pins = folder / "constraints.txt"
    pins.write_text("torch==2.13.0\n")
    deps = ["numpy==2.3.5", "scikit-image", "torchmetrics", "torchvision<0.29"]
    subprocess.run([*pip, "-c", str(pins), *deps], check=True)
    return str(py)


def ours(inputs, weights: dict, loss_vgg: str | None) -> dict[str, np.ndarray]:
    """Our outputs, keyed as the reference's."""
    out = {}
    for wname, state in weights.items():
        init_args, sd = convert_published_state_dict(state)
        for dtype in DTYPES:
            dt = getattr(torch, dtype)
            for size in SIZES:
                tag = f"{wname}/{dtype}/{size}"
                mri, pet = (torch.from_numpy(inputs[f"{size}/{m}"]).to(dt) for m in ("mri", "pet"))
                x = torch.from_numpy(inputs[f"{size}/batch"]).to(dt)
                model = DILRAN(**init_args).to(dt)
                model.load_state_dict(sd)
                with torch.no_grad():
                    out[tag + "/forward"] = model(x).numpy()
                model.eval()  # fuse keeps the published per-slice statistics in eval mode too
                with torch.no_grad():
                    out[tag + "/fuse"] = model.fuse(mri, pet).numpy()
                if loss_vgg and size == 64 and dtype == "float32":
                    out[tag + "/loss"] = _our_loss(init_args, sd, dt, x, loss_vgg)
    return out


def _our_loss(init_args, sd, dt, x, vgg_file: str) -> np.ndarray:
    """Our recipe's loss on the 4-image batch: (total, mse, grad, percep)."""
    from fusion3d.learned.recipes.dilran import DILRAN_RECIPE

    model = DILRAN(**{**init_args, "quantize_input": False}).to(dt)
    model.load_state_dict(sd)
    cfg = {**DILRAN_RECIPE.all_defaults(), "perceptual_weights": vgg_file}
    loss_fn = DILRAN_RECIPE.build_loss(cfg, model).to(dt)
    half = x.shape[0] // 2
    total, terms = loss_fn(model, x[:half], x[half:])
    return np.array([float(total.detach()), terms["mse"], terms["grad"], terms["percep"]])


def report(ref: dict, got: dict) -> None:
    """Largest relative difference per weights / output / dtype (over the sizes)."""
    print("max |ours - published| / max |published|, over the slices of each size")
    print(f"{'weights':8s} {'output':8s} {'dtype':8s}" + "".join(f"{s:>11d}" for s in SIZES))
    for wname in ("random", "shipped"):
        for what in ("forward", "fuse", "loss"):
            for dtype in DTYPES:
                cells = []
                for size in SIZES:
                    key = f"{wname}/{dtype}/{size}/{what}"
                    if key not in ref:
                        cells.append(f"{'-':>11s}")
                        continue
                    r, g = ref[key].astype(np.float64), got[key].astype(np.float64)
                    rel = np.abs(g - r).max() / max(np.abs(r).max(), 1e-30)
                    cells.append(f"{rel:11.2e}")
                print(f"{wname:8s} {what:8s} {dtype:8s}" + "".join(cells))
    for key in sorted(k for k in ref if k.endswith("/loss")):
        print(f"{key}: published (total, mse, grad, percep) = {np.array2string(ref[key])}")


def main() -> None:
    """Parse the arguments, run both sides, print the agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published-dir", required=True, help="a checkout of simonZhou86/dilran")
    parser.add_argument("--reference-python", help="its environment's python (built if absent)")
    parser.add_argument("--loss", action="store_true", help="also compare the training loss")
    args = parser.parse_args()
    pub = Path(args.published_dir)
    for name in ("model_v5.py", "our_utils.py", "pretrained/last.pt"):
        if not (pub / name).is_file():
            sys.exit(f"--published-dir: no {name} in {pub}")
    torch.set_num_threads(1)
    inputs = make_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        python = args.reference_python or build_reference_env(Path(tmp) / "env")
        npz = Path(tmp) / "inputs.npz"
        np.savez(npz, **inputs)
        cmd = [python, "-c", REFERENCE_SCRIPT, str(pub), str(npz), tmp, "loss" if args.loss else ""]
        subprocess.run(cmd, check=True)
        ref = dict(np.load(Path(tmp) / "ref.npz"))
        load = dict(map_location="cpu", weights_only=True)
        weights = {
            "random": torch.load(Path(tmp) / "random.pt", **load),
            "shipped": torch.load(pub / "pretrained" / "last.pt", **load),
        }
        vgg = str(Path(tmp) / "vgg16_bn_random.pt") if args.loss else None
        got = ours(inputs, weights, vgg)
    report(ref, got)


if __name__ == "__main__":
    main()
