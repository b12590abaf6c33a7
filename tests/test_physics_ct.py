"""CT physics: Radon transform against scikit-image, FBP against iradon, exact adjoint,
the on-the-fly projector against the stored matrix and the analytic Radon transform of a disk,
bounded memory at clinical size, low-dose transmission noise statistics, unit conversions,
user errors."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from meddiff.errors import InputError
from meddiff.physics import (LimitedAngleCT, ParallelBeamCT, SparseViewCT, TransmissionPoisson,
                             attenuation_to_hu, hu_to_attenuation)
from meddiff.physics.acquisition import FULL_DOSE_I0, ct_scale, simulate_ct
from meddiff.physics.ct import MATRIX_BUDGET_BYTES, estimated_matrix_bytes
from meddiff.physics.noise import GaussianNoise, PoissonNoise, Scaled

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


@pytest.mark.parametrize("backend", ["matrix", "onthefly"])
def test_projection_conserves_mass(backend):
    """Every view of the default (full-coverage) detector integrates the whole image."""
    op = SparseViewCT(12, (20, 28), backend=backend)
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


@pytest.mark.parametrize("backend", ["matrix", "onthefly"])
def test_backprojection_gradient_is_transpose(backend):
    op = LimitedAngleCT(20, 24, angular_range_deg=90.0, backend=backend)
    x = torch.rand(2, 1, 24, 24, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 20, op.n_detectors, dtype=torch.float64)
    (g,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    assert torch.allclose(g, op.A_adjoint(y), atol=1e-12)
    yy = y.clone().requires_grad_(True)
    (gy,) = torch.autograd.grad((op.A_adjoint(yy) * x.detach()).sum(), yy)
    assert torch.allclose(gy, op.A(x.detach()), atol=1e-12)


def _rel_max(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _ramp_integral(v, a, b):
    """Integral from -inf to v of the unit ramp rising linearly from 0 at a to 1 at b."""
    width = b - a
    q = np.clip(v - a, 0.0, width)
    return q * q / (2.0 * np.where(width > 0, width, 1.0)) + np.maximum(v - b, 0.0)


def _reference_matrix(height, width, angles, n_det):
    """Dense (V * D, H * W) separable-footprint matrix written independently in numpy (Long,
    Fessler & Balter 2010, Eq. 25): the trapezoid of each pixel integrated over unit bins."""
    ys, xs = np.meshgrid(np.arange(height) - height // 2, np.arange(width) - width // 2,
                         indexing="ij")
    xs, ys = xs.ravel()[:, None].astype(float), ys.ravel()[:, None].astype(float)
    c, s = np.cos(angles)[None, :], np.sin(angles)[None, :]
    outer, inner = 0.5 * (abs(c) + abs(s)), 0.5 * abs(abs(c) - abs(s))
    height_ = 1.0 / np.maximum(abs(c), abs(s))
    centre = xs * c - ys * s + n_det // 2
    mat = np.zeros((len(angles) * n_det, height * width))
    for b in range(n_det):
        lo, hi = b - 0.5 - centre, b + 0.5 - centre
        area = height_ * ((_ramp_integral(hi, -outer, -inner) - _ramp_integral(hi, inner, outer))
                          - (_ramp_integral(lo, -outer, -inner) - _ramp_integral(lo, inner, outer)))
        mat[np.arange(len(angles)) * n_det + b, :] = area.T
    return mat


@pytest.mark.parametrize("backend", ["matrix", "onthefly"])
def test_both_backends_match_an_independent_numpy_footprint(backend):
    angles = np.random.default_rng(2).uniform(-math.pi, 2 * math.pi, 9)
    op = ParallelBeamCT((12, 17), angles, backend=backend)
    mat = torch.from_numpy(_reference_matrix(12, 17, angles, op.n_detectors))
    x = torch.rand(1, 1, 12, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = (mat @ x.reshape(-1)).reshape(op.n_views, op.n_detectors)
    assert torch.allclose(op.A(x.float())[0, 0].double(), want, atol=1e-5)


@pytest.mark.parametrize("size,angles,n_det", [
    (32, np.arange(30) * math.pi / 30, None),
    (64, np.arange(60) * math.pi / 60, None),
    ((20, 29), np.random.default_rng(0).uniform(-math.pi, 2 * math.pi, 17), None),
    (33, np.deg2rad([0.0, 45.0, 90.0, 135.0, 180.0, 270.0, 17.3]), 20),  # clipped detector
])
def test_onthefly_matches_matrix(size, angles, n_det):
    """The matrix-free projector is the stored matrix's map: A, A^T and FBP agree to rounding,
    for any chunking, batch and channel count, in float32 and float64."""
    g = torch.Generator().manual_seed(1)
    ref = ParallelBeamCT(size, angles, n_det, backend="matrix")
    x = torch.rand(2, 3, *ref.img_shape, generator=g)
    y = torch.randn(2, 3, ref.n_views, ref.n_detectors, generator=g)
    ax, aty, fbp = ref.A(x), ref.A_adjoint(y), ref.fbp(ref.A(x))
    for chunk in (1, 7, None):
        op = ParallelBeamCT(size, angles, n_det, backend="onthefly", chunk_views=chunk)
        assert op.backend == "onthefly"
        assert _rel_max(op.A(x), ax) < 1e-5
        assert _rel_max(op.A_adjoint(y), aty) < 1e-5
        assert _rel_max(op.fbp(op.A(x)), fbp) < 1e-5
    assert _rel_max(op.A(x.double()), ax.double()) < 1e-6


@pytest.mark.parametrize("size,n_views", [(32, 30), (48, 90), ((21, 34), 13)])
def test_onthefly_adjoint_is_exact(size, n_views):
    """<A x, y> = <x, A^T y>: to 1e-5 in float32 and to round-off in float64."""
    op = SparseViewCT(n_views, size, backend="onthefly", chunk_views=4)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        g = torch.Generator().manual_seed(2)
        x = torch.randn(3, 1, *op.img_shape, generator=g, dtype=dtype)
        y = torch.randn(3, 1, op.n_views, op.n_detectors, generator=g, dtype=dtype)
        lhs = (op.A(x).double() * y.double()).sum()
        rhs = (x.double() * op.A_adjoint(y).double()).sum()
        assert abs(float(lhs - rhs)) <= tol * abs(float(lhs))


def _disk_image(n: int, radius: float, sub: int = 8) -> np.ndarray:
    """Area fraction of each pixel inside a disk centred on the rotation centre (sub x sub
    supersampling): the pixel-basis image closest to the disk."""
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    centres = np.arange(n) - n // 2
    yy = centres[:, None, None, None] + offsets[None, None, :, None]
    xx = centres[None, :, None, None] + offsets[None, None, None, :]
    return ((xx ** 2 + yy ** 2) <= radius ** 2).mean(axis=(2, 3))


def test_onthefly_disk_matches_analytic_radon():
    """A disk of radius R: every view is the chord length 2 sqrt(R^2 - t^2), averaged over each
    unit bin (closed form t sqrt(R^2 - t^2) + R^2 asin(t / R)), up to the pixelisation of the
    disk's edge."""
    n, radius = 128, 40.3
    op = SparseViewCT(7, n, backend="onthefly")
    sino = op.A(torch.from_numpy(_disk_image(n, radius)).float()[None, None])[0, 0].double()
    t = torch.arange(op.n_detectors, dtype=torch.float64) - op.n_detectors // 2

    def area(u):  # integral of the chord length from -R to u (up to a constant)
        u = u.clamp(-radius, radius)
        return u * (radius ** 2 - u ** 2).sqrt() + radius ** 2 * torch.asin(u / radius)

    ref = (area(t + 0.5) - area(t - 0.5)).expand_as(sino)
    assert float((sino - ref).abs().max()) < 0.015 * float(ref.max())
    assert float(torch.linalg.norm(sino - ref) / torch.linalg.norm(ref)) < 0.005


def test_backend_choice():
    assert SparseViewCT(180, 128).backend == "matrix"  # ~110 MB
    assert SparseViewCT(720, 512).backend == "onthefly"  # ~7 GB
    assert estimated_matrix_bytes(512, 512, 720) > 6e9
    assert estimated_matrix_bytes(256, 256, 180) <= MATRIX_BUDGET_BYTES
    assert SparseViewCT(720, 512, backend="matrix").backend == "matrix"


_CLINICAL_RUN = """
import resource, torch
from meddiff.physics import SparseViewCT
from meddiff.physics.ct import _system_matrix
torch.set_num_threads(1)
op = SparseViewCT({views}, {size})
x = torch.rand(1, 1, {size}, {size}, generator=torch.Generator().manual_seed(0))
y = torch.randn(1, 1, op.n_views, op.n_detectors, generator=torch.Generator().manual_seed(1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ax, aty = op.A(x), op.A_adjoint(y)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
mass = float((ax.sum(-1) / x.sum() - 1).abs().max())
inner = float(((ax * y).sum() - (x * aty).sum()) / (ax * y).sum())
print(op.backend, _system_matrix.cache_info().currsize, growth // 1024, mass, inner)
"""


def test_clinical_size_runs_in_bounded_memory():
    """256 x 256 with 360 views (the stored matrix pair: ~0.9 GB): the default operator projects
    and backprojects without building it, in a fresh process whose peak memory grows < 150 MB."""
    code = _CLINICAL_RUN.format(size=256, views=360)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.split()
    backend, cached, growth_mb, mass, inner = out[0], int(out[1]), int(out[2]), *map(float, out[3:])
    assert backend == "onthefly" and cached == 0
    assert growth_mb < 150, growth_mb
    assert mass < 1e-4 and abs(inner) < 1e-5


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


def test_noise_models_state_their_variance():
    """The plug-in variances agree with the empirical ones (transmission: the delta method at
    the measured count), and a scaled model's is the inner one over ``scale^2``."""
    p = torch.tensor([0.5, 2.0, 4.0]).repeat_interleave(40_000).reshape(3, -1)
    tp = TransmissionPoisson(1e4)
    noisy = tp(p, 0)
    plug_in = tp.variance(noisy).double().mean(dim=1)
    assert torch.all((plug_in / noisy.double().var(dim=1) - 1).abs() < 0.06)
    scaled = Scaled(tp, 0.1)
    y = scaled(p / 0.1, 0)
    assert torch.allclose(y, noisy / 0.1)
    assert torch.allclose(scaled.variance(y), tp.variance(noisy) / 0.01)
    g = GaussianNoise(0.3)
    assert torch.allclose(g.variance(torch.zeros(2, 3, dtype=torch.complex64)),
                          torch.full((2, 3), 0.09))
    assert float(PoissonNoise(2.0).variance(torch.tensor([0.0, 10.0]))[1]) == 20.0
    with pytest.raises(InputError):
        Scaled(tp, 0.0)


def test_transmission_poisson_handles_photon_starvation():
    p = torch.full((1000,), 12.0)  # expected count 1e4 * exp(-12) = 0.06: mostly zero counts
    noisy = TransmissionPoisson(1e4)(p, 1)
    assert torch.isfinite(noisy).all()
    assert float(noisy.max()) == pytest.approx(math.log(1e4), rel=1e-6)
    with pytest.raises(InputError):
        TransmissionPoisson(0.5)


def test_simulated_low_dose_ct_carries_its_noise_model():
    """simulate_ct's sinogram is the scaled transmission noise of the operator it returns (the
    same numbers as applying it by hand), so reconstruction knows the noise variance."""
    x = torch.rand(2, 1, 32, 32) * 0.6
    op, y = simulate_ct(x, views=20, dose=0.25, seed=4)
    k = ct_scale(32)
    by_hand = TransmissionPoisson(FULL_DOSE_I0 * 0.25)(k * op.A(x),
                                                       torch.Generator().manual_seed(4)) / k
    assert torch.equal(y, by_hand)
    assert isinstance(op.noise, Scaled) and op.noise.scale == k
    assert simulate_ct(x, views=20, seed=4)[0].noise is None


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
                lambda: SparseViewCT(10, 16, backend="gpu"),
                lambda: SparseViewCT(10, 16, backend="onthefly", chunk_views=0),
                lambda: LimitedAngleCT(10, 16, 200.0), lambda: ParallelBeamCT(1, [0.0]),
                lambda: ParallelBeamCT((4, 4, 4), [0.0]), lambda: ParallelBeamCT(8, [])):
        with pytest.raises(InputError):
            bad()
