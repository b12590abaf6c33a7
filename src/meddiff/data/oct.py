"""Simulated retinal OCT B-scans with speckle, and classic speckle-reduction baselines.

The data of system C3, after Hu & Oguz 2022, "Unsupervised denoising of retinal OCT with
diffusion probabilistic model", SPIE Medical Imaging (arXiv 2201.11760): a DDPM is trained on
noisy B-scans only and denoises by entering its reverse process at the step whose noise level
matches the image's. No real OCT is available offline, so the scans are a *simulation*, not
real anatomy:

- :func:`retina_bscan`: a clean intensity B-scan (rows = depth, top = vitreous; columns =
  lateral position) of nine smooth, roughly parallel retinal layers over a textured choroid,
  with an optional foveal pit, lateral gain variation and vessel shadows.
- :func:`speckle_field` / :func:`speckle`: fully developed, spatially correlated speckle
  multiplying the intensity, then the logarithmic display map of OCT (:func:`log_display`).
- :class:`OCTScans`: the torch dataset, items ``noisy`` (speckled) and ``image`` (clean), both
  in display space [0, 1].
- :func:`nlm_baseline`, :func:`tv_baseline`: non-local means and total-variation denoising of
  display images, the classic baselines of the C3 bench.

Display map: ``D(I) = (10 log10 I - b - lo) / (hi - lo)`` clipped to [0, 1], a fixed dB window
``(lo, hi)`` = :data:`DB_WINDOW` shared by every image (not per-image percentiles, so clean and
noisy scans share one affine map that does not depend on the noise draw). ``b`` is 0 for the
clean scan and, for the speckled one, the mean of the log-speckle (:func:`log_speckle_mean_db`),
so that before clipping the noisy display image is the clean one plus zero-mean noise.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage, special
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle
from torch.utils.data import Dataset

from meddiff.data.splits import SPLITS
from meddiff.errors import ConfigError, InputError

#: display window in dB relative to the brightest tissue (RPE, 0 dB): D(I) = 0 at lo, 1 at hi
DB_WINDOW = (-35.0, 5.0)
#: noise floor (vitreous, detection noise) in dB: the clean scan's minimum intensity
FLOOR_DB = -30.0
#: std (rows = axial, columns = lateral) in px of the Gaussian blur of the complex speckle field
SPECKLE_SIGMA = (0.6, 1.0)
#: retinal layers top -> bottom: (name, nominal thickness as a fraction of the image height,
#: reflectivity range in dB); RNFL..OPL are the inner layers that thin in the foveal pit
LAYERS = (
    ("RNFL", 0.035, (-6.0, -2.0)),
    ("GCL", 0.040, (-16.0, -12.0)),
    ("IPL", 0.035, (-11.0, -7.0)),
    ("INL", 0.035, (-20.0, -16.0)),
    ("OPL", 0.025, (-11.0, -7.0)),
    ("ONL", 0.080, (-22.0, -18.0)),
    ("EZ", 0.015, (-4.0, -1.0)),
    ("OS", 0.020, (-12.0, -8.0)),
    ("RPE", 0.030, (-2.0, 0.0)),
)
_INNER = 5  # RNFL, GCL, IPL, INL, OPL


def _smooth_curve(x: np.ndarray, rng: np.random.Generator, amp: float,
                  terms: int = 3) -> np.ndarray:
    """Random smooth 1D function of ``x`` in [0, 1]: cosines of frequency 1..terms, RMS ~ amp."""
    out = np.zeros_like(x)
    for j in range(1, terms + 1):
        out += rng.normal(0.0, amp / j) * np.cos(math.pi * j * x + rng.uniform(0, 2 * math.pi))
    return out * math.sqrt(2.0 / sum(1.0 / j ** 2 for j in range(1, terms + 1)))


def _boundaries(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Layer boundaries (10, W) float64, depth in units of the image height, top (ILM) first.

    Bruch's membrane (bottom of the RPE) is a gently curved, tilted, wavy line; the layers stack
    upwards with random thicknesses; the RNFL thickens towards one side (nasal); with
    probability 0.6 a foveal pit (Gaussian, width 6-10 % of the scan) thins the inner layers
    by 70-95 % and thickens the ONL by up to 30 %.
    """
    xc = rng.uniform(0.3, 0.7)
    bruch = (rng.uniform(0.55, 0.65) - rng.uniform(0.0, 0.4) * (x - xc) ** 2
             + rng.uniform(-0.1, 0.1) * (x - 0.5) + _smooth_curve(x, rng, 0.006))
    thick = np.array([t for _, t, _ in LAYERS])[:, None] * rng.uniform(0.8, 1.25, (len(LAYERS), 1))
    thick = thick * np.ones_like(x)
    nasal = x if rng.random() < 0.5 else 1.0 - x
    thick[0] *= 0.5 + nasal
    if rng.random() < 0.6:
        pit = np.exp(-0.5 * ((x - rng.uniform(0.35, 0.65)) / rng.uniform(0.06, 0.1)) ** 2)
        thick[:_INNER] *= 1.0 - rng.uniform(0.7, 0.95) * pit
        thick[_INNER] *= 1.0 + rng.uniform(0.0, 0.3) * pit
    tops = bruch - np.cumsum(thick[::-1], axis=0)[::-1]
    return np.concatenate([tops, bruch[None]])


def _coverage(edges: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fraction (H, W) of each pixel row ``[edges[i], edges[i + 1])`` inside ``[lo, hi)`` (W,)."""
    top = np.maximum(edges[:-1, None], lo[None])
    bottom = np.minimum(edges[1:, None], hi[None])
    return np.clip(bottom - top, 0.0, None) * (len(edges) - 1)


def _choroid(shape: tuple[int, int], depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Choroid reflectivity (H, W) in dB at ``depth`` (H, W) below Bruch's membrane (fraction of
    the height): -5 to -9 dB fading by 90-150 dB per image height, +-4 dB vessel texture
    (Gaussian-smoothed white noise, grain ~ 2 % of the height)."""
    tex = ndimage.gaussian_filter(rng.standard_normal(shape), max(1.0, 0.02 * shape[0]))
    tex /= tex.std() + 1e-12
    return rng.uniform(-9.0, -5.0) - rng.uniform(90.0, 150.0) * depth + 4.0 * np.tanh(tex)


def _vessels(x: np.ndarray, y: np.ndarray, top: np.ndarray, rng: np.random.Generator):
    """(bright, shadow): 2-4 inner-retinal vessels as Gaussian bright spots just below the RNFL
    (``top`` (W,) its lower boundary) and the multiplicative shadows (H, W) in (0, 1] they cast
    on everything deeper (dark vertical bands, 40-85 % loss at the centre)."""
    bright, shadow = np.zeros((len(y), len(x))), np.ones((len(y), len(x)))
    for _ in range(rng.integers(2, 5)):
        xv, r = rng.uniform(0.05, 0.95), rng.uniform(0.008, 0.018)
        yv = float(np.interp(xv, x, top)) + r
        spot = np.exp(-0.5 * (((x[None] - xv) ** 2 + (y[:, None] - yv) ** 2) / r ** 2))
        bright = np.maximum(bright, rng.uniform(0.5, 0.9) * spot)
        band = np.exp(-0.5 * ((x - xv) / (1.5 * r)) ** 2)[None]
        below = np.clip((y[:, None] - yv) / r, 0.0, 1.0)
        shadow *= 1.0 - rng.uniform(0.4, 0.85) * band * below
    return bright, shadow


def retina_bscan(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A clean retina-like OCT intensity B-scan (H, W) float32 in [10^(FLOOR_DB/10), 1].

    A *simulation*, not real anatomy: rows are depth (top: dark vitreous), columns the lateral
    position. The nine :data:`LAYERS` (RNFL ... RPE) lie between smooth, gently curved
    boundaries (:func:`_boundaries`), each with a random reflectivity in its dB range plus a
    smooth +-1 dB lateral variation, rendered with exact partial volume per pixel row; below
    Bruch's membrane a textured choroid fades into the noise floor (:func:`_choroid`); vessels
    add bright spots and shadows (:func:`_vessels`); a smooth +-2 dB lateral gain multiplies
    all tissue; the noise floor :data:`FLOOR_DB` is added to the tissue intensity. Intensity
    is linear (power), 1 = 0 dB = the brightest layer (RPE) before lateral gain and shadows.
    """
    h, w = shape
    x, y = (np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h
    edges = np.arange(h + 1) / h
    bounds = _boundaries(x, rng)
    tissue = np.zeros((h, w))
    for k, (_, _, (lo, hi)) in enumerate(LAYERS):
        db = rng.uniform(lo, hi) + _smooth_curve(x, rng, 1.0)
        tissue += _coverage(edges, bounds[k], bounds[k + 1]) * 10.0 ** (db / 10.0)[None]
    below = _coverage(edges, bounds[-1], np.full(w, np.inf))
    depth = np.clip(y[:, None] - bounds[-1][None], 0.0, None)
    tissue += below * 10.0 ** (_choroid(shape, depth, rng) / 10.0)
    bright, shadow = _vessels(x, y, bounds[1], rng)
    tissue = np.maximum(tissue, bright) * shadow * 10.0 ** (_smooth_curve(x, rng, 2.0) / 10.0)
    floor = 10.0 ** (FLOOR_DB / 10.0)
    return np.clip(floor + (1.0 - floor) * tissue, floor, 1.0).astype(np.float32)


def log_speckle_mean_db(looks: int) -> float:
    """Mean of ``10 log10 n`` for L-look speckle n ~ Gamma(L, 1/L): ``10 log10(e) (psi(L) -
    ln L)`` dB (-2.51 dB for L = 1), with variance ``(10 log10 e)^2 psi'(L)`` (5.57 dB std for
    L = 1): the log-transformed speckle statistics of Arsenault & April 1976, "Properties of
    speckle integrated with a finite aperture and logarithmically transformed", JOSA 66(11)."""
    return float(10.0 / math.log(10.0) * (special.digamma(looks) - math.log(looks)))


def log_display(intensity: np.ndarray, bias_db: float = 0.0) -> np.ndarray:
    """Display map of OCT: ``(10 log10 I - bias_db - lo) / (hi - lo)`` over :data:`DB_WINDOW`,
    clipped to [0, 1]; ``intensity`` (any shape) > 0, returns float32 of the same shape."""
    lo, hi = DB_WINDOW
    db = 10.0 * np.log10(np.maximum(intensity, 1e-30)) - bias_db
    return np.clip((db - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _check_looks(looks) -> int:
    if isinstance(looks, bool) or not isinstance(looks, (int, np.integer)) or looks < 1:
        raise ConfigError(f"looks must be an integer >= 1, got {looks!r}")
    return int(looks)


def _kernel_energy(shape: tuple[int, int], sigma: tuple[float, float]) -> float:
    """Sum of squares of the periodic Gaussian kernel of :func:`speckle_field` on ``shape``."""
    delta = np.zeros(shape)
    delta[0, 0] = 1.0
    return float((ndimage.gaussian_filter(delta, sigma, mode="wrap") ** 2).sum())


def speckle_field(shape: tuple[int, int], looks: int, rng: np.random.Generator,
                  sigma: tuple[float, float] = SPECKLE_SIGMA) -> np.ndarray:
    """Multiplicative fully developed speckle (H, W) float64 > 0, exactly Gamma(L, 1/L) per
    pixel (mean 1, variance 1/L; L = 1: exponential): Goodman 1976, "Some fundamental
    properties of speckle", JOSA 66(11), and Goodman 2007, "Speckle Phenomena in Optics",
    ch. 3 (first-order statistics of one pattern and of sums of L independent patterns).

    Each look is the intensity ``|h * a|^2`` of white circular complex Gaussian scatterers
    ``a`` blurred (periodically, so the field is stationary) by a Gaussian ``h`` of std
    ``sigma`` px (rows, columns), scaled to mean 1: a linear filter keeps the field circular
    complex Gaussian, so the intensity stays exactly exponential, now correlated. Its
    correlation coefficient is ``|mu_A|^2`` (Goodman 2007, ch. 4), per axis
    ``exp(-d^2 / (2 sigma^2))`` for a continuous Gaussian: grain FWHM ``2.355 sigma`` = 1.4 px
    axial x 2.4 px lateral at :data:`SPECKLE_SIGMA` (lag-1 intensity correlation 0.20 axial,
    0.61 lateral with the sampled kernel).
    """
    looks = _check_looks(looks)
    if min(sigma) < 0:
        raise ConfigError(f"speckle sigma must be >= 0 px, got {sigma}")
    total = np.zeros(shape)
    for _ in range(looks):
        re, im = rng.standard_normal((2,) + tuple(shape))
        total += (ndimage.gaussian_filter(re, sigma, mode="wrap") ** 2
                  + ndimage.gaussian_filter(im, sigma, mode="wrap") ** 2)
    return total / (2.0 * looks * _kernel_energy(tuple(shape), tuple(sigma)))


def speckle(clean: np.ndarray, looks: int, rng: np.random.Generator,
            sigma: tuple[float, float] = SPECKLE_SIGMA) -> np.ndarray:
    """The speckled OCT display image (H, W) float32 in [0, 1] of the clean intensity ``clean``
    (H, W) > 0: ``log_display(clean * n, log_speckle_mean_db(L))`` with n from
    :func:`speckle_field`, so before clipping it is ``log_display(clean)`` plus zero-mean
    log-speckle of std ``5.57 dB / 40 dB = 0.139`` (L = 1) display units."""
    if np.ndim(clean) != 2 or not np.all(np.asarray(clean) > 0):
        raise InputError(f"clean must be a positive (H, W) intensity image, got {np.shape(clean)}")
    n = speckle_field(np.shape(clean), looks, rng, sigma)
    return log_display(clean * n, log_speckle_mean_db(looks))


def _shift_flip(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip (p = 0.5) and integer shift of up to size/16 px per axis
    (edge rows / columns repeated)."""
    if rng.random() < 0.5:
        img = img[:, ::-1]
    m = max(1, img.shape[0] // 16)
    dy, dx = rng.integers(-m, m + 1, 2)
    padded = np.pad(img, m, mode="edge")
    h, w = img.shape
    return np.ascontiguousarray(padded[m - dy:m - dy + h, m - dx:m - dx + w])


class OCTScans(Dataset):
    """Simulated speckled retinal OCT B-scans (:func:`retina_bscan`, :func:`speckle`).

    Args:
        split: 'train' | 'val' | 'test'; each split draws different random retinas (its own
            seed stream ``(seed, split, epoch, index)``), so the splits share no scan.
        size: S, the B-scan rendered at S x S px (>= 16).
        looks: L >= 1, the number of averaged speckle looks (noise std ~ 1 / sqrt(L)).
        seed: non-negative int; items are a function of (seed, split, epoch, index).
        length: items per epoch; default 8192 for 'train', 64 for 'val' / 'test'.
        augment: random horizontal flip and shift (up to S/16 px) of the clean scan before the
            speckle; default True for 'train', False otherwise.

    Item: 'noisy' (1, S, S) float32 in [0, 1], the speckled display image (what a C3 model
    trains on); 'image' (1, S, S) float32 in [0, 1], the clean scan through the same display
    map (the reference, for evaluation only). ``set_epoch`` re-draws the training items.
    """

    def __init__(self, split: str = "train", size: int = 64, looks: int = 1, seed: int = 0,
                 length: int | None = None, augment: bool | None = None):
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
            raise ConfigError(f"size must be an integer >= 16, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.split, self.size, self.looks = split, int(size), _check_looks(looks)
        self.seed, self.epoch = int(seed), 0
        self.length = (8192 if split == "train" else 64) if length is None else int(length)
        if self.length < 1:
            raise ConfigError(f"length must be >= 1, got {length}")
        self.augment = split == "train" if augment is None else bool(augment)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the training distribution: 'train' items become a function of this epoch."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` (depends on the epoch for 'train' only)."""
        epoch = self.epoch if self.split == "train" else 0
        return np.random.default_rng([self.seed, SPLITS.index(self.split), epoch, int(index)])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = self.rng(index)
        clean = retina_bscan((self.size, self.size), rng)
        if self.augment:
            clean = _shift_flip(clean, rng)
        noisy = speckle(clean, self.looks, rng)
        return {"noisy": torch.from_numpy(noisy)[None],
                "image": torch.from_numpy(log_display(clean))[None]}


def _per_image(noisy01: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` ((H, W) float64 -> (H, W)) to every image of (N, 1, H, W) ``noisy01``."""
    if not isinstance(noisy01, torch.Tensor) or noisy01.ndim != 4 or noisy01.shape[1] != 1:
        raise InputError(f"expected an (N, 1, H, W) tensor, got {getattr(noisy01, 'shape', None)}")
    arr = noisy01.detach().cpu().double().numpy()
    out = np.stack([np.clip(fn(a[0]), 0.0, 1.0)[None] for a in arr])
    return torch.from_numpy(out).to(device=noisy01.device, dtype=noisy01.dtype)


def estimate_noise_std(img: np.ndarray) -> float:
    """Noise std of a 2D image (H, W >= 2) by the wavelet median absolute deviation of Donoho &
    Johnstone 1994, "Ideal spatial adaptation by wavelet shrinkage", Biometrika 81(3):
    ``median(|HH|) / 0.6745`` of the finest diagonal Haar subband ``HH = (a - b - c + d) / 2``
    over 2 x 2 blocks: the estimator of ``skimage.restoration.estimate_sigma`` (whose wavelets
    need PyWavelets, not installed) with the Haar wavelet. Unbiased for white Gaussian noise;
    spatially correlated noise (speckle grain > 1 px) is underestimated."""
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    a = img[:h, :w]
    hh = (a[0::2, 0::2] - a[0::2, 1::2] - a[1::2, 0::2] + a[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(hh)) / 0.6745)


#: true / Haar-MAD std of the display noise of 1-look :class:`OCTScans`: the MAD sees the
#: speckle's 2 x 2 differences, which its grain correlates; measured on 32 validation scans
#: at 64 / 128 / 256 px: 1.66 / 1.70 / 1.71 (per-scan spread 7 / 3.5 / 1.7 %)
SPECKLE_MAD_FACTOR = 1.69


def estimate_speckle_std(img: np.ndarray) -> float:
    """Std of the display-space speckle noise of an OCT B-scan (H, W) in [0, 1]:
    :func:`estimate_noise_std` corrected by :data:`SPECKLE_MAD_FACTOR` for the correlated grain
    of :func:`speckle_field` (valid for that grain size)."""
    return SPECKLE_MAD_FACTOR * estimate_noise_std(img)


#: h / estimated sigma of :func:`nlm_baseline`: the Haar MAD sees 0.072 of the true 0.120
#: display-unit noise std of 1-look OCTScans (correlated speckle), so h = 1.6 sigma-hat ~ 0.95
#: sigma; measured best of 0.6-2.0 at 64 and 128 px, L = 1 and 4 (flat within 0.1 dB, 1.5-1.8)
NLM_H_FACTOR = 1.6


def nlm_baseline(noisy01: torch.Tensor, h: float | None = None) -> torch.Tensor:
    """Non-local means (Buades, Coll & Morel 2005, "A non-local algorithm for image denoising",
    CVPR: patch-similarity weighted average; scikit-image's fast blockwise variant, 5 x 5
    patches, 13 x 13 search window) of display images (N, 1, H, W) in [0, 1] -> same shape,
    dtype and device, clipped to [0, 1].

    ``h`` None: per image, the noise std is estimated by :func:`estimate_noise_std`, passed as
    ``sigma`` (its ``2 sigma^2`` is removed from the patch distances) and
    ``h = NLM_H_FACTOR * sigma``; otherwise the given ``h`` with ``sigma = 0``.
    """
    if h is not None and not h > 0:
        raise ConfigError(f"h must be > 0, got {h}")

    def one(img: np.ndarray) -> np.ndarray:
        sigma = estimate_noise_std(img) if h is None else 0.0
        hh = NLM_H_FACTOR * sigma if h is None else float(h)
        return denoise_nl_means(img, h=max(hh, 1e-6), sigma=sigma, patch_size=5,
                                patch_distance=6, fast_mode=True)

    return _per_image(noisy01, one)


def tv_baseline(noisy01: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """Total-variation denoising (Rudin, Osher & Fatemi 1992, Physica D 60; solved by the dual
    projection algorithm of Chambolle 2004, J. Math. Imaging Vis. 20) of display images
    (N, 1, H, W) in [0, 1] -> same shape, dtype and device, clipped to [0, 1]; ``weight`` > 0
    trades fidelity for smoothness (larger: smoother). The default 0.1 is the measured best for
    1-look :class:`OCTScans` at 64 px (0.15 at 128 px; 0.05 for L = 4)."""
    if not weight > 0:
        raise ConfigError(f"weight must be > 0, got {weight}")
    return _per_image(noisy01, lambda img: denoise_tv_chambolle(img, weight=float(weight)))


__all__ = ["OCTScans", "retina_bscan", "speckle", "speckle_field", "log_display",
           "log_speckle_mean_db", "estimate_noise_std", "estimate_speckle_std", "nlm_baseline",
           "tv_baseline", "LAYERS",
           "DB_WINDOW", "FLOOR_DB", "SPECKLE_SIGMA"]
