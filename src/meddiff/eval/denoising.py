"""Denoising on held-out brain slices: diffusion-prior denoisers against classical baselines.

Protocol: clean test-slab slices (image space [0, 1]) plus Gaussian noise of std ``sigma``
(seeded); baselines' parameters are tuned on the validation slab (never on the test slab);
PSNR / SSIM with data range 1 and NMSE against the clean slice, mean over slices.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_tv_chambolle

from meddiff.data.datasets import BrainSlices
from meddiff.eval.metrics import nmse_batch, psnr_batch, ssim_batch

Denoise = Callable[[torch.Tensor, float], torch.Tensor]  # (B,1,H,W) [0,1], sigma -> same


def held_out(split: str, size: int, seed: int = 0) -> torch.Tensor:
    """Every clean slice of a held-out slab (all contrasts): (N, 1, size, size) in [0, 1]."""
    ds = BrainSlices(split, size=size, augment=False, seed=seed)
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def add_noise(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return clean + sigma * torch.randn(clean.shape, generator=g)


def _per_slice(fn: Callable[[np.ndarray], np.ndarray], x: torch.Tensor) -> torch.Tensor:
    out = np.stack([fn(im[0].numpy().astype(np.float64)) for im in x])[:, None]
    return torch.from_numpy(out).float().clamp(0, 1)


def gaussian_denoiser(width: float) -> Denoise:
    return lambda y, sigma: _per_slice(lambda a: gaussian_filter(a, width), y)


def tv_denoiser(weight: float) -> Denoise:
    """Total-variation denoising (Chambolle 2004, ROF model)."""
    return lambda y, sigma: _per_slice(lambda a: denoise_tv_chambolle(a, weight=weight), y)


def tune(make: Callable[[float], Denoise], grid: list[float], clean: torch.Tensor, sigma: float,
         seed: int) -> float:
    """The grid value with the best mean PSNR on ``clean`` (validation data) at ``sigma``."""
    noisy = add_noise(clean, sigma, seed)
    scores = [float(psnr_batch(make(v)(noisy, sigma), clean, 1.0).mean()) for v in grid]
    return grid[int(np.argmax(scores))]


@dataclass
class Row:
    method: str
    sigma: float
    psnr: float
    ssim: float
    nmse: float
    nfe: int
    seconds_per_slice: float
    setting: str = ""


def score(name: str, out: torch.Tensor, clean: torch.Tensor, sigma: float, nfe: int, seconds: float,
          setting: str = "") -> Row:
    return Row(name, sigma, float(psnr_batch(out, clean, 1.0).mean()),
               float(ssim_batch(out, clean, 1.0).mean()), float(nmse_batch(out, clean).mean()),
               nfe, seconds / len(clean), setting)


def run_method(name: str, fn: Denoise, noisy: torch.Tensor, clean: torch.Tensor, sigma: float,
               nfe: int = 0, setting: str = "") -> tuple[Row, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn(noisy, sigma)
    return score(name, out, clean, sigma, nfe, time.perf_counter() - t0, setting), out


def baselines(val: torch.Tensor, sigma: float, seed: int) -> dict[str, tuple[Denoise, str]]:
    """Gaussian smoothing and TV with parameters tuned on ``val`` at ``sigma``."""
    w = tune(gaussian_denoiser, [0.5, 0.75, 1.0, 1.5, 2.0], val, sigma, seed)
    lam = tune(tv_denoiser, [0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24], val, sigma, seed)
    return {"gaussian filter": (gaussian_denoiser(w), f"width {w} px (tuned on val)"),
            "TV (Chambolle)": (tv_denoiser(lam), f"weight {lam} (tuned on val)")}
