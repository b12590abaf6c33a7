"""A tiny randomly initialised diffusion model saved in the model store, for API / CLI tests."""
from __future__ import annotations

from pathlib import Path

import torch

from meddiff.nets.unet import preset
from meddiff.zoo.kinds import DiffusionSpec
from meddiff.zoo.store import build_denoiser, save

TINY = DiffusionSpec(net=preset("tiny"), image_size=16)


def save_tiny(directory: Path, name: str = "tiny", seed: int = 0, fp16: bool = False) -> Path:
    """Write ``directory/name.{json,safetensors}`` (float32 unless ``fp16``); returns the JSON
    path."""
    torch.manual_seed(seed)
    den = build_denoiser(TINY)
    return save(directory / name, den.net, TINY, card={"parameters": "tiny"}, fp16=fp16)
