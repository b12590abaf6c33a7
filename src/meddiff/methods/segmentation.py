"""G2: implicit segmentation ensembles with a conditional DDPM (Wolleb, Sandkuehler, Bieder,
Valmaggia & Cattin 2022, MIDL, PMLR 172:1336-1348, arXiv 2112.03145), and the supervised
UNet it is compared with.

The diffusion model generates the *mask*: its state ``x_t`` (B, 1, H, W) is the noised mask in
model space (mask 0 / 1 -> -1 / +1) and the image ``b`` (B, 1, H, W), also in model space, is
concatenated to it as an extra input channel, ``net(x_t (+) b, t)`` (Wolleb et al.'s ``X_t =
b (+) x_t``). Training is the usual denoising loss (Ho et al. 2020, arXiv 2006.11239, eq. 14)
on the mask only. Sampling from noise with the image fixed gives a mask; N samples with different
noise are an implicit ensemble: their mean is the segmentation (threshold 0.5) and their
per-pixel variance an uncertainty map, high where the samples disagree (lesion borders, faint
lesions).

Deviation, made explicit: the bundled model predicts ``x0`` (the mask) instead of Wolleb et
al.'s ``eps``; with the few thousand CPU training steps available the ``x0`` target learns the
image -> mask map much faster (it is a segmentation loss at every noise level), and sampling is
the same for every parametrisation (:class:`meddiff.core.model.Denoiser`).

Baseline: MONAI ``BasicUNet`` (Falk et al. 2019 / Ronneberger et al. 2015) trained on the same
data with Dice + binary cross-entropy (MONAI ``DiceCELoss``), sigmoid output.

Data (``scripts/train_segmentation.py``): T2w and FLAIR slices of the training slabs with
lesions of :data:`SEG_LESIONS` (the benchmark's lesion family, radius 6-12 mm, visible at 64 px /
2.95 mm pixels); evaluation on :func:`meddiff.data.lesion_bench.lesion_bench` (held-out slabs).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from meddiff.core.losses import diffusion_loss
from meddiff.core.model import Condition, Denoiser
from meddiff.core.samplers import generate, get_sampler
from meddiff.data.intensity import from_model, to_model
from meddiff.data.lesion_bench import LESIONS_BENCH
from meddiff.errors import ConfigError, InputError
from meddiff.nets.basic_unet import FEATURES as UNET_FEATURES
from meddiff.nets.basic_unet import build_seg_unet
from meddiff.nets.unet import preset
from meddiff.device import resolve_device
from meddiff.zoo.store import DiffusionSpec, LoadedModel, load_model, load_weights, save_weights

SEG_DIR = Path(__file__).resolve().parents[1] / "zoo" / "weights" / "segmentation"
DDPM_NAME = "seg-ddpm-64"
UNET_NAME = "seg-unet-64"
SEG_CONTRASTS = ("T2w", "FLAIR")
#: Training lesions of the segmentation task: the lesion benchmark's family
#: (:data:`meddiff.data.lesion_bench.LESIONS_BENCH`: radius 6-12 mm, i.e. 2-4 px at 64 px,
#: elongated, irregular, long-T2 tissue, anywhere in white matter) drawn on the *training*
#: slabs, with 0-2 lesions so that empty slices teach the model to say "none". Segmentation is
#: supervised, so training and test lesions may share a family; the anatomy is held out.
SEG_LESIONS = replace(LESIONS_BENCH, count=(0, 2))
DEFAULT_SAMPLES = 8
DEFAULT_SAMPLER = "ddpm"
DEFAULT_STEPS = 50


# ------------------------------------------------------------------------ conditional DDPM
def seg_spec(parametrization: str = "x0", **net_overrides) -> DiffusionSpec:
    """Spec of the conditional mask DDPM: the ``prior64`` UNet with in_channels = 2 (noised
    mask + image), out_channels = 1, linear schedule, 1000 steps, ``x0`` clipped to [-1, 1]."""
    net = preset("prior64", in_channels=2, out_channels=1, **net_overrides)
    return DiffusionSpec(net=net, parametrization=parametrization, image_size=64,
                         data={"task": "lesion mask given the image (concatenated)",
                               "contrasts": ", ".join(SEG_CONTRASTS),
                               "intensity": "image and mask in [0, 1] -> model space [-1, 1]"})


def condition(images01: torch.Tensor) -> Condition:
    """The image (B, 1, H, W) in [0, 1] as the concatenated condition, in model space."""
    return Condition(concat=to_model(images01))


def masks_from_model(x: torch.Tensor) -> torch.Tensor:
    """Sampled masks in model space -> soft masks in [0, 1] (clipped)."""
    return from_model(x).clamp(0.0, 1.0)


def seg_diffusion_loss(den: Denoiser, images01: torch.Tensor, masks01: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising loss (Ho et al. 2020, eq. 14) of the mask ``masks01`` (B, 1, H, W) in {0, 1}
    given the image ``images01`` (B, 1, H, W) in [0, 1]."""
    return diffusion_loss(den, to_model(masks01), generator, cond=condition(images01))


@torch.no_grad()
def sample_masks(den, images01: torch.Tensor, n_samples: int = DEFAULT_SAMPLES,
                 sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0,
                 batch_size: int = 64) -> torch.Tensor:
    """``n_samples`` masks per image: (B, N, 1, H, W) soft masks in [0, 1].

    ``images01``: (B, 1, H, W) in [0, 1]. Each sample starts from its own Gaussian noise at
    ``T - 1`` and runs ``steps`` steps of ``sampler`` (``ddpm``: ancestral, Ho et al. 2020,
    eqs. 6-7, respaced; ``ddim``: eta 0, Song et al. 2021, eq. 12) with the image fixed.
    Deterministic for a given (seed, B, n_samples, batch_size).
    """
    _check_sampling(den, n_samples, sampler, steps)
    b = images01.shape[0]
    dev = den.device
    reps = images01.to(dev).repeat_interleave(n_samples, 0)  # image i -> rows i*N .. i*N+N-1
    gen = torch.Generator(dev).manual_seed(int(seed))
    out = []
    for i in range(0, len(reps), batch_size):
        chunk = reps[i:i + batch_size]
        x = generate(den, (len(chunk), 1, *chunk.shape[-2:]), sampler=sampler, steps=steps,
                     generator=gen, device=dev, cond=condition(chunk))
        out.append(masks_from_model(x).cpu())
    return torch.cat(out).reshape(b, n_samples, 1, *images01.shape[-2:])


def _check_sampling(den, n_samples: int, sampler: str, steps: int) -> None:
    if n_samples < 1:
        raise ConfigError(f"samples must be >= 1, got {n_samples}")
    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"sampler must be ddpm or ddim, got {sampler!r}")
    get_sampler(sampler)
    if not 1 <= steps <= den.schedule.num_steps:
        raise ConfigError(f"steps must be in [1, {den.schedule.num_steps}], got {steps}")


def ensemble_stats(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean mask and variance map over the sample axis 1 of ``samples`` (B, N, ...):
    ``mean = 1/N sum_i m_i`` and the population variance ``1/N sum_i (m_i - mean)^2``
    (0 for N = 1). For masks in [0, 1], ``var <= mean (1 - mean)``."""
    mean = samples.mean(1)
    return mean, ((samples - mean.unsqueeze(1)) ** 2).mean(1)


@dataclass
class Segmentation:
    """A segmentation ensemble: ``mean`` and ``var`` (B, 1, H, W), ``samples`` (B, N, 1, H, W),
    all in [0, 1]; ``mask`` is ``mean >= 0.5``; ``nfe`` network evaluations; wall ``seconds``."""

    mean: torch.Tensor
    var: torch.Tensor
    samples: torch.Tensor
    nfe: int
    seconds: float

    @property
    def mask(self) -> torch.Tensor:
        return self.mean >= 0.5


def segment(den, images01: torch.Tensor, n_samples: int = DEFAULT_SAMPLES,
            sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0,
            batch_size: int = 64) -> Segmentation:
    """G2: sample ``n_samples`` masks per image (:func:`sample_masks`) and summarise them
    (:func:`ensemble_stats`). ``images01`` (B, 1, H, W) in [0, 1]."""
    start, nfe0 = time.perf_counter(), den.nfe
    samples = sample_masks(den, images01, n_samples, sampler, steps, seed, batch_size)
    mean, var = ensemble_stats(samples)
    return Segmentation(mean, var, samples, den.nfe - nfe0, time.perf_counter() - start)


def ddpm_path(name: str = DDPM_NAME) -> Path:
    return SEG_DIR / f"{name}.json"


def load_seg_ddpm(path: str | Path | None = None,
                  device: str | torch.device = "cpu") -> LoadedModel:
    """The conditional mask DDPM (default: the bundled ``seg-ddpm-64``), bf16 autocast on CPU.
    One-line :class:`InputError` when the weights are missing or are not a mask model."""
    path = Path(path) if path is not None else ddpm_path()
    if path.suffix in (".json", ".safetensors") and not path.with_suffix(".json").exists():
        raise InputError(f"{path}: no segmentation DDPM weights; train them with "
                         "'scripts/train_segmentation.py ddpm'")
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model = load_model(path, device=dev, autocast=dev.type == "cpu")
    net = model.spec.net
    if net.in_channels != 2 or net.out_channels != 1:
        raise InputError(f"{path}: not a mask DDPM (needs 2 input channels, mask + image, and "
                         f"1 output; has {net.in_channels} / {net.out_channels})")
    return model


# ------------------------------------------------------------------------ supervised UNet
def unet_loss() -> nn.Module:
    """Dice + binary cross-entropy on logits (MONAI ``DiceCELoss(sigmoid=True)``), the usual
    supervised segmentation loss (Isensee et al. 2021, nnU-Net)."""
    from monai.losses import DiceCELoss

    return DiceCELoss(sigmoid=True)


@torch.no_grad()
def unet_segment(net: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """Lesion probabilities (B, 1, H, W) in [0, 1] (sigmoid of the logits); the network sees
    the image in model space, like the diffusion model."""
    dev = next(net.parameters()).device
    return torch.sigmoid(net(to_model(images01.to(dev))).float()).cpu()


def unet_path(name: str = UNET_NAME) -> Path:
    return SEG_DIR / f"{name}.safetensors"


def save_seg_unet(path: str | Path, net: nn.Module, card: dict,
                  features: tuple[int, ...] = UNET_FEATURES) -> Path:
    """Weights + metadata (features, card as JSON) in one safetensors file
    (:func:`meddiff.zoo.store.save_weights`)."""
    return save_weights(path, net, {"features": json.dumps(list(features)),
                                    "card": json.dumps(card)})


def load_seg_unet(path: str | Path | None = None) -> tuple[BasicUNet, dict]:
    """The supervised UNet (eval mode, CPU) and its card (default: the bundled one)."""
    net, meta = load_weights(Path(path) if path is not None else unet_path(),
                             lambda m: build_seg_unet(tuple(json.loads(m["features"]))),
                             "segmentation UNet", "scripts/train_segmentation.py unet")
    return net, json.loads(meta["card"])


# ------------------------------------------------------------------------ evaluation helpers
def uncertainty_error_correlation(var: torch.Tensor, mean: torch.Tensor,
                                  gt: torch.Tensor) -> float:
    """Pearson correlation between the variance map and the error ``|1[mean >= 0.5] - gt|``
    over all pixels (a check of Wolleb et al.'s claim that the variance flags errors); NaN
    when either is constant."""
    err = ((mean >= 0.5).float() - gt.float()).abs().flatten().double()
    v = var.flatten().double()
    v, err = v - v.mean(), err - err.mean()
    den = float(v.norm() * err.norm())
    return float((v * err).sum()) / den if den > 0 else math.nan


__all__ = ["SEG_LESIONS", "SEG_CONTRASTS", "SEG_DIR", "seg_spec", "condition", "masks_from_model",
           "seg_diffusion_loss", "sample_masks", "ensemble_stats", "Segmentation", "segment",
           "load_seg_ddpm", "build_seg_unet", "unet_loss", "unet_segment", "save_seg_unet",
           "load_seg_unet", "uncertainty_error_correlation"]
