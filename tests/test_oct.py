"""Simulated retinal OCT with speckle (meddiff.data.oct): speckle statistics, the dataset's
reproducibility and splits, the classic NLM / TV baselines, argument checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from meddiff.data.oct import (DB_WINDOW, FLOOR_DB, SPECKLE_SIGMA, OCTScans, log_speckle_mean_db,
                              nlm_baseline, retina_bscan, speckle, speckle_field, tv_baseline)
from meddiff.errors import ConfigError, InputError
from meddiff.eval.metrics import psnr_batch
from meddiff.train.data import DataConfig, make_dataset


def _lag1_prediction(sigma: float) -> float:
    """Intensity correlation at lag 1 of Gaussian-blurred complex speckle: |mu_A(1)|^2 with
    mu_A the normalised autocorrelation of the sampled kernel (Goodman, sec. 4.2)."""
    k = ndimage.gaussian_filter1d(np.eye(1, 64, 32)[0], sigma)
    return float((np.dot(k[:-1], k[1:]) / np.dot(k, k)) ** 2)


@pytest.mark.parametrize("looks", [1, 4])
def test_speckle_on_a_constant_image_has_gamma_statistics(looks):
    """Constant intensity c times the speckle: mean c, variance c^2 / L (Gamma(L, 1/L)), the
    log-speckle mean psi(L) - ln L in dB, and the predicted grain correlation. Four 256^2
    fields hold ~70k independent grains (2 pi sigma_y sigma_x = 3.8 px per grain): the
    standard errors are 0.4 % (mean, L = 1) and 1.1 % (variance, L = 1); tolerances ~5 SE."""
    rng = np.random.default_rng(0)
    c = 0.3
    n = np.stack([speckle_field((256, 256), looks, rng) for _ in range(4)])
    assert abs(float((c * n).mean()) / c - 1.0) < 0.02
    assert abs(float((c * n).var()) / (c * c / looks) - 1.0) < 0.06
    if looks == 1:
        assert abs(float((n > 1).mean()) - np.exp(-1.0)) < 0.01  # exponential tail
    db = 10.0 * np.log10(n)
    assert abs(float(db.mean()) - log_speckle_mean_db(looks)) < 0.1
    assert log_speckle_mean_db(1) == pytest.approx(-2.507, abs=1e-3)
    rows = np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1]
    cols = np.corrcoef(n[:, :, :-1].ravel(), n[:, :, 1:].ravel())[0, 1]
    assert abs(rows - _lag1_prediction(SPECKLE_SIGMA[0])) < 0.03
    assert abs(cols - _lag1_prediction(SPECKLE_SIGMA[1])) < 0.03


def _rises_db(profile: np.ndarray, min_db: float) -> int:
    """Number of runs of increasing values (in dB) that rise by more than ``min_db`` in all."""
    d = np.diff(10.0 * np.log10(profile))
    run, rises = 0.0, 0
    for step in d:
        if step > 0:
            run += step
            continue
        rises, run = rises + (run > min_db), 0.0
    return rises + (run > min_db)


def test_clean_scan_is_a_layered_retina_under_a_dark_vitreous():
    """Intensity in [floor, 1]; the top rows are the vitreous noise floor; down a typical
    column the retina alternates dark and bright layers: 5 rises by > 3 dB (vitreous -> RNFL,
    GCL -> IPL, INL -> OPL, ONL -> EZ, OS -> RPE), >= 3 where the foveal pit thins the inner
    layers or a vessel interrupts them."""
    img = retina_bscan((128, 128), np.random.default_rng(3))
    floor = 10.0 ** (FLOOR_DB / 10.0)
    assert img.dtype == np.float32 and img.min() >= floor - 1e-7 and img.max() <= 1.0
    assert np.allclose(img[:8], floor, rtol=1e-3)
    rises = [_rises_db(img[:, j], 3.0) for j in range(0, 128, 8)]
    assert np.median(rises) >= 5 and min(rises) >= 3


def test_speckled_display_is_unbiased_before_clipping():
    """After removing the known log-speckle mean, noisy - clean averages ~0 where the clean
    display image is mid-range (no clipping), and its std is 5.57 dB / 40 dB = 0.139."""
    rng = np.random.default_rng(1)
    clean = np.full((128, 128), 10.0 ** (-15.0 / 10.0))
    noisy = np.concatenate([speckle(clean, 1, rng) for _ in range(4)])
    mid = (-15.0 - DB_WINDOW[0]) / (DB_WINDOW[1] - DB_WINDOW[0])
    resid = noisy[(noisy > 0) & (noisy < 1)] - mid
    assert abs(float(resid.mean())) < 0.01
    assert abs(float((noisy - mid).std()) - 0.139) < 0.01


def test_items_are_reproducible_and_splits_differ():
    a, b = OCTScans("train", size=32, seed=2, length=16), OCTScans("train", size=32, seed=2)
    item = a[3]
    assert set(item) == {"noisy", "image"}
    for key in item:
        assert item[key].shape == (1, 32, 32) and item[key].dtype == torch.float32
        assert 0 <= float(item[key].min()) and float(item[key].max()) <= 1
        assert torch.equal(item[key], b[3][key])
    a.set_epoch(1)
    assert not torch.equal(a[3]["image"], item["image"])
    test = OCTScans("test", size=32, seed=2, length=16)
    test.set_epoch(5)
    assert torch.equal(test[0]["noisy"], OCTScans("test", size=32, seed=2)[0]["noisy"])
    val = OCTScans("val", size=32, seed=2, length=16)
    for other in (a, val):
        dist = torch.cdist(torch.stack([test[i]["image"].flatten() for i in range(16)]),
                           torch.stack([other[i]["image"].flatten() for i in range(16)]))
        assert float(dist.min()) > 1.0  # no scan shared (L2 over 1024 px)


def test_augment_flips_and_shifts_the_clean_scan_only():
    plain = OCTScans("test", size=32, length=4, augment=False)
    moved = OCTScans("test", size=32, length=4, augment=True)
    assert not plain.augment and OCTScans("train", size=32).augment
    assert any(not torch.equal(plain[i]["image"], moved[i]["image"]) for i in range(4))


def test_noisy_is_poor_and_nlm_and_tv_improve_it():
    """8 test scans, 64 px, L = 1. Measured: noisy 18.3-18.7 dB (mean 18.45); NLM +6.05 to
    +6.35 dB (min, mean), TV (weight 0.1) +5.6 / +5.9 dB. L = 4 noisy: 25.0 dB."""
    items = [OCTScans("test", size=64, length=8)[i] for i in range(8)]
    noisy = torch.stack([it["noisy"] for it in items])
    clean = torch.stack([it["image"] for it in items])
    base = psnr_batch(noisy, clean, 1.0)
    assert np.all((base > 17.5) & (base < 19.5))
    nlm, tv = nlm_baseline(noisy), tv_baseline(noisy, 0.1)
    assert nlm.shape == tv.shape == noisy.shape and nlm.dtype == torch.float32
    assert float(nlm.min()) >= 0 and float(tv.max()) <= 1
    assert np.all(psnr_batch(nlm, clean, 1.0) - base > 5.5)
    assert np.all(psnr_batch(tv, clean, 1.0) - base > 5.0)
    four = OCTScans("test", size=64, looks=4, length=2)[0]
    assert 23.5 < float(psnr_batch(four["noisy"][None], four["image"][None], 1.0)[0]) < 26.5


def test_registered_as_training_data():
    ds = make_dataset(DataConfig(dataset="oct_scans", length=10), 32)
    assert isinstance(ds, OCTScans) and len(ds) == 10 and ds.augment
    val = make_dataset(DataConfig(dataset="oct_scans"), 32, split="val")
    assert val.split == "val" and len(val) == 64 and not val.augment


@pytest.mark.parametrize("kwargs", [dict(split="all"), dict(size=8), dict(looks=0),
                                    dict(looks=1.5), dict(seed=-1), dict(length=0)])
def test_bad_dataset_arguments_raise_one_line_config_errors(kwargs):
    with pytest.raises(ConfigError) as err:
        OCTScans(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_baseline_arguments():
    x = torch.rand(1, 1, 16, 16)
    for call in (lambda: tv_baseline(x, 0.0), lambda: nlm_baseline(x, h=-1.0),
                 lambda: speckle_field((16, 16), 0, np.random.default_rng(0))):
        with pytest.raises(ConfigError) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(InputError):
        tv_baseline(torch.rand(16, 16))
    with pytest.raises(InputError):
        speckle(np.zeros((8, 8)), 1, np.random.default_rng(0))
