"""R7, Bayesian reconstruction by a Langevin Markov chain at a fixed small noise level (Luo,
Blumenthal, Heide & Uecker 2022, "Bayesian MRI reconstruction with joint uncertainty
estimation using diffusion models", Magn. Reson. Med., arXiv 2202.01479)."""
from __future__ import annotations

import torch

from meddiff.consistency.steps import operator_norm_sq, song_callback
from meddiff.core.noise import gaussian
from meddiff.errors import InputError
from meddiff.methods.reconstruction.interface import Problem, Reconstruction, run_sampler
from meddiff.methods.registry import register


@register("langevin", family="reconstruction", system="R7", options=("steps", "t0", "init"),
          summary="R7 Luo & Uecker: Langevin Markov chain; posterior mean and std map")
def langevin(p: Problem, sigma: float = 0.05, n_chain: int = 200, burn_in: int = 50,
             step: float = 0.5, noise_std: float | None = None) -> Reconstruction:
    """Sec. 3. The chain starts from a k-space-guided reverse-diffusion sample (the ``song``
    sampler over the method's reverse times, so ``steps``, ``t0`` and ``init`` apply) noised to
    ``sigma``, then runs unadjusted Langevin on the VE state ``x = x0 + sigma n`` (model space),
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
    start = run_sampler(p, "ddpm", song_callback(op, y, sched, 1.0, g, p.noise_var))
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
