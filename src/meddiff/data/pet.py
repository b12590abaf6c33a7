"""Simulated FDG brain PET from the MNI152 anatomy: low-count / reference pairs for P1.

P1 (Gong, Johnson, El Fakhri, Li, Guo, 2022/2023, "PET image denoising based on 3D denoising
diffusion probabilistic model", arXiv 2209.06167) denoises low-count PET with a conditional
DDPM whose condition channels are the low-count PET image and optionally an MR image. The pairs
here come from the same tissue fractions as :class:`~meddiff.data.datasets.BrainSlices`:

1. True activity (:func:`render_fdg`): partial-volume sum of per-tissue FDG uptake, relative to
   white matter CSF 0.1 : GM 4 : WM 1 (the GM / WM glucose-metabolism ratio of about 4 used for
   simulated FDG brain phantoms), each tissue jittered by +-10 %, a global scale drawn
   log-uniformly in [0.8, 1.25] (between-subject uptake), a smooth multiplicative
   inhomogeneity (log RMS 5 %, :func:`~meddiff.data.augment.bias_field`), zero outside the
   brain; then the scanner's resolution, a Gaussian blur of FWHM :data:`FWHM_MM` = 4.5 mm.
   Image space: value 1 is :data:`UPTAKE_PEAK` = 5 x the nominal white-matter uptake (a fixed
   scale, so the global scale shows as brightness), clipped to [0, 1].
2. Acquisition (:func:`low_count_pet`): 2D parallel-beam emission tomography with the CT
   projector of :mod:`meddiff.physics.ct` (one-pixel bins, views over [0, pi)); attenuation is
   modelled (not ignored) as uniform water at 511 keV (:data:`MU_511_PER_MM`) inside the head
   outline, the brain mask dilated by :data:`HEAD_MARGIN_MM` (:func:`head_attenuation`), so the
   expected sinogram is ``k exp(-A mu) * A x``; ``k`` makes its total equal to ``counts``.
   Scatter and randoms are not simulated. Poisson noise, then attenuation-weighted MLEM
   (:func:`mlem`; Shepp & Vardi, 1982, IEEE Trans. Med. Imaging 1(2):113-122; Lange & Carson,
   1984, J. Comput. Assist. Tomogr. 8(2):306-316), :data:`ITERATIONS` iterations from a
   uniform image, divided by the known ``k`` back into image space and clipped to [0, 1].
3. Reference (item ``image``): the *same* reconstruction of the noiseless expected sinogram
   (``counts=inf``, the infinite-count limit), not the true activity. Like the full-dose
   target of P1 it carries the reconstruction's own resolution and convergence (MLEM at a fixed
   iteration number is not fully resolved), so ``lowcount`` and ``image`` differ only by count
   noise as it propagates through MLEM, which is what a denoiser can learn to remove.

Counts: by default 1e5-5e5 per slice (about 10-50 % of the ~1e6 counts a clinical brain
scan collects per 2D slice), at which the low-count images are visibly noisy: PSNR against the
reference 20-26 dB at 64 px (mean 24), 17-22 dB at 128 px (the same counts over 4x the pixels).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from meddiff.data import augment as aug
from meddiff.data.datasets import BrainSlices
from meddiff.errors import ConfigError
from meddiff.physics.acquisition import check_image01
from meddiff.physics.ct import SparseViewCT

UPTAKE = (0.1, 4.0, 1.0)  # CSF, GM, WM FDG uptake relative to WM; lesions count as WM
UPTAKE_PEAK = 5.0  # image value 1, in units of the nominal WM uptake
GLOBAL_SCALE = (0.8, 1.25)  # log-uniform between-subject scale
TISSUE_JITTER = 0.1  # +- per-tissue uptake variation
INHOMOGENEITY = 0.05  # log RMS of the smooth multiplicative field
FWHM_MM = 4.5  # scanner resolution
MU_511_PER_MM = 0.0096  # water at 511 keV, 1/mm
HEAD_MARGIN_MM = 10.0  # skull + scalp around the brain in the attenuation map
ITERATIONS = 25  # MLEM iterations
DEFAULT_COUNTS = (1e5, 5e5)  # total expected counts per slice, drawn log-uniformly
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def render_fdg(fr: np.ndarray, rng: np.random.Generator, spacing_mm: float,
               fwhm_mm: float = FWHM_MM) -> np.ndarray:
    """True FDG activity (H, W) float32 in image space [0, 1] from tissue fractions.

    ``fr`` (3 or 4, H, W) float32 fractions (CSF, GM, WM[, lesion]) in [0, 1];
    ``spacing_mm`` the pixel size; ``fwhm_mm`` the Gaussian resolution (0: none). Draws the
    global scale, the per-tissue jitter and the inhomogeneity from ``rng`` (module docstring).
    """
    if not (spacing_mm > 0 and fwhm_mm >= 0):
        raise ConfigError(f"need spacing_mm > 0 and fwhm_mm >= 0, got {spacing_mm}, {fwhm_mm}")
    scale = math.exp(rng.uniform(*np.log(GLOBAL_SCALE)))
    uptake = np.array(UPTAKE) * rng.uniform(1 - TISSUE_JITTER, 1 + TISSUE_JITTER, 3) * scale
    wm = fr[2] + fr[3] if fr.shape[0] > 3 else fr[2]
    activity = uptake[0] * fr[0] + uptake[1] * fr[1] + uptake[2] * wm
    activity = activity * aug.bias_field(activity.shape, rng, INHOMOGENEITY)
    sigma = fwhm_mm / (_FWHM_PER_SIGMA * spacing_mm)
    activity = ndimage.gaussian_filter(activity, sigma, mode="constant") if sigma else activity
    return np.clip(activity / UPTAKE_PEAK, 0.0, 1.0).astype(np.float32)


def head_attenuation(brain: np.ndarray, spacing_mm: float) -> np.ndarray:
    """511 keV attenuation per pixel (H, W) float32: ``MU_511_PER_MM * spacing_mm`` inside the
    head (pixels within ``HEAD_MARGIN_MM`` of the bool brain mask ``brain`` (H, W)), 0 outside."""
    if not brain.any():
        return np.zeros(brain.shape, dtype=np.float32)
    head = ndimage.distance_transform_edt(~brain) * spacing_mm <= HEAD_MARGIN_MM
    return (head * (MU_511_PER_MM * spacing_mm)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def pet_scanner(shape: tuple[int, int], n_views: int) -> SparseViewCT:
    """The parallel-beam projector of an (H, W) slice with ``n_views`` views (cached)."""
    return SparseViewCT(n_views, shape)


def mlem(op: SparseViewCT, y: torch.Tensor, iterations: int,
         survival: torch.Tensor | None = None) -> torch.Tensor:
    """Maximum-likelihood EM for Poisson data ``y ~ Poisson(survival * A x)`` (Shepp & Vardi
    1982): ``x <- x / (A^T survival) * A^T(y / A x)``, started from the uniform image whose
    expected total equals ``sum(y)``.

    ``y`` (B, 1, V, D) float counts >= 0; ``survival`` (B or 1, 1, V, D) detection
    probabilities in (0, 1] (attenuation factors; None: 1). Returns (B, 1, H, W) float >= 0 in
    the units of ``x`` (counts per unit of ``A``). Every iterate conserves the counts:
    ``sum(survival * A x) = sum(y)``.
    """
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ConfigError(f"iterations must be an integer >= 1, got {iterations!r}")
    survival = torch.ones_like(y) if survival is None else survival.expand_as(y)
    sens = op.A_adjoint(survival)
    total = y.sum(dim=(-2, -1), keepdim=True) / sens.sum(dim=(-2, -1), keepdim=True)
    x = total * torch.ones_like(sens)
    sens = sens.clamp_min(torch.finfo(sens.dtype).tiny)
    for _ in range(iterations):
        proj = op.A(x)
        ratio = torch.where(proj > 0, y / proj.clamp_min(torch.finfo(proj.dtype).tiny), 0.0)
        x = x / sens * op.A_adjoint(ratio)
    return x


def _check_counts(counts, batch: int) -> torch.Tensor:
    """``counts`` as a (B or 1, 1, 1, 1) float64 tensor; ConfigError unless each is > 0."""
    try:
        c = torch.as_tensor(counts, dtype=torch.float64).reshape(-1, 1, 1, 1)
    except (TypeError, ValueError, RuntimeError):
        c = torch.zeros(0)
    if c.numel() not in (1, batch) or not bool((c > 0).all()):
        raise ConfigError(f"counts must be one number > 0 or {batch} of them, got {counts!r}")
    return c


def low_count_pet(activity01: torch.Tensor, counts, rng: np.random.Generator,
                  n_views: int | None = None, iterations: int = ITERATIONS,
                  attenuation: torch.Tensor | None = None) -> torch.Tensor:
    """MLEM reconstruction of a Poisson PET sinogram with ``counts`` total expected counts.

    ``activity01`` (B, 1, H, W) float in [0, 1] (e.g. :func:`render_fdg`); ``counts``: one
    number > 0 for every image or a sequence of B, ``inf`` for the noiseless expected sinogram
    (the infinite-count reference); ``rng`` draws the Poisson counts; ``n_views`` over [0, pi)
    (default H: one view per pixel row); ``attenuation`` (B or 1, 1, H, W) per pixel
    (:func:`head_attenuation`) or None. Returns (B, 1, H, W) float32 in image space [0, 1]:
    the reconstruction divided by the known counts per unit of the sinogram of the image,
    clipped.
    """
    x = check_image01(activity01)
    c = _check_counts(counts, x.shape[0])
    views = x.shape[-2] if n_views is None else n_views
    if not (isinstance(views, int) and views >= 1):
        raise ConfigError(f"n_views must be an integer >= 1, got {n_views!r}")
    op = pet_scanner(tuple(x.shape[-2:]), views)
    survival = None if attenuation is None else torch.exp(-op.A(attenuation.float()))
    expected = (op.A(x) if survival is None else survival * op.A(x)).double()
    k = torch.where(c.isinf(), 1.0, c / expected.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12))
    noisy = torch.from_numpy(rng.poisson((k * expected).expand(x.shape[0], -1, -1, -1).numpy()))
    y = torch.where(c.isinf(), expected, noisy).float()
    return (mlem(op, y, iterations, survival) / k.float()).clamp(0.0, 1.0)


def gaussian_filter_baseline(lowcount01: torch.Tensor, fwhm_px: float) -> torch.Tensor:
    """Post-reconstruction Gaussian filter of FWHM ``fwhm_px`` pixels (the clinical baseline):
    (N, 1, H, W) float in [0, 1] -> (N, 1, H, W) float32 in [0, 1]. Separable kernel truncated
    at 3 sigma, normalised to sum 1, reflected at the borders; ``fwhm_px`` 0 returns the input."""
    x = check_image01(lowcount01)
    if not (math.isfinite(fwhm_px) and fwhm_px >= 0):
        raise ConfigError(f"fwhm_px must be a finite number >= 0, got {fwhm_px}")
    sigma = fwhm_px / _FWHM_PER_SIGMA
    radius = min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1)
    if radius < 1:
        return x.clone()
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius,) * 4, mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1)).clamp(0.0, 1.0)


class PETSlices(BrainSlices):
    """Low-count / reference FDG PET pairs with a T1-weighted MR slice of the same anatomy.

    Args: ``split``, ``size``, ``augment``, ``seed``, ``length``, ``orientation`` as
    :class:`~meddiff.data.datasets.BrainSlices` (healthy, T1w only); ``counts`` (lo, hi): the
    total expected counts of each slice, drawn log-uniformly (default :data:`DEFAULT_COUNTS`).
    Augmentation warps the anatomy and varies the MR (bias, gamma, noise); the PET always gets
    its own random uptake.

    Items (all float32, reproducible from (seed, split, epoch, index)): ``image`` (1, S, S)
    the reference PET in [0, 1] (noiseless-data MLEM, see the module docstring); ``lowcount``
    (1, S, S) the low-count MLEM in [0, 1]; ``mr`` (1, S, S) the T1w slice in [0, 1];
    ``counts`` (float); ``brain``, ``tissue``, ``lesion``, ``section`` as BrainSlices;
    ``contrast`` -1.
    """

    def __init__(self, split: str = "train", size: int = 64,
                 counts: tuple[float, float] = DEFAULT_COUNTS, augment: bool | None = None,
                 seed: int = 0, length: int | None = None, orientation: str = "axial"):
        try:
            lo, hi = (float(c) for c in counts)
        except (TypeError, ValueError):
            lo = hi = math.nan
        if not 0 < lo <= hi < math.inf:
            raise ConfigError(f"counts must satisfy 0 < lo <= hi < inf, got {counts}")
        super().__init__(split, size, ("T1w",), augment, None, seed, length, orientation)
        self.counts = (lo, hi)

    def _contrast(self, fr, contrast, brain, rng) -> np.ndarray:
        """(2, H, W): the T1w slice and the true activity of the same (warped) fractions."""
        mr = super()._contrast(fr, contrast, brain, rng)
        return np.stack([mr, render_fdg(fr, rng, self.spacing_mm)])

    def _get(self, index: int, healthy: bool = False) -> dict:
        item = super()._get(index, healthy)
        mr, activity = item["image"][0, :, None]  # each (1, H, W), see _contrast
        rng = np.random.default_rng(self.rng(index).bit_generator.seed_seq.spawn(1)[0])
        counts = math.exp(rng.uniform(math.log(self.counts[0]), math.log(self.counts[1])))
        mu = torch.from_numpy(head_attenuation(item["brain"][0].numpy() > 0, self.spacing_mm))
        pair = low_count_pet(activity.expand(2, 1, -1, -1), (math.inf, counts), rng,
                             attenuation=mu[None, None])
        item.update(image=pair[0], lowcount=pair[1], mr=mr, counts=counts, contrast=-1)
        return item


__all__ = ["PETSlices", "render_fdg", "head_attenuation", "mlem", "low_count_pet",
           "gaussian_filter_baseline", "pet_scanner"]
