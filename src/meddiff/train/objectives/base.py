"""What an objective declares: the store kind and spec it produces, its network(s), its data,
its loss(es) and the validation metrics of its model card.

An objective is built from the run config's sections (``objective.options``, ``model``,
``data``, ``train``) and hands the one :class:`~meddiff.train.trainer.Trainer` its networks and
updates. The first network is the one exported to the store.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from meddiff.errors import ConfigError
from meddiff.nets.unet import count_parameters
from meddiff.train.config import TrainConfig
from meddiff.train.data import DataConfig, make_dataset
from meddiff.train.trainer import PRIMARY, Update
from meddiff.zoo.store import build


@dataclass(frozen=True)
class NoOptions:
    """An objective without options."""


@dataclass(frozen=True)
class Pair:
    """An image-to-image prediction for the adversarial objective, all (B, C, H, W) in model
    space: the network ``input``, its ``output`` and the ``target`` it should match."""

    input: torch.Tensor
    output: torch.Tensor
    target: torch.Tensor


class Objective:
    """Base of the training objectives (see the module docstring).

    Subclasses set ``name`` (the ``objective.name`` of run configs), ``kind`` (the store kind
    of the exported network), ``Options`` (a frozen dataclass read with the strict codec from
    ``objective.options``) and implement :meth:`loss` (one network) or :meth:`updates`.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any, spec: Any, data: DataConfig, train: TrainConfig) -> None:
        self.options, self.spec, self.data, self.train = options, spec, data, train
        self.check()

    @classmethod
    def spec_kind(cls, options: Any) -> str:
        """The store kind whose spec the run config's ``model`` section holds."""
        return cls.kind

    def check(self) -> None:
        """Raise a one-line :class:`ConfigError` when the sections do not fit together."""

    @property
    def image_size(self) -> int:
        """The size of the training images (px)."""
        return self.spec.image_size

    def networks(self) -> dict[str, nn.Module]:
        """Freshly initialised networks by name; the first (``"model"``) is exported."""
        return {PRIMARY: build(self.spec_kind(self.options), self.spec)}

    def dataset(self) -> Dataset:
        """The training dataset (items: dicts of image-space tensors)."""
        return make_dataset(self.data, self.image_size)

    def updates(self) -> list[Update]:
        """The optimiser updates of one training step (default: :meth:`loss` on the model)."""
        return [Update(PRIMARY, self.loss)]

    def loss(self, nets: Mapping[str, nn.Module], batch: dict, generator: torch.Generator,
             step: int) -> torch.Tensor:
        """The scalar training loss of ``batch`` at (0-based) ``step``."""
        raise NotImplementedError

    def pair(self, net: nn.Module, batch: dict, generator: torch.Generator) -> Pair:
        """The image-to-image prediction of ``net`` on ``batch`` (adversarial training)."""
        raise ConfigError(f"objective {self.name!r} has no image pair for adversarial training")

    def pair_channels(self) -> int:
        """Channels of a :class:`Pair`'s input plus its output (a discriminator's input)."""
        raise ConfigError(f"objective {self.name!r} has no image pair for adversarial training")

    def pair_loss(self, pair: Pair) -> torch.Tensor:
        """The supervised loss of a :class:`Pair` (adversarial training adds its GAN term)."""
        raise ConfigError(f"objective {self.name!r} has no image pair for adversarial training")

    def final_spec(self, net: nn.Module) -> Any:
        """The spec stored with the trained ``net`` (e.g. with a measured latent scale)."""
        return self.spec

    def validate(self, nets: Mapping[str, nn.Module], spec: Any) -> dict[str, Any]:
        """Validation metrics of the trained networks (EMA weights, eval mode, CPU; the
        exported one is ``nets["model"]``) for the model card."""
        return {}

    def network_text(self, spec: Any, net: nn.Module) -> str:
        """One line for the card: architecture and size."""
        return f"{type(net).__name__}, {count_parameters(net) / 1e6:.2f} M parameters"

    def loss_text(self) -> str:
        """One line for the card: what the training minimises."""
        raise NotImplementedError


class L1PairObjective(Objective):
    """A supervised image-to-image objective: :meth:`pair` gives the prediction, the loss is
    the L1 distance of the pair (also the supervised term of adversarial training)."""

    def pair_loss(self, pair: Pair) -> torch.Tensor:
        return (pair.output - pair.target).abs().mean()

    def loss(self, nets: Mapping[str, nn.Module], batch: dict, generator: torch.Generator,
             step: int) -> torch.Tensor:
        return self.pair_loss(self.pair(nets["model"], batch, generator))

