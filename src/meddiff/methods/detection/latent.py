"""D2: fast anomaly detection with latent diffusion (Pinaya et al. 2022, arXiv 2206.03461).

Two stages trained on *healthy* slices only (their training lives in :mod:`meddiff.train`):

1. an autoencoder ``E, D`` (MONAI ``AutoencoderKL``; Rombach et al. 2022, arXiv 2112.10752,
   sec. 3.1) compressing an image ``x`` (B, 1, 64, 64) to a latent ``z`` (B, 3, 16, 16);
2. a DDPM (Ho et al. 2020, arXiv 2006.11239, eq. 14) on the latents ``z = s * mu_E(x)``, scaled
   by ``s = 1 / std(mu_E)`` over the training images so they have unit standard deviation
   (Rombach et al. 2022, sec. 4.3.2, the "scale factor").

Detection: encode the image, diffuse the latent forward to a few noise levels ``t`` (default
100, 200, 300 of 1000) with ``q(z_t | z_0)`` (Ho et al. 2020, eq. 4), run a few deterministic DDIM
steps back (Song et al. 2021, arXiv 2010.02502, eq. 12), decode, and average the residuals
``|x - D(z_hat_t)|`` over the levels; Gaussian smoothing (the same filter as D3's) gives the
anomaly map (:func:`detect`). A lesion is off the healthy latent manifold, so the reverse
process replaces it by healthy tissue and it shows in the residual. Cheap because the network
works on 16 x 16 latents with few steps (Pinaya et al.'s point: fast). The autoencoder-residual
baseline ``|x - D(E(x))|`` is :func:`ae_residual`.

Intensities: images in model space [-1, 1] (the autoencoder's input; the task converts);
latents are unbounded (unit std), so the latent DDPM does not clip its ``x0`` predictions.
Contracts: :mod:`meddiff.methods.detection.interface`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn

from meddiff.core.model import Denoiser
from meddiff.core.samplers import partial_diffusion
from meddiff.errors import ConfigError
from meddiff.methods.detection.interface import AnomalyResult, gaussian_smooth
from meddiff.methods.registry import register

DEFAULT_T = (100, 200, 300)   # partial-diffusion levels (of 1000)
DEFAULT_STEPS = 5             # DDIM steps back from each level
DEFAULT_SMOOTH_PX = 1.0       # Gaussian sigma of the anomaly map, pixels
Reference = Literal["input", "reconstruction"]


@dataclass
class LatentCodec:
    """An autoencoder plus the latent scale ``s``: images (B, 1, H, W) in model space [-1, 1]
    <-> latents (B, C, H / f, W / f) with unit standard deviation over the training images.

    ``ae`` is anything with ``encode(x) -> (mu, sigma)`` and ``decode(z) -> x`` in model space
    (MONAI ``AutoencoderKL``); the posterior mean ``mu`` is the latent (deterministic)."""

    ae: nn.Module
    scale: float = 1.0

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.ae.encode(x)[0].float() * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> model-space images, clipped to [-1, 1]."""
        return self.ae.decode(z / self.scale).float().clamp(-1.0, 1.0)


@dataclass
class LatentDetector:
    """The two D2 stages: ``codec`` (autoencoder + scale) and ``denoiser`` (latent DDPM)."""

    codec: LatentCodec
    denoiser: Denoiser


def ae_residual(codec: LatentCodec, x: torch.Tensor) -> torch.Tensor:
    """Autoencoder-residual baseline ``|x - D(E(x))|`` (B, 1, H, W) >= 0 for ``x`` in model
    space (Baur et al. 2021, arXiv 2004.03271: the reconstruction-error detector)."""
    return (x - codec.decode(codec.encode(x))).abs()


def _check_levels(den: Denoiser, t_starts: Sequence[float], steps: int) -> list[float]:
    ts = [float(t) for t in t_starts]
    top = den.schedule.num_steps - 1
    if not ts or any(not 0 <= t <= top for t in ts):
        raise ConfigError(f"noise levels must be in [0, {top}], got {list(t_starts)}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    return ts


@torch.no_grad()
def latent_reconstructions(det: LatentDetector, x: torch.Tensor,
                           t_starts: Sequence[float] = DEFAULT_T, steps: int = DEFAULT_STEPS,
                           seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Healthy reconstructions ``D(z_hat_t)`` of ``x`` (B, 1, H, W) in model space, one per
    level: returns (L, B, 1, H, W) in [-1, 1] for the L levels in ``t_starts``.

    ``z_hat_t``: the encoded latent diffused to ``t`` with fresh Gaussian noise (from
    ``generator``, else a generator seeded with ``seed``) and brought back with ``steps`` DDIM
    (eta 0) steps (:func:`meddiff.core.samplers.partial_diffusion`)."""
    den = det.denoiser
    ts = _check_levels(den, t_starts, steps)
    gen = generator if generator is not None else torch.Generator(den.device).manual_seed(int(seed))
    z0 = det.codec.encode(x.to(den.device))
    outs = [det.codec.decode(partial_diffusion(den, z0, t, sampler="ddim", steps=steps,
                                               generator=gen)) for t in ts]
    return torch.stack(outs).to(x.device)


def detect(det: LatentDetector, x: torch.Tensor, t_starts: Sequence[float] = DEFAULT_T,
           steps: int = DEFAULT_STEPS, smooth_px: float = DEFAULT_SMOOTH_PX,
           reference: Reference = "input", seed: int = 0,
           generator: torch.Generator | None = None) -> AnomalyResult:
    """D2 on images ``x`` (B, 1, H, W) in model space: ``maps`` (B, 1, H, W) >= 0, ``recon``
    the mean healthy reconstruction over the levels, ``nfe`` the latent DDPM's network
    evaluations.

    ``maps = G_smooth * mean_t |r - D(z_hat_t)|`` over the levels ``t_starts``.
    ``reference="input"``: ``r = x`` (Pinaya et al. 2022's residual); ``"reconstruction"``:
    ``r = D(E(x))``, which cancels the autoencoder's own blur so only what the diffusion step
    changed remains. Deterministic for a given ``seed`` (or generator state).
    """
    if reference not in ("input", "reconstruction"):
        raise ConfigError(f"reference must be 'input' or 'reconstruction', got {reference!r}")
    nfe0 = det.denoiser.nfe
    recons = latent_reconstructions(det, x, t_starts, steps, seed, generator)
    ref = x if reference == "input" else det.codec.decode(det.codec.encode(x.to(
        det.denoiser.device))).to(x.device)
    maps = gaussian_smooth((recons - ref[None]).abs().mean(0), smooth_px)
    return AnomalyResult(maps, recons.mean(0), det.denoiser.nfe - nfe0)


@register("latent", family="detection", system="D2", default_model="latent-ddpm-64",
          options=("t", "steps", "smooth"),
          summary="D2 Pinaya: latent DDPM, partial diffusion of the autoencoder latent")
def latent(det: LatentDetector, x: torch.Tensor, *, t: float | None = None,
           steps: int = DEFAULT_STEPS, smooth: float = DEFAULT_SMOOTH_PX,
           generator: torch.Generator | None = None) -> AnomalyResult:
    """:func:`detect` at the one level ``t`` (default the levels :data:`DEFAULT_T`) against the
    input."""
    levels = DEFAULT_T if t is None else (t,)
    return detect(det, x, levels, steps, smooth, generator=generator)
