"""The supervised segmentation UNet, the G2 baseline of the conditional mask DDPM.

MONAI ``BasicUNet`` (Falk et al. 2019 / Ronneberger et al. 2015) mapping the image in model
space to mask logits, trained with Dice + binary cross-entropy (MONAI ``DiceCELoss``), the usual
supervised segmentation loss (Isensee et al. 2021, nnU-Net). Data: ``brain_slices`` with the
``segmentation`` lesion preset; the target is the batch item ``lesion``.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

import numpy as np
import torch
from torch import nn

from meddiff.data.intensity import to_model
from meddiff.data.lesion_bench import lesion_bench
from meddiff.errors import ConfigError
from meddiff.eval.metrics import dice
from meddiff.nets.unet import count_parameters
from meddiff.train.objectives.base import Objective

VAL_ITEMS = 48


def dice_bce_loss() -> nn.Module:
    """Dice + binary cross-entropy on logits (MONAI ``DiceCELoss(sigmoid=True)``)."""
    from monai.losses import DiceCELoss

    return DiceCELoss(sigmoid=True)


@torch.no_grad()
def mask_dice(prob: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """Per-image Dice of ``prob >= 0.5`` against ``gt`` (B, 1, H, W): mean, std, count."""
    per = [dice(p[0].numpy() >= 0.5, g[0].numpy() > 0.5) for p, g in zip(prob, gt)]
    return {"val_dice_mean": round(float(np.mean(per)), 4),
            "val_dice_std": round(float(np.std(per)), 4), "val_slices": len(per)}


class SegUNet(Objective):
    """Supervised lesion segmentation (see the module docstring)."""

    name = "seg-unet"
    kind = "seg-unet"

    def check(self) -> None:
        if self.data.dataset != "brain_slices" or self.data.lesions is None:
            raise ConfigError("seg-unet trains on data.dataset brain_slices with a lesions preset")

    @cached_property
    def criterion(self) -> nn.Module:
        return dice_bce_loss()

    def loss(self, nets: Mapping[str, nn.Module], batch: dict, generator: torch.Generator,
             step: int) -> torch.Tensor:
        logits = nets["model"](to_model(batch["image"].float())).float()
        return self.criterion(logits, batch["lesion"].float())

    @torch.no_grad()
    def validate(self, nets: Mapping[str, nn.Module], spec) -> dict:
        """Dice of ``sigmoid(logits) >= 0.5`` on the first 48 items of the lesion benchmark's
        validation split (held-out slab, benchmark lesions)."""
        bench = lesion_bench("val", contrasts=self.data.contrasts, size=self.image_size)
        x, gt = bench.images[:VAL_ITEMS], bench.lesions[:VAL_ITEMS].float()
        return mask_dice(torch.sigmoid(nets["model"](to_model(x)).float()), gt)

    def network_text(self, spec, net: nn.Module) -> str:
        return (f"MONAI BasicUNet, features {list(spec.features)}, image in model space [-1, 1] "
                f"-> mask logits, {count_parameters(net) / 1e6:.2f} M parameters")

    def loss_text(self) -> str:
        return "Dice + binary cross-entropy on the logits (MONAI DiceCELoss(sigmoid=True))"
