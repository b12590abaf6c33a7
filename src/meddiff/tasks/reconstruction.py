"""Reconstruction of undersampled MRI and sparse-view / low-dose CT: the task behind
``meddiff reconstruct`` and ``bench/reconstruction.py``.

    import meddiff.api as md
    from meddiff.tasks import reconstruction as rt
    model = md.load_model("brain-prior-64")
    image01, geometry = rt.read_image("t1.nii.gz", model.spec.image_size)     # (N, 1, 64, 64)
    op, y = rt.simulate_mri(image01, mask="random", acceleration=4, seed=0)
    res = rt.run(model, op, y, "score-mri", steps=100, seed=0)                # res.image01
    base = rt.run(None, op, y, "zero-filled")
    metrics = rt.write_outputs("recon.nii.gz", res, image01, base.image01, geometry)

Measurement convention (explicit, used by every function here): the operator acts on images in
*image space* and ``y`` is the measurement of the image-space image -- for MRI the k-space of
the [0, 1] image (cast to complex, or a complex image whose magnitude is about [0, 1] for real
k-space scaled by :func:`measurement_from_kspace`), for CT the sinogram of the [0, 1] image.
Baselines use ``y`` as it is; :func:`run` converts it for the diffusion methods to the
measurement of the *model-space* image ``2 x - 1`` with
:meth:`~meddiff.consistency.views.RealView.model_measurement` (``2 y - A(1)``), the input
:func:`meddiff.methods.recon.reconstruct` expects, and maps the result back to [0, 1].

Complex images: a complex prior (``spec.intensity == "complex"``, e.g. ``mri-complex-64``)
reconstructs the complex image as two channels (``view="channels"``, model space = image
space, so ``y`` is used unchanged). With a real-valued prior, ``view="real"`` (its default)
reconstructs a real image cast to complex (simulated MRI of magnitude images),
``view="phase"`` the magnitude of an image with phase, the phase being estimated from the
fully sampled k-space centre (:class:`~meddiff.physics.mri.PhaseModulated`), and
``view="batch"`` the real and imaginary parts as two real images (Chung & Ye 2022, arXiv
2110.05243, sec. 3.3). Results are magnitude images in [0, 1] (``real`` / ``phase``: the real
part of the reconstructed real image).

Sizes: the images must have the model's size. :func:`read_image` refuses other sizes unless
``resize=True`` (bilinear resampling of :func:`meddiff.api.read_slices`; outputs are resampled
back to the file's grid); k-space is never resampled (refused when its size differs).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from meddiff.consistency.steps import operator_norm_sq
from meddiff.consistency.views import RealView
from meddiff.data.intensity import image_space, model_space
from meddiff.data.io import KSpace, save_nifti
from meddiff.errors import InputError
from meddiff.eval.figures import save_panel
from meddiff.eval.metrics import nmse_batch, psnr_batch, ssim_batch
from meddiff.methods.baselines import cs_tv
from meddiff.methods.recon import METHODS, reconstruct
from meddiff.methods.unet_recon import unet_recon
from meddiff.physics import (GaussianNoise, MultiCoilMRI, ParallelBeamCT, PhaseModulated,
                             SingleCoilMRI, estimate_phase,
                             SparseViewCT, TransmissionPoisson, birdcage_maps,
                             calibration_region, equispaced_mask_1d, estimate_sensitivity_maps,
                             ifft2c, poisson_disc_mask_2d, random_mask_1d, rss)
from meddiff.physics.base import LinearOperator
from meddiff.physics.ct import MU_WATER_PER_MM
from meddiff.physics.masks import as_binary_mask

DIFFUSION_METHODS = tuple(METHODS)  # score-mri, song, mcg, dps, diffuserecon, langevin
BASELINES = ("zero-filled", "fbp", "cs", "unet")
METHOD_NAMES = ("score-mri", "song", "mcg", "diffuserecon", "langevin", "dps") + BASELINES
MASKS: dict[str, Callable[..., torch.Tensor]] = {
    "random": random_mask_1d, "equispaced": equispaced_mask_1d, "poisson": poisson_disc_mask_2d}
DEFAULT_MODELS = {"mri": "brain-prior-64", "ct": "ct-prior-64"}  # the bundled priors per modality
DEFAULT_ACCELERATION = 4.0
FULL_VIEWS = 180          # "full" CT sampling when only the dose is reduced
FULL_DOSE_I0 = 1e5        # blank-scan counts per detector bin at dose 1
CT_FOV_MM = 200.0         # the image's field of view
CT_MU_MAX = 2.0           # image value 1 = twice water's attenuation (HU 1000, head-CT window)
MIN_ACS = 3               # calibration rows / columns needed to estimate coil maps
CS_LAM = {"mri": 0.03, "ct": 1e-4}  # default TV weight relative to ||A||^2 (val-slab scale)
CS_ITERS = 300


# ---------------------------------------------------------------------------------- checks
def _check_image01(image01, allow_complex: bool = False) -> torch.Tensor:
    """``image01`` must be a real float tensor (B, 1, H, W) in [0, 1] without NaN (or, when
    ``allow_complex``, a complex one of magnitude <= 1)."""
    ok_complex = allow_complex and torch.is_tensor(image01) and image01.is_complex()
    if not torch.is_tensor(image01) or not (ok_complex or image01.is_floating_point()):
        kind = image01.dtype if torch.is_tensor(image01) else type(image01).__name__
        raise InputError(f"the image must be a real float tensor, got {kind}")
    if ok_complex:
        _check_image01(image01.abs(), False)
        return image01.to(torch.complex64)
    if image01.dim() != 4 or image01.shape[1] != 1 or min(image01.shape[-2:]) < 2:
        raise InputError(f"the image must have shape (B, 1, H, W), got {tuple(image01.shape)}")
    if not bool(torch.isfinite(image01).all()):
        raise InputError("the image contains NaN or Inf values")
    if float(image01.min()) < -1e-6 or float(image01.max()) > 1 + 1e-6:
        raise InputError("the image must be in image space [0, 1], got range "
                         f"{float(image01.min()):.3g}..{float(image01.max()):.3g}")
    return image01.float()


def check_acceleration(acceleration) -> float:
    """The acceleration as a float; InputError unless it is a finite number >= 1."""
    try:
        r = float(acceleration)
    except (TypeError, ValueError):
        raise InputError(f"acceleration must be a number >= 1, got {acceleration!r}") from None
    if not (math.isfinite(r) and r >= 1):
        raise InputError(f"acceleration must be >= 1, got {acceleration}")
    return r


def make_mask(kind: str, shape: tuple[int, int], acceleration: float, seed: int) -> torch.Tensor:
    """Sampling mask (H, W) bool: ``random`` / ``equispaced`` 1D column masks (fastMRI) or a
    ``poisson`` variable-density 2D Poisson-disc mask, ``acceleration`` R >= 1, reproducible
    from ``seed`` (see :mod:`meddiff.physics.masks`)."""
    if kind not in MASKS:
        raise InputError(f"unknown mask {kind!r}; choose from {', '.join(MASKS)}")
    return MASKS[kind](tuple(shape), check_acceleration(acceleration), seed=seed)


def ct_scale(size: int) -> float:
    """Attenuation per pixel of image value 1 (``CT_MU_MAX`` x water over a ``CT_FOV_MM`` field
    of view, the image space of :class:`~meddiff.data.modalities.HeadCTSlices`): central line
    integrals of a head then reach about 4 (see
    :func:`~meddiff.physics.ct.hu_to_attenuation`)."""
    return CT_MU_MAX * MU_WATER_PER_MM * CT_FOV_MM / size


def is_ct(operator: LinearOperator) -> bool:
    """Whether ``operator`` is parallel-beam CT (baseline FBP) rather than MRI (zero-filled)."""
    return isinstance(operator, ParallelBeamCT)


# ---------------------------------------------------------------------------------- simulation
def simulate_mri(image01: torch.Tensor, mask: str = "random",
                 acceleration: float = DEFAULT_ACCELERATION, coils: int = 1,
                 noise_std: float = 0.0, seed: int = 0) -> tuple[LinearOperator, torch.Tensor]:
    """Undersampled Cartesian k-space of image-space images.

    ``image01``: (B, 1, H, W) float in [0, 1], cast to complex (a real-valued image), or
    complex with magnitude <= 1 (an image with phase, e.g. from
    :class:`~meddiff.data.modalities.ComplexBrainSlices`).
    ``coils = 1``: :class:`~meddiff.physics.mri.SingleCoilMRI`; ``coils > 1``:
    :class:`~meddiff.physics.mri.MultiCoilMRI` with simulated birdcage sensitivities (RSS 1).
    ``noise_std``: complex Gaussian k-space noise (image-space units, orthonormal FFT), on
    sampled entries only. Mask and noise are reproducible from ``seed``.

    Returns ``(operator, y)``: ``y = restrict(noise(A x))`` complex (B, coils, H, W), the
    measurement of the *image-space* image (see the module docstring).
    """
    x = _check_image01(image01, allow_complex=True)
    if not (isinstance(coils, int) and coils >= 1):
        raise InputError(f"coils must be an integer >= 1, got {coils!r}")
    if not noise_std >= 0:
        raise InputError(f"noise_std must be >= 0, got {noise_std}")
    shape = tuple(x.shape[-2:])
    m = make_mask(mask, shape, acceleration, seed)
    noise = GaussianNoise(noise_std) if noise_std > 0 else None
    op = SingleCoilMRI(m, noise) if coils == 1 else \
        MultiCoilMRI(m, birdcage_maps(shape, coils), noise)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return op, op.forward(x.to(torch.complex64), gen)


def simulate_ct(image01: torch.Tensor, views: int | None = None, dose: float | None = None,
                seed: int = 0) -> tuple[LinearOperator, torch.Tensor]:
    """Parallel-beam sinogram of image-space images, sparse-view and / or low-dose.

    ``image01``: (B, 1, H, W) float in [0, 1]. ``views``: number of angles uniform over
    [0, pi) (:class:`~meddiff.physics.ct.SparseViewCT`; default ``FULL_VIEWS``). ``dose``: the
    fraction of the full dose (blank scan ``FULL_DOSE_I0 * dose`` counts per bin): the line
    integrals of the attenuation ``ct_scale(H) * x`` get transmission Poisson noise
    (:class:`~meddiff.physics.noise.TransmissionPoisson`, Beer-Lambert + log) and are scaled
    back; ``None``: noiseless. Returns ``(operator, y)`` with ``y`` (B, 1, views, detectors)
    float32, the sinogram of the image-space image (see the module docstring).
    """
    x = _check_image01(image01)
    n_views = FULL_VIEWS if views is None else views
    if not (isinstance(n_views, int) and n_views >= 1):
        raise InputError(f"views must be an integer >= 1, got {views!r}")
    if dose is not None and not (math.isfinite(dose) and dose > 0):
        raise InputError(f"dose must be a fraction of the full dose > 0, got {dose}")
    op = SparseViewCT(n_views, tuple(x.shape[-2:]))
    y = op.A(x)
    if dose is not None:
        k = ct_scale(max(x.shape[-2:]))
        gen = torch.Generator(device=x.device).manual_seed(seed)
        y = TransmissionPoisson(FULL_DOSE_I0 * dose)(k * y, gen) / k
    return op, y


# ---------------------------------------------------------------------------------- k-space
def _file_mask(ks: KSpace, sampled: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The file's mask (H, W) bool, checked against the data; all ones (fully sampled, the
    fastMRI convention: zero-padded k-space edges are not undersampling) if it has none."""
    if ks.mask is None:
        return torch.ones(hw, dtype=torch.bool)
    try:
        mask = np.broadcast_to(np.asarray(ks.mask), hw).copy()
    except ValueError:
        raise InputError(f"mask shape {np.shape(ks.mask)} does not match k-space (H, W) = "
                         f"{hw}") from None
    m = as_binary_mask(mask)
    outside = int((sampled & ~m).sum())
    if outside:
        raise InputError(f"k-space has data at {outside} positions outside its sampling mask")
    return m


def _coil_maps(ksp: torch.Tensor, mask: torch.Tensor, coil_maps) -> torch.Tensor:
    if coil_maps is not None:
        return torch.as_tensor(coil_maps)
    try:
        rows, cols = calibration_region(mask)
        ok = rows.stop - rows.start >= MIN_ACS and cols.stop - cols.start >= MIN_ACS
    except InputError:
        ok = False
    if not ok:
        raise InputError("multi-coil k-space needs coil sensitivity maps or a fully sampled "
                         f"calibration region (at least {MIN_ACS}x{MIN_ACS} at the k-space "
                         "centre) to estimate them")
    return estimate_sensitivity_maps(ksp * mask, mask)


def measurement_from_kspace(ks: KSpace, mask: str = "random", acceleration: float | None = None,
                            seed: int = 0, coil_maps=None, size: int | None = None
                            ) -> tuple[LinearOperator, torch.Tensor, torch.Tensor | None]:
    """Operator and measurement from real k-space (fastMRI layout, :func:`load_kspace`).

    ``ks.kspace`` complex (slices, coils, H, W). Undersampled data (the file's ``mask`` has
    zeros) are used with that mask, and then ``acceleration`` must be None. Fully sampled data
    (no ``mask``, or one of all ones) are undersampled retrospectively with ``mask`` /
    ``acceleration`` (default 4) and ``seed``, and give a reference. Multi-coil data need
    ``coil_maps`` (C, H, W) / (slices, C, H, W), or a fully sampled calibration region
    from which they are estimated (:func:`~meddiff.physics.coils.estimate_sensitivity_maps`).
    ``size``: the model's image size; k-space of another size is refused (never resampled).

    Scaling: k-space is divided by the 99.5th percentile of the fully sampled root-sum-of-squares
    image (undersampled: the zero-filled one), so images are about [0, 1] (image space).
    Returns ``(operator, y, reference01)``: ``y`` complex64 (slices, coils, H, W) of the scaled
    image; ``reference01`` (slices, 1, H, W) in [0, 1] (RSS of the fully sampled data, or the
    file's ``reconstruction_rss`` when it has the k-space's H x W) or None. Use ``view="batch"``
    in :func:`run` (images with phase).
    """
    k = ks.kspace
    if not isinstance(k, np.ndarray) or k.dtype.kind != "c" or k.ndim != 4:
        got = f"{k.dtype} {k.shape}" if isinstance(k, np.ndarray) else type(k).__name__
        raise InputError(f"k-space must be a complex array (slices, coils, H, W), got {got}")
    bad = int(k.size - np.count_nonzero(np.isfinite(k)))
    if bad:
        raise InputError(f"k-space contains {bad} NaN/Inf value(s)")
    hw = tuple(k.shape[-2:])
    if size is not None and hw != (size, size):
        raise InputError(f"k-space is {hw[0]}x{hw[1]} but the model takes {size}x{size}; "
                         "k-space is not resampled (crop or resample the data first)")
    if acceleration is not None:
        check_acceleration(acceleration)
    ksp = torch.from_numpy(k.astype(np.complex64))
    sampled = ksp.abs().sum(dim=(0, 1)) > 0
    if not bool(sampled.any()):
        raise InputError("k-space is all zeros")
    have = _file_mask(ks, sampled, hw)
    full = bool(have.all())
    if full:
        m = make_mask(mask, hw, DEFAULT_ACCELERATION if acceleration is None else acceleration,
                      seed)
    elif acceleration is not None:
        r = hw[0] * hw[1] / int(have.sum())
        raise InputError(f"the k-space is already undersampled ({r:.2f}x, its own mask); "
                         "do not give an acceleration")
    else:
        m = have
    image = rss(ifft2c(ksp * m if not full else ksp))
    scale = float(np.percentile(image.numpy(), 99.5)) or 1.0
    ksp = ksp / scale
    op = SingleCoilMRI(m) if ksp.shape[1] == 1 else MultiCoilMRI(m, _coil_maps(ksp, m, coil_maps))
    reference = None
    if full:
        reference = (image / scale).clamp(0, 1)
    elif ks.reference is not None and tuple(ks.reference.shape[-2:]) == hw:
        reference = (torch.from_numpy(np.asarray(ks.reference, np.float32))[:, None] / scale)
        reference = reference.clamp(0, 1)
    return op, op.restrict(ksp), reference


# ---------------------------------------------------------------------------------- running
@dataclass
class Result:
    """A reconstruction in image space: ``image01`` (B, 1, H, W) float32 in [0, 1] (magnitude),
    ``std01`` the per-pixel posterior std in image-space units or None, ``nfe`` network
    evaluations, ``seconds`` wall time."""

    image01: torch.Tensor
    std01: torch.Tensor | None
    nfe: int
    seconds: float


def baseline(operator: LinearOperator, y: torch.Tensor, name: str,
             lam: float | None = None) -> torch.Tensor:
    """A classical reconstruction in the operator's domain and image-space units:
    ``zero-filled`` (MRI, ``A^H y``), ``fbp`` (CT, ramp filter), ``cs``
    (:func:`~meddiff.methods.baselines.cs_tv` started from the former, TV weight
    ``lam * ||A||^2``, default :data:`CS_LAM` of the modality) or ``unet`` (the bundled
    supervised network applied to the former, :mod:`meddiff.methods.unet_recon`)."""
    ct = is_ct(operator)
    if name == "fbp" and not ct:
        raise InputError("fbp needs a CT operator; use zero-filled for MRI")
    if name == "zero-filled" and ct:
        raise InputError("zero-filled is the MRI baseline; use fbp for CT")
    direct = operator.fbp(y) if ct else operator.A_adjoint(y)
    if name in ("zero-filled", "fbp"):
        return direct
    if name == "unet":
        return unet_recon(direct, "ct" if ct else "mri")
    if name != "cs":
        raise InputError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    lam = CS_LAM["ct" if ct else "mri"] if lam is None else lam
    if not lam >= 0:
        raise InputError(f"the CS-TV weight must be >= 0, got {lam}")
    norm_sq = operator_norm_sq(operator, direct) * 1.05
    return cs_tv(operator, y, lam=lam * norm_sq, n_iter=CS_ITERS, init=direct,
                 op_norm_sq=norm_sq)


def _magnitude01(z: torch.Tensor) -> torch.Tensor:
    return (z.abs() if z.is_complex() else z).float().clamp(0, 1).cpu()


def _check_size(model, like: torch.Tensor) -> None:
    size = getattr(getattr(model, "spec", None), "image_size", None)
    if size is not None and tuple(like.shape[-2:]) != (size, size):
        raise InputError(f"the images are {like.shape[-2]}x{like.shape[-1]} but the model takes "
                         f"{size}x{size}; resample the input (--resize)")


def _view(intensity: str, view: str | None, operator: LinearOperator) -> str:
    """The model-space view of ``operator`` for a prior of ``intensity``."""
    if intensity == "complex":
        if is_ct(operator):
            raise InputError("a complex-valued prior cannot reconstruct CT; use a CT prior")
        if view not in (None, "channels"):
            raise InputError(f"a complex-valued prior reconstructs two channels; view {view!r} "
                             "needs a real-valued prior")
        return "channels"
    if view == "channels":
        raise InputError("view 'channels' needs a complex-valued (two-channel) prior")
    if view == "phase" and not operator.complex_domain:
        raise InputError("view 'phase' applies to MRI data")
    return view or "real"


def run(model, operator: LinearOperator, y: torch.Tensor, method: str, steps: int = 100,
        t0: float | None = None, init: str | None = None, seed: int = 0, view: str | None = None,
        cs_lam: float | None = None, **opts) -> Result:
    """Reconstruct image-space images from ``y`` (the measurement of the image-space image).

    Args:
        model: a loaded model (:func:`meddiff.api.load_model`) or a denoiser; unused (may be
            None) for the baselines ``zero-filled`` (MRI), ``fbp`` (CT) and ``cs`` (CS-TV).
        method: one of :data:`METHOD_NAMES`.
        steps: reverse steps of a diffusion method (over ``[0, t0]`` with a warm start).
        t0, init: CCDF warm start (Chung, Sim & Ye 2022, arXiv 2112.05146): start at time
            ``t0`` from the forward-diffused ``init`` baseline (``zero-filled`` / ``fbp`` /
            ``cs``; default zero-filled for MRI, fbp for CT).
        seed: the diffusion sampler's seed.
        view: for MRI with a real-valued prior ``real`` (default), ``phase`` or ``batch``;
            a complex prior always uses ``channels`` (module docstring).
        cs_lam: CS-TV weight relative to ``||A||^2`` (method ``cs`` and ``init="cs"``; default
            :data:`CS_LAM` of the modality).
        **opts: the diffusion method's own options (:mod:`meddiff.methods.recon`).
    Returns:
        :class:`Result` with (B, 1, H, W) images in [0, 1] on the CPU.
    """
    if method not in METHOD_NAMES:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHOD_NAMES)}")
    start = time.perf_counter()
    if method in BASELINES:
        if t0 is not None or init is not None:
            raise InputError(f"{method} takes no warm start (t0 / init)")
        z = baseline(operator, y, method, cs_lam)
        return Result(_magnitude01(z), None, 0, time.perf_counter() - start)
    if not (isinstance(steps, int) and steps >= 1):
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if init is not None and t0 is None:
        raise InputError("an init needs a warm-start time t0")
    den = getattr(model, "denoiser", model)
    y = y.to(den.device)
    intensity = getattr(getattr(model, "spec", None), "intensity", "unit")
    view = _view(intensity, view, operator)
    if view == "phase":
        operator, view = PhaseModulated(operator, estimate_phase(operator, y)), "real"
    rv = RealView(operator, view)
    like = rv.A_adjoint(y)
    _check_size(model, like)
    y_model = rv.model_measurement(y, like, intensity)
    init_model = None
    if t0 is not None:
        z0 = baseline(operator, y, init or ("fbp" if is_ct(operator) else "zero-filled"), cs_lam)
        init_model = model_space(rv.from_domain(z0), intensity).clamp(-1, 1).float()
    if method == "langevin" and isinstance(operator.noise, GaussianNoise):
        opts.setdefault("noise_std", 2 * operator.noise.sigma)  # model space doubles the noise
    with torch.no_grad():
        rec = reconstruct(den, operator, y_model, method, steps, t0, init_model,
                          generator=seed, view=view, **opts)
    z = rv.to_domain(image_space(rec.x, intensity))
    image01 = _magnitude01(z.real if view == "real" else z)
    std01 = None
    if rec.std is not None:  # the intensity maps are affine: std scales by their slope
        slope = 1.0 if intensity == "complex" else 0.5
        std01 = (rv.to_domain(rec.std).abs() * slope).float().cpu()
    return Result(image01, std01, rec.nfe, time.perf_counter() - start)


def run_coil_by_coil(model, operator: MultiCoilMRI, y: torch.Tensor, method: str,
                     **kw) -> Result:
    """R9's coil-by-coil variant (Chung & Ye 2022, arXiv 2110.05243, sec. 3.4): every coil
    image ``S_c x`` is reconstructed as a single-coil problem with the same mask (the prior sees
    coil images, which look like images with a smooth bias field and phase), and the magnitudes
    are combined by root-sum-of-squares; no coil maps are used. ``y`` (B, C, H, W) complex;
    ``**kw`` as :func:`run`; coil images are complex, so a real-valued prior sees them through
    the ``phase`` view unless ``view`` says otherwise. ``std01`` is propagated to first order,
    ``sqrt(sum_c (|x_c| / rss)^2 std_c^2)``. Costs C times a single-coil reconstruction
    (``nfe`` counts all C)."""
    if not isinstance(operator, MultiCoilMRI):
        raise InputError("coil-by-coil reconstruction needs multi-coil MRI data")
    b, c = y.shape[:2]
    single = SingleCoilMRI(operator.mask, operator.noise)
    if getattr(getattr(model, "spec", None), "intensity", "unit") != "complex":
        kw.setdefault("view", "phase")
    res = run(model, single, y.reshape(b * c, 1, *y.shape[-2:]), method, **kw)
    mags = res.image01.reshape(b, c, *y.shape[-2:])
    combined = mags.pow(2).sum(1, keepdim=True).sqrt()
    std01 = None
    if res.std01 is not None:
        weights = mags / combined.clamp(min=1e-6)
        std01 = (weights * res.std01.reshape(b, c, *y.shape[-2:])).pow(2).sum(1, keepdim=True).sqrt()
    return Result(combined.clamp(0, 1), std01, res.nfe * c, res.seconds)


# ---------------------------------------------------------------------------------- outputs
@dataclass
class Geometry:
    """Where results go: ``affine`` (4x4, index -> RAS+ mm) and ``restore`` mapping slices
    (N, 1, S, S) in [0, 1] onto the file's grid and intensity units (2D, or 3D slice axis
    last), e.g. :meth:`meddiff.api.Slices.restore`."""

    affine: np.ndarray
    restore: Callable[[torch.Tensor], np.ndarray]

    @staticmethod
    def plain() -> Geometry:
        """Identity affine, image-space values, slices stacked along the last axis."""
        def restore(x: torch.Tensor) -> np.ndarray:
            vol = x[:, 0].numpy()
            return vol[0] if len(vol) == 1 else np.moveaxis(vol, 0, -1)
        return Geometry(np.eye(4), restore)


def read_image(path: str, size: int, resize: bool = False) -> tuple[torch.Tensor, Geometry]:
    """Every 2D slice of an image file as (N, 1, size, size) in [0, 1] (percentile-normalised)
    and its :class:`Geometry`; other sizes are refused unless ``resize`` (bilinear;
    :func:`meddiff.api.read_slices`)."""
    from meddiff import api

    sl = api.read_slices(path, size, resize=resize)
    return sl.images, Geometry(np.asarray(sl.image.affine), sl.restore)


def output_paths(out_path: str | Path) -> tuple[Path, Path, Path]:
    """``(recon, std, panel)`` paths for ``out.nii[.gz]``: ``out_std.nii[.gz]``, ``out.png``."""
    out = Path(out_path)
    name = out.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else ".nii" \
        if name.lower().endswith(".nii") else None
    if suffix is None or len(name) == len(suffix):
        raise InputError(f"{out}: the output must be a NIfTI file name (.nii or .nii.gz)")
    stem = name[:-len(suffix)]
    return out, out.with_name(f"{stem}_std{suffix}"), out.with_name(f"{stem}.png")


def metrics(image01: torch.Tensor, reference01: torch.Tensor) -> dict[str, float]:
    """Mean PSNR / SSIM (data range 1) and NMSE over slices, image space."""
    return {"psnr": float(psnr_batch(image01, reference01, 1.0).mean()),
            "ssim": float(ssim_batch(image01, reference01, 1.0).mean()),
            "nmse": float(nmse_batch(image01, reference01).mean())}


def write_outputs(out_path: str | Path, result: Result, reference01: torch.Tensor | None,
                  baseline01: torch.Tensor, geometry: Geometry, baseline_name: str = "zero-filled",
                  method: str = "reconstruction") -> dict[str, dict[str, float]]:
    """Write the reconstruction NIfTI (file grid and units via ``geometry``), the std map
    ``<out>_std.nii[.gz]`` when ``result.std01`` exists, and a PNG panel ``<out>.png`` of the
    middle slice (reference / baseline / reconstruction / |error|). Every file is atomic.

    ``reference01`` / ``baseline01``: (N, 1, H, W) in [0, 1]. Returns ``{method: {psnr, ssim,
    nmse}, baseline_name: {...}}`` against the reference (data range 1), or ``{}`` without one.
    """
    recon_path, std_path, png_path = output_paths(out_path)
    x = result.image01
    if reference01 is not None and tuple(reference01.shape) != tuple(x.shape):
        raise InputError(f"reference shape {tuple(reference01.shape)} does not match the "
                         f"reconstruction {tuple(x.shape)}")
    scores = {} if reference01 is None else {
        method: metrics(x, reference01), baseline_name: metrics(baseline01, reference01)}
    save_nifti(recon_path, geometry.restore(x), geometry.affine)
    if result.std01 is not None:
        zero = geometry.restore(torch.zeros_like(result.std01))
        save_nifti(std_path, geometry.restore(result.std01) - zero, geometry.affine)
    mid = len(x) // 2
    cols = [] if reference01 is None else [("reference", reference01[mid, 0])]
    cols += [(baseline_name, baseline01[mid, 0]), (method, x[mid, 0])]
    if reference01 is not None:
        cols.append(("|error|", (x[mid, 0] - reference01[mid, 0]).abs()))
    n_img = len(cols) - (reference01 is not None)
    shown = scores.get(method)
    save_panel(png_path, cols, error_columns=[n_img] if reference01 is not None else [],
               vmin=[0] * n_img + [0] * (reference01 is not None),
               vmax=[1] * n_img + [None] * (reference01 is not None),
               metrics={"PSNR": shown["psnr"], "SSIM": shown["ssim"]} if shown else None,
               suptitle=f"slice {mid}")
    return scores

