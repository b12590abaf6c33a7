"""Other modalities rendered from the same MNI152 anatomy: head CT and complex-valued MRI.

- :class:`HeadCTSlices`: head-CT-like slices. Hounsfield units per tissue fraction (CSF 8,
  GM 37, WM 28; air -1000), a skull ring of random thickness (4-8 mm, 700-1300 HU) around the
  brain and a thin scalp (2-5 mm, ~40 HU), partial volume from a 0.5-pixel Gaussian blur.
  Image space: ``(HU + 1000) / 2000`` clipped to [0, 1] (air 0, water 0.5, dense bone 1), so
  image value 1 is twice the attenuation of water (:data:`CT_WINDOW_HU`).
- :class:`LowDoseCTSlices`: head-CT slices with their low-dose FBP reconstruction (180 views,
  transmission Poisson noise at a random dose): the pairs of conditional low-dose CT denoising
  (C1, Xia & Wang 2022, arXiv 2209.15136: the low-dose image as a condition channel).
- :class:`TranslationPairs`: the same (warped) anatomy rendered in two domains, an MR contrast
  or head CT each: the paired training and test data of image translation (T1, Lyu & Wang
  2022, arXiv 2209.12104: MR <-> CT from co-registered pairs).
- :class:`ComplexBrainSlices`: MR slices with a smooth random phase (a global offset plus a
  polynomial of total degree <= 3 with RMS ``phase_rms`` rad), as in the simulated k-space of
  Chung & Ye 2022 (arXiv 2110.05243, sec. 4). Item ``image`` (2, H, W): real and imaginary
  parts of ``m exp(i phi)`` with magnitude ``m`` in [0, 1], so each channel is in [-1, 1] and is
  the model-space tensor itself (``DiffusionSpec.intensity = "complex"``).

Both reuse the anatomy, splits and warps of :class:`~meddiff.data.datasets.BrainSlices`;
only the intensity rendering differs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from meddiff.data import augment as aug
from meddiff.data.datasets import BrainSlices
from meddiff.data.mri_signal import CONTRASTS
from meddiff.errors import ConfigError
from meddiff.physics.acquisition import simulate_ct

#: the domains of :class:`TranslationPairs`: the MR contrasts and head CT
DOMAINS = (*CONTRASTS, "CT")
CT_WINDOW_HU = (-1000.0, 1000.0)  # image space [0, 1] <-> this HU window
CT_TISSUE_HU = (8.0, 37.0, 28.0)  # CSF, GM, WM (DATA.md); lesions count as WM
AIR_HU, SCALP_HU = -1000.0, 40.0


def hu_to_image(hu: np.ndarray) -> np.ndarray:
    """Hounsfield units -> image space [0, 1] over :data:`CT_WINDOW_HU` (clipped)."""
    lo, hi = CT_WINDOW_HU
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def render_head_ct(fr: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Head-CT slice in HU (H, W) float32 from tissue fractions ``fr`` (3 or 4, H, W).

    Soft tissue inside the brain, then skull and scalp as shells at distance ``d`` (mm) outside
    the brain mask: ``0 < d <= skull`` bone, ``skull < d <= skull + scalp`` soft tissue.
    """
    brain_frac = np.clip(fr.sum(axis=0), 0.0, 1.0)
    tissue = sum(f * hu for f, hu in zip(fr[:3], CT_TISSUE_HU))
    if fr.shape[0] > 3:
        tissue = tissue + fr[3] * CT_TISSUE_HU[2]
    brain = brain_frac >= 0.5
    if not brain.any():
        return np.full(fr.shape[1:], AIR_HU, dtype=np.float32)
    d = ndimage.distance_transform_edt(~brain) * spacing_mm
    skull, scalp = rng.uniform(4.0, 8.0), rng.uniform(2.0, 5.0)
    bone_hu = rng.uniform(700.0, 1300.0)
    outside = np.where(d <= skull, bone_hu, np.where(d <= skull + scalp, SCALP_HU, AIR_HU))
    hu = np.where(brain, tissue / np.maximum(brain_frac, 1e-3), outside)
    hu = ndimage.gaussian_filter(hu, 0.5)
    return (hu + rng.normal(0.0, 2.0, hu.shape)).astype(np.float32)


class HeadCTSlices(BrainSlices):
    """Head-CT-like 2D slices (see the module docstring); arguments as :class:`BrainSlices`
    without contrasts. Item ``image`` (1, H, W) float32 in [0, 1] (``(HU + 1000) / 2000``);
    ``contrast`` is -1; augmentation warps the anatomy only (no MR bias field or noise)."""

    def __init__(self, split: str = "train", size: int = 64, augment: bool | None = None,
                 seed: int = 0, length: int | None = None, orientation: str = "axial"):
        super().__init__(split, size, ("T1w",), augment, None, seed, length, orientation)

    def _contrast(self, fr, contrast, brain, rng) -> np.ndarray:
        return hu_to_image(render_head_ct(fr, self.spacing_mm, rng))

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["contrast"] = -1
        return item


class LowDoseCTSlices(HeadCTSlices):
    """:class:`HeadCTSlices` with their low-dose reconstructions, the pairs of C1.

    Args: as :class:`HeadCTSlices`, plus ``doses`` (lo, hi): the fraction of the full dose
    (:data:`~meddiff.physics.acquisition.FULL_DOSE_I0` counts per bin) is drawn log-uniformly
    from it per item. Items: ``image`` (1, H, W) the full-dose image in [0, 1]; ``lowdose``
    (1, H, W) float32 the ramp-filtered FBP of its 180-view parallel-beam sinogram with
    transmission Poisson noise at that dose (:func:`~meddiff.physics.acquisition.simulate_ct`),
    clipped to [0, 1]; ``dose`` (float). The noise is reproducible from (seed, epoch, index).
    """

    def __init__(self, split: str = "train", size: int = 64, augment: bool | None = None,
                 seed: int = 0, length: int | None = None, orientation: str = "axial",
                 doses: tuple[float, float] = (0.05, 0.5)):
        lo, hi = (float(d) for d in doses)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"doses must satisfy 0 < lo <= hi <= 1, got {doses}")
        super().__init__(split, size, augment, seed, length, orientation)
        self.doses = (lo, hi)

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        rng = np.random.default_rng(self.rng(index).bit_generator.seed_seq.spawn(2)[1])
        dose = math.exp(rng.uniform(math.log(self.doses[0]), math.log(self.doses[1])))
        op, y = simulate_ct(item["image"][None], None, dose, seed=int(rng.integers(2 ** 31)))
        item["lowdose"] = op.fbp(y)[0].clamp(0, 1)
        item["dose"] = dose
        return item


class TranslationPairs(BrainSlices):
    """One anatomy in two domains: paired slices for supervised image translation.

    Args: ``source`` and ``target``, two different names of :data:`DOMAINS` (an MR contrast,
    rendered as :class:`BrainSlices` renders it, or ``CT`` as :class:`HeadCTSlices`); the
    others as :class:`BrainSlices` (healthy). Augmentation warps the anatomy once for both
    images and varies each MR image on its own (bias, gamma, noise), as two acquisitions of
    one co-registered subject would differ.

    Items: ``source`` and ``image`` (the target), each (1, S, S) float32 in [0, 1] (MR: the
    contrast's image space; CT: ``(HU + 1000) / 2000``); ``brain``, ``tissue``, ``lesion``,
    ``section`` as BrainSlices; ``contrast`` -1.
    """

    def __init__(self, split: str = "train", size: int = 64, source: str = "T1w",
                 target: str = "T2w", augment: bool | None = None, seed: int = 0,
                 length: int | None = None, orientation: str = "axial"):
        bad = [d for d in (source, target) if d not in DOMAINS]
        if bad or source == target:
            raise ConfigError(f"source and target must be two different domains of "
                              f"{', '.join(DOMAINS)}; got {source!r} -> {target!r}")
        super().__init__(split, size, ("T1w",), augment, None, seed, length, orientation)
        self.domains = (source, target)

    def _contrast(self, fr, contrast, brain, rng) -> np.ndarray:
        """(2, H, W): the source and the target image of the same fractions."""
        return np.stack([hu_to_image(render_head_ct(fr, self.spacing_mm, rng)) if d == "CT"
                         else super(TranslationPairs, self)._contrast(fr, d, brain, rng)
                         for d in self.domains])

    def _get(self, index: int, healthy: bool = False) -> dict:
        item = super()._get(index, healthy)
        source, target = item["image"][0, :, None]  # each (1, H, W), see _contrast
        item.update(source=source, image=target, contrast=-1)
        return item


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator,
                 phase_rms: float) -> np.ndarray:
    """Random phase map (H, W) float32 in rad: uniform global offset + smooth polynomial."""
    log_field = np.log(aug.bias_field(shape, rng, phase_rms))
    return (log_field + rng.uniform(-math.pi, math.pi)).astype(np.float32)


class ComplexBrainSlices(BrainSlices):
    """MR slices with smooth random phase as two channels (real, imaginary), each in [-1, 1].

    Args: as :class:`BrainSlices` (not paired), plus ``phase_rms`` (rad, default 1.0) of the
    spatially varying phase. Item ``image`` (2, H, W) float32; other keys as BrainSlices.
    """

    def __init__(self, split: str = "train", size: int = 64, contrasts=("T1w", "T2w", "PDw"),
                 augment: bool | None = None, seed: int = 0, length: int | None = None,
                 orientation: str = "axial", phase_rms: float = 1.0):
        if not phase_rms >= 0:
            raise ConfigError(f"phase_rms must be >= 0, got {phase_rms}")
        super().__init__(split, size, contrasts, augment, None, seed, length, orientation)
        self.phase_rms = float(phase_rms)

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        rng = np.random.default_rng(self.rng(index).bit_generator.seed_seq.spawn(1)[0])
        phase = torch.from_numpy(smooth_phase((self.size, self.size), rng, self.phase_rms))
        mag = item["image"][0]
        item["image"] = torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)])
        return item
