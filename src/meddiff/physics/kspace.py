"""Operator and measurement from measured k-space (fastMRI layout), plain arrays in.

The k-space is complex (slices, coils, H, W); undersampled data come with the file's sampling
mask, fully sampled data are undersampled retrospectively (:func:`measurement_from_kspace`).
Multi-coil data need sensitivity maps, given or estimated from a fully sampled calibration
region: by ESPIRiT (:func:`~meddiff.physics.espirit.espirit_maps`) when the region is at least
6 x 6, which gave SENSE errors 0.50-0.74 times those of the low-resolution maps in simulation
(``tests/test_espirit.py``), else by the low-resolution method
(:func:`~meddiff.physics.coils.estimate_sensitivity_maps`).
"""
from __future__ import annotations

import numpy as np
import torch

from meddiff.errors import InputError
from meddiff.physics.acquisition import DEFAULT_ACCELERATION, check_acceleration, make_mask
from meddiff.physics.base import LinearOperator
from meddiff.physics.coils import estimate_sensitivity_maps, rss
from meddiff.physics.espirit import espirit_maps, kernel_for_calibration
from meddiff.physics.masks import as_binary_mask, calibration_region
from meddiff.physics.mri import MultiCoilMRI, SingleCoilMRI, ifft2c

MIN_ACS = 3  # calibration rows / columns needed to estimate coil maps
MIN_ESPIRIT_KERNEL = 3  # smaller kernels (calibration side < 6): low-resolution maps instead


def _file_mask(file_mask, sampled: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The file's mask (H, W) bool, checked against the data; all ones (fully sampled, the
    fastMRI convention: zero-padded k-space edges are not undersampling) if it has none."""
    if file_mask is None:
        return torch.ones(hw, dtype=torch.bool)
    try:
        mask = np.broadcast_to(np.asarray(file_mask), hw).copy()
    except ValueError:
        raise InputError(f"mask shape {np.shape(file_mask)} does not match k-space (H, W) = "
                         f"{hw}") from None
    m = as_binary_mask(mask)
    outside = int((sampled & ~m).sum())
    if outside:
        raise InputError(f"k-space has data at {outside} positions outside its sampling mask")
    return m


def _coil_maps(ksp: torch.Tensor, mask: torch.Tensor, coil_maps) -> torch.Tensor:
    """The given maps, or maps (slices, C, H, W) estimated from ``ksp``'s calibration region:
    ESPIRiT with kernel ``min(6, side // 2)`` when that is >= 3, else low-resolution maps."""
    if coil_maps is not None:
        return torch.as_tensor(coil_maps)
    try:
        rows, cols = calibration_region(mask)
        ok = rows.stop - rows.start >= MIN_ACS and cols.stop - cols.start >= MIN_ACS
    except InputError:
        ok = False
    if not ok:
        raise InputError("multi-coil k-space needs coil sensitivity maps or a fully sampled "
                         f"calibration region (at least {MIN_ACS}x{MIN_ACS} at the k-space "
                         "centre) to estimate them")
    kernel = kernel_for_calibration(mask)
    if kernel >= MIN_ESPIRIT_KERNEL:
        return espirit_maps(ksp * mask, mask, kernel=kernel)
    return estimate_sensitivity_maps(ksp * mask, mask)


def _check_kspace(k, divisor: int) -> tuple[int, int]:
    if not isinstance(k, np.ndarray) or k.dtype.kind != "c" or k.ndim != 4:
        got = f"{k.dtype} {k.shape}" if isinstance(k, np.ndarray) else type(k).__name__
        raise InputError(f"k-space must be a complex array (slices, coils, H, W), got {got}")
    bad = int(k.size - np.count_nonzero(np.isfinite(k)))
    if bad:
        raise InputError(f"k-space contains {bad} NaN/Inf value(s)")
    hw = tuple(k.shape[-2:])
    if hw[0] % divisor or hw[1] % divisor:
        raise InputError(f"k-space is {hw[0]}x{hw[1]}, the network needs sides divisible by "
                         f"{divisor}; k-space is not resampled (crop or zero-pad the data first)")
    return hw


def measurement_from_kspace(kspace: np.ndarray, file_mask: np.ndarray | None = None,
                            reference: np.ndarray | None = None, *, mask: str = "random",
                            acceleration: float | None = None, seed: int = 0, coil_maps=None,
                            divisor: int = 1
                            ) -> tuple[LinearOperator, torch.Tensor, torch.Tensor | None]:
    """Operator and measurement from real k-space.

    ``kspace`` complex (slices, coils, H, W); ``file_mask`` the file's sampling mask
    (broadcastable to (H, W)) or None; ``reference`` the file's (slices, H, W) magnitude
    reconstruction (fastMRI ``reconstruction_rss``) or None. Undersampled data (the file's
    mask has zeros) are used with that mask, and then ``acceleration`` must be None. Fully
    sampled data (no mask, or one of all ones) are undersampled retrospectively with ``mask``
    / ``acceleration`` (default 4) and ``seed``, and give a reference. Multi-coil data need
    ``coil_maps`` (C, H, W) / (slices, C, H, W), or a fully sampled calibration region from
    which they are estimated. The images keep the k-space's own H x W (never resampled);
    ``divisor``: what the network needs H and W divisible by (refused otherwise).

    Scaling: k-space is divided by the 99.5th percentile of the fully sampled root-sum-of-squares
    image (undersampled: the zero-filled one), so images are about [0, 1] (image space).
    Returns ``(operator, y, reference01)``: ``y`` complex64 (slices, coils, H, W) of the scaled
    image; ``reference01`` (slices, 1, H, W) in [0, 1] (RSS of the fully sampled data, or
    ``reference`` when it has the k-space's H x W) or None.
    """
    hw = _check_kspace(kspace, divisor)
    if acceleration is not None:
        check_acceleration(acceleration)
    ksp = torch.from_numpy(kspace.astype(np.complex64))
    sampled = ksp.abs().sum(dim=(0, 1)) > 0
    if not bool(sampled.any()):
        raise InputError("k-space is all zeros")
    have = _file_mask(file_mask, sampled, hw)
    full = bool(have.all())
    if full:
        m = make_mask(mask, hw, DEFAULT_ACCELERATION if acceleration is None else acceleration,
                      seed)
    elif acceleration is not None:
        r = hw[0] * hw[1] / int(have.sum())
        raise InputError(f"the k-space is already undersampled ({r:.2f}x, its own mask); "
                         "do not give an acceleration")
    else:
        m = have
    image = rss(ifft2c(ksp * m if not full else ksp))
    scale = float(np.percentile(image.numpy(), 99.5)) or 1.0
    ksp = ksp / scale
    op = SingleCoilMRI(m) if ksp.shape[1] == 1 else MultiCoilMRI(m, _coil_maps(ksp, m, coil_maps))
    ref = None
    if full:
        ref = (image / scale).clamp(0, 1)
    elif reference is not None and tuple(reference.shape[-2:]) == hw:
        ref = (torch.from_numpy(np.asarray(reference, np.float32))[:, None] / scale).clamp(0, 1)
    return op, op.restrict(ksp), ref
