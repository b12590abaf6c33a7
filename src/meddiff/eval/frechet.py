"""FD-MedEnc: Fréchet distance between Gaussian fits of meddiff-encoder features of two image sets.

This is *not* FID. FID (Heusel et al. 2017, arXiv:1706.08500) uses an ImageNet Inception-v3 whose
weights would have to be downloaded and which has never seen an MR image. FD-MedEnc applies the same
Fréchet distance to the 128-d features of :class:`FeatureEncoder`, a small CNN that meddiff trains
itself on its built-in brain slices (``meddiff train configs/feature_encoder.yaml``; weights
bundled as the store model ``feature_encoder``). Values are only
comparable between runs that use the same encoder weights *and* the same number of images (the
estimator is biased for finite samples; Chong & Forsyth 2020, arXiv:1911.07023).

Fréchet (2-Wasserstein) distance between N(mu1, C1) and N(mu2, C2) (Dowson & Landau 1982,
J. Multivariate Anal. 12(3):450-455, the squared form used as FID by Heusel et al. 2017):

    d^2 = ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2})
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from meddiff.errors import InputError
from meddiff.nets.feature_encoder import FeatureEncoder
from meddiff.zoo.store import load

#: the bundled encoder in the model store (``meddiff models``)
DEFAULT_ENCODER = "feature_encoder"


def load_feature_encoder(name_or_path: str | Path = DEFAULT_ENCODER) -> FeatureEncoder:
    """The FD-MedEnc encoder from the model store (eval mode, CPU): the bundled one by default,
    or any ``feature-encoder`` model (``NAME.json`` / run dir). One-line InputError otherwise."""
    return load(name_or_path, kind="feature-encoder").net


def _as_images(images: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    x = torch.as_tensor(images) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise InputError(f"{name} must be images of shape (N, 1, H, W), got {shape}")
    if x.shape[0] < 2:
        raise InputError(f"{name} needs at least 2 images to fit a covariance, got {x.shape[0]}")
    if x.is_complex() or not torch.isfinite(x).all():
        raise InputError(f"{name} must be real and finite (image space [0, 1])")
    return x


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor | np.ndarray,
           batch_size: int = 128) -> np.ndarray:
    """Features (N, F) float64 of images (N, 1, H, W) in image space [0, 1], in eval mode."""
    x = _as_images(images, "images")
    p = next(encoder.parameters())
    was_training = encoder.training
    encoder.eval()
    try:
        feats = [encoder(x[i:i + batch_size].to(p.device, torch.float32)).double().cpu()
                 for i in range(0, x.shape[0], batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(feats).numpy()


def feature_stats(encoder: nn.Module, images: torch.Tensor | np.ndarray,
                  batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of the encoder features of images (N >= 2, 1, H, W)."""
    f = encode(encoder, images, batch_size)
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm_product(cov1: np.ndarray, cov2: np.ndarray, eps: float) -> np.ndarray:
    """(C1 C2)^{1/2} with scipy; retried on C_i + eps I when the root is non-finite or complex."""
    def root(a: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return scipy.linalg.sqrtm(a)

    def bad(s: np.ndarray) -> bool:
        scale = max(1.0, float(np.abs(np.diag(s)).max()))
        return not np.isfinite(s).all() or (
            np.iscomplexobj(s) and float(np.abs(np.diag(s).imag).max()) > 1e-3 * scale)

    s = root(cov1 @ cov2)
    if bad(s):
        off = eps * np.eye(cov1.shape[0])
        s = root((cov1 + off) @ (cov2 + off))
        if bad(s):
            raise InputError("covariance matrices are too ill-conditioned for the Fréchet distance")
    return np.real(s)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (formula in module docstring).

    mu: (d,) (a scalar is read as d = 1); cov: (d, d) symmetric PSD. The matrix root is
    ``scipy.linalg.sqrtm(cov1 @ cov2)``; if it is non-finite or has a non-negligible imaginary
    diagonal (near-singular covariances, e.g. fewer samples than features), it is recomputed with
    ``eps`` added to both diagonals; a negligible imaginary residue is dropped. Result >= 0.
    """
    m1, m2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    c1, c2 = (np.atleast_2d(np.asarray(c, np.float64)) for c in (cov1, cov2))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise InputError(f"expected mu (d,) and cov (d, d) for both Gaussians, got "
                         f"{m1.shape}, {c1.shape}, {m2.shape}, {c2.shape}")
    if not all(np.isfinite(a).all() for a in (m1, m2, c1, c2)):
        raise InputError("means and covariances must be finite")
    diff = m1 - m2
    tr_root = float(np.trace(_sqrtm_product(c1, c2, eps)))
    return max(float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * tr_root), 0.0)


def fd_medenc(images_a: torch.Tensor | np.ndarray, images_b: torch.Tensor | np.ndarray,
              encoder: nn.Module | None = None) -> float:
    """FD-MedEnc between two image sets, each (N, 1, H, W) in image space [0, 1], N >= 2.

    encoder: a :class:`FeatureEncoder` (or any module mapping (B, 1, H, W) to (B, F)); default
    the bundled trained weights (InputError if they are missing). Lower = more similar sets;
    compare values only at equal set sizes and with the same encoder.
    """
    enc = encoder if encoder is not None else load_feature_encoder()
    mu_a, cov_a = feature_stats(enc, images_a)
    mu_b, cov_b = feature_stats(enc, images_b)
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)
