"""Pixel-domain operators: inpainting (missing pixels) and denoising (identity + noise).

Both work on any (B, C, H, W) image, real or complex, in whatever intensity space the caller
uses (image space [0, 1] or model space [-1, 1]; the operator does not rescale). Inpainting as
used for diffusion-based restoration by Song et al. (2022, arXiv:2111.08005) and Lugmayr et al.
(RePaint, 2022, arXiv:2201.09865).
"""
from __future__ import annotations

import numpy as np
import torch

from meddiff.errors import InputError
from meddiff.physics.base import LinearOperator, NoiseModel
from meddiff.physics.masks import as_binary_mask
from meddiff.physics.noise import GaussianNoise


def random_pixel_mask(shape: tuple[int, int], keep_fraction: float,
                      seed: int | np.random.Generator = 0) -> torch.Tensor:
    """Bool (H, W) mask keeping exactly ``round(keep_fraction * H * W)`` random pixels."""
    if not 0 <= keep_fraction <= 1:
        raise InputError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = shape[0] * shape[1]
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=round(keep_fraction * n), replace=False)] = True
    return torch.from_numpy(mask.reshape(shape))


def _check_image(x: torch.Tensor, hw: tuple[int, int]) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[-2:]) != hw:
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise InputError(f"image must have shape (B, C, {hw[0]}, {hw[1]}) to match the mask, "
                         f"got {got}")


class Inpainting(LinearOperator):
    """Keep the pixels where ``mask`` is 1: ``A x = m * x`` (self-adjoint projection).

    Args:
        mask: binary (H, W), 1 = observed; shared by all images and channels.
        noise: optional noise on the observed pixels.

    ``A``, ``A_adjoint`` and ``A_dagger`` (exact pseudo-inverse) all map (B, C, H, W) to
    (B, C, H, W) with zeros at missing pixels; dtype preserved.
    """

    def __init__(self, mask: torch.Tensor, noise: NoiseModel | None = None):
        super().__init__(noise)
        self.mask = as_binary_mask(mask)
        self.shape = tuple(self.mask.shape)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Zero the missing pixels of (B, C, H, W)."""
        _check_image(x, self.shape)
        return x * self.mask.to(device=x.device, dtype=x.real.dtype)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """The adjoint of a projection is itself."""
        return self.A(y)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Exact pseudo-inverse: the projection itself (missing pixels set to 0)."""
        return self.A(y)

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        """Zero the missing pixels (so noise only appears where observed)."""
        return self.A(y)


class Denoising(LinearOperator):
    """Identity forward model with additive Gaussian noise of standard deviation ``sigma``.

    ``sigma`` is in the caller's intensity units (e.g. 0.1 in image space [0, 1]). All of ``A``,
    ``A_adjoint``, ``A_dagger`` return the input unchanged (any shape, any dtype).
    """

    def __init__(self, sigma: float):
        super().__init__(GaussianNoise(sigma))
        self.sigma = float(sigma)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Identity."""
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Identity."""
        return y

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Identity."""
        return y
