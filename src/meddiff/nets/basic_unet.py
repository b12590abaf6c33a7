"""Supervised image-to-image networks on MONAI's ``BasicUNet`` (Falk et al. 2019 /
Ronneberger et al. 2015): the residual reconstruction UNet and the segmentation UNet. Inputs
(B, C, H, W) with H and W divisible by 16."""
from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet
from torch import nn

FEATURES = (16, 32, 64, 128, 128, 16)


class ResidualUNet(nn.Module):
    """``d -> d[:, :out] + BasicUNet(d)`` on (B, C, H, W) -> (B, out, H, W), H and W divisible
    by 16: C = ``channels`` (MRI real / imaginary 2, CT 1, or an image plus extra guidance
    channels such as PET + MR), ``out`` = ``out_channels`` (default C), the residual taken on
    the first ``out`` input channels."""

    def __init__(self, channels: int, features: tuple[int, ...] = FEATURES,
                 out_channels: int | None = None):
        super().__init__()
        self.out_channels = channels if out_channels is None else out_channels
        self.net = BasicUNet(spatial_dims=2, in_channels=channels,
                             out_channels=self.out_channels, features=features)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return d[:, :self.out_channels] + self.net(d)


def build_seg_unet(features: tuple[int, ...] = FEATURES) -> BasicUNet:
    """MONAI ``BasicUNet``: image (B, 1, H, W) -> mask logits (B, 1, H, W), H, W divisible by 16."""
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=features)
