"""The supervised image-to-image UNet: the regression baseline of denoising and translation.

A residual MONAI ``BasicUNet`` ``x = d + f(d, g)`` from the degraded image ``d`` (and optional
guidance channels ``g``, e.g. the MR image of a PET slice) to the target image, trained with L1
on paired items, in image space [0, 1]: the supervised comparison a reviewer expects next to a
conditional DDPM (the UNet of Gong et al. 2022, arXiv 2209.06167, for PET; the regression
baseline of Lyu & Wang 2022, arXiv 2209.12104, for translation). ``options.source``: the batch
item(s) stacked as the input, the image to map first; ``options.target``: the item to predict.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from meddiff.errors import ConfigError
from meddiff.eval.metrics import psnr_batch
from meddiff.nets.unet import count_parameters
from meddiff.train.data import make_dataset
from meddiff.train.objectives.base import L1PairObjective, Pair


@dataclass(frozen=True)
class RegressionOptions:
    """``source``: the input item, or a list of items stacked as channels (the image to map
    first); ``target``: the item to predict; ``val_items``: held-out items of the validation
    PSNR."""

    source: str | tuple[str, ...] = "lowdose"
    target: str = "image"
    val_items: int = 48

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else self.source


class RegressionUNet(L1PairObjective):
    """Supervised residual image-to-image regression (see the module docstring)."""

    name = "regression"
    kind = "regression-unet"
    Options = RegressionOptions

    def check(self) -> None:
        n = len(self.options.sources)
        if n != self.spec.in_channels:
            raise ConfigError(f"objective.options.source names {n} item(s); "
                              f"model.in_channels is {self.spec.in_channels}")
        if self.data.spatial_dims != 2:
            raise ConfigError("the regression UNet is 2D")

    def inputs(self, batch: dict) -> torch.Tensor:
        """The network input (B, in_channels, H, W) in [0, 1]."""
        return torch.cat([batch[k].float() for k in self.options.sources], 1)

    def pair(self, net: nn.Module, batch: dict, generator: torch.Generator) -> Pair:
        d = self.inputs(batch)
        return Pair(d, net(d).float(), batch[self.options.target].float())

    def pair_channels(self) -> int:
        return self.spec.in_channels + self.spec.out_channels

    @torch.no_grad()
    def validate(self, nets: Mapping[str, nn.Module], spec) -> dict:
        """PSNR (output clipped to [0, 1], data range 1) of the input and of the output against
        the target on the first ``val_items`` held-out items."""
        ds = make_dataset(self.data, self.image_size, split="val")
        items = [ds[i] for i in range(min(self.options.val_items, len(ds)))]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items])
                 for k in (*self.options.sources, self.options.target)}
        d, target = self.inputs(batch), batch[self.options.target].float()
        out = nets["model"](d).float().clamp(0, 1)
        return {"val_psnr_input": round(float(psnr_batch(d[:, :1], target, 1.0).mean()), 3),
                "val_psnr": round(float(psnr_batch(out, target, 1.0).mean()), 3)}

    def network_text(self, spec, net: nn.Module) -> str:
        return (f"residual MONAI BasicUNet d + f(d), features {list(spec.features)}, "
                f"{spec.in_channels} -> {spec.out_channels} channel(s) "
                f"({' + '.join(self.options.sources)} -> {self.options.target}), "
                f"{count_parameters(net) / 1e6:.2f} M parameters")

    def loss_text(self) -> str:
        return (f"L1 between d + f(d) and `{self.options.target}`, d = "
                f"`{' + '.join(self.options.sources)}` (image space)")
