"""The denoising diffusion training objective."""
from __future__ import annotations

import torch

from .model import Condition, Denoiser
from .noise import NoiseFn, gaussian


def diffusion_loss(model: Denoiser, x0: torch.Tensor, generator: torch.Generator | None = None,
                   cond: Condition | None = None, noise: NoiseFn = gaussian) -> torch.Tensor:
    """Simple loss of Ho et al. 2020 (arXiv 2006.11239, eq. 14), for any parametrisation:
    ``E_{t, eps} || net(x_t, t) - target ||^2`` with ``t`` uniform over the training steps.

    ``x0``: clean batch in model space, (B, C, *spatial). The target is ``eps``, ``x0`` or
    ``v`` depending on ``model.parametrization``.
    """
    b = x0.shape[0]
    dev = generator.device if generator is not None else x0.device
    t = torch.randint(0, model.schedule.num_steps, (b,), generator=generator, device=dev).to(x0.device)
    eps = noise(x0, generator)
    x_t = model.schedule.q_sample(x0, t, eps)
    out = model.net_output(x_t, t, cond)
    return torch.mean((out - model.training_target(x0, eps, t)) ** 2)
