"""P1: low-count PET denoising with a conditional DDPM, optionally guided by an MR image.

Gong, Johnson, El Fakhri, Li & Guo 2022, "PET image denoising based on 3D denoising diffusion
probabilistic model", arXiv 2209.06167: the reference-count PET image is sampled from a DDPM
conditioned on the low-count PET image, and in their "PET+MR" variant also on the co-registered
MR image, both concatenated to the state as input channels (their sec. II.B). Here 2D; the MR
variant is its own model (trained with the MR channel, :data:`MR_MODEL`), as in the paper.
Deviation: the estimate is the mean of :data:`SAMPLES` samples, not one sample. The paper's
optional data-consistency term on the low-count data is not implemented.
"""
from __future__ import annotations

import torch

from meddiff.methods.conditional import sample_given
from meddiff.methods.denoising.interface import Noisy
from meddiff.methods.registry import register

#: the bundled PET + MR model, the default when an MR image is given
MR_MODEL = "pet-mr-cddpm-64"
#: posterior samples averaged: the paper draws one; at counts this low one sample carries the
#: posterior's spread, and the mean of four is 1.3-1.6 dB closer to the reference on the test
#: slices of bench/denoising.py (PET 29.07 vs 27.75 dB, PET + MR 30.41 vs 28.79)
SAMPLES = 4


def condition_channels(noisy: Noisy) -> torch.Tensor:
    """The condition (B, 1 or 2, H, W) in [0, 1]: the low-count PET, then the MR if given."""
    return noisy.images if noisy.mr is None else torch.cat([noisy.images, noisy.mr], 1)


@register("pet", family="denoising", system="P1", default_model="pet-cddpm-64",
          options=("sampler", "steps", "samples"),
          summary="P1 low-count PET: conditional DDPM given the PET (and the MR with --mr), "
                  "samples averaged")
def pet(model, noisy: Noisy, sampler: str = "ddim", steps: int = 20,
        samples: int = SAMPLES) -> torch.Tensor:
    """Reference-count estimate of low-count PET ``noisy.images`` (B, 1, H, W) in [0, 1]
    (activity / the uptake scale of the training data) given ``noisy.mr`` when the model takes
    it -> same shape and range: the mean of ``samples`` samples of the conditional model."""
    return sample_given(model, condition_channels(noisy), sampler, steps, noisy.generator,
                        samples)
