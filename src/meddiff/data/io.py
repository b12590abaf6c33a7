"""Readers and writers for users' own data: NIfTI, DICOM, PNG / TIFF / NPY images, fastMRI k-space.

Intensity contract: readers return values *as stored* (after the modality rescale for DICOM and
the scl_slope / scl_inter scaling for NIfTI) as float32; they do not normalise. Bringing data
into image space [0, 1] is the job of :mod:`meddiff.data.intensity`.

Geometry: ``Image.affine`` maps array indices to world millimetres in RAS+ (NIfTI / nibabel
convention). Formats without geometry (PNG, TIFF, NPY) get an identity affine and unit spacing.

Every user-causable problem (missing file, unreadable or truncated file, unknown type, wrong
dimensionality, NaN / Inf, empty or pickled arrays) raises :class:`meddiff.errors.InputError` with
one line ``<path>: <problem>``. Writers are atomic: data go to a temporary file in the target
directory which then replaces the target (``os.replace``), so a failure never leaves a partial file.

The k-space layout follows the fastMRI HDF5 files (Zbontar et al., 2018, "fastMRI: An Open
Dataset and Benchmarks for Accelerated MRI", arXiv:1811.08839, Sec. 3).
"""
from __future__ import annotations

import contextlib
import gzip
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import h5py
import nibabel as nib
import numpy as np
import tifffile
from PIL import Image as PILImage

from meddiff.data.dicom import (LUMA, Decoded, input_error, library_error, read_dicom_file,
                                read_dicom_series)
from meddiff.errors import InputError

_IMAGE_TYPES = ".nii, .nii.gz, .dcm or DICOM folder, .png, .tif, .tiff, .npy"
_KSPACE_META = ("acquisition", "acceleration", "num_low_frequency", "max", "norm")


@dataclass(repr=False)
class Image:
    """An image or volume with its geometry.

    ``array``: float32, 2D (H, W) or 3D (X, Y, Z) as stored, values as stored (not normalised).
    ``affine``: 4x4 float64 mapping indices to RAS+ mm. ``source``: format name. ``spacing``: mm
    per array axis. ``meta``: geometry / intensity tags only (never patient identifiers).
    ``notes``: conversions applied while reading (e.g. RGB -> luminance).
    """

    array: np.ndarray
    affine: np.ndarray
    source: str
    spacing: tuple[float, ...]
    meta: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (f"Image(source={self.source!r}, shape={self.array.shape}, "
                f"spacing={tuple(round(s, 4) for s in self.spacing)}, meta={self.meta!r}, "
                f"notes={self.notes!r})")


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


# ---------------------------------------------------------------------------------------------
# checks shared by readers and writers


def _check_values(path: str | Path, arr: np.ndarray) -> None:
    """Refuse empty arrays and NaN / Inf values (with their count)."""
    if arr.size == 0:
        raise input_error(path, f"empty array (shape {arr.shape})")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise input_error(path, f"contains {bad} NaN/Inf value(s) out of {arr.size}")


def _check_image_dims(path: str | Path, arr: np.ndarray) -> None:
    if arr.ndim not in (2, 3):
        raise input_error(path, f"{arr.ndim}D array (shape {arr.shape}); "
                                "expected a 2D image or a 3D volume")


def _check_real(path: str | Path, arr: np.ndarray) -> None:
    """Refuse object, string, structured and complex dtypes."""
    if arr.dtype.kind == "c":
        raise input_error(path, "complex array; images must be real (k-space: use load_kspace)")
    if arr.dtype.kind not in "biuf":
        raise input_error(path, f"unsupported array dtype {arr.dtype}")


def _real_array(path: str | Path, arr: np.ndarray) -> np.ndarray:
    """Numeric real array -> float32; refuses other dtypes and float32 overflow."""
    _check_real(path, arr)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=np.float32)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        overflow = int(np.count_nonzero(np.isfinite(arr) & ~np.isfinite(out)))
        if overflow:
            raise input_error(path, f"{overflow} value(s) exceed the float32 range")
    return out


def _finish(path: Path, decoded: Decoded, source: str) -> Image:
    """Common checks (dims, finite, non-empty) and packaging of a reader's result."""
    arr = _real_array(path, decoded.array)
    _check_values(path, arr)
    _check_image_dims(path, arr)
    spacing = tuple(float(s) for s in decoded.spacing[:arr.ndim])
    return Image(arr, np.asarray(decoded.affine, dtype=np.float64), source, spacing,
                 dict(decoded.meta), tuple(decoded.notes))


def _flat(arr: np.ndarray, notes: list[str]) -> Decoded:
    """A geometry-less array (PNG / TIFF / NPY): singleton axes dropped, identity affine."""
    if arr.ndim > 2 and 1 in arr.shape:
        squeezed = arr.reshape([n for n in arr.shape if n != 1])
        if squeezed.ndim >= 2:
            notes.append(f"singleton axes dropped: {arr.shape} -> {squeezed.shape}")
            arr = squeezed
    return Decoded(arr, np.eye(4), (1.0,) * arr.ndim, {}, tuple(notes))


# ---------------------------------------------------------------------------------------------
# readers


def _read_nifti(path: Path) -> Decoded:
    """NIfTI-1/2 via nibabel; trailing singleton axes beyond 3D dropped, true 4D refused."""
    try:
        img = nib.load(path)
        kind = img.get_data_dtype().kind
        if kind not in "biuf":
            raise input_error(path, f"NIfTI data type {img.get_data_dtype()} is not a real scalar")
        shape = img.shape
        keep = len(shape)
        while keep > 3 and shape[keep - 1] == 1:
            keep -= 1
        if keep > 3:
            raise input_error(path, f"{len(shape)}D NIfTI of shape {shape} (time series or "
                                    "channels); extract one 3D volume first")
        arr = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape[:keep])
        zooms = tuple(float(z) for z in img.header.get_zooms()[:keep])
        affine = np.asarray(img.affine, dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # nibabel / gzip / zlib / mmap raise many unrelated types
        raise library_error(path, "unreadable or truncated NIfTI file", exc) from None
    return Decoded(arr, affine, zooms, {}, ())


def _read_png(path: Path) -> Decoded:
    """PNG (any bit depth) via Pillow; colour is folded to luminance with a note."""
    notes: list[str] = []
    try:
        with PILImage.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "1":
                im = im.convert("L")
            elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except Exception as exc:  # PIL.UnidentifiedImageError, zlib errors, truncated files
        raise library_error(path, "unreadable PNG file", exc) from None
    if arr.ndim == 3:
        arr = _to_luma(arr, notes)
    return _flat(arr, notes)


def _to_luma(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """(..., C) with C in 2..4 -> grayscale: gray+alpha keeps gray, RGB(A) uses BT.601 luma."""
    if arr.shape[-1] == 2:
        notes.append("alpha channel dropped")
        return arr[..., 0]
    notes.append("RGB converted to luminance (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B)")
    return arr[..., :3].astype(np.float64) @ LUMA


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence a library's log warnings while reading; problems surface as InputError instead."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_tiff(path: Path) -> Decoded:
    """TIFF via tifffile: 2D image, RGB(A) -> luminance, page stacks -> (H, W, pages)."""
    notes: list[str] = []
    try:
        with _quiet("tifffile"), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr, axes = series.asarray(), series.axes
            rgb = tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error ...
        raise library_error(path, "unreadable TIFF file", exc) from None
    if rgb and "S" in axes:
        arr = _to_luma(np.moveaxis(arr, axes.index("S"), -1), notes)
        axes = axes.replace("S", "")
    keep = [i for i, n in enumerate(arr.shape) if n != 1 or axes[i] in "YX"]
    arr, axes = arr.reshape([arr.shape[i] for i in keep]), "".join(axes[i] for i in keep)
    if arr.ndim == 3 and axes.endswith("YX"):
        arr = np.moveaxis(arr, 0, -1)
        notes.append(f"TIFF stack axis '{axes[0]}' moved last: (H, W, {arr.shape[-1]})")
    return _flat(arr, notes)


def _read_npy(path: Path) -> Decoded:
    """NPY without pickle; object arrays are refused."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise input_error(path, "NPY holds a pickled/object array; refused "
                                    "(save a numeric array instead)") from None
        raise library_error(path, "unreadable or truncated NPY file", exc) from None
    except Exception as exc:  # truncated header, bad magic, OSError
        raise library_error(path, "unreadable or truncated NPY file", exc) from None
    if not isinstance(arr, np.ndarray):
        raise input_error(path, "not a single NPY array (NPZ archives are not supported)")
    return _flat(arr, [])


def _sniff(path: Path) -> str | None:
    """Format from the first bytes, for files whose suffix says nothing."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    by_suffix = {".dcm": "dicom", ".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}
    if path.suffix.lower() in by_suffix:
        return by_suffix[path.suffix.lower()]
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise input_error(path, "HDF5 k-space files are read with load_kspace, not load_image")
    try:
        kind = _sniff(path)
    except OSError as exc:
        raise library_error(path, "cannot read file", exc) from None
    if kind is None:
        raise input_error(path, f"unknown file type {path.suffix or '(no suffix)'!r}; "
                                f"supported: {_IMAGE_TYPES}")
    return kind


def load_image(path: str | os.PathLike) -> Image:
    """Read a user image or volume: NIfTI, DICOM file or series folder, PNG, TIFF or NPY.

    Dispatch is on the suffix, else on the file's magic bytes; a directory is a DICOM series.
    Returns float32 values as stored (DICOM: modality values, e.g. HU for CT), shape 2D (H, W)
    or 3D (X, Y, Z). Raises InputError (one line naming the file) for any bad input.
    """
    path = Path(path)
    if not path.exists():
        raise input_error(path, "no such file or directory")
    if path.is_dir():
        return _finish(path, read_dicom_series(path), "dicom-series")
    kind = _kind(path)
    readers: dict[str, Callable[[Path], Decoded]] = {
        "nifti": _read_nifti, "dicom": read_dicom_file, "png": _read_png, "tiff": _read_tiff,
        "npy": _read_npy}
    return _finish(path, readers[kind](path), kind)


def _dataset(path: Path, h5: h5py.File, name: str, sel: tuple = ()) -> np.ndarray | None:
    if name not in h5:
        return None
    obj = h5[name]
    if not isinstance(obj, h5py.Dataset):
        raise input_error(path, f"HDF5 entry {name!r} is a group, expected a dataset")
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
            ksp = _dataset(path, h5, "kspace", sel)
            ref = _dataset(path, h5, "reconstruction_rss", sel)
            mask = _dataset(path, h5, "mask")
            meta = {k: _plain_attr(h5.attrs[k]) for k in _KSPACE_META if k in h5.attrs}
    except InputError:
        raise
    except Exception as exc:  # h5py OSError for non-HDF5 / truncated files, index errors
        raise library_error(path, "unreadable or truncated HDF5 file", exc) from None
    return ksp, ref, mask, meta


def _plain_attr(value):
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
    _check_values(path, ksp)
    ksp = ksp.astype(np.complex64)
    if ref is not None:
        ref = _check_reference(path, ref, ksp.shape[0])
    if mask is not None:
        mask = _check_mask(path, mask, ksp.shape[-2:])
    return KSpace(ksp, ref, mask, meta)


def _check_reference(path: Path, ref: np.ndarray, n_slices: int) -> np.ndarray:
    ref = _real_array(path, ref)
    if ref.ndim != 3 or ref.shape[0] != n_slices:
        raise input_error(path, f"'reconstruction_rss' shape {ref.shape} does not match "
                                f"{n_slices} k-space slices")
    _check_values(path, ref)
    return ref


def _check_mask(path: Path, mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    mask = _real_array(path, mask)
    try:
        np.broadcast_shapes(mask.shape, hw)
    except ValueError:
        raise input_error(path, f"'mask' shape {mask.shape} does not broadcast to k-space "
                                f"(H, W) = {hw}") from None
    _check_values(path, mask)
    return mask


# ---------------------------------------------------------------------------------------------
# writers (atomic)


def _discard(tmp: Path) -> None:
    """Remove a temporary file if it exists (its directory may not)."""
    with contextlib.suppress(OSError):
        tmp.unlink()


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Run ``write(fileobj)`` on a temp file next to ``path``, then ``os.replace`` it into place.

    Parent directories are created. On any failure the temp file is removed and an existing
    target is left untouched; OS errors become InputError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
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
    _check_real(path, arr)
    _check_values(path, arr)
    if ndims is not None and arr.ndim not in ndims:
        raise input_error(path, f"cannot write a {arr.ndim}D array (shape {arr.shape}); "
                                f"expected {' or '.join(f'{n}D' for n in ndims)}")
    return arr


def save_nifti(path: str | os.PathLike, array, affine=None) -> Path:
    """Write a 2D/3D real array as NIfTI-1 (float32; ``.nii.gz`` is gzip-compressed).

    ``affine``: 4x4 index -> RAS+ mm (identity if None), stored as sform and qform. NIfTI-1 keeps
    the sform in float32, so :func:`load_image` returns it exactly when its entries are float32
    numbers (e.g. 0.5, -90.25), else to float32 precision. Atomic; returns the path.
    """
    arr = _real_array(path, _writable(path, array, (2, 3)))
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        raise input_error(path, f"affine must be a finite 4x4 matrix, got shape {aff.shape}")
    img = nib.Nifti1Image(arr, aff)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return _atomic_write(path, lambda fh: fh.write(data))


def save_png(path: str | os.PathLike, array, vmin: float | None = None,
             vmax: float | None = None) -> Path:
    """Write a 2D real array as an 8-bit grayscale PNG through the window [vmin, vmax].

    ``value -> round(255 * clip((value - vmin) / (vmax - vmin), 0, 1))``; the window defaults to
    the array's min / max (a constant image is written as zeros). Quantisation error after reading
    back and un-windowing is at most (vmax - vmin) / 510. Atomic; returns the path.
    """
    arr = _writable(path, array, (2,)).astype(np.float64)
    lo = float(arr.min()) if vmin is None else float(vmin)
    hi = float(arr.max()) if vmax is None else float(vmax)
    if not np.isfinite([lo, hi]).all() or hi < lo or (hi == lo and (vmin, vmax) != (None, None)):
        raise input_error(path, f"invalid PNG window vmin={lo}, vmax={hi}; need vmin < vmax")
    scaled = np.zeros_like(arr) if hi == lo else np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    im = PILImage.fromarray(np.rint(scaled * 255.0).astype(np.uint8), mode="L")
    return _atomic_write(path, lambda fh: im.save(fh, format="PNG"))


def save_npy(path: str | os.PathLike, array) -> Path:
    """Write a real numeric array (any shape, dtype kept) as NPY without pickle. Atomic."""
    arr = _writable(path, array, None)
    return _atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=False))


def save_kspace(path: str | os.PathLike, kspace: KSpace) -> Path:
    """Write a :class:`KSpace` as fastMRI-style HDF5 ('kspace', 'reconstruction_rss', 'mask').

    Single-coil data (coils = 1) are stored as (slices, H, W) like fastMRI single-coil files.
    Atomic; returns the path.
    """
    ksp = np.asarray(kspace.kspace)
    if ksp.dtype.kind != "c" or ksp.ndim != 4:
        raise input_error(path, f"kspace must be complex (slices, coils, H, W), "
                                f"got {ksp.dtype} {ksp.shape}")
    _check_values(path, ksp)

    def write(fh: IO[bytes]) -> None:
        with h5py.File(fh, "w") as h5:
            h5.create_dataset("kspace", data=ksp[:, 0] if ksp.shape[1] == 1 else ksp)
            if kspace.reference is not None:
                h5.create_dataset("reconstruction_rss", data=np.asarray(kspace.reference))
            if kspace.mask is not None:
                h5.create_dataset("mask", data=np.asarray(kspace.mask))
            for key, value in kspace.meta.items():
                if key in _KSPACE_META:
                    h5.attrs[key] = value

    return _atomic_write(path, write)


# ---------------------------------------------------------------------------------------------
# slicing


def _volume(image: Image | np.ndarray) -> np.ndarray:
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
