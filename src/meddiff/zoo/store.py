"""The one model store: every trained network is ``NAME.json`` + ``NAME.safetensors``.

``NAME.json`` holds the format tag, the network's kind and spec (:mod:`meddiff.zoo.kinds`), its
card (training facts) and the stored dtype; the safetensors file holds the weights, in float16
where the kind allows (halving the bundle; loaded back into float32 parameters). Nothing is
pickled. Bundled models live flat in ``meddiff/zoo/weights``; :func:`load` also takes a path
to any other pair or a training run's ``out_dir`` (its latest EMA weights without the share of
the start weights, :mod:`meddiff.zoo.runs`). Listing without torch: :mod:`meddiff.zoo.catalogue`.

Every spec is bounded before a network is built (:func:`check_bounds`: widths, levels,
blocks, schedule steps, image size and a parameter estimate), so a document or a run config
declaring a huge network is a one-line ConfigError instead of an allocation failure.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from meddiff.config import from_dict, to_dict
from meddiff.core.model import Denoiser
from meddiff.core.schedule import NoiseSchedule
from meddiff.errors import ConfigError, InputError
from meddiff.data.writers import atomic_write
from meddiff.zoo.catalogue import FORMAT, read_document, resolve
from meddiff.zoo.kinds import DiffusionSpec, get_kind, kind_of
from meddiff.zoo.runs import AVERAGE_WEIGHTS, RUN_SPEC, latest_checkpoint


@dataclass
class Stored:
    """A loaded network: ``net`` in eval mode without gradients, on the requested device."""

    name: str
    kind: str
    spec: Any
    net: nn.Module
    card: dict[str, Any]
    path: Path


@dataclass
class LoadedModel:
    """A loaded diffusion model: the ready denoiser, its spec and its card."""

    name: str
    denoiser: Denoiser
    spec: DiffusionSpec
    card: dict[str, Any]


#: bounds of every spec (any kind): a channel / feature width, resolution levels, residual
#: blocks per level, diffusion schedule steps, the image side, and the estimated parameters
MAX_WIDTH = 4096
MAX_LEVELS = 8
MAX_RES_BLOCKS = 8
MAX_NUM_STEPS = 10_000
MAX_IMAGE_SIZE = 1024
MAX_PARAMETERS = 10 ** 9
#: spec keys (at any depth) holding widths, and their bounds by key
_WIDTH_LISTS = ("channels", "features")
_BOUNDS = {"num_res_blocks": (1, MAX_RES_BLOCKS), "num_steps": (1, MAX_NUM_STEPS),
           "image_size": (1, MAX_IMAGE_SIZE), "size": (1, MAX_IMAGE_SIZE)}


def _walk(doc: dict, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path, key, value) of every entry of a nested spec dict."""
    for key, value in doc.items():
        where = f"{path}.{key}" if path else key
        yield where, key, value
        if isinstance(value, dict):
            yield from _walk(value, where)


def _bound(where: str, value: Any, low: int, high: int) -> None:
    """One-line ConfigError when ``value`` is an integer outside [``low``, ``high``]."""
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        raise ConfigError(f"{where}: {value} is outside [{low}, {high}]")


def _parameter_estimate(doc: dict) -> int:
    """A rough parameter count of a UNet-like network: two 3^d convolutions per residual
    block, at every width of every width list, on the way down and up."""
    dims = max([v for _, k, v in _walk(doc) if k == "spatial_dims"] or [2])
    blocks = max([v for _, k, v in _walk(doc) if k == "num_res_blocks"] or [1])
    widths = [c for _, k, v in _walk(doc) if k in _WIDTH_LISTS and isinstance(v, list)
              for c in v if isinstance(c, int)]
    return 2 * 3 ** dims * (2 * blocks + 1) * sum(c * c for c in widths)


def check_bounds(spec: Any, where: str = "model") -> None:
    """One-line ConfigError when ``spec`` (a spec dataclass or its dict) declares a network
    beyond the bounds above: a width (``*channels``, ``features``, ``*_dim``) outside
    [1, :data:`MAX_WIDTH`], more than :data:`MAX_LEVELS` levels, blocks / schedule steps /
    image size outside their ranges, or more than :data:`MAX_PARAMETERS` estimated
    parameters. ``where`` prefixes the dotted key in the message."""
    doc = to_dict(spec)
    if not isinstance(doc, dict):
        return
    for path, key, value in _walk(doc, where):
        if key in _WIDTH_LISTS and isinstance(value, list):
            if len(value) > MAX_LEVELS:
                raise ConfigError(f"{path}: {len(value)} levels, at most {MAX_LEVELS}")
            for k, width in enumerate(value):
                _bound(f"{path}[{k}]", width, 1, MAX_WIDTH)
        elif key.endswith("channels") or key.endswith("_dim") or key == "features":
            _bound(path, value, 1, MAX_WIDTH)
        elif key in _BOUNDS:
            _bound(path, value, *_BOUNDS[key])
    estimate = _parameter_estimate(doc)
    if estimate > MAX_PARAMETERS:
        raise ConfigError(f"{where}: about {estimate / 1e6:,.0f} M parameters, more than the "
                          f"{MAX_PARAMETERS / 1e6:,.0f} M meddiff builds")


def build(kind: str, spec: Any) -> nn.Module:
    """A randomly initialised network of ``kind`` for ``spec``, after :func:`check_bounds`."""
    builder = get_kind(kind).build
    check_bounds(spec)
    return builder(spec)


def build_denoiser(spec: DiffusionSpec, autocast: bool = False) -> Denoiser:
    """A randomly initialised denoiser for ``spec``."""
    return as_denoiser(build("diffusion", spec), spec, autocast)


def as_denoiser(net: nn.Module, spec: DiffusionSpec, autocast: bool = False) -> Denoiser:
    """``net`` (a diffusion UNet of ``spec``) as a :class:`~meddiff.core.model.Denoiser`."""
    return Denoiser(net, NoiseSchedule(spec.schedule, spec.num_steps),
                    parametrization=spec.parametrization, autocast=autocast,
                    clip_x0=(-1.0, 1.0) if spec.clip_x0 else None)


def document(spec: Any, card: dict[str, Any] | None, weights: str, dtype: str) -> dict[str, Any]:
    """The JSON document of a model."""
    return {"format": FORMAT, "kind": kind_of(spec), "spec": to_dict(spec), "card": card or {},
            "weights": weights, "dtype": dtype}


def write_document(path: str | Path, spec: Any, card: dict[str, Any] | None = None,
                   weights: str | None = None, fp16: bool = True) -> Path:
    """Write ``path`` (a model document, e.g. a training run's ``model.json``) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = "float16" if fp16 and get_kind(kind_of(spec)).fp16 else "float32"
    doc = document(spec, card, weights or path.with_suffix(".safetensors").name, dtype)
    text = json.dumps(doc, indent=2) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def save(path: str | Path, net: nn.Module, spec: Any, card: dict[str, Any] | None = None,
         fp16: bool = True) -> Path:
    """Write ``path.safetensors`` (float16 where the kind allows and ``fp16``) and
    ``path.json`` atomically; returns the JSON path. The kind follows from ``spec``'s type."""
    path = Path(path)
    json_path = path.with_suffix(".json")
    half = fp16 and get_kind(kind_of(spec)).fp16
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path.with_suffix(".safetensors"), lambda fh: fh.write(safetensors_bytes(state)))
    return write_document(json_path, spec, card, path.with_suffix(".safetensors").name, half)


def _weights_for(json_path: Path, doc: dict) -> Path:
    if json_path.name == RUN_SPEC:  # a training run: the latest checkpoint's averaged weights
        ckpt = latest_checkpoint(json_path.parent)
        if ckpt is None:
            raise InputError(f"{json_path.parent}: training run has no checkpoint yet")
        average = ckpt / AVERAGE_WEIGHTS  # runs from before it was written: the plain EMA
        return average if average.is_file() else ckpt / "ema.safetensors"
    return json_path.with_name(doc["weights"])


def _name(json_path: Path) -> str:
    return str(json_path.parent) if json_path.name == RUN_SPEC else json_path.stem


def load(name_or_path: str | os.PathLike, kind: str | None = None,
         device: str | torch.device = "cpu") -> Stored:
    """Load a bundled model by name, a saved pair, or a training run (its averaged weights).

    ``kind``: the kind the caller needs (one-line InputError when the model is another kind).
    Unknown names, missing or corrupt files, a spec beyond :func:`check_bounds` or one that
    builds no network, and weights that do not match the spec are one-line
    :class:`InputError` / :class:`ConfigError`, raised before the network is allocated.
    """
    json_path = resolve(name_or_path)
    doc = read_document(json_path)
    if kind is not None and doc["kind"] != kind:
        raise InputError(f"{_name(json_path)} is a {doc['kind']} model, not a {kind}")
    spec = from_dict(get_kind(doc["kind"]).spec, doc.get("spec"), path=str(json_path))
    check_bounds(spec, f"{json_path}: spec")
    try:
        net = build(doc["kind"], spec)
    except (ValueError, ArithmeticError, LookupError, AssertionError) as err:
        raise ConfigError(f"{json_path}: the spec builds no network "
                          f"({' '.join(str(err).split())[:160]})") from None
    weights = _weights_for(json_path, doc)
    try:
        net.load_state_dict(load_file(str(weights), device="cpu"))
    except (OSError, SafetensorError) as err:
        raise InputError(f"{weights}: unreadable weights ({' '.join(str(err).split())[:120]})") from None
    except RuntimeError:
        raise InputError(f"{weights}: weights do not match the architecture in {json_path.name}") from None
    net.to(device).eval().requires_grad_(False)
    return Stored(_name(json_path), doc["kind"], spec, net, doc.get("card", {}), json_path)


def load_diffusion(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                   autocast: bool = False) -> LoadedModel:
    """A diffusion model as a ready :class:`LoadedModel` (see :func:`load`)."""
    stored = load(name_or_path, kind="diffusion", device=device)
    return LoadedModel(stored.name, as_denoiser(stored.net, stored.spec, autocast),
                       stored.spec, stored.card)


__all__ = ["Stored", "LoadedModel", "build", "build_denoiser", "as_denoiser", "document",
           "write_document", "save", "load", "load_diffusion"]
