"""C1: low-dose CT denoising with a conditional DDPM and a fast ODE solver.

Xia, Lyu & Wang 2022, "Low-dose CT using denoising diffusion probabilistic model for 20x
speedup", arXiv 2209.15136: a DDPM of the full-dose image
conditioned on the low-dose reconstruction (concatenated as an input channel, their eq. 7) is
sampled with a fast ODE solver (DPM-Solver) in a few tens of steps instead of the 1000 ancestral
steps of DDPM, at the same quality. Distinctive here: only the condition (the low-dose FBP image
itself) and the default few-step solver; the sampling is the core's
(:func:`~meddiff.methods.conditional.sample_given`).
"""
from __future__ import annotations

import torch

from meddiff.methods.conditional import sample_given
from meddiff.methods.denoising.interface import Noisy
from meddiff.methods.registry import register


@register("ldct", family="denoising", system="C1", default_model="ldct-cddpm-native",
          options=("sampler", "steps"),
          summary="C1 low-dose CT: conditional DDPM given the low-dose image, DPM-Solver++ in "
                  "few steps")
def ldct(model, noisy: Noisy, sampler: str = "dpmpp_2m", steps: int = 20) -> torch.Tensor:
    """Full-dose estimate of low-dose CT images ``noisy.images`` (B, 1, H, W), image space
    ``(HU + 1000) / 2000`` in [0, 1] -> same shape and range (one sample of the conditional
    model; ``sampler`` ``ddpm`` with ``steps`` = T is the paper's 1000-step reference)."""
    return sample_given(model, noisy.images, sampler, steps, noisy.generator)
