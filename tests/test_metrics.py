"""Golden-value tests for meddiff.eval.metrics (values computed by hand or by the reference library)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from meddiff.errors import InputError
from meddiff.eval import metrics as m


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ----------------------------------------------------------------------------- PSNR / NMSE


def test_psnr_hand_computed():
    ref = np.zeros((4, 4))
    x = ref.copy()
    x[:2, :2] = 0.5  # 4 of 16 pixels off by 0.5 -> MSE = 4 * 0.25 / 16 = 1/16
    assert m.psnr(x, ref, data_range=1.0) == pytest.approx(10 * math.log10(16.0), abs=1e-12)
    assert m.psnr(x, ref, data_range=2.0) == pytest.approx(10 * math.log10(64.0), abs=1e-12)
    assert m.psnr(np.full((3, 3), 0.1), np.zeros((3, 3)), 1.0) == pytest.approx(20.0, abs=1e-12)


def test_psnr_identical_is_inf_and_torch_matches_numpy(rng):
    a = rng.random((2, 8, 9))
    b = a + 0.05 * rng.standard_normal(a.shape)
    assert m.psnr(a, a, 1.0) == math.inf
    assert m.psnr(torch.from_numpy(b).float(), torch.from_numpy(a).float(), 1.0) == pytest.approx(
        m.psnr(b.astype(np.float32), a.astype(np.float32), 1.0), rel=1e-9)


def test_data_range_is_required_and_validated(rng):
    a = rng.random((8, 8))
    with pytest.raises(TypeError):
        m.psnr(a, a)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        m.ssim(a, a)  # type: ignore[call-arg]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError):
            m.psnr(a, a, bad)


def test_nmse_hand_computed():
    assert m.nmse(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert m.nmse(np.array([0.0, 0.0]), np.array([3.0, 4.0])) == pytest.approx(1.0)
    with pytest.raises(InputError):
        m.nmse(np.ones(3), np.zeros(3))


# ----------------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one_2d_and_3d(rng):
    a2, a3 = rng.random((16, 16)), rng.random((8, 12, 10))
    assert m.ssim(a2, a2, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert m.ssim(a3, a3, 1.0) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    # Wang et al. 2004 Eq. 13 with sigma_x = sigma_y = sigma_xy = 0 leaves the luminance term.
    c1 = (0.01 * 1.0) ** 2
    expect = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert m.ssim(np.full((12, 12), 0.2), np.full((12, 12), 0.6), 1.0) == pytest.approx(expect, abs=1e-12)


def test_ssim_matches_skimage_2d_3d_and_torch(rng):
    ref = rng.random((20, 24))
    x = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1)
    expect = structural_similarity(ref, x, data_range=1.0)
    assert m.ssim(x, ref, 1.0) == pytest.approx(expect, abs=1e-12)
    assert m.ssim(torch.from_numpy(x)[None], torch.from_numpy(ref)[None], 1.0) == pytest.approx(expect, abs=1e-12)
    ref3 = rng.random((9, 10, 11))
    x3 = ref3 + 0.2 * rng.standard_normal(ref3.shape)
    assert m.ssim(x3, ref3, 2.0) == pytest.approx(structural_similarity(ref3, x3, data_range=2.0), abs=1e-12)
    assert m.ssim(x, ref, 1.0) < 1.0


def test_ssim_rejects_small_or_wrong_dims(rng):
    with pytest.raises(InputError):
        m.ssim(rng.random((5, 20)), rng.random((5, 20)), 1.0)
    with pytest.raises(InputError):
        m.ssim(rng.random((2, 8, 8, 8)), rng.random((2, 8, 8, 8)), 1.0)


# ----------------------------------------------------------------------------- batches, complex, errors


def test_batch_variants_equal_per_image_values(rng):
    ref = rng.random((3, 1, 16, 16))
    x = ref + 0.05 * rng.standard_normal(ref.shape)
    dr = np.array([1.0, 2.0, 0.5])
    p = m.psnr_batch(x, ref, dr)
    s = m.ssim_batch(torch.from_numpy(x), torch.from_numpy(ref), dr)
    n = m.nmse_batch(x, ref)
    assert p.shape == s.shape == n.shape == (3,)
    for i in range(3):
        assert p[i] == pytest.approx(m.psnr(x[i, 0], ref[i, 0], dr[i]))
        assert s[i] == pytest.approx(m.ssim(x[i, 0], ref[i, 0], dr[i]))
        assert n[i] == pytest.approx(m.nmse(x[i], ref[i]))
    vol = rng.random((2, 2, 8, 8, 8))  # 3D, two channels: SSIM averaged over channels
    s3 = m.ssim_batch(vol, vol * 0.9, 1.0)
    expect = structural_similarity(vol[1] * 0.9, vol[1], data_range=1.0, channel_axis=0)
    assert s3[1] == pytest.approx(expect, abs=1e-12)
    with pytest.raises(InputError):
        m.psnr_batch(x, ref, np.ones(2))
    with pytest.raises(InputError):
        m.psnr_batch(x[0, 0], ref[0, 0], 1.0)


def test_complex_inputs_use_magnitude(rng):
    mag = rng.random((16, 16)) + 0.1
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape))
    noisy = mag + 0.05 * rng.standard_normal(mag.shape)
    assert m.psnr(mag * phase, mag, 1.0) > 250  # phase is ignored (equal up to rounding)
    assert m.psnr(noisy * phase, mag * np.conj(phase), 1.0) == pytest.approx(m.psnr(noisy, mag, 1.0))
    t = torch.from_numpy(noisy * phase)
    assert m.ssim(t, torch.from_numpy(mag).to(torch.complex128), 1.0) == pytest.approx(m.ssim(noisy, mag, 1.0))
    assert m.nmse(noisy * phase, mag) == pytest.approx(m.nmse(np.abs(noisy), mag))


@pytest.mark.parametrize("fn", [lambda a, b: m.psnr(a, b, 1.0), lambda a, b: m.ssim(a, b, 1.0),
                                m.nmse, m.dice, m.auroc, m.auprc, m.best_dice])
def test_shape_mismatch_raises(fn):
    with pytest.raises(InputError, match="shape mismatch"):
        fn(np.ones((8, 8)), np.ones((8, 9)))


def test_nan_rejected():
    a = np.ones((8, 8))
    b = a.copy()
    b[0, 0] = np.nan
    with pytest.raises(InputError):
        m.psnr(b, a, 1.0)


# ----------------------------------------------------------------------------- Dice


def test_dice_known_masks():
    gt = np.zeros((4, 4), bool)
    gt[0, :2] = True                       # 2 pixels
    pred = np.zeros((4, 4), bool)
    pred[0, 1:4] = True                    # 3 pixels, 1 overlapping
    assert m.dice(pred, gt) == pytest.approx(2 * 1 / 5)
    assert m.dice(gt, gt) == 1.0
    assert m.dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0  # both empty: defined 1
    assert m.dice(np.zeros((3, 3), bool), np.eye(3, dtype=bool)) == 0.0
    assert m.dice(torch.tensor(pred.astype(np.int64)), gt.astype(np.uint8)) == pytest.approx(0.4)
    with pytest.raises(InputError):
        m.dice(np.full((3, 3), 0.5), np.eye(3, dtype=bool))


def test_dice_at_and_best_dice_known_case():
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    gt = np.array([1, 1, 0, 0])
    assert m.dice_at(scores, gt, 0.85) == pytest.approx(2 / 3)   # {0}: 2*1/(1+2)
    assert m.dice_at(scores, gt, 0.8) == pytest.approx(0.8)      # {0,1,2}: 2*2/(3+2)
    assert m.best_dice(scores, gt) == pytest.approx(0.8)
    assert m.best_dice(np.zeros(4), np.zeros(4)) == 1.0           # empty mask is reachable
    assert m.best_dice(np.array([0.3, 0.7]), np.array([0, 1])) == 1.0


def test_best_dice_equals_brute_force(rng):
    scores = np.round(rng.random((3, 10, 10)), 2)  # rounding creates ties
    gt = rng.random((3, 10, 10)) < scores * 0.6
    brute = max(m.dice_at(scores, gt, t) for t in np.unique(scores))
    assert m.best_dice(scores, gt) == pytest.approx(brute, abs=1e-12)
    assert m.best_dice(torch.from_numpy(scores), torch.from_numpy(gt)) == pytest.approx(brute, abs=1e-12)


# ----------------------------------------------------------------------------- AUROC / AUPRC


def test_auroc_known_ranking():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered correctly
    assert m.auroc(np.array(scores), np.array(labels)) == pytest.approx(0.75)
    assert m.auroc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)  # tie counts 1/2
    assert m.auroc(np.array([0.0, 1.0, 2.0]), np.array([0, 1, 1])) == 1.0


def test_auprc_known_and_sanity(rng):
    # ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 0.5 * 1 + 0.5 * 2/3
    assert m.auprc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(5 / 6)
    labels = rng.random(20000) < 0.2
    assert m.auprc(labels.astype(float), labels) == 1.0
    assert abs(m.auprc(rng.random(20000), labels) - labels.mean()) < 0.03  # random = prevalence
    with pytest.raises(InputError):
        m.auroc(np.array([0.1, 0.2]), np.array([1, 1]))
