"""Noise models attached to forward operators: ``y = noise(A x)``.

Each model is a callable ``noise(y, generator) -> y_noisy`` that keeps the shape, dtype and device
of the clean measurement ``y``. Randomness comes only from the ``torch.Generator`` passed in (or a
seed, see :func:`as_generator`); there is no global RNG state. Names follow deepinv's
``GaussianNoise`` / ``PoissonNoise`` (Tachella et al., DeepInverse, deepinv.github.io).

Every model also states its noise: ``variance(y)`` is the per-entry variance of the noise in a
measurement ``y`` (a plug-in estimate from the noisy ``y`` itself where it depends on the
signal), the weights of weighted least-squares data consistency
(:func:`meddiff.consistency.steps.weighted_project`).
"""
from __future__ import annotations

import math

import torch

from meddiff.errors import InputError


def as_generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator:
    """Return ``generator`` itself, or a new generator on ``device`` seeded with the int given.

    ``None`` raises :class:`InputError`: simulated noise must be reproducible, so the caller
    always says where the randomness comes from.
    """
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator(device=device).manual_seed(generator)
    raise InputError("simulating noisy measurements needs a torch.Generator or an int seed")


class GaussianNoise:
    """Additive white Gaussian noise with standard deviation ``sigma``.

    Real ``y``: ``y + sigma * N(0, 1)``. Complex ``y`` (e.g. k-space): circular complex Gaussian
    with ``E|n|^2 = sigma^2``, i.e. variance ``sigma^2 / 2`` in each of the real and imaginary parts
    (the convention of ``torch.randn`` for complex dtypes). ``sigma`` is in the units of ``y``.
    """

    def __init__(self, sigma: float):
        if not sigma >= 0:
            raise InputError(f"noise sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | int | None) -> torch.Tensor:
        """Return a noisy copy of ``y`` (any shape, real or complex float)."""
        gen = as_generator(generator, y.device)
        n = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=gen)
        return y + self.sigma * n

    def variance(self, y: torch.Tensor) -> torch.Tensor:
        """``sigma^2`` for every entry (``E|n|^2``, also for complex ``y``): real, ``y``'s shape."""
        return torch.full(y.shape, self.sigma ** 2, dtype=y.real.dtype, device=y.device)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"


class PoissonNoise:
    """Photon-counting noise: ``y_noisy = gain * Poisson(y / gain)``.

    ``y`` is a real, non-negative rate (negative entries count as rate 0). The output has mean ``y``
    and variance ``gain * y``; a smaller ``gain`` means more counts and less relative noise.
    """

    def __init__(self, gain: float = 1.0):
        if not gain > 0:
            raise InputError(f"Poisson gain must be > 0, got {gain}")
        self.gain = float(gain)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | int | None) -> torch.Tensor:
        """Return Poisson counts scaled back by ``gain`` (same shape and dtype as ``y``)."""
        if y.is_complex():
            raise InputError("Poisson noise needs a real, non-negative measurement")
        gen = as_generator(generator, y.device)
        rate = (y / self.gain).clamp_min(0)
        return self.gain * torch.poisson(rate, generator=gen)

    def variance(self, y: torch.Tensor) -> torch.Tensor:
        """``gain * y`` from the noisy ``y`` (plug-in), at least ``gain^2`` (one count)."""
        return self.gain * y.clamp_min(self.gain)

    def __repr__(self) -> str:
        return f"PoissonNoise(gain={self.gain})"


class TransmissionPoisson:
    """Low-dose X-ray CT noise on line integrals: counts ``~ Poisson(I0 exp(-p))``, then ``-log``.

    ``p`` are line integrals (dimensionless: attenuation per pixel summed along the ray, as
    returned by :class:`meddiff.physics.ct.ParallelBeamCT`). The detector counts
    ``N ~ Poisson(I0 exp(-p))`` (Beer-Lambert law, blank-scan count ``I0`` per bin) are turned back
    into line integrals ``p_hat = log(I0 / max(N, 1))``: zero counts (photon starvation) are clamped
    to one count, which caps ``p_hat`` at ``log(I0)``. By the delta method
    ``var(p_hat) ~= 1 / (I0 exp(-p))`` when the expected count is large (Fessler, 2000, "Statistical
    image reconstruction methods for transmission tomography", Handbook of Medical Imaging vol. 2).
    """

    def __init__(self, I0: float):  # noqa: N803 - the physics symbol
        if not I0 > 1:
            raise InputError(f"blank-scan count I0 must be > 1, got {I0}")
        self.I0 = float(I0)

    def __call__(self, p: torch.Tensor, generator: torch.Generator | int | None) -> torch.Tensor:
        """Return noisy line integrals, same shape and real dtype as ``p``."""
        if p.is_complex():
            raise InputError("transmission noise needs real line integrals")
        gen = as_generator(generator, p.device)
        expected = self.I0 * torch.exp(-p.double())
        counts = torch.poisson(expected, generator=gen).clamp_min(1.0)
        return torch.log(self.I0 / counts).to(p.dtype)

    def variance(self, p: torch.Tensor) -> torch.Tensor:
        """``1 / N = exp(p_hat) / I0`` from the noisy line integrals (the delta method with the
        measured count ``N``, the weights of penalised weighted least squares; Fessler 2000)."""
        return (torch.exp(p.double().clamp(max=math.log(self.I0))) / self.I0).to(p.dtype)

    def __repr__(self) -> str:
        return f"TransmissionPoisson(I0={self.I0:g})"


class Scaled:
    """A noise model acting on ``scale * y``: ``noise(scale * y) / scale``.

    E.g. transmission noise on the line integrals ``k * y`` of a sinogram ``y`` of image-space
    images (:func:`meddiff.physics.acquisition.simulate_ct`). ``variance(y)`` is the inner
    model's variance at ``scale * y`` divided by ``scale^2``.
    """

    def __init__(self, noise, scale: float):
        if not (math.isfinite(scale) and scale > 0):
            raise InputError(f"noise scale must be a finite number > 0, got {scale}")
        self.noise, self.scale = noise, float(scale)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | int | None) -> torch.Tensor:
        return self.noise(self.scale * y, generator) / self.scale

    def variance(self, y: torch.Tensor) -> torch.Tensor:
        return self.noise.variance(self.scale * y) / self.scale ** 2

    def __repr__(self) -> str:
        return f"Scaled({self.noise!r}, scale={self.scale:g})"
