"""Simulators on synthetic phantoms: signal equations, augmentation, lesions (no template)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from meddiff.data import augment as aug
from meddiff.data import mri_signal as mr
from meddiff.data.lesions import (LESIONS_EVAL, LESIONS_TRAIN, LesionConfig, insert_lesions,
                                  render_lesions)
from meddiff.errors import ConfigError

T = mr.DEFAULT_TISSUES


# ---------------------------------------------------------------- signal equations
def test_signal_equations_golden_values():
    # independent evaluation of the closed forms at one point
    se = 0.8 * (1 - math.exp(-500 / 1330)) * math.exp(-15 / 110)
    assert mr.spin_echo(0.8, 1330.0, 110.0, 500.0, 15.0) == pytest.approx(se, rel=1e-12)
    ir = 1.0 * abs(1 - 2 * math.exp(-2500 / 4000) + math.exp(-9000 / 4000)) * math.exp(-100 / 2000)
    assert mr.inversion_recovery(1.0, 4000.0, 2000.0, 9000.0, 100.0, 2500.0) == pytest.approx(ir)
    assert ir == pytest.approx(0.0, abs=0.05)  # 2500 ms is close to the CSF null at TR 9 s


def test_flair_null_point_nulls_csf():
    for tr in (8000.0, 9500.0, 11000.0):
        ti = mr.flair_null_ti(tr, T["csf"].t1)
        seq = mr.Sequence(tr=tr, te=100.0, ti=ti)
        assert mr.tissue_signal(T["csf"], seq) == pytest.approx(0.0, abs=1e-12)
        assert mr.tissue_signal(T["wm"], seq) > 0.1


def _corners(contrast):
    r = mr._RANGES[contrast]
    for tr in r["tr"]:
        for te in r["te"]:
            ti = mr.flair_null_ti(tr, T["csf"].t1) if contrast == "FLAIR" else None
            yield mr.Sequence(tr=tr, te=te, ti=ti)


@pytest.mark.parametrize("contrast", mr.CONTRASTS)
def test_contrast_ordering_over_protocol_ranges(contrast):
    for seq in _corners(contrast):
        s = {k: mr.tissue_signal(t, seq) for k, t in T.items()}
        if contrast == "T1w":
            assert s["wm"] > s["gm"] > s["csf"]
            assert 0.8 < s["lesion"] / s["wm"] < 1.0  # subtle, slightly hypointense
        elif contrast == "T2w":
            assert s["csf"] > s["gm"] > s["wm"] and s["lesion"] > 1.5 * s["wm"]
        elif contrast == "PDw":
            assert s["gm"] > s["wm"]
        else:
            assert s["csf"] < 0.2 * s["wm"] and s["gm"] > s["wm"]
            assert s["lesion"] > 1.3 * s["wm"]


def test_ordering_survives_jitter_on_average():
    rng = np.random.default_rng(0)
    wins = 0
    for _ in range(200):
        seq = mr.sample_sequence("T2w", rng)
        t = mr.jitter_tissues(T, rng, 0.1)
        s = {k: mr.tissue_signal(v, seq) for k, v in t.items()}
        wins += s["csf"] > s["gm"] > s["wm"]
    assert wins >= 190


def test_sampling_is_seeded_and_in_range():
    a = [mr.sample_sequence(c, np.random.default_rng(5)) for c in mr.CONTRASTS]
    b = [mr.sample_sequence(c, np.random.default_rng(5)) for c in mr.CONTRASTS]
    assert a == b
    for c, seq in zip(mr.CONTRASTS, a):
        lo, hi = mr._RANGES[c]["tr"]
        assert lo <= seq.tr <= hi and (seq.ti is not None) == (c == "FLAIR")
    jit = mr.jitter_tissues(T, np.random.default_rng(1), 0.1)
    for k in T:
        assert 0.9 <= jit[k].t1 / T[k].t1 <= 1.1 and 0.9 <= jit[k].t2 / T[k].t2 <= 1.1
    with pytest.raises(ConfigError):
        mr.sample_sequence("DWI", np.random.default_rng(0))


def test_partial_volume_mixing_and_normalisation():
    fr = np.zeros((3, 4, 4), np.float32)
    fr[0, 0], fr[1, 1], fr[2, 2] = 1.0, 1.0, 1.0
    fr[:, 3] = [[0.2] * 4, [0.3] * 4, [0.5] * 4]
    sig = np.array([3.0, 2.0, 1.0], np.float32)
    out = mr.mix(fr, sig)
    np.testing.assert_allclose(out[:3, 0], [3.0, 2.0, 1.0])
    np.testing.assert_allclose(out[3], 0.2 * 3 + 0.3 * 2 + 0.5 * 1, rtol=1e-6)
    img = mr.simulate(fr, "T2w")  # nominal protocol, no randomness
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() == pytest.approx(1.0)
    assert img[0, 0] > img[1, 0] > img[2, 0]  # CSF > GM > WM on T2w
    with pytest.raises(ConfigError):
        mr.mix(fr, sig[:2])


def test_normalisation_keeps_lesions_unclipped_and_scale_shared():
    pure = np.eye(4, dtype=np.float32)[:, :, None]  # one pixel per pure compartment
    seq = mr.nominal_sequence("FLAIR")
    img = mr.render_contrast(pure, seq)[:, 0]
    sig = [mr.tissue_signal(T[k], seq) for k in mr.TISSUES]
    np.testing.assert_allclose(img, np.array(sig) / max(sig), rtol=1e-5)
    assert img[3] == pytest.approx(1.0) and img[2] < 0.8  # lesion brightest on FLAIR
    healthy = mr.render_contrast(pure[:3, :3], seq)[:, 0]  # same scale without a lesion channel
    np.testing.assert_allclose(healthy, img[:3])


# ---------------------------------------------------------------- augmentation
def _smooth_image(n=48):
    y, x = np.mgrid[0:n, 0:n] / n
    return (0.5 + 0.25 * np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y)).astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 32), (12, 12, 12)])
def test_zero_strength_is_identity(shape):
    disp = aug.random_displacement(shape, np.random.default_rng(0), strength=0.0)
    assert np.abs(disp).max() < 1e-6
    x = np.random.default_rng(1).random((2,) + shape).astype(np.float32)
    np.testing.assert_allclose(aug.warp(x, disp), x, atol=1e-5)


def test_rotation_by_90_degrees_matches_rot90_and_shift_matches_roll():
    x = np.random.default_rng(0).random((1, 17, 17)).astype(np.float32)
    disp = aug.affine_displacement((17, 17), np.array([[0.0, -1.0], [1.0, 0.0]]), np.zeros(2))
    np.testing.assert_allclose(aug.warp(x, disp)[0], np.rot90(x[0], 1), atol=1e-5)
    step = 2.0 / 16  # one pixel in normalised units
    disp = aug.affine_displacement((17, 17), np.eye(2), np.array([2 * step, 0.0]))
    np.testing.assert_allclose(aug.warp(x, disp)[0, :, :-2], x[0, :, 2:], atol=1e-5)
    lab = (x > 0.5).astype(np.float32)  # nearest keeps labels binary
    assert set(np.unique(aug.warp(lab, disp, mode="nearest"))) <= {0.0, 1.0}


def test_random_warp_round_trip_with_inverse():
    img = _smooth_image()[None]
    cfg = aug.AugmentConfig()
    disp = aug.random_displacement(img.shape[1:], np.random.default_rng(3), cfg)
    moved = aug.warp(img, disp)
    assert np.abs(moved - img)[0, 8:-8, 8:-8].mean() > 0.01  # it really moved
    back = aug.warp(moved, aug.invert_displacement(disp))
    np.testing.assert_allclose(back[0, 8:-8, 8:-8], img[0, 8:-8, 8:-8], atol=0.02)


def test_displacement_is_seeded_and_small():
    a = aug.random_displacement((32, 32), np.random.default_rng(7))
    b = aug.random_displacement((32, 32), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert 0.0 < np.abs(a).max() < 0.3  # < 15 % of the field of view
    assert aug.random_displacement((8, 8, 8), np.random.default_rng(0)).shape == (8, 8, 8, 3)


def test_bias_field_smooth_positive_and_scaled():
    rms = []
    for s in range(30):
        b = aug.bias_field((40, 40), np.random.default_rng(s), 0.2)
        assert b.min() > 0 and np.abs(np.diff(np.log(b), axis=0)).max() < 0.1
        rms.append(np.sqrt(np.mean(np.log(b) ** 2)))
    assert 0.1 < np.mean(rms) < 0.3
    assert aug.bias_field((6, 7, 8), np.random.default_rng(0), 0.2).shape == (6, 7, 8)


def test_rician_noise_background_is_rayleigh():
    sigma = 0.05
    out = aug.rician_noise(np.zeros((200, 200), np.float32), sigma, np.random.default_rng(0))
    assert out.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.02)
    strong = aug.rician_noise(np.full((200, 200), 0.8, np.float32), sigma, np.random.default_rng(1))
    assert strong.mean() == pytest.approx(math.sqrt(0.8 ** 2 + sigma ** 2), rel=0.01)
    x = _smooth_image()
    y = aug.random_intensity(x, np.random.default_rng(0))
    assert y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1


# ---------------------------------------------------------------- lesions
def _wm_phantom(n=96):
    """A disk of white matter with a CSF 'ventricle' in the middle (fractions)."""
    y, x = np.mgrid[0:n, 0:n] - n / 2
    r = np.hypot(x, y)
    brain = (r < 0.45 * n).astype(np.float32)
    csf = ((r < 0.1 * n) | (r > 0.4 * n)).astype(np.float32) * brain
    wm = brain - csf
    return csf, wm


def test_lesions_inside_wm_and_bright_on_flair():
    csf, wm = _wm_phantom()
    rng = np.random.default_rng(0)
    for _ in range(5):
        frac, mask = render_lesions(wm, csf, 1.0, LESIONS_EVAL, rng)
        assert mask.any() and np.all(wm[mask] >= 0.5) and np.all(frac <= wm + 1e-6)
        fr = insert_lesions(np.stack([csf, np.zeros_like(wm), wm]), frac)
        np.testing.assert_allclose(fr.sum(0), csf + wm, atol=1e-6)  # brain fraction kept
        flair = mr.simulate(fr, "FLAIR")
        ring = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask) \
            & (wm > 0.99)
        assert flair[mask].mean() > 1.5 * flair[ring].mean()
        t1 = mr.simulate(fr, "T1w")
        assert 0.7 < t1[mask].mean() / t1[ring].mean() < 1.05


def test_lesion_size_scales_with_resolution():
    csf, wm = _wm_phantom(128)
    csf2, wm2 = csf[::2, ::2], wm[::2, ::2]
    one = LesionConfig(count=(1, 1), radius_mm=(5.0, 5.0), elongation=(1.0, 1.0), irregularity=0.0)
    a1 = np.mean([render_lesions(wm, csf, 1.0, one, np.random.default_rng(s))[1].sum()
                  for s in range(5)])
    a2 = np.mean([render_lesions(wm2, csf2, 2.0, one, np.random.default_rng(s))[1].sum()
                  for s in range(5)])
    assert a1 == pytest.approx(math.pi * 25, rel=0.15)
    assert a1 / a2 == pytest.approx(4.0, rel=0.25)


def test_training_distribution_differs_and_is_placed_periventricular():
    csf, wm = _wm_phantom(128)
    dist_csf = ndimage.distance_transform_edt(csf < 0.5)

    def stats(cfg):
        sizes, dists = [], []
        for s in range(20):
            _, m = render_lesions(wm, csf, 1.0, cfg, np.random.default_rng(s))
            lab, n = ndimage.label(m)
            sizes += list(np.bincount(lab.ravel())[1:])
            dists += [dist_csf[c].min() for c in ndimage.find_objects(lab)]
        return np.mean(sizes), np.max(dists)

    size_eval, _ = stats(LESIONS_EVAL)
    size_train, far_train = stats(LESIONS_TRAIN)
    assert size_train < 0.7 * size_eval
    assert far_train <= 8.0  # every training lesion touches the 8 mm periventricular band


def test_lesions_reproducible_3d_and_validated():
    csf, wm = _wm_phantom(32)
    wm3 = np.repeat(wm[None], 24, 0)
    csf3 = np.repeat(csf[None], 24, 0)
    a = render_lesions(wm3, csf3, 1.0, LESIONS_EVAL, np.random.default_rng(4))
    b = render_lesions(wm3, csf3, 1.0, LESIONS_EVAL, np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].shape == wm3.shape and a[1].any()
    none = render_lesions(np.zeros((16, 16)), np.zeros((16, 16)), 1.0, LESIONS_EVAL,
                          np.random.default_rng(0))
    assert not none[1].any()
    with pytest.raises(ConfigError):
        LesionConfig(radius_mm=(5.0, 2.0))
