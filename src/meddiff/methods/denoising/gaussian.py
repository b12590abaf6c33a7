"""Gaussian denoising with an unconditional image prior: the noisy image is the prior's state
at the matching noise level (:func:`~meddiff.methods.denoising.interface.enter_at_noise`).
Not a seed system of its own: what every diffusion prior does with additive noise."""
from __future__ import annotations

import torch

from meddiff.errors import InputError
from meddiff.methods.denoising.interface import Noisy, enter_at_noise
from meddiff.methods.registry import register


def _sigma(noisy: Noisy, method: str) -> float:
    if noisy.sigma is None:
        raise InputError(f"--method {method} needs the noise level: give --sigma")
    return noisy.sigma


@register("tweedie", family="denoising", default_model="brain-prior-64",
          summary="Gaussian noise: one network call, the posterior mean (Tweedie)")
def tweedie(model, noisy: Noisy) -> torch.Tensor:
    """``E[x | y]`` under the prior in one call (needs ``noisy.sigma``)."""
    return enter_at_noise(model, noisy.images, _sigma(noisy, "tweedie"), "tweedie")


@register("ddim", family="denoising", default_model="brain-prior-64", options=("steps",),
          summary="Gaussian noise: deterministic DDIM from the noise level")
def ddim(model, noisy: Noisy, steps: int = 20) -> torch.Tensor:
    """DDIM (eta 0) from the matching time in ``steps`` steps (needs ``noisy.sigma``)."""
    return enter_at_noise(model, noisy.images, _sigma(noisy, "ddim"), "ddim", steps)


@register("ddpm", family="denoising", default_model="brain-prior-64",
          options=("steps", "samples"),
          summary="Gaussian noise: ancestral sampling from the noise level, samples averaged")
def ddpm(model, noisy: Noisy, steps: int = 20, samples: int = 1) -> torch.Tensor:
    """Ancestral (DDPM) sampling from the matching time, ``samples`` runs averaged (needs
    ``noisy.sigma``)."""
    return enter_at_noise(model, noisy.images, _sigma(noisy, "ddpm"), "ddpm", steps, samples,
                          noisy.generator)
