"""Classical reconstruction baselines on the :class:`~meddiff.physics.base.LinearOperator`
interface: zero-filled / FBP and compressed sensing with total variation.

Both work in the operator's own domain and units (complex (B, 1, H, W) images for MRI, real
(B, C, H, W) attenuation for CT, any real or complex (B, C, H, W) for pixel operators); no
intensity rescaling is done.
"""
from __future__ import annotations

import math

import torch

from meddiff.consistency.steps import operator_norm_sq
from meddiff.errors import InputError
from meddiff.physics.base import LinearOperator


def zero_filled(operator: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """The direct baseline: filtered backprojection for CT operators (those with ``fbp``), else
    ``A^H y`` (for Cartesian MRI the zero-filled inverse FFT ``F^H M y``). Output in the
    operator's image domain and units."""
    fbp = getattr(operator, "fbp", None)
    return fbp(y) if fbp is not None else operator.A_adjoint(y)


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
        init: starting image (default :func:`zero_filled`).
    Returns:
        the reconstruction, shape and dtype of ``A^H y``.
    """
    if lam < 0 or n_iter < 0:
        raise InputError(f"cs_tv needs lam >= 0 and n_iter >= 0, got {lam}, {n_iter}")
    x = (zero_filled(operator, y) if init is None else init).clone()
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
