"""C2, manifold constrained gradient (Chung, Sim, Ryu & Ye 2022, NeurIPS, arXiv 2206.00941), and
its projection-free successor DPS (Chung, Kim, Mccann, Klasky & Ye 2023, ICLR, arXiv
2209.14687): a gradient step on ``||y - A x0_hat(x_t)||^2`` through the Tweedie estimate."""
from __future__ import annotations

import math

from meddiff.consistency.steps import (MeasurementGradient, gradient_callback, operator_norm_sq,
                                       song_callback)
from meddiff.core.samplers import get_sampler
from meddiff.methods.reconstruction.interface import Problem, Reconstruction
from meddiff.methods.registry import register


def gradient_guided(p: Problem, alpha: float, project: bool, sampler: str) -> Reconstruction:
    """MCG / DPS with the step ``alpha / (||y - A x0_hat|| ||A||)``: dividing by the operator
    norm makes ``alpha`` mean the same for every operator (``||A|| = 1`` for Cartesian MRI with
    an orthonormal FFT, so there it is the papers' step; CT's ``||A||`` is ~40-100)."""
    guide = MeasurementGradient(p.model, p.op, p.y)
    then = (song_callback(p.op, p.y, p.model.schedule, 1.0, p.generator, p.noise_var)
            if project else None)
    x = p.start()
    alpha = alpha / math.sqrt(operator_norm_sq(p.op, x))
    x = get_sampler(sampler)(guide, x, p.ts, generator=p.generator,
                             callback=gradient_callback(guide, alpha, then))
    return Reconstruction(x)


@register("mcg", family="reconstruction", system="C2", options=("steps", "t0", "init"),
          summary="C2 MCG: gradient step through the Tweedie estimate, then projection")
def mcg(p: Problem, alpha: float = 1.0, sampler: str = "ddpm") -> Reconstruction:
    """MCG (sec. 3): unconditional step, gradient step on ``||y - A x0_hat(x_t)||^2`` through
    the Tweedie estimate (step ``alpha / ||y - A x0_hat||``, the normalisation of DPS), then
    projection onto the noised measurement."""
    return gradient_guided(p, alpha, True, sampler)


@register("dps", family="reconstruction", options=("steps", "t0", "init"),
          summary="DPS: the MCG gradient step without projection (noisy measurements)")
def dps(p: Problem, alpha: float = 1.0, sampler: str = "ddpm") -> Reconstruction:
    """DPS (Algorithm 1): the MCG gradient step without projection (``zeta_i = alpha / ||y - A
    x0_hat||``); works with noisy measurements; about twice the cost of unconditional sampling
    (backpropagation through the network). The step's norm is about ``2 alpha`` whatever the
    image size, so the paper's ``alpha`` in [0.1, 1] (256 x 256 images) must shrink for tiny
    problems (0.1 for the 16-pixel test problems)."""
    return gradient_guided(p, alpha, False, sampler)
