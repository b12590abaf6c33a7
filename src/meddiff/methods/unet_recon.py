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
from monai.networks.nets import BasicUNet
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from meddiff.errors import InputError
from meddiff.physics.mri import channels_to_complex, complex_to_channels

SUPERVISED_DIR = Path(__file__).resolve().parents[1] / "zoo" / "weights" / "supervised"
FEATURES = (16, 32, 64, 128, 128, 16)
CHANNELS = {"mri": 2, "ct": 1}


class ResidualUNet(nn.Module):
    """``d -> d + BasicUNet(d)`` on (B, C, H, W), C = 2 (MRI real / imaginary) or 1 (CT);
    H and W divisible by 16."""

    def __init__(self, channels: int, features: tuple[int, ...] = FEATURES):
        super().__init__()
        self.net = BasicUNet(spatial_dims=2, in_channels=channels, out_channels=channels,
                             features=features)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return d + self.net(d)


def to_input(direct: torch.Tensor) -> torch.Tensor:
    """Direct reconstruction (B, 1, H, W), complex (MRI) or real (CT) -> network input."""
    return complex_to_channels(direct) if direct.is_complex() else direct


def from_output(out: torch.Tensor, modality: str) -> torch.Tensor:
    """Network output -> image in the operator's domain (complex for MRI)."""
    return channels_to_complex(out) if modality == "mri" else out


def weights_path(modality: str, size: int = 64) -> Path:
    return SUPERVISED_DIR / f"recon-unet-{modality}-{size}.safetensors"


def save(path: Path, net: ResidualUNet, modality: str, card: dict) -> None:
    """Weights + metadata (modality, features, card JSON) in one safetensors file, atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"modality": modality, "features": json.dumps(list(FEATURES)), "card": json.dumps(card)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)


@functools.lru_cache(maxsize=4)
def load(modality: str, size: int) -> ResidualUNet:
    """The bundled UNet of ``modality`` for ``size`` px images (eval mode, CPU)."""
    path = weights_path(modality, size)
    if not path.exists():
        raise InputError(f"no supervised UNet for {modality} at {size}x{size} px "
                         f"(bundled: {', '.join(p.stem for p in SUPERVISED_DIR.glob('*.safetensors'))})")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        net = ResidualUNet(CHANNELS[modality], tuple(json.loads(meta["features"])))
        net.load_state_dict(state)
    except (SafetensorError, KeyError, RuntimeError, ValueError) as err:
        raise InputError(f"{path}: unreadable UNet weights ({err.__class__.__name__})") from None
    return net.eval()


def card(modality: str, size: int = 64) -> dict:
    """The training card stored with the weights."""
    with safe_open(str(weights_path(modality, size)), "pt") as fh:
        return json.loads(fh.metadata()["card"])


@torch.no_grad()
def unet_recon(direct: torch.Tensor, modality: str) -> torch.Tensor:
    """Supervised reconstruction from the direct one (B, 1, H, W) (complex zero-filled MRI or
    real FBP CT, image space) -> (B, 1, H, W) in the same domain."""
    net = load(modality, int(direct.shape[-1]))
    if direct.shape[-1] != direct.shape[-2]:
        raise InputError("the supervised UNet takes square images")
    out = net(to_input(direct).float().cpu())
    return from_output(out, modality).to(direct.device)
