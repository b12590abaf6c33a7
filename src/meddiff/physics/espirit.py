"""Coil sensitivity maps by ESPIRiT (Uecker et al., 2014, "ESPIRiT -- an eigenvalue approach to
autocalibrating parallel MRI: where SENSE meets GRAPPA", Magn. Reson. Med. 71:990-1001).

Grids and transforms are those of :mod:`meddiff.physics.mri` (centred orthonormal FFT, DC and
image origin at (H // 2, W // 2)). The steps follow the paper's "Theory" section; its equations
are written out below in this module's notation rather than cited by number:

1. Calibration matrix ``A``: one row per position of a ``k x k`` window inside the fully sampled
   calibration block, holding that window's ``C k^2`` samples (all coils).
2. Its SVD ``A = U S V^H``; the right singular vectors with singular value above
   ``sv_threshold * s_max`` span the signal subspace; conjugated (the windows themselves lie in
   the span of ``conj(V)``, see :func:`kernel_space`) they are the kernels ``V_par`` (C k^2, n).
3. The k-space operator ``W = (1 / k^2) sum_r R_r^H V_par V_par^H R_r`` (the projection onto
   the signal subspace, averaged over the ``k^2`` windows ``R_r`` that hold a sample), which
   fully sampled data satisfy, ``W x = x``. It is a convolution, so in image space it acts
   pixel by pixel as a C x C matrix ``G(r)``, and the coil images ``m(r) = S(r) rho(r)``
   satisfy ``G(r) S(r) = S(r)``: the sensitivities are the eigenvectors of eigenvalue 1.
4. Per pixel, the eigenvector of the largest eigenvalue of ``G(r)``, kept where that eigenvalue
   exceeds ``eig_threshold`` (the "crop" that zeroes the background).

Normalisation of ``G`` (derived here, for this module's transforms). With kernel ``v_j`` (a
column of ``V_par`` read as (C, k, k)) and ``m = ifft2c(x)``, the window projection sends image
``m`` to ``sum_j g_j(r) (g_j(r)^H m(r)) / k^2`` where ``g_j(r) = sum_q v_j[q] e^{2 pi i q.r / N}``
is the *unnormalised* inverse DFT of the kernel (q: window offset, r: pixel relative to the
origin, N = (H, W)); the window position drops out, as a linear phase common to all coils. With
the orthonormal ``ifft2c`` of the kernel zero-padded to (H, W), ``g_j = sqrt(H W) ifft2c(v_j)``,
so

    G(r) = (H W / k^2) sum_j ifft2c(v_j)(r) ifft2c(v_j)(r)^H
         = (sqrt(H W) / k^2) ifft2c(K)(r),   K[c, c', d] = sum_{q - q' = d} P[(c, q), (c', q')],

``P = V_par V_par^H``, ``K`` the (C, C, 2k - 1, 2k - 1) kernel of offset differences placed at
the k-space centre. Because ``W`` averages projections, ``0 <= G(r) <= I`` and the sought
eigenvalue is exactly 1 (for noiseless data whose maps the kernel captures). The second form is
what is evaluated here, a few image rows at a time (a separable DFT of the (2k-1)^2 offsets), so
memory stays bounded (about 30 MB per chunk) for 320 x 320 images with 16 coils.

Phase convention: an eigenvector is defined up to a per-pixel phase, and so are SENSE maps.
The maps are rotated so that ``sum_c conj(L_c) S_c`` is real and >= 0 at every pixel, where ``L``
are the low-resolution maps of :func:`~meddiff.physics.coils.estimate_sensitivity_maps` (whose
phase is the low-resolution image phase). ESPIRiT maps therefore carry the same phase as the
low-resolution ones and the two estimators are interchangeable downstream.
"""
from __future__ import annotations

import math

import torch

from meddiff.errors import InputError
from meddiff.physics.coils import estimate_sensitivity_maps
from meddiff.physics.masks import as_binary_mask, calibration_region

_CHUNK_ENTRIES = 1 << 21  # complex128 entries of G per chunk of image rows (32 MB)


def _check(kspace: torch.Tensor, mask, kernel: int, sv_threshold: float,
           eig_threshold: float) -> tuple[torch.Tensor, slice, slice]:
    """Validate the inputs; return the bool mask (H, W) and the calibration block's slices."""
    if not torch.is_tensor(kspace) or not kspace.is_complex() or kspace.dim() != 4:
        got = f"{kspace.dtype} {tuple(kspace.shape)}" if torch.is_tensor(kspace) \
            else type(kspace).__name__
        raise InputError(f"k-space for ESPIRiT must be a complex (B, C, H, W) tensor, got {got}")
    m = as_binary_mask(mask)
    if tuple(m.shape) != tuple(kspace.shape[-2:]):
        raise InputError(f"mask shape {tuple(m.shape)} does not match k-space "
                         f"{tuple(kspace.shape[-2:])}")
    if isinstance(kernel, bool) or not (isinstance(kernel, int) and kernel >= 1):
        raise InputError(f"the ESPIRiT kernel size must be an integer >= 1, got {kernel!r}")
    if not 0 <= sv_threshold < 1 or not 0 <= eig_threshold < 1:
        raise InputError(f"ESPIRiT thresholds must be in [0, 1), got sv_threshold="
                         f"{sv_threshold}, eig_threshold={eig_threshold}")
    rows, cols = calibration_region(m)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    if h < kernel or w < kernel:
        raise InputError(f"the calibration region ({h}x{w}) is smaller than the ESPIRiT "
                         f"kernel ({kernel}x{kernel})")
    return m, rows, cols


def calibration_matrix(calib: torch.Tensor, kernel: int) -> torch.Tensor:
    """Block-Hankel calibration matrix of a fully sampled block (Uecker et al., 2014, step 1).

    ``calib``: complex (C, h, w) k-space block. Returns (N, C k^2) with N = (h - k + 1)(w - k + 1)
    rows, one per ``k x k`` window position, and column index ``c k^2 + qy k + qx`` (coil c,
    offset (qy, qx) inside the window); same dtype as ``calib``.
    """
    c = calib.shape[0]
    win = calib.unfold(1, kernel, 1).unfold(2, kernel, 1)  # (C, h', w', k, k)
    return win.permute(1, 2, 0, 3, 4).reshape(-1, c * kernel * kernel)


def kernel_space(calib: torch.Tensor, kernel: int, sv_threshold: float) -> torch.Tensor:
    """Signal-subspace kernels ``V_par`` of the calibration matrix (step 2).

    The right singular vectors ``v_j`` of :func:`calibration_matrix` whose singular value
    exceeds ``sv_threshold`` times the largest, conjugated: a window (row of ``A``, read as a
    column vector ``w``) is ``sum_j u_j s_j conj(v_j)``, so the windows span the ``conj(v_j)``,
    the vectors the projection of step 3 needs. Computed as eigenvectors of the window scatter
    matrix ``sum_r w_r w_r^H = A^T conj(A) = conj(V) S^2 V^T`` (eigenvalues ``s^2``; a
    (C k^2)^2 problem however many windows there are; accumulated in the input's precision,
    decomposed in complex128). ``calib``: complex (C, h, w). Returns complex128 (C k^2, n),
    orthonormal columns.
    """
    a = calibration_matrix(calib, kernel)
    gram = (a.transpose(0, 1) @ a.conj()).to(torch.complex128)
    evals, evecs = torch.linalg.eigh(0.5 * (gram + gram.mH))
    if float(evals[-1]) <= 0:
        raise InputError("the calibration region holds no signal (all zeros)")
    keep = evals.clamp_min(0).sqrt() > sv_threshold * math.sqrt(float(evals[-1]))
    return evecs[:, keep]


def difference_kernel(kernels: torch.Tensor, n_coils: int, kernel: int) -> torch.Tensor:
    """``K[c, c', d] = sum_{q - q' = d} (V V^H)[(c, q), (c', q')]``: complex (C, C, 2k-1, 2k-1).

    ``kernels``: (C k^2, n) from :func:`kernel_space`; offset d = (dy, dx) sits at index
    (dy + k - 1, dx + k - 1). ``G(r)`` (module docstring) is ``1 / k^2`` times its
    unnormalised inverse DFT.
    """
    k, c = kernel, n_coils
    proj = (kernels @ kernels.mH).reshape(c, k, k, c, k, k)
    out = torch.zeros(c, c, 2 * k - 1, 2 * k - 1, dtype=kernels.dtype)
    for qy in range(k):
        for qx in range(k):
            block = proj[:, :, :, :, qy, qx].permute(0, 3, 1, 2)  # (c, c', qy', qx')
            out[:, :, k - 1 - qy:2 * k - 1 - qy, k - 1 - qx:2 * k - 1 - qx] += block
    return out


def _phases(n: int, k: int, idx: torch.Tensor) -> torch.Tensor:
    """``exp(2 pi i d (r - n // 2) / n)`` for pixels ``idx`` (m,) and offsets d in [1-k, k-1]."""
    d = torch.arange(1 - k, k, dtype=torch.float64)
    r = idx.to(torch.float64) - n // 2
    return torch.polar(torch.ones(idx.numel(), d.numel(), dtype=torch.float64),
                       2 * math.pi * r[:, None] * d[None, :] / n)


def image_space_operator(diff: torch.Tensor, kernel: int, shape: tuple[int, int],
                         rows: slice | None = None) -> torch.Tensor:
    """The per-pixel ESPIRiT operator ``G(r)`` (step 3) on image rows ``rows`` (default all).

    ``diff``: (C, C, 2k-1, 2k-1) from :func:`difference_kernel`; ``shape``: image (H, W).
    Evaluates ``(sqrt(H W) / k^2) ifft2c(K zero-padded to (H, W))`` on the requested rows as a
    separable DFT over the (2k-1)^2 offsets. Returns complex128 (rows, W, C, C), Hermitian,
    eigenvalues in [0, 1].
    """
    h, w = shape
    c = diff.shape[0]
    y = torch.arange(h)[rows if rows is not None else slice(None)]
    ex = _phases(w, kernel, torch.arange(w))                           # (W, D)
    t = torch.einsum("xe,abde->dxab", ex, diff.to(torch.complex128))  # (D, W, C, C)
    g = _phases(h, kernel, y) @ t.reshape(t.shape[0], -1)             # (rows, W C C)
    return g.reshape(y.numel(), w, c, c) / kernel ** 2


def _top_eigen(diff: torch.Tensor, kernel: int, shape: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest eigenvalue (H, W) float64 and its unit eigenvector (C, H, W) complex128 of
    ``G(r)`` at every pixel, by ``torch.linalg.eigh`` over chunks of image rows.

    ``G`` is formed in complex128 and decomposed in complex64 (its eigh is 30 % faster; eigenvalues
    and vectors agree with complex128 to 1e-6, below the complex64 output's precision)."""
    h, w = shape
    c = diff.shape[0]
    step = max(1, _CHUNK_ENTRIES // (w * c * c))
    vecs = torch.zeros(h, w, c, dtype=torch.complex128)
    vals = torch.zeros(h, w, dtype=torch.float64)
    for start in range(0, h, step):
        sl = slice(start, min(h, start + step))
        g = image_space_operator(diff, kernel, shape, sl)
        evals, evecs = torch.linalg.eigh((0.5 * (g + g.mH)).to(torch.complex64))
        vals[sl] = evals[..., -1].double()
        vecs[sl] = evecs[..., -1]
    return vecs.permute(2, 0, 1), vals


def espirit_eigen(kspace: torch.Tensor, mask, kernel: int = 6,
                  sv_threshold: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncropped ESPIRiT eigen-decomposition, one image at a time (steps 1-4 of the module).

    ``kspace``: complex (B, C, H, W); ``mask``: (H, W) bool whose calibration region
    (:func:`~meddiff.physics.masks.calibration_region`) is at least ``kernel`` square. Returns
    the top eigenvector per pixel, complex128 (B, C, H, W) with unit norm and an arbitrary
    phase, and its eigenvalue, float64 (B, H, W) in [0, 1] (about 1 inside the object).
    """
    _, rows, cols = _check(kspace, mask, kernel, sv_threshold, 0.0)
    b, c, h, w = kspace.shape
    vecs = torch.zeros(b, c, h, w, dtype=torch.complex128)
    vals = torch.zeros(b, h, w, dtype=torch.float64)
    for i in range(b):
        calib = kspace[i, :, rows, cols].detach().cpu()
        diff = difference_kernel(kernel_space(calib, kernel, sv_threshold), c, kernel)
        vecs[i], vals[i] = _top_eigen(diff, kernel, (h, w))
    return vecs, vals


def kernel_for_calibration(mask, largest: int = 6) -> int:
    """ESPIRiT kernel size for ``mask``'s calibration region: ``min(largest, side // 2)``.

    ``side`` is the shorter side of :func:`~meddiff.physics.masks.calibration_region`. Narrower
    blocks (fewer than ``2 k - 1`` window positions per side) leave the signal subspace of
    step 2 under-determined, and their maps gave worse SENSE reconstructions than the
    low-resolution ones in our simulations (64 / 128 px, 8 coils, 4x 1D masks); a result below 3
    means the block is too small for ESPIRiT (use the low-resolution method).
    """
    rows, cols = calibration_region(mask)
    return min(largest, min(rows.stop - rows.start, cols.stop - cols.start) // 2)


def espirit_maps(kspace: torch.Tensor, mask, kernel: int = 6, sv_threshold: float = 0.02,
                 eig_threshold: float = 0.95) -> torch.Tensor:
    """Coil sensitivity maps by ESPIRiT (Uecker et al., 2014; steps in the module docstring).

    ``kspace``: complex (B, C, H, W) multi-coil k-space (any scale; zeros where unsampled);
    ``mask``: binary (H, W) sampling mask with a fully sampled calibration region around DC of
    at least ``kernel x kernel``. ``kernel``: window size k; ``sv_threshold``: singular values
    kept relative to the largest (step 2); ``eig_threshold``: pixels whose largest eigenvalue of
    ``G(r)`` is at or below it get zero maps (background). Returns complex64 (B, C, H, W) on
    ``kspace``'s device, root-sum-of-squares 1 where kept, phase aligned to the low-resolution
    maps (module docstring). Raises InputError for bad input.
    """
    _check(kspace, mask, kernel, sv_threshold, eig_threshold)
    vecs, vals = espirit_eigen(kspace, mask, kernel, sv_threshold)
    ref = estimate_sensitivity_maps(kspace.detach().cpu(), as_binary_mask(mask).cpu(), 0.0)
    inner = (ref.to(torch.complex128).conj() * vecs).sum(dim=1, keepdim=True)
    vecs = vecs * torch.polar(torch.ones_like(inner.real), -torch.angle(inner))
    maps = torch.where((vals > eig_threshold)[:, None], vecs, 0)
    return maps.to(device=kspace.device, dtype=torch.complex64)
