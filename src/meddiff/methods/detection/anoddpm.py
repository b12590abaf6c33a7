"""D3, AnoDDPM (Wyatt, Leach, Schmon & Willcocks 2022, "AnoDDPM: Anomaly Detection with
Denoising Diffusion Probabilistic Models using Simplex Noise", CVPR Workshops): diffuse the
image to ``t`` (default 250 of 1000) with the model's training noise (multi-octave simplex for
a simplex-trained model, :func:`meddiff.core.noise.simplex`), run the reverse DDPM chain back
(their partial-diffusion strategy), anomaly map ``|x - x_hat|`` smoothed with a Gaussian.
Contracts: :mod:`meddiff.methods.detection.interface` (model space)."""
from __future__ import annotations

import torch

from meddiff.core.noise import NoiseFn
from meddiff.core.samplers import partial_diffusion
from meddiff.errors import ConfigError
from meddiff.methods.detection.interface import (AnomalyResult, anomaly_map, check_images,
                                                 check_time, unpack)
from meddiff.methods.registry import register

ANODDPM_T = 250.0
ANODDPM_SMOOTH_PX = 1.0


@register("anoddpm", family="detection", system="D3", default_model="anoddpm-64",
          options=("t", "steps", "smooth", "samples"),
          summary="D3 AnoDDPM: partial diffusion with simplex noise and back")
def anoddpm(model, x: torch.Tensor, *, t: float = ANODDPM_T, steps: int | None = None,
            smooth: float = ANODDPM_SMOOTH_PX, samples: int = 1,
            generator: torch.Generator | None = None, noise: NoiseFn | None = None
            ) -> AnomalyResult:
    """Partial diffusion ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) n`` with ``n`` the model's
    noise (eq. 4 of Ho et al. 2020 with simplex ``n`` for a simplex-trained model), ancestral
    DDPM reverse to ``x_hat`` (Ho et al. 2020, eqs. 6-7, the same noise at every step), map
    ``G_smooth * |x - x_hat|`` averaged over ``samples`` draws.

    model: a ``LoadedModel`` (its ``spec.noise`` picks the noise) or a denoiser (``noise``
    default Gaussian). x: (B, 1, S, S) model space. ``steps``: reverse steps (default every
    integer time from ``t``, as the paper). Returns maps and the mean reconstruction.
    """
    check_images(x)
    den, model_noise = unpack(model)
    noise = noise or model_noise
    t = check_time("t", t, den.schedule)
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    nfe0 = den.nfe
    x = x.to(den.device).float()
    maps, recons = [], []
    for _ in range(samples):
        recon = partial_diffusion(den, x, t, sampler="ddpm", steps=steps, generator=generator,
                                  noise=noise).clamp(-1, 1)
        maps.append(anomaly_map(x, recon, smooth))
        recons.append(recon)
    return AnomalyResult(torch.stack(maps).mean(0).cpu(), torch.stack(recons).mean(0).cpu(),
                         den.nfe - nfe0)
