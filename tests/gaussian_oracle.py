"""Exact denoisers for Gaussian data, used as oracles by the core tests.

For data ``x0 ~ N(mu, S)`` the VP marginal is ``x_t ~ N(a mu, a^2 S + s^2 I)`` with
``a = sqrt(abar_t)``, ``s = sqrt(1 - abar_t)``, so the exact noise prediction is
``eps(x_t) = s (a^2 S + s^2 I)^{-1} (x_t - a mu)``.
"""
from __future__ import annotations

import torch
from torch import nn

from meddiff.core.schedule import NoiseSchedule


def random_gaussian(dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A mean in [-0.5, 0.5] and a covariance with eigenvalues in [0.05, 0.5] (image-like scale)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    eig = torch.linspace(0.05, 0.5, dim, dtype=torch.float64)
    mu = torch.rand(dim, generator=g, dtype=torch.float64) - 0.5
    return mu, q @ torch.diag(eig) @ q.T


class GaussianEpsNet(nn.Module):
    """``net(x_t, t) -> eps`` exactly, for x of shape (B, *shape) flattening to ``dim``.

    ``parametrization`` other than ``eps`` returns the corresponding exact target, to test the
    Denoiser's conversions.
    """

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor, schedule: NoiseSchedule,
                 parametrization: str = "eps"):
        super().__init__()
        self.mu, self.schedule, self.param = mu, schedule, parametrization
        self.eig, self.basis = torch.linalg.eigh(cov)  # C_t^{-1} = Q diag(1/(a^2 l + s^2)) Q^T

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xf = x.reshape(b, -1).double()
        ab = self.schedule.alpha_bar(t.double()).reshape(b, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        coef = (xf - a * self.mu) @ self.basis / (ab * self.eig + (1 - ab))
        eps = s * coef @ self.basis.T
        x0 = (xf - s * eps) / a
        out = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.param]
        return out.reshape(x.shape).to(x.dtype)


class ConditionalGaussianNet(nn.Module):
    """Exact v-prediction of a concat-conditioned model for ``x0 | c ~ N(mean(c), std^2 I)``
    per pixel, the input being ``[x_t, c_1, ..., c_k]`` (model space) and ``mean(c)`` the
    average of the condition channels: for x0 ~ N(m, s0^2), ``eps = s (x_t - a m) / (a^2 s0^2
    + s^2)``."""

    def __init__(self, schedule: NoiseSchedule, std: float):
        super().__init__()
        self.schedule, self.std = schedule, std

    def forward(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, m = inp[:, :1].double(), inp[:, 1:].double().mean(1, keepdim=True)
        ab = self.schedule.alpha_bar(t.double()).reshape(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        eps = s * (x - a * m) / (ab * self.std ** 2 + (1 - ab))
        x0 = (x - s * eps) / a
        return (a * eps - s * x0).float()


def gaussian_posterior(mu, cov, a_mat, y, noise_std):
    """Posterior mean and covariance of ``x ~ N(mu, cov)`` given ``y = A x + N(0, noise_std^2 I)``."""
    prec = torch.linalg.inv(cov) + a_mat.T @ a_mat / noise_std ** 2
    post_cov = torch.linalg.inv(prec)
    post_mean = post_cov @ (torch.linalg.solve(cov, mu) + a_mat.T @ y / noise_std ** 2)
    return post_mean, post_cov


def sample_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical mean (D,) and covariance (D, D) of samples (N, *shape)."""
    xf = x.reshape(x.shape[0], -1).double()
    return xf.mean(0), torch.cov(xf.T)
