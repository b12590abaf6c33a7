"""R8, CCDF warm start (Chung, Sim & Ye 2022, "Come-Closer-Diffuse-Faster", arXiv 2112.05146,
sec. 3): instead of pure noise at ``T - 1``, start the reverse process at ``t0`` from the
forward-diffused initial estimate ``x_t0 ~ q(x_t0 | init)`` (Ho et al. 2020, eq. 4) and run
only the times ``<= t0``; a good ``init`` (zero-filled / FBP / CS / UNet) keeps the quality
at 10-50x fewer steps.

It is an option of every diffusion reconstruction method (``--t0`` / ``--init``), not a method
of its own: registered as a *modifier* (:mod:`meddiff.methods.registry`). A time index means
a different noise level on every schedule (``t0 = 200``: VE noise std 0.72 on the linear
schedule, 0.35 on the cosine one), so the start may also be given as that noise level
(``--t0-noise``, :func:`warm_start_time`).
"""
from __future__ import annotations

from typing import Callable

import torch

from meddiff.core.noise import gaussian
from meddiff.errors import InputError
from meddiff.methods.registry import register


def warm_start_time(schedule, noise: float) -> float:
    """The warm-start time ``t0`` (rounded to an integer step) at which the forward-diffused
    init carries VE noise std ``noise`` (model-space units, ``x_t / sqrt(abar) = init +
    noise * z``), the same start on every schedule. ``noise`` must be > 0."""
    if not noise > 0:
        raise InputError(f"the warm-start noise level must be > 0, got {noise}")
    return schedule.step_at_sigma_ve(noise)


@register("warm-start", family="reconstruction", system="R8", modifier=True,
          options=("t0", "t0_noise", "init"),
          summary="R8 CCDF: start every diffusion method at t0 from the diffused init")
def start_state(model, shape: tuple[int, ...], ts: torch.Tensor, init: torch.Tensor | None,
                generator: torch.Generator, device) -> Callable[[], torch.Tensor]:
    """A function drawing a start state at ``ts[0]``: pure Gaussian noise of ``shape`` when
    ``init`` is None, else ``q(x_t0 | init)`` with ``t0 = ts[0]`` (model space, ``init`` of
    ``shape``)."""
    t_start = torch.tensor(float(ts[0]))

    def start() -> torch.Tensor:
        if init is None:
            return gaussian(torch.empty(shape, device=device), generator)
        return model.schedule.q_sample(init, t_start, gaussian(init, generator))

    return start
