"""The detection interface: every registered detection method (family ``detection`` of
:mod:`meddiff.methods.registry`) is

    method(model, x, *, generator=None, **options) -> AnomalyResult

with ``x`` the images (B, 1, S, S) in *model space* [-1, 1] (the task converts), ``model`` the
loaded network(s) the method needs (a :class:`~meddiff.zoo.store.LoadedModel` or a bare
denoiser; D2: a :class:`~meddiff.methods.detection.latent.LatentDetector`), ``generator`` the
only source of randomness (deterministic methods ignore it) and ``options`` named like the
task's options (``t``, ``level``, ``scale``, ``steps``, ``smooth``, ``samples``,
``classifier``), listed in the method's registration.

Maps are absolute *model-space* differences (B, 1, S, S) float32 >= 0, higher = more
anomalous (twice the image-space difference for ``unit`` models); ``recon`` is the healthy
reconstruction in model space, clipped to [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from meddiff.core.noise import gaussian, get_noise
from meddiff.errors import ConfigError


@dataclass
class AnomalyResult:
    """maps: (B, 1, S, S) float32 >= 0 (higher = more anomalous, model-space units); recon: the
    healthy reconstruction / counterfactual (B, 1, S, S) in model space [-1, 1] (clipped); nfe:
    network evaluations of the diffusion model (classifier calls not counted)."""

    maps: torch.Tensor
    recon: torch.Tensor
    nfe: int


def unpack(model) -> tuple:
    """(denoiser, training noise) of a :class:`~meddiff.zoo.store.LoadedModel` or a denoiser
    (Gaussian noise)."""
    spec = getattr(model, "spec", None)
    den = getattr(model, "denoiser", model)
    return den, get_noise(spec.noise) if spec is not None else gaussian


def check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ConfigError(f"images must be (B, 1, H, W), got {tuple(x.shape)}")


def check_time(name: str, t: float, schedule) -> float:
    """``t`` as a float; ConfigError unless it is in ``[1, T - 1]``."""
    t = float(t)
    if not 1 <= t <= schedule.num_steps - 1:
        raise ConfigError(f"{name} must be in [1, {schedule.num_steps - 1}], got {t:g}")
    return t


def gaussian_smooth(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with std ``sigma_px`` pixels (reflect padding,
    kernel radius ``ceil(3 sigma)``); ``sigma_px = 0`` returns ``x`` unchanged."""
    if sigma_px < 0:
        raise ConfigError(f"smoothing sigma must be >= 0, got {sigma_px}")
    if sigma_px == 0:
        return x
    r = max(1, math.ceil(3 * sigma_px))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma_px) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                    groups=c)


def anomaly_map(x: torch.Tensor, recon: torch.Tensor, smooth: float = 0.0) -> torch.Tensor:
    """``G_smooth * |x - x_hat|`` (B, 1, S, S) float32 >= 0, in the units of its inputs."""
    return gaussian_smooth((x.float() - recon.float()).abs(), smooth)
