"""Checks shared by meddiff's file readers and writers, and the one-line errors they raise.

Every user-causable problem with a file (unreadable, wrong dtype, NaN / Inf, empty, wrong
dimensionality) becomes :class:`meddiff.errors.InputError` with exactly one line
``<path>: <problem>``; third-party exceptions are folded into that line, never re-raised.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from meddiff.errors import InputError


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
