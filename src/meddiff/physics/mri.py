"""Cartesian MRI forward models: single-coil and multi-coil (SENSE) undersampled k-space.

Conventions (the fastMRI ones, Zbontar et al., 2018, arXiv:1811.08839):
- images are complex (B, 1, H, W), complex64 (complex128 accepted), any intensity scale;
- k-space is complex (B, C, H, W) with C = 1 (single coil) or the number of coils; the DC sample
  and the image origin both sit at index (H // 2, W // 2) ("centred" FFT);
- the FFT is orthonormal (``norm="ortho"``), so ``fft2c`` is unitary and ``||F x|| = ||x||``;
- a sampling mask is a binary (H, W) tensor (see :mod:`meddiff.physics.masks`); measurements are
  zero where the mask is 0, and the noise of :meth:`forward` is added on sampled entries only;
- at the network boundary complex images become 2 real channels with
  :func:`complex_to_channels` / :func:`channels_to_complex`.

The multi-coil model is SENSE (Pruessmann et al., 1999, Magn. Reson. Med. 42:952, Eq. 1 in
operator form): ``A x = M F (S x)`` and ``A^H y = sum_c conj(S_c) F^H (M y_c)``, as used for
diffusion-based reconstruction by Chung & Ye (2022, arXiv:2110.05243, Eq. 3).
"""
from __future__ import annotations

import torch

from meddiff.errors import InputError
from meddiff.physics.base import LinearOperator, NoiseModel
from meddiff.physics.masks import as_binary_mask, calibration_region

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dims: ``fftshift(fft2(ifftshift(x)))``.

    ``x``: (..., H, W) complex (real is promoted). Returns complex k-space of the same shape with
    DC at index (H // 2, W // 2); equals ``np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x),
    norm="ortho"))`` over the last two axes.
    """
    x = torch.fft.ifftshift(x, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.fft2(x, dim=_DIMS, norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2D FFT, the exact inverse (and adjoint) of :func:`fft2c`.

    ``k``: (..., H, W) complex k-space with DC at (H // 2, W // 2); returns the complex image.
    """
    k = torch.fft.ifftshift(k, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.ifft2(k, dim=_DIMS, norm="ortho"), dim=_DIMS)


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) complex -> (B, 2C, ...) real: real parts in channels [0, C), imag. in [C, 2C).

    For the usual single-channel MRI image, (B, 1, H, W) complex64 -> (B, 2, H, W) float32 with
    channel 0 = real, channel 1 = imaginary. Values are passed through unscaled.
    """
    if not x.is_complex():
        raise InputError(f"expected a complex tensor, got {x.dtype}")
    return torch.cat([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """(B, 2C, ...) real -> (B, C, ...) complex; the inverse of :func:`complex_to_channels`."""
    if x.is_complex() or x.dim() < 2 or x.shape[1] % 2:
        raise InputError(f"expected a real tensor with an even channel count, got "
                         f"{tuple(x.shape)} {x.dtype}")
    c = x.shape[1] // 2
    return torch.complex(x[:, :c], x[:, c:])


def _check_complex(t: torch.Tensor, what: str, hw: tuple[int, int], channels: int | None) -> None:
    """Raise InputError unless ``t`` is complex (B, channels, H, W) with the mask's (H, W)."""
    if not torch.is_tensor(t) or not t.is_complex():
        dtype = t.dtype if torch.is_tensor(t) else type(t).__name__
        raise InputError(f"{what} must be a complex tensor, got {dtype}")
    if t.dim() != 4 or tuple(t.shape[-2:]) != hw or (channels and t.shape[1] != channels):
        want = f"(B, {channels or 'C'}, {hw[0]}, {hw[1]})"
        raise InputError(f"{what} must have shape {want} to match the mask, got {tuple(t.shape)}")


class SingleCoilMRI(LinearOperator):
    """Undersampled single-coil Cartesian MRI: ``A x = M F x``.

    Args:
        mask: binary sampling mask (H, W) (bool or 0/1 numbers).
        noise: e.g. ``GaussianNoise(sigma)``: complex k-space noise, added where sampled.

    ``A``: image (B, 1, H, W) complex -> k-space (B, 1, H, W) complex, zero off the mask.
    Because ``F`` is unitary and ``M`` a projection, ``A^H = A^+ = F^H M`` exactly.
    """

    complex_domain = True

    def __init__(self, mask: torch.Tensor, noise: NoiseModel | None = None):
        super().__init__(noise)
        self.mask = as_binary_mask(mask)
        self.shape = tuple(self.mask.shape)

    def _m(self, t: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=t.device, dtype=t.real.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Image (B, 1, H, W) complex -> masked k-space (B, 1, H, W) complex."""
        _check_complex(x, "MRI image", self.shape, 1)
        return fft2c(x) * self._m(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """k-space (B, 1, H, W) complex -> zero-filled image ``F^H M y`` (B, 1, H, W) complex."""
        _check_complex(y, "k-space", self.shape, 1)
        return ifft2c(y * self._m(y))

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Exact pseudo-inverse, the zero-filled reconstruction ``F^H M y``."""
        return self.A_adjoint(y)

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        """Zero k-space entries outside the mask."""
        return y * self._m(y)


class MultiCoilMRI(LinearOperator):
    """Undersampled multi-coil Cartesian MRI (SENSE): ``A x = M F (S x)``.

    Args:
        mask: binary sampling mask (H, W), shared by all coils.
        coil_maps: complex sensitivities (C, H, W), or (B, C, H, W) for one set per image
            (e.g. :func:`meddiff.physics.coils.birdcage_maps` or
            :func:`~meddiff.physics.coils.estimate_sensitivity_maps`).
        noise: e.g. ``GaussianNoise(sigma)``, independent per coil, added where sampled.

    ``A``: image (B, 1, H, W) complex -> k-space (B, C, H, W) complex, zero off the mask.
    ``A_adjoint`` coil-combines: ``sum_c conj(S_c) F^H M y_c`` -> (B, 1, H, W). ``A_dagger`` is
    CG on the normal equations (see :class:`LinearOperator`).
    """

    complex_domain = True

    def __init__(self, mask: torch.Tensor, coil_maps: torch.Tensor | None,
                 noise: NoiseModel | None = None):
        super().__init__(noise)
        self.mask = as_binary_mask(mask)
        self.shape = tuple(self.mask.shape)
        if coil_maps is None:
            raise InputError("multi-coil MRI needs coil sensitivity maps (C, H, W); "
                             "use SingleCoilMRI for single-coil data")
        maps = coil_maps[None] if torch.is_tensor(coil_maps) and coil_maps.dim() == 3 \
            else coil_maps
        _check_complex(maps, "coil maps", self.shape, None)
        self.coil_maps = maps
        self.n_coils = maps.shape[1]

    def _m(self, t: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=t.device, dtype=t.real.dtype)

    def _maps(self, t: torch.Tensor) -> torch.Tensor:
        maps = self.coil_maps.to(device=t.device, dtype=t.dtype)
        if maps.shape[0] not in (1, t.shape[0]):
            raise InputError(f"coil maps hold {maps.shape[0]} sets but the batch has "
                             f"{t.shape[0]} images")
        return maps

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Image (B, 1, H, W) complex -> masked coil k-space (B, C, H, W) complex."""
        _check_complex(x, "MRI image", self.shape, 1)
        return fft2c(x * self._maps(x)) * self._m(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Coil k-space (B, C, H, W) complex -> coil-combined image (B, 1, H, W) complex."""
        _check_complex(y, "k-space", self.shape, self.n_coils)
        coil_images = ifft2c(y * self._m(y))
        return (self._maps(y).conj() * coil_images).sum(dim=1, keepdim=True)

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        """Zero k-space entries outside the mask."""
        return y * self._m(y)


class PhaseModulated(LinearOperator):
    """``A' m = A(exp(i phi) m)``: an MRI operator seen through a known phase map ``phi``, so that
    a *magnitude* prior reconstructs ``m`` while the data keep their phase (phase-constrained
    reconstruction with a low-resolution phase estimate, as in partial-Fourier / homodyne
    imaging; Noll, Nishimura & Macovski 1991, IEEE TMI 10:154).

    Args:
        operator: a complex-domain MRI operator (image (B, 1, H, W) complex).
        phase: (B, 1, H, W) or (1, 1, H, W) real radians (e.g. :func:`estimate_phase`).

    ``exp(i phi)`` is unitary pointwise, so ``A'^H y = exp(-i phi) A^H y`` and
    ``A'^+ y = exp(-i phi) A^+ y`` exactly; the measurement space is the wrapped operator's.
    """

    complex_domain = True

    def __init__(self, operator: LinearOperator, phase: torch.Tensor):
        super().__init__(operator.noise)
        if not operator.complex_domain:
            raise InputError("a phase map applies to complex-domain (MRI) operators only")
        if phase.is_complex() or phase.dim() != 4 or phase.shape[1] != 1:
            raise InputError(f"the phase map must be real (B, 1, H, W), got {tuple(phase.shape)}")
        self.operator = operator
        self.carrier = torch.polar(torch.ones_like(phase.float()), phase.float())

    def _c(self, t: torch.Tensor) -> torch.Tensor:
        return self.carrier.to(device=t.device, dtype=t.dtype if t.is_complex() else torch.complex64)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.operator.A(x * self._c(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        z = self.operator.A_adjoint(y)
        return z * self._c(z).conj()

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        z = self.operator.A_dagger(y)
        return z * self._c(z).conj()

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.restrict(y)


def estimate_phase(operator: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """Low-resolution phase (B, 1, H, W) of the image behind k-space ``y``: the angle of the
    (coil-combined) zero-filled image of the fully sampled calibration region only, a smooth
    estimate that undersampling aliases do not touch. ``operator``: SingleCoilMRI or
    MultiCoilMRI (its ``mask`` must sample the k-space centre)."""
    rows, cols = calibration_region(operator.mask)
    window = torch.zeros(operator.mask.shape, dtype=y.real.dtype, device=y.device)
    window[rows, cols] = 1.0
    return torch.angle(operator.A_adjoint(y * window))
