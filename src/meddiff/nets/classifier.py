"""Noise-aware (timestep-conditioned) image classifier for classifier guidance.

Wolleb et al. 2022 (arXiv 2203.04306, sec. 2) / Dhariwal & Nichol 2021 (arXiv 2105.05233,
sec. 4): the encoder half of the diffusion UNet with the timestep embedding. Here: the timestep
embedding and down blocks of MONAI's ``DiffusionModelEncoder`` with a global mean + max pooling
head (MONAI's flatten-and-MLP head ties every position to its own weights and stayed at chance
on small lesions).

Contract: ``x_t`` (B, C, S, S) in model space (data in [-1, 1] plus noise), ``t`` (B,) or a
scalar in ``[0, T-1]`` -> logits (B, num_classes) float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets.diffusion_model_unet import DiffusionModelEncoder, get_timestep_embedding
from torch import nn

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of the noise-aware classifier (MONAI ``DiffusionModelEncoder`` blocks).

    Every level halves the image (also the last one), so ``image_size`` must be divisible by
    ``2 ** len(channels)``; the head pools the last ``channels[-1]`` feature maps globally.
    """

    image_size: int = 64
    in_channels: int = 1
    num_classes: int = 2
    channels: tuple[int, ...] = (32, 64, 128, 128)
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    num_head_channels: int = 32

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.attention_levels):
            raise ConfigError("attention_levels must have one entry per level of channels")
        if self.image_size % 2 ** len(self.channels):
            raise ConfigError(f"image_size {self.image_size} is not divisible by "
                              f"2^{len(self.channels)}")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ConfigError(f"norm_num_groups {self.norm_num_groups} does not divide {self.channels}")


class NoisyClassifier(nn.Module):
    """``(x_t, t) -> logits``: x_t (B, C, S, S) model space, t (B,) or scalar -> (B, classes)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        encoder = DiffusionModelEncoder(
            spatial_dims=2, in_channels=config.in_channels, out_channels=config.num_classes,
            input_shape=(config.image_size, config.image_size), channels=config.channels,
            attention_levels=config.attention_levels, num_res_blocks=config.num_res_blocks,
            norm_num_groups=config.norm_num_groups, num_head_channels=config.num_head_channels)
        self.time_embed, self.conv_in = encoder.time_embed, encoder.conv_in
        self.down_blocks = encoder.down_blocks
        width = config.channels[-1]
        self.norm = nn.Sequential(nn.GroupNorm(config.norm_num_groups, width), nn.SiLU())
        self.head = nn.Linear(2 * width, config.num_classes)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).float()
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        emb = self.time_embed(get_timestep_embedding(t, self.config.channels[0]).to(x_t.dtype))
        h = self.conv_in(x_t)
        for block in self.down_blocks:
            h, _ = block(hidden_states=h, temb=emb, context=None)
        h = self.norm(h)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)).float()
