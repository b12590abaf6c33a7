"""``meddiff train CONFIG.yaml``: a validated run config -> model, data, loss, Trainer.

A run config has three sections, each a strict dataclass (unknown keys and wrong types are
one-line errors)::

    model:   # meddiff.zoo.store.DiffusionSpec
      net: {channels: [32, 64, 128], attention_levels: [false, false, true]}
      schedule: linear
      parametrization: eps
      image_size: 64
    data:    # DataConfig below
      contrasts: [T1w, T2w, PDw, FLAIR]
    train:   # meddiff.train.config.TrainConfig
      steps: 4000
      out_dir: runs/prior64
      bf16: true

The run writes ``out_dir/model.json`` at start, so ``meddiff sample --model out_dir`` works on
any checkpoint while training goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from meddiff.core.losses import diffusion_loss
from meddiff.core.model import Denoiser
from meddiff.core.noise import get_noise
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.datasets import BrainPatches3D, BrainSlices
from meddiff.data.intensity import model_space
from meddiff.data.modalities import ComplexBrainSlices, HeadCTSlices
from meddiff.data.mri_signal import CONTRASTS
from meddiff.errors import ConfigError
from meddiff.config import load_yaml, to_dict
from meddiff.train.config import TrainConfig
from meddiff.train.trainer import Trainer
from meddiff.zoo.store import SPEC_NAME, DiffusionSpec, build_denoiser, write_spec


@dataclass(frozen=True)
class DataConfig:
    """Built-in training data (healthy simulated anatomy, training slabs only).

    ``brain_slices``: 2D axial MR slices (B, 1, S, S); ``brain_patches3d``: cubes
    (B, 1, S, S, S) at ``spacing_mm`` inside the training slabs; ``head_ct_slices``: head-CT-like
    slices (B, 1, S, S); ``complex_brain_slices``: MR slices with smooth random phase
    (B, 2, S, S), real and imaginary channels (:mod:`meddiff.data.modalities`). ``S`` is
    ``model.image_size``.
    """

    dataset: Literal["brain_slices", "brain_patches3d", "head_ct_slices",
                     "complex_brain_slices"] = "brain_slices"
    contrasts: tuple[str, ...] = CONTRASTS
    augment: bool = True
    length: int = 8192
    seed: int = 0
    spacing_mm: float = 2.0


@dataclass(frozen=True)
class RunConfig:
    train: TrainConfig
    model: DiffusionSpec = field(default_factory=DiffusionSpec)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        dims = 3 if self.data.dataset == "brain_patches3d" else 2
        if self.model.net.spatial_dims != dims:
            raise ConfigError(f"data.dataset {self.data.dataset!r} needs model.net.spatial_dims={dims}")
        complex_data = self.data.dataset == "complex_brain_slices"
        if complex_data != (self.model.intensity == "complex"):
            raise ConfigError("data.dataset complex_brain_slices goes with model.intensity: complex "
                              "(and only it)")


def load_run_config(path: str | Path) -> RunConfig:
    return load_yaml(path, RunConfig)


def make_dataset(cfg: RunConfig) -> torch.utils.data.Dataset:
    """The training dataset of ``cfg`` (items: dict with ``image`` in the image space of
    ``cfg.model.intensity``)."""
    d, size = cfg.data, cfg.model.image_size
    if d.dataset == "head_ct_slices":
        return HeadCTSlices("train", size=size, augment=d.augment, seed=d.seed, length=d.length)
    if d.dataset == "complex_brain_slices":
        return ComplexBrainSlices("train", size=size, contrasts=d.contrasts, augment=d.augment,
                                  seed=d.seed, length=d.length)
    if d.dataset == "brain_patches3d":
        return BrainPatches3D("train", size=size, spacing_mm=d.spacing_mm, contrasts=d.contrasts,
                              augment=d.augment, seed=d.seed, length=d.length)
    return BrainSlices("train", size=size, contrasts=d.contrasts, augment=d.augment, seed=d.seed,
                       length=d.length)


def make_loss(spec: DiffusionSpec):
    """``loss_fn(net, batch, generator)``: the diffusion loss of ``spec`` on ``batch['image']``."""
    schedule, noise = NoiseSchedule(spec.schedule, spec.num_steps), get_noise(spec.noise)

    def loss_fn(net: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        model = Denoiser(net, schedule, parametrization=spec.parametrization)
        return diffusion_loss(model, model_space(batch["image"], spec.intensity), generator,
                              noise=noise)

    return loss_fn


def make_trainer(cfg: RunConfig) -> Trainer:
    """Model, data and loss of ``cfg`` in a :class:`Trainer`; writes ``out_dir/model.json``."""
    denoiser = build_denoiser(cfg.model)
    trainer = Trainer(denoiser.net, make_loss(cfg.model), make_dataset(cfg), cfg.train,
                      run_config=to_dict(cfg))
    if trainer.ctx.is_main:
        write_spec(Path(cfg.train.out_dir) / SPEC_NAME, cfg.model, card={"run_config": to_dict(cfg)})
    return trainer


def train(cfg: RunConfig, resume: bool = True) -> dict[str, Any]:
    """Run (or continue) the training described by ``cfg``; returns the trainer summary."""
    trainer = make_trainer(cfg)
    try:
        return trainer.fit(resume=resume)
    finally:
        trainer.close()
