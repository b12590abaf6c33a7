"""The model catalogue: where models live on disk and what they are, read from their JSON
documents and safetensors headers only (no torch import, so ``meddiff models`` answers fast).

A model ``NAME`` is ``NAME.json`` (format, kind, spec, card, weights file, stored dtype) beside
``NAME.safetensors``; bundled models live flat in ``meddiff/zoo/weights`` with a markdown model
card ``meddiff/zoo/cards/NAME.md``. A training run's ``out_dir`` holds ``model.json`` of the same
format and its checkpoints (:mod:`meddiff.zoo.runs`).
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from meddiff.errors import InputError
from meddiff.zoo.runs import RUN_SPEC

FORMAT = "meddiff-model/2"
WEIGHTS_DIR = Path(__file__).parent / "weights"
CARDS_DIR = Path(__file__).parent / "cards"

#: one line per kind for listings
KIND_SUMMARIES = {
    "diffusion": "diffusion model",
    "classifier": "noise-aware classifier",
    "autoencoder": "KL autoencoder",
    "recon-unet": "supervised reconstruction UNet",
    "seg-unet": "supervised segmentation UNet",
    "feature-encoder": "FD-MedEnc feature encoder",
    "discriminator": "adversarial discriminator",
}


def read_document(json_path: Path) -> dict[str, Any]:
    """The JSON document of a model; one-line InputError when unreadable or not ours."""
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{json_path}: unreadable model document ({err.__class__.__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{json_path}: not a meddiff model (expected format {FORMAT!r})")
    return doc


def bundled(kind: str | None = None) -> list[str]:
    """Names of the bundled models (of ``kind``), sorted."""
    names = []
    for path in sorted(WEIGHTS_DIR.glob("*.json")):
        if not path.with_suffix(".safetensors").exists():
            continue
        if kind is None or read_document(path)["kind"] == kind:
            names.append(path.stem)
    return names


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The JSON document of a bundled name, of a ``NAME.json`` / ``NAME.safetensors`` path, or
    of a training run directory (its ``model.json``)."""
    text = str(name_or_path)
    if os.sep not in text and (WEIGHTS_DIR / f"{text}.json").exists():
        return WEIGHTS_DIR / f"{text}.json"
    path = Path(text)
    if path.is_dir() and (path / RUN_SPEC).exists():
        return path / RUN_SPEC
    if path.suffix in (".json", ".safetensors") and path.with_suffix(".json").exists():
        return path.with_suffix(".json")
    if path.exists():
        raise InputError(f"{path}: not a meddiff model (expected NAME.json + NAME.safetensors "
                         f"or a training out_dir with {RUN_SPEC})")
    raise InputError(f"unknown model {text!r}; bundled models: {', '.join(bundled()) or 'none'}")


def parameter_count(weights: Path) -> int:
    """Number of tensor elements in a safetensors file, from its header alone."""
    with open(weights, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def describe(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The document of a model (format, kind, spec, card, weights, dtype) plus its ``name``."""
    json_path = resolve(name_or_path)
    return {"name": json_path.stem, **read_document(json_path)}


def _image_size(kind: str, spec: dict[str, Any]) -> Any:
    size = spec.get("image_size", spec.get("size", spec.get("net", {}).get("image_size", "")))
    if spec.get("autoencoder"):  # a latent model: its latents' size
        return f"{size} (latent)"
    return size


def catalogue() -> list[dict[str, Any]]:
    """One row per bundled model: name, kind, summary, image_size, parameters, steps, card."""
    rows = []
    for name in bundled():
        doc = describe(name)
        card, spec = doc.get("card", {}), doc.get("spec", {})
        weights = WEIGHTS_DIR / doc["weights"]
        md = CARDS_DIR / f"{name}.md"
        rows.append({
            "name": name, "kind": doc["kind"],
            "summary": card.get("summary", KIND_SUMMARIES.get(doc["kind"], doc["kind"])),
            "image_size": _image_size(doc["kind"], spec),
            "parameters": f"{parameter_count(weights) / 1e6:.2f} M",
            "steps": card.get("training", {}).get("steps", ""),
            "dtype": doc.get("dtype", "float32"),
            "card": f"zoo/cards/{md.name}" if md.exists() else ""})
    return rows
