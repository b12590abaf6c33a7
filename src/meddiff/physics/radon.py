"""Matrix-free parallel-beam projector: the separable-footprint system matrix, computed on the fly.

The same linear map as the sparse matrix of :mod:`meddiff.physics.ct` (same geometry, same
detector sampling, same weights up to float rounding), for images too large to store it: at
512 x 512 with 720 views the matrix and its transpose hold about 430 million nonzeros (~7 GB).

The map (Long, Fessler & Balter, 2010, IEEE Trans. Med. Imaging 29:1839, Eq. 25; exact for a
pixel-basis image in parallel beam): at view ``theta`` the unit square pixel centred at
``(x, y)`` casts a trapezoid onto the detector, centred at ``t = x cos(theta) - y sin(theta)``
(plus ``D // 2`` in bin units) with outer half-width ``(|cos| + |sin|) / 2``, inner half-width
``||cos| - |sin|| / 2`` and unit area. Integrated over unit bins it touches at most three
consecutive bins ``first, first + 1, first + 2`` with ``first = floor(t + D // 2 - outer + 1/2)``;
the first and last weights are the trapezoid's cumulative integral ``F`` at the two inner bin
edges (by symmetry ``1 - F(e) = F(-e)``), the middle one is the rest of the unit area.

Chunking: views are processed a few at a time (``chunk_views``; by default as many as fit a
fixed budget of temporaries). For each chunk the footprint position and weights of every pixel
are computed once (``O(chunk * H * W)`` memory), then shared by the whole batch: the forward
projection scatter-adds ``x * weight`` into a detector buffer padded so that no index is ever out
of range (bins outside the detector are cropped, which is the matrix's rule), and the
backprojection gathers the same buffer positions and multiplies by the same weights. The
backprojection is therefore exactly the transpose of the projection, and autograd through either
uses the other. Peak memory is the input, the output and one chunk of temporaries; nothing of
size (views * bins, H * W) is ever formed.
"""
from __future__ import annotations

import math

import numpy as np
import torch

_CHUNK_BUDGET = {"cpu": 2 ** 19, "cuda": 2 ** 25}  # float values of temporaries per chunk
_GEOMETRY_COST = 8  # temporaries per (view, pixel) besides the one value per image


class FootprintProjector:
    """On-the-fly separable-footprint Radon transform ``A`` and its exact transpose ``A^T``.

    Args:
        img_shape: (H, W); pixel (i, j) is centred at ``(j - W // 2, i - H // 2)``.
        angles: (V,) float64 view angles in radians.
        n_detectors: D unit bins, bin ``k`` centred at ``k - D // 2``.
        chunk_views: views per chunk; ``None`` picks it from a budget of temporaries (CPU:
            ~2 MB, a single view at 256 px and above; CUDA: ~130 MB).

    :meth:`project`: (N, H, W) float32/float64 -> (N, V, D) bin-integrated line integrals.
    :meth:`backproject`: (N, V, D) -> (N, H, W). Any device; weights are computed in the data's
    dtype from float64 positions.
    """

    def __init__(self, img_shape: tuple[int, int], angles: torch.Tensor, n_detectors: int,
                 chunk_views: int | None = None):
        self.img_shape = img_shape
        self.angles = angles.to(torch.float64).reshape(-1)
        self.n_detectors = n_detectors
        self.chunk_views = chunk_views
        height, width = img_shape
        reach = math.hypot(max(height // 2, height - 1 - height // 2),
                           max(width // 2, width - 1 - width // 2))
        # padded buffer bins [lo, hi): every ``first`` lies in [lo, hi - 3] for any angle
        self.lo = min(0, math.floor(n_detectors // 2 - 0.5 - reach) - 1)
        self.hi = max(n_detectors, math.floor(n_detectors // 2 + 0.5 + reach) + 4)

    def views_per_chunk(self, n_images: int, device: torch.device) -> int:
        """Views processed together for a batch of ``n_images`` on ``device``."""
        if self.chunk_views is not None:
            return self.chunk_views
        budget = _CHUNK_BUDGET["cuda" if device.type == "cuda" else "cpu"]
        pixels = self.img_shape[0] * self.img_shape[1]
        return max(1, budget // (pixels * (_GEOMETRY_COST + n_images)))

    def _chunk(self, theta: torch.Tensor, dtype: torch.dtype):
        """Buffer index of tap 0, (V, H * W) int64, and the three tap weights, each (V, H * W).

        The buffer holds ``hi - lo`` bins per view, bin ``b`` of view ``v`` at
        ``v * (hi - lo) + b - lo``.
        """
        height, width = self.img_shape
        c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        outer = 0.5 * (c.abs() + s.abs())
        inner = 0.5 * (c.abs() - s.abs()).abs()
        peak = 1.0 / torch.maximum(c.abs(), s.abs())
        xs = torch.arange(width, device=theta.device, dtype=torch.float64) - width // 2
        ys = torch.arange(height, device=theta.device, dtype=torch.float64) - height // 2
        # footprint start + 1/2 in bin units; its floor is the first bin, the rest is in [0, 1)
        start = (xs * c + (self.n_detectors // 2 + 0.5 - outer)) - ys[:, None] * s
        first = torch.floor(start)
        frac = (start - first).to(dtype).reshape(theta.numel(), -1)
        stride = self.hi - self.lo
        offset = torch.arange(theta.numel(), device=theta.device) * stride - self.lo
        base = first.reshape(theta.numel(), -1).long() + offset[:, None]
        outer, inner, peak = (t.to(dtype).reshape(-1, 1) for t in (outer, inner, peak))
        ramp = outer - inner  # length of each sloped side of the trapezoid (0 at 0 and 90 deg)
        half_inv_ramp = 0.5 / torch.where(ramp > 0, ramp, torch.ones_like(ramp))

        def cdf(v: torch.Tensor) -> torch.Tensor:  # trapezoid area on (-inf, v]
            rise = torch.minimum((v + outer).clamp_(min=0.0), ramp)
            fall = torch.minimum((v - inner).clamp_(min=0.0), ramp)
            flat = (v + inner).clamp_(min=0.0) - (v - outer).clamp_(min=0.0)
            return peak * ((rise * rise - fall * fall) * half_inv_ramp + flat)

        low = cdf(1.0 - outer - frac)  # area left of the edge between bins first and first + 1
        high = cdf(frac + outer - 2.0)  # area right of the edge between first + 1 and first + 2
        return base, (low, 1.0 - low - high, high)

    def matrix_entries(self, threshold: float = 1e-9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nonzero entries of ``A`` as a (V * D, H * W) matrix, weights computed in float64:
        ``(rows, cols, values)`` with row ``view * D + bin``, column ``i * W + j`` and float32
        values above ``threshold`` (for the stored-matrix backend of small geometries)."""
        n_views, n_det, stride = self.angles.numel(), self.n_detectors, self.hi - self.lo
        pixels = torch.arange(self.img_shape[0] * self.img_shape[1])
        step = max(1, 500_000 // pixels.numel())
        rows, cols, values = [], [], []
        for begin in range(0, n_views, step):
            theta = self.angles[begin:begin + step]
            base, weights = self._chunk(theta, torch.float64)
            local = torch.arange(theta.numel())[:, None]
            first = base - local * stride + self.lo
            for tap, weight in enumerate(weights):
                bins = first + tap
                keep = (weight > threshold) & (bins >= 0) & (bins < n_det)
                rows.append(((local + begin) * n_det + bins)[keep])
                cols.append(pixels.expand_as(bins)[keep])
                values.append(weight[keep])
        return (torch.cat(rows).numpy(), torch.cat(cols).numpy(),
                torch.cat(values).numpy().astype(np.float32))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, H, W) -> sinograms (N, V, D): ``A x``."""
        n, n_views, n_det = x.shape[0], self.angles.numel(), self.n_detectors
        angles = self.angles.to(x.device)
        flat = x.reshape(n, 1, -1)
        out = x.new_empty(n, n_views, n_det)
        step = self.views_per_chunk(n, x.device)
        for begin in range(0, n_views, step):
            theta = angles[begin:begin + step]
            base, weights = self._chunk(theta, x.dtype)
            buf = x.new_zeros(n, theta.numel() * (self.hi - self.lo))
            index = base.reshape(1, -1).expand(n, -1)
            for tap, weight in enumerate(weights):
                buf[:, tap:].scatter_add_(1, index, (flat * weight).reshape(n, -1))
            out[:, begin:begin + theta.numel()] = buf.reshape(n, theta.numel(), -1)[
                :, :, -self.lo:n_det - self.lo]
        return out

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        """Sinograms (N, V, D) -> images (N, H, W): ``A^T y``, the transpose of :meth:`project`."""
        n, n_det = y.shape[0], self.n_detectors
        angles = self.angles.to(y.device)
        out = y.new_zeros(n, self.img_shape[0] * self.img_shape[1])
        step = self.views_per_chunk(n, y.device)
        for begin in range(0, angles.numel(), step):
            theta = angles[begin:begin + step]
            base, weights = self._chunk(theta, y.dtype)
            buf = y.new_zeros(n, theta.numel(), self.hi - self.lo)
            buf[:, :, -self.lo:n_det - self.lo] = y[:, begin:begin + theta.numel()]
            buf = buf.reshape(n, -1)
            index = base.reshape(-1)
            acc = None
            for tap, weight in enumerate(weights):
                gathered = buf[:, tap:].index_select(1, index).reshape(n, *weight.shape)
                acc = gathered.mul_(weight) if acc is None else acc.addcmul_(gathered, weight)
            out += acc.sum(dim=1)
        return out.reshape(n, *self.img_shape)


class _Projection(torch.autograd.Function):
    """``A x`` (or ``A^T y``) whose backward is the other, computed on the fly as well."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, projector: FootprintProjector,
                transpose: bool) -> torch.Tensor:
        ctx.projector, ctx.transpose = projector, transpose
        return projector.backproject(t) if transpose else projector.project(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p = ctx.projector
        grad = grad.contiguous()
        return (p.project(grad) if ctx.transpose else p.backproject(grad)), None, None


def footprint_apply(projector: FootprintProjector, t: torch.Tensor,
                    transpose: bool) -> torch.Tensor:
    """Differentiable ``projector.project(t)`` (or ``backproject`` when ``transpose``)."""
    return _Projection.apply(t, projector, transpose)
