"""Cartesian k-space sampling masks (binary (H, W) tensors, DC at (H // 2, W // 2)).

1D masks sample whole columns (phase-encoding lines along W, readout along H), as in fastMRI
(Zbontar et al., 2018, arXiv:1811.08839, Sec. 5.1): a fully sampled centre block of
``round(center_fraction * W)`` columns plus equispaced or uniformly random outer columns. 2D
masks sample points (two phase-encoding directions, 3D Cartesian acquisitions) with a density
that decays away from the centre: variable-density random, or variable-density Poisson-disc
(Lustig, Donoho & Pauly, 2007, Magn. Reson. Med. 58:1182, Sec. "Sampling"; Bridson, 2007,
SIGGRAPH sketch "Fast Poisson disk sampling in arbitrary dimensions"), both with a fully sampled
square calibration region of ``round(center_fraction * H) x round(center_fraction * W)``.

Every mask samples exactly ``round(H * W / R)`` entries (1D: ``round(W / R)`` columns), so the
achieved acceleration equals the requested ``R >= 1`` up to that rounding. Masks are
reproducible from ``seed`` (an int or a ``numpy.random.Generator``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from meddiff.errors import InputError

_RSA_DENSITY = 0.547 * 4.0 / math.pi  # saturated random packing of discs (Feder, 1980)


def as_binary_mask(mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Validate a sampling mask and return it as a bool tensor (H, W) on its device.

    Accepts a bool or numeric (H, W) tensor / array whose values are all 0 or 1.
    """
    m = torch.as_tensor(mask)
    if m.dim() != 2:
        raise InputError(f"a sampling mask must be 2D (H, W), got shape {tuple(m.shape)}")
    if m.dtype != torch.bool:
        if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise InputError("a sampling mask must contain only 0 and 1")
        m = m != 0
    return m


def achieved_acceleration(mask: torch.Tensor | np.ndarray) -> float:
    """Acceleration ``R = H * W / (number of sampled entries)`` of a binary (H, W) mask."""
    m = as_binary_mask(mask)
    n = int(m.sum())
    if n == 0:
        raise InputError("the sampling mask samples nothing")
    return m.numel() / n


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check(shape: tuple[int, int], acceleration: float, center_fraction: float | None) -> float:
    """Validate the arguments; return the centre fraction (1D default ``0.32 / R``)."""
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"mask shape must be (H, W) with H, W >= 1, got {shape}")
    if not acceleration >= 1:
        raise InputError(f"acceleration must be >= 1, got {acceleration}")
    if center_fraction is None:
        return 0.32 / acceleration
    if not 0 <= center_fraction <= 1:
        raise InputError(f"center_fraction must be in [0, 1], got {center_fraction}")
    return center_fraction


def _centre_block(n: int, length: int) -> np.ndarray:
    """Indices of ``n`` contiguous entries centred on ``length // 2`` (the DC index)."""
    start = length // 2 - n // 2
    return np.arange(start, start + n)


def _counts(total: int, n_centre: int, acceleration: float) -> int:
    """Number of entries to sample outside the centre so that ``total / sampled ~= R``."""
    n_sampled = max(1, round(total / acceleration))
    if n_centre > n_sampled:
        raise InputError(f"the fully sampled centre ({n_centre} of {total}) exceeds the "
                         f"1/{acceleration:g} budget; lower center_fraction")
    return n_sampled - n_centre


def _columns_to_mask(shape: tuple[int, int], cols: np.ndarray) -> torch.Tensor:
    m = np.zeros(shape, dtype=bool)
    m[:, cols] = True
    return torch.from_numpy(m)


def equispaced_mask_1d(shape: tuple[int, int], acceleration: float,
                       center_fraction: float | None = None,
                       seed: int | np.random.Generator = 0) -> torch.Tensor:
    """Fully sampled centre columns plus equispaced outer columns; returns bool (H, W).

    ``center_fraction`` defaults to ``0.32 / R`` (fastMRI's 8 % at 4x, 4 % at 8x). The outer
    columns are equally spaced (real-valued step, floored to integers) over the columns outside the centre
    block, with a random start offset drawn from ``seed``.
    """
    cf = _check(shape, acceleration, center_fraction)
    width = shape[1]
    centre = _centre_block(round(cf * width), width)
    n_outer = _counts(width, centre.size, acceleration)
    outer = np.setdiff1d(np.arange(width), centre)
    if n_outer:
        step = outer.size / n_outer
        picks = np.floor((np.arange(n_outer) + _rng(seed).random()) * step).astype(int)
        centre = np.concatenate([centre, outer[picks]])
    return _columns_to_mask(shape, centre)


def random_mask_1d(shape: tuple[int, int], acceleration: float,
                   center_fraction: float | None = None,
                   seed: int | np.random.Generator = 0) -> torch.Tensor:
    """Fully sampled centre columns plus uniformly random outer columns; returns bool (H, W).

    ``center_fraction`` defaults to ``0.32 / R``; the outer columns are drawn without replacement.
    """
    cf = _check(shape, acceleration, center_fraction)
    width = shape[1]
    centre = _centre_block(round(cf * width), width)
    n_outer = _counts(width, centre.size, acceleration)
    outer = np.setdiff1d(np.arange(width), centre)
    picks = _rng(seed).choice(outer, size=n_outer, replace=False)
    return _columns_to_mask(shape, np.concatenate([centre, picks]))


def _calibration(shape: tuple[int, int], center_fraction: float) -> np.ndarray:
    calib = np.zeros(shape, dtype=bool)
    rows = _centre_block(round(center_fraction * shape[0]), shape[0])
    cols = _centre_block(round(center_fraction * shape[1]), shape[1])
    calib[np.ix_(rows, cols)] = True
    return calib


def _radius_profile(shape: tuple[int, int], decay: float) -> np.ndarray:
    """``1 + decay * rho`` with rho the elliptic k-space radius (1 at the edge midpoints)."""
    ky = (np.arange(shape[0]) - shape[0] // 2) / max(shape[0] / 2, 1)
    kx = (np.arange(shape[1]) - shape[1] // 2) / max(shape[1] / 2, 1)
    return 1.0 + decay * np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def _weighted_pick(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` draws without replacement with probability ~ weights.

    Efraimidis & Spirakis (2006, Inf. Process. Lett. 97:181): keep the k largest
    ``log(u) / w``.
    """
    keys = np.log(rng.random(weights.size)) / weights
    return np.argpartition(-keys, k - 1)[:k] if k else np.zeros(0, dtype=int)


def random_mask_2d(shape: tuple[int, int], acceleration: float,
                   center_fraction: float = 0.125, decay: float = 2.0,
                   seed: int | np.random.Generator = 0) -> torch.Tensor:
    """Variable-density random 2D mask; returns bool (H, W).

    A fully sampled calibration square plus points drawn without replacement with probability
    proportional to ``1 / (1 + decay * rho)^2`` (rho: normalised k-space radius), so at
    ``decay = 2`` the edge is sampled 9 times more sparsely than the centre.
    """
    _check(shape, acceleration, center_fraction)
    calib = _calibration(shape, center_fraction)
    n_outer = _counts(calib.size, int(calib.sum()), acceleration)
    free = np.flatnonzero(~calib)
    weights = _radius_profile(shape, decay).ravel()[free] ** -2
    mask = calib.ravel().copy()
    mask[free[_weighted_pick(weights, n_outer, _rng(seed))]] = True
    return torch.from_numpy(mask.reshape(shape))


def _stencil(r2: int) -> np.ndarray:
    """Offsets (dy, dx) with ``dy^2 + dx^2 < r2`` as a boolean square stencil."""
    half = math.isqrt(max(r2 - 1, 0))
    d = np.arange(-half, half + 1)
    return (d[:, None] ** 2 + d[None, :] ** 2) < r2


def _poisson_sweep(calib: np.ndarray, order: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Greedy dart throwing over grid points in random ``order``.

    A point is accepted when no accepted point (calibration included) lies closer than its
    own radius. Returns the accepted mask (H, W) including the calibration region.
    """
    h, w = calib.shape
    pad = int(math.ceil(radius.max())) + 1
    occ = np.zeros((h + 2 * pad, w + 2 * pad), dtype=bool)
    occ[pad:pad + h, pad:pad + w] = calib
    stencils: dict[int, np.ndarray] = {}
    r2_all = np.ceil(radius.ravel() ** 2).astype(int)
    for idx in order:
        r2 = int(r2_all[idx])
        st = stencils.get(r2)
        if st is None:
            st = stencils[r2] = _stencil(r2)
        half = st.shape[0] // 2
        y, x = divmod(int(idx), w)
        win = occ[y + pad - half:y + pad + half + 1, x + pad - half:x + pad + half + 1]
        if not (win & st).any():
            occ[y + pad, x + pad] = True
    return occ[pad:pad + h, pad:pad + w]


def poisson_disc_mask_2d(shape: tuple[int, int], acceleration: float,
                         center_fraction: float = 0.125, decay: float = 2.0,
                         seed: int | np.random.Generator = 0) -> torch.Tensor:
    """Variable-density Poisson-disc 2D mask; returns bool (H, W).

    Points outside the calibration square are placed by random-order dart throwing with a
    minimum distance ``r0 * (1 + decay * rho)`` (in k-space samples) that grows with the radius
    rho (Lustig et al., 2007; sigpy's ``poisson``). ``r0`` starts from the saturated
    random-packing density ``0.697 / r^2`` and is refined over up to four sweeps; the final
    count is then made exact by dropping random accepted points or adding density-weighted
    free points, so the acceleration is exactly ``R`` up to rounding.
    """
    _check(shape, acceleration, center_fraction)
    rng = _rng(seed)
    calib = _calibration(shape, center_fraction)
    n_outer = _counts(calib.size, int(calib.sum()), acceleration)
    profile = _radius_profile(shape, decay)
    free = np.flatnonzero(~calib)
    r0 = math.sqrt(_RSA_DENSITY * float((profile.ravel()[free] ** -2).sum()) / max(n_outer, 1))
    for _ in range(4):
        mask = _poisson_sweep(calib, rng.permutation(free), r0 * profile).ravel()
        got = int(mask.sum()) - int(calib.sum())
        if abs(got - n_outer) <= 0.02 * n_outer:
            break
        r0 *= math.sqrt(max(got, 1) / max(n_outer, 1))
    outer = np.flatnonzero(mask & ~calib.ravel())
    if outer.size > n_outer:
        mask[rng.choice(outer, size=outer.size - n_outer, replace=False)] = False
    elif outer.size < n_outer:
        empty = np.flatnonzero(~mask)
        weights = profile.ravel()[empty] ** -2
        mask[empty[_weighted_pick(weights, n_outer - outer.size, rng)]] = True
    return torch.from_numpy(mask.reshape(shape))


def calibration_region(mask: torch.Tensor | np.ndarray) -> tuple[slice, slice]:
    """Largest fully sampled rectangle around the k-space centre of a binary (H, W) mask.

    Grows the rectangle from the DC index (H // 2, W // 2) along rows and columns while every
    sample inside stays measured. Returns (row slice, column slice); raises InputError when the
    centre itself is not sampled. A fastMRI-style 1D mask gives all rows times its centre columns.
    """
    m = as_binary_mask(mask).cpu().numpy()
    cy, cx = m.shape[0] // 2, m.shape[1] // 2
    if not m[cy, cx]:
        raise InputError("the mask does not sample the k-space centre (no calibration region)")
    top, bottom, left, right = cy, cy + 1, cx, cx + 1
    grew = True
    while grew:
        grew = False
        for side in range(4):
            t, b, l, r = top - (side == 0), bottom + (side == 1), left - (side == 2), \
                right + (side == 3)
            if t >= 0 and l >= 0 and b <= m.shape[0] and r <= m.shape[1] and m[t:b, l:r].all():
                top, bottom, left, right, grew = t, b, l, r, True
    return slice(top, bottom), slice(left, right)
