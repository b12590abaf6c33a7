"""Oracle tests: with an exact Gaussian denoiser every sampler must reproduce the data
distribution, DDIM inversion must round-trip, and gradient guidance with the exact likelihood
must sample the closed-form posterior."""
from __future__ import annotations

import pytest
import torch

from gaussian_oracle import GaussianEpsNet, gaussian_posterior, random_gaussian, sample_stats
from meddiff.core.guidance import GradientGuidance
from meddiff.core.model import Denoiser
from meddiff.core.samplers import ddim, ddim_invert, generate, get_sampler, partial_diffusion
from meddiff.core.schedule import NoiseSchedule

SHAPE = (1, 2, 2)  # (C, H, W): a 4-dimensional Gaussian laid out as an image
N = 6000


@pytest.fixture(scope="module")
def gauss():
    mu, cov = random_gaussian(4, seed=1)
    return mu, cov


def _model(mu, cov, kind="linear", param="eps"):
    sched = NoiseSchedule(kind)
    return Denoiser(GaussianEpsNet(mu, cov, sched, param), sched, parametrization=param)


@pytest.mark.parametrize("sampler,steps,opts", [
    ("ddpm", 1000, {}),
    ("ddim", 100, {"eta": 0.0}),
    ("ddim", 250, {"eta": 1.0}),
    ("dpmpp_2m", 20, {}),
    ("pc_ve", 300, {"n_corrector": 0}),
    ("pc_vp", 300, {"n_corrector": 0}),
])
def test_sampler_reproduces_gaussian(gauss, sampler, steps, opts):
    mu, cov = gauss
    model = _model(mu, cov)
    x = generate(model, (N, *SHAPE), sampler=sampler, steps=steps,
                 generator=torch.Generator().manual_seed(0), **opts)
    m, c = sample_stats(x)
    assert (m - mu).abs().max() < 0.03, (m, mu)
    assert (c - cov).abs().max() < 0.04, (c, cov)


@pytest.mark.parametrize("sampler", ["pc_ve", "pc_vp"])
def test_langevin_corrector_keeps_the_distribution_in_high_dimension(sampler):
    """Song's signal-to-noise step rule assumes concentrated norms, i.e. many dimensions.

    The unadjusted Langevin step ``x + e score + sqrt(2e) z`` on N(0, s^2) has stationary variance
    ``s^2 / (1 - e / (2 s^2))``; the rule sets ``e = 2 snr^2 s^2`` in high dimension, so the
    corrector inflates the variance by ``1 / (1 - snr^2)`` (2.6 % at snr 0.16)."""
    mu, cov = random_gaussian(256, seed=2)
    model = _model(mu, cov)
    x = generate(model, (1500, 1, 16, 16), sampler=sampler, steps=200, n_corrector=1, snr=0.16,
                 generator=torch.Generator().manual_seed(0))
    m, c = sample_stats(x)
    assert (m - mu).abs().max() < 0.1  # 1500 samples: standard error of a mean ~0.026
    expected = 1 / (1 - 0.16 ** 2)
    assert abs(float(torch.trace(c) / torch.trace(cov)) - expected) < 0.012
    assert (torch.diagonal(c) / torch.diagonal(cov) - 1).abs().mean() < 0.06


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_parametrizations_agree(gauss, param, kind):
    mu, cov = gauss
    ref, other = _model(mu, cov, kind, "eps"), _model(mu, cov, kind, param)
    x = torch.randn(8, *SHAPE)
    for t in (0, 10, 500, 900):  # at t=999 float32 roundoff dominates the x0 <-> eps maps
        p, q = ref.predict(x, t), other.predict(x, t)
        assert torch.allclose(p.eps, q.eps, atol=1e-4) and torch.allclose(p.x0, q.x0, atol=1e-3)


def test_ddim_inversion_round_trip_and_latent_is_standard_normal(gauss):
    mu, cov = gauss
    model = _model(mu, cov)
    g = torch.Generator().manual_seed(3)
    x0 = (mu + torch.randn(N, 4, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T)
    x0 = x0.reshape(N, *SHAPE).float()
    ts = model.schedule.timesteps(200)
    z = ddim_invert(model, x0, ts)
    _, cz = sample_stats(z)
    assert (cz - torch.eye(4, dtype=torch.float64)).abs().max() < 0.06
    back = ddim(model, z, ts)
    err = (back - x0).double()
    assert err.pow(2).mean().sqrt() < 0.02 and err.abs().max() < 0.08


def test_partial_diffusion_at_zero_noise_is_identity_and_counts_nfe(gauss):
    mu, cov = gauss
    model = _model(mu, cov)
    x0 = mu.reshape(1, *SHAPE).float().repeat(4, 1, 1, 1)
    out = partial_diffusion(model, x0, t0=0, sampler="ddim", generator=torch.Generator().manual_seed(0))
    assert model.nfe == 1 and (out - x0).abs().max() < 0.03


def test_guidance_with_exact_likelihood_samples_the_posterior(gauss):
    """y = A x + n with Gaussian prior: p(y | x_t) is Gaussian in closed form, so gradient
    guidance at scale 1 gives the exact conditional score and the samples must match the
    closed-form posterior mean and covariance."""
    mu, cov = gauss
    model = _model(mu, cov)
    g = torch.Generator().manual_seed(5)
    a_mat = torch.randn(2, 4, generator=g, dtype=torch.float64)
    noise_std = 0.1
    x_true = mu + torch.linalg.cholesky(cov) @ torch.randn(4, generator=g, dtype=torch.float64)
    y = a_mat @ x_true + noise_std * torch.randn(2, generator=g, dtype=torch.float64)
    sched = model.schedule

    def log_lik(x_t, t):
        ab = sched.alpha_bar(t[:1].double())
        v_t = torch.linalg.inv(torch.linalg.inv(cov) + ab / (1 - ab) * torch.eye(4, dtype=torch.float64))
        m = model.predict(x_t, t[0]).x0.reshape(x_t.shape[0], -1).double()
        r = y - m @ a_mat.T
        cov_y = a_mat @ v_t @ a_mat.T + noise_std ** 2 * torch.eye(2, dtype=torch.float64)
        return -0.5 * (r @ torch.linalg.inv(cov_y) * r).sum(1)

    guided = GradientGuidance(model, log_lik, scale=1.0)
    x = generate(guided, (4000, *SHAPE), sampler="ddpm", steps=500, generator=torch.Generator().manual_seed(1))
    pm, pc = gaussian_posterior(mu, cov, a_mat, y, noise_std)
    m, c = sample_stats(x)
    assert (m - pm).abs().max() < 0.03, (m, pm)
    assert (c - pc).abs().max() < 0.03


def test_unknown_sampler_name():
    with pytest.raises(KeyError, match="unknown sampler"):
        get_sampler("euler-a")
    assert get_sampler("dpm++2m") is get_sampler("dpmpp_2m")


def test_clipping_bounds_x0_and_keeps_the_network_noise_prediction(gauss):
    mu, cov = gauss
    free, clipped = _model(mu, cov), _model(mu, cov)
    clipped.clip_x0 = (-0.1, 0.1)
    x = 3 * torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    p, q = free.predict(x, 700), clipped.predict(x, 700)
    assert torch.equal(p.eps, q.eps) and torch.equal(q.x0, p.x0.clamp(-0.1, 0.1))
    assert (p.x0.abs() > 0.1).any()
