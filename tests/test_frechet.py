"""FD-MedEnc: Fréchet distance oracles, encoder contract, weights I/O (its training: test_objectives).

All encoder tests use randomly initialised encoders, so they do not depend on shipped weights.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from meddiff.errors import InputError
from meddiff.eval import frechet
from meddiff.eval.frechet import fd_medenc, feature_stats, frechet_distance
from meddiff.nets.feature_encoder import FeatureEncoder
from meddiff.zoo.kinds import FeatureEncoderSpec
from meddiff.zoo.store import load, save



def _random_cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or 2 * d))
    return a @ a.T / a.shape[1]


def _phantoms(n: int, seed: int, size: int = 48) -> torch.Tensor:
    """Random textured ellipses in [0, 1], (n, 1, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    out = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        a, b = rng.uniform(0.5, 0.9, 2)
        cx, cy = rng.uniform(-0.15, 0.15, 2)
        body = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 < 1
        texture = gaussian_filter(rng.standard_normal((size, size)), 1.5)
        blob = ((xx - cx - 0.2) / 0.15) ** 2 + ((yy - cy) / 0.25) ** 2 < 1
        out[i, 0] = np.clip(body * (0.55 + 0.4 * texture) + 0.3 * blob, 0, 1)
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------- Fréchet distance


def test_frechet_of_a_gaussian_with_itself_is_zero():
    rng = np.random.default_rng(0)
    mu, cov = rng.standard_normal(8), _random_cov(rng, 8)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    low_rank = _random_cov(rng, 8, rank=3)  # singular (fewer samples than dimensions)
    assert frechet_distance(mu, low_rank, mu, low_rank) == pytest.approx(0.0, abs=1e-5)


def test_frechet_closed_form_1d_and_diagonal():
    # 1-D: (1 - 3)^2 + 4 + 1 - 2 sqrt(4 * 1) = 5
    assert frechet_distance(1.0, 4.0, 3.0, 1.0) == pytest.approx(5.0, abs=1e-10)
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expect, rel=1e-10)


def test_frechet_full_covariance_matches_symmetric_eigen_formula():
    # Independent oracle: Tr (C1 C2)^{1/2} = sum sqrt(eig(C1^{1/2} C2 C1^{1/2})).
    rng = np.random.default_rng(2)
    c1, c2 = _random_cov(rng, 6), _random_cov(rng, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    w, v = np.linalg.eigh(c1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ c2 @ r1), 0, None)))
    expect = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr
    fd = frechet_distance(mu1, c1, mu2, c2)
    assert fd == pytest.approx(expect, rel=1e-8)
    assert fd == pytest.approx(frechet_distance(mu2, c2, mu1, c1), rel=1e-8)  # symmetric


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(InputError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(InputError):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(InputError):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------- encoder


def test_encoder_contract_seed_and_batch_independence():
    state = torch.random.get_rng_state()
    enc_a, enc_b = FeatureEncoder(seed=3), FeatureEncoder(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    x = _phantoms(4, seed=0)
    with torch.no_grad():
        fa = enc_a(x)
        assert fa.shape == (4, 128)
        assert torch.equal(fa, enc_b(x))
        assert not torch.allclose(fa, FeatureEncoder(seed=4)(x))
        assert torch.allclose(enc_a(x[1:2]), fa[1:2], atol=1e-5)  # GroupNorm: no batch coupling
        assert enc_a(torch.rand(2, 1, 80, 96)).shape == (2, 128)  # resized internally
    enc_a.train()
    feats = frechet.encode(enc_a, x.numpy())
    assert enc_a.training and feats.dtype == np.float64
    np.testing.assert_allclose(feats, fa.double().numpy(), atol=1e-5)


def test_feature_stats_rejects_bad_images():
    enc = FeatureEncoder()
    for bad in (torch.rand(4, 3, 16, 16), torch.rand(4, 16, 16), torch.rand(1, 1, 16, 16)):
        with pytest.raises(InputError):
            feature_stats(enc, bad)
    with pytest.raises(InputError):
        feature_stats(enc, torch.full((3, 1, 16, 16), float("nan")))


def test_fd_medenc_grows_with_blur_and_noise():
    enc = FeatureEncoder(seed=0)
    a, b = _phantoms(48, seed=10), _phantoms(48, seed=11)
    assert fd_medenc(a, a, enc) == pytest.approx(0.0, abs=1e-4)
    fd_ab = fd_medenc(a, b, enc)
    assert fd_ab == pytest.approx(fd_medenc(b, a, enc), rel=1e-6)
    mu_a, cov_a = feature_stats(enc, a)

    def fd_to(images: torch.Tensor) -> float:
        return frechet_distance(mu_a, cov_a, *feature_stats(enc, images))

    blurred = [fd_to(torch.from_numpy(gaussian_filter(a.numpy(), (0, 0, s, s))))
               for s in (0.7, 1.5, 3.0)]
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    noisy = [fd_to((a + s * noise).clamp(0, 1)) for s in (0.05, 0.15, 0.4)]
    assert all(np.diff([0.0] + blurred) > 0), blurred
    assert all(np.diff([0.0] + noisy) > 0), noisy
    assert max(blurred[-1], noisy[-1]) > fd_ab  # heavy degradation beats sampling noise


# ----------------------------------------------------------------------------- weights I/O


def test_the_encoder_comes_from_the_model_store(tmp_path):
    enc = FeatureEncoder(seed=5).eval()
    path = save(tmp_path / "enc", enc, FeatureEncoderSpec(), fp16=False)
    loaded = frechet.load_feature_encoder(path)
    x = _phantoms(3, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(x), enc(x))
        assert torch.allclose(frechet.load_feature_encoder()(x), load("feature_encoder").net(x))
    with pytest.raises(InputError, match="unknown model"):
        frechet.load_feature_encoder("no-such-encoder")
    with pytest.raises(InputError, match="not a feature-encoder"):
        frechet.load_feature_encoder("brain-prior-64")
