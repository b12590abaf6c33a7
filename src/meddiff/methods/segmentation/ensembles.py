"""G2: implicit segmentation ensembles with a conditional DDPM (Wolleb, Sandkuehler, Bieder,
Valmaggia & Cattin 2022, MIDL, PMLR 172:1336-1348, arXiv 2112.03145).

The diffusion model generates the *mask*: its state ``x_t`` (B, 1, H, W) is the noised mask
encoded as -1 (background) / +1 (lesion), and the image ``b`` (B, 1, H, W) in model space is
concatenated to it as an extra input channel, ``net(x_t (+) b, t)`` (Wolleb et al.'s ``X_t =
b (+) x_t``; a ``condition="concat"`` diffusion model of the store). Sampling from noise with
the image fixed gives a mask; N samples with different noise are an implicit ensemble: their
mean is the segmentation (threshold 0.5) and their per-pixel variance an uncertainty map, high
where the samples disagree (lesion borders, faint lesions).

Deviation, made explicit: the bundled model predicts ``x0`` (the mask) instead of Wolleb et
al.'s ``eps``; with the few thousand CPU training steps available the ``x0`` target learns the
image -> mask map much faster (it is a segmentation loss at every noise level), and sampling is
the same for every parametrisation (:class:`meddiff.core.model.Denoiser`).

Segmentation interface (family ``segmentation`` of :mod:`meddiff.methods.registry`):
``method(model, x, **options) -> Segmentation`` with the images ``x`` (B, 1, H, W) in *model
space* [-1, 1] (the task converts) and masks returned as probabilities in [0, 1] (a mask is
not an intensity image: decoding the DDPM's -1 / +1 mask encoding is part of the method).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from meddiff.core.model import Condition
from meddiff.core.samplers import generate, get_sampler
from meddiff.errors import ConfigError
from meddiff.methods.registry import register

DEFAULT_SAMPLES = 8
DEFAULT_SAMPLER = "ddpm"
DEFAULT_STEPS = 50


def decode_masks(x: torch.Tensor) -> torch.Tensor:
    """Sampled masks in the DDPM's encoding (-1 background, +1 lesion) -> soft masks in
    [0, 1] (clipped)."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def _check_sampling(den, n_samples: int, sampler: str, steps: int) -> None:
    if n_samples < 1:
        raise ConfigError(f"samples must be >= 1, got {n_samples}")
    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"sampler must be ddpm or ddim, got {sampler!r}")
    get_sampler(sampler)
    if not 1 <= steps <= den.schedule.num_steps:
        raise ConfigError(f"steps must be in [1, {den.schedule.num_steps}], got {steps}")


@torch.no_grad()
def sample_masks(den, x: torch.Tensor, n_samples: int = DEFAULT_SAMPLES,
                 sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0,
                 batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """``n_samples`` masks per image: (B, N, 1, H, W) soft masks in [0, 1].

    ``x``: (B, 1, H, W) images in model space, the concatenated condition. Each sample starts
    from its own Gaussian noise at ``T - 1`` and runs ``steps`` steps of ``sampler`` (``ddpm``:
    ancestral, Ho et al. 2020, eqs. 6-7, respaced; ``ddim``: eta 0, Song et al. 2021, eq. 12)
    with the image fixed, ``batch_size`` network rows at a time (``progress``: a bar over
    them). Deterministic for a given (seed, B, n_samples, batch_size).
    """
    _check_sampling(den, n_samples, sampler, steps)
    b = x.shape[0]
    dev = den.device
    reps = x.to(dev).repeat_interleave(n_samples, 0)  # image i -> rows i*N .. i*N+N-1
    gen = torch.Generator(dev).manual_seed(int(seed))
    out = []
    for i in tqdm(range(0, len(reps), batch_size), desc="segment", unit="batch", leave=False,
                  disable=not progress):
        chunk = reps[i:i + batch_size]
        m = generate(den, (len(chunk), 1, *chunk.shape[-2:]), sampler=sampler, steps=steps,
                     generator=gen, device=dev, cond=Condition(concat=chunk))
        out.append(decode_masks(m).cpu())
    return torch.cat(out).reshape(b, n_samples, 1, *x.shape[-2:])


def ensemble_stats(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean mask and variance map over the sample axis 1 of ``samples`` (B, N, ...):
    ``mean = 1/N sum_i m_i`` and the population variance ``1/N sum_i (m_i - mean)^2``
    (0 for N = 1). For masks in [0, 1], ``var <= mean (1 - mean)``."""
    mean = samples.mean(1)
    return mean, ((samples - mean.unsqueeze(1)) ** 2).mean(1)


@dataclass
class Segmentation:
    """A segmentation: ``mean`` and ``var`` (B, 1, H, W), ``samples`` (B, N, 1, H, W), all in
    [0, 1]; ``mask`` is ``mean >= 0.5``; ``nfe`` network evaluations; wall ``seconds``."""

    mean: torch.Tensor
    var: torch.Tensor
    samples: torch.Tensor
    nfe: int
    seconds: float

    @property
    def mask(self) -> torch.Tensor:
        return self.mean >= 0.5


@register("ensemble", family="segmentation", system="G2", default_model="seg-ddpm-64",
          options=("samples", "steps", "sampler"),
          summary="G2 Wolleb: mask DDPM given the image; ensemble mean and variance map")
def segment(den, x: torch.Tensor, n_samples: int = DEFAULT_SAMPLES,
            sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0,
            batch_size: int = 64, progress: bool = False) -> Segmentation:
    """Sample ``n_samples`` masks per image (:func:`sample_masks`) and summarise them
    (:func:`ensemble_stats`). ``den``: the mask DDPM's denoiser; ``x`` (B, 1, H, W) model
    space."""
    start, nfe0 = time.perf_counter(), den.nfe
    samples = sample_masks(den, x, n_samples, sampler, steps, seed, batch_size, progress)
    mean, var = ensemble_stats(samples)
    return Segmentation(mean, var, samples, den.nfe - nfe0, time.perf_counter() - start)


def uncertainty_error_correlation(var: torch.Tensor, mean: torch.Tensor,
                                  gt: torch.Tensor) -> float:
    """Pearson correlation between the variance map and the error ``|1[mean >= 0.5] - gt|``
    over all pixels (a check of Wolleb et al.'s claim that the variance flags errors); NaN
    when either is constant."""
    err = ((mean >= 0.5).float() - gt.float()).abs().flatten().double()
    v = var.flatten().double()
    v, err = v - v.mean(), err - err.mean()
    den = float(v.norm() * err.norm())
    return float((v * err).sum()) / den if den > 0 else math.nan
