"""The one place where intensities are converted between user space and model space.

Contract used throughout meddiff:
- *image space*: float32 in [0, 1] (after robust normalisation of the user's data);
- *model space*: float32 in [-1, 1], what every diffusion network sees and every sampler returns.
"""
from __future__ import annotations

import numpy as np
import torch


def to_model(x01: torch.Tensor) -> torch.Tensor:
    """Map image space [0, 1] to model space [-1, 1]."""
    return x01 * 2.0 - 1.0


def from_model(xm: torch.Tensor) -> torch.Tensor:
    """Map model space [-1, 1] back to image space [0, 1] (no clipping)."""
    return (xm + 1.0) * 0.5


def model_space(image: torch.Tensor, intensity: str = "unit") -> torch.Tensor:
    """Image-space tensor -> model space for a model of ``intensity`` (``DiffusionSpec``):
    ``"unit"`` maps [0, 1] -> [-1, 1]; ``"complex"`` (real, imaginary channels) is unchanged."""
    return image if intensity == "complex" else to_model(image)


def image_space(xm: torch.Tensor, intensity: str = "unit") -> torch.Tensor:
    """Inverse of :func:`model_space` (no clipping)."""
    return xm if intensity == "complex" else from_model(xm)


def normalize_percentile(x: np.ndarray, lo: float = 0.5, hi: float = 99.5,
                         mask: np.ndarray | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Robustly rescale an image to [0, 1] using percentiles (of ``mask`` voxels if given).

    Returns the rescaled float32 array (clipped to [0, 1]) and the (low, high) values used, so
    the mapping can be inverted with :func:`denormalize`.
    """
    vals = x[mask] if mask is not None and mask.any() else x.ravel()
    a, b = np.percentile(vals, [lo, hi]).astype(float)
    if not np.isfinite([a, b]).all() or b <= a:
        b = a + 1.0
    y = np.clip((x.astype(np.float32) - a) / (b - a), 0.0, 1.0)
    return y.astype(np.float32), (float(a), float(b))


def normalize_window(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Values in a fixed window (e.g. a CT window in HU) -> image space:
    ``clip((x - lo) / (hi - lo), 0, 1)``, float32; inverted by :func:`denormalize`."""
    lo, hi = window
    return np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def denormalize(y01: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Invert :func:`normalize_percentile` / :func:`normalize_window` for values inside the
    window."""
    a, b = window
    return (y01 * (b - a) + a).astype(np.float32)
