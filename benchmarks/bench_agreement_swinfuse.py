"""Forward agreement of :mod:`fusion3d.learned.models.swinfuse` with the published SwinFuse code.

The published network (``net.py``, ``fusion_strategy.py``, ``utils.py`` of
Zhishe-Wang/SwinFuse), unmodified, runs in a separate Python environment: nothing of it
is imported into this interpreter. The reference builds ``SwinFuse`` with seeded random
weights (the repository ships no trained weights), exports its ``state_dict``, which our
module loads with ``convert_published_state_dict``, and both sides run on the same slices
(an axial slice of nilearn's MNI152 T1 and a blurred grey-matter-like pseudo-PET)::

    git clone https://github.com/Zhishe-Wang/SwinFuse && git -C SwinFuse archive HEAD | tar -x -C /tmp/swinfuse_pub
    .venv/bin/python benchmarks/bench_agreement_swinfuse.py --published-dir /tmp/swinfuse_pub \\
        [--reference-python /tmp/swinfuse_ref/bin/python]

Without ``--reference-python`` the environment is built in ``--venv`` (default
``/tmp/swinfuse_ref``): ``torch==2.13.0``, then einops, imageio, matplotlib, scipy, pillow
and ``timm`` without its dependencies. Two shims, set up by the reference script before
the published modules are imported, neither touching them: (1) ``utils.py`` imports
``imread, imsave, imresize`` from ``scipy.misc`` (removed in SciPy 1.2/1.3); ``imread`` is
given SciPy 1.1's behaviour (``PIL.Image.open(path).convert(mode)`` as an array), the other
two raise if called (inference does not call them). (2) ``import timm`` needs torchvision,
whose PyPI wheels are CUDA builds that do not load against the CPU torch, so the three
names ``net.py`` imports (``DropPath``, ``to_2tuple``, ``trunc_normal_``) are loaded from
timm's own source files (``timm/layers/drop.py``, ``helpers.py``, ``weight_init.py``).

Rows (largest relative difference ``max |ours - ref| / max |ref|``, float32 and float64):

- ``forward``: the training forward (``finaldecoder``, eval mode) on the two slices on
  the [-1, 1] scale; ``forward-train`` the same in training mode under the same seed
  (stochastic depth drawn alike);
- ``fused``: the inference path of ``test.py`` (8-bit sources, ``get_image``, zero padding
  to 224 and 224 tiles, ``encoder``, ``fusion(.., 'l1_mean')``, ``up_x4``, ``/2 + 0.5``),
  before the output stretch (ours: ``output_stretch=False, quantize_output=False``);
  ``stretched``: after the per-image min-max stretch of ``save_image_test``; ``png``: the
  8-bit image ``save_image_test`` writes vs our default ``fuse`` output times 255 (the
  largest difference in grey levels and the share of differing pixels);
- ``loss-pixel``, ``loss-ssim``: the two terms of ``train.py:88-98`` (``L1Loss / n`` and
  ``(1 - pytorch_msssim.msssim(out, x, normalize=True)) / n``) on the forward's output,
  float32 only (the published MS-SSIM builds a float32 window).

Sizes: the published model (``img_size=224, window_size=7``) at 64, 128, 224 (one padded
tile; the published ``get_test_images`` has no branch for these) and 256 (the published
four-tile branch, ``get_img_parts1``); and models built at our grid sizes
(``img_size=64`` / ``128``, ``window_size=8``), which need no padding.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from fusion3d.learned.models.published import convert_swinfuse as convert_published_state_dict
from fusion3d.learned.models.swinfuse import SwinFuse
from fusion3d.learned.recipes.swinfuse import msssim

SEED = 0
TRAIN_SEED = 123
#: (model img_size, window_size) -> slice sizes fused with it.
MODELS = {(224, 7): (64, 128, 224, 256), (64, 8): (64,), (128, 8): (128,)}

#: Run by the reference interpreter: argv = published checkout, input .npz, output dir.
REFERENCE_SCRIPT = r"""
import importlib.util, json, os, sys, types, warnings
sys.dont_write_bytecode = True
warnings.simplefilter("ignore")
os.environ.setdefault("MPLBACKEND", "Agg")
import numpy as np, torch
from PIL import Image

def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

# shim 1: scipy.misc.imread as in SciPy 1.1; imsave / imresize unavailable
def _imread(name, flatten=False, mode=None):
    im = Image.open(name)
    return np.array(im.convert(mode) if mode else im)
def _gone(*a, **k):
    raise RuntimeError("scipy.misc.imsave/imresize are not available in the reference")
misc = types.ModuleType("scipy.misc")
misc.imread, misc.imsave, misc.imresize = _imread, _gone, _gone
import scipy
scipy.misc = misc
sys.modules["scipy.misc"] = misc
# shim 2: timm's three layers from its own files (import timm needs torchvision)
layers = os.path.join(os.path.dirname(importlib.util.find_spec("timm").origin), "layers")
shim = types.ModuleType("timm.models.layers")
shim.DropPath = _load("timm_drop", os.path.join(layers, "drop.py")).DropPath
shim.to_2tuple = _load("timm_helpers", os.path.join(layers, "helpers.py")).to_2tuple
shim.trunc_normal_ = _load("timm_init", os.path.join(layers, "weight_init.py")).trunc_normal_
for name in ("timm", "timm.models"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["timm.models.layers"] = shim

sys.path.insert(0, sys.argv[1])
os.chdir(sys.argv[1])
import utils
import pytorch_msssim
from net import SwinFuse

data = np.load(sys.argv[2])
out_dir = sys.argv[3]
spec = json.loads(str(data["spec"]))
torch.set_num_threads(1)
results = {}

def infer(model, ir_png, vi_png, dtype, tile):
    # test.py:28-80 with the padding of utils.get_img_parts* generalised to every size
    img_ir = utils.get_image(ir_png, None, None)
    h, w = img_ir.shape
    if dtype == torch.float32 and tile == 224 and 224 < h < 448 and 224 < w < 448:
        ir_tiles, h, w, c = utils.get_test_images(ir_png)
        vi_tiles, h, w, c = utils.get_test_images(vi_png)
    else:
        def parts(path):
            image = torch.from_numpy(utils.get_image(path, None, None))
            nh, nw = -(-h // tile), -(-w // tile)
            image = torch.nn.ConstantPad2d((0, nw * tile - w, 0, nh * tile - h), 0)(image)
            return [image[i*tile:(i+1)*tile, j*tile:(j+1)*tile].reshape(1, 1, tile, tile)
                    for i in range(nh) for j in range(nw)]
        ir_tiles, vi_tiles = parts(ir_png), parts(vi_png)
    nw = -(-w // tile)
    full = torch.zeros(1, -(-h // tile) * tile, nw * tile, dtype=dtype)
    for k, (ir, vi) in enumerate(zip(ir_tiles, vi_tiles)):
        tir3 = model.encoder(ir.to(dtype))
        tvi3 = model.encoder(vi.to(dtype))
        f = model.fusion(tir3, tvi3, "l1_mean")
        img_fusion = ((model.up_x4(f) / 2) + 0.5) * 255
        i, j = divmod(k, nw)
        full[:, i*tile:(i+1)*tile, j*tile:(j+1)*tile] = img_fusion[0]
    return full[:, :h, :w]

for key, (img_size, ws) in spec["models"].items():
    torch.manual_seed(int(spec["seed"]))
    model = SwinFuse(in_chans=1, out_chans=1, img_size=img_size, window_size=ws)
    torch.save(model.state_dict(), os.path.join(out_dir, f"{key}.pt"))
    for dtype in (torch.float32, torch.float64):
        dn = str(dtype).split(".")[1]
        m = model.to(dtype).eval()
        x = torch.from_numpy(data[f"{key}/forward"]).to(dtype)
        with torch.no_grad():
            results[f"{key}/forward/{dn}"] = m.finaldecoder(x).numpy()
            m.train()
            torch.manual_seed(int(spec["train_seed"]))
            results[f"{key}/forward-train/{dn}"] = m.finaldecoder(x).numpy()
            m.eval()
            if dtype == torch.float32:  # train.py:88-98 (its msssim is float32 only)
                out = m.finaldecoder(x)
                n = len(out)
                pixel = torch.nn.L1Loss()(out, x) / n
                ssim = (1 - pytorch_msssim.msssim(out, x, normalize=True)) / n
                results[f"{key}/loss-pixel/{dn}"] = pixel.numpy()
                results[f"{key}/loss-ssim/{dn}"] = ssim.numpy()
            for size in spec["sizes"][key]:
                ir_png = os.path.join(out_dir, f"pet{size}.png")
                vi_png = os.path.join(out_dir, f"mri{size}.png")
                for src, png in (("pet", ir_png), ("mri", vi_png)):
                    Image.fromarray(data[f"{src}{size}"]).save(png)
                fused = infer(m, ir_png, vi_png, dtype, img_size)
                a = fused[0].numpy()
                results[f"{key}/fused{size}/{dn}"] = a / 255
                results[f"{key}/stretched{size}/{dn}"] = (a - a.min()) / (a.max() - a.min())
                if dtype == torch.float32:
                    png = os.path.join(out_dir, f"out{size}.png")
                    utils.save_image_test(fused, png)
                    results[f"{key}/png{size}/{dn}"] = np.array(Image.open(png)).astype(np.float64)
np.savez(os.path.join(out_dir, "ref.npz"), **results)
"""


def slices(size: int) -> tuple[np.ndarray, np.ndarray]:
    """An axial MNI152 T1 slice on [0, 1] at ``size``^2 and its blurred pseudo-PET."""
    from nilearn.datasets import load_mni152_template

    t1 = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float64)
    sl = np.rot90(t1[:, 10:-10, 80])
    side = max(sl.shape)
    sl = np.pad(sl, [((side - n) // 2, side - n - (side - n) // 2) for n in sl.shape])
    mri = ndimage.zoom(sl, size / side, order=1)[:size, :size]
    mri = np.clip((mri - mri.min()) / (mri.max() - mri.min()), 0, 1)
    gm = np.exp(-(((mri - 0.45) / 0.12) ** 2)) * (mri > 0.15) + 0.3 * (mri > 0.6)
    pet = ndimage.gaussian_filter(gm, size / 40)
    return mri, (pet - pet.min()) / (pet.max() - pet.min())


def build_inputs() -> dict[str, np.ndarray]:
    """8-bit sources per fused size and the [-1, 1] forward batch per model."""
    data: dict[str, np.ndarray] = {}
    spec = {"seed": SEED, "train_seed": TRAIN_SEED, "models": {}, "sizes": {}}
    for (img_size, ws), sizes in MODELS.items():
        key = f"m{img_size}w{ws}"
        spec["models"][key], spec["sizes"][key] = [img_size, ws], list(sizes)
        mri, pet = slices(img_size)
        batch = np.stack([mri, pet])[:, None]
        data[f"{key}/forward"] = ((np.round(batch * 255) - 127.5) / 127.5).astype(np.float32)
        for size in sizes:
            mri, pet = slices(size)
            data[f"mri{size}"] = np.round(mri * 255).astype(np.uint8)
            data[f"pet{size}"] = np.round(pet * 255).astype(np.uint8)
    data["spec"] = np.array(json.dumps(spec))
    return data


def reference(data: dict, published_dir: str, python: str, tmp: Path) -> dict[str, np.ndarray]:
    """Run the published modules in ``python`` on ``data``; its outputs and state_dicts."""
    np.savez(tmp / "in.npz", **data)
    cmd = [python, "-c", REFERENCE_SCRIPT, str(Path(published_dir).resolve()), str(tmp / "in.npz")]
    subprocess.run([*cmd, str(tmp)], check=True, stdout=subprocess.DEVNULL)
    return dict(np.load(tmp / "ref.npz"))


def ours(data: dict, tmp: Path) -> dict[str, np.ndarray]:
    """Our module with the reference's weights, on the same inputs, keyed as the reference."""
    out: dict[str, np.ndarray] = {}
    for (img_size, ws), sizes in MODELS.items():
        key = f"m{img_size}w{ws}"
        state = torch.load(tmp / f"{key}.pt", weights_only=True)
        init_args, sd = convert_published_state_dict(state, img_size=img_size, window_size=ws)
        for dtype in (torch.float32, torch.float64):
            dn = str(dtype).split(".")[1]
            raw = SwinFuse(**{**init_args, "output_stretch": False, "quantize_output": False})
            raw.load_state_dict(sd)
            raw = raw.to(dtype).eval()
            stretch = SwinFuse(**{**init_args, "quantize_output": False}).to(dtype).eval()
            stretch.load_state_dict(sd)
            x = torch.from_numpy(data[f"{key}/forward"]).to(dtype)
            with torch.no_grad():
                out[f"{key}/forward/{dn}"] = raw(x).numpy()
                raw.train()
                torch.manual_seed(TRAIN_SEED)
                out[f"{key}/forward-train/{dn}"] = raw(x).numpy()
                raw.eval()
                if dtype == torch.float32:
                    o = raw(x)
                    out[f"{key}/loss-pixel/{dn}"] = (F.l1_loss(o, x) / len(o)).numpy()
                    ssim = (1 - msssim(o, x, normalize=True)) / len(o)
                    out[f"{key}/loss-ssim/{dn}"] = ssim.numpy()
                for size in sizes:
                    mri = torch.from_numpy(data[f"mri{size}"] / 255.0).to(dtype)[None, None]
                    pet = torch.from_numpy(data[f"pet{size}"] / 255.0).to(dtype)[None, None]
                    out[f"{key}/fused{size}/{dn}"] = raw.fuse(mri, pet)[0, 0].numpy()
                    out[f"{key}/stretched{size}/{dn}"] = stretch.fuse(mri, pet)[0, 0].numpy()
                    if dtype == torch.float32:
                        final = SwinFuse(**init_args).eval()
                        final.load_state_dict(sd)
                        out[f"{key}/png{size}/{dn}"] = final.fuse(mri, pet)[0, 0].numpy() * 255
    return out


def report(ref: dict, got: dict) -> None:
    """Print one row per model, quantity and size: largest relative difference f32 / f64."""
    print(f"{'model':10s} {'quantity':16s} {'float32':>10s} {'float64':>10s}")
    rows = sorted({k.rsplit("/", 1)[0] for k in ref})
    for row in rows:
        model, what = row.split("/")
        if what.startswith("png"):
            d = np.abs(np.round(got[row + "/float32"]) - ref[row + "/float32"])
            print(
                f"{model:10s} {what:16s} max {int(d.max())} grey level(s), "
                f"{100 * np.mean(d > 0):.3f} % of pixels differ"
            )
            continue
        vals = []
        for dn in ("float32", "float64"):
            if f"{row}/{dn}" not in ref:
                vals.append("-")
                continue
            a, b = got[f"{row}/{dn}"], ref[f"{row}/{dn}"]
            vals.append(f"{np.abs(a.astype(np.float64) - b).max() / np.abs(b).max():.2e}")
        print(f"{model:10s} {what:16s} {vals[0]:>10s} {vals[1]:>10s}")


def build_venv(venv: Path) -> str:
    """Create the reference environment (see the module docstring); its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        deps = ["einops", "imageio", "matplotlib", "scipy", "numpy", "pillow"]
        subprocess.run([*pip, "torch==2.13.0", *deps], check=True)
        subprocess.run([*pip, "--no-deps", "timm"], check=True)
    return str(python)


def main() -> None:
    """Parse the arguments, run both sides and print the agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published-dir", required=True, help="a SwinFuse checkout")
    parser.add_argument("--reference-python", help="its environment's python (else --venv)")
    parser.add_argument("--venv", default="/tmp/swinfuse_ref", help="where to build it")
    args = parser.parse_args()
    if not (Path(args.published_dir) / "net.py").is_file():
        sys.exit(f"--published-dir: no net.py in {args.published_dir}")
    torch.set_num_threads(1)
    python = args.reference_python or build_venv(Path(args.venv))
    data = build_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        ref = reference(data, args.published_dir, python, Path(tmp))
        got = ours(data, Path(tmp))
    report(ref, got)


if __name__ == "__main__":
    main()
