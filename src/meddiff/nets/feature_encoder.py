"""The FD-MedEnc feature encoder: a small CNN meddiff trains on its own brain slices
(:mod:`meddiff.eval.frechet` computes Frechet distances of its features)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from meddiff.data.intensity import to_model


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]


class FeatureEncoder(nn.Module):
    """Small CNN mapping image-space slices to realism/anatomy features.

    Input (B, 1, H, W) float in image space [0, 1] (any H, W: resized to 64 x 64 with
    antialiased bilinear interpolation, then mapped to model space [-1, 1]); output (B, 128).
    Seven 3x3 convolutions, four of stride 2 (64 -> 4), with GroupNorm, so a feature never
    depends on the other images in the batch; the 128 x 4 x 4 map is flattened (keeping the
    layout, i.e. anatomy) and linearly projected. ``seed`` makes the random initialisation reproducible without
    touching the global RNG.
    """

    SIZE = 64
    FEATURES = 128

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = nn.Sequential(
                *_conv(1, 32, 2), *_conv(32, 32),       # 32 x 32
                *_conv(32, 64, 2), *_conv(64, 64),      # 16 x 16
                *_conv(64, 128, 2), *_conv(128, 128),   # 8 x 8
                *_conv(128, 128, 2),                    # 4 x 4
            )
            self.proj = nn.Linear(128 * 4 * 4, self.FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.SIZE, self.SIZE):
            x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bilinear",
                              align_corners=False, antialias=True)
        return self.proj(self.body(to_model(x)).flatten(1))
