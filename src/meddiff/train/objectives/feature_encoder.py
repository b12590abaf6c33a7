"""The FD-MedEnc feature encoder (:class:`meddiff.nets.feature_encoder.FeatureEncoder`).

Three auxiliary tasks on the 128-d features, through small heads trained jointly and thrown
away afterwards, make them sensitive to what a realism metric must see:

* contrast class (cross-entropy, 4 classes)           -> intensity / contrast statistics;
* normalised axial slice position in [0, 1] (MSE x10) -> anatomy;
* corruption type: clean / blur / noise / shuffled patches (cross-entropy; half of every batch
  is clean)                                           -> realism (texture, sharpness, coherence).

Data: augmented training slices plus ``options.unaugmented`` unaugmented ones, random
left-right flips. Validation (card): the tasks' accuracies on held-out slices and FD-MedEnc
calibration values (:func:`meddiff.eval.frechet.fd_medenc`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from meddiff.data.datasets import default_split
from meddiff.errors import ConfigError
from meddiff.eval.frechet import fd_medenc
from meddiff.nets.feature_encoder import FeatureEncoder
from meddiff.nets.unet import count_parameters
from meddiff.train.data import make_dataset
from meddiff.train.objectives.base import Objective
from meddiff.train.trainer import PRIMARY, Update

KINDS = ("clean", "blur", "noise", "shuffle")
N_CONTRASTS = 4


class AuxHeads(nn.Module):
    """Task heads on (B, 128) features: contrast logits, slice position, corruption logits."""

    def __init__(self, n_contrasts: int = N_CONTRASTS, features: int = FeatureEncoder.FEATURES):
        super().__init__()
        self.n_contrasts = n_contrasts
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(features, 128), nn.SiLU(),
                                 nn.Linear(128, n_contrasts + 1 + len(KINDS)))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.mlp(f).float()
        k = self.n_contrasts
        return out[:, :k], torch.sigmoid(out[:, k]), out[:, k + 1:]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (1, H, W) image (reflect padding)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(x[None], (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[0]


def _shuffle(x: torch.Tensor, gen: torch.Generator, grid: int = 4) -> torch.Tensor:
    """Cyclically swap 2-6 grid patches of (1, H, W) that contain signal (anatomically
    incoherent)."""
    _, h, w = x.shape
    ph, pw = h // grid, w // grid
    patches = x[:, :ph * grid, :pw * grid].reshape(1, grid, ph, grid, pw).permute(1, 3, 0, 2, 4)
    patches = patches.reshape(grid * grid, 1, ph, pw)
    candidates = torch.nonzero(patches.mean(dim=(1, 2, 3)) > 0.05).flatten().cpu()
    if candidates.numel() < 2:
        candidates = torch.arange(grid * grid)
    k = int(torch.randint(2, min(6, candidates.numel()) + 1, (1,), generator=gen,
                          device=gen.device))
    order = torch.randperm(candidates.numel(), generator=gen, device=gen.device).cpu()
    chosen = candidates[order[:k]].to(x.device)
    patches = patches.clone()
    patches[chosen] = patches[chosen.roll(1)]
    out = x.clone()
    out[:, :ph * grid, :pw * grid] = patches.reshape(grid, grid, 1, ph, pw) \
        .permute(2, 0, 3, 1, 4).reshape(1, ph * grid, pw * grid)
    return out


def corrupt(x: torch.Tensor, kinds: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply corruption ``KINDS[kinds[i]]`` to image ``x[i]`` of (B, 1, H, W) in [0, 1].

    blur: Gaussian, sigma ~ U(0.6, 2) px; noise: additive Gaussian, std ~ U(0.03, 0.15),
    clipped to [0, 1]; shuffle: 2-6 of the 4x4 grid patches with signal cyclically swapped.
    """
    out = x.clone()
    for i, k in enumerate(kinds.tolist()):
        u = float(torch.rand((), generator=gen, device=gen.device))
        if KINDS[k] == "blur":
            out[i] = _blur(x[i], 0.6 + 1.4 * u)
        elif KINDS[k] == "noise":
            n = torch.randn(x[i].shape, generator=gen, device=gen.device).to(x)
            out[i] = (x[i] + (0.03 + 0.12 * u) * n).clamp(0.0, 1.0)
        elif KINDS[k] == "shuffle":
            out[i] = _shuffle(x[i], gen)
    return out


def draw_kinds(n: int, gen: torch.Generator) -> torch.Tensor:
    """Corruption labels for a batch: clean with probability 1/2, else uniform over the rest."""
    clean = torch.rand(n, generator=gen, device=gen.device) < 0.5
    other = torch.randint(1, len(KINDS), (n,), generator=gen, device=gen.device)
    return torch.where(clean, torch.zeros_like(other), other)


@dataclass(frozen=True)
class FeatureEncoderOptions:
    """``unaugmented``: unaugmented training items added to the ``data.length`` augmented
    ones; ``val_items`` augmented validation items; ``calibration_items`` per FD set."""

    unaugmented: int = 8192
    val_items: int = 160
    calibration_items: int = 256


class FeatureEncoderObjective(Objective):
    """Auxiliary-task training of the FD-MedEnc encoder (see the module docstring)."""

    name = "feature-encoder"
    kind = "feature-encoder"
    Options = FeatureEncoderOptions

    def check(self) -> None:
        if self.data.dataset != "brain_slices" or self.data.lesions is not None:
            raise ConfigError("the feature encoder trains on healthy brain_slices")

    @property
    def image_size(self) -> int:
        return self.spec.size

    def networks(self) -> dict[str, nn.Module]:
        return {PRIMARY: FeatureEncoder(seed=self.train.seed), "heads": AuxHeads()}

    def dataset(self) -> Dataset:
        plain = replace(self.data, augment=False, length=self.options.unaugmented)
        return ConcatDataset([make_dataset(self.data, self.image_size),
                              make_dataset(plain, self.image_size)])

    def updates(self) -> list[Update]:
        return [Update(PRIMARY, self.loss, jointly=("heads",))]

    def position(self, section: torch.Tensor) -> torch.Tensor:
        """Normalised axial position in [0, 1] of section indices (over the eligible range)."""
        eligible = default_split().eligible
        lo, hi = float(eligible.min()), float(eligible.max())
        return ((section.float() - lo) / (hi - lo)).clamp(0.0, 1.0)

    def task_losses(self, encoder: nn.Module, heads: nn.Module, x: torch.Tensor, batch: dict,
                    kinds: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three task losses on a (corrupted) batch ``x``."""
        c_logit, pos, k_logit = heads(encoder(x))
        return {"contrast": F.cross_entropy(c_logit, batch["contrast"].long()),
                "position": 10.0 * F.mse_loss(pos, self.position(batch["section"])),
                "corruption": F.cross_entropy(k_logit, kinds)}

    def loss(self, nets: Mapping[str, nn.Module], batch: dict, generator: torch.Generator,
             step: int) -> torch.Tensor:
        x = batch["image"].float()
        flip = torch.rand(len(x), 1, 1, 1, generator=generator, device=generator.device) < 0.5
        x = torch.where(flip.to(x.device), x, x.flip(-1))
        kinds = draw_kinds(len(x), generator).to(x.device)
        parts = self.task_losses(nets[PRIMARY], nets["heads"], corrupt(x, kinds, generator),
                                 batch, kinds)
        return sum(parts.values())

    @torch.no_grad()
    def validate(self, nets: Mapping[str, nn.Module], spec) -> dict:
        """The tasks' accuracies on ``val_items`` augmented and all unaugmented validation
        slices (:meth:`evaluate`), and FD-MedEnc calibration values: two disjoint augmented
        validation sets against each other and against corrupted copies of the second."""
        o, net = self.options, nets[PRIMARY]
        sets = [self._val_images(o.calibration_items, self.data.seed + s) for s in (1, 2)]
        gen = torch.Generator().manual_seed(2)
        fd = {"n_per_set": o.calibration_items, "real_vs_real": round(fd_medenc(*sets, net), 3)}
        for k in range(1, len(KINDS)):
            kinds = torch.full((len(sets[1]),), k)
            fd[f"real_vs_{KINDS[k]}"] = round(fd_medenc(sets[0], corrupt(sets[1], kinds, gen),
                                                        net), 3)
        return {"val": self.evaluate(net, nets["heads"], self._val_items(True)),
                "val_unaugmented": self.evaluate(net, nets["heads"], self._val_items(False)),
                "fd_medenc_calibration": fd}

    def _val_items(self, augment: bool) -> dict[str, torch.Tensor]:
        ds = make_dataset(self.data, self.image_size, "val", augment=augment,
                          length=self.options.val_items if augment else None)
        items = [ds[i] for i in range(len(ds))]
        return {k: torch.stack([torch.as_tensor(it[k]) for it in items])
                for k in ("image", "contrast", "section")}

    def _val_images(self, n: int, seed: int) -> torch.Tensor:
        ds = make_dataset(replace(self.data, seed=seed), self.image_size, "val", augment=True,
                          length=n)
        return torch.stack([ds[i]["image"] for i in range(n)])

    def evaluate(self, encoder: nn.Module, heads: nn.Module, items: dict, seed: int = 1) -> dict:
        """Accuracies on ``items``: contrast, slice-position MAE, corruption (4-way and clean
        vs not). Every image is scored once per corruption kind (fixed generator),
        contrast / position on the clean copies."""
        gen = torch.Generator().manual_seed(seed)
        x, n = items["image"], len(items["image"])
        c_logit, pos, _ = heads(encoder(x))
        hits, binary = [], []
        for k in range(len(KINDS)):
            pred = heads(encoder(corrupt(x, torch.full((n,), k), gen)))[2].argmax(1)
            hits.append((pred == k).float())
            binary.append(((pred > 0) == (k > 0)).float())
        truth = self.position(items["section"])
        return {"n_images": n,
                "contrast_acc": round(float((c_logit.argmax(1) == items["contrast"]).float()
                                            .mean()), 4),
                "position_mae": round(float((pos - truth).abs().mean()), 4),
                "corruption_acc": round(float(torch.cat(hits).mean()), 4),
                "clean_vs_corrupted_acc": round(float(torch.cat(binary).mean()), 4)}

    def network_text(self, spec, net: nn.Module) -> str:
        return (f"seven 3x3 convolutions (four of stride 2) with GroupNorm, {spec.size} px -> "
                f"{spec.features}-d features, {count_parameters(net) / 1e6:.2f} M parameters")

    def loss_text(self) -> str:
        return ("contrast class (CE) + 10 x slice position (MSE) + corruption type "
                f"{list(KINDS)} (CE, half of each batch clean), through auxiliary heads")
