"""Diffusion reconstruction of linear inverse problems ``y = A x + n``, modality-agnostic.

One entry point, :func:`reconstruct`, runs any of the methods below with any
:class:`~meddiff.core.model.Denoiser` (or guidance wrapper) and any
:class:`~meddiff.physics.base.LinearOperator`. Each method is a sampler of
:mod:`meddiff.core.samplers` plus the data-consistency pieces of
:mod:`meddiff.consistency.steps`; only its distinctive part lives here.

Intensity contract: everything is in *model space* (real, [-1, 1]); ``y`` is the measurement of
the model-space image (see :meth:`meddiff.consistency.views.RealView.model_measurement`).
Complex MRI operators are reconstructed through :class:`~meddiff.consistency.views.RealView`
(``view``: ``"batch"`` real/imaginary parts as batch items, ``"channels"`` or ``"real"``), so
results have the view's model-space shape, e.g. (2B, 1, H, W) for ``"batch"``.

Warm start (CCDF, Chung, Sim & Ye 2022, arXiv 2112.05146, sec. 3): with ``t0``
every method starts from ``q(x_t0 | init)`` instead of pure noise at ``T - 1`` and runs only
the times ``<= t0``; ``init`` defaults to ``A^+ y`` (zero-filled MRI).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from meddiff.consistency.steps import (MeasurementGradient, gradient_callback, operator_norm_sq,
                                       projection_callback, song_callback)
from meddiff.consistency.views import ViewMode, as_real
from meddiff.core.noise import gaussian
from meddiff.core.samplers import get_sampler
from meddiff.errors import InputError
from meddiff.physics.base import LinearOperator
from meddiff.physics.noise import as_generator


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct`, model space.

    Attributes:
        x: the reconstruction (B', C, H, W) real (a sample, or a posterior-mean estimate for
            ``diffuserecon`` and ``langevin``).
        std: per-pixel standard deviation over the samples the method averaged (``diffuserecon``:
            coarse samples; ``langevin``: the Markov chain), else ``None``.
        nfe: network evaluations used (a gradient-guided evaluation counts once).
    """

    x: torch.Tensor
    std: torch.Tensor | None = None
    nfe: int = 0


Start = Callable[[], torch.Tensor]


@dataclass
class _Problem:
    """What every method gets: the model, the real-view operator, the measurement, the reverse
    times, a function drawing a fresh start state at ``ts[0]`` and the generator."""

    model: object
    op: LinearOperator
    y: torch.Tensor
    ts: torch.Tensor
    start: Start
    generator: torch.Generator


def _run(p: _Problem, sampler: str, callback, x=None, ts=None, **opts) -> torch.Tensor:
    x = p.start() if x is None else x
    ts = p.ts if ts is None else ts
    return get_sampler(sampler)(p.model, x, ts, generator=p.generator, callback=callback, **opts)


def score_mri(p: _Problem, sampler: str = "pc_vp", snr: float = 0.16,
              n_corrector: int = 1) -> Reconstruction:
    """R9, score-MRI (Chung & Ye 2022, arXiv 2110.05243, sec. 3): predictor-corrector
    sampling of the VE (``pc_ve``) or VP (``pc_vp``) SDE with the projection onto
    ``{A x = y}`` (replace the sampled k-space) after every step. The result satisfies
    ``A x = y`` up to the accuracy of ``A^+``."""
    if sampler not in ("pc_ve", "pc_vp"):
        raise InputError("score-mri uses a predictor-corrector sampler (pc_ve or pc_vp), "
                         f"not {sampler!r}")
    cb = projection_callback(p.op, p.y, p.model.schedule)
    return Reconstruction(_run(p, sampler, cb, snr=snr, n_corrector=n_corrector))


def song(p: _Problem, lam: float = 1.0, sampler: str = "pc_vp", **sampler_opts) -> Reconstruction:
    """C4 (Song, Shen, Xing & Ermon 2022, arXiv 2111.08005, sec. 3.2, inside PC
    sampling): after every step blend the state with the measurement noised to the state's
    level, weight ``lam`` in [0, 1] on the measured subspace."""
    cb = song_callback(p.op, p.y, p.model.schedule, lam, p.generator)
    return Reconstruction(_run(p, sampler, cb, **sampler_opts))


def _gradient_guided(p: _Problem, alpha: float, project: bool, sampler: str) -> Reconstruction:
    """MCG / DPS with the step ``alpha / (||y - A x0_hat|| ||A||)``: dividing by the operator
    norm makes ``alpha`` mean the same for every operator (``||A|| = 1`` for Cartesian MRI with
    an orthonormal FFT, so there it is the papers' step; CT's ``||A||`` is ~40-100)."""
    guide = MeasurementGradient(p.model, p.op, p.y)
    then = song_callback(p.op, p.y, p.model.schedule, 1.0, p.generator) if project else None
    x = p.start()
    alpha = alpha / math.sqrt(operator_norm_sq(p.op, x))
    x = get_sampler(sampler)(guide, x, p.ts, generator=p.generator,
                             callback=gradient_callback(guide, alpha, then))
    return Reconstruction(x)


def mcg(p: _Problem, alpha: float = 1.0, sampler: str = "ddpm") -> Reconstruction:
    """C2, manifold constrained gradient (Chung, Sim, Ryu & Ye 2022, arXiv 2206.00941,
    sec. 3): unconditional step, gradient step on
    ``||y - A x0_hat(x_t)||^2`` through the Tweedie estimate (step ``alpha / ||y - A x0_hat||``,
    the normalisation of DPS), then projection onto the noised measurement."""
    return _gradient_guided(p, alpha, True, sampler)


def dps(p: _Problem, alpha: float = 1.0, sampler: str = "ddpm") -> Reconstruction:
    """Diffusion posterior sampling (Chung, Kim, Mccann, Klasky & Ye 2023, arXiv 2209.14687,
    Algorithm 1): the MCG gradient step without projection (``zeta_i = alpha / ||y - A
    x0_hat||``); works with noisy measurements; about twice the cost of unconditional sampling
    (backpropagation through the network). The step's norm is about ``2 alpha`` whatever the
    image size, so the paper's ``alpha`` in [0.1, 1] (256 x 256 images) must shrink for tiny
    problems (0.1 for the 16-pixel test problems)."""
    return _gradient_guided(p, alpha, False, sampler)


def diffuserecon(p: _Problem, n_samples: int = 4, t_refine: float = 20, lam: float = 1.0,
                 sampler: str = "ddpm") -> Reconstruction:
    """R5, DiffuseRecon (Peng et al. 2022, MICCAI, "Towards performant and reliable
    undersampled MR reconstruction via diffusion model sampling": k-space guidance and
    coarse-to-fine Monte-Carlo sampling).

    k-space guidance: after every reverse step the measured components are replaced by the
    measurement noised to the current level (:func:`~meddiff.consistency.steps.song_step`,
    ``lam = 1``). Coarse-to-fine: ``n_samples`` guided samples on the (respaced) trajectory are
    averaged, the average is diffused to ``t_refine`` and refined by guided sampling over every
    integer time below it (``t_refine = 0``: no refinement). ``std``: spread of the coarse
    samples.
    """
    if n_samples < 1:
        raise InputError(f"diffuserecon needs n_samples >= 1, got {n_samples}")
    cb = song_callback(p.op, p.y, p.model.schedule, lam, p.generator)
    samples = torch.stack([_run(p, sampler, cb) for _ in range(n_samples)])
    mean = samples.mean(0)
    std = samples.std(0) if n_samples > 1 else torch.zeros_like(mean)
    if t_refine > 0:
        sched = p.model.schedule
        ts = sched.timesteps(int(round(t_refine)) + 1, t_start=t_refine)
        x = sched.q_sample(mean, torch.tensor(float(ts[0])), gaussian(mean, p.generator))
        mean = _run(p, sampler, cb, x=x, ts=ts)
    return Reconstruction(mean, std)


def langevin(p: _Problem, sigma: float = 0.05, n_chain: int = 200, burn_in: int = 50,
             step: float = 0.5, noise_std: float | None = None) -> Reconstruction:
    """R7, Bayesian reconstruction by a Langevin Markov chain at a fixed small noise level
    (Luo, Blumenthal, Heide & Uecker 2022, arXiv 2202.01479, sec. 3).

    The chain starts from a k-space-guided reverse-diffusion sample (the ``song`` sampler over
    the method's reverse times, so ``steps``, ``t0`` and ``init`` apply) noised to ``sigma``,
    then runs unadjusted Langevin on the VE state ``x = x0 + sigma n`` (model space),
    ``x <- x + eta (score_sigma(x) + A^H (y - A x) / (noise_std^2 + sigma^2)) + sqrt(2 eta) z``,
    the likelihood widened by the prior's noise level as in Jalal et al. 2021 (arXiv
    2108.01368). Returns the mean and per-pixel std of the last ``n_chain`` of
    ``burn_in + n_chain`` states (the std includes the small level ``sigma``).
    ``eta = step / L`` with ``L = 1/sigma^2 + ||A||^2 / (noise_std^2 + sigma^2)`` the largest
    curvature. ``noise_std`` defaults to the operator's Gaussian noise sigma (0 if none).
    (Annealing the chain itself from ``sigma_max`` would need hundreds of levels: each
    Langevin step contracts the error by only ``~step / 2``.)
    """
    sched, op, y, g = p.model.schedule, p.op, p.y, p.generator
    if n_chain < 1 or burn_in < 0 or not sigma > 0 or not 0 < step < 1:
        raise InputError("langevin needs n_chain >= 1, burn_in >= 0, sigma > 0, 0 < step < 1")
    if noise_std is None:
        noise_std = float(getattr(op.noise, "sigma", 0.0))
    start = _run(p, "ddpm", song_callback(op, y, sched, 1.0, g))
    t = float(sched.t_from_sigma_ve(sigma))
    a = float(sched.alpha_bar(torch.tensor(t)).sqrt())
    sig = float(sched.sigma_ve(t))  # the level the network is evaluated at
    x = start + sig * gaussian(start, g)
    lik_w = 1.0 / (noise_std ** 2 + sig ** 2)
    eta = step / (1 / sig ** 2 + operator_norm_sq(op, x) * lik_w)
    total, total_sq = torch.zeros_like(x), torch.zeros_like(x)
    for i in range(burn_in + n_chain):
        score = -p.model.predict(a * x, t).eps / sig
        x = x + eta * (score + lik_w * op.A_adjoint(y - op.A(x))) + (2 * eta) ** 0.5 * gaussian(x, g)
        if i >= burn_in:
            total, total_sq = total + x, total_sq + x * x
    mean = total / n_chain
    std = (total_sq / n_chain - mean ** 2).clamp(min=0).sqrt()
    return Reconstruction(mean, std)


METHODS: dict[str, Callable[..., Reconstruction]] = {
    "score-mri": score_mri, "song": song, "mcg": mcg, "dps": dps,
    "diffuserecon": diffuserecon, "langevin": langevin,
}


def _start_fn(model, shape, ts, init, generator, device) -> Start:
    t_start = torch.tensor(float(ts[0]))

    def start() -> torch.Tensor:
        if init is None:
            return gaussian(torch.empty(shape, device=device), generator)
        return model.schedule.q_sample(init, t_start, gaussian(init, generator))

    return start


def reconstruct(model, operator: LinearOperator, y: torch.Tensor, method: str, steps: int = 100,
                t0: float | None = None, init: torch.Tensor | None = None,
                generator: torch.Generator | int | None = None, view: ViewMode = "batch",
                **opts) -> Reconstruction:
    """Reconstruct model-space images from measurements ``y`` with a diffusion prior.

    Args:
        model: a :class:`~meddiff.core.model.Denoiser` (or wrapper) on real model-space images.
        operator: any linear operator; complex-domain ones are wrapped by
            :func:`~meddiff.consistency.views.as_real` with ``view``.
        y: measurement of the model-space image, the operator's measurement shape.
        method: one of :data:`METHODS` (``score-mri``, ``song``, ``mcg``, ``dps``,
            ``diffuserecon``, ``langevin``).
        steps: number of reverse timesteps (uniform spacing; ``langevin``: unused except to
            place the start level).
        t0: CCDF warm start time in ``[0, T-1]`` (see the module docstring); ``None``: start
            from pure noise at ``T - 1``.
        init: the initial estimate for the warm start, model-space (B', C, H, W) real;
            default ``A^+ y`` when ``t0`` is set.
        generator: ``torch.Generator`` or int seed; required (reproducibility).
        view: how a complex operator maps to real model-space tensors.
        **opts: the method's own options (see each method function).

    Returns:
        :class:`Reconstruction` with ``x`` of the view's model-space shape, float32.
    """
    fn = METHODS.get(method)
    if fn is None:
        raise InputError(f"unknown reconstruction method {method!r}; "
                         f"choose from {', '.join(METHODS)}")
    last = model.schedule.num_steps - 1
    if t0 is not None and not 0 <= t0 <= last:
        raise InputError(f"warm-start time t0 must be in [0, {last}], got {t0}")
    op = as_real(operator, view)
    g = as_generator(generator, y.device)
    ref = op.A_adjoint(y)
    if t0 is not None and init is None:
        init = op.A_dagger(y)
    if init is not None:
        if tuple(init.shape) != tuple(ref.shape) or init.is_complex():
            raise InputError(f"init must be real model space of shape {tuple(ref.shape)}, "
                             f"got {tuple(init.shape)} {init.dtype}")
        if t0 is None:
            raise InputError("an init needs a warm-start time t0")
    ts = model.schedule.timesteps(steps, t_start=t0)
    nfe0 = getattr(model, "nfe", 0)
    start = _start_fn(model, ref.shape, ts, init, g, y.device)
    out = fn(_Problem(model, op, y, ts, start, g), **opts)
    out.nfe = getattr(model, "nfe", 0) - nfe0
    return out
