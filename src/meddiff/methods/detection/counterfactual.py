"""Classifier-guided counterfactuals: D4 and D1 are the same computation (:func:`counterfactual`)
and differ only in the encoding level and the default guidance scale (:data:`WOLLEB`,
:data:`DIFF_SCM`).

- **D4 Wolleb** (Wolleb, Bieder, Sandkuehler & Cattin 2022, MICCAI, arXiv 2203.04306, Alg. 1):
  deterministic DDIM encoding of the image to level ``L``, DDIM decoding with classifier
  guidance of scale ``s`` towards "healthy", ``eps_hat = eps - s sqrt(1 - abar_t)
  grad log p(healthy | x_t)``; anomaly map the difference to the input.
- **D1 Diff-SCM** (Sanchez & Tsaftaris 2022, CLeaR, arXiv 2202.10166, Alg. 1): abduction of the
  exogenous noise by deterministic DDIM encoding to the full time ``T``, action + prediction by
  guided DDIM decoding towards "healthy"; anomaly map ``|x - x_cf|``.

Contracts: :mod:`meddiff.methods.detection.interface` (model space); deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from meddiff.core.guidance import GradientGuidance, classifier_log_prob
from meddiff.core.samplers import ddim, ddim_invert
from meddiff.data.lesion_bench import HEALTHY
from meddiff.errors import ConfigError
from meddiff.methods.detection.interface import (AnomalyResult, anomaly_map, check_images,
                                                 check_time, unpack)
from meddiff.methods.registry import register

Classifier = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``classifier(x_t, t) -> logits (B, classes)`` with x_t in model space and t (B,)."""


@dataclass(frozen=True)
class CounterfactualDefaults:
    """Defaults of one guided-counterfactual method: encoding ``level`` (None: ``T - 1``),
    guidance ``scale``, DDIM ``steps`` and the map's Gaussian smoothing in pixels."""

    level: float | None
    scale: float
    steps: int
    smooth: float = 0.0


#: Wolleb et al. 2022: L = 500 of T = 1000, s = 100 (their BRATS values). The paper decodes with
#: every step from L; 100 DDIM steps here (a speed default).
WOLLEB = CounterfactualDefaults(level=500.0, scale=100.0, steps=100)
#: Sanchez & Tsaftaris 2022: abduction to the full time T. Our scale default (the paper tunes
#: it per data set); choose it on the validation set.
DIFF_SCM = CounterfactualDefaults(level=None, scale=30.0, steps=100)


def encode_grid(schedule, level: float | None, steps: int) -> torch.Tensor:
    """The decreasing DDIM time grid from ``level`` (None: ``T - 1``) to 0 shared by the
    encoding and the decoding (``steps`` points, uniform; Song et al. 2021, sec. 4.2)."""
    level = schedule.num_steps - 1 if level is None else check_time("level", level, schedule)
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    return schedule.timesteps(steps, t_start=level)


def guided_decode(model, x_level: torch.Tensor, timesteps: torch.Tensor, classifier: Classifier,
                  target: int, scale: float) -> torch.Tensor:
    """Deterministic DDIM decoding (eta = 0) of ``x_level`` with classifier guidance towards
    class ``target`` (Dhariwal & Nichol 2021, Algorithm 2, as Wolleb et al. 2022, Alg. 1):
    ``eps_hat = eps - scale sqrt(1 - abar_t) grad_{x_t} log p(target | x_t, t)``.
    Returns the model-space clean sample; ``scale = 0`` is plain DDIM."""
    labels = torch.full((x_level.shape[0],), int(target), dtype=torch.int64, device=x_level.device)
    guided = GradientGuidance(model, classifier_log_prob(classifier, labels), scale)
    return ddim(guided, x_level, timesteps, eta=0.0)


def counterfactual(model, x: torch.Tensor, classifier: Classifier, *, level: float | None,
                   scale: float, steps: int, target: int = HEALTHY,
                   smooth: float = 0.0) -> AnomalyResult:
    """Counterfactual anomaly map: DDIM-encode the image (Song et al. 2021, eq. 13 run forwards:
    the abduction of Sanchez & Tsaftaris and the noise encoding of Wolleb et al.) to ``level``
    (None: the full time ``T - 1``) on a grid of ``steps`` times, decode on the same grid with
    classifier guidance of ``scale`` towards ``target`` (default healthy), map
    ``G_smooth * |x - x_cf|``. Deterministic.

    model: ``LoadedModel`` or denoiser; classifier: ``(x_t, t) -> logits`` on the model's
    device, trained for the model's schedule (the task checks). x: (B, 1, S, S) model space.
    """
    check_images(x)
    den, _ = unpack(model)
    ts = encode_grid(den.schedule, level, steps)
    nfe0 = den.nfe
    x = x.to(den.device).float()
    x_level = ddim_invert(den, x, ts)
    cf = guided_decode(den, x_level, ts, classifier, target, scale).clamp(-1, 1)
    return AnomalyResult(anomaly_map(x, cf, smooth).cpu(), cf.cpu(), den.nfe - nfe0)


@register("wolleb", family="detection", system="D4", default_model="brain-prior-64",
          options=("classifier", "level", "scale", "steps", "smooth"),
          summary="D4 Wolleb: DDIM encoding to level L, classifier-guided decoding")
def wolleb(model, x: torch.Tensor, *, classifier: Classifier, level: float | None = WOLLEB.level,
           scale: float = WOLLEB.scale, steps: int = WOLLEB.steps, smooth: float = WOLLEB.smooth,
           generator: torch.Generator | None = None) -> AnomalyResult:
    """D4 (Wolleb et al. 2022, Alg. 1): :func:`counterfactual` with encoding level L
    (deterministic: ``generator`` is unused)."""
    return counterfactual(model, x, classifier, level=level, scale=scale, steps=steps,
                          smooth=smooth)


@register("diff-scm", family="detection", system="D1", default_model="brain-prior-64",
          options=("classifier", "level", "scale", "steps", "smooth"),
          summary="D1 Diff-SCM: DDIM abduction to T, classifier-guided decoding")
def diff_scm(model, x: torch.Tensor, *, classifier: Classifier,
             level: float | None = DIFF_SCM.level, scale: float = DIFF_SCM.scale,
             steps: int = DIFF_SCM.steps, smooth: float = DIFF_SCM.smooth,
             generator: torch.Generator | None = None) -> AnomalyResult:
    """D1 (Sanchez & Tsaftaris 2022, Alg. 1): :func:`counterfactual` with abduction to the
    full time ``T`` (``level=None``; deterministic: ``generator`` is unused)."""
    return counterfactual(model, x, classifier, level=level, scale=scale, steps=steps,
                          smooth=smooth)
