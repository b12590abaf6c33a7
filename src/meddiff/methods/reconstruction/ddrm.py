"""DDRM, Denoising Diffusion Restoration Models (Kawar, Elad, Ermon & Song 2022, NeurIPS,
arXiv 2201.11793): gradient-free sampling in the spectral (SVD) basis of the operator.

For ``y = A x + n``, ``n ~ N(0, sigma_y^2 I)``, with a known SVD ``A = U S V^T``, DDRM runs the
reverse diffusion on the spectral coefficients ``x_bar = V^T x`` (VE convention
``x_bar_t = x_bar_0 + sigma_t eps``) next to the spectral measurement ``y_bar = S^+ U^T y``,
whose component ``i`` has noise std ``sigma_y / s_i``. Per component (sec. 3.2):

- ``s_i = 0`` (unmeasured): the DDIM-like prior update with stochasticity ``eta``;
- ``s_i > 0`` and ``sigma_t < sigma_y / s_i`` (the state is less noisy than the measurement):
  the clean estimate pulled towards ``y_bar_i``, std ``eta sigma_t``;
- ``s_i > 0`` and ``sigma_t >= sigma_y / s_i``: ``y_bar_i`` (weight ``eta_b``) plus the noise
  missing to reach ``sigma_t``.

It needs the SVD, so it applies only to operators with a simple one (:func:`spectral_view`):
single-coil Cartesian MRI, inpainting and denoising. One network evaluation per step and no
gradients. It is a peer reference method (no seed-system ID), like DPS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from meddiff.consistency.views import RealView
from meddiff.core.noise import gaussian
from meddiff.errors import InputError
from meddiff.methods.reconstruction.interface import Problem, Reconstruction
from meddiff.methods.registry import register
from meddiff.physics.base import LinearOperator
from meddiff.physics.inpainting import Denoising, Inpainting
from meddiff.physics.mri import SingleCoilMRI, fft2c, ifft2c
from meddiff.physics.noise import GaussianNoise

NO_SVD = ("ddrm needs an operator with a known SVD (single-coil Cartesian MRI, inpainting, "
          "denoising)")
Map = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SpectralView:
    """The SVD ``A = U S V^T`` of a model-space operator, in the form DDRM uses.

    Attributes:
        to_spec: ``V^T``: real model-space tensor -> spectral tensor.
        from_spec: ``V``: spectral tensor -> real model-space tensor (the inverse of
            ``to_spec``; both are isometries).
        s: singular values, real, broadcastable against a spectral tensor (0: null space).
        y_bar: ``S^+ U^T y`` as a spectral tensor (0 where ``s = 0``).
        sigma: the measurement noise std per real coordinate of ``U^T y``; component ``i`` of
            ``y_bar`` has std ``sigma / s_i``.

    Representations: inpainting and denoising use the pixels themselves (``V = I``); MRI uses
    k-space, ``V^T = F`` (centred orthonormal FFT) after the view's map to complex images.
    Every real scalar of the spectral tensor (real and imaginary parts) is one coordinate,
    except in the ``"real"`` MRI view: the k-space of a real image is Hermitian-symmetric, a
    pair ``(w, -w)`` holds the two coordinates ``sqrt(2) Re k(w)``, ``sqrt(2) Im k(w)`` and a
    self-conjugate entry (DC, Nyquist) the one coordinate ``Re k(w)``. There ``s`` and the
    DDRM coefficients are symmetric in ``w <-> -w``, so updating the k-space entrywise updates
    the coordinates, and ``to_spec`` of white real noise is white in the coordinates.
    """

    to_spec: Map
    from_spec: Map
    s: torch.Tensor
    y_bar: torch.Tensor
    sigma: float


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def reflect(t: torch.Tensor) -> torch.Tensor:
    """``t`` at the negated frequency on the centred grid of :func:`~meddiff.physics.mri.fft2c`
    over the last two dims: index ``j -> (2 (n // 2) - j) mod n``; for a real image
    ``fft2c(x) == conj(reflect(fft2c(x)))``."""
    h, w = t.shape[-2:]
    return torch.roll(torch.flip(t, (-2, -1)), shifts=(1 - h % 2, 1 - w % 2), dims=(-2, -1))


def _mri_view(view: RealView, y: torch.Tensor, noise_std: float) -> SpectralView:
    """``A = M F`` seen through ``view``. ``"batch"`` / ``"channels"``: the model tensor is a
    complex image (real-linear isometry), ``V^T = F``, ``s = 1`` on the sampled entries (real and
    imaginary part each), ``y_bar = M y`` (then ``V S^+ U^T y = F^H M y = A^+ y = A^H y``).
    ``"real"``: a real image; a pair ``(w, -w)`` with both entries sampled has ``s = 1`` and
    ``y_bar`` the average of ``y(w)`` and ``conj(y(-w))``, with one sampled ``s = 1/sqrt(2)``
    and ``y_bar`` that entry, Hermitian-extended; here ``A^+ != A^H``. Complex k-space noise
    with ``E|n|^2 = noise_std^2`` has std ``noise_std / sqrt(2)`` per real coordinate."""
    if not y.is_complex():
        raise InputError(f"ddrm: MRI measurements must be complex k-space, got {y.dtype}")
    m = view.operator.mask.to(device=y.device, dtype=y.real.dtype)
    if view.mode == "real":
        m_neg = reflect(m)
        both = m + m_neg  # 0, 1 or 2 measurements of each pair
        s = (both / 2).sqrt()
        y_bar = (m * y + m_neg * reflect(y).conj()) / both.clamp(min=1)
    else:
        s, y_bar = m, m * y

    def to_spec(x: torch.Tensor) -> torch.Tensor:
        return fft2c(view.to_domain(x))

    def from_spec(k: torch.Tensor) -> torch.Tensor:
        return view.from_domain(ifft2c(k))

    return SpectralView(to_spec, from_spec, s, y_bar, noise_std / math.sqrt(2))


def spectral_view(op: LinearOperator, y: torch.Tensor, noise_std: float) -> SpectralView:
    """The :class:`SpectralView` of a model-space operator (as
    :func:`~meddiff.consistency.views.as_real` presents it) and its measurement ``y``:
    :class:`~meddiff.physics.mri.SingleCoilMRI` in any real view, and
    :class:`~meddiff.physics.inpainting.Inpainting` (``V = I``, ``s`` = the mask) and
    :class:`~meddiff.physics.inpainting.Denoising` (``A = I``). ``noise_std``: the std of the
    Gaussian noise of ``y`` in :class:`~meddiff.physics.noise.GaussianNoise`'s convention.
    Any other operator (CT, multi-coil, phase-modulated MRI): one-line InputError."""
    inner = op.operator if isinstance(op, RealView) else op
    kind = type(inner)  # exact types: a subclass may change A
    if kind is SingleCoilMRI and isinstance(op, RealView):
        return _mri_view(op, y, noise_std)
    if kind is Inpainting and not y.is_complex():
        m = inner.mask.to(device=y.device, dtype=y.dtype)
        return SpectralView(_identity, _identity, m, m * y, noise_std)
    if kind is Denoising and not y.is_complex():
        return SpectralView(_identity, _identity, torch.ones((), dtype=y.dtype, device=y.device),
                            y, noise_std)
    raise InputError(NO_SVD)


def _coefficients(spec: SpectralView, thr: torch.Tensor, sigma: float, eta: float,
                  eta_b: float) -> tuple[torch.Tensor, ...]:
    """``(a, b, c, d)`` with ``x_bar_next = a x_bar_theta + b y_bar + c eps_bar + d z`` at the
    next VE level ``sigma`` (eq. 8); ``thr = sigma_y / s`` (0 on the null space)."""
    null = spec.s <= 0
    before = ~null & (thr <= sigma)  # the measurement is less noisy than the next state
    after = ~null & ~before
    keep = math.sqrt(1 - eta ** 2) * sigma
    pull = torch.where(after, keep / thr.clamp(min=torch.finfo(thr.dtype).tiny), 0.0)
    b = torch.where(before, eta_b, pull)
    a = 1 - b
    c = torch.where(null, keep, 0.0)
    d = torch.where(before, (sigma ** 2 - (eta_b * thr) ** 2).clamp(min=0).sqrt(), eta * sigma)
    return a, b, c, d


@register("ddrm", family="reconstruction", options=("steps", "t0", "init"),
          summary="DDRM: gradient-free sampling in the SVD basis of A (MRI, inpainting, denoising)")
def ddrm(p: Problem, eta: float = 0.85, eta_b: float = 1.0,
         noise_std: float | None = None) -> Reconstruction:
    """DDRM (Kawar et al. 2022, arXiv 2201.11793, sec. 3.2), one network evaluation per time of
    ``p.ts``, no gradients.

    With the VE levels ``sigma_t`` of the schedule and the denoiser's ``x_bar_theta = V^T x0``,
    ``eps_bar = V^T eps`` at the current time, the next state's spectral component ``i`` is
    (eq. 8; ``z ~ N(0, 1)`` fresh, ``sigma = sigma_y`` per real coordinate):

    - ``s_i = 0``: ``x_bar_theta + sqrt(1 - eta^2) sigma_next eps_bar + eta sigma_next z``;
    - ``sigma_next < sigma / s_i``: ``x_bar_theta + sqrt(1 - eta^2) sigma_next (y_bar -
      x_bar_theta) / (sigma / s_i) + eta sigma_next z``;
    - ``sigma_next >= sigma / s_i``: ``(1 - eta_b) x_bar_theta + eta_b y_bar +
      sqrt(sigma_next^2 - eta_b^2 sigma^2 / s_i^2) z``;

    the last step (``sigma_next = 0``) returns ``x_bar_theta`` on the null space and, for
    noiseless data with ``eta_b = 1``, ``y_bar`` on the measured components, so then ``A x = y``
    exactly. Start (eq. 7): the components with ``sigma / s_i <= sigma_T`` are ``y_bar +
    sqrt(sigma_T^2 - sigma^2 / s_i^2) z``, the others come from ``p.start()`` (pure noise, or
    R8's warm start ``q(x_t0 | init)``). With an exact denoiser DDRM is not an exact posterior
    sampler (the paper's Theorem 1 is about the training objective): for Gaussian data its mean
    is close to the posterior mean and its spread smaller than the posterior's
    (tests/test_ddrm.py).

    Args:
        p: the problem; ``p.op`` a model-space view with a known SVD (:func:`spectral_view`),
            ``p.y`` the measurement of the model-space ([-1, 1]) image.
        eta: stochasticity of the unmeasured / less-noisy components, in [0, 1] (paper: 0.85).
        eta_b: weight of the measurement on the noisier components, in [0, 1] (paper: 1).
        noise_std: std of the Gaussian noise of ``p.y`` in
            :class:`~meddiff.physics.noise.GaussianNoise`'s convention (real ``y``: per entry;
            complex k-space: ``E|n|^2 = noise_std^2``); default the operator's Gaussian noise
            sigma, else 0. The model-space measurement ``2 y - A(1)`` of
            :func:`meddiff.tasks.reconstruction.run` doubles the image-space noise.

    Returns:
        :class:`Reconstruction` with ``x`` real, the view's model-space shape ((2B, 1, H, W)
        ``"batch"``, (B, 2, H, W) ``"channels"``, (B, 1, H, W) ``"real"``, (B, C, H, W) for
        inpainting / denoising), unclipped; ``nfe = len(p.ts)``.
    """
    if not (0 <= eta <= 1 and 0 <= eta_b <= 1):
        raise InputError(f"ddrm needs eta and eta_b in [0, 1], got {eta} and {eta_b}")
    if noise_std is None:
        noise_std = p.op.noise.sigma if isinstance(p.op.noise, GaussianNoise) else 0.0
    if not noise_std >= 0:
        raise InputError(f"ddrm needs noise_std >= 0, got {noise_std}")
    spec = spectral_view(p.op, p.y, float(noise_std))
    sched, g = p.model.schedule, p.generator
    ts = [float(t) for t in p.ts]

    def sigma_at(t: float) -> float:
        return float(sched.sigma_ve(t)) if t >= 0 else 0.0

    def root_abar(t: float) -> float:
        return float(sched.alpha_bar(t).sqrt())

    with torch.no_grad():
        x = p.start()
        k = spec.to_spec(x / root_abar(ts[0]))
        if tuple(k.shape) != tuple(spec.y_bar.shape):
            raise InputError(f"ddrm: the measurement has shape {tuple(spec.y_bar.shape)}, the "
                             f"operator maps the model-space state to {tuple(k.shape)}")
        measured = spec.s > 0
        thr = torch.where(measured, spec.sigma / spec.s.clamp(min=torch.finfo(spec.s.dtype).tiny),
                          0.0)
        sigma_t = sigma_at(ts[0])
        init = measured & (thr <= sigma_t)  # eq. 7
        noisy_y = spec.y_bar + (sigma_t ** 2 - thr ** 2).clamp(min=0).sqrt() * \
            spec.to_spec(gaussian(x, g))
        x = root_abar(ts[0]) * spec.from_spec(torch.where(init, noisy_y, k))
        for t, t_next in zip(ts, ts[1:] + [-1.0]):
            pred = p.model.predict(x, t)
            a, b, c, d = _coefficients(spec, thr, sigma_at(t_next), eta, eta_b)
            k = a * spec.to_spec(pred.x0) + b * spec.y_bar + c * spec.to_spec(pred.eps) + \
                d * spec.to_spec(gaussian(x, g))
            x = root_abar(t_next) * spec.from_spec(k)
    return Reconstruction(x, nfe=len(ts))
