"""fastMRI-style k-space files (HDF5): :class:`KSpace`, :func:`load_kspace`, :func:`save_kspace`.

The layout follows the fastMRI HDF5 files (Zbontar et al., 2018, "fastMRI: An Open Dataset and
Benchmarks for Accelerated MRI", arXiv:1811.08839, Sec. 3): a complex dataset ``kspace`` of
shape (slices, coils, H, W) (single-coil: (slices, H, W)), an optional real
``reconstruction_rss`` (slices, h, w) and an optional sampling ``mask`` broadcastable to (H, W),
plus a few whitelisted file attributes (never patient identifiers).

This module is file I/O only; turning k-space into a measurement for a reconstruction method
is the physics layer's job. Every user-causable problem raises a one-line
:class:`meddiff.errors.InputError` ``<path>: <problem>``; writing goes through the package's
one atomic writer, :func:`meddiff.data.writers.atomic_write`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import h5py
import numpy as np

from meddiff.data.checks import (MAX_KSPACE_VALUES, check_declared, check_values, input_error,
                                 library_error, real_array)
from meddiff.data.writers import atomic_write
from meddiff.errors import InputError

#: HDF5 file attributes kept in ``KSpace.meta`` (read) and written back (save).
KSPACE_META = ("acquisition", "acceleration", "num_low_frequency", "max", "norm")


@dataclass(repr=False)
class KSpace:
    """Multi-coil Cartesian k-space, fastMRI layout.

    ``kspace``: complex64 (slices, coils, H, W); single-coil files get coils = 1.
    ``reference``: float32 (slices, h, w) root-sum-of-squares reconstruction, or None.
    ``mask``: float32 sampling mask broadcastable to (H, W) (fastMRI stores (W,)), or None.
    ``meta``: whitelisted file attributes (acquisition, acceleration, ...), never patient IDs.
    """

    kspace: np.ndarray
    reference: np.ndarray | None = None
    mask: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        ref = None if self.reference is None else self.reference.shape
        mask = None if self.mask is None else self.mask.shape
        return (f"KSpace(kspace={self.kspace.shape}, reference={ref}, mask={mask}, "
                f"meta={self.meta!r})")


def h5_dataset(path: Path, h5: h5py.File, name: str, sel: tuple = ()) -> np.ndarray | None:
    """Dataset ``name`` (rows ``sel`` only, read on disk) as an array, None when absent; the
    declared size of what is read is checked against the budget first."""
    if name not in h5:
        return None
    obj = h5[name]
    if not isinstance(obj, h5py.Dataset):
        raise input_error(path, f"HDF5 entry {name!r} is a group, expected a dataset")
    shape = obj.shape or ()
    if sel and shape:
        shape = (len(range(*sel[0].indices(shape[0]))), *shape[1:])
    check_declared(path, shape, obj.dtype.itemsize, MAX_KSPACE_VALUES,
                   what=f"the HDF5 dataset {name!r}")
    return np.asarray(obj[sel] if sel else obj[()])


def _read_kspace_arrays(path: Path, slices: int | slice | None):
    """Raw (kspace, reconstruction_rss, mask, meta) from the file, slices selected on disk."""
    try:
        with h5py.File(path, "r") as h5:
            if "kspace" not in h5:
                raise input_error(path, f"HDF5 file has no 'kspace' dataset "
                                        f"(found {sorted(h5.keys())})")
            shape = h5["kspace"].shape
            if len(shape) not in (3, 4):
                raise input_error(path, f"'kspace' has {len(shape)} dims {shape}; "
                                        "expected (slices, [coils,] H, W)")
            if isinstance(slices, int) and not -shape[0] <= slices < shape[0]:
                raise input_error(path, f"slice {slices} out of range ({shape[0]} slices)")
            if isinstance(slices, int):
                slices = slice(slices % shape[0], slices % shape[0] + 1)
            sel = () if slices is None else (slices,)
            ksp = h5_dataset(path, h5, "kspace", sel)
            ref = h5_dataset(path, h5, "reconstruction_rss", sel)
            mask = h5_dataset(path, h5, "mask")
            meta = {k: plain_attr(h5.attrs[k]) for k in KSPACE_META if k in h5.attrs}
    except InputError:
        raise
    except Exception as exc:  # h5py OSError for non-HDF5 / truncated files, index errors
        raise library_error(path, "unreadable or truncated HDF5 file", exc) from None
    return ksp, ref, mask, meta


def plain_attr(value):
    """An HDF5 attribute as a plain Python value (numpy scalars unwrapped, bytes decoded)."""
    value = value.item() if isinstance(value, np.generic) else value
    return value.decode() if isinstance(value, bytes) else value


def load_kspace(path: str | os.PathLike, slices: int | slice | None = None) -> KSpace:
    """Read fastMRI-style HDF5 k-space (Zbontar et al. 2018, arXiv:1811.08839).

    ``kspace``: complex (slices, coils, H, W), or (slices, H, W) single-coil -> coils = 1.
    ``reconstruction_rss`` (optional) becomes ``reference`` float32 (slices, h, w); ``mask``
    (optional, e.g. (W,)) must broadcast to (H, W). ``slices`` selects an int or a slice range
    along the first axis without reading the rest. Raises InputError for any bad input.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "no such file" if not path.exists() else "not a file")
    ksp, ref, mask, meta = _read_kspace_arrays(path, slices)
    if ksp.dtype.kind != "c":
        raise input_error(path, f"'kspace' must be complex, got {ksp.dtype} "
                                "(store real/imaginary pairs as a complex dtype)")
    if ksp.ndim == 3:
        ksp = ksp[:, None]
    check_values(path, ksp)
    ksp = ksp.astype(np.complex64)
    if ref is not None:
        ref = _check_reference(path, ref, ksp.shape[0])
    if mask is not None:
        mask = _check_mask(path, mask, ksp.shape[-2:])
    return KSpace(ksp, ref, mask, meta)


def _check_reference(path: Path, ref: np.ndarray, n_slices: int) -> np.ndarray:
    ref = real_array(path, ref)
    if ref.ndim != 3 or ref.shape[0] != n_slices:
        raise input_error(path, f"'reconstruction_rss' shape {ref.shape} does not match "
                                f"{n_slices} k-space slices")
    check_values(path, ref)
    return ref


def _check_mask(path: Path, mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    mask = real_array(path, mask)
    try:
        np.broadcast_shapes(mask.shape, hw)
    except ValueError:
        raise input_error(path, f"'mask' shape {mask.shape} does not broadcast to k-space "
                                f"(H, W) = {hw}") from None
    check_values(path, mask)
    return mask


def save_kspace(path: str | os.PathLike, kspace: KSpace) -> Path:
    """Write a :class:`KSpace` as fastMRI-style HDF5 ('kspace', 'reconstruction_rss', 'mask').

    Single-coil data (coils = 1) are stored as (slices, H, W) like fastMRI single-coil files.
    Atomic; returns the path.
    """
    ksp = np.asarray(kspace.kspace)
    if ksp.dtype.kind != "c" or ksp.ndim != 4:
        raise input_error(path, f"kspace must be complex (slices, coils, H, W), "
                                f"got {ksp.dtype} {ksp.shape}")
    check_values(path, ksp)

    def write(fh: IO[bytes]) -> None:
        with h5py.File(fh, "w") as h5:
            h5.create_dataset("kspace", data=ksp[:, 0] if ksp.shape[1] == 1 else ksp)
            if kspace.reference is not None:
                h5.create_dataset("reconstruction_rss", data=np.asarray(kspace.reference))
            if kspace.mask is not None:
                h5.create_dataset("mask", data=np.asarray(kspace.mask))
            for key, value in kspace.meta.items():
                if key in KSPACE_META:
                    h5.attrs[key] = value

    return atomic_write(path, write)
