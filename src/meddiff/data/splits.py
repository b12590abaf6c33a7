"""Leak-free splits of the single MNI152 anatomy: contiguous axial slabs with guard bands.

Neighbouring 1 mm slices of one anatomy correlate at 0.99+, so a random slice split leaks.
Instead (deterministic, no randomness at all):

1. *eligible* axial slices are those whose brain area is >= ``min_area_frac`` of the largest
   axial brain area (drops the skull-base / vertex caps);
2. one contiguous slab is held out for ``'val'`` and one for ``'test'``, each flanked on both sides
   by a guard band of ``guard`` slices (1 mm each, so >= 8 mm) that belongs to no split;
3. every other eligible slice is ``'train'``.

With the defaults on the MNI152 2009 mask (axial index k = z_MNI + 72 mm) this gives:
    eligible 22..142 (121 slices)
    train    22..38, 65..72, 103..142   (65 slices)
    guard    39..46, 57..64, 73..80, 95..102
    val      47..56   (10 slices, z = -25..-16 mm: temporal lobes, midbrain)
    test     81..94   (14 slices, z = +9..+22 mm: lateral ventricles, periventricular WM)

Coronal / sagittal sections cross every axial slab, so none of them is safe for training once
axial test slabs exist (:func:`safe_sections` computes this; on MNI152 it returns no section at
all for either axis). They are therefore *evaluation-only* views (:func:`view_sections`) that
measure view transfer, never held-out anatomy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meddiff.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class AxialSplit:
    """Axial slice indices (into the Z axis of the volume) of each split, sorted int arrays."""

    eligible: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    guard: np.ndarray

    def indices(self, split: str) -> np.ndarray:
        """Slice indices of ``split`` ('train' | 'val' | 'test')."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, split)

    def held_out(self) -> np.ndarray:
        """All slices that training must never see: val, test and guard bands."""
        return np.union1d(np.union1d(self.val, self.test), self.guard)

    def intervals(self, split: str) -> list[tuple[int, int]]:
        """Maximal runs [start, stop) of contiguous slice indices of ``split``."""
        idx = self.indices(split)
        if idx.size == 0:
            return []
        breaks = np.nonzero(np.diff(idx) > 1)[0]
        starts = np.r_[idx[0], idx[breaks + 1]]
        stops = np.r_[idx[breaks], idx[-1]] + 1
        return [(int(a), int(b)) for a, b in zip(starts, stops)]


def eligible_slices(mask: np.ndarray, axis: int = 2, min_area_frac: float = 0.25) -> np.ndarray:
    """Indices along ``axis`` of sections of the bool ``mask`` with enough brain area."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    area = mask.sum(axis=other)
    return np.nonzero(area >= min_area_frac * area.max())[0]


def axial_split(mask: np.ndarray, min_area_frac: float = 0.25, guard: int = 8,
                val_center: float = 0.25, val_width: int = 10,
                test_center: float = 0.55, test_width: int = 14) -> AxialSplit:
    """Deterministic slab split of the axial slices of a (X, Y, Z) bool brain ``mask``.

    Slab centres are given as fractions of the eligible range; widths and ``guard`` in slices.
    Raises ConfigError when the slabs (with guards) overlap or leave the eligible range.
    """
    if guard < 0 or val_width < 1 or test_width < 1:
        raise ConfigError("split widths must be >= 1 and guard >= 0")
    elig = eligible_slices(mask, 2, min_area_frac)
    lo, hi = int(elig[0]), int(elig[-1])
    slabs = {}
    for name, centre, width in (("val", val_center, val_width), ("test", test_center, test_width)):
        start = lo + int(round(centre * (hi - lo))) - width // 2
        slabs[name] = np.arange(start, start + width)
    bands = [np.r_[s[0] - guard:s[0], s[-1] + 1:s[-1] + 1 + guard] for s in slabs.values()]
    guard_idx = np.unique(np.concatenate(bands))
    held = np.concatenate([slabs["val"], slabs["test"], guard_idx])
    if held.min() < lo or held.max() > hi or np.unique(held).size != held.size:
        raise ConfigError("val/test slabs with guard bands overlap or leave the brain")
    train = np.setdiff1d(elig, held)
    return AxialSplit(eligible=elig, train=train, val=slabs["val"], test=slabs["test"],
                      guard=guard_idx)


def safe_sections(mask: np.ndarray, split: AxialSplit, axis: int) -> np.ndarray:
    """Sections along ``axis`` (0 sagittal, 1 coronal) whose brain avoids every held-out slice.

    A coronal/sagittal section contains voxels of all axial slices; it is safe for training only
    if none of its brain voxels lies in the val/test slabs or their guard bands.
    """
    if axis not in (0, 1):
        raise ConfigError("axis must be 0 (sagittal) or 1 (coronal)")
    held = np.zeros(mask.shape[2], dtype=bool)
    held[split.held_out()] = True
    touches = (mask & held[None, None, :]).any(axis=tuple(a for a in (0, 1, 2) if a != axis))
    has_brain = mask.any(axis=tuple(a for a in (0, 1, 2) if a != axis))
    return np.nonzero(has_brain & ~touches)[0]


def view_sections(mask: np.ndarray, axis: int, split: str,
                  min_area_frac: float = 0.25) -> np.ndarray:
    """Evaluation-only coronal (axis 1) / sagittal (axis 0) section indices for 'val' / 'test'.

    Eligible sections are taken every 4 mm, alternating between val (even) and test (odd), so
    the two sets are disjoint and >= 4 mm apart. Raises ConfigError for 'train'.
    """
    if split not in ("val", "test"):
        raise ConfigError("coronal/sagittal views are evaluation-only: use split 'val' or 'test'")
    elig = eligible_slices(mask, axis, min_area_frac)
    return elig[0 if split == "val" else 4::8]
