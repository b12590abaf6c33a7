"""D2: fast anomaly detection with latent diffusion (Pinaya et al. 2022, arXiv 2206.03461).

Two stages trained on *healthy* slices only (``scripts/train_latent.py``):

1. an autoencoder ``E, D`` (MONAI ``AutoencoderKL``; Rombach et al. 2022, arXiv 2112.10752,
   sec. 3.1) compressing an image ``x`` (B, 1, 64, 64) to a latent ``z`` (B, 3, 16, 16), trained
   with an L1 reconstruction loss plus a small KL term (Kingma & Welling 2014, arXiv 1312.6114,
   app. B; no perceptual or adversarial loss: their weights cannot be downloaded here);
2. a DDPM (Ho et al. 2020, arXiv 2006.11239, eq. 14) on the latents ``z = s * mu_E(x)``, scaled
   by ``s = 1 / std(mu_E)`` over the training images so they have unit standard deviation
   (Rombach et al. 2022, sec. 4.3.2, the "scale factor").

Detection: encode the image, diffuse the latent forward to a few noise levels ``t`` (default
100, 200, 300 of 1000) with ``q(z_t | z_0)`` (Ho et al. 2020, eq. 4), run a few deterministic DDIM
steps back (Song et al. 2021, arXiv 2010.02502, eq. 12), decode, and average the residuals
``|x - D(z_hat_t)|`` over the levels; Gaussian smoothing (the same filter as D3's,
:func:`meddiff.methods.anomaly.gaussian_smooth`) gives the anomaly map (:func:`detect`, which
returns the :class:`~meddiff.methods.anomaly.AnomalyResult` of the other detection methods).
A lesion is off the healthy latent manifold, so the reverse process replaces it by healthy
tissue and it shows in the residual. Cheap because the network works on 16 x 16 latents with
few steps (Pinaya et al.'s point: fast). The autoencoder-residual baseline ``|x - D(E(x))|`` is :func:`ae_residual`.

Intensities: images in image space [0, 1]; the autoencoder sees model space [-1, 1]
(:mod:`meddiff.data.intensity`); latents are unbounded (unit std), so the latent DDPM does not
clip its ``x0`` predictions.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

from meddiff.core.model import Denoiser
from meddiff.core.samplers import partial_diffusion
from meddiff.data.intensity import from_model, to_model
from meddiff.errors import ConfigError, InputError
from meddiff.methods.anomaly import AnomalyResult, gaussian_smooth
from meddiff.nets.autoencoder import AEConfig, build_autoencoder
from meddiff.nets.unet import UNetConfig
from meddiff.device import resolve_device
from meddiff.zoo.store import DiffusionSpec, load_model, load_weights, save_model, save_weights

LATENT_DIR = Path(__file__).resolve().parents[1] / "zoo" / "weights" / "latent"
AE_NAME = "latent-ae-64"
DDPM_NAME = "latent-ddpm-64"
DEFAULT_T = (100, 200, 300)   # partial-diffusion levels (of 1000)
DEFAULT_STEPS = 5             # DDIM steps back from each level
DEFAULT_SMOOTH_PX = 1.0       # Gaussian sigma of the anomaly map, pixels
Reference = Literal["input", "reconstruction"]


# ---------------------------------------------------------------------------- autoencoder
def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, I))`` summed over the latent elements, averaged over the
    batch (Kingma & Welling 2014, app. B: ``-1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)``).
    ``mu``, ``sigma``: (B, C, h, w); returns a scalar."""
    var = sigma.float() ** 2
    per = 0.5 * (mu.float() ** 2 + var - 1.0 - torch.log(var.clamp(min=1e-12)))
    return per.flatten(1).sum(1).mean()


def autoencoder_loss(ae: nn.Module, x01: torch.Tensor, kl_weight: float = 1e-6,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Training loss ``mean|x - D(z)| + kl_weight * KL`` with ``z = mu + sigma * n`` (the
    reparametrisation trick, Kingma & Welling 2014, sec. 2.4), in model space.

    ``x01``: (B, 1, H, W) in [0, 1]. Returns the loss and its parts ``{"l1", "kl"}`` (floats).
    """
    xm = to_model(x01)
    mu, sigma = ae.encode(xm)
    n = torch.randn(mu.shape, generator=generator, device=mu.device if generator is None
                    else generator.device).to(mu)
    recon = ae.decode(mu + sigma * n).float()
    l1 = (recon - xm).abs().mean()
    kl = kl_divergence(mu, sigma)
    return l1 + kl_weight * kl, {"l1": float(l1.detach()), "kl": float(kl.detach())}


@dataclass
class LatentCodec:
    """An autoencoder plus the latent scale ``s``: images (B, 1, H, W) in [0, 1] <-> latents
    (B, C, H / f, W / f) with unit standard deviation over the training images.

    ``ae`` is anything with ``encode(x) -> (mu, sigma)`` and ``decode(z) -> x`` in model space
    (MONAI ``AutoencoderKL``); the posterior mean ``mu`` is the latent (deterministic)."""

    ae: nn.Module
    scale: float = 1.0

    @torch.no_grad()
    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        return self.ae.encode(to_model(x01))[0].float() * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (clipped)."""
        return from_model(self.ae.decode(z / self.scale).float()).clamp(0.0, 1.0)


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


def ae_residual(codec: LatentCodec, x01: torch.Tensor) -> torch.Tensor:
    """Autoencoder-residual baseline ``|x - D(E(x))|`` (B, 1, H, W) >= 0 for ``x01`` in
    [0, 1] (Baur et al. 2021, arXiv 2004.03271: the reconstruction-error detector)."""
    return (x01 - codec.decode(codec.encode(x01))).abs()


# ---------------------------------------------------------------------------- detector
@dataclass
class LatentDetector:
    """The two D2 stages: ``codec`` (autoencoder + scale) and ``denoiser`` (latent DDPM)."""

    codec: LatentCodec
    denoiser: Denoiser
    card: dict


def _check_levels(den: Denoiser, t_starts: Sequence[float], steps: int) -> list[float]:
    ts = [float(t) for t in t_starts]
    top = den.schedule.num_steps - 1
    if not ts or any(not 0 <= t <= top for t in ts):
        raise ConfigError(f"noise levels must be in [0, {top}], got {list(t_starts)}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    return ts


@torch.no_grad()
def latent_reconstructions(det: LatentDetector, x01: torch.Tensor,
                           t_starts: Sequence[float] = DEFAULT_T, steps: int = DEFAULT_STEPS,
                           seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Healthy reconstructions ``D(z_hat_t)`` of ``x01`` (B, 1, H, W) in [0, 1], one per level:
    returns (L, B, 1, H, W) in [0, 1] for the L levels in ``t_starts``.

    ``z_hat_t``: the encoded latent diffused to ``t`` with fresh Gaussian noise (from
    ``generator``, else a generator seeded with ``seed``) and brought back with ``steps`` DDIM
    (eta 0) steps (:func:`meddiff.core.samplers.partial_diffusion`)."""
    den = det.denoiser
    ts = _check_levels(den, t_starts, steps)
    gen = generator if generator is not None else torch.Generator(den.device).manual_seed(int(seed))
    z0 = det.codec.encode(x01.to(den.device))
    outs = [det.codec.decode(partial_diffusion(den, z0, t, sampler="ddim", steps=steps,
                                               generator=gen)) for t in ts]
    return torch.stack(outs).to(x01.device)


def detect(det: LatentDetector, x01: torch.Tensor, t_starts: Sequence[float] = DEFAULT_T,
           steps: int = DEFAULT_STEPS, smooth_px: float = DEFAULT_SMOOTH_PX,
           reference: Reference = "input", seed: int = 0,
           generator: torch.Generator | None = None) -> AnomalyResult:
    """D2 on images ``x01`` (B, 1, H, W) in [0, 1]; returns an
    :class:`~meddiff.methods.anomaly.AnomalyResult` (the D1/D3/D4 contract): ``maps`` (B, 1, H,
    W) >= 0, ``recon`` the mean healthy reconstruction over the levels in [0, 1], ``nfe`` the
    latent DDPM's network evaluations.

    ``maps = G_smooth * mean_t |r - D(z_hat_t)|`` over the levels ``t_starts``.
    ``reference="input"``: ``r = x`` (Pinaya et al. 2022's residual); ``"reconstruction"``:
    ``r = D(E(x))``, which cancels the autoencoder's own blur so only what the diffusion step
    changed remains. Deterministic for a given ``seed`` (or generator state).
    """
    if reference not in ("input", "reconstruction"):
        raise ConfigError(f"reference must be 'input' or 'reconstruction', got {reference!r}")
    nfe0 = det.denoiser.nfe
    recons = latent_reconstructions(det, x01, t_starts, steps, seed, generator)
    ref = x01 if reference == "input" else det.codec.decode(det.codec.encode(x01.to(
        det.denoiser.device))).to(x01.device)
    maps = gaussian_smooth((recons - ref[None]).abs().mean(0), smooth_px)
    return AnomalyResult(maps, recons.mean(0), det.denoiser.nfe - nfe0)


def anomaly_map(det: LatentDetector, x01: torch.Tensor, t_starts: Sequence[float] = DEFAULT_T,
                steps: int = DEFAULT_STEPS, seed: int = 0, smooth_px: float = DEFAULT_SMOOTH_PX,
                reference: Reference = "input", brain: torch.Tensor | None = None) -> torch.Tensor:
    """The D2 anomaly map (B, 1, H, W) >= 0 of :func:`detect`; ``brain`` (B, 1, H, W) in
    {0, 1} zeroes it outside the brain."""
    amap = detect(det, x01, t_starts, steps, smooth_px, reference, seed).maps
    return amap if brain is None else amap * (brain > 0.5).to(amap)


# ---------------------------------------------------------------------------- storage
def ae_path(name: str = AE_NAME) -> Path:
    return LATENT_DIR / f"{name}.safetensors"


def save_autoencoder(path: str | Path, ae: nn.Module, cfg: AEConfig, scale: float,
                     card: dict) -> Path:
    """Weights + metadata (architecture, latent scale, card as JSON) in one safetensors file
    (:func:`meddiff.zoo.store.save_weights`)."""
    return save_weights(path, ae, {"config": json.dumps(asdict(cfg)), "scale": repr(float(scale)),
                                   "card": json.dumps(card)})


def _ae_from_meta(meta: dict[str, str]) -> nn.Module:
    cfg = json.loads(meta["config"])
    return build_autoencoder(AEConfig(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in cfg.items()}))


def load_autoencoder(path: str | Path | None = None) -> tuple[LatentCodec, dict]:
    """The codec (eval mode, CPU) and card stored at ``path`` (default: the bundled one)."""
    ae, meta = load_weights(Path(path) if path is not None else ae_path(), _ae_from_meta,
                            "latent autoencoder", "scripts/train_latent.py ae")
    return LatentCodec(ae, float(meta["scale"])), json.loads(meta["card"])


def latent_spec(cfg: AEConfig = AEConfig(), image_size: int = 64,
                net: UNetConfig | None = None) -> DiffusionSpec:
    """The latent DDPM's spec: eps-prediction, linear schedule, 1000 steps, no x0 clipping
    (latents are unbounded), on (latent_channels, image_size / f, image_size / f)."""
    c = cfg.latent_channels
    net = net or UNetConfig(in_channels=c, out_channels=c, channels=(64, 128, 128),
                            attention_levels=(False, True, True), num_head_channels=32)
    return DiffusionSpec(net=net, image_size=image_size // cfg.factor, clip_x0=False,
                         data={"space": f"latents of {AE_NAME} ({c} x {image_size // cfg.factor}^2), "
                                        "scaled to unit std"})


def save_latent_ddpm(path: str | Path, net: nn.Module, spec: DiffusionSpec, scale: float,
                     card: dict) -> Path:
    """The latent DDPM as a meddiff pair; the card records the latent scale it was trained
    with (checked against the autoencoder's by :func:`load_detector`)."""
    return save_model(path, net, spec, {**card, "latent_scale": float(scale)})


def load_detector(ae: str | Path | None = None, ddpm: str | Path | None = None,
                  device: str | torch.device = "cpu") -> LatentDetector:
    """Load both stages (defaults: the bundled ``latent-ae-64`` / ``latent-ddpm-64``).

    One-line :class:`InputError` when weights are missing or the DDPM was trained on another
    autoencoder's latents (different scale)."""
    codec, ae_card = load_autoencoder(ae)
    ddpm_json = Path(ddpm) if ddpm is not None else LATENT_DIR / f"{DDPM_NAME}.json"
    if not ddpm_json.with_suffix(".json").exists():
        raise InputError(f"{ddpm_json}: no latent DDPM weights; train them with "
                         "'scripts/train_latent.py ddpm'")
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    loaded = load_model(ddpm_json, device=dev, autocast=dev.type == "cpu")
    trained = loaded.card.get("latent_scale")
    if trained is None or not math.isclose(float(trained), codec.scale, rel_tol=1e-5):
        raise InputError(f"{ddpm_json}: latent DDPM was trained with latent scale {trained}, "
                         f"the autoencoder has {codec.scale:.6g}; retrain stage 2")
    codec.ae.to(dev)
    return LatentDetector(codec, loaded.denoiser, {"autoencoder": ae_card, "ddpm": loaded.card})


__all__ = ["AEConfig", "LatentCodec", "LatentDetector", "build_autoencoder", "kl_divergence",
           "autoencoder_loss", "latent_scale", "ae_residual",
           "latent_reconstructions", "detect", "anomaly_map", "save_autoencoder", "load_autoencoder",
           "latent_spec", "save_latent_ddpm", "load_detector", "LATENT_DIR", "DEFAULT_T"]
