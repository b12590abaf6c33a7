"""Model-space views of forward operators: what a real-valued diffusion prior reconstructs.

Networks see real model-space tensors (B, C, H, W) in [-1, 1]; MRI operators act on complex
images (B, 1, H, W). :class:`RealView` turns any :class:`~meddiff.physics.base.LinearOperator`
into a *real-linear* operator on model-space tensors, so every data-consistency step and
reconstruction method works on one kind of tensor. Its adjoint is taken for the real inner
product ``Re <a, b>``, under which ``C^n`` is the Euclidean space ``R^{2n}``.

Modes for a complex-domain operator:
- ``"channels"``: model tensor (B, 2, H, W) = real and imaginary channels of one complex image
  (a network trained on complex images; :func:`~meddiff.physics.mri.complex_to_channels`);
- ``"batch"``: model tensor (2B, 1, H, W): items ``[0, B)`` are the real parts and ``[B, 2B)``
  the imaginary parts of the B complex images, each reconstructed by a real prior (the
  treatment of complex data with a magnitude-image prior in Chung & Ye 2022, arXiv 2110.05243,
  sec. 3.3);
- ``"real"``: model tensor (B, 1, H, W) real, cast to complex (real-valued / magnitude images).

A real-domain operator (CT, inpainting) is used unchanged in every mode. The measurement ``y``
must be the measurement of the *model-space* image; :meth:`RealView.model_measurement` converts
the measurement of an image-space ([0, 1]) image.
"""
from __future__ import annotations

from typing import Literal

import torch

from meddiff.errors import InputError
from meddiff.physics.base import LinearOperator
from meddiff.physics.mri import channels_to_complex, complex_to_channels

ViewMode = Literal["channels", "batch", "real"]


class RealView(LinearOperator):
    """``A o to_domain`` on real model-space tensors (see the module docstring for shapes).

    Args:
        operator: any linear operator; a real-domain one passes through unchanged.
        mode: ``"channels"``, ``"batch"`` or ``"real"`` (complex-domain operators only).

    ``A``, ``A_adjoint``, ``A_dagger`` keep the wrapped operator's measurement space;
    ``A_dagger`` is the wrapped one's (exact in the real-linear sense) except in ``"real"`` mode,
    where the real constraint changes the pseudo-inverse and CG on the real normal equations is
    used (:meth:`LinearOperator.A_dagger`).
    """

    def __init__(self, operator: LinearOperator, mode: ViewMode = "batch"):
        super().__init__(operator.noise)
        if mode not in ("channels", "batch", "real"):
            raise InputError(f"unknown complex view {mode!r}; use 'channels', 'batch' or 'real'")
        self.operator, self.mode = operator, mode
        self.complex_domain = False

    def to_domain(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space real tensor -> the wrapped operator's domain (complex for MRI)."""
        if not self.operator.complex_domain:
            return x
        if x.is_complex():
            raise InputError("model-space tensors must be real")
        if self.mode == "channels":
            return channels_to_complex(x)
        if self.mode == "batch":
            if x.shape[0] % 2:
                raise InputError(f"'batch' view needs an even batch (real, imag), got {x.shape[0]}")
            re, im = x.chunk(2, dim=0)
            return torch.complex(re, im)
        return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)

    def from_domain(self, z: torch.Tensor) -> torch.Tensor:
        """Operator-domain tensor -> model space; the adjoint (and, except for ``"real"``, the
        inverse) of :meth:`to_domain`."""
        if not self.operator.complex_domain:
            return z
        if self.mode == "channels":
            return complex_to_channels(z)
        if self.mode == "batch":
            return torch.cat([z.real, z.imag], dim=0)
        return z.real

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Model-space tensor -> measurement of the wrapped operator."""
        return self.operator.A(self.to_domain(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Measurement -> model space, adjoint for ``Re <., .>``."""
        return self.from_domain(self.operator.A_adjoint(y))

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Minimum-norm least-squares model-space tensor for ``y``."""
        if self.operator.complex_domain and self.mode == "real":
            return super().A_dagger(y)
        return self.from_domain(self.operator.A_dagger(y))

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        """The wrapped operator's restriction to measured entries."""
        return self.operator.restrict(y)

    def model_measurement(self, y_image: torch.Tensor, like: torch.Tensor,
                          intensity: str = "unit") -> torch.Tensor:
        """Measurement of the model-space image given ``y_image = A x`` of the image-space
        image ``x`` (:func:`meddiff.data.intensity.model_space`): for ``"unit"`` (model image
        ``2 x - 1``) ``2 y - A(1)`` by linearity (``like``: a model-space tensor of the right
        shape, e.g. ``self.A_adjoint(y_image)``); for ``"complex"`` ``y`` itself."""
        if intensity == "complex":
            return self.restrict(y_image)
        return self.restrict(2 * y_image - self.A(torch.ones_like(like)))

    def __repr__(self) -> str:
        return f"RealView({self.operator!r}, mode={self.mode!r})"


def as_real(operator: LinearOperator, mode: ViewMode = "batch") -> LinearOperator:
    """``operator`` itself when it is real-domain, else its :class:`RealView` in ``mode``."""
    if isinstance(operator, RealView) or not operator.complex_domain:
        return operator
    return RealView(operator, mode)
