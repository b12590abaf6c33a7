"""The Python API: Tweedie denoising equals the closed-form posterior mean under a Gaussian
prior; sampling is seeded; user files are read, normalised and size-checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gaussian_oracle import GaussianEpsNet, random_gaussian
from meddiff import api
from meddiff.core.model import Denoiser
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.writers import save_nifti
from meddiff.errors import ConfigError, InputError
from meddiff.zoo.store import DiffusionSpec, LoadedModel
from tiny_model import save_tiny


def _gaussian_model(mu, cov) -> LoadedModel:
    sched = NoiseSchedule("linear")
    spec = DiffusionSpec(image_size=4)
    return LoadedModel("gauss", Denoiser(GaussianEpsNet(mu, cov, sched), sched), spec, {})


def test_tweedie_denoising_is_the_exact_posterior_mean():
    """Prior x ~ N(mu, C) in model space, y = x + 2 sigma n (image-space noise sigma):
    E[x | y] = mu + C (C + 4 sigma^2 I)^{-1} (y - mu)."""
    mu, cov = random_gaussian(16, seed=4)
    mu, cov = 0.3 * mu, 0.05 * cov  # keep images inside [0, 1] so clipping does not act
    model = _gaussian_model(mu, cov)
    sigma = float(model.denoiser.schedule.sigma_ve(30.0)) / 2  # an exact training time
    g = torch.Generator().manual_seed(0)
    x = mu + torch.randn(64, 16, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    y = x + 2 * sigma * torch.randn(64, 16, generator=g, dtype=torch.float64)
    expected = mu + (y - mu) @ torch.linalg.solve(cov + 4 * sigma ** 2 * torch.eye(16, dtype=torch.float64), cov).T
    out = api.denoise(model, ((y + 1) / 2).reshape(64, 1, 4, 4).float(), sigma, method="tweedie")
    assert torch.allclose(out.reshape(64, 16).double() * 2 - 1, expected, atol=2e-5)
    assert model.denoiser.nfe == 1


def test_ddpm_denoising_averages_towards_the_posterior_mean():
    mu, cov = random_gaussian(16, seed=5)
    mu, cov = 0.3 * mu, 0.05 * cov
    model = _gaussian_model(mu, cov)
    sigma = float(model.denoiser.schedule.sigma_ve(60.0)) / 2
    y01 = torch.full((1, 1, 4, 4), 0.55).repeat(2000, 1, 1, 1)
    one = api.denoise(model, y01, sigma, method="ddpm", steps=60, seed=1)
    mmse = api.denoise(model, y01[:1], sigma, method="tweedie")
    assert (one.mean(0) - mmse[0]).abs().max() < 0.004  # posterior samples average to the mean
    assert one.std(0).mean() > 0.01  # ... and are spread


def test_sampling_is_seeded(tmp_path):
    model = api.load_model(str(save_tiny(tmp_path)), device="cpu")
    a = api.sample(model, n=3, steps=4, seed=7)
    b = api.sample(model, n=3, steps=4, seed=7)
    c = api.sample(model, n=3, steps=4, seed=8)
    assert a.shape == (3, 1, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    d = api.sample(model, n=3, steps=4, seed=7, sampler="ddpm")
    assert not torch.equal(a, d)
    with pytest.raises(ConfigError, match="unknown sampler"):
        api.sample(model, sampler="euler")
    with pytest.raises(ConfigError, match="steps must be in"):
        api.sample(model, steps=0)


def test_read_slices_normalises_checks_size_and_restores(tmp_path):
    g = np.random.default_rng(0)
    vol = (g.random((16, 16, 3)) * 1000 + 50).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    path = save_nifti(tmp_path / "v.nii.gz", vol, affine)
    sl = api.read_slices(str(path), size=16)
    assert sl.images.shape == (3, 1, 16, 16)
    assert float(sl.images.min()) == 0 and float(sl.images.max()) == 1
    back = sl.restore(sl.images)
    inside = (vol > sl.window[0]) & (vol < sl.window[1])
    assert np.allclose(back[inside], vol[inside], rtol=1e-5)
    native = api.read_slices(str(path), size=8)  # the file's own grid, not the training size
    assert torch.equal(native.images, sl.images) and native.shape == (16, 16)
    padded = api.read_slices(str(path), size=8, divisor=32)  # reflect-padded to 32 x 32
    assert padded.images.shape == (3, 1, 32, 32) and padded.pad == (8, 8, 8, 8)
    assert torch.equal(padded.crop(padded.images), sl.images)
    assert torch.equal(padded.images[..., 7, 8:24], sl.images[..., 1, :])  # reflected
    assert np.allclose(padded.restore(padded.images), back)
    small = api.read_slices(str(path), size=8, resize=True)
    assert small.images.shape == (3, 1, 8, 8) and small.restore(small.images).shape == vol.shape


def test_denoise_refuses_bad_sigma():
    mu, cov = random_gaussian(16)
    with pytest.raises(ConfigError, match="sigma must be in"):
        api.denoise(_gaussian_model(mu, cov), torch.zeros(1, 1, 4, 4), 0.0)


def test_every_api_name_resolves_and_listing_needs_no_task_module():
    """The lazily imported names exist where the API says; method choices come from the
    registry (a modifier such as R8's warm start is an option, not a choice)."""
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        api.nope  # noqa: B018
    recon = api.method_choices("reconstruction")
    assert {"score-mri", "mcg", "zero-filled", "cs"} <= set(recon) and "warm-start" not in recon
    assert api.method_choices("detection") == ("anoddpm", "wolleb", "diff-scm", "latent")
    with pytest.raises(InputError, match="unknown method family"):
        api.method_choices("nope")
