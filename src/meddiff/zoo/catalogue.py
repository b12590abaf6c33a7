"""The model catalogue: where models live on disk and what they are, read from their JSON
documents and safetensors headers only (no torch import, so ``meddiff models`` answers fast).

A model ``NAME`` is ``NAME.json`` (format, kind, spec, card, weights file, stored dtype) beside
``NAME.safetensors``; bundled models live flat in ``meddiff/zoo/weights`` with a markdown model
card ``meddiff/zoo/cards/NAME.md``. A training run's ``out_dir`` holds ``model.json`` of the same
format and its checkpoints (:mod:`meddiff.zoo.runs`).

:func:`contract` is what a model expects of its input (image size, channels, pixel size,
orientation, value range): the *Input contract* section of its markdown card (the source of
truth where there is one), else :func:`meddiff.zoo.contract.input_contract` of its spec and card
(the derivation that writes the cards).
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from meddiff.errors import InputError
from meddiff.zoo.contract import input_contract
from meddiff.zoo.runs import RUN_SPEC

FORMAT = "meddiff-model/2"
WEIGHTS_DIR = Path(__file__).parent / "weights"
CARDS_DIR = Path(__file__).parent / "cards"

#: the entries of a model document, their types, and whether one must be there
_DOCUMENT = {"format": (str, True), "kind": (str, True), "spec": (dict, True),
             "weights": (str, True), "card": (dict, False), "dtype": (str, False)}
#: the section of a markdown card that states the input contract
CONTRACT_SECTION = "## Input contract"

#: one line per kind for listings
KIND_SUMMARIES = {
    "diffusion": "diffusion model",
    "classifier": "noise-aware classifier",
    "autoencoder": "KL autoencoder",
    "recon-unet": "supervised reconstruction UNet",
    "regression-unet": "supervised image-to-image UNet",
    "seg-unet": "supervised segmentation UNet",
    "feature-encoder": "FD-MedEnc feature encoder",
    "discriminator": "adversarial discriminator",
}


def read_document(json_path: Path) -> dict[str, Any]:
    """The JSON document of a model; one-line InputError when unreadable (truncated, not
    JSON), not ours (another format) or malformed (an entry of :data:`_DOCUMENT` missing or
    of the wrong type)."""
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{json_path}: unreadable model document ({err.__class__.__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{json_path}: not a meddiff model (expected format {FORMAT!r})")
    for key, (kind, required) in _DOCUMENT.items():
        if (key in doc or required) and not isinstance(doc.get(key), kind):
            what = "missing" if key not in doc else f"of type {type(doc[key]).__name__}"
            raise InputError(f"{json_path}: malformed model document ('{key}' is {what}, "
                             f"expected {kind.__name__})")
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


def _card_contract(md: Path) -> list[tuple[str, str]]:
    """The ``(what, text)`` bullets of a markdown card's *Input contract* section; [] when the
    card or the section is missing."""
    if not md.is_file():
        return []
    rows, inside = [], False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            inside = line.strip() == CONTRACT_SECTION
        elif inside and line.startswith("- **") and "**: " in line:
            what, text = line[len("- **"):].split("**: ", 1)
            rows.append((what, text))
    return rows


def contract(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """What a model (bundled name, ``NAME.json`` or run dir) expects of its input: ``name``,
    ``kind``, ``summary``, ``contract`` ({what: text} for image size, channels, pixel size,
    orientation, value range: the *Input contract* section of its markdown card, else
    :func:`~meddiff.zoo.contract.input_contract` of its spec and card) and ``card`` (the
    markdown card's path, or ""). Reads JSON and markdown only."""
    json_path = resolve(name_or_path)
    doc = read_document(json_path)
    bundled_card = CARDS_DIR / f"{json_path.stem}.md"
    md = bundled_card if json_path.parent == WEIGHTS_DIR else json_path.with_suffix(".md")
    card = doc.get("card", {})
    return {"name": str(json_path.parent) if json_path.name == RUN_SPEC else json_path.stem,
            "kind": doc["kind"],
            "summary": card.get("summary") or KIND_SUMMARIES.get(doc["kind"], doc["kind"]),
            "contract": dict(_card_contract(md) or input_contract(doc["spec"], card)),
            "card": str(md) if md.is_file() else ""}
