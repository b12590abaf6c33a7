"""Reconstruction baselines behind the reconstruction interface: zero-filled (MRI), filtered
backprojection (CT), compressed sensing with total variation and the supervised UNet.

Each registered baseline is ``method(problem, **options) -> Reconstruction`` like the diffusion
methods (:mod:`meddiff.methods.reconstruction.interface`), with the problem in the operator's
own domain and units (complex (B, 1, H, W) images for MRI, real (B, C, H, W) attenuation for
CT, any real or complex (B, C, H, W) for pixel operators); no intensity rescaling is done and
``nfe`` is 0. The functions they wrap (:func:`direct`, :func:`cs_tv`, :func:`unet_apply`) work
on ``(operator, y)`` directly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from meddiff.consistency.steps import operator_norm_sq
from meddiff.errors import InputError
from meddiff.methods.reconstruction.interface import Problem, Reconstruction
from meddiff.methods.registry import register
from meddiff.physics.acquisition import is_ct
from meddiff.physics.base import LinearOperator
from meddiff.physics.mri import channels_to_complex, complex_to_channels

CS_LAM = {"mri": 0.03, "ct": 1e-4}  # default TV weight relative to ||A||^2 (val-slab scale)
CS_ITERS = 300


def direct(operator: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """The direct reconstruction: filtered backprojection for CT operators (those with ``fbp``),
    else ``A^H y`` (for Cartesian MRI the zero-filled inverse FFT ``F^H M y``). Output in the
    operator's image domain and units."""
    fbp_fn = getattr(operator, "fbp", None)
    return fbp_fn(y) if fbp_fn is not None else operator.A_adjoint(y)


def gradient_2d(x: torch.Tensor) -> torch.Tensor:
    """Forward differences over the last two dims with Neumann boundary (zero last difference):
    (B, C, H, W) -> (2, B, C, H, W), [0] vertical, [1] horizontal. Real or complex."""
    gy = torch.zeros_like(x)
    gx = torch.zeros_like(x)
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([gy, gx])


def gradient_2d_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of :func:`gradient_2d` (minus the discrete divergence), (2, B, C, H, W) ->
    (B, C, H, W)."""
    gy, gx = g[0], g[1]
    out = torch.zeros_like(gy)
    out[..., :-1, :] -= gy[..., :-1, :]
    out[..., 1:, :] += gy[..., :-1, :]
    out[..., :, :-1] -= gx[..., :, :-1]
    out[..., :, 1:] += gx[..., :, :-1]
    return out


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV ``sum |grad x|`` per batch item, (B, C, H, W) -> (B,)."""
    mag = gradient_2d(x).abs().pow(2).sum(0).sqrt()
    return mag.reshape(x.shape[0], -1).sum(1)


def tv_objective(operator: LinearOperator, x: torch.Tensor, y: torch.Tensor,
                 lam: float) -> torch.Tensor:
    """``0.5 ||A x - y||^2 + lam TV(x)`` per batch item, (B,)."""
    r = operator.A(x) - y
    return 0.5 * r.abs().pow(2).reshape(r.shape[0], -1).sum(1) + lam * total_variation(x)


def cs_tv(operator: LinearOperator, y: torch.Tensor, lam: float = 0.01, n_iter: int = 300,
          init: torch.Tensor | None = None, op_norm_sq: float | None = None) -> torch.Tensor:
    """Compressed sensing with isotropic total variation (Lustig, Donoho & Pauly 2007, Magn.
    Reson. Med. 58:1182; Rudin, Osher & Fatemi 1992):
    ``argmin_x 0.5 ||A x - y||^2 + lam TV(x)``.

    Solved by the primal-dual hybrid gradient method (Chambolle & Pock 2011, J. Math. Imaging
    Vis. 40:120, Algorithm 1, theta = 1) with ``K = [A; grad]``, dual proxes
    ``(p - s y) / (1 + s)`` (data) and pointwise projection onto ``{|q| <= lam}`` (TV), and
    step sizes ``tau = s = 0.99 / ||K||`` with ``||K||^2 <= ||A||^2 + 8``. ``||A||^2`` is
    estimated by power iteration unless given. A fixed number of iterations ``n_iter``.

    Args:
        operator: any linear operator; ``x`` lives in its image domain (complex for MRI).
        y: measurement (the operator's measurement shape).
        lam: TV weight, in the units of ``x`` times the measurement scale.
        init: starting image (default :func:`direct`).
    Returns:
        the reconstruction, shape and dtype of ``A^H y``.
    """
    if lam < 0 or n_iter < 0:
        raise InputError(f"cs_tv needs lam >= 0 and n_iter >= 0, got {lam}, {n_iter}")
    x = (direct(operator, y) if init is None else init).clone()
    if op_norm_sq is None:
        op_norm_sq = operator_norm_sq(operator, x) * 1.05
    tau = sigma = 0.99 / math.sqrt(op_norm_sq + 8.0)
    p = torch.zeros_like(operator.A(x))
    q = gradient_2d(torch.zeros_like(x))
    x_bar = x
    for _ in range(n_iter):
        p = (p + sigma * (operator.A(x_bar) - y)) / (1 + sigma)
        q = q + sigma * gradient_2d(x_bar)
        q = q / (q.abs().pow(2).sum(0, keepdim=True).sqrt() / max(lam, 1e-30)).clamp(min=1)
        x_new = x - tau * (operator.A_adjoint(p) + gradient_2d_adjoint(q))
        x_bar = 2 * x_new - x
        x = x_new
    return x


@torch.no_grad()
def unet_apply(net: nn.Module, direct_image: torch.Tensor) -> torch.Tensor:
    """The supervised residual UNet (``recon-unet`` kind of :mod:`meddiff.zoo`) on the direct
    reconstruction (B, 1, H, W): complex zero-filled MRI as two channels (real, imaginary) or
    real FBP CT as one, image space -> (B, 1, H, W) in the same domain. The network maps
    ``d`` to ``d + f(d)``: the fastMRI UNet baseline (Zbontar et al. 2018, arXiv 1811.08839,
    sec. 5) and FBPConvNet for sparse-view CT (Jin, McCann, Froustey & Unser 2017, IEEE TIP
    26:4509, residual learning)."""
    if direct_image.shape[-1] != direct_image.shape[-2]:
        raise InputError("the supervised UNet takes square images")
    complex_in = direct_image.is_complex()
    x = complex_to_channels(direct_image) if complex_in else direct_image
    dev = next(net.parameters()).device
    out = net(x.float().to(dev))
    return (channels_to_complex(out) if complex_in else out).to(direct_image.device)


# ------------------------------------------------------------------------------ registered
@register("zero-filled", family="reconstruction", baseline=True,
          summary="zero-filled inverse FFT A^H y (MRI)")
def zero_filled(p: Problem) -> Reconstruction:
    """``A^H y`` of an MRI operator (the zero-filled image)."""
    if is_ct(p.op):
        raise InputError("zero-filled is the MRI baseline; use fbp for CT")
    return Reconstruction(p.op.A_adjoint(p.y))


@register("fbp", family="reconstruction", baseline=True,
          summary="filtered backprojection, ramp filter (CT)")
def fbp(p: Problem) -> Reconstruction:
    """Filtered backprojection of a parallel-beam CT operator."""
    if not is_ct(p.op):
        raise InputError("fbp needs a CT operator; use zero-filled for MRI")
    return Reconstruction(p.op.fbp(p.y))


@register("cs", family="reconstruction", baseline=True, options=("cs_lam",),
          summary="compressed sensing with total variation (PDHG) from the direct image")
def cs(p: Problem, lam: float | None = None) -> Reconstruction:
    """:func:`cs_tv` started from :func:`direct` with the TV weight ``lam * ||A||^2`` (default
    :data:`CS_LAM` of the modality) and :data:`CS_ITERS` iterations."""
    lam = CS_LAM["ct" if is_ct(p.op) else "mri"] if lam is None else lam
    if not lam >= 0:
        raise InputError(f"the CS-TV weight must be >= 0, got {lam}")
    start = direct(p.op, p.y)
    norm_sq = operator_norm_sq(p.op, start) * 1.05
    return Reconstruction(cs_tv(p.op, p.y, lam=lam * norm_sq, n_iter=CS_ITERS, init=start,
                                op_norm_sq=norm_sq))


@register("unet", family="reconstruction", baseline=True,
          summary="supervised residual UNet on the direct image (fixed training settings)")
def unet(p: Problem) -> Reconstruction:
    """:func:`unet_apply` of ``p.model`` (the loaded recon UNet of the modality) to
    :func:`direct`. Unlike the diffusion methods it does not enforce data consistency and it
    was trained for fixed acquisition settings (MRI: 1D random and equispaced masks at 4x and
    8x; CT: 30 and 60 views and 180 views at a quarter dose)."""
    if p.model is None:
        raise InputError("the unet baseline needs its trained network (recon-unet-*)")
    return Reconstruction(unet_apply(p.model, direct(p.op, p.y)))
