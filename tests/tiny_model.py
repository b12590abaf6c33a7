"""A tiny randomly initialised diffusion model saved as a meddiff pair, for API / CLI tests."""
from __future__ import annotations

from pathlib import Path

import torch

from meddiff.nets.unet import preset
from meddiff.zoo.store import DiffusionSpec, build_denoiser, save_model

TINY = DiffusionSpec(net=preset("tiny"), image_size=16)


def save_tiny(directory: Path, name: str = "tiny", seed: int = 0) -> Path:
    """Write ``directory/name.{json,safetensors}``; returns the JSON path."""
    torch.manual_seed(seed)
    den = build_denoiser(TINY)
    return save_model(directory / name, den.net, TINY, card={"parameters": "tiny"})
