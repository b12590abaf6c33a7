"""Forward operators ``y = noise(A x)`` for MRI, CT and pixel-domain problems.

The physics layer knows no diffusion: it never imports :mod:`meddiff.core` or methods. Every
operator follows :class:`~meddiff.physics.base.LinearOperator` (deepinv's names ``A``,
``A_adjoint``, ``A_dagger``, ``forward``) and passes the contract tests over
:data:`~meddiff.physics.registry.OPERATORS`.
"""
from __future__ import annotations

from meddiff.physics.base import LinearOperator, conjugate_gradient
from meddiff.physics.coils import (birdcage_maps, estimate_sensitivity_maps, rss,
                                   smooth_random_phase)
from meddiff.physics.ct import (LimitedAngleCT, ParallelBeamCT, SparseViewCT, attenuation_to_hu,
                                hu_to_attenuation)
from meddiff.physics.espirit import espirit_maps
from meddiff.physics.inpainting import Denoising, Inpainting, random_pixel_mask
from meddiff.physics.masks import (achieved_acceleration, calibration_region, equispaced_mask_1d,
                                   poisson_disc_mask_2d, random_mask_1d, random_mask_2d)
from meddiff.physics.mri import (MultiCoilMRI, PhaseModulated, SingleCoilMRI, channels_to_complex,
                                 complex_to_channels, estimate_phase, fft2c, ifft2c)
from meddiff.physics.noise import GaussianNoise, PoissonNoise, Scaled, TransmissionPoisson
from meddiff.physics.registry import OPERATORS

__all__ = [
    "LinearOperator", "conjugate_gradient", "GaussianNoise", "PoissonNoise",
    "TransmissionPoisson", "Scaled", "SingleCoilMRI", "MultiCoilMRI", "PhaseModulated", "estimate_phase",
    "fft2c", "ifft2c",
    "complex_to_channels", "channels_to_complex", "equispaced_mask_1d", "random_mask_1d",
    "random_mask_2d", "poisson_disc_mask_2d", "achieved_acceleration", "calibration_region",
    "birdcage_maps", "estimate_sensitivity_maps", "espirit_maps", "rss", "smooth_random_phase",
    "ParallelBeamCT",
    "SparseViewCT", "LimitedAngleCT", "hu_to_attenuation", "attenuation_to_hu", "Inpainting",
    "Denoising", "random_pixel_mask", "OPERATORS",
]
