"""Noise schedules for variance-preserving diffusion and their variance-exploding view.

One schedule object serves every sampler:

- VP (DDPM) view: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020, arXiv
  2006.11239, eq. 4), with ``abar_t = prod_{s<=t} (1 - beta_s)``.
- VE (score SDE) view: ``x_ve = x_t / sqrt(abar_t)`` so that ``x_ve = x_0 + sigma_t eps`` with
  ``sigma_t = sqrt((1 - abar_t) / abar_t)`` (Song et al. 2021, arXiv 2011.13456, sec. 3.4 / app. B).

Time ``t`` is measured in training steps, a float in ``[0, T-1]``; non-integer times use linear
interpolation of ``log abar`` between the tabulated steps, so continuous-time samplers and
respaced discrete ones use the same network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

ScheduleKind = Literal["linear", "cosine"]
Spacing = Literal["uniform", "logsnr"]


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Linear beta schedule of Ho et al. 2020 (sec. 4), scaled for ``num_steps`` steps."""
    scale = 1000.0 / num_steps
    return torch.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021 (arXiv 2102.09672, eq. 17)."""
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


@dataclass
class NoiseSchedule:
    """A discrete VP schedule with ``T`` steps and continuous-time interpolation.

    Attributes:
        kind: ``"linear"`` or ``"cosine"``.
        num_steps: ``T``, the number of training steps.
    """

    kind: ScheduleKind = "linear"
    num_steps: int = 1000

    def __post_init__(self) -> None:
        if self.kind == "linear":
            betas = linear_betas(self.num_steps)
        elif self.kind == "cosine":
            betas = cosine_betas(self.num_steps)
        else:
            raise ValueError(f"unknown schedule kind {self.kind!r}; use 'linear' or 'cosine'")
        self.betas = betas
        self.log_abar = torch.cumsum(torch.log1p(-betas), 0)  # float64, shape (T,)
        # log abar at t = -1, 0, ..., T-1 (index 0 is clean data)
        self._table = torch.cat([torch.zeros(1, dtype=torch.float64), self.log_abar])

    # -- tabulated quantities at (possibly fractional) times -------------------------------
    def alpha_bar(self, t: torch.Tensor | float) -> torch.Tensor:
        """``abar(t)`` for t in ``[-1, T-1]``; ``t = -1`` means clean data (``abar = 1``)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        table = self._table
        pos = (t + 1).clamp(0, self.num_steps)
        lo = pos.floor().long().clamp(max=self.num_steps - 1)
        frac = pos - lo
        hi = (lo + 1).clamp(max=self.num_steps)
        return torch.exp(table[lo] * (1 - frac) + table[hi] * frac)

    def sigma_vp(self, t: torch.Tensor | float) -> torch.Tensor:
        """Noise std of the VP state: ``sqrt(1 - abar_t)``."""
        return torch.sqrt(1 - self.alpha_bar(t))

    def sigma_ve(self, t: torch.Tensor | float) -> torch.Tensor:
        """Noise std of the VE state ``x_t / sqrt(abar_t)``: ``sqrt((1 - abar) / abar)``."""
        ab = self.alpha_bar(t)
        return torch.sqrt((1 - ab) / ab)

    def t_from_sigma_ve(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Inverse of :meth:`sigma_ve`: the (fractional) time whose VE noise std is ``sigma``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        log_ab_target = -torch.log1p(sigma ** 2)  # abar = 1 / (1 + sigma^2)
        table = self._table
        # log_abar is decreasing in t: search on the negated table.
        idx = torch.searchsorted(-table, -log_ab_target).clamp(1, self.num_steps)
        lo, hi = table[idx - 1], table[idx]
        frac = ((lo - log_ab_target) / (lo - hi)).clamp(0, 1)
        return (idx - 1).double() + frac - 1

    def step_at_sigma_ve(self, sigma: float) -> float:
        """The integer training time nearest to :meth:`t_from_sigma_ve` of ``sigma``, clamped
        to [0, T-1]: where a state with VE noise std ``sigma`` enters the reverse process."""
        return float(self.t_from_sigma_ve(sigma).round().clamp(0, self.num_steps - 1))

    # -- forward process ----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x_0)`` (Ho et al. 2020, eq. 4) with the given noise.

        Shapes: ``x0`` and ``noise`` (B, C, *spatial); ``t`` (B,) or scalar.
        """
        ab = _bcast(self.alpha_bar(t), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def timesteps(self, n_steps: int, t_start: float | None = None,
                  spacing: Spacing = "uniform") -> torch.Tensor:
        """``n_steps`` strictly decreasing times from ``t_start`` (default ``T-1``) down to 0,
        rounded to integers (so the network sees training times).

        ``spacing="uniform"`` spaces them evenly in ``t`` (DDIM, Song et al. 2021);
        ``"logsnr"`` evenly in ``lambda = log(alpha / sigma)``, as DPM-Solver recommends
        (Lu et al. 2022, arXiv 2206.00927, sec. 3.3). Rounding may merge a few steps.
        """
        t_start = self.num_steps - 1 if t_start is None else float(t_start)
        if not 0 <= t_start <= self.num_steps - 1:
            raise ValueError(f"t_start must be in [0, {self.num_steps - 1}], got {t_start}")
        n_steps = max(1, min(int(n_steps), int(round(t_start)) + 1))
        if spacing == "uniform":
            ts = torch.linspace(t_start, 0, n_steps, dtype=torch.float64)
        elif spacing == "logsnr":
            lam = lambda t: 0.5 * torch.log(self.alpha_bar(t) / (1 - self.alpha_bar(t)))  # noqa: E731
            targets = torch.linspace(float(lam(t_start)), float(lam(0.0)), n_steps, dtype=torch.float64)
            ts = self.t_from_sigma_ve(torch.exp(-targets))  # sigma_ve = sigma / alpha = exp(-lambda)
        else:
            raise ValueError(f"unknown spacing {spacing!r}; use 'uniform' or 'logsnr'")
        return torch.unique_consecutive(ts.round().clamp(0, t_start))


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample (B,) or scalar value against ``like`` (B, C, ...), in its dtype."""
    v = v.to(device=like.device, dtype=like.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(-1, *([1] * (like.ndim - 1)))
