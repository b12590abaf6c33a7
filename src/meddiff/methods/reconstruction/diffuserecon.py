"""R5, DiffuseRecon (Peng et al. 2022, MICCAI, "Towards performant and reliable undersampled MR
reconstruction via diffusion model sampling"): k-space guidance and
coarse-to-fine Monte-Carlo sampling."""
from __future__ import annotations

import torch

from meddiff.consistency.steps import song_callback
from meddiff.core.noise import gaussian
from meddiff.errors import InputError
from meddiff.methods.reconstruction.interface import Problem, Reconstruction, run_sampler
from meddiff.methods.registry import register


@register("diffuserecon", family="reconstruction", system="R5", options=("steps", "t0", "init"),
          summary="R5 DiffuseRecon: k-space-guided samples averaged, then refined; std map")
def diffuserecon(p: Problem, n_samples: int = 4, t_refine: float = 20, lam: float = 1.0,
                 sampler: str = "ddpm") -> Reconstruction:
    """k-space guidance: after every reverse step the measured components are replaced by the
    measurement noised to the current level (:func:`~meddiff.consistency.steps.song_step`,
    ``lam = 1``). Coarse-to-fine: ``n_samples`` guided samples on the (respaced) trajectory are
    averaged, the average is diffused to ``t_refine`` and refined by guided sampling over every
    integer time below it (``t_refine = 0``: no refinement). ``std``: spread of the coarse
    samples.
    """
    if n_samples < 1:
        raise InputError(f"diffuserecon needs n_samples >= 1, got {n_samples}")
    cb = song_callback(p.op, p.y, p.model.schedule, lam, p.generator, p.noise_var)
    samples = torch.stack([run_sampler(p, sampler, cb) for _ in range(n_samples)])
    mean = samples.mean(0)
    std = samples.std(0) if n_samples > 1 else torch.zeros_like(mean)
    if t_refine > 0:
        sched = p.model.schedule
        ts = sched.timesteps(int(round(t_refine)) + 1, t_start=t_refine)
        x = sched.q_sample(mean, torch.tensor(float(ts[0])), gaussian(mean, p.generator))
        mean = run_sampler(p, sampler, cb, x=x, ts=ts)
    return Reconstruction(mean, std)
