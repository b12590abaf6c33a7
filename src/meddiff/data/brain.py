"""The built-in real anatomy: the MNI152 2009c nonlinear symmetric template shipped in nilearn.

Reference: Fonov, Evans, McKinstry, Almli, Collins (2009), "Unbiased nonlinear average
age-appropriate brain templates from birth to adulthood", NeuroImage 47(S1):S102; Fonov et al.
(2011), NeuroImage 54(1):313-327. The files are the 1 mm "converted" uint8 versions
(197 x 233 x 189 voxels, RAS axes, affine kept) that nilearn installs with its package data.

The files are located *without importing nilearn* (``importlib.util.find_spec``), loaded with
nibabel, turned into tissue fractions, and the derived arrays are cached as an ``.npz`` (no pickle)
under the user cache directory (``$MEDDIFF_CACHE`` or ``~/.cache/meddiff``).

Tissue model (all arrays float32 in [0, 1], shape (X, Y, Z), 1 mm isotropic):
    mask = t1 > 0;  gm, wm = template probabilities (zeroed outside the mask);
    csf  = clip(mask - gm - wm, 0, 1)   so that  csf + gm + wm == mask  voxelwise.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddiff.data.writers import atomic_write
from meddiff.errors import InputError

_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
_CACHE_NAME = "mni152_2009_sym_v1.npz"
#: Tissue label values returned by :func:`tissue_labels`.
LABELS = {"background": 0, "csf": 1, "gm": 2, "wm": 3}


def cache_dir() -> Path:
    """The meddiff cache directory: ``$MEDDIFF_CACHE`` if set, else ``~/.cache/meddiff``."""
    env = os.environ.get("MEDDIFF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "meddiff"


def mni_files() -> dict[str, Path]:
    """Paths of the MNI152 2009 T1 / GM / WM files inside the installed nilearn package.

    Raises InputError when nilearn is not installed or does not ship the files.
    """
    spec = importlib.util.find_spec("nilearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in locations:
        data = Path(root) / "datasets" / "data"
        paths = {k: data / name for k, name in _FILES.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    raise InputError("the MNI152 2009 template was not found: install nilearn "
                     "(it ships mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz)")


@dataclass(frozen=True)
class BrainVolume:
    """Tissue fractions of one real brain, each (X, Y, Z) float32 in [0, 1], RAS voxel axes.

    ``t1`` is the template T1-weighted image rescaled to [0, 1]; ``mask`` is bool;
    ``csf + gm + wm == mask`` holds voxelwise. ``affine`` maps voxel to MNI mm coordinates.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def labels(self) -> np.ndarray:
        """Hard tissue labels (X, Y, Z) int64, see :func:`tissue_labels`."""
        return tissue_labels(self.csf, self.gm, self.wm, self.mask)


def tissue_labels(csf: np.ndarray, gm: np.ndarray, wm: np.ndarray,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """Argmax of (background, CSF, GM, WM) fractions -> int64 labels 0..3 (see ``LABELS``).

    Inputs are fraction maps of equal shape in [0, 1]; background = 1 - (csf + gm + wm), or
    1 - mask when ``mask`` (bool or fraction) is given. Ties go to the lower label.
    """
    brain = (csf + gm + wm) if mask is None else mask.astype(np.float32)
    stack = np.stack([1.0 - brain, csf, gm, wm])
    return np.argmax(stack, axis=0).astype(np.int64)


def _read_nifti(paths: dict[str, Path]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    import nibabel as nib

    arrays, affine = {}, None
    for key, path in paths.items():
        img = nib.load(str(path))
        arrays[key] = np.asarray(img.dataobj, dtype=np.uint8)
        affine = np.asarray(img.affine, dtype=np.float64) if affine is None else affine
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise InputError(f"MNI152 files have inconsistent shapes {sorted(shapes)}")
    return arrays, affine


def _read_cache(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _FILES}
            affine = z["affine"]
    except (OSError, KeyError, ValueError):
        return None
    ok = all(a.dtype == np.uint8 and a.shape == arrays["t1"].shape for a in arrays.values())
    return (arrays, affine) if ok and affine.shape == (4, 4) else None


def _write_cache(path: Path, arrays: dict[str, np.ndarray], affine: np.ndarray) -> None:
    """Store the derived arrays as an ``.npz`` (atomic); an unwritable cache is ignored."""
    try:
        atomic_write(path, lambda fh: np.savez(fh, affine=affine, **arrays))
    except InputError:
        pass  # an unwritable cache only costs the 0.5 s NIfTI decode next time


def _to_volume(arrays: dict[str, np.ndarray], affine: np.ndarray) -> BrainVolume:
    mask = arrays["t1"] > 0
    maskf = mask.astype(np.float32)
    gm = arrays["gm"].astype(np.float32) / 255.0 * maskf
    wm = arrays["wm"].astype(np.float32) / 255.0 * maskf
    wm = np.minimum(wm, maskf - gm)  # guarantees gm + wm <= mask, hence csf + gm + wm == mask
    csf = np.clip(maskf - gm - wm, 0.0, 1.0)
    t1 = arrays["t1"].astype(np.float32) / 255.0
    for a in (t1, gm, wm, csf, mask, affine):
        a.setflags(write=False)
    return BrainVolume(t1=t1, gm=gm, wm=wm, csf=csf, mask=mask, affine=affine)


def load_brain(use_cache: bool = True) -> BrainVolume:
    """Load the MNI152 2009 tissue fractions (cached on disk and in memory).

    Returns a :class:`BrainVolume` of (197, 233, 189) float32 arrays in [0, 1] at 1 mm.
    The disk cache is ``cache_dir() / "mni152_2009_sym_v1.npz"`` (read without pickle).
    Raises InputError when nilearn's template files are missing.
    """
    if not use_cache:
        return _to_volume(*_read_nifti(mni_files()))
    return _load_cached(str(cache_dir() / _CACHE_NAME))


@functools.lru_cache(maxsize=2)
def _load_cached(path: str) -> BrainVolume:
    cached = _read_cache(Path(path)) if Path(path).is_file() else None
    if cached is None:
        cached = _read_nifti(mni_files())
        _write_cache(Path(path), *cached)
    return _to_volume(*cached)
