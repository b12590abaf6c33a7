"""DICOM readers: single files and series folders (pydicom), geometry and intensities only.

Output layout: a single-frame file gives a 2D array (rows, cols) = (H, W) as displayed; a series
folder gives a 3D array (rows, cols, slices) with slices sorted along the slice normal; a
multi-frame file a 3D array (rows, cols, frames), its frames sorted along the normal when it
carries per-frame positions (enhanced multi-frame, PS3.3 C.7.6.16: the functional groups'
PlanePosition / PlaneOrientation / PixelMeasures / PixelValueTransformation, per frame or
shared). ``Decoded.oriented`` says whether the affine is the patient geometry; without
ImageOrientation / ImagePosition (Patient) it is diagonal (spacing only) and the array is to be
used as it is. Frames that share one position (time series, echoes) or carry incomplete
geometry are refused with one line. Compressed transfer syntaxes are decoded by pydicom's
plugins (RLE natively, JPEG baseline and JPEG 2000 through Pillow); one without a decoder is
refused with one line naming it. The 4x4
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
    oriented: bool = False           # the affine is the patient geometry (else spacing only)


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


def _decoded(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    """Decoded stored values, float64, colour folded to luma: (rows, cols), or (frames, rows,
    cols) for a multi-frame file."""
    try:
        raw = ds.pixel_array
    except Exception as exc:  # missing decoder plugin, truncated pixel data, bad group 0028
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or syntax or "unknown"
        raise library_error(path, f"cannot decode DICOM pixel data (transfer syntax {name})",
                            exc) from None
    arr = np.asarray(raw, dtype=np.float64)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        arr = arr[..., :3] @ LUMA
    return arr


def _rescaled(arr: np.ndarray, item: pydicom.Dataset) -> np.ndarray:
    """Stored values -> modality values with the item's RescaleSlope / RescaleIntercept."""
    slope = float(item.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(item.get("RescaleIntercept", 0.0) or 0.0)
    return arr * slope + intercept


def _group(ds: pydicom.Dataset, frame: int, name: str) -> pydicom.Dataset:
    """Where the attributes of functional group ``name`` (e.g. ``PlanePositionSequence``) of
    frame ``frame`` live: its per-frame item, else the shared item, else the dataset itself
    (classic files keep them at the top level)."""
    for seq, k in (("PerFrameFunctionalGroupsSequence", frame),
                   ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(seq)
        if items is not None and len(items) > k and items[k].get(name):
            return items[k].get(name)[0]
    return ds


def _pixels(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    """The modality values (rows, cols) of a single-frame dataset, float64."""
    return _rescaled(_decoded(path, ds), _group(ds, 0, "PixelValueTransformationSequence"))


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


def _thickness(item: pydicom.Dataset) -> float:
    return float(item.get("SliceThickness", 0) or 0) or 1.0


def read_dicom_file(path: Path) -> Decoded:
    """Read one DICOM file: 2D (rows, cols), or 3D (rows, cols, frames) for multi-frame files
    (:func:`_read_frames`). Geometry from the top level or, in enhanced files, the functional
    groups of the first frame. Values are modality values (slope/intercept applied), not
    normalised."""
    ds = _read_dataset(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return _read_frames(path, ds, frames)
    arr = _pixels(path, ds).astype(np.float32)
    notes = _notes(ds)
    measures = _group(ds, 0, "PixelMeasuresSequence")
    dr, dc = _in_plane(measures, notes)
    thickness = _thickness(measures)
    orient = _orientation(_group(ds, 0, "PlaneOrientationSequence"))
    origin = _position(_group(ds, 0, "PlanePositionSequence"))
    if orient is None or origin is None:
        notes.append("no patient geometry (ImageOrientation / ImagePosition): used as stored")
        return Decoded(arr, np.diag([dr, dc, thickness, 1.0]), (dr, dc), _meta(ds), tuple(notes))
    row_dir, col_dir = orient
    affine = _affine(col_dir * dr, row_dir * dc, np.cross(row_dir, col_dir) * thickness, origin)
    return Decoded(arr, affine, (dr, dc), _meta(ds), tuple(notes), True)


def _frame_geometry(path: Path, ds: pydicom.Dataset, frames: int
                    ) -> tuple[tuple[np.ndarray, np.ndarray], list[np.ndarray]] | None:
    """(orientation, per-frame positions) of a multi-frame file from its per-frame functional
    groups; None when no frame has a position of its own. One-line InputError when the
    geometry is incomplete or the frames differ in orientation."""
    position_items = [_group(ds, k, "PlanePositionSequence") for k in range(frames)]
    if all(item is ds for item in position_items):
        return None
    positions = [None if item is ds else _position(item) for item in position_items]
    orients = [_orientation(_group(ds, k, "PlaneOrientationSequence")) for k in range(frames)]
    if any(p is None for p in positions) or any(o is None for o in orients):
        raise input_error(path, "multi-frame DICOM with incomplete per-frame geometry (a "
                                "position or orientation is missing); cannot place its frames")
    if not all(_same_orientation(o, orients[0]) for o in orients):
        raise input_error(path, "the frames of this multi-frame DICOM differ in orientation; "
                                "not one volume")
    return orients[0], positions


def _read_frames(path: Path, ds: pydicom.Dataset, frames: int) -> Decoded:
    """A multi-frame file as (rows, cols, frames): with per-frame positions (enhanced
    multi-frame) sorted along the slice normal, with the affine of the positions; without,
    the frames as stored and no patient geometry (spacing only). Per-frame rescale applied."""
    raw = _decoded(path, ds)
    arr = np.stack([_rescaled(raw[k], _group(ds, k, "PixelValueTransformationSequence"))
                    for k in range(frames)])
    notes = _notes(ds)
    measures = _group(ds, 0, "PixelMeasuresSequence")
    dr, dc = _in_plane(measures, notes)
    geometry = _frame_geometry(path, ds, frames)
    if geometry is None:
        notes.append("multi-frame DICOM without per-frame positions: frames kept as stored, "
                     "no patient geometry")
        thickness = _thickness(measures)
        return Decoded(np.moveaxis(arr, 0, -1).astype(np.float32),
                       np.diag([dr, dc, thickness, 1.0]), (dr, dc, thickness), _meta(ds),
                       tuple(notes))
    (row_dir, col_dir), positions = geometry
    normal = np.cross(row_dir, col_dir)
    order = np.argsort([float(p @ normal) for p in positions], kind="stable")
    positions = [positions[k] for k in order]
    step = _slice_step(positions, path, notes)
    affine = _affine(col_dir * dr, row_dir * dc, step, positions[0])
    volume = np.moveaxis(arr[order], 0, -1).astype(np.float32)
    return Decoded(volume, affine, (dr, dc, float(np.linalg.norm(step))), _meta(ds),
                   tuple(notes), True)


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
        slices.append((path, ds))
    if not slices:
        raise input_error(folder, "directory contains no DICOM images")
    multi = next((p for p, ds in slices if int(ds.get("NumberOfFrames", 1) or 1) > 1), None)
    if multi is not None and len(slices) > 1:
        raise input_error(multi, "multi-frame DICOM beside other images in a series folder; "
                                 "give it its own folder or load it as a file")
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
        raise input_error(folder, "several DICOM slices share one position (a time series, "
                                  "several echoes or mixed acquisitions); not one volume")
    if gaps.max() - gaps.min() > 0.01 * gaps.mean():
        notes.append(f"uneven slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); "
                     "affine uses the mean")
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _same_orientation(other: tuple[np.ndarray, np.ndarray] | None,
                      orient: tuple[np.ndarray, np.ndarray]) -> bool:
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
    if orient is not None and not all(_same_orientation(_orientation(ds), orient)
                                      for _, ds in slices):
        raise input_error(folder, "DICOM slices differ in orientation; not one volume")
    keys, how = _sort_key(slices, orient)
    slices = [s for _, s in sorted(zip(keys, slices), key=lambda t: t[0])]
    images = [_pixels(path, ds) for path, ds in slices]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise input_error(folder, f"DICOM slices differ in size {sorted(shapes)}")
    notes = _notes(first)
    dr, dc = _in_plane(first, notes)
    thickness = _thickness(first)
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
    return Decoded(volume, affine, spacing, _meta(first), tuple(notes), how == "position")
