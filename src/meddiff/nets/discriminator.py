"""PatchGAN discriminator (Isola, Zhu, Zhou & Efros 2017, "Image-to-Image Translation with
Conditional Adversarial Networks", CVPR, arXiv:1611.07004, sec. 3.2.2 and app. 6.1.2).

A fully convolutional classifier of overlapping image patches: 4 x 4 convolutions of stride 2
(``C64-C128-C256`` in the paper's notation), LeakyReLU(0.2), instance normalisation after every
convolution but the first (pix2pix uses batch norm; instance norm keeps each image's score
independent of the rest of the batch), then a stride-1 4 x 4 convolution to one logit per patch.
With ``channels = (64, 128, 256)`` each output logit sees a 46 x 46 px receptive field; the
paper's 70 x 70 PatchGAN adds a stride-1 ``C512`` layer (``last_stride1 = True``).

Contract: input (B, in_channels, H, W) in model space (conditional discriminators get the
condition concatenated to the image), H and W divisible by ``2 ** len(channels)``; output
logits (B, 1, H', W'), ``> 0`` meaning "real".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class DiscriminatorSpec:
    """Architecture of the PatchGAN discriminator.

    Attributes:
        in_channels: image channels (+ condition channels for a conditional discriminator).
        channels: widths of the stride-2 layers.
        last_stride1: add a stride-1 layer of width ``2 * channels[-1]`` (the 70 x 70 variant).
        image_size: the image size it was trained at.
    """

    in_channels: int = 1
    channels: tuple[int, ...] = (64, 128, 256)
    last_stride1: bool = False
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.in_channels < 1 or not self.channels or min(self.channels) < 1:
            raise ConfigError("discriminator: in_channels and every width must be >= 1")
        if self.image_size % 2 ** len(self.channels):
            raise ConfigError(f"discriminator: image_size {self.image_size} is not divisible by "
                              f"2^{len(self.channels)}")


def _block(cin: int, cout: int, stride: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=stride, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    layers.append(nn.LeakyReLU(0.2))
    return layers


class PatchDiscriminator(nn.Module):
    """``x (B, C, H, W) -> patch logits (B, 1, H', W')`` (see the module docstring)."""

    def __init__(self, spec: DiscriminatorSpec = DiscriminatorSpec()):
        super().__init__()
        self.spec = spec
        layers, cin = [], spec.in_channels
        for i, width in enumerate(spec.channels):
            layers += _block(cin, width, 2, norm=i > 0)
            cin = width
        if spec.last_stride1:
            layers += _block(cin, 2 * cin, 1, norm=True)
            cin = 2 * cin
        layers.append(nn.Conv2d(cin, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float()
