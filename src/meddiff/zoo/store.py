"""Trained diffusion models on disk: a spec (JSON) + weights (safetensors), never pickle.

A model ``NAME`` is the pair ``NAME.json`` / ``NAME.safetensors``. Bundled models live in
``meddiff/zoo/weights``; ``load_model`` also takes a path to either file of any other pair, or a
training run's ``out_dir`` (its EMA weights and the spec written next to them).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from meddiff.core.model import Denoiser
from meddiff.core.schedule import NoiseSchedule
from meddiff.errors import ConfigError, InputError
from meddiff.nets.unet import UNetConfig, build_unet
from meddiff.config import from_dict, to_dict

WEIGHTS_DIR = Path(__file__).parent / "weights"
SPEC_NAME = "model.json"  # the spec a training run writes into its out_dir


@dataclass(frozen=True)
class DiffusionSpec:
    """Everything needed to rebuild a trained diffusion model besides its weights.

    Attributes:
        net: the UNet architecture.
        schedule / num_steps: the training noise schedule.
        parametrization: what the network predicts (eps, x0 or v).
        image_size: the spatial size it was trained at (H = W [= D]).
        noise: the training noise, ``gaussian`` or ``simplex`` (AnoDDPM).
        clip_x0: clip the predicted clean sample to the data range [-1, 1] while sampling.
            Needed with the linear schedule: at ``t ~ T`` a 1 % error in the noise prediction
            becomes a ``sqrt(1 - abar) / sqrt(abar) ~ 150``-fold error in ``x0``, which the
            deterministic DDIM ODE carries to the end (measured on ``brain-prior-64``: DDIM
            samples with std 2.4 instead of 0.6 without clipping). Ho et al. 2020 and MONAI's
            schedulers clip too.
        intensity: ``"unit"``: one image-space channel in [0, 1], model space ``2 x - 1``;
            ``"complex"``: two channels (real, imaginary) of a complex image of magnitude <= 1,
            used as the model-space tensor unchanged (:mod:`meddiff.data.modalities`).
        data: free-form description of the training data (for the model card).
    """

    net: UNetConfig = field(default_factory=UNetConfig)
    schedule: Literal["linear", "cosine"] = "linear"
    num_steps: int = 1000
    parametrization: Literal["eps", "x0", "v"] = "eps"
    image_size: int = 64
    noise: Literal["gaussian", "simplex"] = "gaussian"
    clip_x0: bool = True
    intensity: Literal["unit", "complex"] = "unit"
    data: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size % self.net.divisor:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of {self.net.divisor}")
        if self.intensity == "complex" and self.net.in_channels != 2:
            raise ConfigError("a complex-intensity model needs net.in_channels = 2 (real, imag)")


@dataclass
class LoadedModel:
    """A loaded model: the ready denoiser, its spec, and its card (training facts)."""

    name: str
    denoiser: Denoiser
    spec: DiffusionSpec
    card: dict[str, Any]


def build_denoiser(spec: DiffusionSpec, autocast: bool = False) -> Denoiser:
    """A randomly initialised denoiser for ``spec``."""
    return Denoiser(build_unet(spec.net), NoiseSchedule(spec.schedule, spec.num_steps),
                    parametrization=spec.parametrization, autocast=autocast,
                    clip_x0=(-1.0, 1.0) if spec.clip_x0 else None)


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_spec(path: str | Path, spec: DiffusionSpec, card: dict[str, Any] | None = None) -> Path:
    """Write the spec + card JSON ``path`` (with ``.json`` suffix) atomically."""
    path = Path(path).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"spec": to_dict(spec), "card": card or {}, "weights": path.with_suffix(".safetensors").name}
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8"))
    return path


def save_model(path: str | Path, net: torch.nn.Module, spec: DiffusionSpec,
               card: dict[str, Any] | None = None) -> Path:
    """Write ``path.safetensors`` and ``path.json`` (spec + card) atomically; returns the JSON path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    _atomic(path.with_suffix(".safetensors"), lambda tmp: save_file(state, tmp))
    return write_spec(path, spec, card)


def save_weights(path: str | Path, net: torch.nn.Module, metadata: dict[str, str]) -> Path:
    """``net``'s state dict and string ``metadata`` (architecture, card, ... as JSON strings) in
    one safetensors file ``path``, written atomically; no pickle. Read with :func:`load_weights`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    _atomic(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return path


def load_weights(path: str | Path, build: Callable[[dict[str, str]], torch.nn.Module], what: str,
                 train_hint: str) -> tuple[torch.nn.Module, dict[str, str]]:
    """A network saved by :func:`save_weights`: ``build(metadata)`` makes the architecture, the
    weights are loaded into it. Returns ``(net in eval mode without gradients, metadata)``; a
    missing, corrupt or mismatched file is one-line :class:`InputError` naming ``what`` and the
    command that trains it (``train_hint``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no {what} weights; train them with '{train_hint}'")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        net = build(meta)
        net.load_state_dict(state)
    except (SafetensorError, KeyError, RuntimeError, ValueError, TypeError) as err:
        raise InputError(f"{path}: unreadable {what} weights ({err.__class__.__name__})") from None
    return net.eval().requires_grad_(False), meta


def bundled_models() -> list[str]:
    """Names of the diffusion models shipped with the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json")
                  if p.with_suffix(".safetensors").exists() and _is_diffusion(p))


def _is_diffusion(json_path: Path) -> bool:
    try:
        return "spec" in json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _resolve(name_or_path: str | os.PathLike) -> Path:
    """The ``.json`` of a bundled name, a pair path, or a training out_dir."""
    text = str(name_or_path)
    if (WEIGHTS_DIR / f"{text}.json").exists() and os.sep not in text:
        return WEIGHTS_DIR / f"{text}.json"
    path = Path(text)
    if path.is_dir() and (path / SPEC_NAME).exists():
        return path / SPEC_NAME
    if path.suffix in (".json", ".safetensors") and path.with_suffix(".json").exists():
        return path.with_suffix(".json")
    if path.exists():
        raise InputError(f"{path}: not a meddiff model (expected NAME.json + NAME.safetensors "
                         f"or a training out_dir with {SPEC_NAME})")
    raise InputError(f"unknown model {text!r}; bundled models: {', '.join(bundled_models()) or 'none'}")


def _weights_for(json_path: Path, doc: dict) -> Path:
    if json_path.name == SPEC_NAME:  # a training run: EMA weights of the latest checkpoint
        from meddiff.train.checkpoint import latest_checkpoint
        ckpt = latest_checkpoint(json_path.parent)
        if ckpt is None:
            raise InputError(f"{json_path.parent}: training run has no checkpoint yet")
        return ckpt / "ema.safetensors"
    return json_path.with_name(doc.get("weights", json_path.with_suffix(".safetensors").name))


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
               autocast: bool = False) -> LoadedModel:
    """Load a bundled model by name, a saved pair, or a training run (EMA weights).

    Raises :class:`InputError` / :class:`ConfigError` with one line for an unknown name, a
    missing or corrupt file, or weights that do not match the spec.
    """
    json_path = _resolve(name_or_path)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{json_path}: unreadable model spec ({err.__class__.__name__})") from None
    spec = from_dict(DiffusionSpec, doc.get("spec"), path=str(json_path))
    weights = _weights_for(json_path, doc)
    denoiser = build_denoiser(spec, autocast=autocast)
    try:
        state = load_file(str(weights), device="cpu")
        denoiser.net.load_state_dict(state)
    except (OSError, SafetensorError) as err:
        raise InputError(f"{weights}: unreadable weights ({' '.join(str(err).split())[:120]})") from None
    except RuntimeError:
        raise InputError(f"{weights}: weights do not match the architecture in {json_path.name}") from None
    denoiser.net.to(device).eval().requires_grad_(False)
    return LoadedModel(json_path.stem if json_path.name != SPEC_NAME else str(json_path.parent),
                       denoiser, spec, doc.get("card", {}))


def describe(name: str) -> dict[str, Any]:
    """Spec and card of a bundled model without building it (for ``meddiff models``)."""
    json_path = _resolve(name)
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    return {"name": name, **doc}


__all__ = ["DiffusionSpec", "LoadedModel", "build_denoiser", "write_spec", "save_model", "load_model",
           "save_weights", "load_weights", "bundled_models", "describe"]
