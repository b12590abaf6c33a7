"""Synthetic white-matter lesions: soft-edged irregular ellipsoids placed in white matter.

Each lesion is an ellipsoid (random orientation, semi-axes R * (sqrt(e), 1/sqrt(e)[, 1])) whose
normalised radius is perturbed by a smooth random field (``irregularity``) and whose edge is a
logistic ramp of width ``edge_mm``. Blobs replace white matter only: the lesion fraction is
blob * wm, so a lesion never enters CSF or grey matter, and the ground-truth mask is
(blob >= 0.5) & (wm >= 0.5). The lesion compartment is rendered through the same signal
equation as the healthy tissues (:mod:`meddiff.data.mri_signal`), in the spirit of simulated
MS lesions in BrainWeb (Kwan, Evans, Pike (1999), "MRI simulation-based evaluation of
image-processing and classification methods", IEEE TMI 18(11):1085-1097).

Sizes are in mm and converted with the voxel spacing, so lesions scale with resolution.
Two presets differ in size, shape and placement so that a classifier trained on one is tested
on a shifted distribution: ``LESIONS_EVAL`` (the test distribution) and ``LESIONS_TRAIN``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from meddiff.data.mri_signal import DEFAULT_TISSUES, Tissue
from meddiff.errors import ConfigError


@dataclass(frozen=True)
class LesionConfig:
    """Lesion distribution. Ranges are inclusive (low, high), drawn uniformly.

    count: number of lesions per image / volume; radius_mm: equivalent radius; elongation:
    ratio of the two first semi-axes; irregularity: std of the smooth relative radius
    perturbation; edge_mm: width of the soft edge; wm_threshold: minimum WM fraction at a
    centre; csf_distance_mm: allowed distance of a centre to the nearest CSF voxel (fraction
    >= 0.5) - small values give periventricular lesions; tissue: PD / T1 / T2 of the lesion.
    """

    count: tuple[int, int] = (1, 4)
    radius_mm: tuple[float, float] = (3.0, 7.0)
    elongation: tuple[float, float] = (1.0, 1.6)
    irregularity: float = 0.2
    edge_mm: float = 1.0
    wm_threshold: float = 0.9
    csf_distance_mm: tuple[float, float] = (0.0, math.inf)
    tissue: Tissue = field(default_factory=lambda: DEFAULT_TISSUES["lesion"])

    def __post_init__(self):
        ok = (0 <= self.count[0] <= self.count[1] and 0 < self.radius_mm[0] <= self.radius_mm[1]
              and 1.0 <= self.elongation[0] <= self.elongation[1] and self.irregularity >= 0
              and self.edge_mm > 0 and 0 <= self.csf_distance_mm[0] <= self.csf_distance_mm[1])
        if not ok:
            raise ConfigError(f"invalid lesion configuration {self}")


#: Reference (test) distribution: 1-4 lesions of radius 3-7 mm anywhere in deep/periventricular WM.
LESIONS_EVAL = LesionConfig()
#: Shifted training distribution: fewer, smaller, rounder, smoother, periventricular lesions.
LESIONS_TRAIN = LesionConfig(count=(1, 3), radius_mm=(2.5, 5.0), elongation=(1.0, 1.2),
                             irregularity=0.1, csf_distance_mm=(0.0, 8.0))


def _random_rotation(n: int, rng: np.random.Generator) -> np.ndarray:
    if n == 2:
        a = rng.uniform(0.0, 2.0 * math.pi)
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, std: float) -> np.ndarray:
    coarse = torch.from_numpy(rng.normal(0.0, std, (1, 1) + (4,) * len(shape)).astype(np.float32))
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(coarse, size=shape, mode=mode, align_corners=True)[0, 0].numpy()


def _blob(centre: np.ndarray, radius_px: float, edge_px: float, shape: tuple[int, ...],
          cfg: LesionConfig, rng: np.random.Generator) -> tuple[tuple[slice, ...], np.ndarray]:
    """One soft blob in a local box: returns the box slices and blob values in [0, 1]."""
    n = len(shape)
    e = rng.uniform(*cfg.elongation)
    semi = radius_px * np.array([math.sqrt(e), 1.0 / math.sqrt(e)] + [1.0] * (n - 2))
    half = int(math.ceil(semi.max() * (1.0 + 3.0 * cfg.irregularity) + 3.0 * edge_px)) + 1
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre).astype(int) + half + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    coords = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
    local = np.einsum("...i,ij->...j", coords - centre, _random_rotation(n, rng)) / semi
    dist = np.linalg.norm(local, axis=-1)
    bshape = tuple(s.stop - s.start for s in box)
    if cfg.irregularity > 0:
        dist = dist / np.maximum(1.0 + _smooth_noise(bshape, rng, cfg.irregularity), 0.3)
    ramp = (1.0 - dist) * radius_px / edge_px  # ~ signed distance to the boundary in edge units
    return box, (1.0 / (1.0 + np.exp(-4.0 * ramp))).astype(np.float32)


def _centre_candidates(wm: np.ndarray, csf: np.ndarray, spacing_mm: float,
                       cfg: LesionConfig) -> np.ndarray:
    ok = wm >= cfg.wm_threshold
    dmin, dmax = cfg.csf_distance_mm
    if ok.any() and (dmin > 0 or math.isfinite(dmax)):
        dist = ndimage.distance_transform_edt(csf < 0.5) * spacing_mm
        ok &= (dist >= dmin) & (dist <= dmax)
    return np.argwhere(ok)


def render_lesions(wm: np.ndarray, csf: np.ndarray, spacing_mm: float, config: LesionConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw lesions for one image / volume.

    wm, csf: fraction maps (*spatial) in [0, 1] on an isotropic grid of ``spacing_mm``.
    Returns (lesion fraction (*spatial) float32 in [0, wm], ground-truth mask (*spatial) bool).
    When no voxel satisfies the placement rules the image gets no lesion (all zeros).
    """
    shape = wm.shape
    blobs = np.zeros(shape, dtype=np.float32)
    cand = _centre_candidates(wm, csf, spacing_mm, config)
    n = int(rng.integers(config.count[0], config.count[1] + 1))
    if cand.shape[0] == 0 or n == 0:
        return blobs, np.zeros(shape, dtype=bool)
    edge_px = config.edge_mm / spacing_mm
    for _ in range(n):
        centre = cand[rng.integers(cand.shape[0])] + rng.uniform(-0.5, 0.5, len(shape))
        radius_px = rng.uniform(*config.radius_mm) / spacing_mm
        box, values = _blob(centre, radius_px, edge_px, shape, config, rng)
        np.maximum(blobs[box], values, out=blobs[box])
    fraction = (blobs * wm).astype(np.float32)
    return fraction, (blobs >= 0.5) & (wm >= 0.5)


def insert_lesions(fractions: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """(csf, gm, wm) stack (3, *spatial) + lesion fraction -> (csf, gm, wm - lesion, lesion).

    The lesion replaces white matter, so the sum of compartments (the brain fraction) is kept.
    """
    csf, gm, wm = fractions
    return np.stack([csf, gm, np.clip(wm - lesion, 0.0, 1.0), lesion]).astype(np.float32)
