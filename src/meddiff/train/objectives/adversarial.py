"""Adversarial training of an image-to-image network: a generator and a PatchGAN discriminator.

The generator is the network of a *base* objective that predicts images (``options.base``,
e.g. ``recon-unet``; it supplies the :class:`~meddiff.train.objectives.base.Pair` of network
input, output and target and its supervised loss). As in pix2pix (Isola et al. 2017,
arXiv:1611.07004, eq. 4) the generator minimises ``supervised + weight * L_G`` and a
conditional discriminator ``D(input (+) image)`` (:mod:`meddiff.nets.discriminator`) learns to
tell ``(input, target)`` from ``(input, output)``; the two are updated alternately, generator
first, the discriminator then on the generator's (detached) output of the same step. GAN
losses on the patch logits ``l``:

* ``nonsaturating`` (Goodfellow et al. 2014, arXiv:1406.2661, eq. 1 and sec. 3):
  ``L_D = E softplus(-l_real) + E softplus(l_fake)``, ``L_G = E softplus(-l_fake)``;
* ``hinge`` (Lim & Ye 2017, arXiv:1705.02894; Miyato et al. 2018, arXiv:1802.05957, eq. 17):
  ``L_D = E relu(1 - l_real) + E relu(1 + l_fake)``, ``L_G = -E l_fake``.

This pair of networks and updates is the building block of the adversarial systems to come
(SynDiff, AdaDiff, DARL).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from meddiff.config import from_dict
from meddiff.errors import ConfigError
from meddiff.nets.discriminator import DiscriminatorSpec, PatchDiscriminator
from meddiff.train.objectives.base import Objective, Pair
from meddiff.train.objectives.reconstruction import ReconUNet
from meddiff.train.trainer import PRIMARY, Update

GanLoss = Literal["nonsaturating", "hinge"]
DISCRIMINATOR = "discriminator"


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: GanLoss) -> torch.Tensor:
    """Discriminator loss of the logits of real and generated images (module docstring)."""
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(fake: torch.Tensor, kind: GanLoss) -> torch.Tensor:
    """Generator loss of the discriminator's logits of generated images (module docstring)."""
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


@dataclass(frozen=True)
class AdversarialOptions:
    """``base`` / ``base_options``: the objective whose network is the generator (one of
    :data:`GENERATORS`);
    ``discriminator``: its architecture (``in_channels`` = input + output channels of the
    generator); ``gan_loss``; ``weight`` of the generator's GAN term;
    ``discriminator_lr_scale``: the discriminator's learning rate relative to ``train.lr``."""

    base: str = "recon-unet"
    base_options: dict[str, Any] = field(default_factory=dict)
    discriminator: DiscriminatorSpec = field(default_factory=DiscriminatorSpec)
    gan_loss: GanLoss = "nonsaturating"
    weight: float = 0.01
    discriminator_lr_scale: float = 1.0


#: the objectives whose network predicts images (they implement ``pair``): possible generators
GENERATORS: dict[str, type[Objective]] = {ReconUNet.name: ReconUNet}


def _base_class(name: str) -> type[Objective]:
    if name not in GENERATORS:
        raise ConfigError(f"objective.options.base {name!r} has no image pair to train "
                          f"adversarially; choose from {', '.join(GENERATORS)}")
    return GENERATORS[name]


class Adversarial(Objective):
    """Generator (the base objective's network) + discriminator (see the module docstring)."""

    name = "adversarial"
    Options = AdversarialOptions

    def __init__(self, options: AdversarialOptions, spec: Any, data, train) -> None:
        cls = _base_class(options.base)
        base_options = from_dict(cls.Options, options.base_options,
                                 "objective.options.base_options")
        self.base = cls(base_options, spec, data, train)
        self._fake: Pair | None = None
        super().__init__(options, spec, data, train)

    @classmethod
    def spec_kind(cls, options: AdversarialOptions) -> str:
        return _base_class(options.base).kind

    def check(self) -> None:
        want = self.base.pair_channels()
        if self.options.discriminator.in_channels != want:
            raise ConfigError(f"objective.options.discriminator.in_channels must be {want} "
                              "(the generator's input + output channels)")
        if self.options.weight < 0 or self.options.discriminator_lr_scale <= 0:
            raise ConfigError("weight must be >= 0 and discriminator_lr_scale > 0")

    @property
    def image_size(self) -> int:
        return self.base.image_size

    def networks(self) -> dict[str, nn.Module]:
        return {**self.base.networks(),
                DISCRIMINATOR: PatchDiscriminator(self.options.discriminator)}

    def dataset(self) -> Dataset:
        return self.base.dataset()

    def updates(self) -> list[Update]:
        return [Update(PRIMARY, self.generator_update),
                Update(DISCRIMINATOR, self.discriminator_update,
                       self.options.discriminator_lr_scale)]

    def generator_update(self, nets: Mapping[str, nn.Module], batch: dict,
                         generator: torch.Generator, step: int) -> torch.Tensor:
        """Supervised loss + weight x GAN loss; keeps the detached pair for the discriminator."""
        pair = self.base.pair(nets[PRIMARY], batch, generator)
        self._fake = Pair(pair.input.detach(), pair.output.detach(), pair.target)
        logits = nets[DISCRIMINATOR](torch.cat([pair.input, pair.output], 1))
        return self.base.pair_loss(pair) + self.options.weight * generator_loss(
            logits, self.options.gan_loss)

    def discriminator_update(self, nets: Mapping[str, nn.Module], batch: dict,
                             generator: torch.Generator, step: int) -> torch.Tensor:
        """Real ``(input, target)`` vs generated ``(input, output)`` of this step, one forward."""
        if self._fake is None:
            raise RuntimeError("the generator update must run before the discriminator's")
        p, self._fake = self._fake, None
        both = torch.cat([torch.cat([p.input, p.target], 1), torch.cat([p.input, p.output], 1)])
        logits = nets[DISCRIMINATOR](both)
        n = len(p.input)
        return discriminator_loss(logits[:n], logits[n:], self.options.gan_loss)

    def final_spec(self, net: nn.Module) -> Any:
        return self.base.final_spec(net)

    def validate(self, nets: Mapping[str, nn.Module], spec: Any) -> dict:
        return self.base.validate(nets, spec)

    def network_text(self, spec: Any, net: nn.Module) -> str:
        d = self.options.discriminator
        return (f"{self.base.network_text(spec, net)}; trained against a PatchGAN "
                f"discriminator, widths {list(d.channels)}")

    def loss_text(self) -> str:
        return (f"{self.base.loss_text()} + {self.options.weight:g} x {self.options.gan_loss} "
                "GAN loss of a conditional PatchGAN discriminator (pix2pix, Isola et al. 2017)")
