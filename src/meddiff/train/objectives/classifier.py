"""The noise-aware classifier that guides D4 (Wolleb) and D1 (Diff-SCM).

Wolleb et al. 2022, "Diffusion Models for Medical Anomaly Detection", MICCAI (arXiv:2203.04306),
sec. 2; Dhariwal & Nichol 2021 (arXiv:2105.05233, sec. 4): cross-entropy of the classifier on
noisy images ``x_t ~ q(x_t | x_0)`` of the schedule of the diffusion model it will guide. We
restrict ``t < max_t`` (Wolleb's noise level L = 500) with a curriculum: the range grows
linearly from ``t_start`` to ``max_t`` over the first half of training. Uniform ``t`` over all
1000 steps left the classifier at chance after 1500 and 4000 steps: at most steps the lesions
are buried in noise and the loss gives no gradient towards them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meddiff.core.noise import NoiseFn, gaussian, get_noise
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.intensity import to_model
from meddiff.data.lesion_bench import healthy_bench, lesion_bench
from meddiff.errors import ConfigError
from meddiff.eval.metrics import auroc
from meddiff.nets.unet import count_parameters
from meddiff.train.objectives.base import Objective

VAL_TIMES = (0, 100, 250, 500, 750)


def classifier_loss(classifier: nn.Module, x0: torch.Tensor, labels: torch.Tensor,
                    schedule: NoiseSchedule, generator: torch.Generator | None = None,
                    noise: NoiseFn = gaussian, t_max: int | None = None) -> torch.Tensor:
    """Cross-entropy of the classifier on noisy images (Wolleb et al. 2022, sec. 2; Dhariwal &
    Nichol 2021, sec. 4): ``t ~ U{0..t_max-1}`` (default all ``T`` steps),
    ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020, eq. 4), loss
    ``CE(f(x_t, t), y)``.

    x0: (B, 1, S, S) clean images in model space [-1, 1]; labels: (B,) int64.
    """
    dev = generator.device if generator is not None else x0.device
    high = schedule.num_steps if t_max is None else max(1, min(int(t_max), schedule.num_steps))
    t = torch.randint(0, high, (x0.shape[0],), generator=generator, device=dev).to(x0.device)
    x_t = schedule.q_sample(x0, t, noise(x0, generator))
    return F.cross_entropy(classifier(x_t, t).float(), labels.to(x0.device))


def curriculum_t_max(step: int, steps: int, t_start: int, max_t: int) -> int:
    """Upper bound of ``t`` at (0-based) ``step``: linear from ``t_start`` to ``max_t`` over
    the first half of the ``steps``, then ``max_t``."""
    return round(t_start + (max_t - t_start) * min(1.0, 2 * step / steps))


@dataclass(frozen=True)
class ClassifierOptions:
    """``max_t`` / ``t_start``: the ``t`` curriculum; ``noise``: the guided model's training
    noise; ``guides``: the diffusion model it is meant for (recorded in the card; the spec's
    schedule must be that model's); ``val_seed``: noise of the validation."""

    max_t: int = 500
    t_start: int = 50
    noise: Literal["gaussian", "simplex"] = "gaussian"
    guides: str = "brain-prior-64"
    val_seed: int = 0


class Classifier(Objective):
    """Noise-aware healthy-vs-lesion classifier on ``lesion_pairs`` data."""

    name = "classifier"
    kind = "classifier"
    Options = ClassifierOptions

    def check(self) -> None:
        o = self.options
        if not 1 <= o.t_start <= o.max_t <= self.spec.num_steps:
            raise ConfigError(f"need 1 <= t_start <= max_t <= {self.spec.num_steps}, got "
                              f"t_start={o.t_start}, max_t={o.max_t}")
        if self.data.dataset != "lesion_pairs":
            raise ConfigError("the classifier trains on data.dataset lesion_pairs")

    @property
    def image_size(self) -> int:
        return self.spec.net.image_size

    @cached_property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.spec.schedule, self.spec.num_steps)

    def loss(self, nets: Mapping[str, nn.Module], batch: dict, generator: torch.Generator,
             step: int) -> torch.Tensor:
        o = self.options
        t_max = curriculum_t_max(step, self.train.steps, o.t_start, o.max_t)
        return classifier_loss(nets["model"], to_model(batch["image"].float()), batch["label"],
                               self.schedule, generator, get_noise(o.noise), t_max=t_max)

    @torch.no_grad()
    def validate(self, nets: Mapping[str, nn.Module], spec) -> dict:
        """Balanced accuracy and AUROC of ``p(lesion | x_t, t)`` at fixed ``t`` on the lesion
        benchmark's validation split (its large, shifted lesions) against the same healthy
        sections."""
        size, contrasts = self.image_size, self.data.contrasts
        sick = lesion_bench("val", contrasts, size=size).images
        healthy = healthy_bench("val", contrasts, size=size).images
        x0 = to_model(torch.cat([sick, healthy]))
        y = np.r_[np.ones(len(sick)), np.zeros(len(healthy))]
        g, noise = torch.Generator().manual_seed(self.options.val_seed + 12345), \
            get_noise(self.options.noise)
        out = {}
        for t in VAL_TIMES:
            x_t = self.schedule.q_sample(x0, torch.tensor(float(t)), noise(x0, g))
            p = torch.softmax(nets["model"](x_t, float(t)), 1)[:, 1].numpy()
            hit = (p > 0.5) == y
            out[f"t={t}"] = {"balanced_accuracy": round(float(0.5 * (hit[y == 1].mean()
                                                                     + hit[y == 0].mean())), 4),
                             "auroc": round(float(auroc(p, y)), 4)}
        return out

    def network_text(self, spec, net: nn.Module) -> str:
        return (f"MONAI DiffusionModelEncoder blocks (timestep-conditioned) + global mean/max "
                f"pooling head, channels {list(spec.net.channels)}, "
                f"{count_parameters(net) / 1e6:.2f} M parameters; input x_t in model space at "
                f"{spec.net.image_size} px, logits of {list(spec.labels)}; guides "
                f"`{self.options.guides}` ({spec.schedule} schedule, {spec.num_steps} steps)")

    def loss_text(self) -> str:
        o = self.options
        return (f"cross-entropy on x_t ~ q(x_t | x_0) ({o.noise} noise) with t < {o.max_t}, "
                f"curriculum from {o.t_start} over the first half of training (Wolleb et al. "
                "2022, sec. 2)")
