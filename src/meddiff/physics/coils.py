"""Receive-coil sensitivities: simulation, estimation from calibration data, coil combination.

Sensitivity maps are complex (C, H, W) or (B, C, H, W) tensors on the image grid of
:mod:`meddiff.physics.mri` (origin at (H // 2, W // 2)). SENSE maps are only defined up to a
common per-pixel phase (``S -> S e^{i psi}``, ``x -> x e^{-i psi}`` leaves ``S x`` unchanged),
so estimated maps carry the phase of the image they were estimated from.
"""
from __future__ import annotations

import math

import torch

from meddiff.errors import InputError
from meddiff.physics.masks import calibration_region
from meddiff.physics.mri import ifft2c
from meddiff.physics.noise import as_generator


def rss(coil_images: torch.Tensor, dim: int = 1, keepdim: bool = True) -> torch.Tensor:
    """Root-sum-of-squares coil combination ``sqrt(sum_c |x_c|^2)`` over ``dim``.

    ``coil_images``: (B, C, H, W) complex or real; returns the real magnitude (B, 1, H, W)
    (``keepdim=False``: (B, H, W)) in the input's intensity units (Roemer et al., 1990, Magn.
    Reson. Med. 16:192, Eq. 27 with identity noise covariance).
    """
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim, keepdim=keepdim))


def birdcage_maps(shape: tuple[int, int], n_coils: int, radius: float = 1.5) -> torch.Tensor:
    """Simulated sensitivities of ``n_coils`` loops evenly spaced on a circle around the FOV.

    Coil ``c`` sits at angle ``2 pi c / n_coils`` at ``radius`` times the FOV half-width (in
    normalised coordinates where the FOV edge is at 1; keep ``radius > sqrt(2)`` so coils lie
    outside the image). Its magnitude falls off as ``1 / distance`` (a Biot-Savart-like near
    field) and its phase is the azimuth of the pixel seen from the coil, rotated by the coil's
    position: the birdcage model of sigpy's ``birdcage_maps`` (Ong & Lustig, 2019, ISMRM
    "SigPy: a python package for high performance iterative reconstruction"). Maps are normalised
    to root-sum-of-squares 1 at every pixel. Returns complex64 (n_coils, H, W).
    """
    if n_coils < 1:
        raise InputError(f"n_coils must be >= 1, got {n_coils}")
    h, w = shape
    y = (torch.arange(h, dtype=torch.float64) - h // 2) / (h / 2)
    x = (torch.arange(w, dtype=torch.float64) - w // 2) / (w / 2)
    angle = torch.arange(n_coils, dtype=torch.float64) * (2 * math.pi / n_coils)
    dx = x[None, None, :] - radius * torch.cos(angle)[:, None, None]
    dy = y[None, :, None] - radius * torch.sin(angle)[:, None, None]
    dist = torch.sqrt(dx ** 2 + dy ** 2)
    phase = torch.atan2(dy, dx) - angle[:, None, None]
    maps = torch.polar(1.0 / dist, phase)
    return (maps / rss(maps, dim=0)).to(torch.complex64)


def _taper(n: int) -> torch.Tensor:
    """Tukey window (alpha 0.5: cosine tapers over the outer quarters) of length ``n``.

    Equals ``scipy.signal.windows.tukey(n + 2, 0.5)[1:-1]`` (no zero end points). A k-space
    smoothing taper, gentler than a Hann window, which blurs small calibration regions so much
    that a varying image phase cancels in the low-resolution coil images.
    """
    u = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
    edge = torch.minimum(u, 1.0 - u) / 0.25
    return torch.where(edge >= 1, 1.0, 0.5 * (1.0 - torch.cos(math.pi * edge)))


def estimate_sensitivity_maps(kspace: torch.Tensor, mask: torch.Tensor,
                              threshold: float = 0.05) -> torch.Tensor:
    """Estimate coil maps from the fully sampled k-space centre (low-resolution method).

    The calibration (ACS) block is the largest fully sampled rectangle around DC of ``mask``
    (:func:`~meddiff.physics.masks.calibration_region`). It is tapered with a Tukey window
    (smoothing, alpha 0.5), zero-padded to (H, W) and inverse-FFT'd to low-resolution coil
    images, which are divided by their root-sum-of-squares (McKenzie et al., 2002, Magn.
    Reson. Med. 47:529; Pruessmann et al., 1999, Magn. Reson. Med. 42:952). Pixels whose RSS
    is below ``threshold`` times the image maximum (background) get zero maps.

    ``kspace``: complex (B, C, H, W) multi-coil k-space (any scale; zeros where unsampled).
    ``mask``: binary (H, W) sampling mask (for fastMRI files ``kspace.abs().sum((0, 1)) > 0``).
    Returns complex (B, C, H, W) maps with RSS 1 inside the object, 0 outside; they carry the
    image phase (see the module docstring).
    """
    if not torch.is_tensor(kspace) or not kspace.is_complex() or kspace.dim() != 4:
        raise InputError("k-space for sensitivity estimation must be complex (B, C, H, W)")
    rows, cols = calibration_region(mask)
    if tuple(kspace.shape[-2:]) != tuple(torch.as_tensor(mask).shape):
        raise InputError(f"mask shape {tuple(torch.as_tensor(mask).shape)} does not match "
                         f"k-space {tuple(kspace.shape[-2:])}")
    window = _taper(rows.stop - rows.start)[:, None] * _taper(cols.stop - cols.start)[None, :]
    acs = torch.zeros_like(kspace)
    acs[..., rows, cols] = kspace[..., rows, cols] * window.to(kspace.device, kspace.real.dtype)
    low = ifft2c(acs)
    combined = rss(low)
    peak = combined.amax(dim=(-2, -1), keepdim=True)
    inside = combined > threshold * peak
    return torch.where(inside, low / combined.clamp_min(torch.finfo(combined.dtype).tiny), 0)


def smooth_random_phase(shape: tuple[int, ...], generator: torch.Generator | int,
                        max_phase: float = math.pi, n_cycles: float = 2.0) -> torch.Tensor:
    """Smooth random phase map for turning a magnitude image into a complex MRI image.

    Low-pass Gaussian noise: complex white noise kept only within ``n_cycles`` cycles per FOV
    of DC, inverse FFT, real part, scaled so that ``max |phase| = max_phase`` (radians).
    ``shape``: (..., H, W); returns float32 of that shape. Use as ``x * torch.polar(ones, phi)``.
    """
    gen = as_generator(generator, torch.device("cpu"))
    h, w = shape[-2:]
    ky = (torch.arange(h) - h // 2)[:, None].double()
    kx = (torch.arange(w) - w // 2)[None, :].double()
    keep = (ky ** 2 + kx ** 2) <= n_cycles ** 2
    coeffs = torch.randn(shape, dtype=torch.complex128, generator=gen) * keep
    field = ifft2c(coeffs).real
    scale = field.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return (field / scale * max_phase).float()

