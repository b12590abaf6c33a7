"""2D slices of images and volumes, values unchanged.

A 2D image (H, W) is one slice; a 3D volume (X, Y, Z) is cut along ``axis`` (default: the last,
the slice axis of NIfTI volumes and of DICOM series read by :mod:`meddiff.data.readers`).
Outputs are float32 copies in the input's intensity range; wrong dimensionality or an out-of-range
axis / index raise a one-line :class:`meddiff.errors.InputError`.
"""
from __future__ import annotations

import numpy as np

from meddiff.data.readers import Image
from meddiff.errors import InputError


def _volume(image: Image | np.ndarray) -> np.ndarray:
    """The 2D / 3D array of an Image or array-like (float32 for array-likes)."""
    arr = image.array if isinstance(image, Image) else np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise InputError(f"expected a 2D image or 3D volume, got shape {arr.shape}")
    return arr


def to_2d_slices(image: Image | np.ndarray, axis: int = -1) -> np.ndarray:
    """All 2D slices along ``axis`` as float32 (N, H', W'); a 2D image gives (1, H, W).

    Values are unchanged (same intensity range as the input).
    """
    arr = _volume(image)
    if arr.ndim == 2:
        return arr[None].astype(np.float32)
    if not -3 <= axis < 3:
        raise InputError(f"slice axis {axis} out of range for a 3D volume")
    return np.ascontiguousarray(np.moveaxis(arr, axis, 0), dtype=np.float32)


def as_slice(image: Image | np.ndarray, index: int | None = None, axis: int = -1) -> np.ndarray:
    """One 2D float32 slice: a 2D image as is; for 3D, slice ``index`` along ``axis``.

    ``index`` defaults to the middle slice (n // 2); values unchanged.
    """
    arr = _volume(image)
    if arr.ndim == 2:
        return np.array(arr, dtype=np.float32)
    if not -3 <= axis < 3:
        raise InputError(f"slice axis {axis} out of range for a 3D volume")
    n = arr.shape[axis]
    index = n // 2 if index is None else index
    if not -n <= index < n:
        raise InputError(f"slice index {index} out of range for axis of length {n}")
    return np.array(np.take(arr, index, axis=axis), dtype=np.float32)
