"""DDRM (Kawar et al. 2022, arXiv 2201.11793) against closed forms.

- The spectral views are the SVD: their singular values and ``V S^+ U^T y`` equal those of a
  dense SVD of the model-space operator (single-coil MRI in every real view, with the
  Hermitian pairs of the ``"real"`` view).
- With an exact Gaussian denoiser every DDRM step is affine in the state plus Gaussian noise,
  so the output's mean and covariance given ``y`` follow in closed form; :func:`ddrm_moments`
  computes them from eqs. 7-8 in the basis of a dense ``torch.linalg.svd`` (independent of the
  method's spectral views), and the samples must match them.
- DDRM is not an exact posterior sampler (the paper's Theorem 1 is about the training
  objective), but for Gaussian denoising its mean is far closer to the posterior mean than the
  prior mean or the measurement.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from gaussian_oracle import GaussianEpsNet, gaussian_posterior, random_gaussian, sample_stats
from meddiff import api
from meddiff.cli import main
from meddiff.consistency.views import RealView
from meddiff.core.model import Denoiser
from meddiff.core.samplers import ddim
from meddiff.core.schedule import NoiseSchedule
from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.reconstruction.ddrm import ddrm, reflect, spectral_view
from meddiff.methods.reconstruction.interface import reconstruct
from meddiff.physics import (Denoising, GaussianNoise, Inpainting, MultiCoilMRI, PhaseModulated,
                             SingleCoilMRI, SparseViewCT, birdcage_maps, fft2c, random_mask_2d)

SIDE, DIM, N, STEPS = 4, 16, 1000, 20
SCHED = NoiseSchedule("linear")


def _model(mu, cov) -> Denoiser:
    return Denoiser(GaussianEpsNet(mu, cov, SCHED), SCHED)


def _mri_mask() -> torch.Tensor:
    return random_mask_2d((SIDE, SIDE), 2, center_fraction=0.5, seed=0)


def _pixel_mask() -> torch.Tensor:
    m = torch.zeros(DIM, dtype=torch.bool)
    m[torch.randperm(DIM, generator=torch.Generator().manual_seed(0))[:DIM // 2]] = True
    return m.reshape(SIDE, SIDE)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A measurement / spectral tensor as one real vector (real parts, then imaginary)."""
    t = t.reshape(-1)
    return torch.cat([t.real, t.imag]).double() if t.is_complex() else t.double()


def dense(op, model_shape: tuple[int, ...]) -> torch.Tensor:
    """The real matrix of ``op`` on flattened model-space tensors of ``model_shape``."""
    n = math.prod(model_shape)
    basis = torch.eye(n).reshape(n, *model_shape)
    return torch.stack([_flat(op.A(e)) for e in basis], 1)


def _per_sample(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(samples, D) model-space vectors of a result; ``batch``: item i is (x[i], x[B + i])."""
    if mode == "batch":
        re, im = x.chunk(2, 0)
        return torch.cat([re.flatten(1), im.flatten(1)], 1).double()
    return x.flatten(1).double()


# ------------------------------------------------------------------------------ spectral views
@pytest.mark.parametrize("hw", [(4, 4), (5, 4), (4, 5)])
def test_reflect_is_the_negated_frequency_of_the_centred_fft(hw):
    x = torch.randn(2, 1, *hw, generator=torch.Generator().manual_seed(0))
    k = fft2c(x.to(torch.complex64))
    assert torch.allclose(k, reflect(k).conj(), atol=1e-6)


@pytest.mark.parametrize("mode,model_shape", [("batch", (2, 1, SIDE, SIDE)),
                                              ("channels", (1, 2, SIDE, SIDE)),
                                              ("real", (1, 1, SIDE, SIDE))])
def test_mri_spectral_views_are_the_svd(mode, model_shape):
    mask = _mri_mask()
    if mode == "real":  # the test covers pairs measured once (singular value 1/sqrt(2))
        assert bool((mask != reflect(mask)).any())
    view = RealView(SingleCoilMRI(mask), mode)
    g = torch.Generator().manual_seed(1)
    y = view.operator.restrict(torch.randn(1, 1, SIDE, SIDE, dtype=torch.complex64, generator=g))
    spec = spectral_view(view, y, 0.0)
    a_mat = dense(view, model_shape)
    s = spec.s.reshape(-1).double()
    s = s if mode == "real" else torch.cat([s, s])  # one coordinate per real scalar
    assert torch.allclose(s.sort().values, torch.linalg.svdvals(a_mat).sort().values, atol=1e-5)
    x_dagger = spec.from_spec(spec.y_bar)  # V S^+ U^T y
    assert x_dagger.shape == model_shape
    assert torch.allclose(x_dagger.reshape(-1).double(),
                          torch.linalg.pinv(a_mat) @ _flat(y), atol=1e-5)
    x = torch.randn(model_shape, generator=g)
    assert torch.allclose(spec.from_spec(spec.to_spec(x)), x, atol=1e-5)
    assert math.isclose(float(spec.to_spec(x).abs().pow(2).sum()), float(x.pow(2).sum()),
                        rel_tol=1e-5)


# ------------------------------------------------------------------------------ closed forms
def ddrm_moments(a_mat, sigma_y, mu, cov, y, eta, eta_b, steps=STEPS):
    """Mean and covariance of DDRM's output given the real measurement vector ``y`` for
    ``x ~ N(mu, cov)``, an exact denoiser and ``y = a_mat x + N(0, sigma_y^2 I)``, by eqs. 7-8
    in the basis of a dense SVD (the start: pure noise, VE variance ``1 / abar_T``)."""
    u, s_min, vt = torch.linalg.svd(a_mat, full_matrices=True)
    n, r = a_mat.shape[1], len(s_min)
    s = torch.zeros(n, dtype=torch.float64)
    s[:r] = s_min
    meas = s > 1e-9
    y_bar = torch.zeros(n, dtype=torch.float64)
    y_bar[:r] = (u.T @ y)[:r] / s_min.clamp(min=1e-300)
    y_bar[~meas] = 0
    mu_b, cov_b, eye = vt @ mu, vt @ cov @ vt.T, torch.eye(n, dtype=torch.float64)
    thr = torch.where(meas, sigma_y / s.clamp(min=1e-300), torch.zeros(n, dtype=torch.float64))
    ts = [float(t) for t in SCHED.timesteps(steps)]
    sig = lambda t: float(SCHED.sigma_ve(t)) if t >= 0 else 0.0  # noqa: E731
    init = meas & (thr <= sig(ts[0]))
    mean = torch.where(init, y_bar, 0.0)
    var0 = torch.where(init, sig(ts[0]) ** 2 - thr ** 2, 1 / float(SCHED.alpha_bar(ts[0])))
    c_mat = torch.diag(var0)
    for t, t_next in zip(ts, ts[1:] + [-1.0]):
        st, sn = sig(t), sig(t_next)
        gain = cov_b @ torch.linalg.inv(cov_b + st ** 2 * eye)  # x0 = mu + G (x - mu)
        keep = math.sqrt(1 - eta ** 2) * sn
        a, b, c, d = (torch.zeros(n, dtype=torch.float64) for _ in range(4))
        for i in range(n):
            if not meas[i]:
                a[i], c[i], d[i] = 1, keep, eta * sn
            elif sn < thr[i]:
                b[i] = keep / thr[i]
                a[i], d[i] = 1 - b[i], eta * sn
            else:
                a[i], b[i] = 1 - eta_b, eta_b
                d[i] = math.sqrt(max(sn ** 2 - eta_b ** 2 * thr[i] ** 2, 0))
        lin = torch.diag(a) @ gain + torch.diag(c / st) @ (eye - gain)  # eps = (I - G)(x - mu) / st
        mean = mu_b + lin @ (mean - mu_b) + b * (y_bar - mu_b)
        c_mat = lin @ c_mat @ lin.T + torch.diag(d ** 2)
    return vt.T @ mean, vt.T @ c_mat @ vt


def _problem(name: str):
    """(model, operator, view, model-item shape, y of one image, prior mean / cov of one
    sample vector, sigma per real coordinate, eta, eta_b)."""
    g = torch.Generator().manual_seed(3)
    mu, cov = random_gaussian(DIM, seed=1)
    draw = lambda k: (mu[:, None] + torch.linalg.cholesky(cov)  # noqa: E731
                      @ torch.randn(DIM, k, generator=g, dtype=torch.float64)).T.float()
    if name == "denoising":
        op = Denoising(0.3)
        return _model(mu, cov), op, "real", (1, 1, SIDE, SIDE), \
            op(draw(1).reshape(1, 1, SIDE, SIDE), 5), mu, cov, 0.3, 1.0, 1.0
    if name == "inpainting":
        op = Inpainting(_pixel_mask(), GaussianNoise(0.4))
        return _model(mu, cov), op, "real", (1, 1, SIDE, SIDE), \
            op(draw(1).reshape(1, 1, SIDE, SIDE), 5), mu, cov, 0.4, 0.85, 0.5
    op = SingleCoilMRI(_mri_mask(), GaussianNoise(0.2))
    if name == "mri-real":
        y = op(draw(1).reshape(1, 1, SIDE, SIDE).to(torch.complex64), 5)
        return _model(mu, cov), op, "real", (1, 1, SIDE, SIDE), y, mu, cov, 0.2 / math.sqrt(2), \
            0.85, 1.0
    re, im = draw(2).reshape(2, 1, 1, SIDE, SIDE)
    y = op(torch.complex(re, im), 5)
    return _model(mu, cov), op, "batch", (2, 1, SIDE, SIDE), y, torch.cat([mu, mu]), \
        torch.block_diag(cov, cov), 0.2 / math.sqrt(2), 0.85, 1.0


@pytest.mark.parametrize("name", ["denoising", "inpainting", "mri-real", "mri-batch"])
def test_samples_have_the_closed_form_moments_of_eqs_7_8(name):
    """Mean within 5 standard errors, per-coordinate variance within 20 % (its sampling error
    is ~5 % at N = 1000): noise levels, Hermitian pairs and coefficients all enter."""
    model, op, view, shape, y, mu, cov, sigma, eta, eta_b = _problem(name)
    model_op = RealView(op, view) if op.complex_domain else op
    ref_mean, ref_cov = ddrm_moments(dense(model_op, shape), sigma, mu, cov,
                                     _flat(model_op.restrict(y)), eta, eta_b)
    rec = reconstruct(model, op, y.repeat(N, 1, 1, 1), "ddrm", STEPS, generator=0, view=view,
                      eta=eta, eta_b=eta_b)
    assert rec.nfe == STEPS and rec.x.shape == (N * shape[0], *shape[1:])
    mean, c = sample_stats(_per_sample(rec.x, view))
    ref_var = ref_cov.diagonal()
    assert float(((mean - ref_mean).abs() / (ref_var / N).sqrt()).max()) < 5
    assert float(((c.diagonal() - ref_var).abs() - 0.2 * ref_var).max()) < 1e-6


def test_gaussian_denoising_mean_is_near_the_posterior_mean():
    """sigma_y = 0.3, 20 steps: the norm of DDRM's mean error against the posterior mean,
    relative to that of the prior mean / of the measurement y, is in closed form at most
    0.23 / 0.63 with eta = eta_b = 1 and 0.07 / 0.22 with eta = 0.85 (20 random draws of x and
    y; this y: 0.18 / 0.52 and 0.06 / 0.17); an unconditional sampler or returning y fails the
    bounds. Its spread is smaller than the posterior's (mean variance ratio 0.61 / 0.37): not an
    exact posterior sampler."""
    model, op, _, _, y, mu, cov, sigma, *_ = _problem("denoising")
    post_mean, post_cov = gaussian_posterior(mu, cov, torch.eye(DIM, dtype=torch.float64),
                                             _flat(y), sigma)
    err = lambda v: float((v - post_mean).norm())  # noqa: E731
    for eta, bound_prior, bound_y in ((1.0, 0.35, 0.75), (0.85, 0.15, 0.35)):
        rec = reconstruct(model, op, y.repeat(N, 1, 1, 1), "ddrm", STEPS, generator=0, eta=eta,
                          eta_b=1.0)
        mean, c = sample_stats(rec.x)
        assert err(mean) < bound_prior * err(mu) and err(mean) < bound_y * err(_flat(y))
        assert float((c.diagonal() / post_cov.diagonal()).mean()) < 0.8


# ------------------------------------------------------------------------------ consistency
@pytest.mark.parametrize("view,shape", [("real", (3, 1, SIDE, SIDE)),
                                        ("batch", (6, 1, SIDE, SIDE))])
def test_noiseless_mri_keeps_the_sampled_k_space(view, shape):
    mu, cov = random_gaussian(DIM, seed=2)
    op = SingleCoilMRI(_mri_mask())
    rv = RealView(op, view)
    x_true = mu.float().reshape(1, 1, SIDE, SIDE) + 0.3 * torch.randn(
        shape, generator=torch.Generator().manual_seed(4))
    y = rv.A(x_true)
    rec = reconstruct(_model(mu, cov), op, y, "ddrm", 10, generator=0, view=view)
    assert float((rv.A(rec.x) - y).abs().max()) < 1e-5
    unmeasured = fft2c(rv.to_domain(rec.x))[..., ~(op.mask | reflect(op.mask))]
    assert float(unmeasured.abs().min()) > 0  # the null space is sampled, not zero-filled


def test_noiseless_inpainting_keeps_the_known_pixels_and_fills_the_rest():
    mu, cov = random_gaussian(DIM, seed=2)
    op = Inpainting(_pixel_mask())
    x_obs = torch.full((8, 1, SIDE, SIDE), 0.7)
    rec = reconstruct(_model(mu, cov), op, op.A(x_obs), "ddrm", 10, generator=0)
    assert float((rec.x[..., op.mask] - 0.7).abs().max()) < 1e-5
    assert float(rec.x[..., ~op.mask].std(0).min()) > 0.01


def test_without_measurements_and_eta_0_ddrm_is_ddim():
    """An empty inpainting mask leaves only the null-space update; at eta = 0 it is DDIM's
    deterministic step (Song et al. 2021, eq. 12 with sigma = 0), from the same start."""
    mu, cov = random_gaussian(DIM, seed=2)
    model = _model(mu, cov)
    op = Inpainting(torch.zeros(SIDE, SIDE, dtype=torch.bool))
    y = torch.zeros(4, 1, SIDE, SIDE)
    rec = reconstruct(model, op, y, "ddrm", STEPS, generator=0, eta=0.0)
    start = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    ref = ddim(model, start, SCHED.timesteps(STEPS), eta=0.0)
    assert torch.allclose(rec.x, ref, atol=1e-5)


# ------------------------------------------------------------------------------ errors, registry
def test_operators_without_a_known_svd_are_refused_in_one_line():
    mu, cov = random_gaussian(DIM, seed=2)
    model, mask = _model(mu, cov), _mri_mask()
    img = torch.ones(1, 1, SIDE, SIDE, dtype=torch.complex64)
    ct = SparseViewCT(6, SIDE)
    cases = [(ct, ct.A(torch.ones(1, 1, SIDE, SIDE))),
             (MultiCoilMRI(mask, birdcage_maps((SIDE, SIDE), 2)), None),
             (PhaseModulated(SingleCoilMRI(mask), torch.zeros(1, 1, SIDE, SIDE)), None)]
    for op, y in cases:
        with pytest.raises(InputError) as err:
            reconstruct(model, op, op.A(img) if y is None else y, "ddrm", 5, generator=0)
        assert str(err.value) == ("ddrm needs an operator with a known SVD (single-coil "
                                  "Cartesian MRI, inpainting, denoising)")
    op = Inpainting(_pixel_mask())
    y = op.A(torch.ones(1, 1, SIDE, SIDE))
    with pytest.raises(InputError, match="eta and eta_b in"):
        reconstruct(model, op, y, "ddrm", 5, generator=0, eta=1.5)
    with pytest.raises(InputError, match="noise_std >= 0"):
        reconstruct(model, op, y, "ddrm", 5, generator=0, noise_std=-1.0)


def test_ddrm_is_a_listed_diffusion_method_without_a_system(capsys):
    info = registry.methods("reconstruction")["ddrm"]
    assert not info.baseline and not info.modifier and info.system is None
    assert registry.get("reconstruction", "ddrm") is ddrm
    assert "ddrm" in api.method_choices("reconstruction")
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["methods"]
    row = next(r for r in rows if r["method"] == "ddrm")
    assert (row["family"], row["system"], row["kind"]) == ("reconstruction", "-", "diffusion")
