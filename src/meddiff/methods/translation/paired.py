"""T1: paired image translation with a conditional diffusion model, and its UNet baseline.

Lyu & Wang 2022, "Conversion between CT and MRI images using diffusion and score-matching
models", arXiv 2209.12104: a conditional DDPM and a conditional score-based SDE model, each
given the source image as an input channel, translate MR <-> CT better than a UNet regression
(MAE / PSNR / SSIM). Here one conditional network serves both: ``cddpm`` samples it with the
DDPM family (DDIM / ancestral / DPM-Solver++), ``csde`` with the predictor-corrector sampler
of the VP SDE (Song et al. 2021, Algorithm 3), which is the paper's score-SDE sampling; the
paper trains the two separately. The sampling is the core's
(:func:`~meddiff.methods.conditional.sample_given`).
"""
from __future__ import annotations

import torch
from torch import nn

from meddiff.methods.conditional import sample_given
from meddiff.methods.registry import register

#: the bundled models per target domain (the source is T1w)
TARGETS = ("t2w", "flair", "ct")
DIFFUSION_MODEL = "t1w-{target}-cddpm-native"
UNET_MODEL = "t1w-{target}-unet-native"


@register("cddpm", family="translation", system="T1", default_model="t1w-t2w-cddpm-native",
          options=("sampler", "steps"),
          summary="T1 conditional DDPM given the source image (DPM-Solver++ / DDIM / DDPM)")
def cddpm(model, source01: torch.Tensor, generator: torch.Generator | None = None,
          sampler: str = "dpmpp_2m", steps: int = 20) -> torch.Tensor:
    """One sample of the target image given ``source01`` (B, 1, H, W) in [0, 1]."""
    return sample_given(model, source01, sampler, steps, generator)


@register("csde", family="translation", system="T1", default_model="t1w-t2w-cddpm-native",
          options=("steps",),
          summary="T1 conditional score SDE: predictor-corrector sampling of the same model")
def csde(model, source01: torch.Tensor, generator: torch.Generator | None = None,
         steps: int = 100) -> torch.Tensor:
    """One predictor-corrector (VP SDE) sample of the target image given ``source01``."""
    return sample_given(model, source01, "pc_vp", steps, generator)


@register("unet", family="translation", baseline=True, default_model="t1w-t2w-unet-native",
          summary="supervised residual UNet regression on the source image")
@torch.no_grad()
def unet(net: nn.Module, source01: torch.Tensor,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """The regression UNet (``regression-unet`` kind) on ``source01`` -> [0, 1], CPU."""
    dev = next(net.parameters()).device
    return net(source01.float().to(dev)).float().clamp(0, 1).cpu()
