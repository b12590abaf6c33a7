"""Domain randomisation of simulated MR slices, in the spirit of SynthSeg (Billot et al., Medical
Image Analysis 2023, arXiv 2107.09559, sec. 3.1-3.2): the anatomy is kept, everything a scanner
and a protocol change is drawn at random, so that a prior trained on one template anatomy sees
contrasts, heads and acquisitions it would otherwise never meet.

Per item (2D, on the tissue fractions of one warped section, at its pixel size):
    - one random intensity per tissue class, uniform in [0, 1] (any contrast, not only the
      four signal equations), mixed by the partial-volume fractions;
    - head layers outside the brain (with probability ``head``): a CSF / dura rim, a dark skull
      and a scalp of random thickness (mm) and intensity, on a dark random background;
    - a random resolution: Gaussian blur of FWHM up to ``max_blur_mm`` along a random in-plane
      direction (thick or anisotropic acquisitions);
    - a strong bias field, normalisation by the 99.5th percentile to image space [0, 1], gamma
      and Rician noise (:mod:`meddiff.data.augment`).
The deformation itself is the caller's (:data:`STRONG_WARP`, stronger than the default).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from meddiff.data import augment as aug

#: the warp of randomised items: twice the default elastic and affine strength
STRONG_WARP = aug.AugmentConfig(rotate_deg=15.0, scale=0.15, translate=0.06, elastic=0.03,
                                bias=0.3, gamma=0.4, noise=0.05)


@dataclass(frozen=True)
class RandomizeConfig:
    """Ranges of :func:`randomized_mr` (thicknesses in mm, intensities in image space)."""

    head: float = 0.7              # probability of skull / scalp layers
    rim_mm: tuple[float, float] = (0.5, 3.0)
    skull_mm: tuple[float, float] = (3.0, 8.0)
    scalp_mm: tuple[float, float] = (2.0, 8.0)
    skull_level: tuple[float, float] = (0.0, 0.3)
    background_level: tuple[float, float] = (0.0, 0.08)
    max_blur_mm: float = 4.0


def _head_layers(brain: np.ndarray, spacing_mm: float, csf_level: float,
                 rng: np.random.Generator, cfg: RandomizeConfig) -> np.ndarray:
    """Intensity (H, W) outside the brain: rim, skull, scalp shells at the distance (mm) from the
    brain mask, then background; zero-thickness head (probability 1 - ``head``) gives background
    everywhere."""
    background = rng.uniform(*cfg.background_level)
    if not brain.any() or rng.random() >= cfg.head:
        return np.full(brain.shape, background, dtype=np.float32)
    d = ndimage.distance_transform_edt(~brain) * spacing_mm
    rim = rng.uniform(*cfg.rim_mm)
    skull = rim + rng.uniform(*cfg.skull_mm)
    scalp = skull + rng.uniform(*cfg.scalp_mm)
    levels = (csf_level, rng.uniform(*cfg.skull_level), rng.uniform(0.2, 1.0), background)
    shells = np.select([d <= rim, d <= skull, d <= scalp], levels[:3], levels[3])
    return shells.astype(np.float32)


def _anisotropic_blur(img: np.ndarray, spacing_mm: float, rng: np.random.Generator,
                      max_fwhm_mm: float) -> np.ndarray:
    """Gaussian blur of random FWHM in [0, ``max_fwhm_mm``] along a random in-plane direction
    (rotate, blur rows, rotate back)."""
    sigma = rng.uniform(0.0, max_fwhm_mm) / 2.355 / spacing_mm
    if sigma < 0.3:
        return img
    angle = rng.uniform(0.0, 180.0)
    rot = ndimage.rotate(img, angle, reshape=False, order=1, mode="nearest")
    rot = ndimage.gaussian_filter1d(rot, sigma, axis=0)
    return ndimage.rotate(rot, -angle, reshape=False, order=1, mode="nearest")


def randomized_mr(fr: np.ndarray, spacing_mm: float, rng: np.random.Generator,
                  cfg: RandomizeConfig = RandomizeConfig()) -> np.ndarray:
    """A domain-randomised MR-like slice (H, W) float32 in image space [0, 1].

    ``fr``: tissue fractions (K, H, W), K = 3 (csf, gm, wm) or 4 (+ lesion), summing to the brain
    fraction in [0, 1]; ``spacing_mm``: the pixel size.
    """
    brain_frac = np.clip(fr.sum(axis=0), 0.0, 1.0)
    levels = rng.uniform(0.0, 1.0, fr.shape[0]).astype(np.float32)
    inside = np.tensordot(levels, fr, axes=1)
    outside = _head_layers(brain_frac >= 0.5, spacing_mm, float(levels[0]), rng, cfg)
    img = inside + (1.0 - brain_frac) * outside
    img = _anisotropic_blur(img, spacing_mm, rng, cfg.max_blur_mm)
    img = img * aug.bias_field(img.shape, rng, STRONG_WARP.bias)
    top = float(np.percentile(img, 99.5))
    img = np.clip(img / max(top, 1e-6), 0.0, 1.0)
    return aug.random_intensity(img, rng, STRONG_WARP)
