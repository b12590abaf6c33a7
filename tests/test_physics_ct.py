"""CT physics: Radon transform against scikit-image, FBP against iradon, exact adjoint,
low-dose transmission noise statistics, unit conversions, user errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from meddiff.errors import InputError
from meddiff.physics import (LimitedAngleCT, ParallelBeamCT, SparseViewCT, TransmissionPoisson,
                             attenuation_to_hu, hu_to_attenuation)

N = 64


@pytest.fixture(scope="module")
def phantom():
    return resize(shepp_logan_phantom(), (N, N), anti_aliasing=True)


def _t(img):
    return torch.from_numpy(img).float()[None, None]


def _inside_circle(n):
    yy, xx = np.mgrid[:n, :n] - n // 2
    return np.hypot(yy, xx) < n // 2 - 1


@pytest.mark.parametrize("theta", [np.linspace(0, 180, 45, endpoint=False),
                                   np.array([0.0, 17.0, 45.0, 90.0, 133.3, 179.0])])
def test_radon_matches_skimage(phantom, theta):
    op = ParallelBeamCT(N, np.deg2rad(theta), n_detectors=N)  # skimage circle=True geometry
    mine = op.A(_t(phantom))[0, 0].numpy().T  # (n_detectors, n_views) like skimage
    ref = radon(phantom, theta, circle=True)
    assert np.corrcoef(mine.ravel(), ref.ravel())[0, 1] > 0.999
    assert abs(mine.sum() / ref.sum() - 1) < 0.01  # same units: line integrals in pixels
    assert np.linalg.norm(mine - ref) < 0.03 * np.linalg.norm(ref)


def test_projection_conserves_mass():
    """Every view of the default (full-coverage) detector integrates the whole image."""
    op = SparseViewCT(12, (20, 28))
    x = torch.rand(2, 3, 20, 28, dtype=torch.float64)
    sums = op.A(x).sum(dim=-1)
    assert torch.allclose(sums, x.sum(dim=(-2, -1))[..., None].expand_as(sums), rtol=1e-6)
    delta = torch.zeros(1, 1, 20, 28, dtype=torch.float64)
    delta[0, 0, 10, 14] = 1.0  # a unit pixel on the rotation centre
    proj = op.A(delta)[0, 0, :, op.n_detectors // 2 - 1:op.n_detectors // 2 + 2]
    assert torch.allclose(proj[0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    # at 45 degrees the footprint is a triangle of half-width 1/sqrt(2) and height sqrt(2):
    # the centre bin holds all but two tails of area (1/sqrt(2) - 1/2)^2 each
    tail = (1 / math.sqrt(2) - 0.5) ** 2
    assert torch.allclose(proj[3], torch.tensor([tail, 1 - 2 * tail, tail],
                                                dtype=torch.float64))


@pytest.mark.parametrize("filter_name", ["ramp", "hann"])
def test_fbp_comparable_to_iradon(phantom, filter_name):
    theta = np.linspace(0, 180, 90, endpoint=False)
    op = SparseViewCT(90, N, n_detectors=N)
    inside = _inside_circle(N)
    sino_sk = radon(phantom, theta, circle=True)
    ref = iradon(sino_sk, theta, filter_name=filter_name, circle=True)
    mine = op.fbp(op.A(_t(phantom)), filter_name)[0, 0].numpy()
    on_sk = op.fbp(_t(sino_sk.T), filter_name)[0, 0].numpy()

    def rmse(r):
        return np.sqrt(((r - phantom)[inside] ** 2).mean())

    assert rmse(mine) < 1.1 * rmse(ref)
    assert np.corrcoef(on_sk[inside], ref[inside])[0, 1] > 0.999
    assert abs(on_sk[inside].mean() / ref[inside].mean() - 1) < 0.02


def test_fbp_and_dagger_reconstruct(phantom):
    small = resize(phantom, (32, 32), anti_aliasing=True)
    op = SparseViewCT(48, 32)
    y = op.A(_t(small))
    inside = _inside_circle(32)
    fbp = op.fbp(y)[0, 0].numpy()
    dagger = op.A_dagger(y)[0, 0].numpy()
    err = {k: np.linalg.norm((v - small)[inside]) / np.linalg.norm(small[inside])
           for k, v in (("fbp", fbp), ("dagger", dagger))}
    assert err["fbp"] < 0.3 and err["dagger"] < err["fbp"]
    residual = torch.linalg.norm(op.A(torch.from_numpy(dagger).float()[None, None]) - y)
    assert float(residual / torch.linalg.norm(y)) < 1e-2


def test_backprojection_gradient_is_transpose():
    op = LimitedAngleCT(20, 24, angular_range_deg=90.0)
    x = torch.rand(2, 1, 24, 24, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 20, op.n_detectors, dtype=torch.float64)
    (g,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    assert torch.allclose(g, op.A_adjoint(y), atol=1e-12)
    yy = y.clone().requires_grad_(True)
    (gy,) = torch.autograd.grad((op.A_adjoint(yy) * x.detach()).sum(), yy)
    assert torch.allclose(gy, op.A(x.detach()), atol=1e-12)


def test_geometry_of_view_sets():
    assert torch.allclose(SparseViewCT(4, 16).angles,
                          torch.tensor([0.0, 45.0, 90.0, 135.0], dtype=torch.float64).deg2rad())
    limited = LimitedAngleCT(30, 16, angular_range_deg=60.0)
    assert float(limited.angles.max()) < math.radians(60.0)
    assert abs(limited.angle_step() - math.radians(2.0)) < 1e-12
    assert abs(SparseViewCT(60, 16).angle_step() - math.pi / 60) < 1e-12


def test_transmission_poisson_variance_matches_theory():
    i0 = 1e4
    p = torch.tensor([0.5, 1.0, 2.0, 3.0]).repeat_interleave(40_000).reshape(4, -1)
    noisy = TransmissionPoisson(i0)(p, 0)
    expected_var = 1.0 / (i0 * torch.exp(-p[:, 0].double()))
    var = noisy.double().var(dim=1)
    assert torch.all((var / expected_var - 1).abs() < 0.05)
    assert torch.all((noisy.double().mean(dim=1) - p[:, 0]).abs() < 5 * expected_var.sqrt()
                     / math.sqrt(40_000) + 1 / (2 * i0 * torch.exp(-p[:, 0].double())))
    assert torch.equal(noisy, TransmissionPoisson(i0)(p, 0))


def test_transmission_poisson_handles_photon_starvation():
    p = torch.full((1000,), 12.0)  # expected count 1e4 * exp(-12) = 0.06: mostly zero counts
    noisy = TransmissionPoisson(1e4)(p, 1)
    assert torch.isfinite(noisy).all()
    assert float(noisy.max()) == pytest.approx(math.log(1e4), rel=1e-6)
    with pytest.raises(InputError):
        TransmissionPoisson(0.5)


def test_low_dose_ct_simulation_is_reproducible():
    op = SparseViewCT(30, 32, noise=TransmissionPoisson(5e3))
    x = hu_to_attenuation(torch.full((1, 1, 32, 32), 40.0), pixel_size_mm=4.0)
    y1, y2 = op(x, generator=3), op(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2) and y1.shape == (1, 1, 30, op.n_detectors)
    assert 0 < float((y1 - op.A(x)).std()) < 0.1


def test_hu_conversion():
    hu = torch.tensor([-1200.0, -1000.0, 0.0, 1000.0])
    mu = hu_to_attenuation(hu, pixel_size_mm=0.5)
    assert torch.allclose(mu, torch.tensor([0.0, 0.0, 0.0096, 0.0192]))
    assert torch.allclose(attenuation_to_hu(mu[1:], 0.5), hu[1:], atol=1e-3)


def test_ct_user_errors():
    op = SparseViewCT(10, 16)
    with pytest.raises(InputError, match="shape"):
        op.A(torch.zeros(1, 1, 16, 15))
    with pytest.raises(InputError, match="shape"):
        op.A_adjoint(torch.zeros(1, 1, 9, op.n_detectors))
    with pytest.raises(InputError, match="float"):
        op.A(torch.zeros(1, 1, 16, 16, dtype=torch.complex64))
    with pytest.raises(InputError, match="filter"):
        op.fbp(torch.zeros(1, 1, 10, op.n_detectors), "shepp")
    for bad in (lambda: SparseViewCT(0, 16), lambda: LimitedAngleCT(10, 16, 0.0),
                lambda: LimitedAngleCT(10, 16, 200.0), lambda: ParallelBeamCT(1, [0.0]),
                lambda: ParallelBeamCT((4, 4, 4), [0.0]), lambda: ParallelBeamCT(8, [])):
        with pytest.raises(InputError):
            bad()
