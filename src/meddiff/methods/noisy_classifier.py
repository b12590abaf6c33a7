"""Noise-aware (timestep-conditioned) healthy-vs-lesion classifier for classifier guidance.

Wolleb et al. 2022, "Diffusion Models for Medical Anomaly Detection", MICCAI (arXiv 2203.04306),
sec. 2: the encoder half of the diffusion UNet with the timestep embedding, trained with
cross-entropy on noisy images ``x_t ~ q(x_t | x_0)`` at ``t`` uniform over the training steps
of the diffusion model it will guide (Dhariwal & Nichol 2021, arXiv 2105.05233, sec. 4); we
allow an upper bound on ``t`` (``scripts/train_classifier.py`` uses t < 500, Wolleb's level). The
network is the timestep embedding and down blocks of MONAI's ``DiffusionModelEncoder`` with a
global mean + max pooling head (guided diffusion's classifier pools globally too; MONAI's own
flatten-and-MLP head ties every position to its own weights and stayed at chance on small
lesions).

Contracts: input ``x_t`` (B, 1, S, S) in *model space* (data in [-1, 1] plus noise) and times
``t`` (B,) float in ``[0, T-1]``; output logits (B, 2), class 0 healthy, 1 lesion.

On disk (never pickle): ``NAME.safetensors`` (weights) + ``NAME.json`` with the architecture,
the schedule it was trained for and the card; bundled ones live in
``meddiff/zoo/weights/classifiers`` (a separate folder, so they are not listed as diffusion
models).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from meddiff.core.noise import NoiseFn, gaussian
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.lesion_bench import HEALTHY, LESION
from meddiff.errors import InputError
from meddiff.nets.classifier import ClassifierConfig, NoisyClassifier
from meddiff.zoo.store import WEIGHTS_DIR, _atomic

CLASSIFIER_DIR = WEIGHTS_DIR / "classifiers"
DEFAULT_CLASSIFIER = "lesion-classifier-64"


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
    return F.cross_entropy(classifier(x_t, t), labels.to(x0.device))


@dataclass
class LoadedClassifier:
    """A loaded classifier: network (eval mode, no grad on parameters) and its metadata.

    ``schedule``: ``{"kind": ..., "num_steps": ...}`` of the diffusion model it was trained for.
    """

    name: str
    net: NoisyClassifier
    schedule: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)

    def check_schedule(self, schedule: NoiseSchedule) -> None:
        """InputError when the classifier was trained for another noise schedule."""
        want = {"kind": schedule.kind, "num_steps": schedule.num_steps}
        if {k: self.schedule.get(k) for k in want} != want:
            raise InputError(f"classifier {self.name} was trained for schedule {self.schedule}, "
                             f"the diffusion model uses {want}")


def save_classifier(path: str | Path, net: NoisyClassifier, schedule: NoiseSchedule,
                    card: dict[str, Any] | None = None) -> Path:
    """Write ``path.safetensors`` and ``path.json`` atomically; returns the JSON path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    _atomic(path.with_suffix(".safetensors"), lambda tmp: save_file(state, tmp))
    doc = {"classifier": asdict(net.config),
           "schedule": {"kind": schedule.kind, "num_steps": schedule.num_steps},
           "labels": {str(HEALTHY): "healthy", str(LESION): "lesion"}, "card": card or {},
           "weights": path.with_suffix(".safetensors").name}
    json_path = path.with_suffix(".json")
    _atomic(json_path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n",
                                                        encoding="utf-8"))
    return json_path


def _resolve(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    if os.sep not in text and not text.endswith((".json", ".safetensors")):
        path = CLASSIFIER_DIR / f"{text}.json"
        if not path.exists():
            raise InputError(f"classifier {text!r} is not bundled (not trained yet?): run "
                             f"'python scripts/train_classifier.py --name {text}' or pass a "
                             "NAME.json path")
        return path
    path = Path(text).with_suffix(".json")
    if not path.exists():
        raise InputError(f"{path}: no such classifier file")
    return path


def load_classifier(name_or_path: str | os.PathLike = DEFAULT_CLASSIFIER,
                    device: str | torch.device = "cpu") -> LoadedClassifier:
    """A bundled classifier by name or a ``NAME.json`` / ``NAME.safetensors`` pair; every
    problem is a one-line :class:`InputError`."""
    json_path = _resolve(name_or_path)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        cfg = doc["classifier"]
        config = ClassifierConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in cfg.items()})
        schedule = dict(doc["schedule"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{json_path}: not a meddiff classifier ({err.__class__.__name__})") from None
    net = NoisyClassifier(config)
    weights = json_path.with_name(doc.get("weights", json_path.with_suffix(".safetensors").name))
    try:
        net.load_state_dict(load_file(str(weights), device="cpu"))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise InputError(f"{weights}: unreadable classifier weights ({err.__class__.__name__})") from None
    net.to(device).eval().requires_grad_(False)
    return LoadedClassifier(json_path.stem, net, schedule, doc.get("card", {}))
