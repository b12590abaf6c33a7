"""The built-in training data of ``meddiff train``: simulated anatomy, training slabs only.

Every dataset is map-style and seeded (items are a function of ``(seed, epoch, index)``), so
the trainer's resume is exact. Items are dicts of tensors in *image space*; the objectives map
them to model space.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from torch.utils.data import Dataset

from meddiff.data.datasets import BrainPatches3D, BrainSlices
from meddiff.data.lesion_bench import LESIONS_BENCH, LESIONS_CLASSIFIER, ClassifierData
from meddiff.data.lesions import LESIONS_EVAL, LESIONS_TRAIN, LesionConfig
from meddiff.data.modalities import ComplexBrainSlices, HeadCTSlices
from meddiff.data.mri_signal import CONTRASTS
from meddiff.errors import ConfigError

#: Training lesions of the segmentation networks: the lesion benchmark's family
#: (:data:`~meddiff.data.lesion_bench.LESIONS_BENCH`: radius 6-12 mm, i.e. 2-4 px at 64 px,
#: elongated, irregular, long-T2 tissue, anywhere in white matter) drawn on the *training*
#: slabs, with 0-2 lesions so that empty slices teach the model to say "none". Segmentation is
#: supervised, so training and test lesions may share a family; the anatomy is held out.
SEG_LESIONS = replace(LESIONS_BENCH, count=(0, 2))
#: lesion presets by name (:mod:`meddiff.data.lesions`, :mod:`meddiff.data.lesion_bench`)
LESION_PRESETS: dict[str, LesionConfig] = {
    "train": LESIONS_TRAIN, "eval": LESIONS_EVAL, "classifier": LESIONS_CLASSIFIER,
    "segmentation": SEG_LESIONS}

Dataset2D = Literal["brain_slices", "brain_patches3d", "head_ct_slices", "complex_brain_slices",
                    "lesion_pairs"]


@dataclass(frozen=True)
class DataConfig:
    """Built-in training data (simulated anatomy of the training slabs; the images are
    ``S`` px, ``S`` the model's image size).

    ``brain_slices``: 2D axial MR slices, items ``image`` (1, S, S) in [0, 1], ``brain``,
    ``lesion`` (1, S, S) {0, 1}, ``contrast`` (int), ``section``; with ``lesions`` (a preset of
    :data:`LESION_PRESETS`) the slices carry synthetic lesions and ``lesion`` is their mask.
    ``brain_patches3d``: cubes (1, S, S, S) at ``spacing_mm``. ``head_ct_slices``: head-CT-like
    slices (1, S, S), image space ``(HU + 1000) / 2000``. ``complex_brain_slices``: MR slices
    with smooth random phase (2, S, S), real and imaginary channels. ``lesion_pairs``: the
    noise-aware classifier's data (:class:`~meddiff.data.lesion_bench.ClassifierData`): even
    items carry a lesion of the ``lesions`` preset (``label`` 1), odd items are their healthy
    twins (``label`` 0).
    """

    dataset: Dataset2D = "brain_slices"
    contrasts: tuple[str, ...] = CONTRASTS
    augment: bool = True
    length: int = 8192
    seed: int = 0
    spacing_mm: float = 2.0
    lesions: Literal["train", "eval", "classifier", "segmentation"] | None = None

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ConfigError(f"length must be >= 1, got {self.length}")
        if self.dataset == "lesion_pairs" and self.lesions is None:
            raise ConfigError("dataset lesion_pairs needs a lesions preset")
        if self.lesions is not None and self.dataset not in ("brain_slices", "lesion_pairs"):
            raise ConfigError(f"lesions apply to brain_slices and lesion_pairs, not {self.dataset}")

    @property
    def spatial_dims(self) -> int:
        return 3 if self.dataset == "brain_patches3d" else 2


def make_dataset(d: DataConfig, size: int, split: str = "train", augment: bool | None = None,
                 length: int | None = None) -> Dataset:
    """The dataset ``d`` at ``size`` px. ``split`` 'val' / 'test' gives the held-out slabs
    (for validation metrics), by default without augmentation and with every section and
    contrast once; ``augment`` / ``length`` override that."""
    train = split == "train"
    augment = (d.augment and train) if augment is None else augment
    length = length if length is not None else (d.length if train else None)
    lesions = LESION_PRESETS[d.lesions] if d.lesions is not None else None
    if d.dataset == "lesion_pairs":
        if not train:
            raise ConfigError("lesion_pairs is training data only")
        return ClassifierData(size=size, contrasts=d.contrasts, seed=d.seed, length=d.length,
                              lesions=lesions)
    if d.dataset == "head_ct_slices":
        return HeadCTSlices(split, size=size, augment=augment, seed=d.seed, length=length)
    if d.dataset == "complex_brain_slices":
        return ComplexBrainSlices(split, size=size, contrasts=d.contrasts, augment=augment,
                                  seed=d.seed, length=length)
    if d.dataset == "brain_patches3d":
        return BrainPatches3D(split, size=size, spacing_mm=d.spacing_mm, contrasts=d.contrasts,
                              augment=augment, seed=d.seed, length=length)
    return BrainSlices(split, size=size, contrasts=d.contrasts, augment=augment, lesions=lesions,
                       seed=d.seed, length=length)
