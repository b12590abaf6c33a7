"""Oracle test of classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598, eq. 6).

Data model: ``x0 | c ~ N(mu_c, S)`` with one covariance ``S`` for every condition, including the
null condition (the "prompt dropped" branch, here ``N(mu_null, S)``). At time t the VP marginals
are ``p_t(x | c) = N(a mu_c, C_t)`` with ``C_t = a^2 S + s^2 I`` (``a = sqrt(abar_t)``,
``s = sqrt(1 - abar_t)``). CFG's noise ``(1 + w) eps_c - w eps_null`` is ``-s`` times the score
of the tilted density ``p_t(x | c)^(1+w) p_t(x | null)^(-w)``. Worked by hand: the quadratic
terms ``-(1+w)/2 x'C_t^-1 x + w/2 x'C_t^-1 x`` leave ``-1/2 x'C_t^-1 x``, and the linear term is
``x'C_t^-1 a ((1+w) mu_c - w mu_null)``, so the tilted density is ``N(a mu_w, C_t)`` with

    mu_w = (1 + w) mu_c - w mu_null,

i.e. exactly the time-t marginal of ``N(mu_w, S)``. Hence (i) the guided eps and x0 predictions
equal the closed forms ``s C_t^-1 (x - a mu_w)`` and Tweedie's ``mu_w + a S C_t^-1 (x - a mu_w)``
at every t, and (ii) DDPM / DDIM sampling with the guided model draws ``N(mu_w, S)``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gaussian_oracle import random_gaussian, sample_stats
from meddiff.core.guidance import ClassifierFreeGuidance, GradientGuidance
from meddiff.core.model import Condition, Denoiser
from meddiff.core.samplers import generate
from meddiff.core.schedule import NoiseSchedule

SHAPE = (1, 2, 2)   # (C, H, W): a 4-dimensional Gaussian laid out as an image
DIM = 4
NULL = 2            # the reserved "no condition" label; classes are 0 and 1


class ConditionalGaussianNet(nn.Module):
    """Exact eps for ``x0 ~ N(m_b, S)``, the mean ``m_b`` chosen per sample by the condition.

    Class conditioning: ``m_b = means[label_b]``. Concat conditioning (``means is None``): the
    second input channel ``y`` (B, 1, H, W) shifts the mean, ``m_b = base + gain * y_b``.
    """

    def __init__(self, cov: torch.Tensor, schedule: NoiseSchedule, means=None, base=None,
                 gain: float = 0.0):
        super().__init__()
        self.schedule, self.means, self.base, self.gain = schedule, means, base, gain
        self.eig, self.basis = torch.linalg.eigh(cov)

    def forward(self, x, t, class_labels=None):
        if self.means is not None:
            m = self.means[class_labels]
        else:
            x, y = x[:, :1], x[:, 1:]
            m = self.base + self.gain * y.reshape(y.shape[0], -1).double()
        b = x.shape[0]
        ab = self.schedule.alpha_bar(t.double()).reshape(b, 1)
        coef = (x.reshape(b, -1).double() - ab.sqrt() * m) @ self.basis / (ab * self.eig + 1 - ab)
        return ((1 - ab).sqrt() * coef @ self.basis.T).reshape(x.shape).float()


def _closed_form(x: torch.Tensor, t: int, mu_w: torch.Tensor, cov: torch.Tensor,
                 schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """eps and Tweedie x0 of ``x_t`` (B, D) under the diffused ``N(mu_w, S)`` (mu_w: (B, D))."""
    ab = schedule.alpha_bar(torch.tensor(float(t), dtype=torch.float64))
    a, s = ab.sqrt(), (1 - ab).sqrt()
    c_t = ab * cov + (1 - ab) * torch.eye(DIM, dtype=torch.float64)
    white = torch.linalg.solve(c_t, (x - a * mu_w).T).T          # C_t^-1 (x - a mu_w)
    return s * white, mu_w + a * white @ cov                       # S symmetric


@pytest.fixture(scope="module")
def world():
    _, cov = random_gaussian(DIM, seed=4)
    g = torch.Generator().manual_seed(5)
    means = torch.rand(3, DIM, generator=g, dtype=torch.float64) - 0.5    # classes 0, 1, null
    return means, cov, NoiseSchedule("linear")


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_class_guided_prediction_is_the_tilted_gaussian(world, w):
    means, cov, sched = world
    model = Denoiser(ConditionalGaussianNet(cov, sched, means=means), sched)
    guided = ClassifierFreeGuidance(model, Condition(class_labels=torch.tensor([NULL])), w)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    x = torch.randn(len(labels), *SHAPE, generator=torch.Generator().manual_seed(6))
    mu_w = (1 + w) * means[labels] - w * means[NULL]               # the tilted mean, by hand
    for t in (0, 50, 400, 999):
        before = model.nfe
        pred = guided.predict(x, t, Condition(class_labels=labels))
        assert model.nfe == before + 1                              # both branches, one call
        eps, x0 = _closed_form(x.reshape(len(labels), -1).double(), t, mu_w, cov, sched)
        assert torch.allclose(pred.eps.reshape_as(eps).double(), eps, rtol=0, atol=1e-6), t
        # x0 = (x - s eps) / a: float32 roundoff grows by 1 / a = 1 / sqrt(abar_999) ~ 160
        tol = 1e-4 if t == 999 else 1e-6
        assert torch.allclose(pred.x0.reshape_as(x0).double(), x0, rtol=0, atol=tol), t


def test_concat_guided_prediction_is_the_tilted_gaussian(world):
    """Concatenated-image conditioning: ``x0 | y ~ N(base + 0.3 y, S)``, null image y = 0 given
    as one (1, 1, H, W) tensor for the whole batch; the tilted mean is ``base + 1.2 y`` at w = 3."""
    means, cov, sched = world
    base, w = means[0], 3.0
    model = Denoiser(ConditionalGaussianNet(cov, sched, base=base, gain=0.3), sched)
    guided = ClassifierFreeGuidance(model, Condition(concat=torch.zeros(1, *SHAPE)), w)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(5, *SHAPE, generator=g), torch.rand(5, *SHAPE, generator=g)
    mu_w = base + (1 + w) * 0.3 * y.reshape(5, -1).double()
    for t in (10, 300, 900):
        pred = guided.predict(x, t, Condition(concat=y))
        eps, _ = _closed_form(x.reshape(5, -1).double(), t, mu_w, cov, sched)
        assert torch.allclose(pred.eps.reshape_as(eps).double(), eps, rtol=0, atol=1e-6), t


@pytest.mark.parametrize("sampler,steps,opts", [("ddpm", 250, {}), ("ddim", 100, {"eta": 0.0})])
def test_guided_sampling_draws_the_tilted_gaussian(world, sampler, steps, opts):
    """w = 2 on class 1: the samples follow N(3 mu_1 - 2 mu_null, S), not N(mu_1, S)."""
    means, cov, sched = world
    n, w = 6000, 2.0
    model = Denoiser(ConditionalGaussianNet(cov, sched, means=means), sched,
                     cond=Condition(class_labels=torch.ones(n, dtype=torch.long)))
    guided = ClassifierFreeGuidance(model, Condition(class_labels=torch.tensor([NULL])), w)
    x = generate(guided, (n, *SHAPE), sampler=sampler, steps=steps,
                 generator=torch.Generator().manual_seed(8), **opts)
    m, c = sample_stats(x)
    mu_w = (1 + w) * means[1] - w * means[NULL]
    assert (m - mu_w).abs().max() < 0.03, (m, mu_w)          # standard error ~0.009
    assert (c - cov).abs().max() < 0.04, (c, cov)
    assert (means[1] - mu_w).abs().max() > 0.5               # guidance really moved the mean


# ------------------------------------------------------------------------------ gradient guidance
class _ConstEps(nn.Module):
    """eps = 0.4 everywhere: at t = 500 the x0 estimate of x_t = 0 is far below -1."""

    def forward(self, x, t):
        return torch.full_like(x, 0.4)


def test_gradient_guidance_shifts_x0_with_eps_from_the_clipped_base_estimate():
    sched, t = NoiseSchedule("linear"), 500.0
    x = torch.zeros(2, 1, 4, 4)
    lp = lambda x_t, t: -((x_t - 1.0) ** 2).sum((1, 2, 3))  # noqa: E731  (pulls x_t up)
    ab = float(sched.alpha_bar(torch.tensor(t)))
    raw, clipped = Denoiser(_ConstEps(), sched), Denoiser(_ConstEps(), sched, clip_x0=(-1.0, 1.0))
    for den in (raw, clipped):  # scale 0: the base prediction itself
        same, base = GradientGuidance(den, lp, 0.0).predict(x, t), den.predict(x, t)
        assert torch.equal(same.x0, base.x0) and torch.equal(same.eps, base.eps)
    guided = GradientGuidance(raw, lp, 0.5).predict(x, t)
    # eps_hat = eps - 0.5 sqrt(1 - abar) grad, grad = -2 (x - 1) = 2; x0 from eps_hat at the same x
    eps_hat = 0.4 - 0.5 * (1 - ab) ** 0.5 * 2.0
    assert torch.allclose(guided.eps, torch.full_like(x, eps_hat), atol=1e-6)
    assert torch.allclose(guided.x0, -((1 - ab) ** 0.5) * guided.eps / ab ** 0.5, atol=1e-5)
    # clipped base: the same shift, added to the clipped estimate (-1) and not clipped again
    shift = -((1 - ab) / ab) ** 0.5 * (eps_hat - 0.4)
    got = GradientGuidance(clipped, lp, 0.5).predict(x, t).x0
    assert torch.allclose(got, torch.full_like(x, -1.0 + shift), atol=1e-5) and shift > 2.0
