"""Samplers: small functions with one signature.

    sampler(model, x, timesteps, *, cond=None, generator=None, callback=None, progress=False, **opts)

- ``model`` has ``.schedule`` and ``.predict(x_t, t, cond) -> Prediction`` (a
  :class:`~meddiff.core.model.Denoiser` or any guidance wrapper of one).
- ``x`` is the VP state (B, C, *spatial) at time ``timesteps[0]``; the result is the clean
  sample in model space.
- ``timesteps`` is a strictly decreasing 1-D tensor of (possibly fractional) times ending at 0;
  after the last one the sampler steps to clean data (time -1, ``abar = 1``).
- ``callback(step)`` is called after every step with a :class:`Step`; if it returns a tensor,
  that replaces the state (data consistency, progress, collecting a chain). Callbacks see the
  VP state, whatever space the sampler works in internally.

Each sampler uses one network evaluation per timestep (predictor-corrector: ``1 + n_corrector``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from .model import Condition
from .noise import NoiseFn, gaussian
from .schedule import _bcast


@dataclass
class Step:
    """What a callback sees after step ``i``: state ``x`` at time ``t_next`` (VP space) and the
    clean-sample estimate ``x0`` the step used (made at time ``t``)."""

    i: int
    t: float
    t_next: float
    x: torch.Tensor
    x0: torch.Tensor


Callback = Callable[[Step], "torch.Tensor | None"]


def _iterate(timesteps: torch.Tensor, progress: bool, desc: str):
    """Pairs ``(i, t, t_next)`` with ``t_next = -1`` after the last timestep."""
    ts = [float(t) for t in timesteps]
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError("timesteps must be strictly decreasing")
    pairs = list(zip(range(len(ts)), ts, ts[1:] + [-1.0]))
    return tqdm(pairs, desc=desc, leave=False, disable=not progress)


def _after(callback: Callback | None, step: Step) -> torch.Tensor:
    if callback is None:
        return step.x
    out = callback(step)
    return step.x if out is None else out


def _ab(model, t: float, like: torch.Tensor) -> torch.Tensor:
    return _bcast(model.schedule.alpha_bar(torch.tensor(t)), like)


@torch.no_grad()
def ddpm(model, x: torch.Tensor, timesteps: torch.Tensor, *, cond: Condition | None = None,
         generator: torch.Generator | None = None, callback: Callback | None = None,
         noise: NoiseFn = gaussian, progress: bool = False) -> torch.Tensor:
    """Ancestral sampling from the posterior ``q(x_s | x_t, x0_hat)`` (Ho et al. 2020,
    arXiv 2006.11239, eqs. 6-7), generalised to any decreasing subsequence of times (Nichol &
    Dhariwal 2021, arXiv 2102.09672, sec. 4: ``beta_ts = 1 - abar_t / abar_s``)."""
    for i, t, s in _iterate(timesteps, progress, "ddpm"):
        x0 = model.predict(x, t, cond).x0
        ab_t, ab_s = _ab(model, t, x), _ab(model, s, x)
        beta = 1 - ab_t / ab_s
        mean = (ab_s.sqrt() * beta * x0 + (ab_t / ab_s).sqrt() * (1 - ab_s) * x) / (1 - ab_t)
        var = (1 - ab_s) / (1 - ab_t) * beta
        x = mean + var.sqrt() * noise(x, generator) if s >= 0 else mean
        x = _after(callback, Step(i, t, s, x, x0))
    return x


@torch.no_grad()
def ddim(model, x: torch.Tensor, timesteps: torch.Tensor, *, eta: float = 0.0,
         cond: Condition | None = None, generator: torch.Generator | None = None,
         callback: Callback | None = None, noise: NoiseFn = gaussian, progress: bool = False) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, arXiv 2010.02502, eq. 12); ``eta = 0`` is the
    deterministic probability-flow sampler, ``eta = 1`` matches DDPM's variance."""
    for i, t, s in _iterate(timesteps, progress, "ddim"):
        pred = model.predict(x, t, cond)
        ab_t, ab_s = _ab(model, t, x), _ab(model, s, x)
        sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).clamp(min=0).sqrt()
        x = ab_s.sqrt() * pred.x0 + (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() * pred.eps
        if eta > 0 and s >= 0:
            x = x + sigma * noise(x, generator)
        x = _after(callback, Step(i, t, s, x, pred.x0))
    return x


@torch.no_grad()
def ddim_invert(model, x0: torch.Tensor, timesteps: torch.Tensor, *, cond: Condition | None = None,
                progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM encoding of a clean image to ``x_{t_L}`` (Song et al. 2021, sec. 4.3;
    the abduction step of Sanchez & Tsaftaris 2022 and Wolleb et al. 2022).

    ``timesteps`` is the *decreasing* grid a later :func:`ddim` call decodes with; inversion walks
    it upwards, treating ``x0`` as the state at the smallest time. Returns the state at
    ``timesteps[0]``.
    """
    ts = [float(t) for t in timesteps.flip(0)]
    x = x0
    for t, t_up in tqdm(list(zip(ts, ts[1:])), desc="ddim-invert", leave=False, disable=not progress):
        pred = model.predict(x, t, cond)
        ab_up = _ab(model, t_up, x)
        x = ab_up.sqrt() * pred.x0 + (1 - ab_up).sqrt() * pred.eps
    return x


@torch.no_grad()
def dpmpp_2m(model, x: torch.Tensor, timesteps: torch.Tensor, *, cond: Condition | None = None,
             generator: torch.Generator | None = None, callback: Callback | None = None,
             noise: NoiseFn = gaussian, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second-order data-prediction solver of the probability-flow
    ODE (Lu et al. 2022, arXiv 2211.01095, Algorithm 2). The last evaluation, at the final
    timestep, returns its clean-sample prediction. Deterministic: ``generator`` and ``noise``
    are accepted for the common signature only."""
    x0_prev, h_prev = None, None
    for i, t, s in _iterate(timesteps, progress, "dpm++2m"):
        x0 = model.predict(x, t, cond).x0
        if s < 0:  # denoise at the end: lambda(-1) is infinite
            x = x0
        else:
            ab_t, ab_s = _ab(model, t, x), _ab(model, s, x)
            lam = lambda ab: 0.5 * torch.log(ab / (1 - ab))  # noqa: E731  log(alpha / sigma)
            h = lam(ab_s) - lam(ab_t)
            d = x0
            if x0_prev is not None:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - x0_prev / (2 * r)
            x = ((1 - ab_s) / (1 - ab_t)).sqrt() * x - ab_s.sqrt() * torch.expm1(-h) * d
            x0_prev, h_prev = x0, h
        x = _after(callback, Step(i, t, s, x, x0))
    return x


def _langevin(model, x, t: float, n: int, snr: float, scale: float, cond, generator, noise):
    """Langevin corrector (Song et al. 2021, arXiv 2011.13456, Algorithms 4-5) on the VP state.

    Step size by the signal-to-noise rule ``eps = 2 a (snr ||z|| / ||score||)^2`` per sample
    (``a = 1`` for VE, ``alpha_t = 1 - beta_t`` for VP). The rule is invariant to the VP/VE
    change of variables, so running it on the VP state with the VP score is the VE corrector.
    """
    sig = _bcast(model.schedule.sigma_vp(torch.tensor(t)), x)
    for _ in range(n):
        score = -model.predict(x, t, cond).eps / sig
        z = noise(x, generator)
        ratio = z.flatten(1).norm(dim=1) / score.flatten(1).norm(dim=1).clamp(min=1e-12)
        step = _bcast(2 * scale * (snr * ratio) ** 2, x)
        x = x + step * score + (2 * step).sqrt() * z
    return x


@torch.no_grad()
def pc_ve(model, x: torch.Tensor, timesteps: torch.Tensor, *, snr: float = 0.16, n_corrector: int = 1,
          cond: Condition | None = None, generator: torch.Generator | None = None,
          callback: Callback | None = None, noise: NoiseFn = gaussian, progress: bool = False) -> torch.Tensor:
    """Predictor-corrector sampling of the VE SDE (Song et al. 2021, Algorithm 2): Langevin
    corrector then reverse-diffusion (Euler-Maruyama) predictor at every noise level.

    Works in the VE state ``y = x / sqrt(abar_t)`` with ``sigma_t = sqrt((1 - abar)/abar)`` and
    score ``-eps / sigma_t``; callbacks receive the VP state.
    """
    sched = model.schedule
    for i, t, s in _iterate(timesteps, progress, "pc-ve"):
        x = _langevin(model, x, t, n_corrector, snr, 1.0, cond, generator, noise)
        pred = model.predict(x, t, cond)
        y = x / _ab(model, t, x).sqrt()
        sig_t = _bcast(sched.sigma_ve(torch.tensor(t)), x)
        sig_s = _bcast(sched.sigma_ve(torch.tensor(s)), x) if s >= 0 else torch.zeros_like(sig_t)
        var = sig_t ** 2 - sig_s ** 2
        y = y - var * pred.eps / sig_t  # + var * score, score = -eps / sigma
        if s >= 0:
            y = y + var.sqrt() * noise(x, generator)
        x = y * _ab(model, s, x).sqrt()
        x = _after(callback, Step(i, t, s, x, pred.x0))
    return x


@torch.no_grad()
def pc_vp(model, x: torch.Tensor, timesteps: torch.Tensor, *, snr: float = 0.16, n_corrector: int = 1,
          cond: Condition | None = None, generator: torch.Generator | None = None,
          callback: Callback | None = None, noise: NoiseFn = gaussian, progress: bool = False) -> torch.Tensor:
    """Predictor-corrector sampling of the VP SDE (Song et al. 2021, Algorithm 3): Langevin
    corrector, then an Euler-Maruyama step of the reverse SDE
    ``dx = [-beta/2 x - beta score] dt + sqrt(beta) dw`` with ``beta dt = log(abar_s / abar_t)``.
    The last step to clean data is the Tweedie estimate (noise removal)."""
    for i, t, s in _iterate(timesteps, progress, "pc-vp"):
        ab_t = _ab(model, t, x)
        alpha = 1 - float(model.schedule.betas[int(round(t))])
        x = _langevin(model, x, t, n_corrector, snr, alpha, cond, generator, noise)
        pred = model.predict(x, t, cond)
        if s < 0:
            x = pred.x0
        else:
            b = torch.log(_ab(model, s, x) / ab_t)
            score = -pred.eps / (1 - ab_t).sqrt()
            x = x + 0.5 * b * x + b * score + b.sqrt() * noise(x, generator)
        x = _after(callback, Step(i, t, s, x, pred.x0))
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "pc_ve": pc_ve, "pc_vp": pc_vp,
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """Look up a sampler by name (``ddpm``, ``ddim``, ``dpmpp_2m``, ``pc_ve``, ``pc_vp``)."""
    canon = lambda s: s.lower().replace("++", "pp").replace("-", "").replace("_", "")  # noqa: E731
    found = {canon(k): f for k, f in SAMPLERS.items()}.get(canon(name))
    if found is None:
        raise KeyError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return found


def default_spacing(sampler: str) -> str:
    """Timestep spacing each sampler works best with: log-SNR for DPM-Solver++, else uniform."""
    return "logsnr" if get_sampler(sampler) is dpmpp_2m else "uniform"


def generate(model, shape: tuple[int, ...], *, sampler: str = "ddim", steps: int = 50,
             generator: torch.Generator | None = None, noise: NoiseFn = gaussian,
             device: torch.device | str = "cpu", **opts) -> torch.Tensor:
    """Unconditional (or ``cond``-conditioned via ``opts``) generation from pure noise at
    ``T - 1``; returns samples (``shape``) in model space [-1, 1] (unclipped)."""
    x = noise(torch.empty(shape, device=device), generator)
    ts = model.schedule.timesteps(steps, spacing=default_spacing(sampler))
    return get_sampler(sampler)(model, x, ts, generator=generator, noise=noise, **opts)


def partial_diffusion(model, x0: torch.Tensor, t0: float, *, sampler: str = "ddpm", steps: int | None = None,
                      generator: torch.Generator | None = None, noise: NoiseFn = gaussian,
                      **opts) -> torch.Tensor:
    """Diffuse ``x0`` (model space, (B, C, *spatial)) forward to time ``t0`` with ``q(x_t0|x0)``
    and run the reverse process from there (SDEdit, Meng et al. 2022, arXiv 2108.01073; the
    reconstruction of AnoDDPM and the warm start of CCDF, Chung et al. 2022, arXiv 2112.05146).

    ``steps`` reverse steps (default: every integer time from ``t0`` down to 0).
    """
    steps = int(round(t0)) + 1 if steps is None else steps
    ts = model.schedule.timesteps(steps, t_start=t0, spacing=default_spacing(sampler))
    x_t = model.schedule.q_sample(x0, torch.tensor(float(t0)), noise(x0, generator))
    return get_sampler(sampler)(model, x_t, ts, generator=generator, noise=noise, **opts)
