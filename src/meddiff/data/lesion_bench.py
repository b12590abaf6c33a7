"""The fixed, seeded lesion benchmark of the detection methods (D1-D4) and the classifier data.

Benchmark (:func:`lesion_bench`): held-out axial slabs (``'val'`` for choosing thresholds and
hyper-parameters, ``'test'`` for the reported numbers; :mod:`meddiff.data.splits`) of
:class:`~meddiff.data.datasets.BrainSlices` without augmentation, with lesions of the preset
:data:`LESIONS_BENCH`: 1-2 large (radius 6-12 mm), elongated, irregular lesions anywhere in the
white matter, of a long-T2 tumour / oedema-like tissue (:data:`BENCH_TISSUE`). Training never
sees these: the diffusion priors are trained on healthy images and the noise-aware classifier of
D4 / D1 on :data:`LESIONS_CLASSIFIER` (small, round, smooth, periventricular lesions of the
default lesion tissue, on the training slabs), so size, shape, placement and contrast all differ.
At 64 px one pixel is 2.95 mm, so lesions of the training presets' size would be a few pixels;
the benchmark lesions cover ~30-40 pixels.

Every item is a pure function of ``(seed, split, index)``; items whose lesion mask is empty (no
valid centre) are dropped, so the same arguments always give the same tensors.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from meddiff.data.datasets import BrainSlices
from meddiff.data.lesions import LESIONS_TRAIN, LesionConfig
from meddiff.data.mri_signal import CONTRASTS, Tissue
from meddiff.errors import ConfigError

BENCH_SEED = 4
BENCH_CONTRASTS = ("T2w", "FLAIR")
#: Long-T2 lesion tissue (vasogenic oedema / tumour-like): brighter on T2w than the training
#: lesion tissue (``DEFAULT_TISSUES['lesion']``), the brightest compartment on FLAIR.
BENCH_TISSUE = Tissue(pd=0.86, t1=1500.0, t2=230.0)
#: Benchmark lesions: larger on average, more elongated and irregular than any training
#: preset, anywhere in deep white matter, of :data:`BENCH_TISSUE`.
LESIONS_BENCH = LesionConfig(count=(1, 2), radius_mm=(6.0, 12.0), elongation=(1.0, 1.8),
                             irregularity=0.3, tissue=BENCH_TISSUE)
#: Classifier training lesions: the default (training) lesion tissue, rounder and smaller than
#: the benchmark's (radius 4-9 mm), centred where white matter >= 0.6 (at 64 px, partial volume
#: leaves few pixels at the default 0.9). ``LESIONS_TRAIN``'s 2.5-5 mm lesions cover 1-11
#: pixels at 64 px: a classifier trained on them stayed at chance (loss ln 2 after 1500 steps).
LESIONS_CLASSIFIER = replace(LESIONS_TRAIN, count=(1, 2), radius_mm=(4.0, 9.0),
                             elongation=(1.0, 1.4), irregularity=0.2, csf_distance_mm=(0.0, 20.0),
                             wm_threshold=0.6)
HEALTHY, LESION = 0, 1


@dataclass
class LesionBench:
    """Benchmark images with ground truth; unpacks as ``images, lesions, brains = bench``.

    images: (N, 1, S, S) float32 in image space [0, 1]; lesions: (N, 1, S, S) bool (non-empty,
    inside the brain); brains: (N, 1, S, S) bool; contrasts: (N,) int64 indices into
    ``CONTRASTS``; sections: (N,) int64 axial section indices of the MNI152 volume.
    """

    images: torch.Tensor
    lesions: torch.Tensor
    brains: torch.Tensor
    contrasts: torch.Tensor
    sections: torch.Tensor

    def __iter__(self):
        return iter((self.images, self.lesions, self.brains))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, contrast: str) -> "LesionBench":
        """The items of one contrast (e.g. ``'FLAIR'``)."""
        if contrast not in CONTRASTS:
            raise ConfigError(f"unknown contrast {contrast!r}; expected one of {', '.join(CONTRASTS)}")
        keep = self.contrasts == CONTRASTS.index(contrast)
        return LesionBench(*(v[keep] for v in (self.images, self.lesions, self.brains,
                                               self.contrasts, self.sections)))


def _bench_dataset(split: str, contrasts: tuple[str, ...], size: int, seed: int, repeats: int,
                   lesions: LesionConfig) -> BrainSlices:
    if split not in ("val", "test"):
        raise ConfigError(f"the lesion benchmark has splits 'val' and 'test', got {split!r}")
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    ds = BrainSlices(split, size=size, contrasts=contrasts, augment=False, lesions=lesions,
                     seed=seed)
    ds.length = len(ds) * int(repeats)  # each pass over (section, contrast) draws new lesions
    return ds


@functools.lru_cache(maxsize=8)
def _cached(split: str, contrasts: tuple[str, ...], size: int, seed: int, repeats: int,
            lesions: LesionConfig) -> LesionBench:
    ds = _bench_dataset(split, contrasts, size, seed, repeats, lesions)
    items = [ds[i] for i in range(len(ds))]
    items = [it for it in items if bool(it["lesion"].any())]
    if not items:
        raise ConfigError(f"no {split} item received a lesion; check the lesion configuration")
    return LesionBench(images=torch.stack([it["image"] for it in items]).float(),
                       lesions=torch.stack([it["lesion"] for it in items]) > 0.5,
                       brains=torch.stack([it["brain"] for it in items]) > 0.5,
                       contrasts=torch.tensor([it["contrast"] for it in items], dtype=torch.int64),
                       sections=torch.tensor([it["section"] for it in items], dtype=torch.int64))


def lesion_bench(split: str = "test", contrasts=BENCH_CONTRASTS, size: int = 64,
                 seed: int = BENCH_SEED, repeats: int = 4,
                 lesions: LesionConfig = LESIONS_BENCH) -> LesionBench:
    """The lesion benchmark of ``split`` ('val' | 'test').

    Every (section, contrast) of the split's slab appears ``repeats`` times with independently
    drawn lesions (test: 14 sections, val: 10; so 112 / 80 items for two contrasts at the
    defaults, minus the items without a lesion). Deterministic in all arguments; results are
    cached in memory and returned as clones, so callers may modify them.
    """
    contrasts = (contrasts,) if isinstance(contrasts, str) else tuple(contrasts)
    b = _cached(split, contrasts, int(size), int(seed), int(repeats), lesions)
    return LesionBench(*(v.clone() for v in (b.images, b.lesions, b.brains, b.contrasts,
                                             b.sections)))


def healthy_bench(split: str = "test", contrasts=BENCH_CONTRASTS, size: int = 64,
                  seed: int = BENCH_SEED) -> LesionBench:
    """The same sections without lesions (e.g. image-level false-positive checks); lesion masks
    are all False."""
    contrasts = (contrasts,) if isinstance(contrasts, str) else tuple(contrasts)
    ds = BrainSlices(split, size=size, contrasts=contrasts, augment=False, seed=seed)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items]).float()
    return LesionBench(images=images, lesions=torch.zeros_like(images, dtype=torch.bool),
                       brains=torch.stack([it["brain"] for it in items]) > 0.5,
                       contrasts=torch.tensor([it["contrast"] for it in items], dtype=torch.int64),
                       sections=torch.tensor([it["section"] for it in items], dtype=torch.int64))


class ClassifierData(Dataset):
    """Healthy-vs-lesion training images for the noise-aware classifier (D4 / D1).

    Item ``i``: ``{'image': (1, S, S) float32 in [0, 1], 'label': int64 (0 healthy, 1 lesion),
    'lesion': (1, S, S) float32}``; even ``i`` are lesion images, odd ``i`` healthy ones. Both
    come from the *training* slabs with the training augmentation. Pair ``k = i // 2`` is the
    first of a seeded sequence of draws whose lesion mask is non-empty, and its healthy image is
    that draw's :meth:`~meddiff.data.datasets.BrainSlices.healthy_twin` (same section, contrast,
    warp, sequence and noise). So the label is predictable only from the lesion.
    """

    def __init__(self, size: int = 64, contrasts=BENCH_CONTRASTS, seed: int = 0,
                 length: int = 65536, lesions: LesionConfig = LESIONS_CLASSIFIER,
                 max_tries: int = 1000):
        self.lesion_ds = BrainSlices("train", size=size, contrasts=contrasts, lesions=lesions,
                                     seed=seed, length=2 ** 31 - 1)
        self.length, self.seed, self.max_tries = int(length), int(seed), int(max_tries)

    def __len__(self) -> int:
        return self.length

    def _draw_index(self, pair: int) -> tuple[int, dict]:
        """The first draw of pair ``pair`` whose lesion mask is non-empty (index, item)."""
        rng = np.random.default_rng([self.seed, 7, pair])
        for _ in range(self.max_tries):
            j = int(rng.integers(0, 2 ** 31 - 1))
            item = self.lesion_ds[j]
            if bool(item["lesion"].any()):
                return j, item
        raise ConfigError(f"no lesion in {self.max_tries} draws; check the lesion configuration")

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        j, item = self._draw_index(index // 2)
        if index % 2:
            item = self.lesion_ds.healthy_twin(j)
        label = LESION if index % 2 == 0 else HEALTHY
        return {"image": item["image"], "label": torch.tensor(label, dtype=torch.int64),
                "lesion": item["lesion"]}
