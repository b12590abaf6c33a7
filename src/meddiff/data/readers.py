"""Readers for users' own images: NIfTI, DICOM (file or series folder), PNG, TIFF, NPY.

Intensity contract: :func:`load_image` returns values *as stored* (after the modality rescale
for DICOM and the scl_slope / scl_inter scaling for NIfTI) as float32; it does not normalise.
Bringing data into image space [0, 1] is the job of :mod:`meddiff.data.intensity`.

Geometry: ``Image.affine`` maps array indices to world millimetres in RAS+ (NIfTI / nibabel
convention); ``Image.oriented`` says whether it is the patient's geometry: NIfTI with a qform or
sform code, DICOM with ImageOrientation / ImagePosition (Patient). Files without it (PNG, TIFF,
NPY; NIfTI with both codes 0, the "Analyze" case of the NIfTI-1 standard; DICOM without those
tags) get a diagonal affine of their spacing (identity for PNG, TIFF, NPY) and are used as
stored (:mod:`meddiff.data.slicing`).

Every user-causable problem (missing file, unreadable or truncated file, unknown type, wrong
dimensionality, NaN / Inf, empty or pickled arrays) raises :class:`meddiff.errors.InputError` with
one line ``<path>: <problem>`` (:mod:`meddiff.data.checks`). Memory: the NIfTI, PNG, TIFF and NPY
readers check the array their header declares against
:data:`~meddiff.data.checks.MAX_VOXELS` (and, for uncompressed NIfTI / NPY, against the file's
size) before reading any data, so a small file declaring a huge array is refused at once;
library log warnings are silenced while reading (a real problem is the InputError). fastMRI
k-space files are read by :func:`meddiff.data.kspace_io.load_kspace`; writers live in
:mod:`meddiff.data.writers`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import tifffile
from PIL import Image as PILImage

from meddiff.data.checks import (check_declared, check_image_dims, check_values, input_error,
                                 library_error, real_array)
from meddiff.data.dicom import LUMA, Decoded, read_dicom_file, read_dicom_series
from meddiff.errors import InputError

IMAGE_TYPES = ".nii, .nii.gz, .dcm or DICOM folder, .png, .tif, .tiff, .npy"


@dataclass(repr=False)
class Image:
    """An image or volume with its geometry.

    ``array``: float32, 2D (H, W) or 3D (X, Y, Z) as stored, values as stored (not normalised).
    ``affine``: 4x4 float64 mapping indices to RAS+ mm. ``source``: format name. ``spacing``: mm
    per array axis. ``meta``: geometry / intensity tags only (never patient identifiers).
    ``notes``: conversions applied while reading (e.g. RGB -> luminance). ``oriented``:
    ``affine`` is the patient geometry (False: spacing only; the array is used as stored).
    """

    array: np.ndarray
    affine: np.ndarray
    source: str
    spacing: tuple[float, ...]
    meta: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    oriented: bool = False

    def __repr__(self) -> str:
        return (f"Image(source={self.source!r}, shape={self.array.shape}, "
                f"spacing={tuple(round(s, 4) for s in self.spacing)}, meta={self.meta!r}, "
                f"notes={self.notes!r}, oriented={self.oriented})")


def _finish(path: Path, decoded: Decoded, source: str) -> Image:
    """Common checks (dims, finite, non-empty) and packaging of a reader's result."""
    arr = real_array(path, decoded.array)
    check_values(path, arr)
    check_image_dims(path, arr)
    spacing = tuple(float(s) for s in decoded.spacing[:arr.ndim])
    return Image(arr, np.asarray(decoded.affine, dtype=np.float64), source, spacing,
                 dict(decoded.meta), tuple(decoded.notes), bool(decoded.oriented))


def _flat(arr: np.ndarray, notes: list[str]) -> Decoded:
    """A geometry-less array (PNG / TIFF / NPY): singleton axes dropped, identity affine."""
    if arr.ndim > 2 and 1 in arr.shape:
        squeezed = arr.reshape([n for n in arr.shape if n != 1])
        if squeezed.ndim >= 2:
            notes.append(f"singleton axes dropped: {arr.shape} -> {squeezed.shape}")
            arr = squeezed
    return Decoded(arr, np.eye(4), (1.0,) * arr.ndim, {}, tuple(notes))


# ---------------------------------------------------------------------------------------------
# format readers


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


def _nifti_size(path: Path, img) -> None:
    """The header's declared data against the memory budget and, for an uncompressed file,
    against the bytes it holds after its data offset."""
    available = None
    if not path.name.lower().endswith(".gz"):
        available = path.stat().st_size - int(img.header.get_data_offset())
    check_declared(path, img.shape, img.get_data_dtype().itemsize, available=available,
                   what="the NIfTI header")


def _decode_nifti(path: Path) -> Decoded:
    """The NIfTI file's array after the dtype, declared-size and dimension checks."""
    img = nib.load(path)
    if img.get_data_dtype().kind not in "biuf":
        raise input_error(path, f"NIfTI data type {img.get_data_dtype()} is not a real scalar")
    _nifti_size(path, img)
    shape = img.shape
    keep = len(shape)
    while keep > 3 and shape[keep - 1] == 1:
        keep -= 1
    if keep > 3:
        raise input_error(path, f"{len(shape)}D NIfTI of shape {shape} (time series or "
                                "channels); extract one 3D volume first")
    arr = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape[:keep])
    zooms = tuple(float(z) for z in img.header.get_zooms()[:keep])
    if int(img.header["sform_code"]) or int(img.header["qform_code"]):
        return Decoded(arr, np.asarray(img.affine, dtype=np.float64), zooms, {}, (), True)
    diagonal = np.diag([*zooms[:3], *(1.0,) * (4 - min(3, len(zooms)))])
    return Decoded(arr, diagonal, zooms, {}, ("NIfTI without orientation (qform and sform "
                                              "codes 0): used as stored",))


def _read_nifti(path: Path) -> Decoded:
    """NIfTI-1/2 via nibabel (its log warnings silenced); trailing singleton axes beyond 3D
    dropped, true 4D refused; the declared size is checked before the data are read."""
    try:
        with _quiet("nibabel"):
            return _decode_nifti(path)
    except InputError:
        raise
    except Exception as exc:  # nibabel / gzip / zlib / mmap raise many unrelated types
        raise library_error(path, "unreadable or truncated NIfTI file", exc) from None


def _read_png(path: Path) -> Decoded:
    """PNG (any bit depth) via Pillow; colour is folded to luminance with a note; the
    declared size is checked before the pixels are decoded (Pillow's own decompression-bomb
    warning is replaced by that check)."""
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            im = PILImage.open(path)
        with im:
            check_declared(path, (im.height, im.width), 1, what="the PNG header")
            im.load()
            mode = im.mode
            if mode == "1":
                im = im.convert("L")
            elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except InputError:
        raise
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


def _read_tiff(path: Path) -> Decoded:
    """TIFF via tifffile: 2D image, RGB(A) -> luminance, page stacks -> (H, W, pages)."""
    notes: list[str] = []
    try:
        with _quiet("tifffile"), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            check_declared(path, series.shape, series.dtype.itemsize, what="the TIFF header")
            arr, axes = series.asarray(), series.axes
            rgb = tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    except InputError:
        raise
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


def _npy_size(path: Path) -> None:
    """An NPY header's declared array against the memory budget and the file's size (format
    versions 1 and 2; other versions and non-NPY files are left to numpy)."""
    fmt = np.lib.format
    with path.open("rb") as fh:
        if fh.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
            return
        fh.seek(0)
        read = {(1, 0): fmt.read_array_header_1_0,
                (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(fh))
        if read is None:
            return
        shape, _, dtype = read(fh)
        available = path.stat().st_size - fh.tell()
    check_declared(path, shape, dtype.itemsize, what="the NPY header",
                   available=None if dtype.hasobject else available)


def _read_npy(path: Path) -> Decoded:
    """NPY without pickle; object arrays are refused; the declared size is checked first."""
    try:
        _npy_size(path)
        arr = np.load(path, allow_pickle=False)
    except InputError:
        raise
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
                                f"supported: {IMAGE_TYPES}")
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
