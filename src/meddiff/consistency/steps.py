"""Data-consistency steps for diffusion reconstruction, modality-agnostic.

Every step works on batched real model-space tensors (B, C, H, W) (the VP state of the
samplers, or a clean estimate) and any real-domain :class:`~meddiff.physics.base.LinearOperator`
(wrap complex MRI operators with :func:`meddiff.consistency.views.as_real`); ``y`` is the
measurement of the clean model-space image.

VP convention: the samplers' state is ``x_t = a x_0 + s eps`` with ``a = sqrt(abar_t)``,
``s = sqrt(1 - abar_t)``, so the measurement "at time t" of the state is ``a y`` (plus, in the
stochastic variants, ``s A z``). Callbacks receive a :class:`~meddiff.core.samplers.Step` whose
``x`` is the state at ``t_next`` (``t_next = -1``: clean data, ``a = 1``, ``s = 0``).

Pieces:
- :func:`project`: ``x + w A^+(y - A x)``, the hard projection onto ``{A x = y}`` at ``w = 1``
  (Cartesian MRI: replace the sampled k-space; Chung & Ye 2022, arXiv 2110.05243, sec. 3);
- :func:`weighted_project` and :func:`consistency_update`: the noise-aware step for noisy
  measurements (``--noise-std``, ``--dose``), weighted least squares with the measurement's
  noise variance; every projecting callback takes ``noise_var`` and then uses it instead of
  the projection;
- :func:`noised_measurement` and :func:`song_step`: the proximal step of Song, Shen, Xing &
  Ermon 2022 (arXiv 2111.08005, sec. 3.2), a blend with weight ``lambda`` towards the
  measurement noised to the state's level;
- :class:`MeasurementGradient` and :func:`gradient_step`: the manifold-constrained gradient
  ``grad_{x_t} ||y - A x0_hat(x_t)||^2`` through the Tweedie estimate (Chung et al. 2022, MCG,
  arXiv 2206.00941, sec. 3; Chung et al. 2023, DPS, arXiv 2209.14687, Algorithm 1);
- callback factories combining them for the samplers of :mod:`meddiff.core.samplers`.
"""
from __future__ import annotations

from typing import Callable

import torch

from meddiff.core.model import Condition, DenoiserWrapper, Prediction
from meddiff.core.noise import gaussian
from meddiff.core.samplers import Callback, Step
from meddiff.physics.base import LinearOperator, conjugate_gradient


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def project(x: torch.Tensor, operator: LinearOperator, y: torch.Tensor,
            weight: float = 1.0) -> torch.Tensor:
    """``x + weight * A^+(y - A x)`` for x (B, C, H, W) real model space.

    At ``weight = 1`` this is the orthogonal projection onto ``{x : A x = y}`` when ``A^+`` is
    exact (MRI, inpainting); for Cartesian MRI it replaces the sampled k-space by ``y``
    (Chung & Ye 2022, arXiv 2110.05243, sec. 3). For CT, ``A^+`` is CG-approximated.
    """
    return x + weight * operator.A_dagger(y - operator.A(x))


def weighted_project(x: torch.Tensor, operator: LinearOperator, y: torch.Tensor,
                     prior_var: float, noise_var: torch.Tensor | float,
                     n_iter: int = 20) -> torch.Tensor:
    """``argmin_z ||z - x||^2 / prior_var + sum_i |(A z - y)_i|^2 / noise_var_i``.

    Weighted least squares against a Gaussian prior ``z ~ N(x, prior_var I)``, the noise of
    ``y`` of per-entry variance ``noise_var`` (a scalar or a tensor of ``y``'s shape):
    ``z = x + d`` with ``(prior_var A^H W A + I) d = prior_var A^H W (y - A x)``,
    ``W = 1 / noise_var``, by conjugate gradients (``n_iter``; one iteration suffices when
    ``A A^H`` is a projection and the variance a scalar, e.g. single-coil Cartesian MRI: there
    ``d`` is :func:`project` with weight ``prior_var / (prior_var + noise_var)``). In the
    singular basis of ``A`` a component of gain ``l`` moves by ``prior_var l / (prior_var l +
    noise_var)`` of its residual: well-measured components follow the data, poorly measured
    ones (sparse-view CT's high frequencies) the prior. ``prior_var <= 0`` returns ``x``.
    x (B, C, H, W) real.
    """
    if prior_var <= 0:
        return x
    w = 1.0 / torch.as_tensor(noise_var, dtype=x.dtype, device=x.device).clamp_min(1e-12)

    def normal(d: torch.Tensor) -> torch.Tensor:
        return prior_var * operator.A_adjoint(w * operator.A(d)) + d

    rhs = prior_var * operator.A_adjoint(w * (y - operator.A(x)))
    return x + conjugate_gradient(normal, rhs, n_iter, 1e-4)


def consistency_update(x: torch.Tensor, operator: LinearOperator, y: torch.Tensor,
                       abar: float | torch.Tensor, noise_var: torch.Tensor | float,
                       weight: float = 1.0) -> torch.Tensor:
    """The noise-aware data step of the VP state ``x`` at ``abar`` for noisy ``y`` (``noise_var``
    its per-entry variance): ``weight`` times the :func:`weighted_project` step towards the
    state's measurement ``a y`` with prior variance ``1 - abar`` (the state's own noise) and
    measurement variance ``abar noise_var`` (the noise of ``a y``). The data count fully while
    the state is much noisier than they are and fade out as ``t -> 0``, so the result is not
    pulled onto the noise (the noise-weighted proximal step of DiffPIR, Zhu et al. 2023, CVPRW,
    arXiv 2305.08995, eq. 13, taken on the state instead of the clean estimate)."""
    ab = float(abar)
    z = weighted_project(x, operator, ab ** 0.5 * y, 1.0 - ab, noise_var * ab)
    return x + weight * (z - x)


def noised_measurement(operator: LinearOperator, y: torch.Tensor, abar: float | torch.Tensor,
                       like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Measurement of the VP state at ``abar``: ``sqrt(abar) y + sqrt(1 - abar) A z``,
    ``z ~ N(0, I)`` shaped like the model-space tensor ``like`` (Song et al. 2022, arXiv
    2111.08005, sec. 3.2: a sample of ``p(y_t | y)`` for the forward process of ``x``)."""
    ab = torch.as_tensor(abar, dtype=torch.float64)
    y_t = ab.sqrt().to(like.dtype) * y
    if float(ab) < 1:
        y_t = y_t + (1 - ab).sqrt().to(like.dtype) * operator.A(gaussian(like, generator))
    return operator.restrict(y_t)


def song_step(x: torch.Tensor, operator: LinearOperator, y: torch.Tensor,
              abar: float | torch.Tensor, lam: float = 1.0,
              generator: torch.Generator | None = None,
              noise_var: torch.Tensor | float | None = None) -> torch.Tensor:
    """Consistency of the VP state ``x`` (B, C, H, W) at ``abar`` with the noised measurement.

    Song et al. 2022 (arXiv 2111.08005, sec. 3.2): on the measured subspace the transformed state
    becomes ``lambda y_t + (1 - lambda) A x``, elsewhere it is unchanged, i.e.
    ``x + lambda A^+(y_t - A x)`` with ``y_t`` from :func:`noised_measurement`. ``lam = 1`` is
    hard replacement by the noised measurement (as in MCG, arXiv 2206.00941, and the
    k-space guidance of DiffuseRecon, Peng et al. 2022, MICCAI); ``lam = 0`` does nothing.
    ``noise_var`` (the per-entry variance of ``y``'s noise): :func:`consistency_update` with
    weight ``lam`` instead (the noise is in ``y`` already, none is added).
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if noise_var is not None:
        return consistency_update(x, operator, y, abar, noise_var, lam)
    return project(x, operator, noised_measurement(operator, y, abar, x, generator), lam)


def _abar(schedule, t: float) -> torch.Tensor:
    return schedule.alpha_bar(torch.tensor(float(t), dtype=torch.float64))


def projection_callback(operator: LinearOperator, y: torch.Tensor, schedule,
                        noise_var: torch.Tensor | float | None = None) -> Callback:
    """Score-MRI data consistency for any VP sampler (Chung & Ye 2022, arXiv 2110.05243,
    sec. 3): project the VE state ``x_t / a`` onto ``{A x = y}``, i.e.
    ``x_t + A^+(a y - A x_t)``. Exact consistency ``A x = y`` after the last step; with
    ``noise_var`` the noise-aware :func:`consistency_update` instead."""

    def callback(step: Step) -> torch.Tensor:
        abar = _abar(schedule, step.t_next)
        if noise_var is not None:
            return consistency_update(step.x, operator, y, abar, noise_var)
        return project(step.x, operator, float(abar.sqrt()) * y)

    return callback


def song_callback(operator: LinearOperator, y: torch.Tensor, schedule, lam: float,
                  generator: torch.Generator | None,
                  noise_var: torch.Tensor | float | None = None) -> Callback:
    """:func:`song_step` at the state's time ``t_next`` after every sampler step."""

    def callback(step: Step) -> torch.Tensor:
        return song_step(step.x, operator, y, _abar(schedule, step.t_next), lam, generator,
                         noise_var)

    return callback


class MeasurementGradient(DenoiserWrapper):
    """A denoiser wrapper that records ``grad_{x_t} ||y - A x0_hat(x_t)||^2`` at every call.

    ``x0_hat`` is the Tweedie estimate of the wrapped denoiser, differentiated through the
    network by autograd (about twice the cost of a plain evaluation). The prediction itself is
    returned unchanged (detached), so any sampler runs the unconditional update and a callback
    (:func:`gradient_callback`) then applies the recorded gradient to the new state: MCG
    (Chung et al. 2022, arXiv 2206.00941, sec. 3) and DPS (Chung et al. 2023, arXiv
    2209.14687, Algorithm 1).

    Attributes after a call: ``grad`` (shape of ``x_t``) and ``residual`` (B,), the norms
    ``||y - A x0_hat||``.
    """

    def __init__(self, model, operator: LinearOperator, y: torch.Tensor):
        super().__init__(model)
        self.operator, self.y = operator, y
        self.grad: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None

    def predict(self, x_t: torch.Tensor, t, cond: Condition | None = None) -> Prediction:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            pred = self.model.predict(x, t, cond)
            r = self.y - self.operator.A(pred.x0)
            sq = r.abs().pow(2).reshape(r.shape[0], -1).sum(1)
            (self.grad,) = torch.autograd.grad(sq.sum(), x)
        self.residual = sq.detach().sqrt()
        return Prediction(eps=pred.eps.detach(), x0=pred.x0.detach())


def gradient_step(x: torch.Tensor, grad: torch.Tensor, residual: torch.Tensor,
                  alpha: float) -> torch.Tensor:
    """``x - alpha / ||y - A x0_hat|| * grad`` per batch item (the DPS step size
    ``zeta_i = zeta' / ||y - A(x0_hat)||``, Chung et al. 2023, arXiv 2209.14687, Algorithm 1)."""
    return x - _per_sample(alpha / residual.clamp(min=1e-12), x) * grad


def gradient_callback(guide: MeasurementGradient, alpha: float,
                      then: Callable[[Step], torch.Tensor] | None = None) -> Callback:
    """Apply the gradient recorded by ``guide`` at the step's time ``t`` to the new state (DPS);
    with ``then`` (e.g. :func:`song_callback` at ``lam = 1``) also project afterwards (MCG)."""

    def callback(step: Step) -> torch.Tensor:
        x = gradient_step(step.x, guide.grad, guide.residual, alpha)
        if then is None:
            return x
        return then(Step(step.i, step.t, step.t_next, x, step.x0))

    return callback


def operator_norm_sq(operator: LinearOperator, like: torch.Tensor, n_iter: int = 30,
                     seed: int = 0) -> float:
    """Largest eigenvalue of ``A^H A`` (``||A||^2``) by power iteration (Golub & Van Loan,
    Matrix Computations, sec. 7.3.1) from a seeded random start shaped like ``like``;
    slightly underestimates, so callers keep a safety margin."""
    g = torch.Generator(device=like.device).manual_seed(seed)
    v = torch.randn(like.shape, generator=g, dtype=like.dtype, device=like.device)
    lam = 0.0
    for _ in range(n_iter):
        v = v / v.norm().clamp(min=1e-30)
        w = operator.A_normal(v)
        lam = float((v.conj() * w).real.sum())
        v = w
    return lam
