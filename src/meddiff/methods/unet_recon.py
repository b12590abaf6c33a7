"""Supervised UNet reconstruction baseline (``unet``): a residual image-to-image network trained
on the same simulated data as the diffusion priors.

The network maps the direct reconstruction to the image: ``x = d + f(d)`` with ``d`` the
zero-filled MRI image ``A^H y`` (complex, as two channels real / imaginary) or the CT FBP
image (one channel), in image space. This is the fastMRI UNet baseline (Zbontar et al. 2018,
arXiv 1811.08839, sec. 5) and FBPConvNet for sparse-view CT (Jin, McCann, Froustey & Unser
2017, IEEE TIP 26:4509, residual learning). Unlike the diffusion methods it does not enforce
data consistency and it was trained for fixed acquisition settings (MRI: 1D random and
equispaced masks at 4x and 8x; CT: 30 and 60 views and 180 views at a quarter dose).

Weights: ``meddiff/zoo/weights/supervised/recon-unet-{mri,ct}-64.safetensors``, trained by
``scripts/train_recon_unet.py``; the file's metadata holds the architecture and the card.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from meddiff.errors import InputError
from meddiff.nets.basic_unet import FEATURES, ResidualUNet
from meddiff.physics.mri import channels_to_complex, complex_to_channels
from meddiff.zoo.store import load_weights, save_weights

SUPERVISED_DIR = Path(__file__).resolve().parents[1] / "zoo" / "weights" / "supervised"
CHANNELS = {"mri": 2, "ct": 1}


def to_input(direct: torch.Tensor) -> torch.Tensor:
    """Direct reconstruction (B, 1, H, W), complex (MRI) or real (CT) -> network input."""
    return complex_to_channels(direct) if direct.is_complex() else direct


def from_output(out: torch.Tensor, modality: str) -> torch.Tensor:
    """Network output -> image in the operator's domain (complex for MRI)."""
    return channels_to_complex(out) if modality == "mri" else out


def weights_path(modality: str, size: int = 64) -> Path:
    return SUPERVISED_DIR / f"recon-unet-{modality}-{size}.safetensors"


def save(path: Path, net: ResidualUNet, modality: str, card: dict) -> Path:
    """Weights + metadata (modality, features, card JSON) in one safetensors file."""
    return save_weights(path, net, {"modality": modality, "features": json.dumps(list(FEATURES)),
                                    "card": json.dumps(card)})


@functools.lru_cache(maxsize=4)
def load(modality: str, size: int) -> tuple[ResidualUNet, dict]:
    """The bundled UNet of ``modality`` for ``size`` px images (eval mode, CPU) and its card."""
    def build(meta: dict[str, str]) -> ResidualUNet:
        return ResidualUNet(CHANNELS[modality], tuple(json.loads(meta["features"])))

    net, meta = load_weights(weights_path(modality, size), build,
                             f"supervised {modality.upper()} UNet ({size} px)",
                             f"scripts/train_recon_unet.py {modality}")
    return net, json.loads(meta["card"])


@torch.no_grad()
def unet_recon(direct: torch.Tensor, modality: str) -> torch.Tensor:
    """Supervised reconstruction from the direct one (B, 1, H, W) (complex zero-filled MRI or
    real FBP CT, image space) -> (B, 1, H, W) in the same domain."""
    if direct.shape[-1] != direct.shape[-2]:
        raise InputError("the supervised UNet takes square images")
    net = load(modality, int(direct.shape[-1]))[0]
    out = net(to_input(direct).float().cpu())
    return from_output(out, modality).to(direct.device)
