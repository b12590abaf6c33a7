"""Training data from the user's own files: ``data: {dataset: files, paths: [GLOB, ...]}``.

Pipeline, once per file (then cached, see :func:`load_file`):

1. discovery: every glob of ``paths`` (``~`` expanded, ``**`` recursive); a matched folder is a
   DICOM series. Globs that match nothing are named (a warning, or a ConfigError if none match);
2. split by subject: the files (``split_by: file``) or their folders (``split_by: folder``) are
   ordered by a seeded hash and the first ``round(val_fraction * n)`` go to validation
   (at least one when ``val_fraction > 0`` and there are two or more), so no subject is in both;
3. read: NIfTI, DICOM (file or series folder), PNG, TIFF, NPY with
   :func:`~meddiff.data.readers.load_image`; fastMRI HDF5 with
   :func:`~meddiff.data.kspace_io.load_kspace` (fully sampled files only), images by the centred
   orthonormal inverse FFT (Zbontar et al. 2018, arXiv:1811.08839, Sec. 3): the
   root-sum-of-squares magnitude (Roemer et al. 1990, Magn. Reson. Med. 16:192, Eq. 27), or
   for ``channels: complex`` the single-coil complex image as (real, imaginary) channels;
4. 2D: the sections the inference commands see (:func:`~meddiff.data.slicing.model_frame`:
   reoriented to RAS+ axial sections when the file has geometry), or every slice along an
   explicit ``axis``; 3D: the volume with ``axis`` (default the last) moved first (D, H, W);
5. intensity, per file, to image space: ``percentile`` maps the ``percentiles`` (lo, hi) of the
   whole file to 0 and 1 (:func:`~meddiff.data.intensity.normalize_percentile`); ``ct_window``
   maps the HU ``window`` [lo, hi] to [0, 1]; ``none`` only clips to [0, 1]. Complex images are
   divided by the hi percentile of their magnitude, magnitudes clipped to 1 (each channel in
   [-1, 1], the model-space tensor of ``intensity: complex`` priors);
6. 2D: slices whose foreground (magnitude > ``foreground_level``) covers less than
   ``min_foreground`` of the slice are dropped;
7. ``fit: resize`` only: bilinear (2D) / trilinear (3D) resampling to the model size.

A file that cannot be used is skipped with one warning line naming it (logger
``meddiff.data.files``). Items: ``fit: crop`` takes an ``S`` x ``S`` (x ``S``) window at the
native pixel size (no resampling; images smaller than ``S`` are zero-padded), placed at random
(training with ``augment``; up to 8 draws, the first whose foreground reaches
``min_foreground``, else the one with most foreground) or centred (validation). Every item is a
function of ``(seed, split, epoch, index)``.

Cache: the decoded, normalised stack of each file is one ``.npy`` (written atomically, read
with ``allow_pickle=False`` and memory-mapped) under ``$MEDDIFF_CACHE/files`` (default
``~/.cache/meddiff/files``), keyed by the path, its modification time and size (every file of
a DICOM folder) and the decoding options.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from meddiff.data.brain import cache_dir
from meddiff.data.checks import input_error
from meddiff.data.crops import window, window_starts
from meddiff.data.intensity import normalize_percentile, normalize_window
from meddiff.data.kspace_io import load_kspace
from meddiff.data.readers import load_image
from meddiff.data.slicing import model_frame, to_2d_slices
from meddiff.data.writers import atomic_write
from meddiff.errors import ConfigError, InputError, MeddiffError
from meddiff.physics.coils import rss
from meddiff.physics.mri import ifft2c

_log = logging.getLogger(__name__)

KSPACE_SUFFIXES = (".h5", ".hdf5")
SPLIT_FILES = {"train": "train_files.txt", "val": "val_files.txt"}  # written into the run dir
CACHE_VERSION = 1
_TRIES = 8  # crop draws per item in search of foreground


@dataclass(frozen=True)
class FilesOptions:
    """Options of the files dataset (the ``data`` section of a run config, with
    ``dataset: files``); see the module docstring for the pipeline.

    ``paths``: globs of files / DICOM folders. ``axis``: the slice axis of volumes as stored;
    default (None) the sections the inference commands cut (:func:`~meddiff.data.slicing.
    model_frame`: files with geometry reoriented to RAS+ and cut axially, others along their
    last axis). ``dims``: 2 (slices) or 3 (patches); ``channels``: ``magnitude`` (1 channel) or
    ``complex`` (2 channels, fastMRI single-coil k-space only); both default to what the model
    asks for (``model.net.spatial_dims``, ``model.intensity``). ``normalize``: ``percentile``
    (``percentiles`` lo, hi in %), ``ct_window`` (``window`` lo, hi in HU) or ``none``.
    ``fit``: ``crop`` (native pixel size) or ``resize``. ``val_fraction``: the validation
    share of subjects (``split_by`` file or folder). ``min_foreground`` (fraction of the slice)
    and ``foreground_level`` (image-space value): the background filter; 0 disables it.
    ``cache``: keep decoded files under the cache directory.
    """

    paths: tuple[str, ...] = ()
    axis: int | None = None
    dims: Literal[2, 3] | None = None
    channels: Literal["magnitude", "complex"] | None = None
    normalize: Literal["percentile", "ct_window", "none"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] = (-1000.0, 1000.0)
    fit: Literal["crop", "resize"] = "crop"
    val_fraction: float = 0.1
    split_by: Literal["file", "folder"] = "file"
    min_foreground: float = 0.1
    foreground_level: float = 0.1
    cache: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.percentiles
        checks = [
            (self.axis is None or -3 <= self.axis <= 2,
             f"axis must be in -3..2 or null, got {self.axis}"),
            (0.0 <= lo < hi <= 100.0, f"percentiles must be 0 <= lo < hi <= 100, got {lo}, {hi}"),
            (self.window[0] < self.window[1], f"window must be [lo, hi] with lo < hi, "
                                              f"got {list(self.window)}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), "
                                             f"got {self.val_fraction}"),
            (0.0 <= self.min_foreground <= 1.0, "min_foreground must be in [0, 1]"),
            (0.0 <= self.foreground_level < 1.0, "foreground_level must be in [0, 1)"),
            (not (self.channels == "complex" and self.normalize == "ct_window"),
             "normalize ct_window applies to magnitude images, not complex ones"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def n_channels(self) -> int:
        return 2 if self.channels == "complex" else 1


# ---------------------------------------------------------------------------------------------
# discovery and split


def discover(patterns: Sequence[str]) -> list[Path]:
    """The files and folders matched by ``patterns`` (globs, ``**`` recursive), absolute,
    sorted, without duplicates. Globs matching nothing are named in a warning; a ConfigError
    names them when none matches anything."""
    if not patterns:
        raise ConfigError("dataset files needs data.paths (globs of files or DICOM folders)")
    found: set[str] = set()
    empty = []
    for pattern in patterns:
        hits = glob.glob(os.path.expanduser(pattern), recursive=True)
        found.update(os.path.abspath(h) for h in hits)
        if not hits:
            empty.append(pattern)
    if not found:
        raise ConfigError(f"data.paths: nothing matches {', '.join(repr(p) for p in empty)}")
    for pattern in empty:
        _log.warning("data.paths: %r matches nothing", pattern)
    return [Path(p) for p in sorted(found)]


def _subject(path: Path, split_by: str) -> str:
    return str(path.parent if split_by == "folder" else path)


def split_files(files: Sequence[Path], val_fraction: float, seed: int,
                split_by: str = "file") -> tuple[list[Path], list[Path]]:
    """(train, validation) files, split by subject (a file, or its folder with ``split_by``
    ``folder``): subjects ordered by SHA-256 of ``"seed:subject"``, the first
    ``round(val_fraction * n)`` (at least 1 when ``val_fraction > 0`` and ``n >= 2``, at most
    ``n - 1``) are validation subjects. Deterministic given (files, seed)."""
    subjects = sorted({_subject(f, split_by) for f in files})
    order = sorted(subjects, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n = len(subjects)
    k = 0 if val_fraction == 0 or n < 2 else min(max(round(val_fraction * n), 1), n - 1)
    val = set(order[:k])
    return ([f for f in files if _subject(f, split_by) not in val],
            [f for f in files if _subject(f, split_by) in val])


def write_split(out_dir: str | os.PathLike, train: Sequence[Path], val: Sequence[Path]) -> None:
    """Write ``train_files.txt`` and ``val_files.txt`` (one path a line) into ``out_dir``."""
    for name, files in (("train", train), ("val", val)):
        text = "".join(f"{f}\n" for f in files).encode("utf-8")
        atomic_write(Path(out_dir) / SPLIT_FILES[name], lambda fh, t=text: fh.write(t))


# ---------------------------------------------------------------------------------------------
# decoding one file


def _normalize(stack: np.ndarray, o: FilesOptions) -> np.ndarray:
    """Per-file intensity normalisation of a (N, C, *spatial) stack (module docstring, 5.)."""
    if o.n_channels == 2:
        mag = np.hypot(stack[:, 0], stack[:, 1])
        scale = float(np.percentile(mag, o.percentiles[1])) if o.normalize == "percentile" else 1.0
        scale = scale if scale > 0 else 1.0
        over = np.maximum(mag / scale, 1.0)[:, None]
        return (stack / scale / over).astype(np.float32)
    if o.normalize == "percentile":
        return normalize_percentile(stack, *o.percentiles)[0]
    if o.normalize == "ct_window":
        return normalize_window(stack, o.window)
    return np.clip(stack, 0.0, 1.0).astype(np.float32)


def magnitude(stack: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) -> (N, *spatial): the image (C = 1) or |real + i imag| (C = 2)."""
    return stack[:, 0] if stack.shape[1] == 1 else np.hypot(stack[:, 0], stack[:, 1])


def _kspace_images(path: Path, complex_images: bool) -> np.ndarray:
    """(slices, C, H, W) float32 images of a fully sampled fastMRI HDF5 file (module doc, 3.)."""
    ks = load_kspace(path)
    hw = ks.kspace.shape[-2:]
    if ks.mask is not None and not np.all(np.broadcast_to(ks.mask, hw) > 0):
        raise input_error(path, "undersampled k-space (its mask has zeros); training needs "
                                "fully sampled files")
    images = ifft2c(torch.from_numpy(ks.kspace))
    if not complex_images:
        return rss(images).numpy().astype(np.float32)
    if images.shape[1] != 1:
        raise input_error(path, f"multi-coil k-space ({images.shape[1]} coils): complex "
                                "training images need single-coil files (or channels: magnitude)")
    return torch.cat([images.real, images.imag], dim=1).numpy().astype(np.float32)


def _read(path: Path, o: FilesOptions) -> np.ndarray:
    """The file as a raw (N, C, *spatial) float32 stack (2D: slices; 3D: one volume)."""
    dims, complex_images = o.dims or 2, o.channels == "complex"
    if path.suffix.lower() in KSPACE_SUFFIXES:
        if dims == 3:
            raise input_error(path, "k-space files give 2D slices, not 3D volumes")
        return _kspace_images(path, complex_images)
    if complex_images:
        raise input_error(path, "complex training images come from fastMRI k-space files "
                                f"({', '.join(KSPACE_SUFFIXES)}) only")
    image = load_image(path)
    arr = image.array
    if dims == 2:
        sections = model_frame(image).sections(arr) if o.axis is None else \
            to_2d_slices(arr, o.axis)
        return sections[:, None]
    if arr.ndim != 3:
        raise input_error(path, f"a 2D image {arr.shape}; 3D patches need volumes")
    return np.moveaxis(arr, -1 if o.axis is None else o.axis, 0)[None, None].astype(np.float32)


def _resize(stack: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(stack))
    if x.dim() == 4:
        out = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False)
    else:
        out = F.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=False)
    return out.numpy() if stack.shape[1] == 2 else out.clamp(0.0, 1.0).numpy()


def decode(path: str | os.PathLike, o: FilesOptions, size: int) -> np.ndarray:
    """One file -> image space float32: (N, C, H, W) slices (2D, background-free ones only)
    or (1, C, D, H, W) (3D), at the native size (``fit: crop``) or ``size`` (``fit: resize``).
    Raises InputError (one line naming the file) when the file cannot be used."""
    path = Path(path)
    stack = _normalize(_read(path, o), o)
    if (o.dims or 2) == 2 and o.min_foreground > 0:
        fraction = (magnitude(stack) > o.foreground_level).mean(axis=(-2, -1))
        stack = stack[fraction >= o.min_foreground]
        if not len(stack):
            raise input_error(path, f"no slice has foreground (> {o.foreground_level}) on at "
                                    f"least {o.min_foreground:.0%} of its pixels")
    if o.fit == "resize":
        stack = _resize(stack, size)
    return np.ascontiguousarray(stack, dtype=np.float32)


def _stamp(path: Path) -> list:
    """(name, mtime_ns, size) of the file, or of every file of a folder."""
    entries = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in entries]


def cache_path(path: str | os.PathLike, o: FilesOptions, size: int) -> Path:
    """The cache file of ``path`` decoded with ``o`` (see the module docstring)."""
    path = Path(os.path.abspath(path))
    options = {k: v for k, v in asdict(o).items() if k not in ("paths", "val_fraction",
                                                                "split_by", "cache")}
    key = {"version": CACHE_VERSION, "path": str(path), "stamp": _stamp(path),
           "options": options, "size": size if o.fit == "resize" else None}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]
    return cache_dir() / "files" / f"{digest}.npy"


def load_file(path: str | os.PathLike, o: FilesOptions, size: int) -> np.ndarray:
    """:func:`decode` through the cache (``o.cache``): a hit is read memory-mapped without
    pickle; a miss decodes and writes the cache atomically."""
    if not o.cache:
        return decode(path, o, size)
    try:
        where = cache_path(path, o, size)
    except OSError as exc:
        raise input_error(path, f"cannot read file ({exc.strerror or exc})") from None
    if where.is_file():
        try:
            return np.load(where, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            _log.warning("%s: damaged cache file, decoding again", where)
    stack = decode(path, o, size)
    atomic_write(where, lambda fh: np.save(fh, stack, allow_pickle=False))
    return stack


# ---------------------------------------------------------------------------------------------
# the dataset


class FilesDataset(Dataset):
    """The user's files as a map-style dataset (module docstring).

    Args: ``files`` (paths, e.g. one side of :func:`split_files`), ``options``, ``size`` (the
    model's image size S), ``split`` ('train': ``length`` random items; otherwise every slice /
    volume once, centred), ``augment`` (random window positions), ``seed``.

    Item: ``image`` float32 (C, S, S) or (C, S, S, S): magnitude in [0, 1] (image space), or
    (real, imaginary) in [-1, 1]. Files that cannot be used are skipped with a warning;
    ``files`` lists those kept, ``skipped`` the others.
    """

    def __init__(self, files: Sequence[Path], options: FilesOptions, size: int,
                 split: str = "train", augment: bool = True, seed: int = 0,
                 length: int | None = None) -> None:
        if size < 8:
            raise ConfigError(f"size must be >= 8, got {size}")
        self.options, self.size, self.split = options, int(size), split
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.files, self.stacks, self.skipped = [], [], []
        for path in files:
            try:
                stack = load_file(path, options, self.size)
            except MeddiffError as err:
                _log.warning("skipped %s", err)
                self.skipped.append(Path(path))
                continue
            self.files.append(Path(path))
            self.stacks.append(stack)
        self.ends = np.cumsum([len(s) for s in self.stacks], dtype=np.int64)
        self.units = int(self.ends[-1]) if len(self.ends) else 0
        train = split == "train"
        self.length = (length or self.units) if train else self.units
        if train and not self.units:
            raise InputError(f"data.paths: none of the {len(files)} training file(s) is usable "
                             "(each one is named in a warning above)")

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the training items: they become a function of this epoch too."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _unit(self, j: int) -> np.ndarray:
        f = int(np.searchsorted(self.ends, j, side="right"))
        return self.stacks[f][j - (int(self.ends[f - 1]) if f else 0)]

    def _crop(self, arr: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        best, best_fg = None, -1.0
        for _ in range(_TRIES if rng is not None else 1):
            crop = window(arr, window_starts(arr.shape[1:], self.size, rng), self.size)
            fg = float((magnitude(crop[None]) > self.options.foreground_level).mean())
            if fg > best_fg:
                best, best_fg = crop, fg
            if fg >= self.options.min_foreground:
                break
        return best

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        train = self.split == "train"
        rng = np.random.default_rng([self.seed, int(not train), self.epoch if train else 0,
                                     int(index)])
        arr = self._unit(int(rng.integers(self.units)) if train else index)
        if self.options.fit == "resize":
            return {"image": torch.from_numpy(np.array(arr, dtype=np.float32))}
        image = self._crop(arr, rng if train and self.augment else None)
        return {"image": torch.from_numpy(image)}


__all__ = ["FilesOptions", "FilesDataset", "discover", "split_files", "write_split", "decode",
           "load_file", "cache_path", "window", "magnitude", "SPLIT_FILES"]
