"""The training data of ``meddiff train``: built-in simulated anatomy (training slabs only) or
the user's own files (``dataset: files``, :mod:`meddiff.data.files`).

Every dataset is map-style and seeded (items are a function of ``(seed, epoch, index)``), so
the trainer's resume is exact. Items are dicts of tensors in *image space*; the objectives map
them to model space.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from torch.utils.data import Dataset

from meddiff.data.crops import MixedScales, RandomCrops
from meddiff.data.datasets import BrainPatches3D, BrainSlices
from meddiff.data.files import FilesDataset, FilesOptions, discover, split_files, write_split
from meddiff.data.lesion_bench import LESIONS_BENCH, LESIONS_CLASSIFIER, ClassifierData
from meddiff.data.lesions import LESIONS_EVAL, LESIONS_TRAIN, LesionConfig
from meddiff.data.modalities import (ComplexBrainSlices, HeadCTSlices, LowDoseCTSlices,
                                     TranslationPairs)
from meddiff.data.pet import PETSlices
from meddiff.data.reuse import ReusedDraws
from meddiff.data.mri_signal import CONTRASTS
from meddiff.data.oct import OCTScans
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

#: the built-in 2D sources that render at any pixel size (``render_size``)
_RENDERED = ("brain_slices", "head_ct_slices", "lowdose_ct_slices", "complex_brain_slices",
             "oct_scans", "pet_slices", "translation_pairs")

Dataset2D = Literal["brain_slices", "brain_patches3d", "head_ct_slices", "lowdose_ct_slices",
                    "pet_slices", "complex_brain_slices", "lesion_pairs", "oct_scans",
                    "translation_pairs", "files"]


@dataclass(frozen=True)
class DataConfig(FilesOptions):
    """Training data: built-in simulated anatomy of the training slabs, or the user's files;
    the images are ``S`` px, ``S`` the model's image size.

    ``brain_slices``: 2D axial MR slices, items ``image`` (1, S, S) in [0, 1], ``brain``,
    ``lesion`` (1, S, S) {0, 1}, ``contrast`` (int), ``section``; with ``lesions`` (a preset of
    :data:`LESION_PRESETS`) the slices carry synthetic lesions and ``lesion`` is their mask.
    ``brain_patches3d``: cubes (1, S, S, S) at ``spacing_mm``. ``head_ct_slices``: head-CT-like
    slices (1, S, S), image space ``(HU + 1000) / 2000``. ``lowdose_ct_slices``: those with
    ``lowdose`` (1, S, S), their FBP from 180 views at a random 5-50 % dose
    (:class:`~meddiff.data.modalities.LowDoseCTSlices`). ``pet_slices``: FDG-like PET (1, S, S)
    with ``lowcount`` (MLEM of 1e5-5e5 counts) and ``mr`` (T1w of the same anatomy)
    (:class:`~meddiff.data.pet.PETSlices`). ``complex_brain_slices``: MR slices
    with smooth random phase (2, S, S), real and imaginary channels. ``lesion_pairs``: the
    noise-aware classifier's data (:class:`~meddiff.data.lesion_bench.ClassifierData`): even
    items carry a lesion of the ``lesions`` preset (``label`` 1), odd items are their healthy
    twins (``label`` 0). ``oct_scans``: simulated 1-look speckled retinal OCT B-scans
    (:class:`~meddiff.data.oct.OCTScans`), items ``noisy`` (1, S, S) and the clean ``image``.
    ``translation_pairs``: one anatomy in the two ``domains`` (source, target; MR contrasts or
    ``CT``), items ``source`` and ``image`` (1, S, S)
    (:class:`~meddiff.data.modalities.TranslationPairs`).

    ``files``: the user's images and volumes matched by the globs ``paths``, with the options
    of :class:`~meddiff.data.files.FilesOptions` (inherited: ``axis``, ``dims``, ``channels``,
    ``normalize``, ``percentiles``, ``window``, ``fit``, ``val_fraction``, ``split_by``,
    ``min_foreground``, ``foreground_level``, ``cache``); items ``image`` (C, S, S) or
    (C, S, S, S). ``dims`` / ``channels`` default to the model's (:meth:`for_model`); the split
    is by file (subject), ``seed`` seeds it, and the run writes its file lists into ``out_dir``
    (:func:`write_data_split`). ``contrasts``, ``spacing_mm`` and ``lesions`` do not apply.

    Native pixel size (2D built-in sources of :data:`_RENDERED`): ``render_sizes`` [R1, R2, ...]
    render the brain's 189 mm box at R px (189 / R mm pixels: 2.95 / 1.48 / 0.74 mm at 64 / 128
    / 256), one size drawn per item (:class:`~meddiff.data.crops.MixedScales`), and training
    items are random ``S`` x ``S`` windows of those slices
    (:class:`~meddiff.data.crops.RandomCrops`), so a fully convolutional prior trains at ``S`` px
    cost and applies at every one of those pixel sizes and image sizes; validation items are the
    whole slices at the largest R. ``randomize`` (``brain_slices``): the probability of a
    domain-randomised item (:mod:`meddiff.data.randomize`). ``reuse_epochs``: serve each draw of
    the training set for that many epochs from memory (:mod:`meddiff.data.reuse`; for sources
    that cost as much as a training step, e.g. ``pet_slices``).
    """

    dataset: Dataset2D = "brain_slices"
    contrasts: tuple[str, ...] = CONTRASTS
    augment: bool = True
    length: int = 8192
    seed: int = 0
    spacing_mm: float = 2.0
    lesions: Literal["train", "eval", "classifier", "segmentation"] | None = None
    render_sizes: tuple[int, ...] = ()
    randomize: float = 0.0
    domains: tuple[str, str] = ("T1w", "T2w")
    reuse_epochs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.dataset == "files") != bool(self.paths):
            raise ConfigError("dataset files needs data.paths (globs of files or DICOM folders)"
                              if self.dataset == "files" else
                              f"data.paths applies to dataset files, not {self.dataset}")
        if self.length < 1:
            raise ConfigError(f"length must be >= 1, got {self.length}")
        if self.reuse_epochs < 1:
            raise ConfigError(f"reuse_epochs must be >= 1, got {self.reuse_epochs}")
        if self.dataset == "lesion_pairs" and self.lesions is None:
            raise ConfigError("dataset lesion_pairs needs a lesions preset")
        if self.lesions is not None and self.dataset not in ("brain_slices", "lesion_pairs"):
            raise ConfigError(f"lesions apply to brain_slices and lesion_pairs, not {self.dataset}")
        if self.render_sizes and self.dataset not in _RENDERED:
            raise ConfigError(f"render_sizes apply to {', '.join(_RENDERED)}, "
                              f"not {self.dataset}")
        if any(s < 8 for s in self.render_sizes):
            raise ConfigError(f"render_sizes must be >= 8, got {list(self.render_sizes)}")
        if self.randomize and self.dataset != "brain_slices":
            raise ConfigError(f"randomize applies to brain_slices, not {self.dataset}")

    @property
    def spatial_dims(self) -> int:
        if self.dataset == "files":
            return self.dims or 2
        return 3 if self.dataset == "brain_patches3d" else 2

    @property
    def complex_images(self) -> bool:
        """Whether the items are complex images as (real, imaginary) channels."""
        return self.dataset == "complex_brain_slices" or (
            self.dataset == "files" and self.channels == "complex")

    def for_model(self, spec: Any) -> DataConfig:
        """This config with the files dataset's unset ``dims`` / ``channels`` taken from the
        model ``spec`` (``net.spatial_dims``, ``intensity``); other datasets unchanged."""
        if self.dataset != "files":
            return self
        dims = self.dims or getattr(getattr(spec, "net", None), "spatial_dims", 2)
        channels = self.channels or (
            "complex" if getattr(spec, "intensity", "unit") == "complex" else "magnitude")
        return replace(self, dims=dims, channels=channels)

    def files_options(self) -> FilesOptions:
        """The :class:`~meddiff.data.files.FilesOptions` part of this config."""
        return FilesOptions(**{f.name: getattr(self, f.name) for f in fields(FilesOptions)})


def files_split(d: DataConfig) -> tuple[list, list]:
    """(train, validation) files of a files dataset (:func:`~meddiff.data.files.split_files`)."""
    return split_files(discover(d.paths), d.val_fraction, d.seed, d.split_by)


def write_data_split(d: DataConfig, out_dir: str | os.PathLike) -> None:
    """For ``dataset: files``: write ``train_files.txt`` and ``val_files.txt`` (the subject
    split) into the run directory ``out_dir``; nothing for the built-in datasets."""
    if d.dataset == "files":
        write_split(out_dir, *files_split(d))


def make_dataset(d: DataConfig, size: int, split: str = "train", augment: bool | None = None,
                 length: int | None = None) -> Dataset:
    """The dataset ``d`` at ``size`` px. ``split`` 'val' / 'test' gives the held-out slabs
    (for validation metrics; for ``files``: the validation files), by default without
    augmentation and with every section and contrast once; ``augment`` / ``length`` override
    that. With ``render_sizes``: training items are random ``size`` windows of slices rendered
    at one of those sizes, held-out items the whole slices at the largest. ``reuse_epochs``
    applies to the training split only."""
    if split != "train":
        return _dataset(d, max(d.render_sizes or (size,)), split, augment, length)
    if not d.render_sizes:
        ds = _dataset(d, size, split, augment, length)
    else:
        scales = [_dataset(d, r, split, augment, length) for r in d.render_sizes]
        ds = RandomCrops(MixedScales(scales, d.seed), size, d.seed)
    return ReusedDraws(ds, d.reuse_epochs) if d.reuse_epochs > 1 else ds


def _dataset(d: DataConfig, size: int, split: str, augment: bool | None,
              length: int | None) -> Dataset:
    train = split == "train"
    augment = (d.augment and train) if augment is None else augment
    length = length if length is not None else (d.length if train else None)
    lesions = LESION_PRESETS[d.lesions] if d.lesions is not None else None
    if d.dataset == "files":
        files = files_split(d)[0 if train else 1]
        return FilesDataset(files, d.files_options(), size, split="train" if train else "val",
                            augment=augment, seed=d.seed, length=length)
    if d.dataset == "lesion_pairs":
        if not train:
            raise ConfigError("lesion_pairs is training data only")
        return ClassifierData(size=size, contrasts=d.contrasts, seed=d.seed, length=d.length,
                              lesions=lesions)
    if d.dataset == "head_ct_slices":
        return HeadCTSlices(split, size=size, augment=augment, seed=d.seed, length=length)
    if d.dataset == "pet_slices":
        return PETSlices(split, size=size, augment=augment, seed=d.seed, length=length)
    if d.dataset == "lowdose_ct_slices":
        return LowDoseCTSlices(split, size=size, augment=augment, seed=d.seed, length=length)
    if d.dataset == "translation_pairs":
        return TranslationPairs(split, size=size, source=d.domains[0], target=d.domains[1],
                                augment=augment, seed=d.seed, length=length)
    if d.dataset == "oct_scans":
        return OCTScans(split, size=size, augment=augment, seed=d.seed, length=length)
    if d.dataset == "complex_brain_slices":
        return ComplexBrainSlices(split, size=size, contrasts=d.contrasts, augment=augment,
                                  seed=d.seed, length=length)
    if d.dataset == "brain_patches3d":
        return BrainPatches3D(split, size=size, spacing_mm=d.spacing_mm, contrasts=d.contrasts,
                              augment=augment, seed=d.seed, length=length)
    return BrainSlices(split, size=size, contrasts=d.contrasts, augment=augment, lesions=lesions,
                       seed=d.seed, length=length, randomize=d.randomize)
