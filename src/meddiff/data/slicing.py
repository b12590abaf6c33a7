"""2D slices of images and volumes, values unchanged.

:func:`to_2d_slices` / :func:`as_slice`: a 2D image (H, W) is one slice; a 3D volume (X, Y, Z)
is cut along ``axis`` (default: the last, the slice axis of NIfTI volumes and of DICOM series
read by :mod:`meddiff.data.readers`), as stored.

:func:`model_frame`: the sections the models see. They were trained on sections of a RAS+
volume in display orientation (:func:`meddiff.data.datasets._as_sections`): axial sections,
image rows anterior -> posterior, columns patient left -> right (neurological). A file whose
affine is the patient geometry (``Image.oriented``) is reoriented to the closest RAS+ axes
(:func:`nibabel.orientations.io_orientation`) and cut the same way; a file with a single slice
keeps its own plane (axial, coronal or sagittal, displayed as in training). Files without
geometry (PNG, TIFF, NPY, ...) are used as stored. Only axis permutations and flips are
involved, so :meth:`Frame.array` puts sections back onto the file's own grid exactly.

Outputs are float32 copies in the input's intensity range; wrong dimensionality or an
out-of-range axis / index raise a one-line :class:`meddiff.errors.InputError`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from meddiff.data.readers import Image
from meddiff.errors import InputError

#: canonical (RAS+) volume -> (N, H, W) display sections: the axis flipped, then the permutation
PLANES = {
    "axial": (1, (2, 1, 0)),     # (inferior -> superior, anterior -> posterior, left -> right)
    "coronal": (2, (1, 2, 0)),   # (posterior -> anterior, superior -> inferior, left -> right)
    "sagittal": (2, (0, 2, 1)),  # (left -> right, superior -> inferior, posterior -> anterior)
}
_RAS = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])


@dataclass(frozen=True)
class Frame:
    """How a file's array maps to the 2D sections a model sees, and back.

    ``shape``: the array's shape as stored (2D or 3D); ``ornt``: the orientation (3 rows of
    (RAS axis, +-1)) of its axes against RAS+, or None: the array is used as stored (a 2D image
    is one section, a 3D array is cut along its last axis); ``plane``: the sections' plane in
    the canonical volume (:data:`PLANES`).
    """

    shape: tuple[int, ...]
    ornt: tuple[tuple[float, float], ...] | None = None
    plane: str = "axial"

    def sections(self, arr: np.ndarray) -> np.ndarray:
        """The array (``shape``) as float32 sections (N, H, W)."""
        arr = np.asarray(arr)
        if self.ornt is None:
            return to_2d_slices(arr)
        flip, perm = PLANES[self.plane]
        canonical = apply_orientation(arr.reshape(_as_3d(self.shape)), np.array(self.ornt))
        return np.ascontiguousarray(np.transpose(np.flip(canonical, flip), perm),
                                    dtype=np.float32)

    def array(self, sections: np.ndarray) -> np.ndarray:
        """Sections (N, H, W) of :meth:`sections`' shape back onto the array's layout
        (``shape``), dtype kept; the exact inverse of :meth:`sections`."""
        sections = np.asarray(sections)
        if self.ornt is None:
            return (sections[0] if len(self.shape) == 2 else np.moveaxis(sections, 0, -1)).copy()
        flip, perm = PLANES[self.plane]
        canonical = np.flip(np.transpose(sections, np.argsort(perm)), flip)
        back = apply_orientation(canonical, ornt_transform(_RAS, np.array(self.ornt)))
        return np.ascontiguousarray(back.reshape(self.shape))


def _as_3d(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape) + (1,) * (3 - len(shape))


def model_frame(image: Image) -> Frame:
    """The :class:`Frame` of ``image`` (module docstring): reoriented to RAS+ when
    ``image.oriented`` (and its affine is not degenerate), else as stored. The plane is axial,
    unless the canonical volume is a single coronal or sagittal slice."""
    shape = _volume(image).shape
    if not image.oriented:
        return Frame(shape)
    ornt = io_orientation(image.affine)
    if np.isnan(ornt).any():  # a zero column: no closest axis
        return Frame(shape)
    canonical = [0, 0, 0]
    for n, (axis, _) in zip(_as_3d(shape), ornt):
        canonical[int(axis)] = n
    plane = "axial"
    if canonical[2] != 1:
        plane = "coronal" if canonical[1] == 1 else "sagittal" if canonical[0] == 1 else "axial"
    return Frame(shape, tuple((float(a), float(f)) for a, f in ornt), plane)


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
