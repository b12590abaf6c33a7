"""Contract tests run over every registered operator (the deepinv idea): exact adjoints,
shapes and dtypes, reproducible noisy measurements, autograd through A, and the shared noise
models and CG solver checked against independent oracles."""
from __future__ import annotations

import pytest
import torch

from meddiff.errors import InputError
from meddiff.physics import (OPERATORS, Denoising, GaussianNoise, Inpainting, PoissonNoise,
                             conjugate_gradient)
from meddiff.physics.inpainting import random_pixel_mask

SIZE = 32
NAMES = sorted(OPERATORS)


def _op(name):
    return OPERATORS[name](img_size=SIZE, seed=0)


def _randn(shape, dtype, seed):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
    assert a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol), \
        float((a - b).abs().max())


def _inner(a, b):
    """<a, b> = sum(a * conj(b)) in double precision."""
    return complex((a.to(torch.complex128) * b.to(torch.complex128).conj()).sum())


@pytest.mark.parametrize("name", NAMES)
def test_adjointness_float32(name):
    op = _op(name)
    dtype = torch.complex64 if op.complex_domain else torch.float32
    for seed in range(3):
        x = _randn((2, 1, SIZE, SIZE), dtype, seed)
        ax = op.A(x)
        y = _randn(ax.shape, ax.dtype, 100 + seed)
        lhs, rhs = _inner(ax, y), _inner(x, op.A_adjoint(y))
        assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


@pytest.mark.parametrize("name", NAMES)
def test_adjointness_is_exact_in_double(name):
    """In float64 the adjoint is exact to round-off, i.e. not an approximate backprojection."""
    op = _op(name)
    dtype = torch.complex128 if op.complex_domain else torch.float64
    x = _randn((1, 1, SIZE, SIZE), dtype, 7)
    ax = op.A(x)
    assert ax.dtype == dtype
    y = _randn(ax.shape, ax.dtype, 8)
    lhs, rhs = _inner(ax, y), _inner(x, op.A_adjoint(y))
    assert abs(lhs - rhs) <= 1e-11 * abs(lhs)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_reproducible_noise(name):
    op = _op(name)
    op.dagger_iters = 3  # only shapes here; CG accuracy is tested per modality
    dtype = torch.complex64 if op.complex_domain else torch.float32
    x = _randn((3, 1, SIZE, SIZE), dtype, 1).abs().to(dtype) * 0.1  # small attenuation for CT
    y = op.A(x)
    assert y.shape[0] == 3 and y.dtype == dtype
    assert op.A_adjoint(y).shape == x.shape and op.A_adjoint(y).dtype == dtype
    assert op.A_dagger(y).shape == x.shape
    y1, y2, y3 = op(x, generator=5), op(x, generator=torch.Generator().manual_seed(5)), op(x, 6)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert y1.shape == y.shape and y1.dtype == dtype
    assert torch.allclose(op.restrict(y1 - y), y1 - y)  # noise only where measured
    with pytest.raises(InputError):
        op(x)  # noisy simulation without a seed or generator


@pytest.mark.parametrize("name", NAMES)
def test_autograd_through_A_equals_adjoint(name):
    """d/dx Re<A x, y> = A^H y: what DPS-style guidance differentiates."""
    op = _op(name)
    dtype = torch.complex64 if op.complex_domain else torch.float32
    x = _randn((2, 1, SIZE, SIZE), dtype, 2).requires_grad_(True)
    ax = op.A(x)
    y = _randn(ax.shape, ax.dtype, 3)
    (grad,) = torch.autograd.grad((ax * y.conj()).real.sum(), x)
    expected = op.A_adjoint(y)  # torch's complex gradient is dL/du + i dL/dv = A^H y
    _assert_close(grad, expected, rtol=1e-4, atol=1e-5)


def test_pseudo_inverse_identity_for_projections():
    """A A^+ A = A for inpainting and denoising, whose A^+ is closed form."""
    x = _randn((2, 3, SIZE, SIZE), torch.float32, 4)
    for op in (Inpainting(random_pixel_mask((SIZE, SIZE), 0.4, seed=1)), Denoising(0.2)):
        _assert_close(op.A(op.A_dagger(op.A(x))), op.A(x))
    mask = random_pixel_mask((SIZE, SIZE), 0.4, seed=1)
    assert int(mask.sum()) == round(0.4 * SIZE * SIZE)


def test_inpainting_noise_and_mask_errors():
    mask = random_pixel_mask((SIZE, SIZE), 0.5, seed=2)
    op = Inpainting(mask, GaussianNoise(0.3))
    x = torch.zeros(4, 1, SIZE, SIZE)
    y = op(x, generator=0)
    assert torch.all(y[:, :, ~mask] == 0)
    assert abs(float(y[:, :, mask].std()) - 0.3) < 0.02
    with pytest.raises(InputError):
        Inpainting(torch.full((SIZE, SIZE), 0.5))
    with pytest.raises(InputError):
        op.A(torch.zeros(1, 1, SIZE, SIZE + 1))


def test_conjugate_gradient_matches_direct_solve():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 20, 20, dtype=torch.float64, generator=g)
    spd = m @ m.transpose(1, 2) + 0.5 * torch.eye(20, dtype=torch.float64)
    b = torch.randn(3, 20, dtype=torch.float64, generator=g)
    x = conjugate_gradient(lambda v: (spd @ v[..., None])[..., 0], b, n_iter=200, tol=1e-12)
    _assert_close(x, torch.linalg.solve(spd, b), rtol=1e-8, atol=1e-8)


def test_gaussian_noise_statistics():
    y = torch.zeros(200_000, dtype=torch.complex64)
    n = GaussianNoise(0.5)(y, 0)
    assert abs(float(n.abs().pow(2).mean()) - 0.25) < 0.005  # E|n|^2 = sigma^2
    assert abs(float(n.real.var()) - 0.125) < 0.003  # half in each component
    r = GaussianNoise(0.5)(torch.zeros(200_000), 1)
    assert abs(float(r.std()) - 0.5) < 0.005
    with pytest.raises(InputError):
        GaussianNoise(-1.0)


def test_poisson_noise_statistics():
    rate = torch.full((200_000,), 8.0)
    y = PoissonNoise(gain=0.5)(rate, 3)
    assert abs(float(y.mean()) - 8.0) < 0.03
    assert abs(float(y.var()) - 4.0) < 0.1  # var = gain * rate
    assert torch.all(torch.remainder(y, 0.5) == 0)
    with pytest.raises(InputError):
        PoissonNoise()(torch.ones(3, dtype=torch.complex64), 0)
