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
from meddiff.physics.base import LinearOperator


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
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Consistency of the VP state ``x`` (B, C, H, W) at ``abar`` with the noised measurement.

    Song et al. 2022 (arXiv 2111.08005, sec. 3.2): on the measured subspace the transformed state
    becomes ``lambda y_t + (1 - lambda) A x``, elsewhere it is unchanged, i.e.
    ``x + lambda A^+(y_t - A x)`` with ``y_t`` from :func:`noised_measurement`. ``lam = 1`` is
    hard replacement by the noised measurement (as in MCG, arXiv 2206.00941, and the
    k-space guidance of DiffuseRecon, Peng et al. 2022, MICCAI); ``lam = 0`` does nothing.
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    return project(x, operator, noised_measurement(operator, y, abar, x, generator), lam)


def _abar(schedule, t: float) -> torch.Tensor:
    return schedule.alpha_bar(torch.tensor(float(t), dtype=torch.float64))


def projection_callback(operator: LinearOperator, y: torch.Tensor, schedule) -> Callback:
    """Score-MRI data consistency for any VP sampler (Chung & Ye 2022, arXiv 2110.05243,
    sec. 3): project the VE state ``x_t / a`` onto ``{A x = y}``, i.e.
    ``x_t + A^+(a y - A x_t)``. Exact consistency ``A x = y`` after the last step."""

    def callback(step: Step) -> torch.Tensor:
        a = float(_abar(schedule, step.t_next).sqrt())
        return project(step.x, operator, a * y)

    return callback


def song_callback(operator: LinearOperator, y: torch.Tensor, schedule, lam: float,
                  generator: torch.Generator | None) -> Callback:
    """:func:`song_step` at the state's time ``t_next`` after every sampler step."""

    def callback(step: Step) -> torch.Tensor:
        return song_step(step.x, operator, y, _abar(schedule, step.t_next), lam, generator)

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
