"""C3: OCT speckle reduction with a DDPM trained on noisy B-scans only.

Hu & Oguz 2022, "Unsupervised denoising of retinal OCT with diffusion probabilistic model",
SPIE Medical Imaging (arXiv 2201.11760): a DDPM is trained on speckled scans alone (no clean
target exists for OCT); to denoise, the noisy scan is taken as the state ``x_t`` at the step
whose noise level matches its speckle, and the reverse process runs from there. What the
network cannot predict from ``x_t`` -- the fine, nearly independent speckle -- is averaged out;
the layers it learned from many noisy scans remain. Distinctive here: the speckle level is
estimated from the scan itself (:func:`~meddiff.data.oct.estimate_speckle_std`) and scaled by
``level``; the reverse process is the core's
(:func:`~meddiff.methods.denoising.interface.enter_at_noise`).
"""
from __future__ import annotations

import numpy as np
import torch

from meddiff.data.oct import estimate_speckle_std
from meddiff.methods.denoising.interface import Noisy, enter_at_noise
from meddiff.methods.registry import register

#: the entry noise as a multiple of the estimated speckle std: the best of 0.75-2.5 on
#: validation scans with the bundled model (64 and 128 px alike; bench/denoising.py retunes it).
#: Above 1 because the network models the speckled scans: entering at the speckle's own level
#: only removes the noise it adds on top of them
LEVEL = 1.5


def speckle_std(images01: torch.Tensor) -> float:
    """The median over the batch (B, 1, H, W) of the per-scan speckle std estimates."""
    return float(np.median([estimate_speckle_std(im[0].double().cpu().numpy())
                            for im in images01]))


@register("oct", family="denoising", system="C3", default_model="oct-ddpm-native",
          options=("sampler", "steps", "level"),
          summary="C3 OCT: DDPM trained on noisy scans, entered at the speckle's noise level")
def oct(model, noisy: Noisy, sampler: str = "ddim", steps: int = 10,
        level: float = LEVEL) -> torch.Tensor:
    """Speckle-reduced OCT B-scans from ``noisy.images`` (B, 1, H, W), log display in [0, 1]
    -> same shape and range. The entry noise is ``level`` x ``noisy.sigma`` (None: estimated
    from the scans); ``sampler`` ``tweedie`` takes the one-call posterior mean instead."""
    sigma = speckle_std(noisy.images) if noisy.sigma is None else noisy.sigma
    return enter_at_noise(model, noisy.images, min(level * sigma, 0.99), sampler, steps,
                          generator=noisy.generator)
