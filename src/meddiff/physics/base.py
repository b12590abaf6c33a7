"""The contract every forward operator follows: ``y = noise(A x)``.

Method names are deepinv's (Tachella et al., DeepInverse, deepinv.github.io) so code moves
between the two: ``A``, ``A_adjoint``, ``A_dagger`` and ``forward`` / ``__call__`` (a simulated
noisy measurement). Operators know no diffusion; samplers and data-consistency steps only use
this interface.

Inner products are ``<a, b> = sum(a * conj(b))``; every operator satisfies
``<A x, y> = <x, A_adjoint(y)>`` (tested for each entry of
:data:`meddiff.physics.registry.OPERATORS`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from meddiff.physics.noise import as_generator

NoiseModel = Callable[[torch.Tensor, "torch.Generator | int | None"], torch.Tensor]


def batch_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of ``sum(a * conj(b))`` per batch element: shape (B,), dtype real of ``a``."""
    return (a * b.conj()).real.reshape(a.shape[0], -1).sum(dim=1)


def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                       n_iter: int, tol: float) -> torch.Tensor:
    """Solve ``normal(x) = rhs`` for a Hermitian positive semi-definite ``normal`` by CG.

    Conjugate gradients (Hestenes & Stiefel, 1952, J. Res. NBS 49(6), Algorithm (3:1)) started
    at ``x = 0``, with step sizes computed per batch element, so every image in the batch is its
    own problem. Stops after ``n_iter`` iterations or when every residual norm is below
    ``tol * ||rhs||``. ``rhs``: (B, ...) real or complex; returns the same shape and dtype.
    Started at zero on the normal equations ``A^H A x = A^H y`` the iterates stay in the range of
    ``A^H``, so CG converges to the minimum-norm least-squares solution ``A^+ y``.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = batch_inner(r, r)
    stop = (tol * rr.sqrt()) ** 2
    shape = (-1,) + (1,) * (rhs.dim() - 1)
    for _ in range(n_iter):
        if bool((rr <= stop).all()):
            break
        ap = normal(p)
        pap = batch_inner(p, ap)
        alpha = torch.where(pap > 0, rr / pap.clamp_min(torch.finfo(pap.dtype).tiny), 0.0)
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * ap
        rr_new = batch_inner(r, r)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(torch.finfo(rr.dtype).tiny), 0.0)
        p = r + beta.reshape(shape) * p
        rr = rr_new
    return x


class LinearOperator(ABC):
    """A linear forward model ``A`` with an attached noise model.

    Subclasses implement :meth:`A` and :meth:`A_adjoint` (exact adjoints, not autograd) and state
    their shapes and dtypes. ``complex_domain`` says whether ``x`` is complex (MRI) or real.
    :meth:`A_dagger` defaults to the minimum-norm least-squares solution by conjugate gradients
    on the normal equations (``dagger_iters`` iterations, relative tolerance ``dagger_tol``);
    operators whose pseudo-inverse has a closed form override it.

    Args:
        noise: a noise model ``noise(y, generator) -> y_noisy`` (e.g.
            :class:`~meddiff.physics.noise.GaussianNoise`), or ``None`` for noiseless data.
    """

    complex_domain: bool = False
    dagger_iters: int = 50
    dagger_tol: float = 1e-6

    def __init__(self, noise: NoiseModel | None = None):
        self.noise = noise

    @abstractmethod
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - deepinv's name
        """Apply the noiseless forward model (shapes: see the subclass)."""

    @abstractmethod
    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Apply the exact adjoint ``A^H`` (shapes: see the subclass)."""

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Minimum-norm least-squares ``A^+ y`` by CG on ``A^H A x = A^H y`` from ``x = 0``.

        An iterative approximation: ``dagger_iters`` CG iterations (relative residual tolerance
        ``dagger_tol``); ill-conditioned operators (sparse-view CT) converge slowly, so treat the
        result as a regularised (early-stopped) pseudo-inverse.
        """
        return conjugate_gradient(self.A_normal, self.A_adjoint(y), self.dagger_iters,
                                  self.dagger_tol)

    def A_normal(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Apply ``A^H A`` (same shape and dtype as ``x``)."""
        return self.A_adjoint(self.A(x))

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        """Zero the entries of a measurement-space tensor that are never measured.

        Identity unless the operator has unmeasured entries (undersampled k-space, missing
        pixels); :meth:`forward` applies it after the noise so noise never appears there.
        """
        return y

    def forward(self, x: torch.Tensor,
                generator: torch.Generator | int | None = None) -> torch.Tensor:
        """Simulate a measurement ``restrict(noise(A x))``.

        ``generator`` (a ``torch.Generator`` on ``x``'s device, or an int seed) is required when a
        noise model is attached; without noise the result is ``A x``.
        """
        y = self.A(x)
        if self.noise is not None:
            y = self.noise(y, as_generator(generator, y.device))
        return self.restrict(y)

    def __call__(self, x: torch.Tensor,
                 generator: torch.Generator | int | None = None) -> torch.Tensor:
        """Same as :meth:`forward` (deepinv's ``physics(x)``)."""
        return self.forward(x, generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(noise={self.noise!r})"
