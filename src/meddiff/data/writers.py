"""Writers for users' and meddiff's own files, and THE atomic writer of the package.

:func:`atomic_write` is the one way meddiff writes a file (images, k-space, figures, JSON,
model weights): the bytes go to a temporary file in the target directory which is flushed,
fsync'ed and then moved over the target with ``os.replace`` (atomic on POSIX and Windows), so
a failure never leaves a partial file and never damages an existing one. Inside
:func:`all_or_nothing` the moves wait until every file of the block is written, so a task's
outputs appear together or not at all.

Image writers (:func:`save_nifti`, :func:`save_png`, :func:`save_npy`) take real arrays with
values in any range (no normalisation except the PNG window); they refuse empty arrays, NaN /
Inf, complex and non-numeric dtypes and wrong dimensionality with a one-line InputError
``<path>: <problem>`` before anything is written.

nibabel and Pillow are imported inside the writers that need them, so importing
:func:`atomic_write` stays cheap (``meddiff models`` must answer in < 1 s).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import secrets
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np

from meddiff.data.checks import (check_real, check_values, input_error, library_error,
                                 real_array)


#: the (temporary, target) pairs of the innermost :func:`all_or_nothing` block, None outside
_STAGED: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("staged", default=None)


def _discard(tmp: Path) -> None:
    """Remove a temporary file if it exists (its directory may not)."""
    with contextlib.suppress(OSError):
        tmp.unlink()


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """A block whose :func:`atomic_write` files appear together: each stays under its
    temporary name until the block ends; then all are moved to their targets, or, when the
    block raises, all are removed and no target is touched. Nested blocks join the outer one.
    Usable as a decorator (a task's ``write_outputs``)."""
    if _STAGED.get() is not None:
        yield
        return
    staged: list[tuple[Path, Path]] = []
    token = _STAGED.set(staged)
    try:
        yield
    except BaseException:
        for tmp, _ in staged:
            _discard(tmp)
        raise
    finally:
        _STAGED.reset(token)
    for k, (tmp, path) in enumerate(staged):
        try:
            os.replace(tmp, path)
        except OSError as exc:
            for rest, _ in staged[k:]:
                _discard(rest)
            raise library_error(path, "cannot write file", exc) from None


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], None]) -> Path:
    """Run ``write_fn(fileobj)`` on a temp file next to ``path``, then ``os.replace`` it there.

    ``fileobj`` is a binary file opened for reading and writing (``w+b``; h5py and safetensors
    callers may also seek). Parent directories are created; the file gets the usual permissions
    (0o666 minus the umask). On any failure the temp file ``.<name>.<random>.tmp`` is removed
    and an existing target is left untouched; OS errors become a one-line InputError
    ``<path>: cannot write file (<reason>)``, other exceptions propagate unchanged. Inside
    :func:`all_or_nothing` the move waits for the end of the block. Returns ``Path(path)``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask
        with os.fdopen(fd, "w+b") as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())
        staged = _STAGED.get()
        if staged is None:
            os.replace(tmp, path)
        else:
            staged.append((tmp, path))
    except OSError as exc:
        _discard(tmp)
        raise library_error(path, "cannot write file", exc) from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def _writable(path: str | os.PathLike, array, ndims: tuple[int, ...] | None) -> np.ndarray:
    """The array (dtype kept) after the dtype / non-empty / finite / dimension checks."""
    arr = np.asarray(array)
    check_real(path, arr)
    check_values(path, arr)
    if ndims is not None and arr.ndim not in ndims:
        raise input_error(path, f"cannot write a {arr.ndim}D array (shape {arr.shape}); "
                                f"expected {' or '.join(f'{n}D' for n in ndims)}")
    return arr


def save_nifti(path: str | os.PathLike, array, affine=None, dtype=np.float32) -> Path:
    """Write a 2D/3D real array as NIfTI-1 (``.nii.gz`` is gzip-compressed).

    ``affine``: 4x4 index -> RAS+ mm, stored as sform and qform (codes "aligned"). NIfTI-1
    keeps the sform in float32, so :func:`meddiff.data.readers.load_image` returns it exactly
    when its entries are float32 numbers (e.g. 0.5, -90.25), else to float32 precision.
    ``None``: the array has no patient geometry (a 2D image, a sample): written with qform and
    sform codes 0 and unit voxels, so that readers use it as stored. ``dtype``: float32, or
    uint8 for label maps (values must be integers in 0..255). The gzip stream has mtime 0, so
    equal inputs give equal bytes. Atomic; returns the path.
    """
    import nibabel as nib

    arr = _nifti_array(path, array, np.dtype(dtype))
    if affine is None:
        img = nib.Nifti1Image(arr, None)
    else:
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.isfinite(aff).all():
            raise input_error(path, f"affine must be a finite 4x4 matrix, got shape {aff.shape}")
        img = nib.Nifti1Image(arr, aff)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write(path, lambda fh: fh.write(data))


def _nifti_array(path: str | os.PathLike, array, dtype: np.dtype) -> np.ndarray:
    """The checked array in ``dtype`` (float32, or uint8 holding integers 0..255)."""
    arr = real_array(path, _writable(path, array, (2, 3)))
    if dtype == np.float32:
        return arr
    if dtype != np.uint8:
        raise ValueError(f"save_nifti writes float32 or uint8, not {dtype}")
    if arr.min() < 0 or arr.max() > 255 or not np.array_equal(arr, np.round(arr)):
        raise input_error(path, "a uint8 NIfTI holds integers 0..255 only")
    return arr.astype(np.uint8)


def save_png(path: str | os.PathLike, array, vmin: float | None = None,
             vmax: float | None = None) -> Path:
    """Write a 2D real array as an 8-bit grayscale PNG through the window [vmin, vmax].

    ``value -> round(255 * clip((value - vmin) / (vmax - vmin), 0, 1))``; the window defaults to
    the array's min / max (a constant image is written as zeros). Quantisation error after reading
    back and un-windowing is at most (vmax - vmin) / 510. Atomic; returns the path.
    """
    from PIL import Image as PILImage

    arr = _writable(path, array, (2,)).astype(np.float64)
    lo = float(arr.min()) if vmin is None else float(vmin)
    hi = float(arr.max()) if vmax is None else float(vmax)
    if not np.isfinite([lo, hi]).all() or hi < lo or (hi == lo and (vmin, vmax) != (None, None)):
        raise input_error(path, f"invalid PNG window vmin={lo}, vmax={hi}; need vmin < vmax")
    scaled = np.zeros_like(arr) if hi == lo else np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    im = PILImage.fromarray(np.rint(scaled * 255.0).astype(np.uint8), mode="L")
    return atomic_write(path, lambda fh: im.save(fh, format="PNG"))


def save_npy(path: str | os.PathLike, array) -> Path:
    """Write a real numeric array (any shape, dtype kept, values unchanged) as NPY without
    pickle. Atomic; returns the path."""
    arr = _writable(path, array, None)
    return atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=False))
