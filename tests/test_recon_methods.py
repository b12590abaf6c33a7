"""Reconstruction methods against closed-form Gaussian posteriors, and the classical baselines.

With an exact Gaussian denoiser the posterior of ``x`` given noiseless ``y = A x`` is known
(:func:`gaussian_oracle.gaussian_posterior` with a tiny noise level), so every method's samples
can be compared with it. Projection-type methods (score-MRI, Song, MCG, DiffuseRecon) are not
exact posterior samplers when pixels are correlated, but they are exact when the prior makes
measured and unmeasured pixels independent, and they must satisfy ``A x = y``.
"""
from __future__ import annotations

import math

import pytest
import torch

from gaussian_oracle import GaussianEpsNet, gaussian_posterior, random_gaussian, sample_stats
from meddiff.consistency.views import RealView
from meddiff.core.model import Denoiser
from meddiff.core.schedule import NoiseSchedule
from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.reconstruction.baselines import cs_tv, direct, tv_objective
from meddiff.methods.reconstruction.interface import reconstruct
from meddiff.physics import Inpainting, SingleCoilMRI, SparseViewCT, random_mask_2d

SIDE, DIM, N = 4, 16, 400
SCHED = NoiseSchedule("linear")


def _model(mu, cov) -> Denoiser:
    return Denoiser(GaussianEpsNet(mu, cov, SCHED), SCHED)


def _mask() -> torch.Tensor:
    m = torch.zeros(DIM, dtype=torch.bool)
    m[torch.randperm(DIM, generator=torch.Generator().manual_seed(0))[:DIM // 2]] = True
    return m.reshape(SIDE, SIDE)


@pytest.fixture(scope="module")
def problem():
    """Correlated 16-dim Gaussian on 4x4 images, half the pixels observed, N copies of y."""
    mu, cov = random_gaussian(DIM, seed=1)
    op = Inpainting(_mask())
    g = torch.Generator().manual_seed(3)
    x_true = mu + torch.linalg.cholesky(cov) @ torch.randn(DIM, generator=g, dtype=torch.float64)
    y = op.A(x_true.float().reshape(1, 1, SIDE, SIDE)).repeat(N, 1, 1, 1)
    m = op.mask.reshape(-1)
    a_mat = torch.eye(DIM, dtype=torch.float64)[m]
    post_mean, post_cov = gaussian_posterior(mu, cov, a_mat, x_true[m], 1e-3)
    prior_err = float((mu - post_mean).abs().max())
    assert prior_err > 0.5  # the measurement moves the mean a lot: the test can tell
    return _model(mu, cov), op, y, post_mean, post_cov, prior_err


def _mean_err(x, post_mean) -> float:
    return float((sample_stats(x)[0] - post_mean).abs().max())


@pytest.mark.parametrize("method,steps,opts", [
    ("score-mri", 200, {}),
    ("score-mri", 200, {"sampler": "pc_ve"}),
    ("song", 200, {"lam": 1.0}),
    ("mcg", 200, {"alpha": 0.1}),
    ("diffuserecon", 50, {"n_samples": 3, "t_refine": 20}),
])
def test_projection_methods_are_consistent_and_approach_the_posterior_mean(problem, method, steps, opts):
    """Measured mean errors relative to the prior's (0.86) over seeds 0-3: score-MRI 0.18-0.25,
    Song 0.17-0.24, MCG 0.05-0.14, DiffuseRecon 0.26-0.28: biased (correlated pixels) but far
    closer to the posterior than the prior."""
    model, op, y, post_mean, _, prior_err = problem
    rec = reconstruct(model, op, y, method, steps, generator=0, **opts)
    assert float((op.A(rec.x) - y).abs().max()) < 1e-4
    assert _mean_err(rec.x, post_mean) < 0.35 * prior_err


@pytest.mark.parametrize("method,opts", [("score-mri", {"n_corrector": 0}),
                                         ("song", {"sampler": "ddpm"})])
def test_projection_samples_the_exact_posterior_for_independent_pixels(method, opts):
    """Diagonal prior covariance: the posterior keeps the prior on unobserved pixels and the
    measurement on observed ones, which replacement reproduces exactly. (No Langevin corrector:
    its signal-to-noise step rule inflates variances by ~15 % in 8 free dimensions.)"""
    mu, cov = random_gaussian(DIM, seed=4)
    cov = torch.diag(torch.diagonal(cov))
    op = Inpainting(_mask())
    x_obs = torch.full((N * 5, 1, SIDE, SIDE), 0.8)
    rec = reconstruct(_model(mu, cov), op, op.A(x_obs), method, 200, generator=1, **opts)
    m, c = sample_stats(rec.x)
    free = ~op.mask.reshape(-1)
    assert float((m[free] - mu[free]).abs().max()) < 0.06
    assert float((c.diagonal()[free] / cov.diagonal()[free] - 1).abs().max()) < 0.15
    assert float((rec.x[..., op.mask] - 0.8).abs().max()) < 1e-5


@pytest.mark.parametrize("method,opts", [("score-mri", {"n_corrector": 0}),
                                         ("song", {"sampler": "ddpm"})])
def test_noise_aware_consistency_does_not_pin_pixels_to_noisy_data(method, opts):
    """Independent pixels observed with Gaussian noise (variance 0.1, comparable to the prior's
    0.05-0.5): the posterior mean of an observed pixel lies between the prior mean and ``y``.
    Treating the data as exact pins the pixels to ``y`` (error 0.33, zero spread); told the
    noise variance, the projecting methods move towards the posterior (measured errors
    0.22-0.26) and keep a spread. (MCG's gradient step still fits ``y`` here: its step is
    normalised by the residual, not weighted by the noise.)"""
    mu, cov = random_gaussian(DIM, seed=4)
    c = torch.diagonal(cov)
    model, op, v = _model(mu, torch.diag(c)), Inpainting(_mask()), 0.1
    y = op.A(torch.full((1000, 1, SIDE, SIDE), 0.8))
    post_mean = (mu / c + 0.8 / v) / (1 / c + 1 / v)
    obs = op.mask.reshape(-1)

    def error_and_spread(**kw) -> tuple[float, float]:
        m, cv = sample_stats(reconstruct(model, op, y, method, 100, generator=1, **opts, **kw).x)
        return float((m[obs] - post_mean[obs]).abs().max()), float(cv.diagonal()[obs].min())

    exact_err, exact_spread = error_and_spread()
    aware_err, aware_spread = error_and_spread(noise_var=v)
    assert exact_err > 0.3 and exact_spread < 1e-6
    assert aware_err < 0.85 * exact_err and aware_spread > 0.005


def test_dps_moves_the_mean_to_the_posterior(problem):
    """DPS is approximate and leaves a residual, but with the exact model its mean is far
    closer to the posterior mean than the prior's (measured: 0.07 vs 0.86)."""
    model, op, y, post_mean, _, prior_err = problem
    rec = reconstruct(model, op, y, "dps", 200, generator=0, alpha=0.1)
    assert _mean_err(rec.x, post_mean) < 0.2 * prior_err
    assert rec.nfe == 200
    res = (op.A(rec.x) - y).reshape(N, -1).norm(dim=1).mean()
    prior_res = (op.A(model.net.mu.float().reshape(1, 1, SIDE, SIDE)) - y).reshape(N, -1).norm(dim=1).mean()
    assert float(res) < 0.2 * float(prior_res)


def test_langevin_chain_mean_and_uncertainty(problem):
    model, op, y, post_mean, post_cov, prior_err = problem
    rec = reconstruct(model, op, y[:100], "langevin", 100, generator=0, sigma=0.1, n_chain=200)
    assert _mean_err(rec.x, post_mean) < 0.2 * prior_err  # measured 0.12-0.15 over seeds 0-3
    std = rec.std.mean(0).reshape(-1)
    observed = op.mask.reshape(-1)
    assert float(std[observed].max()) < 0.12  # measured pixels: only the chain's noise ~0.07
    assert float(std[~observed].mean()) > 1.5 * float(std[observed].mean())
    assert rec.nfe == 100 + 50 + 200  # start sample + burn-in (default) + chain


def test_score_mri_on_complex_mri_through_the_batch_view():
    """Real and imaginary parts as batch items of a real Gaussian prior; single-coil Cartesian
    MRI; the posterior is computed from the dense real matrix of the view."""
    mu, cov = random_gaussian(DIM, seed=5)
    op = RealView(SingleCoilMRI(random_mask_2d((SIDE, SIDE), 2, center_fraction=0.5, seed=0)))
    g = torch.Generator().manual_seed(8)
    chol = torch.linalg.cholesky(cov)
    x_true = (mu[:, None] + chol @ torch.randn(DIM, 2, generator=g, dtype=torch.float64)).T
    y = op.A(x_true.float().reshape(2, 1, SIDE, SIDE)).repeat(N, 1, 1, 1)  # items: (re, im)
    rec = reconstruct(_model(mu, cov), op, y, "score-mri", 200, generator=0)
    assert rec.x.shape == (2 * N, 1, SIDE, SIDE)
    assert float((op.A(rec.x) - y).abs().max()) < 1e-4
    # dense real matrix of the view: measured (real, imag) k-space of each model-space basis vector
    basis = torch.eye(2 * DIM, dtype=torch.float64).reshape(2 * DIM, 2, 1, SIDE, SIDE)
    m = op.operator.mask
    k = torch.stack([op.A(e)[0, 0][m] for e in basis])  # (2 DIM, measured) complex
    a_mat = torch.cat([k.real, k.imag], 1).T
    k_true = y[0, 0][m].to(torch.complex128)
    big_mu, big_cov = torch.cat([mu, mu]), torch.block_diag(cov, cov)
    pm, _ = gaussian_posterior(big_mu, big_cov, a_mat, torch.cat([k_true.real, k_true.imag]), 1e-3)
    xs = torch.cat([rec.x[:N].reshape(N, -1), rec.x[N:].reshape(N, -1)], 1).double()
    prior_err = float((big_mu - pm).abs().max())
    assert float((xs.mean(0) - pm).abs().max()) < 0.35 * prior_err


@pytest.mark.parametrize("method", ["song", "score-mri", "mcg"])
def test_warm_start_at_zero_with_the_exact_image_returns_it(problem, method):
    model, op, y, *_ = problem
    x_true = op.A_adjoint(y[:4]) + 0.0
    x_true[..., ~op.mask] = model.net.mu.float().reshape(SIDE, SIDE)[~op.mask]
    opts = {"song": {"sampler": "ddpm"}, "score-mri": {"n_corrector": 0}}.get(method, {})
    nfe0 = model.nfe
    rec = reconstruct(model, op, y[:4], method, 50, t0=0, init=x_true, generator=0, **opts)
    assert float((rec.x - x_true).abs().max()) < 0.03
    assert model.nfe - nfe0 == rec.nfe == 1


def test_warm_start_from_zero_filled_uses_only_the_late_steps(problem):
    """CCDF from the default init A^+ y (zero-filled) at t0 = 300: 301 evaluations instead of
    1000; the init's zeros on unobserved pixels leave a bias (measured 0.30-0.33 of the prior's error over seeds 0-3)."""
    model, op, y, post_mean, _, prior_err = problem
    rec = reconstruct(model, op, y, "song", 1000, t0=300, generator=0, sampler="ddpm")
    assert rec.nfe == 301
    assert float((op.A(rec.x) - y).abs().max()) < 1e-4
    assert _mean_err(rec.x, post_mean) < 0.4 * prior_err


DIFFUSION = sorted(n for n, i in registry.methods("reconstruction").items() if not i.baseline)


def test_the_diffusion_methods_are_the_papers_dps_and_ddrm():
    assert DIFFUSION == ["ddrm", "diffuserecon", "dps", "langevin", "mcg", "score-mri", "song"]


@pytest.mark.parametrize("method", DIFFUSION)
def test_every_method_is_reproducible_with_its_seed(problem, method):
    model, op, y, *_ = problem
    opts = {"n_chain": 10, "burn_in": 5} if method == "langevin" else {}
    run = lambda seed: reconstruct(model, op, y[:2], method, 20, generator=seed, **opts).x  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_user_errors(problem):
    model, op, y, *_ = problem
    with pytest.raises(InputError, match="unknown diffusion reconstruction method 'nope'"):
        reconstruct(model, op, y, "nope", 10, generator=0)
    with pytest.raises(InputError, match="'cs'; choose from ddrm, diffuserecon"):
        reconstruct(model, op, y, "cs", 10, generator=0)
    with pytest.raises(InputError, match="t0"):
        reconstruct(model, op, y, "song", 10, init=op.A_adjoint(y), generator=0)
    with pytest.raises(InputError, match="shape"):
        reconstruct(model, op, y, "song", 10, t0=5, init=torch.zeros(1, 1, 2, 2), generator=0)
    with pytest.raises(InputError, match="t0 must be"):
        reconstruct(model, op, y, "song", 10, t0=1000, generator=0)
    with pytest.raises(InputError, match="Generator"):
        reconstruct(model, op, y, "song", 10)
    with pytest.raises(InputError, match="predictor-corrector"):
        reconstruct(model, op, y, "score-mri", 10, generator=0, sampler="ddim")


# -- baselines ---------------------------------------------------------------------------------
def _phantom(n: int = 32) -> torch.Tensor:
    """Piecewise-constant phantom (1, 1, n, n) in [0, 1]: ellipse, inner ellipse, bar."""
    yy, xx = torch.meshgrid(torch.arange(n) - n / 2 + 0.5, torch.arange(n) - n / 2 + 0.5, indexing="ij")
    x = ((yy / (0.42 * n)) ** 2 + (xx / (0.32 * n)) ** 2 < 1).float() * 0.6
    x += (((yy - 3) / (0.15 * n)) ** 2 + ((xx + 4) / (0.1 * n)) ** 2 < 1).float() * 0.4
    x[(xx.abs() < 3) & ((yy + 8).abs() < 2)] = 0.95
    return x[None, None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float((a - b).abs().pow(2).mean()))


def test_cs_tv_recovers_a_phantom_from_4x_undersampled_mri():
    """Measured: zero-filled 18.1 dB, CS-TV 36+ dB (500 PDHG iterations, lam 0.01)."""
    x = _phantom().to(torch.complex64)
    op = SingleCoilMRI(random_mask_2d((32, 32), 4, seed=0))
    y = op.A(x)
    zf = direct(op, y)
    assert torch.equal(zf, op.A_adjoint(y))
    rec = cs_tv(op, y, lam=0.01, n_iter=500)
    p_zf, p_tv = _psnr(zf.abs(), x.abs()), _psnr(rec.abs(), x.abs())
    assert p_zf < 20 and p_tv > p_zf + 12, (p_zf, p_tv)
    # a minimiser beats the truth (which has zero data misfit) on the objective
    assert float(tv_objective(op, rec, y, 0.01)) <= float(tv_objective(op, x, y, 0.01)) * 1.001


def test_cs_tv_beats_fbp_on_sparse_view_ct():
    x = _phantom(24) * 0.1  # attenuation per pixel
    op = SparseViewCT(12, 24)
    y = op.A(x)
    fbp = direct(op, y)
    assert torch.equal(fbp, op.fbp(y))
    rec = cs_tv(op, y, lam=2e-4, n_iter=400)
    scale = lambda v: v / 0.1  # noqa: E731  PSNR on the [0, 1] phantom scale
    assert _psnr(scale(rec), scale(x)) > _psnr(scale(fbp), scale(x)) + 6
