"""Training objectives, the plug-ins of the one :class:`~meddiff.train.trainer.Trainer`.

A run config names one (``objective: {name: ..., options: {...}}``); each declares the store
kind and spec it produces, its network(s), its dataset, its loss(es) and its validation metrics
(:class:`~meddiff.train.objectives.base.Objective`). Adding an objective is one module and one
entry in :data:`OBJECTIVES`.
"""
from __future__ import annotations

from meddiff.errors import ConfigError
from meddiff.train.objectives.adversarial import Adversarial
from meddiff.train.objectives.autoencoder import Autoencoder
from meddiff.train.objectives.base import Objective
from meddiff.train.objectives.classifier import Classifier
from meddiff.train.objectives.diffusion import Diffusion
from meddiff.train.objectives.feature_encoder import FeatureEncoderObjective
from meddiff.train.objectives.reconstruction import ReconUNet
from meddiff.train.objectives.regression import RegressionUNet
from meddiff.train.objectives.segmentation import SegUNet

OBJECTIVES: dict[str, type[Objective]] = {o.name: o for o in (
    Diffusion, Classifier, Autoencoder, SegUNet, ReconUNet, RegressionUNet,
    FeatureEncoderObjective, Adversarial)}


def get(name: str) -> type[Objective]:
    """The objective class called ``name``; one-line ConfigError listing the choices."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
