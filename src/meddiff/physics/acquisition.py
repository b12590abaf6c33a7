"""Simulated acquisitions of image-space images: undersampled Cartesian MRI k-space and
sparse-view / low-dose parallel-beam CT sinograms, reproducible from a seed.

Measurement convention: the operator acts on images in *image space* and ``y`` is the
measurement of the image-space image -- for MRI the k-space of the [0, 1] image (cast to
complex, or a complex image of magnitude <= 1), for CT the sinogram of the [0, 1] image
(attenuation ``ct_scale(H)`` per unit of image value only inside the dose model).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from meddiff.errors import InputError
from meddiff.physics.base import LinearOperator
from meddiff.physics.coils import birdcage_maps
from meddiff.physics.ct import MU_WATER_PER_MM, ParallelBeamCT, SparseViewCT
from meddiff.physics.masks import equispaced_mask_1d, poisson_disc_mask_2d, random_mask_1d
from meddiff.physics.mri import MultiCoilMRI, SingleCoilMRI
from meddiff.physics.noise import GaussianNoise, Scaled, TransmissionPoisson

MASKS: dict[str, Callable[..., torch.Tensor]] = {
    "random": random_mask_1d, "equispaced": equispaced_mask_1d, "poisson": poisson_disc_mask_2d}
DEFAULT_ACCELERATION = 4.0
FULL_VIEWS = 180          # "full" CT sampling when only the dose is reduced
FULL_DOSE_I0 = 1e5        # blank-scan counts per detector bin at dose 1
CT_FOV_MM = 200.0         # the image's field of view
CT_MU_MAX = 2.0           # image value 1 = twice water's attenuation (HU 1000, head-CT window)


def check_image01(image01, allow_complex: bool = False) -> torch.Tensor:
    """``image01`` must be a real float tensor (B, 1, H, W) in [0, 1] without NaN (or, when
    ``allow_complex``, a complex one of magnitude <= 1); returns it as float32 / complex64."""
    ok_complex = allow_complex and torch.is_tensor(image01) and image01.is_complex()
    if not torch.is_tensor(image01) or not (ok_complex or image01.is_floating_point()):
        kind = image01.dtype if torch.is_tensor(image01) else type(image01).__name__
        raise InputError(f"the image must be a real float tensor, got {kind}")
    if ok_complex:
        check_image01(image01.abs(), False)
        return image01.to(torch.complex64)
    if image01.dim() != 4 or image01.shape[1] != 1 or min(image01.shape[-2:]) < 2:
        raise InputError(f"the image must have shape (B, 1, H, W), got {tuple(image01.shape)}")
    if not bool(torch.isfinite(image01).all()):
        raise InputError("the image contains NaN or Inf values")
    if float(image01.min()) < -1e-6 or float(image01.max()) > 1 + 1e-6:
        raise InputError("the image must be in image space [0, 1], got range "
                         f"{float(image01.min()):.3g}..{float(image01.max()):.3g}")
    return image01.float()


def check_acceleration(acceleration) -> float:
    """The acceleration as a float; InputError unless it is a finite number >= 1."""
    try:
        r = float(acceleration)
    except (TypeError, ValueError):
        raise InputError(f"acceleration must be a number >= 1, got {acceleration!r}") from None
    if not (math.isfinite(r) and r >= 1):
        raise InputError(f"acceleration must be >= 1, got {acceleration}")
    return r


def make_mask(kind: str, shape: tuple[int, int], acceleration: float, seed: int) -> torch.Tensor:
    """Sampling mask (H, W) bool: ``random`` / ``equispaced`` 1D column masks (fastMRI) or a
    ``poisson`` variable-density 2D Poisson-disc mask, ``acceleration`` R >= 1, reproducible
    from ``seed`` (see :mod:`meddiff.physics.masks`)."""
    if kind not in MASKS:
        raise InputError(f"unknown mask {kind!r}; choose from {', '.join(MASKS)}")
    return MASKS[kind](tuple(shape), check_acceleration(acceleration), seed=seed)


def ct_unit(pixel_mm: float) -> float:
    """Attenuation per pixel of image value 1 at ``pixel_mm`` (``CT_MU_MAX`` x water, the image
    space of :class:`~meddiff.data.modalities.HeadCTSlices`): the line integrals of an
    image-space sinogram ``y`` are ``ct_unit * y``."""
    return CT_MU_MAX * MU_WATER_PER_MM * pixel_mm


def ct_scale(size: int) -> float:
    """:func:`ct_unit` of a ``size`` px image over a ``CT_FOV_MM`` field of view: central line
    integrals of a head then reach about 4 (see :func:`~meddiff.physics.ct.hu_to_attenuation`)."""
    return ct_unit(CT_FOV_MM / size)


def is_ct(operator: LinearOperator) -> bool:
    """Whether ``operator`` is parallel-beam CT (direct reconstruction FBP) rather than MRI
    (zero-filled)."""
    return isinstance(operator, ParallelBeamCT)


def simulate_mri(image01: torch.Tensor, mask: str = "random",
                 acceleration: float = DEFAULT_ACCELERATION, coils: int = 1,
                 noise_std: float = 0.0, seed: int = 0) -> tuple[LinearOperator, torch.Tensor]:
    """Undersampled Cartesian k-space of image-space images.

    ``image01``: (B, 1, H, W) float in [0, 1], cast to complex (a real-valued image), or
    complex with magnitude <= 1 (an image with phase, e.g. from
    :class:`~meddiff.data.modalities.ComplexBrainSlices`).
    ``coils = 1``: :class:`~meddiff.physics.mri.SingleCoilMRI`; ``coils > 1``:
    :class:`~meddiff.physics.mri.MultiCoilMRI` with simulated birdcage sensitivities (RSS 1).
    ``noise_std``: complex Gaussian k-space noise (image-space units, orthonormal FFT), on
    sampled entries only. Mask and noise are reproducible from ``seed``.

    Returns ``(operator, y)``: ``y = restrict(noise(A x))`` complex (B, coils, H, W), the
    measurement of the *image-space* image (see the module docstring).
    """
    x = check_image01(image01, allow_complex=True)
    if not (isinstance(coils, int) and coils >= 1):
        raise InputError(f"coils must be an integer >= 1, got {coils!r}")
    if not noise_std >= 0:
        raise InputError(f"noise_std must be >= 0, got {noise_std}")
    shape = tuple(x.shape[-2:])
    m = make_mask(mask, shape, acceleration, seed)
    noise = GaussianNoise(noise_std) if noise_std > 0 else None
    op = SingleCoilMRI(m, noise) if coils == 1 else \
        MultiCoilMRI(m, birdcage_maps(shape, coils), noise)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return op, op.forward(x.to(torch.complex64), gen)


def simulate_ct(image01: torch.Tensor, views: int | None = None, dose: float | None = None,
                seed: int = 0) -> tuple[LinearOperator, torch.Tensor]:
    """Parallel-beam sinogram of image-space images, sparse-view and / or low-dose.

    ``image01``: (B, 1, H, W) float in [0, 1]. ``views``: number of angles uniform over
    [0, pi) (:class:`~meddiff.physics.ct.SparseViewCT`; default ``FULL_VIEWS``). ``dose``: the
    fraction of the full dose (blank scan ``FULL_DOSE_I0 * dose`` counts per bin): the line
    integrals of the attenuation ``ct_scale(H) * x`` get transmission Poisson noise
    (:class:`~meddiff.physics.noise.TransmissionPoisson`, Beer-Lambert + log) and are scaled
    back (the operator carries this noise model, so reconstruction knows its variance);
    ``None``: noiseless. Returns ``(operator, y)`` with ``y`` (B, 1, views, detectors)
    float32, the sinogram of the image-space image (see the module docstring).
    """
    x = check_image01(image01)
    n_views = FULL_VIEWS if views is None else views
    if not (isinstance(n_views, int) and n_views >= 1):
        raise InputError(f"views must be an integer >= 1, got {views!r}")
    if dose is not None and not (math.isfinite(dose) and dose > 0):
        raise InputError(f"dose must be a fraction of the full dose > 0, got {dose}")
    noise = None
    if dose is not None:
        noise = Scaled(TransmissionPoisson(FULL_DOSE_I0 * dose), ct_scale(max(x.shape[-2:])))
    op = SparseViewCT(n_views, tuple(x.shape[-2:]), noise=noise)
    return op, op.forward(x, torch.Generator(device=x.device).manual_seed(seed))


def measurement_from_sinogram(sinogram, angles, pixel_mm: float, image_size: tuple[int, int],
                              I0: float | None = None) -> tuple[LinearOperator, torch.Tensor]:  # noqa: N803
    """A measured parallel-beam sinogram as ``(operator, y)`` in the package's convention.

    ``sinogram``: line integrals (slices, views, detectors), one detector bin per pixel;
    ``angles`` (views,) radians; ``pixel_mm`` the reconstruction grid's pixel size;
    ``image_size`` (H, W). ``y`` (slices, 1, views, detectors) float32 is the sinogram of the
    image-space image (line integrals / :func:`ct_unit`). With ``I0`` (blank-scan counts) the
    operator carries the transmission Poisson noise model (its variance from the measured
    counts), so reconstruction is noise-aware; without it the data count as exact.
    """
    p = torch.as_tensor(np.asarray(sinogram), dtype=torch.float32)
    if p.dim() != 3:
        raise InputError(f"a sinogram must be (slices, views, detectors), got {tuple(p.shape)}")
    k = ct_unit(pixel_mm)
    noise = None if I0 is None else Scaled(TransmissionPoisson(I0), k)
    op = ParallelBeamCT(tuple(image_size), np.asarray(angles, dtype=np.float64), p.shape[-1],
                        noise=noise)
    if op.n_views != p.shape[1]:
        raise InputError(f"the sinogram has {p.shape[1]} views but {op.n_views} angles")
    return op, p[:, None] / k
