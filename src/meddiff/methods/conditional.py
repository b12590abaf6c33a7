"""Sampling a conditional diffusion model given an image: the step that low-dose CT (C1),
low-count PET (P1) and paired translation (T1) share -- each draws the target image from pure
noise with the source image(s) concatenated to the state as input channels."""
from __future__ import annotations

import torch

from meddiff.core.model import Condition
from meddiff.core.samplers import generate
from meddiff.data.intensity import from_model, to_model
from meddiff.errors import InputError

#: samplers of a conditional model: DDIM, ancestral DDPM and DPM-Solver++ (the conditional
#: DDPM), and the predictor-corrector sampler of the VP SDE (the conditional score SDE)
SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "pc_vp")


def check_sampler(sampler: str, choices: tuple[str, ...] = SAMPLERS) -> None:
    if sampler not in choices:
        raise InputError(f"unknown sampler {sampler!r}; choose from {', '.join(choices)}")


@torch.no_grad()
def sample_given(model, condition01: torch.Tensor, sampler: str = "dpmpp_2m", steps: int = 20,
                 generator: torch.Generator | None = None, samples: int = 1) -> torch.Tensor:
    """A sample of the conditional model ``p(x | c)`` from pure noise in ``steps`` steps of
    ``sampler``, the condition ``c`` = ``condition01`` (B, Cc, H, W) in [0, 1] concatenated to
    the state in model space (as trained, :mod:`meddiff.train.objectives.diffusion`);
    ``samples > 1``: the mean of that many independent samples, a Monte-Carlo estimate of the
    posterior mean ``E[x | c]`` (the MMSE estimate). Returns (B, 1, H, W) in [0, 1], CPU.
    ``ddpm`` with ``steps = T`` is the 1000-step ancestral sampling of the papers; ``ddim`` with
    one step returns the network's own estimate of ``E[x | c]`` (the x0 prediction from pure
    noise)."""
    check_sampler(sampler)
    if samples < 1:
        raise InputError(f"samples must be >= 1, got {samples}")
    cond = Condition(concat=to_model(condition01))
    shape = (len(condition01), 1, *condition01.shape[-2:])
    draws = [from_model(generate(model, shape, sampler=sampler, steps=steps, generator=generator,
                                 device=condition01.device, cond=cond)).clamp(0, 1)
             for _ in range(samples)]
    return torch.stack(draws).mean(0).cpu()
