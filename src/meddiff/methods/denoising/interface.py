"""The denoising interface: ``method(model, noisy: Noisy, **own_options) -> torch.Tensor``.

``model`` is the method's diffusion model, a :class:`~meddiff.core.model.Denoiser` (the network
and its schedule; a conditional model takes its condition channels through
:class:`~meddiff.core.model.Condition`). ``noisy`` carries the images and what is known about
them (:class:`Noisy`). Every method returns the denoised images (B, 1, H, W) float32 in image
space [0, 1] on the CPU. The two ways a diffusion model denoises live here, shared by the
methods:

- :func:`enter_at_noise`: an unconditional prior (trained on clean images, or on noisy ones for
  C3) treats the noisy image as its state at the time whose noise level matches;
- :func:`~meddiff.methods.conditional.sample_given`: a conditional model draws the clean image
  from pure noise given the noisy image as input channels (C1, P1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from meddiff.core.samplers import default_spacing, get_sampler
from meddiff.data.intensity import from_model, to_model
from meddiff.errors import ConfigError
from meddiff.methods.conditional import check_sampler

#: samplers of the reverse process from the noise level (``tweedie`` is one network call)
ENTRY_SAMPLERS = ("ddim", "ddpm", "dpmpp_2m")


@dataclass
class Noisy:
    """What a denoising method gets.

    Attributes:
        images: (B, 1, H, W) float32 image space [0, 1], on the model's device; H and W
            multiples of the network's divisor.
        sigma: the noise std in image space (None: unknown; a method that needs it estimates
            it or refuses).
        mr: (B, 1, H, W) [0, 1] an anatomical MR image of the same slices (P1's second
            condition channel), or None.
        generator: seeds the stochastic steps (on the model's device).
    """

    images: torch.Tensor
    sigma: float | None = None
    mr: torch.Tensor | None = None
    generator: torch.Generator | None = None


def noise_time(model, sigma: float) -> float:
    """The integer time ``t0`` whose VE noise std is ``2 sigma`` (image-space noise ``sigma``
    is ``2 sigma`` in model space [-1, 1]), clamped to [0, T-1]."""
    if not 0 < sigma < 1:
        raise ConfigError(f"sigma must be in (0, 1) (image-space noise std), got {sigma}")
    return model.schedule.step_at_sigma_ve(2 * sigma)


@torch.no_grad()
def enter_at_noise(model, images01: torch.Tensor, sigma: float, sampler: str = "tweedie",
                   steps: int = 20, samples: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoise by entering the reverse process at the noise level of the image.

    A noisy image ``y = x + sigma n`` (image space) is ``x + 2 sigma n`` in model space, i.e.
    the VE state at ``t0`` with ``sigma_ve(t0) = 2 sigma``; scaled by ``sqrt(abar_t0)`` it is a
    sample of ``q(x_t0 | x)`` (Song et al. 2021, arXiv 2011.13456, sec. 3.4). From there
    ``sampler`` ``tweedie`` makes one network call, ``E[x | x_t0]`` (Tweedie's formula, Efron
    2011, the minimum-MSE estimate under the prior); ``ddim`` / ``ddpm`` / ``dpmpp_2m`` run the
    reverse process from ``t0`` in ``steps`` steps (SDEdit's partial diffusion, Meng et al.
    2022, arXiv 2108.01073), ``samples > 1`` averaging that many runs.

    ``images01`` (B, 1, H, W) in [0, 1] -> (B, 1, H, W) in [0, 1], CPU.
    """
    t0 = noise_time(model, sigma)
    x_t = model.schedule.alpha_bar(t0).sqrt().float() * to_model(images01)
    if sampler == "tweedie":
        return from_model(model.predict(x_t, t0).x0).clamp(0, 1).cpu()
    check_sampler(sampler, ENTRY_SAMPLERS + ("tweedie",))
    ts = model.schedule.timesteps(steps, t_start=t0, spacing=default_spacing(sampler))
    runs = [get_sampler(sampler)(model, x_t, ts, generator=generator)
            for _ in range(max(1, samples))]
    return from_model(torch.stack(runs).mean(0)).clamp(0, 1).cpu()
