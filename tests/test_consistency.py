"""Data-consistency steps and model-space views: projections reach the measurement exactly,
Song's blend has the right statistics and weights, the Tweedie gradient equals its closed form
for a Gaussian prior, and the real views of MRI operators are adjoint and invertible."""
from __future__ import annotations

import pytest
import torch

from gaussian_oracle import GaussianEpsNet, random_gaussian
from meddiff.consistency.steps import (MeasurementGradient, consistency_update, gradient_step,
                                       noised_measurement, operator_norm_sq, project,
                                       projection_callback, song_step, weighted_project)
from meddiff.consistency.views import RealView, as_real
from meddiff.core.model import Denoiser
from meddiff.core.samplers import Step
from meddiff.core.schedule import NoiseSchedule
from meddiff.errors import InputError
from meddiff.physics import Inpainting, SingleCoilMRI, SparseViewCT, random_mask_2d
from meddiff.physics.base import batch_inner

H = W = 8


def _inpainting() -> Inpainting:
    mask = torch.zeros(H * W, dtype=torch.bool)
    mask[torch.randperm(H * W, generator=torch.Generator().manual_seed(0))[:H * W // 2]] = True
    return Inpainting(mask.reshape(H, W))


def _mri(mode: str) -> RealView:
    return RealView(SingleCoilMRI(random_mask_2d((H, W), 3, center_fraction=0.25, seed=1)), mode)


def _model_shape(mode: str, b: int = 3) -> tuple[int, ...]:
    return {"channels": (b, 2, H, W), "batch": (2 * b, 1, H, W), "real": (b, 1, H, W)}[mode]


@pytest.mark.parametrize("mode", ["channels", "batch", "real"])
def test_real_view_is_adjoint_and_its_pseudo_inverse_solves_consistent_data(mode):
    op = _mri(mode)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(_model_shape(mode), generator=g)
    k = op.restrict(torch.randn(op.A(x).shape, generator=g, dtype=torch.complex64))
    lhs = batch_inner(op.A(x), k).sum()
    rhs = (x * op.A_adjoint(k)).sum()
    assert abs(float(lhs - rhs)) < 1e-4 * float(lhs.abs() + 1)
    y = op.A(torch.randn(x.shape, generator=g))  # consistent with a model-space tensor
    xd = op.A_dagger(y)
    assert not xd.is_complex() and xd.shape == x.shape
    assert float((op.A(xd) - y).abs().max()) < 1e-4
    # minimum norm: the pseudo-inverse has no component in the null space
    assert float((op.A_dagger(op.A(xd)) - xd).abs().max()) < 1e-4


def test_real_view_round_trip_model_measurement_and_errors():
    op = _mri("batch")
    x = torch.randn(4, 1, H, W)
    z = op.to_domain(x)
    assert z.shape == (2, 1, H, W) and torch.equal(op.from_domain(z), x)
    assert torch.equal(z.real, x[:2]) and torch.equal(z.imag, x[2:])
    x01 = torch.rand(4, 1, H, W)
    y_img = op.A(x01)
    assert torch.allclose(op.model_measurement(y_img, x01), op.A(2 * x01 - 1), atol=1e-5)
    assert as_real(_inpainting()).__class__ is Inpainting and as_real(op) is op
    with pytest.raises(InputError):
        op.to_domain(torch.randn(3, 1, H, W))
    with pytest.raises(InputError):
        RealView(SingleCoilMRI(torch.ones(H, W)), "magnitude")


@pytest.mark.parametrize("make,shape", [(_inpainting, (3, 1, H, W)),
                                        (lambda: _mri("batch"), _model_shape("batch")),
                                        (lambda: _mri("channels"), _model_shape("channels"))])
def test_projection_is_exact_idempotent_and_weight_zero_is_identity(make, shape):
    op = make()
    g = torch.Generator().manual_seed(4)
    x_true, x = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    y = op.A(x_true)
    p = project(x, op, y)
    assert float((op.A(p) - y).abs().max()) < 1e-5
    assert float((project(p, op, y) - p).abs().max()) < 1e-5
    # only the measured component changes: the null-space part of x is kept
    assert float((op.A_dagger(op.A(p - x)) - (p - x)).abs().max()) < 1e-5
    assert torch.equal(project(x, op, y, weight=0.0), x)


def test_noised_measurement_statistics():
    op = _inpainting()
    y = torch.full((1, 1, H, W), 0.7) * op.mask
    like = torch.zeros(20000, 1, H, W)
    ab = 0.36
    yt = noised_measurement(op, y.expand_as(like), ab, like, torch.Generator().manual_seed(0))
    obs = yt[:, 0][:, op.mask]
    assert abs(float(obs.mean()) - 0.6 * 0.7) < 0.005  # sqrt(0.36) * 0.7
    assert abs(float(obs.std()) - 0.8) < 0.005  # sqrt(1 - 0.36)
    assert float(yt[:, 0][:, ~op.mask].abs().max()) == 0.0
    y_clean = noised_measurement(op, y, 1.0, like[:1], None)
    assert torch.equal(y_clean, y)


def test_song_step_blends_measured_entries_with_weight_lambda():
    op = _inpainting()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(2, 1, H, W, generator=g), op.A(torch.randn(2, 1, H, W, generator=g))
    ab, lam = 0.5, 0.3
    yt = noised_measurement(op, y, ab, x, torch.Generator().manual_seed(9))
    out = song_step(x, op, y, ab, lam, torch.Generator().manual_seed(9))
    m = op.mask
    assert torch.allclose(out[..., m], lam * yt[..., m] + (1 - lam) * x[..., m], atol=1e-6)
    assert torch.equal(out[..., ~m], x[..., ~m])
    with pytest.raises(ValueError):
        song_step(x, op, y, ab, 1.5, g)


def test_projection_callback_projects_the_ve_state():
    op = _inpainting()
    sched = NoiseSchedule()
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(2, 1, H, W, generator=g), op.A(torch.randn(2, 1, H, W, generator=g))
    cb = projection_callback(op, y, sched)
    t_next = 300.0
    a = float(sched.alpha_bar(t_next).sqrt())
    out = cb(Step(0, 310.0, t_next, x, x))
    assert torch.allclose(op.A(out / a), y, atol=1e-5)
    assert torch.allclose(op.A(cb(Step(0, 0.0, -1.0, x, x))), y, atol=1e-6)


def test_weighted_projection_is_the_gaussian_map_estimate():
    """Against the dense closed form ``z = (A^T W A + I / P)^{-1} (A^T W y + x / P)`` on a tiny
    sparse-view CT with per-ray variances; for single-coil MRI with a scalar variance it is the
    projection with weight ``P / (P + v)``."""
    op = SparseViewCT(6, 8)
    basis = torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8)
    a_mat = op.A(basis).reshape(64, -1).T  # (rays, pixels)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64)
    y = op.A(torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64))
    var = 0.5 + torch.rand(y.shape, generator=g, dtype=torch.float64)
    prior_var = 0.3
    w = torch.diag(1 / var.reshape(-1))
    lhs = a_mat.T @ w @ a_mat + torch.eye(64, dtype=torch.float64) / prior_var
    exact = torch.linalg.solve(lhs, a_mat.T @ w @ y.reshape(-1) + x.reshape(-1) / prior_var)
    z = weighted_project(x, op, y, prior_var, var, n_iter=200)
    assert float((z.reshape(-1) - exact).abs().max()) < 1e-3 * float(exact.abs().max())  # CG tol 1e-4
    assert torch.equal(weighted_project(x, op, y, 0.0, var), x)
    mri = _mri("channels")
    xm = torch.randn(_model_shape("channels"), generator=g)
    ym = mri.A(torch.randn(xm.shape, generator=g))
    assert torch.allclose(weighted_project(xm, mri, ym, 0.3, 0.1, n_iter=1),
                          project(xm, mri, ym, 0.3 / 0.4), atol=1e-5)


def test_consistency_update_fades_from_projection_to_nothing():
    """Early (state much noisier than the data) the step is the projection onto ``a y``; at
    ``t = 0`` (abar 1) nothing moves; a tiny data variance gives the projection at any time."""
    op = _inpainting()
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(2, 1, H, W, generator=g), op.A(torch.randn(2, 1, H, W, generator=g))
    early = consistency_update(x, op, y, 1e-4, 1e-3)
    assert torch.allclose(early, project(x, op, 1e-2 * y), atol=1e-3)
    assert torch.equal(consistency_update(x, op, y, 1.0, 0.1), x)
    assert torch.allclose(consistency_update(x, op, y, 0.5, 1e-9), project(x, op, 0.5 ** 0.5 * y),
                          atol=1e-5)
    half = consistency_update(x, op, y, 0.5, 1.0, weight=0.5)
    m = op.mask  # P = 0.5, noise 0.5: gain 1/2, times the weight 1/2
    assert torch.allclose(half[..., m], x[..., m] + 0.25 * (0.5 ** 0.5 * y[..., m] - x[..., m]),
                          atol=1e-5)


def test_measurement_gradient_matches_the_gaussian_closed_form():
    """For x0 ~ N(mu, C), x0_hat(x_t) = (x_t - s eps)/a is affine with Jacobian
    J = (I - s^2 C_t^{-1}) / a, C_t = a^2 C + s^2 I, so grad ||y - A x0_hat||^2 =
    -2 J^T A^T (y - A x0_hat)."""
    dim = H * W
    mu, cov = random_gaussian(dim, seed=3)
    sched = NoiseSchedule()
    model = Denoiser(GaussianEpsNet(mu, cov, sched), sched)
    op = _inpainting()
    g = torch.Generator().manual_seed(7)
    x_t = torch.randn(3, 1, H, W, generator=g, dtype=torch.float64)
    y = op.A(torch.randn(3, 1, H, W, generator=g, dtype=torch.float64))
    t = 400.0
    guide = MeasurementGradient(model, op, y)
    pred = guide.predict(x_t, t)
    ab = sched.alpha_bar(t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    jac = (torch.eye(dim, dtype=torch.float64) - s ** 2 * torch.linalg.inv(ab * cov + (1 - ab)
                                                                           * torch.eye(dim))) / a
    r = (y - op.A(pred.x0)).reshape(3, dim)
    expected = -2 * r @ jac  # J symmetric; A^T r = r for inpainting (r is zero off the mask)
    assert torch.allclose(guide.grad.reshape(3, dim), expected, atol=1e-8)
    assert torch.allclose(guide.residual, r.norm(dim=1))
    assert not pred.x0.requires_grad and model.nfe == 1
    step = gradient_step(x_t, guide.grad, guide.residual, 0.5)
    per = (x_t - step).reshape(3, dim).norm(dim=1) * r.norm(dim=1) / guide.grad.reshape(3, dim).norm(dim=1)
    assert torch.allclose(per, torch.full((3,), 0.5, dtype=torch.float64))


def test_operator_norm_by_power_iteration():
    assert abs(operator_norm_sq(_inpainting(), torch.zeros(2, 1, H, W)) - 1.0) < 1e-4
    assert abs(operator_norm_sq(_mri("batch"), torch.zeros(2, 1, H, W)) - 1.0) < 1e-3
