"""The KL autoencoder of latent diffusion (stage 1 of D2, Pinaya et al. 2022, arXiv:2206.03461).

MONAI ``AutoencoderKL`` (Rombach et al. 2022, arXiv:2112.10752, sec. 3.1) trained with an L1
reconstruction loss plus a small KL term (Kingma & Welling 2014, arXiv:1312.6114, app. B); no
perceptual or adversarial loss (their weights cannot be downloaded here). After training, the
latent scale ``s = 1 / std(mu_E(x))`` over augmented training images is measured and stored in
the spec, so the scaled latents have unit standard deviation (Rombach et al. 2022,
sec. 4.3.2, the "scale factor").
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from meddiff.data.intensity import from_model, to_model
from meddiff.errors import ConfigError
from meddiff.eval.metrics import psnr_batch
from meddiff.nets.unet import count_parameters
from meddiff.train.data import make_dataset
from meddiff.train.objectives.base import Objective


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, I))`` summed over the latent elements, averaged over the
    batch (Kingma & Welling 2014, app. B: ``-1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)``).
    ``mu``, ``sigma``: (B, C, h, w); returns a scalar."""
    var = sigma.float() ** 2
    per = 0.5 * (mu.float() ** 2 + var - 1.0 - torch.log(var.clamp(min=1e-12)))
    return per.flatten(1).sum(1).mean()


def autoencoder_loss(ae: nn.Module, x01: torch.Tensor, kl_weight: float = 1e-6,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Training loss ``mean|x - D(z)| + kl_weight * KL`` with ``z = mu + sigma * n`` (the
    reparametrisation trick, Kingma & Welling 2014, sec. 2.4), in model space.

    ``x01``: (B, 1, H, W) in [0, 1]; returns a scalar.
    """
    xm = to_model(x01)
    mu, sigma = ae.encode(xm)
    n = torch.randn(mu.shape, generator=generator, device=mu.device if generator is None
                    else generator.device).to(mu)
    recon = ae.decode(mu + sigma * n).float()
    return (recon - xm).abs().mean() + kl_weight * kl_divergence(mu, sigma)


@torch.no_grad()
def latent_scale(ae: nn.Module, images01: torch.Tensor, batch_size: int = 128) -> float:
    """``1 / std`` of the posterior means ``mu_E(x)`` over ``images01`` (N, 1, H, W) in [0, 1]
    (Rombach et al. 2022, sec. 4.3.2), so scaled latents have unit variance."""
    mus = [ae.encode(to_model(images01[i:i + batch_size]))[0].float()
           for i in range(0, len(images01), batch_size)]
    std = float(torch.cat(mus).std())
    if not math.isfinite(std) or std <= 0:
        raise ConfigError(f"degenerate latents (std {std}); is the autoencoder trained?")
    return 1.0 / std


@dataclass(frozen=True)
class AutoencoderOptions:
    """``kl_weight``: weight of the KL term; ``scale_images``: augmented training images (seed
    ``data.seed + 1``) over which the latent scale is measured; ``val_items``: validation
    images."""

    kl_weight: float = 1e-6
    scale_images: int = 2048
    val_items: int = 10 ** 6


def _images(ds, n: int) -> torch.Tensor:
    return torch.stack([ds[i]["image"] for i in range(min(n, len(ds)))])


class Autoencoder(Objective):
    """KL autoencoder on image-space slices (see the module docstring)."""

    name = "autoencoder"
    kind = "autoencoder"
    Options = AutoencoderOptions

    def check(self) -> None:
        if self.data.spatial_dims != 2 or self.data.dataset == "complex_brain_slices":
            raise ConfigError("the autoencoder trains on one-channel 2D slices")

    def loss(self, nets: Mapping[str, nn.Module], batch: dict, generator: torch.Generator,
             step: int) -> torch.Tensor:
        return autoencoder_loss(nets["model"], batch["image"].float(), self.options.kl_weight,
                                generator)

    def final_spec(self, net: nn.Module):
        """The spec with the latent scale measured on the trained ``net``."""
        data = replace(self.data, seed=self.data.seed + 1, length=self.options.scale_images)
        images = _images(make_dataset(data, self.image_size), self.options.scale_images)
        return replace(self.spec, latent_scale=latent_scale(net, images))

    @torch.no_grad()
    def validate(self, nets: Mapping[str, nn.Module], spec) -> dict:
        """PSNR (data range 1) and mean L1 of ``D(E(x))`` on the held-out validation slices."""
        net = nets["model"]
        x = _images(make_dataset(self.data, self.image_size, split="val"), self.options.val_items)
        rec = from_model(net.decode(net.encode(to_model(x))[0]).float()).clamp(0, 1)
        return {"val_psnr_db": round(float(psnr_batch(rec, x, 1.0).mean()), 2),
                "val_l1": round(float((rec - x).abs().mean()), 5), "val_images": len(x),
                "latent_scale": round(spec.latent_scale, 6)}

    def network_text(self, spec, net: nn.Module) -> str:
        c, f = spec.net, spec.net.factor
        return (f"MONAI AutoencoderKL, channels {list(c.channels)}, {c.num_res_blocks} residual "
                f"block(s) per level, no attention, {spec.image_size} x {spec.image_size} x 1 -> "
                f"{spec.image_size // f} x {spec.image_size // f} x {c.latent_channels}, "
                f"{count_parameters(net) / 1e6:.2f} M parameters")

    def loss_text(self) -> str:
        return (f"L1 in model space [-1, 1] + {self.options.kl_weight:g} x KL (Kingma & Welling "
                "2014); no perceptual or adversarial loss")
