"""DICOM readers: single files and series folders (pydicom), geometry and intensities only.

Output layout: a single-frame file gives a 2D array (rows, cols) = (H, W) as displayed; a series
folder gives a 3D array (rows, cols, slices) with slices sorted along the slice normal. The 4x4
affine maps array indices (row, col, slice) to millimetres in RAS+ world coordinates (the NIfTI /
nibabel convention: DICOM's LPS patient coordinates with x and y negated), following the DICOM
standard, PS3.3 C.7.6.2.1.1 (Image Position / Image Orientation (Patient)). Stored values are
mapped to modality values (e.g. Hounsfield units for CT) with RescaleSlope / RescaleIntercept
(PS3.3 C.11.1.1.2): ``value = stored * slope + intercept``.

Privacy: only geometry / intensity tags listed in :data:`KEPT_TAGS` are copied out of a dataset;
patient and study identifiers (name, ID, birth date, ...) are never stored, logged or printed.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom

from meddiff.data.checks import input_error, library_error
from meddiff.errors import InputError

#: DICOM keywords copied into ``Image.meta`` (geometry / intensity only, no identifiers).
KEPT_TAGS = ("Modality", "PhotometricInterpretation", "BitsStored", "RescaleSlope",
             "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "SliceThickness",
             "PixelSpacing", "ImageOrientationPatient")

#: ITU-R BT.601 luma weights, used for colour -> grayscale everywhere in meddiff.data.
LUMA = np.array([0.299, 0.587, 0.114])

_MAGIC_OFFSET = 128


class Decoded(NamedTuple):
    """What a format reader returns before the common checks turn it into an ``Image``."""

    array: np.ndarray                # float32, modality values
    affine: np.ndarray               # 4x4 float64
    spacing: tuple[float, ...]       # mm per array axis
    meta: dict                       # whitelisted, JSON-like values
    notes: tuple[str, ...]           # human-readable remarks on conversions applied


def is_dicom_file(path: Path) -> bool:
    """True for a ``.dcm`` file or any file with the 'DICM' magic at byte 128 (PS3.10 7.1)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_dataset(path: Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise library_error(path, "unreadable DICOM file", exc) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise input_error(path, "DICOM file holds no pixel data (not an image, or truncated)")
    return ds


def _pixels(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    """Decoded pixel values after the modality rescale, float64, colour folded to luma."""
    try:
        raw = ds.pixel_array
    except Exception as exc:  # missing decoder plugin, truncated pixel data, bad group 0028
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise library_error(path, f"cannot decode DICOM pixel data (transfer syntax {syntax})",
                            exc) from None
    arr = np.asarray(raw, dtype=np.float64)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        arr = arr[..., :3] @ LUMA
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return arr * slope + intercept


def _plain(value):
    """A DICOM value as float / str / tuple, for the metadata dictionary."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(_plain(v) for v in value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _meta(ds: pydicom.Dataset) -> dict:
    return {k: _plain(ds.get(k)) for k in KEPT_TAGS if ds.get(k) not in (None, "")}


def _notes(ds: pydicom.Dataset) -> list[str]:
    notes = []
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        notes.append("colour DICOM converted to luminance (ITU-R BT.601 weights)")
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        notes.append("MONOCHROME1: low values are displayed bright (values not inverted)")
    return notes


def _in_plane(ds: pydicom.Dataset, notes: list[str]) -> tuple[float, float]:
    """(row spacing, column spacing) in mm; 1 mm with a note when the file has none."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            if key != "PixelSpacing":
                notes.append("spacing from ImagerPixelSpacing (detector plane, not patient)")
            return float(value[0]), float(value[1])
    notes.append("no pixel spacing in DICOM; 1 mm assumed")
    return 1.0, 1.0


def _orientation(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Unit direction cosines (along a row, along a column) in LPS, or None when absent."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    v = np.asarray([float(x) for x in iop])
    row_dir, col_dir = v[:3], v[3:]
    if not np.isclose(np.linalg.norm(row_dir), 1, atol=1e-2) or \
            not np.isclose(np.linalg.norm(col_dir), 1, atol=1e-2):
        return None
    return row_dir, col_dir


def _position(ds: pydicom.Dataset) -> np.ndarray | None:
    ipp = ds.get("ImagePositionPatient")
    return None if ipp is None or len(ipp) != 3 else np.asarray([float(x) for x in ipp])


def _affine(i_step: np.ndarray, j_step: np.ndarray, k_step: np.ndarray,
            origin: np.ndarray) -> np.ndarray:
    """RAS+ affine from the LPS displacement per unit of row index i, column index j, slice k.

    Moving down one row (i) follows the column direction cosine times the row spacing; moving
    right one column (j) follows the row direction cosine times the column spacing.
    """
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = i_step, j_step, k_step, origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_dicom_file(path: Path) -> Decoded:
    """Read one DICOM file: 2D (rows, cols), or 3D (rows, cols, frames) for multi-frame files.

    Values are modality values (slope/intercept applied), not normalised.
    """
    ds = _read_dataset(path)
    arr = _pixels(path, ds)
    notes = _notes(ds)
    dr, dc = _in_plane(ds, notes)
    thickness = float(ds.get("SliceThickness", 0) or 0) or 1.0
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = np.moveaxis(arr, 0, -1)
        notes.append("multi-frame DICOM: per-frame geometry not parsed, affine is diagonal")
        return Decoded(arr.astype(np.float32), np.diag([dr, dc, thickness, 1.0]),
                       (dr, dc, thickness), _meta(ds), tuple(notes))
    orient, origin = _orientation(ds), _position(ds)
    if orient is None or origin is None:
        affine = np.diag([dr, dc, thickness, 1.0])
    else:
        row_dir, col_dir = orient
        normal = np.cross(row_dir, col_dir)
        affine = _affine(col_dir * dr, row_dir * dc, normal * thickness, origin)
    return Decoded(arr.astype(np.float32), affine, (dr, dc), _meta(ds), tuple(notes))


def _series_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if is_dicom_file(p))
    if not files:
        raise input_error(folder, "directory contains no DICOM files (.dcm or 'DICM' magic)")
    return files


def _load_slices(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """Datasets holding one 2D image each (a DICOMDIR index file is skipped), one series."""
    slices = []
    for path in _series_files(folder):
        try:
            ds = _read_dataset(path)
        except InputError:
            if path.name.upper() == "DICOMDIR":
                continue
            raise
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise input_error(path, "multi-frame DICOM inside a series folder; load it as a file")
        slices.append((path, ds))
    if not slices:
        raise input_error(folder, "directory contains no DICOM images")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise input_error(folder, f"directory mixes {len(series)} DICOM series; "
                                  "put each series in its own folder")
    return slices


def _sort_key(slices: list[tuple[Path, pydicom.Dataset]],
              orient: tuple[np.ndarray, np.ndarray] | None) -> tuple[list[float], str]:
    """Sort keys per slice: position along the normal, else InstanceNumber, else file name."""
    positions = [_position(ds) for _, ds in slices]
    if orient is not None and all(p is not None for p in positions):
        normal = np.cross(*orient)
        return [float(p @ normal) for p in positions], "position"
    numbers = [ds.get("InstanceNumber") for _, ds in slices]
    if all(n is not None for n in numbers):
        return [float(n) for n in numbers], "InstanceNumber"
    return [float(i) for i in range(len(slices))], "file name"


def _slice_step(positions: list[np.ndarray], folder: Path, notes: list[str]) -> np.ndarray:
    """Mean LPS step between consecutive (sorted) slices; refuses duplicates, notes uneven gaps."""
    gaps = np.linalg.norm(np.diff(np.stack(positions), axis=0), axis=1)
    if gaps.min() < 1e-4:
        raise input_error(folder, "several DICOM slices share one position "
                                  "(mixed acquisitions or echoes in one folder)")
    if gaps.max() - gaps.min() > 0.01 * gaps.mean():
        notes.append(f"uneven slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); "
                     "affine uses the mean")
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _same_orientation(ds: pydicom.Dataset, orient: tuple[np.ndarray, np.ndarray]) -> bool:
    other = _orientation(ds)
    return other is not None and np.allclose(np.concatenate(other), np.concatenate(orient),
                                             atol=1e-3)


def read_dicom_series(folder: Path) -> Decoded:
    """Read a DICOM series folder (no recursion) into a 3D (rows, cols, slices) volume.

    Slices are sorted along the slice normal by ImagePositionPatient (falling back to
    InstanceNumber); each slice gets its own RescaleSlope / RescaleIntercept. A folder with one
    image gives a 2D array like :func:`read_dicom_file`.
    """
    slices = _load_slices(folder)
    if len(slices) == 1:
        return read_dicom_file(slices[0][0])
    first = slices[0][1]
    orient = _orientation(first)
    if orient is not None and not all(_same_orientation(ds, orient) for _, ds in slices):
        raise input_error(folder, "DICOM slices differ in orientation; not one volume")
    keys, how = _sort_key(slices, orient)
    slices = [s for _, s in sorted(zip(keys, slices), key=lambda t: t[0])]
    images = [_pixels(path, ds) for path, ds in slices]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise input_error(folder, f"DICOM slices differ in size {sorted(shapes)}")
    notes = _notes(first)
    dr, dc = _in_plane(first, notes)
    thickness = float(first.get("SliceThickness", 0) or 0) or 1.0
    positions = [_position(ds) for _, ds in slices]
    if how == "position":
        row_dir, col_dir = orient
        step = _slice_step(positions, folder, notes)
        affine = _affine(col_dir * dr, row_dir * dc, step, positions[0])
    else:
        notes.append(f"no patient geometry; slices ordered by {how}, affine is diagonal")
        affine = np.diag([dr, dc, thickness, 1.0])
    volume = np.stack(images, axis=-1).astype(np.float32)
    spacing = (dr, dc, float(np.linalg.norm(affine[:3, 2])))
    return Decoded(volume, affine, spacing, _meta(first), tuple(notes))
