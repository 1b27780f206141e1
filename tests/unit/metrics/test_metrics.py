"""Tests of fusion3d.metrics core metrics, FSIM, FMI, the published metrics and the protocols."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage, signal
from scipy.stats import entropy
from skimage.metrics import (
    normalized_mutual_information,
    peak_signal_noise_ratio,
    structural_similarity,
)

from fusion3d.metrics import PSNR_MAX_DB, SUITE_NAMES, compute_metrics, paper_slice_index, published
from fusion3d.metrics.core import (
    masked_ssim_3d,
    mutual_information,
    nmi,
    psnr,
    ssim_map,
    ssim_slices,
)
from fusion3d.metrics.fmi import _window_pdfs, fmi_haghighat, gradient_feature
from fusion3d.metrics.fsim import _filters, fsim, fsim_slices, phase_congruency


@pytest.fixture(scope="module")
def mni() -> np.ndarray:
    """MNI152 2 mm T1 template scaled to [0, 1] (99 x 117 x 95)."""
    from nilearn import datasets

    vol = datasets.load_mni152_template(resolution=2).get_fdata()
    return (vol - vol.min()) / (vol.max() - vol.min())


@pytest.fixture(scope="module")
def trio(mni) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused, mri, pet) 2D slices: PET a blurred copy, fused a noisy blend."""
    mri = mni[:, :, 45]
    pet = ndimage.gaussian_filter(mri, 2.5)
    pet /= pet.max()
    rng = np.random.default_rng(0)
    fused = np.clip(0.6 * mri + 0.4 * pet + rng.normal(0, 0.02, mri.shape), 0, 1)
    return fused, mri, pet


# ----------------------------------------------------------------- core vs scikit-image
def test_psnr_matches_skimage_and_caps_identical(trio):
    fused, mri, _ = trio
    assert psnr(fused, mri) == pytest.approx(
        peak_signal_noise_ratio(mri, fused, data_range=1.0), rel=1e-9
    )
    assert psnr(mri, mri) == PSNR_MAX_DB


def test_ssim_matches_skimage_per_slice(trio):
    fused, mri, pet = trio
    stack_f = np.stack([fused, fused])
    stack_s = np.stack([mri, pet])
    got = ssim_slices(stack_f, stack_s)
    for k, src in enumerate((mri, pet)):
        ref = structural_similarity(
            fused,
            src,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert got[k] == pytest.approx(ref, rel=1e-9)
    assert ssim_slices(stack_s, stack_s) == pytest.approx([1.0, 1.0])


def test_nmi_matches_skimage_and_closed_forms(trio):
    fused, mri, pet = trio
    for src in (mri, pet):
        assert nmi(fused, src) == pytest.approx(
            normalized_mutual_information(fused, src, bins=100), rel=1e-9
        )
    assert nmi(mri, mri) == pytest.approx(2.0)
    assert nmi(np.zeros((8, 8)), np.ones((8, 8))) == 2.0  # both constant: convention
    # 2-bin independent patterns (stripes vs. stripes the other way): H(A,B) = H(A) + H(B).
    a = np.tile([0.0, 1.0], (8, 4))
    b = a.T.copy()
    assert nmi(a, b) == pytest.approx(1.0)


def test_mutual_information_two_bin_closed_form():
    a = np.tile([0.0, 1.0], (8, 4))
    assert mutual_information(a, a) == pytest.approx(np.log(2.0))
    assert mutual_information(a, a.T.copy()) == pytest.approx(0.0, abs=1e-12)


def test_masked_ssim_3d_crop_is_exact(mni):
    vol = mni[20:60, 30:70, 30:60]
    other = ndimage.gaussian_filter(vol, 1.0)
    mask = np.zeros(vol.shape, bool)
    mask[12:25, 4:30, 9:21] = True
    full = ssim_map(vol, other, 1.0)[mask].mean()
    assert masked_ssim_3d(vol, other, mask) == pytest.approx(full, rel=1e-5)


# ----------------------------------------------------------------- FSIM
def _phasecong_reference(image: np.ndarray) -> np.ndarray:
    """Straight float64 transcription of the phasecong2 steps, one image."""
    filters, em_n, noise_sums = _filters(*image.shape)
    spectrum = np.fft.fft2(image)
    energy_all = np.zeros(image.shape)
    an_all = np.zeros(image.shape)
    for o in range(4):
        eo = [np.fft.ifft2(spectrum * filters[o, s]) for s in range(4)]
        sum_e = sum(e.real for e in eo)
        sum_o = sum(e.imag for e in eo)
        x_energy = np.sqrt(sum_e**2 + sum_o**2) + 1e-4
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        energy = np.zeros(image.shape)
        for e in eo:
            energy += e.real * mean_e + e.imag * mean_o - np.abs(e.real * mean_o - e.imag * mean_e)
        noise_power = -np.median(np.abs(eo[0]) ** 2) / np.log(0.5) / em_n[o]
        est = 2 * noise_power * noise_sums[o, 0] + 4 * noise_power * noise_sums[o, 1]
        tau = np.sqrt(est / 2)
        thr = (tau * np.sqrt(np.pi / 2) + 2 * np.sqrt((2 - np.pi / 2) * tau**2)) / 1.7
        energy_all += np.maximum(energy - thr, 0)
        an_all += sum(np.abs(e) for e in eo)
    return energy_all / an_all


def test_phase_congruency_matches_float64_reference(trio):
    fused, _, _ = trio
    ref = _phasecong_reference(fused * 255)
    got = phase_congruency((fused * 255)[None])[0]
    assert np.abs(got - ref).max() < 1e-4
    assert got.min() >= 0 and got.max() <= 1


def test_phase_congruency_on_a_bar():
    image = np.zeros((64, 64))
    image[:, 24:40] = 200.0  # edges between columns 23/24 and 39/40
    pc = phase_congruency(image[None])[0]
    assert pc[32, 24] > 0.7 and pc[32, 39] > 0.7
    assert pc[32, 24] == pytest.approx(pc[32, 39], abs=1e-4)  # mirror symmetry
    assert pc[32, 46:58].max() < 0.05  # flat background away from the bar
    assert np.allclose(pc, pc[:1], atol=1e-5)  # vertical invariance


def test_fsim_closed_forms_and_ordering(trio):
    fused, mri, pet = trio
    assert fsim(mri, mri) == pytest.approx(1.0)
    flat = np.full((32, 32), 0.5)  # PC is 0 everywhere: the unweighted S_L mean
    assert fsim(flat, flat) == pytest.approx(1.0)
    assert fsim(fused, mri) == pytest.approx(fsim(mri, fused), rel=1e-12)
    slight = ndimage.gaussian_filter(mri, 0.7)
    strong = ndimage.gaussian_filter(mri, 2.5)
    assert 1.0 > fsim(mri, slight) > fsim(mri, strong) > 0.5


def test_fsim_stack_equals_single_slices(mni):
    a = np.moveaxis(mni[:, :, 40:43], -1, 0)
    b = ndimage.gaussian_filter(a, (0, 1.2, 1.2))
    stacked = fsim_slices(a, b)
    single = [fsim(a[k], b[k]) for k in range(3)]
    assert stacked == pytest.approx(single, rel=1e-6)


# ----------------------------------------------------------------- FMI
def _fmi_loop(fused: np.ndarray, source: np.ndarray) -> float:
    """Window-by-window FMI with explicit loops (3x3 windows, gradient feature)."""
    ga, gf = gradient_feature(source), gradient_feature(fused)
    values = []
    for i in range(ga.shape[0] - 2):
        for j in range(ga.shape[1] - 2):
            pdfs = []
            for g in (ga, gf):
                w = g[i : i + 3, j : j + 3].ravel() - g[i : i + 3, j : j + 3].min()
                pdfs.append(w / w.sum() if w.sum() > 0 else np.full(9, 1 / 9))
            pa, pf = pdfs
            if np.allclose(pa, pf, rtol=0, atol=1e-12):
                values.append(1.0)
                continue
            c = np.corrcoef(pa, pf)[0, 1] if pa.std() > 0 and pf.std() > 0 else 0.0
            ca, cf = np.cumsum(pa), np.cumsum(pf)
            cdf = np.zeros((10, 10))
            for u in range(9):
                for v in range(9):
                    ind = ca[u] * cf[v]
                    if c >= 0:
                        cdf[u + 1, v + 1] = c * min(ca[u], cf[v]) + (1 - c) * ind
                    else:
                        cdf[u + 1, v + 1] = -c * max(ca[u] + cf[v] - 1, 0) + (1 + c) * ind
            joint = np.clip(cdf[1:, 1:] - cdf[:-1, 1:] - cdf[1:, :-1] + cdf[:-1, :-1], 0, None)

            def h(p):
                p = p[p > 0]
                return -(p * np.log2(p)).sum()

            hsum = h(pa) + h(pf)
            mi = hsum - h(joint.ravel())
            values.append(min(max(2 * mi / hsum, 0.0), 1.0) if hsum > 0 else 0.0)
    return float(np.mean(values))


def test_fmi_matches_loop_reference(trio):
    fused, mri, pet = trio
    crop = (slice(30, 52), slice(40, 66))
    for src in (mri, pet):
        assert fmi_haghighat(fused[crop], src[crop]) == pytest.approx(
            _fmi_loop(fused[crop], src[crop]), rel=1e-9
        )


def test_fmi_closed_forms_and_errors(trio):
    _, mri, _ = trio
    assert fmi_haghighat(mri, mri) == pytest.approx(1.0)
    noise = np.random.default_rng(1).random(mri.shape)
    assert fmi_haghighat(noise, mri) < fmi_haghighat(ndimage.gaussian_filter(mri, 1), mri)
    with pytest.raises(ValueError, match="window"):
        fmi_haghighat(mri, mri, window=4)
    with pytest.raises(ValueError, match="2D"):
        fmi_haghighat(mri, mri[:-1])
    flat = _window_pdfs(np.ones((3, 3)), 3)
    assert flat == pytest.approx(np.full((1, 9), 1 / 9))


# ----------------------------------------------------------------- published DC2Fusion metrics
phasecong = published.phasecong  # phasepack's own function (imported there without its warning)


# Each expected value below is computed from the recipe of the published
# evaluation_metrics.py (louelin/DC2Fusion) written out with the libraries it names,
# on float32 slices as its infer_singleImage.py passes them.
def _recipe_fsim(fused: np.ndarray, source: np.ndarray) -> float:
    """Published fsim: phasepack PC summed over 6 orientations, cv2.Scharr CV_16U, T1/T2."""

    def pc_sum(x):
        maps = phasecong(x, nscale=4, minWaveLength=6, mult=2, sigmaOnf=0.5978)[4]
        assert len(maps) == 6
        return sum(m.astype(np.float64) for m in maps)

    def gm(x):
        gx = cv2.Scharr(x, cv2.CV_16U, 1, 0).astype(np.float64)
        gy = cv2.Scharr(x, cv2.CV_16U, 0, 1).astype(np.float64)
        return np.hypot(gx, gy)

    pc1, pc2 = pc_sum(source), pc_sum(fused)
    g1, g2 = gm(source), gm(fused)
    s_l = (
        (2 * pc1 * pc2 + 0.85)
        / (pc1**2 + pc2**2 + 0.85)
        * (2 * g1 * g2 + 160)
        / (g1**2 + g2**2 + 160)
    )
    pc_m = np.maximum(pc1, pc2)
    return float((s_l * pc_m).sum() / pc_m.sum())


def _recipe_mi(fused: np.ndarray, source: np.ndarray) -> float:
    """Published mutual_information: np.histogramdd (default 10 bins, density), scipy entropy."""
    hist, _ = np.histogramdd([fused.ravel(), source.ravel()], density=True)
    return float(entropy(hist.sum(axis=0)) + entropy(hist.sum(axis=1)) - entropy(hist.ravel()))


def _recipe_ssim(fused: np.ndarray, source: np.ndarray) -> float:
    """torchmetrics <= 1.4.1 SSIM: 2D Gaussian 11/1.5 window, valid region only, var >= 0."""
    x = np.arange(-5, 6)
    g = np.exp(-((x / 1.5) ** 2) / 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    a, b = fused.astype(np.float64), source.astype(np.float64)

    def filt(z):
        return signal.convolve2d(z, kernel, mode="valid")

    mu_a, mu_b = filt(a), filt(b)
    var_a = np.clip(filt(a * a) - mu_a**2, 0, None)
    var_b = np.clip(filt(b * b) - mu_b**2, 0, None)
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    smap = (
        (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    )
    assert smap.shape == (a.shape[0] - 10, a.shape[1] - 10)
    return float(smap.mean())


@pytest.fixture(scope="module")
def trio32(trio) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trio as float32 slices, as the published code receives them."""
    return tuple(x.astype(np.float32) for x in trio)


def test_published_fsim_matches_phasepack_and_opencv_recipe(trio32):
    fused, mri, pet = trio32
    for src in (mri, pet):
        assert published.fsim(fused, src) == pytest.approx(_recipe_fsim(fused, src), rel=1e-7)
    assert published.fsim(mri, mri) == pytest.approx(1.0)
    # Not the textbook FSIM (4 orientations, PC in [0, 1], float Scharr on x255 images).
    assert abs(published.fsim(fused, mri) - fsim(fused, mri)) > 1e-3


def test_published_phase_congruency_is_a_sum_over_six_orientations():
    yy, xx = np.mgrid[:64, :64]
    disk = (((yy - 30) ** 2 + (xx - 34) ** 2) < 15**2).astype(np.float32) * np.float32(0.8)
    pc = published.phase_congruency_sum(disk)
    maps = phasecong(disk, nscale=4, minWaveLength=6, mult=2, sigmaOnf=0.5978)[4]
    np.testing.assert_allclose(pc, np.sum(np.stack(maps).astype(np.float64), axis=0), rtol=1e-12)
    assert pc.max() > 1.0  # a sum of six [0, 1] maps, not a [0, 1] phase congruency
    # A bar constant along one axis: phasepack gives 0/0 = NaN there; we give 0.
    bar = np.zeros((64, 64), np.float32)
    bar[:, 24:40] = 0.8
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = phasecong(bar, nscale=4, minWaveLength=6, mult=2, sigmaOnf=0.5978)[4]
    assert np.isnan(np.stack(raw)).any()
    pc_bar = published.phase_congruency_sum(bar)
    assert np.isfinite(pc_bar).all() and pc_bar[32, 24] > 0.5
    assert published.fsim(bar, bar) == pytest.approx(1.0)


def test_scharr_cv16u_semantics_written_out():
    """cv2.Scharr(CV_16U) = unnormalised (3, 10, 3) kernel, reflect-101, rint, clip at 0."""
    image = np.random.default_rng(3).random((9, 12)).astype(np.float32)
    padded = np.pad(image.astype(np.float64), 1, mode="reflect")  # numpy 'reflect' = 101
    smooth, deriv = np.array([3.0, 10.0, 3.0]), np.array([-1.0, 0.0, 1.0])
    gx = sum(
        smooth[i] * deriv[j] * padded[i : i + 9, j : j + 12] for i in range(3) for j in range(3)
    )
    gy = sum(
        deriv[i] * smooth[j] * padded[i : i + 9, j : j + 12] for i in range(3) for j in range(3)
    )
    as_u16 = [np.clip(np.rint(g), 0, 65535) for g in (gx, gy)]
    assert (as_u16[0] == 0).any() and (gx < 0).any()  # negative derivatives saturate to 0
    np.testing.assert_array_equal(cv2.Scharr(image, cv2.CV_16U, 1, 0), as_u16[0])
    np.testing.assert_array_equal(cv2.Scharr(image, cv2.CV_16U, 0, 1), as_u16[1])
    np.testing.assert_allclose(published.scharr_magnitude(image), np.hypot(*as_u16), rtol=1e-6)


def test_published_mi_nmi_psnr_match_their_recipes(trio32):
    fused, mri, pet = trio32
    for src in (mri, pet):
        assert published.mutual_information(fused, src) == pytest.approx(
            _recipe_mi(fused, src), rel=1e-12
        )
        assert published.nmi(fused, src) == pytest.approx(
            normalized_mutual_information(fused, src), rel=1e-12
        )
        mse = np.mean((fused.astype(np.float64) - src) ** 2)
        assert published.psnr(fused, src) == pytest.approx(10 * np.log10(1 / mse), rel=1e-12)
    # 10 bins, not 100: two images that differ only within one of 10 bins have MI = H.
    a = np.tile(np.float32([0.0, 1.0]), (8, 4))
    assert published.mutual_information(a, a + np.float32(0.01) * a) == pytest.approx(np.log(2))


def test_published_ssim_crops_the_border(trio32):
    fused, mri, pet = trio32
    for src in (mri, pet):
        got = published.ssim(fused, src)
        assert got == pytest.approx(_recipe_ssim(fused, src), rel=1e-9)
        ref = structural_similarity(
            fused.astype(np.float64),
            src.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert got == pytest.approx(ref, rel=1e-7)  # the same crop (scikit-image's)
    # The whole reflect-padded map (torchmetrics >= 1.4.2) is another number.
    whole = ssim_map(fused.astype(np.float64), mri.astype(np.float64), 1.0).mean()
    assert abs(published.ssim(fused, mri) - whole) > 1e-3


def test_published_inputs_are_float32(trio):
    fused, mri, _ = trio
    as32 = fused.astype(np.float32)
    assert published.fsim(fused, mri) == published.fsim(as32, mri.astype(np.float32))
    with pytest.raises(ValueError, match="fused: expected a 2D slice"):
        published.ssim(fused[None], mri)
    with pytest.raises(ValueError, match="source: .* NaN"):
        published.nmi(fused, np.where(mri == mri.max(), np.nan, mri))


# ----------------------------------------------------------------- protocols
def test_paper_protocol_is_the_published_recipe_over_sources(trio, trio32):
    fused, mri, pet = trio
    f32, m32, p32 = trio32
    out = compute_metrics(fused, mri, pet, protocol="paper")
    assert tuple(out) == ("psnr", "ssim", "nmi", "mi", "fsim", "fsim_zhang", "fmi_haghighat")
    expected = {
        "psnr": [peak_signal_noise_ratio(s, f32, data_range=1) for s in (m32, p32)],
        "ssim": [_recipe_ssim(f32, s) for s in (m32, p32)],
        "nmi": [normalized_mutual_information(f32, s, bins=100) for s in (m32, p32)],
        "mi": [_recipe_mi(f32, s) for s in (m32, p32)],
        "fsim": [_recipe_fsim(f32, s) for s in (m32, p32)],
        "fsim_zhang": [fsim(fused, s) for s in (mri, pet)],
        "fmi_haghighat": [fmi_haghighat(fused, s) for s in (mri, pet)],
    }
    for name, values in expected.items():
        # fsim: the recipe's float64 gradient magnitude vs. the published float32 one
        assert out[name] == pytest.approx(np.mean(values), rel=1e-7), name


def test_paper_protocol_uses_middle_slice(trio):
    fused, mri, pet = trio
    rng = np.random.default_rng(2)
    vols = [rng.random(mri.shape + (9,)) for _ in range(3)]
    for vol, sl in zip(vols, (fused, mri, pet), strict=True):
        vol[..., 4] = sl
    assert paper_slice_index((128, 128, 128)) == 64
    assert paper_slice_index(vols[0].shape) == 4
    assert compute_metrics(*vols, protocol="paper") == compute_metrics(
        fused, mri, pet, protocol="paper"
    )


def test_paper_identical_inputs(trio):
    _, mri, _ = trio
    out = compute_metrics(mri, mri, mri, protocol="paper")
    assert out["psnr"] == PSNR_MAX_DB
    assert out["ssim"] == pytest.approx(1.0)
    assert out["nmi"] == pytest.approx(2.0)
    assert out["mi"] == pytest.approx(_recipe_mi(mri, mri))
    assert out["fsim"] == pytest.approx(1.0)
    assert out["fsim_zhang"] == pytest.approx(1.0)
    assert out["fmi_haghighat"] == pytest.approx(1.0)


def test_volume_protocol(mni):
    mri = mni[20:60, 25:75, 25:60]
    pet = ndimage.gaussian_filter(mri, 2.0)
    fused = 0.5 * (mri + pet)
    out = compute_metrics(fused, mri, pet, protocol="volume")
    assert set(out) == {"psnr", "ssim", "nmi", "mi", "fsim_zhang"}
    region = mri > 0
    exp = np.mean([10 * np.log10(1 / np.mean((fused - s)[region] ** 2)) for s in (mri, pet)])
    assert out["psnr"] == pytest.approx(exp, rel=1e-9)
    assert out == compute_metrics(fused, mri, pet, protocol="volume", mask=region)
    same = compute_metrics(mri, mri, mri, protocol="volume")
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert same["nmi"] == pytest.approx(2.0)
    assert same["fsim_zhang"] == pytest.approx(1.0)
    assert same["mi"] > out["mi"] > 0


def test_suite2d_skips_slices_without_brain(mni):
    mri = mni[20:60, 25:75, 40:43]
    pet = ndimage.gaussian_filter(mri, 2.0)
    fused = 0.5 * (mri + pet)
    pad = ((0, 0), (0, 0), (0, 2))
    padded = [np.pad(x, pad) for x in (fused, mri, pet)]
    out = compute_metrics(fused, mri, pet, protocol="suite2d")
    assert tuple(out) == SUITE_NAMES
    assert compute_metrics(*padded, protocol="suite2d") == pytest.approx(out, rel=1e-12)
    single = compute_metrics(fused[..., 1], mri[..., 1], pet[..., 1], protocol="suite2d")
    assert set(single) == set(SUITE_NAMES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"protocol": "nope"}, "protocol"),
        ({"protocol": "paper", "fused": np.zeros((20, 21))}, "shape mismatch"),
        ({"protocol": "paper", "fused": np.full((20, 20), np.nan)}, "NaN"),
        ({"protocol": "volume"}, "3D"),
        ({"protocol": "paper", "fused": np.zeros(20)}, "fused"),
        ({"protocol": "suite2d", "mask": np.zeros((20, 21), bool)}, "mask"),
        ({"protocol": "suite2d", "mask": np.full((20, 20), 3)}, "mask"),
        (
            {
                "protocol": "paper",
                "fused": np.zeros((8, 8)),
                "mri": np.zeros((8, 8)),
                "pet": np.zeros((8, 8)),
            },
            "too small",
        ),
    ],
)
def test_compute_metrics_rejects_bad_input(kwargs, match):
    args = {"fused": np.zeros((20, 20)), "mri": np.ones((20, 20)), "pet": np.ones((20, 20))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compute_metrics(args.pop("fused"), args.pop("mri"), args.pop("pet"), **args)


def test_empty_mask_is_rejected():
    vol = np.zeros((16, 16, 4))
    with pytest.raises(ValueError, match="no brain"):
        compute_metrics(vol, vol, vol, protocol="volume")
    with pytest.raises(ValueError, match="no brain"):
        compute_metrics(vol, vol, vol, protocol="suite2d", mask=np.zeros(vol.shape, bool))
