"""Torch datasets of simulated MR images of the real MNI152 anatomy (2D slices, 3D patches).

Pipeline per item (all at the target resolution, so it is cheap):
    tissue fractions (csf, gm, wm) of one section, precomputed once per (orientation, size)
    -> optional lesions (:mod:`meddiff.data.lesions`), replacing white matter
    -> optional random affine + elastic warp of all fraction maps and the lesion mask
    -> signal equation with random TR/TE/TI and +-10 % tissue T1/T2 (:mod:`meddiff.data.mri_signal`)
    -> division by the brightest pure compartment (image space [0, 1], see render_contrast)
    -> optional multiplicative bias field (median 1 inside the brain), clipped to [0, 1]
    -> optional gamma + Rician noise (:mod:`meddiff.data.augment`).

Geometry: sections are cropped to one square box around the brain (union over all sections of
that orientation, 4 mm margin), identical for every slice, then resampled to ``size`` with
antialiased bilinear interpolation (a convex filter, so fractions keep summing to the brain
fraction). The pixel size in mm is ``dataset.spacing_mm`` (axial: 189 mm field of view, so
2.95 / 1.48 / 0.74 mm at 64 / 128 / 256 px). Image rows run anterior -> posterior (axial) or
superior -> inferior (coronal, sagittal); columns run patient left -> right (neurological).

Reproducibility: every item is a pure function of (seed, split, epoch, index); ``set_epoch``
re-draws the whole training distribution each epoch. Val/test items ignore the epoch.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from meddiff.data import augment as aug
from meddiff.data.brain import load_brain, tissue_labels
from meddiff.data.lesions import LesionConfig, insert_lesions, render_lesions
from meddiff.data.mri_signal import (CONTRASTS, DEFAULT_TISSUES, jitter_tissues, render_contrast,
                                     sample_sequence)
from meddiff.data.randomize import STRONG_WARP, randomized_mr
from meddiff.data.splits import SPLITS, AxialSplit, axial_split, view_sections
from meddiff.errors import ConfigError

ORIENTATIONS = ("axial", "coronal", "sagittal")
_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
_MARGIN_MM = 4


@functools.lru_cache(maxsize=1)
def default_split() -> AxialSplit:
    """The axial slab split of the MNI152 mask with default parameters (see splits.py)."""
    return axial_split(load_brain().mask)


def _as_sections(vol: np.ndarray, orientation: str) -> np.ndarray:
    """(X, Y, Z) RAS volume -> (N, H, W) stack of sections in display orientation."""
    if orientation == "axial":
        return np.transpose(vol[:, ::-1, :], (2, 1, 0))  # (z, y anterior->posterior, x)
    if orientation == "coronal":
        return np.transpose(vol[:, :, ::-1], (1, 2, 0))  # (y, z superior->inferior, x)
    return np.transpose(vol[:, :, ::-1], (0, 2, 1))  # (x, z superior->inferior, y)


def _cube_box(mask: np.ndarray, margin: int) -> tuple[list[int], int]:
    """Start indices and side of the smallest centred square / cube (+ margin) around ``mask``."""
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))[0]
           for ax in range(mask.ndim)]
    side = max(int(i[-1] - i[0]) + 1 for i in idx) + 2 * margin
    return [(int(i[0]) + int(i[-1]) + 1) // 2 - side // 2 for i in idx], side


def _crop(stack: np.ndarray, starts: list[int], side: int) -> np.ndarray:
    """Crop the last len(starts) axes to [start, start + side), zero-padding outside the array."""
    lead = stack.ndim - len(starts)
    pads, sl = [(0, 0)] * lead, [slice(None)] * lead
    for st, n in zip(starts, stack.shape[lead:]):
        before, after = max(0, -st), max(0, st + side - n)
        pads.append((before, after))
        sl.append(slice(st + before, st + before + side))
    return np.ascontiguousarray(np.pad(stack, pads)[tuple(sl)])


@functools.lru_cache(maxsize=8)
def section_fractions(orientation: str, size: int,
                      sections: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """Fractions (N, 3, size, size) float32 (csf, gm, wm) of ``sections`` and the pixel size (mm).

    Cached in memory per (orientation, size, sections).
    """
    vol = load_brain()
    mask = _as_sections(vol.mask, orientation)
    starts, side = _cube_box(mask.any(0), _MARGIN_MM)
    idx = list(sections)
    stack = np.stack([_as_sections(v, orientation)[idx] for v in (vol.csf, vol.gm, vol.wm)], 1)
    crop = torch.from_numpy(_crop(stack, starts, side))
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    out = out.clamp_(0.0, 1.0).numpy()
    out.setflags(write=False)
    return out, side / size


def _check_common(contrasts, seed: int, size: int) -> tuple[str, ...]:
    contrasts = (contrasts,) if isinstance(contrasts, str) else tuple(contrasts)
    bad = [c for c in contrasts if c not in CONTRASTS]
    if bad or not contrasts:
        raise ConfigError(f"unknown contrasts {bad}; expected a subset of {', '.join(CONTRASTS)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("seed must be a non-negative integer")
    if size < 8:
        raise ConfigError(f"size must be >= 8, got {size}")
    return contrasts


class _Simulated(Dataset):
    """Shared simulation of one item from a (3, *spatial) fraction stack."""

    def __init__(self, split: str, contrasts: tuple[str, ...], augment: bool | None,
                 lesions: LesionConfig | None, seed: int, paired: bool,
                 augment_config: aug.AugmentConfig | None, randomize: float = 0.0):
        if not 0.0 <= randomize <= 1.0:
            raise ConfigError(f"randomize is a probability in [0, 1], got {randomize}")
        if randomize and paired:
            raise ConfigError("randomize does not apply to paired contrasts")
        self.split, self.contrasts = split, contrasts
        self.randomize = float(randomize)
        self.augment = (split in ("train", "all")) if augment is None else bool(augment)
        self.lesions = lesions
        self.seed = int(seed)
        self.paired = paired
        self.augment_config = augment_config or aug.AugmentConfig()
        self.epoch = 0
        tissues = dict(DEFAULT_TISSUES)
        if lesions is not None:
            tissues["lesion"] = lesions.tissue
        self.tissues = tissues

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the (training) distribution: items become a function of this epoch too."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` (depends on the epoch for 'train'/'all' only)."""
        epoch = self.epoch if self.split in ("train", "all") else 0
        tag = (SPLITS + ("all",)).index(self.split)
        return np.random.default_rng([self.seed, tag, epoch, int(index)])

    def _render(self, fr: np.ndarray, contrasts: tuple[str, ...], spacing: float,
                rng: np.random.Generator, healthy: bool = False) -> dict:
        """``healthy``: draw the lesions (same random stream) but leave them out."""
        gt = np.zeros(fr.shape[1:], dtype=bool)
        if self.lesions is not None:
            les, drawn = render_lesions(fr[2], fr[0], spacing, self.lesions, rng)
            if not healthy:
                fr, gt = insert_lesions(fr, les), drawn
        randomized = self.augment and self.randomize > 0 and rng.random() < self.randomize
        if self.augment:
            disp = aug.random_displacement(fr.shape[1:], rng,
                                           STRONG_WARP if randomized else self.augment_config)
            moved = aug.warp(np.concatenate([fr, gt[None].astype(np.float32)]), disp)
            fr, gt = moved[:-1], moved[-1] >= 0.5
        brain_frac = fr.sum(axis=0)
        brain = brain_frac >= 0.5
        images = ([randomized_mr(fr, spacing, rng)] if randomized else
                  [self._contrast(fr, c, brain, rng) for c in contrasts])
        wm = fr[2] + (fr[3] if fr.shape[0] > 3 else 0.0)
        return {
            "image": torch.from_numpy(np.stack(images)),
            "brain": torch.from_numpy(brain[None].astype(np.float32)),
            "tissue": torch.from_numpy(tissue_labels(fr[0], fr[1], wm, brain)),
            "lesion": torch.from_numpy((gt & brain)[None].astype(np.float32)),
        }

    def _contrast(self, fr: np.ndarray, contrast: str, brain: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
        seq = sample_sequence(contrast, rng)
        img = render_contrast(fr, seq, jitter_tissues(self.tissues, rng, 0.1))
        if not self.augment:
            return img
        bias = aug.bias_field(img.shape, rng, self.augment_config.bias)
        img = np.clip(img * (bias / np.median(bias[brain]) if brain.any() else bias), 0.0, 1.0)
        return aug.random_intensity(img, rng, self.augment_config)

    def _item(self, fr: np.ndarray, c: int, spacing: float, rng: np.random.Generator,
              healthy: bool = False) -> dict:
        """Render contrast ``self.contrasts[c]``, or all of them (in order) when paired."""
        names = self.contrasts if self.paired else (self.contrasts[c],)
        item = self._render(fr, names, spacing, rng, healthy)
        ids = [CONTRASTS.index(n) for n in names]
        item["contrast"] = torch.tensor(ids) if self.paired else ids[0]
        return item


class BrainSlices(_Simulated):
    """2D simulated MR slices of the MNI152 anatomy with leak-free axial slab splits.

    Args:
        split: 'train' | 'val' | 'test' (axial slabs of :func:`default_split`).
        size: output H = W in pixels (any size >= 8; 64, 128, 256 are typical).
        contrasts: subset of ('T1w', 'T2w', 'PDw', 'FLAIR').
        augment: random warp, bias, gamma, noise; default True for 'train', False otherwise.
        lesions: a :class:`LesionConfig` or None (healthy).
        seed: non-negative int; items are a function of (seed, split, epoch, index).
        length: items per epoch; default 8192 for 'train', sections x contrasts for val/test.
        orientation: 'axial'; 'coronal' / 'sagittal' only for 'val' / 'test' (evaluation views).
        paired: if True, 'image' holds every contrast of the same anatomy (len(contrasts), H, W)
            and 'contrast' is a tensor of their indices (for translation tasks).
        randomize: probability in [0, 1] that an augmented item is domain-randomised
            (:func:`~meddiff.data.randomize.randomized_mr`: random tissue intensities, head
            layers, resolution, strong warp; 'contrast' then names the drawn, unused contrast).

    Item: 'image' (1, H, W) float32 in [0, 1] (image space); 'brain' (1, H, W) float32 {0, 1};
    'tissue' (H, W) int64 labels 0 bg / 1 CSF / 2 GM / 3 WM (lesions count as WM);
    'lesion' (1, H, W) float32 {0, 1}; 'contrast' int index into ``CONTRASTS``;
    'section' int index of the section in the volume (axial: Z index).
    """

    def __init__(self, split: str = "train", size: int = 64, contrasts=CONTRASTS,
                 augment: bool | None = None, lesions: LesionConfig | None = None, seed: int = 0,
                 length: int | None = None, orientation: str = "axial", paired: bool = False,
                 augment_config: aug.AugmentConfig | None = None, randomize: float = 0.0):
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if orientation not in ORIENTATIONS:
            raise ConfigError(f"unknown orientation {orientation!r}; "
                              f"expected one of {', '.join(ORIENTATIONS)}")
        super().__init__(split, _check_common(contrasts, seed, size), augment, lesions, seed,
                         paired, augment_config, randomize)
        if orientation == "axial":
            self.sections = default_split().indices(split)
        else:
            self.sections = view_sections(load_brain().mask, _AXIS[orientation], split)
        self.size, self.orientation = int(size), orientation
        self.fractions, self.spacing_mm = section_fractions(orientation, self.size,
                                                            tuple(int(s) for s in self.sections))
        default = 8192 if split == "train" else len(self.sections) * len(self.contrasts)
        self.length = default if length is None else int(length)
        if self.length < 1:
            raise ConfigError("length must be >= 1")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self._get(index)

    def healthy_twin(self, index: int) -> dict:
        """Item ``index`` without its lesions: the same section, contrast, warp, sequence, bias
        and noise, so the twin differs from ``self[index]`` only inside the lesions ('lesion'
        is all zeros)."""
        return self._get(index, healthy=True)

    def _get(self, index: int, healthy: bool = False) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = self.rng(index)
        nc = len(self.contrasts)
        if self.split == "train":
            s, c = int(rng.integers(len(self.sections))), int(rng.integers(nc))
        else:
            s, c = (index // nc) % len(self.sections), index % nc
        item = self._item(self.fractions[s], c, self.spacing_mm, rng, healthy)
        item["section"] = int(self.sections[s])
        return item


@functools.lru_cache(maxsize=4)
def _whole_volume(size: int) -> tuple[np.ndarray, float]:
    """(3, size, size, size) fractions of the brain's bounding cube, axial (D, H, W) layout."""
    vol = load_brain()
    stack = np.stack([_as_sections(v, "axial") for v in (vol.csf, vol.gm, vol.wm)])
    starts, side = _cube_box(_as_sections(vol.mask, "axial"), _MARGIN_MM)
    crop = _crop(stack, starts, side)
    out = _resample3d(crop, (size,) * 3)
    return out, side / size


def _resample3d(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    t = torch.from_numpy(x)[None]
    mode = "area" if all(o <= i for o, i in zip(shape, x.shape[1:])) else "trilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(t, size=shape, mode=mode, **kw)[0].clamp_(0.0, 1.0).numpy()
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _resampled_volume(spacing_mm: float) -> np.ndarray:
    """(3, D, H, W) axial-layout fractions at isotropic ``spacing_mm`` (>= 1) by area averaging."""
    vol = load_brain()
    stack = np.ascontiguousarray(np.stack([_as_sections(v, "axial")
                                           for v in (vol.csf, vol.gm, vol.wm)]))
    if spacing_mm == 1.0:
        stack.setflags(write=False)
        return stack
    shape = tuple(max(1, int(s // spacing_mm)) for s in stack.shape[1:])
    return _resample3d(stack, shape)


class BrainPatches3D(_Simulated):
    """3D simulated MR volumes / patches of the MNI152 anatomy, layout (1, D, H, W).

    Two modes:
      * ``spacing_mm=None``: the whole brain's bounding cube resampled to ``size``^3
        (e.g. 32^3 at ~5.9 mm). It spans every axial slab, so only ``split='all'`` is allowed
        (for unconditional 3D priors judged by generative metrics, not held-out anatomy).
      * ``spacing_mm >= 1``: ``size``^3 patches at ~that isotropic spacing (area-averaged to an
        integer grid; the exact value is ``dataset.spacing_mm``) whose axial extent lies
        entirely inside one contiguous run of the split's axial slices; a ConfigError says so
        when the split's slabs are too thin (val: 10 mm, test: 14 mm deep).

    D runs inferior -> superior; H, W as in :class:`BrainSlices` axial images. Other arguments
    and the item dict are as in :class:`BrainSlices` with one more spatial axis.
    """

    def __init__(self, split: str = "all", size: int = 32, spacing_mm: float | None = None,
                 contrasts=CONTRASTS, augment: bool | None = None,
                 lesions: LesionConfig | None = None, seed: int = 0, length: int | None = None,
                 paired: bool = False, augment_config: aug.AugmentConfig | None = None):
        contrasts = _check_common(contrasts, seed, size)
        if spacing_mm is None and split != "all":
            raise ConfigError("whole-brain volumes cross the val/test slabs: use split='all' "
                              "or give spacing_mm for slab-respecting patches")
        if spacing_mm is not None and (split not in SPLITS or spacing_mm < 1.0):
            raise ConfigError("patch mode needs split in train/val/test and spacing_mm >= 1")
        super().__init__(split, contrasts, augment, lesions, seed, paired, augment_config)
        self.size, self.whole = int(size), spacing_mm is None
        if self.whole:
            self.volume, self.spacing_mm = _whole_volume(self.size)
            self.starts = np.zeros((1,), dtype=int)
        else:
            self.volume = _resampled_volume(float(spacing_mm))
            self.spacing_mm = load_brain().mask.shape[2] / self.volume.shape[1]
            self.starts = self._valid_starts(default_split(), float(spacing_mm))
        nc = len(self.contrasts)
        default = 1024 if split in ("train", "all") else 16 * nc
        self.length = default if length is None else int(length)
        if self.length < 1:
            raise ConfigError("length must be >= 1")

    def _valid_starts(self, plan: AxialSplit, sp: float) -> np.ndarray:
        """Patch starts j along D whose source slices [floor(j N/M), ceil((j+size) N/M)) fit."""
        n_src, n_out = load_brain().mask.shape[2], self.volume.shape[1]
        j = np.arange(0, n_out - self.size + 1)
        lo = np.floor(j * n_src / n_out)
        hi = np.ceil((j + self.size) * n_src / n_out)
        ok = np.zeros_like(j, dtype=bool)
        for a, b in plan.intervals(self.split):
            ok |= (lo >= a) & (hi <= b)
        if not ok.any():
            longest = max(b - a for a, b in plan.intervals(self.split))
            raise ConfigError(f"a {self.size}-voxel patch at {sp} mm does not fit in the "
                              f"{self.split} slabs (longest run {longest} mm)")
        return j[ok]

    def __len__(self) -> int:
        return self.length

    def _patch(self, rng: np.random.Generator) -> np.ndarray:
        z0 = int(self.starts[rng.integers(len(self.starts))])
        slab = self.volume[:, z0:z0 + self.size]
        if not self.whole:
            brain = np.argwhere(slab.sum(0).max(0) > 0.5)  # (H, W) positions with brain
            cy, cx = brain[rng.integers(len(brain))]
            h, w = slab.shape[2:]
            y0 = int(np.clip(cy - self.size // 2, 0, max(h - self.size, 0)))
            x0 = int(np.clip(cx - self.size // 2, 0, max(w - self.size, 0)))
            slab = slab[:, :, y0:y0 + self.size, x0:x0 + self.size]
            pad = [(0, 0), (0, 0)] + [(0, self.size - n) for n in slab.shape[2:]]
            slab = np.pad(slab, pad)
        return np.ascontiguousarray(slab, dtype=np.float32)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = self.rng(index)
        nc = len(self.contrasts)
        c = int(rng.integers(nc)) if self.split in ("train", "all") else index % nc
        return self._item(self._patch(rng), c, self.spacing_mm, rng)


__all__ = ["BrainSlices", "BrainPatches3D", "default_split", "section_fractions", "ORIENTATIONS"]
