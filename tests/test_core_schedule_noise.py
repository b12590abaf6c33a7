"""Schedules against independently computed golden values; noise statistics; loss targets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meddiff.core.losses import diffusion_loss
from meddiff.core.model import Denoiser
from meddiff.core.noise import gaussian, simplex
from meddiff.core.schedule import NoiseSchedule


def test_linear_schedule_matches_numpy_cumprod():
    betas = np.linspace(1e-4, 2e-2, 1000)
    abar = np.cumprod(1 - betas)
    s = NoiseSchedule("linear")
    for t in (0, 1, 250, 999):
        assert float(s.alpha_bar(t)) == pytest.approx(abar[t], rel=1e-9)
    assert float(s.alpha_bar(-1)) == 1.0
    # fractional times interpolate log abar
    mid = math.exp(0.5 * (math.log(abar[10]) + math.log(abar[11])))
    assert float(s.alpha_bar(10.5)) == pytest.approx(mid, rel=1e-9)


def test_cosine_schedule_golden():
    s = NoiseSchedule("cosine")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500):
        assert float(s.alpha_bar(t)) == pytest.approx(f(t + 1) / f(0), rel=1e-6)


def test_ve_sigma_inverse_round_trip():
    s = NoiseSchedule("linear")
    t = torch.tensor([0.0, 3.25, 100.0, 640.5, 999.0], dtype=torch.float64)
    assert torch.allclose(s.t_from_sigma_ve(s.sigma_ve(t)), t, atol=1e-6)


def test_timesteps_are_decreasing_integers_from_start():
    s = NoiseSchedule()
    ts = s.timesteps(50)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 50 and (ts.diff() < 0).all()
    assert len(s.timesteps(100, t_start=20)) == 21
    with pytest.raises(ValueError):
        s.timesteps(10, t_start=1000)


@pytest.mark.parametrize("shape", [(16, 1, 64, 64), (2, 1, 32, 32, 32)])
def test_simplex_noise_standardised_seeded_and_spatially_smooth(shape):
    like = torch.empty(shape)
    a = simplex(like, torch.Generator().manual_seed(0))
    b = simplex(like, torch.Generator().manual_seed(0))
    c = simplex(like, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flat = a.flatten(2)
    assert torch.allclose(flat.mean(-1), torch.zeros(1), atol=1e-5)
    assert torch.allclose(flat.std(-1), torch.ones(1), atol=1e-4)
    # unlike white noise, neighbouring pixels are strongly correlated
    nb = torch.corrcoef(torch.stack([a[..., :-1].flatten(), a[..., 1:].flatten()]))[0, 1]
    wn = gaussian(like, torch.Generator().manual_seed(0))
    nb_white = torch.corrcoef(torch.stack([wn[..., :-1].flatten(), wn[..., 1:].flatten()]))[0, 1]
    assert nb > 0.5 and abs(nb_white) < 0.05


class _Const(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, t):
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_loss_uses_the_parametrization_target(param):
    """With a network that outputs 0, the loss is E[target^2]: 1 for eps, E[x0^2] for x0, and
    E[abar eps^2 + (1-abar) x0^2] for v (x0 = 0.5 constant here)."""
    sched = NoiseSchedule()
    model = Denoiser(_Const(0.0), sched, parametrization=param)
    x0 = torch.full((4096, 1, 4, 4), 0.5)
    loss = float(diffusion_loss(model, x0, torch.Generator().manual_seed(0)))
    expected = {"eps": 1.0, "x0": 0.25,
                "v": float((sched.alpha_bar(torch.arange(1000.)) + 0.25 * (1 - sched.alpha_bar(torch.arange(1000.)))).mean())}
    assert loss == pytest.approx(expected[param], rel=0.03)
