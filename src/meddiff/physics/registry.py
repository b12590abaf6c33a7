"""Named, ready-made forward operators for tests, benchmarks and the CLI.

``OPERATORS[name](img_size=64, seed=0)`` returns a representative noisy operator for a square
``img_size`` image; the contract tests (adjointness, shapes, dtypes) run over every entry. The
input of each is (B, 1, img_size, img_size), complex when ``op.complex_domain`` is True.
"""
from __future__ import annotations

from collections.abc import Callable

from meddiff.physics.base import LinearOperator
from meddiff.physics.coils import birdcage_maps, smooth_random_phase
from meddiff.physics.ct import LimitedAngleCT, SparseViewCT
from meddiff.physics.inpainting import Denoising, Inpainting, random_pixel_mask
from meddiff.physics.masks import (equispaced_mask_1d, poisson_disc_mask_2d, random_mask_1d,
                                   random_mask_2d)
from meddiff.physics.mri import MultiCoilMRI, PhaseModulated, SingleCoilMRI
from meddiff.physics.noise import GaussianNoise, TransmissionPoisson

_KSPACE_SIGMA = 0.01  # complex k-space noise for images scaled to [0, 1]


def _mri_equispaced(img_size: int = 64, seed: int = 0) -> LinearOperator:
    mask = equispaced_mask_1d((img_size, img_size), 4.0, seed=seed)
    return SingleCoilMRI(mask, GaussianNoise(_KSPACE_SIGMA))


def _mri_random(img_size: int = 64, seed: int = 0) -> LinearOperator:
    mask = random_mask_1d((img_size, img_size), 4.0, seed=seed)
    return SingleCoilMRI(mask, GaussianNoise(_KSPACE_SIGMA))


def _mri_poisson(img_size: int = 64, seed: int = 0) -> LinearOperator:
    mask = poisson_disc_mask_2d((img_size, img_size), 6.0, seed=seed)
    return SingleCoilMRI(mask, GaussianNoise(_KSPACE_SIGMA))


def _mri_multicoil(img_size: int = 64, seed: int = 0) -> LinearOperator:
    mask = random_mask_2d((img_size, img_size), 6.0, seed=seed)
    return MultiCoilMRI(mask, birdcage_maps((img_size, img_size), 8), GaussianNoise(_KSPACE_SIGMA))


def _ct_sparse(img_size: int = 64, seed: int = 0) -> LinearOperator:
    return SparseViewCT(30, img_size, noise=GaussianNoise(0.05))


def _ct_limited(img_size: int = 64, seed: int = 0) -> LinearOperator:
    return LimitedAngleCT(90, img_size, angular_range_deg=120.0, noise=GaussianNoise(0.05))


def _ct_low_dose(img_size: int = 64, seed: int = 0) -> LinearOperator:
    return SparseViewCT(180, img_size, noise=TransmissionPoisson(1e4))


def _inpainting(img_size: int = 64, seed: int = 0) -> LinearOperator:
    mask = random_pixel_mask((img_size, img_size), 0.3, seed=seed)
    return Inpainting(mask, GaussianNoise(0.01))


def _mri_phase(img_size: int = 64, seed: int = 0) -> LinearOperator:
    """Multi-coil MRI seen through a smooth phase map (magnitude prior, complex data)."""
    phase = smooth_random_phase((1, 1, img_size, img_size), seed)
    return PhaseModulated(_mri_multicoil(img_size, seed), phase)


def _denoising(img_size: int = 64, seed: int = 0) -> LinearOperator:
    return Denoising(0.1)


OPERATORS: dict[str, Callable[..., LinearOperator]] = {
    "mri_singlecoil_equispaced_4x": _mri_equispaced,
    "mri_singlecoil_random_4x": _mri_random,
    "mri_singlecoil_poisson2d_6x": _mri_poisson,
    "mri_multicoil8_random2d_6x": _mri_multicoil,
    "mri_multicoil8_phase_modulated": _mri_phase,
    "ct_sparse_view_30": _ct_sparse,
    "ct_limited_angle_120deg": _ct_limited,
    "ct_low_dose_i0_1e4": _ct_low_dose,
    "inpainting_random_30pct": _inpainting,
    "denoising_sigma_0.1": _denoising,
}
