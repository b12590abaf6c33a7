"""Measured parallel-beam CT sinograms (HDF5): :class:`Sinogram`, :func:`load_sinogram`,
:func:`save_sinogram`, :func:`is_sinogram_file`.

Layout: a real dataset ``sinogram`` of line integrals (dimensionless, ``-log`` of the
transmitted fraction) of shape (slices, views, detectors) or (views, detectors), a real
``angles`` (views,) in radians, and file attributes ``pixel_mm`` (the reconstruction grid's
pixel size, required: it converts line integrals to attenuation per pixel), optionally
``image_size`` (H, W) of the grid (default: the largest square the detectors cover) and
``I0`` (blank-scan counts per detector bin: the data are then treated as transmission Poisson
data for noise-aware reconstruction). Detector bins are one pixel wide and centred on the
rotation axis (:class:`meddiff.physics.ct.ParallelBeamCT`). File I/O only; every
user-causable problem raises a one-line :class:`meddiff.errors.InputError`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import h5py
import numpy as np

from meddiff.data.checks import check_values, input_error, library_error, real_array
from meddiff.data.kspace_io import h5_dataset, plain_attr
from meddiff.data.writers import atomic_write
from meddiff.errors import InputError


@dataclass(repr=False)
class Sinogram:
    """``sinogram`` float32 (slices, views, detectors) line integrals, ``angles`` float64
    (views,) radians, ``pixel_mm`` > 0, ``image_size`` (H, W), ``I0`` blank-scan counts or
    None (noise unknown: the data are treated as exact)."""

    sinogram: np.ndarray
    angles: np.ndarray
    pixel_mm: float
    image_size: tuple[int, int]
    I0: float | None = None  # noqa: N815 - the physics symbol

    def __repr__(self) -> str:
        return (f"Sinogram(sinogram={self.sinogram.shape}, views={len(self.angles)}, "
                f"pixel_mm={self.pixel_mm:g}, image_size={self.image_size}, I0={self.I0})")


def is_sinogram_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file with a ``sinogram`` dataset (False if unreadable)."""
    try:
        with h5py.File(path, "r") as h5:
            return "sinogram" in h5
    except (OSError, ValueError):
        return False


def _positive(path: Path, name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise input_error(path, f"attribute {name!r} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise input_error(path, f"attribute {name!r} must be > 0, got {value!r}")
    return v


def _image_size(path: Path, value, n_detectors: int) -> tuple[int, int]:
    if value is None:
        side = int(n_detectors / math.sqrt(2))
        return side, side
    size = tuple(int(v) for v in np.atleast_1d(value))
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or min(size) < 2:
        raise input_error(path, f"attribute 'image_size' must be H or (H, W) >= 2, got {value!r}")
    return size


def load_sinogram(path: str | os.PathLike) -> Sinogram:
    """Read a sinogram file (layout in the module docstring); InputError for any bad input."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "no such file" if not path.exists() else "not a file")
    try:
        with h5py.File(path, "r") as h5:
            sino, angles = h5_dataset(path, h5, "sinogram"), h5_dataset(path, h5, "angles")
            attrs = {k: plain_attr(h5.attrs[k]) for k in ("pixel_mm", "image_size", "I0")
                     if k in h5.attrs}
    except InputError:
        raise
    except Exception as exc:
        raise library_error(path, "unreadable or truncated HDF5 file", exc) from None
    if sino is None or angles is None:
        raise input_error(path, "a sinogram file needs the datasets 'sinogram' and 'angles'")
    sino, angles = real_array(path, sino), real_array(path, angles).astype(np.float64)
    sino = sino[None] if sino.ndim == 2 else sino
    if sino.ndim != 3 or angles.ndim != 1 or sino.shape[1] != len(angles):
        raise input_error(path, f"'sinogram' {sino.shape} must be (slices, views, detectors) "
                                f"with one view per angle ({angles.shape[0]} angles)")
    check_values(path, sino)
    check_values(path, angles)
    if "pixel_mm" not in attrs:
        raise input_error(path, "attribute 'pixel_mm' (the image grid's pixel size) is missing")
    i0 = None if "I0" not in attrs else _positive(path, "I0", attrs["I0"])
    if i0 is not None and i0 <= 1:
        raise input_error(path, f"attribute 'I0' (blank-scan counts) must be > 1, got {i0}")
    return Sinogram(sino, angles, _positive(path, "pixel_mm", attrs["pixel_mm"]),
                    _image_size(path, attrs.get("image_size"), sino.shape[-1]), i0)


def save_sinogram(path: str | os.PathLike, sino: Sinogram) -> Path:
    """Write a :class:`Sinogram` (atomic); returns the path."""
    data = np.asarray(sino.sinogram, dtype=np.float32)
    check_values(path, data)

    def write(fh: IO[bytes]) -> None:
        with h5py.File(fh, "w") as h5:
            h5.create_dataset("sinogram", data=data)
            h5.create_dataset("angles", data=np.asarray(sino.angles, dtype=np.float64))
            h5.attrs["pixel_mm"] = float(sino.pixel_mm)
            h5.attrs["image_size"] = np.asarray(sino.image_size, dtype=np.int64)
            if sino.I0 is not None:
                h5.attrs["I0"] = float(sino.I0)

    return atomic_write(path, write)
