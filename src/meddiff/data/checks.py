"""Checks shared by meddiff's file readers and writers, and the one-line errors they raise.

Every user-causable problem with a file (unreadable, wrong dtype, NaN / Inf, empty, wrong
dimensionality, a declared size beyond the memory budget, nothing to process) becomes
:class:`meddiff.errors.InputError` with exactly one line ``<path>: <problem>``; third-party
exceptions are folded into that line, never re-raised.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from meddiff.errors import InputError

#: the most values an image file may declare: 512^3 (0.5 GiB as float32), checked on the header
#: before any data is read (:func:`check_declared`)
MAX_VOXELS = 512 ** 3
#: the most complex values a k-space file may declare for one read: 2^28 (2 GiB as complex64;
#: a fastMRI multi-coil volume holds about 10^8)
MAX_KSPACE_VALUES = 2 ** 28
#: the smallest in-plane side an image a task processes may have (:func:`check_content`)
MIN_SIDE = 8


def input_error(path: str | Path, problem: str) -> InputError:
    """The one-line InputError every reader / writer raises: ``<path>: <problem>``, whitespace
    folded."""
    return InputError(" ".join(f"{path}: {problem}".split()))


def library_error(path: str | Path, what: str, exc: BaseException) -> InputError:
    """Wrap a third-party exception (pydicom, nibabel, zlib, OSError ...) into a one-line
    InputError ``<path>: <what> (<detail>)``, the detail cut to 200 characters."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if len(detail) > 200:
        detail = detail[:197] + "..."
    return input_error(path, f"{what} ({detail})")


def check_values(path: str | Path, arr: np.ndarray) -> None:
    """Refuse empty arrays and NaN / Inf values (with their count); any shape and dtype."""
    if arr.size == 0:
        raise input_error(path, f"empty array (shape {arr.shape})")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise input_error(path, f"contains {bad} NaN/Inf value(s) out of {arr.size}")


def check_image_dims(path: str | Path, arr: np.ndarray) -> None:
    """Refuse anything but a 2D image (H, W) or a 3D volume (X, Y, Z)."""
    if arr.ndim not in (2, 3):
        raise input_error(path, f"{arr.ndim}D array (shape {arr.shape}); "
                                "expected a 2D image or a 3D volume")


def check_real(path: str | Path, arr: np.ndarray) -> None:
    """Refuse object, string, structured and complex dtypes (bool / int / uint / float pass)."""
    if arr.dtype.kind == "c":
        raise input_error(path, "complex array; images must be real (k-space: use load_kspace)")
    if arr.dtype.kind not in "biuf":
        raise input_error(path, f"unsupported array dtype {arr.dtype}")


def real_array(path: str | Path, arr: np.ndarray) -> np.ndarray:
    """Numeric real array -> float32 (same shape, values unchanged); refuses other dtypes and
    float64 values that overflow float32."""
    check_real(path, arr)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=np.float32)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        overflow = int(np.count_nonzero(np.isfinite(arr) & ~np.isfinite(out)))
        if overflow:
            raise input_error(path, f"{overflow} value(s) exceed the float32 range")
    return out


def check_declared(path: str | Path, shape: tuple[int, ...], itemsize: int,
                   budget: int = MAX_VOXELS, available: int | None = None,
                   what: str = "the header") -> None:
    """Refuse, from a header alone and before any data is read, a declared array of ``shape``
    with more than ``budget`` values, or (``available``: the data bytes an uncompressed file
    holds after its header) more bytes (``itemsize`` each) than the file holds; ``what``
    names the declaring part in the message."""
    dims = [int(n) for n in shape]
    values = math.prod(dims)
    sides = "x".join(str(n) for n in dims) or "scalar"
    if any(n < 0 for n in dims):
        raise input_error(path, f"{what} declares a negative array size ({sides})")
    if values > budget:
        raise input_error(path, f"{what} declares a {sides} array ({values:,} values), more "
                                f"than meddiff reads at once ({budget:,}); crop or "
                                "downsample it first")
    if available is not None and values * itemsize > available:
        raise input_error(path, f"truncated: {what} declares {values * itemsize:,} bytes of "
                                f"data ({sides}), the file holds {max(available, 0):,}")


def check_content(path: str | Path, slices: np.ndarray) -> None:
    """Refuse 2D slices (N, H, W) that leave a task nothing to process: an in-plane side below
    :data:`MIN_SIDE`, or every value the same (an all-zero or constant image, which a prior
    would fill with invented content)."""
    h, w = slices.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise input_error(path, f"the image is {h}x{w} pixels; meddiff needs at least "
                                f"{MIN_SIDE} on each in-plane side")
    low, high = float(slices.min()), float(slices.max())
    if low == high:
        raise input_error(path, f"the image is constant (all values {low:g}): nothing to "
                                "denoise, reconstruct, detect or segment")
