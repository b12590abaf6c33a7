"""The supervised segmentation baseline of G2: MONAI ``BasicUNet`` (Falk et al. 2019 /
Ronneberger et al. 2015; :func:`meddiff.nets.basic_unet.build_seg_unet`) trained on the same
data with Dice + binary cross-entropy, sigmoid output. Same interface as the ensembles
(:mod:`meddiff.methods.segmentation.ensembles`): images in model space, masks as
probabilities; one "sample", variance 0."""
from __future__ import annotations

import time

import torch
from torch import nn

from meddiff.methods.registry import register
from meddiff.methods.segmentation.ensembles import Segmentation


@register("unet", family="segmentation", baseline=True, default_model="seg-unet-64",
          summary="supervised UNet (Dice + BCE), sigmoid probabilities")
@torch.no_grad()
def unet(net: nn.Module, x: torch.Tensor) -> Segmentation:
    """Lesion probabilities (B, 1, H, W) in [0, 1] (sigmoid of the logits) of ``x`` (B, 1, H,
    W) in model space, as a one-sample :class:`Segmentation`."""
    start = time.perf_counter()
    dev = next(net.parameters()).device
    prob = torch.sigmoid(net(x.to(dev)).float()).cpu()
    return Segmentation(prob, torch.zeros_like(prob), prob[:, None], 0,
                        time.perf_counter() - start)
