"""Unsupervised / weakly supervised anomaly localisation with a healthy diffusion prior.

- **D3 AnoDDPM** (Wyatt, Leach, Schmon & Willcocks 2022, "AnoDDPM: Anomaly Detection with
  Denoising Diffusion Probabilistic Models using Simplex Noise", CVPR Workshops): diffuse the
  image to ``t`` (default 250 of 1000) with the model's training noise (multi-octave simplex for
  a simplex-trained model, :func:`meddiff.core.noise.simplex`), run the reverse DDPM chain back
  (their partial-diffusion strategy), anomaly map ``|x - x_hat|`` (smoothed with a Gaussian).
- **D4 Wolleb** (Wolleb, Bieder, Sandkuehler & Cattin 2022, MICCAI, arXiv 2203.04306, Alg. 1):
  deterministic DDIM encoding of the image to level ``L``, DDIM decoding with classifier
  guidance of scale ``s`` towards "healthy", ``eps_hat = eps - s sqrt(1 - abar_t)
  grad log p(healthy | x_t)``; anomaly map the difference to the input.
- **D1 Diff-SCM** (Sanchez & Tsaftaris 2022, CLeaR, arXiv 2202.10166, Alg. 1): abduction of the
  exogenous noise by deterministic DDIM encoding to the full time ``T``, action + prediction by
  guided DDIM decoding towards "healthy"; anomaly map ``|x - x_cf|``.

D1 and D4 are the same computation (:func:`counterfactual`); they differ only in the encoding
level and the default guidance scale, which are explicit arguments (:data:`WOLLEB`,
:data:`DIFF_SCM`).

Contracts: every function takes and returns *image space* tensors (B, 1, S, S) float32 in
[0, 1]; the network works in *model space* [-1, 1] (:mod:`meddiff.data.intensity`). Maps are
(B, 1, S, S) float32 >= 0 in image-space intensity units, higher = more anomalous.
Randomness comes only from the ``generator`` (D1 / D4 are deterministic).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from meddiff.core.guidance import GradientGuidance, classifier_log_prob
from meddiff.core.noise import NoiseFn, gaussian, get_noise
from meddiff.core.samplers import ddim, ddim_invert, partial_diffusion
from meddiff.data.intensity import from_model, to_model
from meddiff.data.lesion_bench import HEALTHY
from meddiff.errors import ConfigError
from meddiff.methods.noisy_classifier import LoadedClassifier

Classifier = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``classifier(x_t, t) -> logits (B, classes)`` with x_t in model space and t (B,)."""


@dataclass
class AnomalyResult:
    """maps: (B, 1, S, S) float32 >= 0 (higher = more anomalous); recon: the healthy
    reconstruction / counterfactual (B, 1, S, S) in image space [0, 1] (clipped); nfe: network
    evaluations of the diffusion model (classifier calls not counted)."""

    maps: torch.Tensor
    recon: torch.Tensor
    nfe: int


@dataclass(frozen=True)
class CounterfactualDefaults:
    """Defaults of one guided-counterfactual method: encoding ``level`` (None: ``T - 1``),
    guidance ``scale``, DDIM ``steps`` and the map's Gaussian smoothing in pixels."""

    level: float | None
    scale: float
    steps: int
    smooth_px: float = 0.0


#: Wolleb et al. 2022: L = 500 of T = 1000, s = 100 (their BRATS values). The paper decodes with
#: every step from L; 100 DDIM steps here (a speed default).
WOLLEB = CounterfactualDefaults(level=500.0, scale=100.0, steps=100)
#: Sanchez & Tsaftaris 2022: abduction to the full time T. Our scale default (the paper tunes
#: it per data set); choose it on the validation set.
DIFF_SCM = CounterfactualDefaults(level=None, scale=30.0, steps=100)
ANODDPM_T = 250.0
ANODDPM_SMOOTH_PX = 1.0


# ------------------------------------------------------------------------------ helpers
def _unpack(model) -> tuple:
    """(denoiser, training noise) of a :class:`~meddiff.zoo.store.LoadedModel` or a denoiser."""
    spec = getattr(model, "spec", None)
    den = getattr(model, "denoiser", model)
    return den, get_noise(spec.noise) if spec is not None else gaussian


def _check_images(images01: torch.Tensor) -> None:
    if images01.ndim != 4 or images01.shape[1] != 1:
        raise ConfigError(f"images must be (B, 1, H, W), got {tuple(images01.shape)}")


def _check_time(name: str, t: float, schedule) -> float:
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


def anomaly_map(images01: torch.Tensor, recon01: torch.Tensor, smooth_px: float = 0.0) -> torch.Tensor:
    """``G_sigma * |x - x_hat|`` in image space: (B, 1, S, S) float32 >= 0."""
    return gaussian_smooth((images01.float() - recon01.float()).abs(), smooth_px)


# ------------------------------------------------------------------------------ D3 AnoDDPM
def anoddpm(model, images01: torch.Tensor, t: float = ANODDPM_T, *, steps: int | None = None,
            noise: NoiseFn | None = None, smooth_px: float = ANODDPM_SMOOTH_PX, samples: int = 1,
            generator: torch.Generator | None = None) -> AnomalyResult:
    """AnoDDPM (Wyatt et al. 2022, partial diffusion): ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) n``
    with ``n`` the model's noise (eq. 4 of Ho et al. 2020 with simplex ``n`` for a
    simplex-trained model), ancestral DDPM reverse to ``x_hat`` (Ho et al. 2020, eqs. 6-7, the
    same noise at every step), map ``G_sigma * |x - x_hat|`` averaged over ``samples`` draws.

    model: a ``LoadedModel`` (its ``spec.noise`` picks the noise) or a denoiser (``noise``
    default Gaussian). images01: (B, 1, S, S) in [0, 1]. ``steps``: reverse steps (default
    every integer time from ``t``, as the paper). Returns maps and the mean reconstruction.
    """
    _check_images(images01)
    den, model_noise = _unpack(model)
    noise = noise or model_noise
    t = _check_time("t", t, den.schedule)
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    nfe0 = den.nfe
    x = images01.to(den.device).float()
    maps, recons = [], []
    for _ in range(samples):
        xm = partial_diffusion(den, to_model(x), t, sampler="ddpm", steps=steps,
                               generator=generator, noise=noise)
        recon = from_model(xm).clamp(0, 1)
        maps.append(anomaly_map(x, recon, smooth_px))
        recons.append(recon)
    return AnomalyResult(torch.stack(maps).mean(0).cpu(), torch.stack(recons).mean(0).cpu(),
                         den.nfe - nfe0)


# ------------------------------------------------------------------------------ D1 / D4
def encode_grid(schedule, level: float | None, steps: int) -> torch.Tensor:
    """The decreasing DDIM time grid from ``level`` (None: ``T - 1``) to 0 shared by the
    encoding and the decoding (``steps`` points, uniform; Song et al. 2021, sec. 4.2)."""
    level = schedule.num_steps - 1 if level is None else _check_time("level", level, schedule)
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    return schedule.timesteps(steps, t_start=level)


def ddim_encode(model, x0: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM encoding (Song et al. 2021, eq. 13 run forwards; the abduction of
    Sanchez & Tsaftaris 2022 and the noise encoding of Wolleb et al. 2022): model-space ``x0``
    (B, C, S, S) -> the state at ``timesteps[0]``."""
    return ddim_invert(model, x0, timesteps)


def guided_decode(model, x_level: torch.Tensor, timesteps: torch.Tensor, classifier: Classifier,
                  target: int, scale: float) -> torch.Tensor:
    """Deterministic DDIM decoding (eta = 0) of ``x_level`` with classifier guidance towards
    class ``target`` (Dhariwal & Nichol 2021, Algorithm 2, as Wolleb et al. 2022, Alg. 1):
    ``eps_hat = eps - scale sqrt(1 - abar_t) grad_{x_t} log p(target | x_t, t)``.
    Returns the model-space clean sample; ``scale = 0`` is plain DDIM."""
    labels = torch.full((x_level.shape[0],), int(target), dtype=torch.int64, device=x_level.device)
    guided = GradientGuidance(model, classifier_log_prob(classifier, labels), scale)
    return ddim(guided, x_level, timesteps, eta=0.0)


def counterfactual(model, images01: torch.Tensor, classifier: Classifier, *,
                   level: float | None, scale: float, steps: int, target: int = HEALTHY,
                   smooth_px: float = 0.0) -> AnomalyResult:
    """Counterfactual anomaly map shared by D4 (Wolleb) and D1 (Diff-SCM): DDIM-encode the
    image to ``level`` (None: the full time ``T - 1``) on a grid of ``steps`` times, decode on the
    same grid with classifier guidance of ``scale`` towards ``target`` (default healthy), map
    ``G_sigma * |x - x_cf|``. Deterministic.

    model: ``LoadedModel`` or denoiser; classifier: ``(x_t, t) -> logits`` on the model's
    device (a :class:`~meddiff.methods.noisy_classifier.LoadedClassifier` is accepted).
    images01: (B, 1, S, S) in [0, 1].
    """
    _check_images(images01)
    den, _ = _unpack(model)
    clf = classifier
    if isinstance(classifier, LoadedClassifier):
        classifier.check_schedule(den.schedule)
        clf = classifier.net
    ts = encode_grid(den.schedule, level, steps)
    nfe0 = den.nfe
    x = images01.to(den.device).float()
    x_level = ddim_encode(den, to_model(x), ts)
    cf = from_model(guided_decode(den, x_level, ts, clf, target, scale)).clamp(0, 1)
    return AnomalyResult(anomaly_map(x, cf, smooth_px).cpu(), cf.cpu(), den.nfe - nfe0)


def wolleb(model, images01: torch.Tensor, classifier: Classifier, *,
           level: float | None = WOLLEB.level, scale: float = WOLLEB.scale,
           steps: int = WOLLEB.steps, smooth_px: float = WOLLEB.smooth_px) -> AnomalyResult:
    """D4 (Wolleb et al. 2022, Alg. 1): :func:`counterfactual` with encoding level L."""
    return counterfactual(model, images01, classifier, level=level, scale=scale, steps=steps,
                          smooth_px=smooth_px)


def diff_scm(model, images01: torch.Tensor, classifier: Classifier, *,
             level: float | None = DIFF_SCM.level, scale: float = DIFF_SCM.scale,
             steps: int = DIFF_SCM.steps, smooth_px: float = DIFF_SCM.smooth_px) -> AnomalyResult:
    """D1 (Sanchez & Tsaftaris 2022, Alg. 1): :func:`counterfactual` with abduction to the
    full time ``T`` (``level=None``)."""
    return counterfactual(model, images01, classifier, level=level, scale=scale, steps=steps,
                          smooth_px=smooth_px)
