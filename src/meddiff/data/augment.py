"""Random spatial and intensity augmentation, applied consistently to images and label maps.

Spatial: a *pull* displacement field ``d`` (*shape, n) on the normalised grid [-1, 1]^n
(``align_corners`` convention, last axis ordered (x, y[, z]) = (W, H[, D]) as in
``torch.nn.functional.grid_sample``) so that ``warp(f, d)(p) = f(p + d(p))``. ``d`` = small
affine (rotation, anisotropic scale, translation) + smooth elastic field (Gaussian
control-point values interpolated with Gaussian weights), after Simard, Steinkraus, Platt
(2003), "Best practices for convolutional neural networks applied to visual document
analysis", ICDAR (elastic distortion). Fraction maps and
masks are warped bilinearly (masks thresholded at 0.5 afterwards), integer labels with 'nearest'.

Intensity: smooth multiplicative bias field exp(polynomial of degree 3), after the low-order
model of Styner, Brechbuhler, Szekely, Gerig (2000), "Parametric estimate of intensity
inhomogeneities applied to MRI", IEEE TMI 19(3):153-165; gamma x -> x^g; Rician noise
|x + sigma (n1 + i n2)| of a magnitude image (Gudbjartsson & Patz (1995), "The Rician
distribution of noisy MRI data", MRM 34(6):910-914).

All functions take square (2D) / cubic (3D) spatial shapes; rotation is defined in normalised
coordinates, which equal physical ones only for isotropic square / cubic grids.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the random augmentation (all at ``strength`` 1).

    rotate_deg: max |rotation| per axis; scale: max |log scale| per axis;
    translate: max |shift| as a fraction of the half field of view; elastic: std of control
    point displacement (normalised units, 0.02 ~ 1 % of the FOV); elastic_points: control grid
    size per axis; bias: std of the log bias field; gamma: max |log gamma|; noise: max Rician
    sigma in image-space units (drawn uniformly in [0, noise]).
    """

    rotate_deg: float = 8.0
    scale: float = 0.08
    translate: float = 0.04
    elastic: float = 0.015
    elastic_points: int = 6
    bias: float = 0.15
    gamma: float = 0.2
    noise: float = 0.03


@functools.lru_cache(maxsize=16)
def identity_grid(shape: tuple[int, ...]) -> np.ndarray:
    """Identity sampling grid (*shape, n) float32 in [-1, 1], last axis (x, y[, z]) order."""
    n = len(shape)
    if n not in (2, 3):
        raise ConfigError(f"spatial shape must be 2D or 3D, got {shape}")
    axes = [np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij")[::-1], axis=-1)
    grid.setflags(write=False)
    return grid


def _rotation(angles: np.ndarray) -> np.ndarray:
    if angles.size == 1:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    return rot


def affine_displacement(shape: tuple[int, ...], matrix: np.ndarray,
                        shift: np.ndarray) -> np.ndarray:
    """Displacement (*shape, n) float32 of the pull map p -> matrix @ p + shift (normalised)."""
    grid = identity_grid(tuple(shape))
    delta = (np.asarray(matrix) - np.eye(len(shape))).astype(np.float32)
    shift = np.asarray(shift, dtype=np.float32)
    out = np.empty_like(grid)
    for i in range(len(shape)):  # elementwise, no BLAS (see _separable)
        out[..., i] = shift[i] + sum(grid[..., j] * delta[i, j] for j in range(len(shape)))
    return out


@functools.lru_cache(maxsize=16)
def _smooth_weights(size: int, points: int) -> np.ndarray:
    """(size, points) row-normalised Gaussian weights of equispaced control points on [-1, 1]."""
    x = np.linspace(-1.0, 1.0, size)[:, None]
    c = np.linspace(-1.0, 1.0, points)[None, :]
    w = np.exp(-0.5 * ((x - c) / (2.0 / (points - 1))) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def elastic_displacement(shape: tuple[int, ...], rng: np.random.Generator, std: float,
                         points: int = 6) -> np.ndarray:
    """Smooth random displacement (*shape, n): N(0, std) control points on a ``points``^n grid,
    interpolated with normalised Gaussian weights (a smooth partition of unity)."""
    n = len(shape)
    if points < 2:
        raise ConfigError("elastic_points must be >= 2")
    ctrl = rng.normal(0.0, std, size=(n,) + (points,) * n).astype(np.float32)
    field = _separable(ctrl, [_smooth_weights(s, points) for s in shape])
    return np.ascontiguousarray(np.moveaxis(field, 0, -1), dtype=np.float32)


def _separable(coef: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """Apply matrix mats[k] (size_k, m_k) along axis k+1 of coef (C, m_1, .., m_n).

    Plain ``np.einsum`` (C loops, no BLAS): on a shared machine a multi-threaded BLAS call on
    such small operands is ~40x slower.
    """
    letters = "abcdefgh"[:coef.ndim]
    out = coef
    for k, m in enumerate(mats):
        src = letters
        dst = letters[:k + 1] + "z" + letters[k + 2:]
        out = np.einsum(f"z{letters[k + 1]},{src}->{dst}", m, out)
    return out


def random_displacement(shape: tuple[int, ...], rng: np.random.Generator,
                        config: AugmentConfig = AugmentConfig(),
                        strength: float = 1.0) -> np.ndarray:
    """Random affine + elastic pull displacement (*shape, n); exactly zero at strength 0."""
    n = len(shape)
    n_angles = 1 if n == 2 else 3
    angles = np.deg2rad(rng.uniform(-1, 1, n_angles) * config.rotate_deg * strength)
    scales = np.exp(rng.uniform(-1, 1, n) * config.scale * strength)
    shift = rng.uniform(-1, 1, n) * config.translate * strength
    disp = affine_displacement(shape, _rotation(angles) @ np.diag(scales), shift)
    if config.elastic > 0 and strength > 0:
        disp = disp + elastic_displacement(shape, rng, config.elastic * strength,
                                           config.elastic_points)
    return disp


def _sample(x: torch.Tensor, grid: np.ndarray, mode: str, padding: str) -> torch.Tensor:
    g = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None]
    return F.grid_sample(x[None], g, mode=mode, padding_mode=padding, align_corners=True)[0]


def warp(x: np.ndarray, disp: np.ndarray, mode: str = "bilinear") -> np.ndarray:
    """Resample ``x`` (C, *shape) at p + disp(p) (disp (*shape, n)); outside the FOV is 0.

    ``mode`` 'bilinear' for images / fractions / masks, 'nearest' for integer labels.
    Returns float32 (C, *shape).
    """
    if mode not in ("bilinear", "nearest"):
        raise ConfigError(f"unknown interpolation mode {mode!r}")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return _sample(t, identity_grid(tuple(x.shape[1:])) + disp, mode, "zeros").numpy()


def invert_displacement(disp: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Approximate inverse e of a small pull displacement d: solves e(p) = -d(p + e(p)).

    Fixed-point iteration, converges when the Jacobian of d has norm < 1 (small deformations).
    Input and output (*shape, n) float32.
    """
    n = disp.shape[-1]
    ident = identity_grid(tuple(disp.shape[:-1]))
    d_chan = torch.from_numpy(np.ascontiguousarray(np.moveaxis(disp, -1, 0), dtype=np.float32))
    inv = -disp
    for _ in range(iterations):
        inv = -np.moveaxis(_sample(d_chan, ident + inv, "bilinear", "border").numpy(), 0, n)
    return np.ascontiguousarray(inv, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _powers(size: int, degree: int) -> np.ndarray:
    """(size, degree + 1) monomials x^k on [-1, 1], columns k >= 1 scaled to unit RMS."""
    x = np.linspace(-1.0, 1.0, size)[:, None] ** np.arange(degree + 1)[None, :]
    x[:, 1:] /= np.sqrt((x[:, 1:] ** 2).mean(axis=0))
    return x.astype(np.float32)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, std: float,
               degree: int = 3) -> np.ndarray:
    """Smooth positive multiplicative field (*shape) float32 = exp(sum_a c_a prod_k x_k^a_k).

    Polynomial of total degree 1..``degree`` with unit-RMS monomials and N(0, std^2 / #terms)
    coefficients, so the log field has RMS ~ ``std``.
    """
    n = len(shape)
    exps = np.indices((degree + 1,) * n).reshape(n, -1)
    keep = (exps.sum(0) > 0) & (exps.sum(0) <= degree)
    coef = np.zeros((degree + 1,) * n, dtype=np.float32)
    coef.flat[np.nonzero(keep)[0]] = rng.normal(0.0, std / math.sqrt(keep.sum()), keep.sum())
    log_field = _separable(coef[None], [_powers(s, degree) for s in shape])[0]
    return np.exp(log_field).astype(np.float32)


def rician_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of x + sigma (n1 + i n2), n1, n2 ~ N(0, 1): Rician noise on a magnitude image."""
    if sigma <= 0:
        return x.astype(np.float32, copy=False)
    n = rng.standard_normal((2,) + x.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt((x + n[0]) ** 2 + n[1] ** 2)


def random_intensity(img: np.ndarray, rng: np.random.Generator,
                     config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Gamma then Rician noise on an image-space image (*shape) in [0, 1]; result clipped to [0, 1].

    (The bias field acts on the raw signal before normalisation, see :func:`bias_field`.)
    """
    g = float(np.exp(rng.uniform(-config.gamma, config.gamma)))
    sigma = float(rng.uniform(0.0, config.noise))
    out = np.power(np.clip(img, 0.0, 1.0), g)
    return np.clip(rician_noise(out, sigma, rng), 0.0, 1.0).astype(np.float32)
