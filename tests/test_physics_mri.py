"""MRI physics: centred FFT against numpy, masks (acceleration, centre, seeds, density),
SENSE operators, coil simulation and sensitivity estimation, user errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meddiff.errors import InputError
from meddiff.physics import (GaussianNoise, MultiCoilMRI, SingleCoilMRI, achieved_acceleration,
                             birdcage_maps, calibration_region, channels_to_complex,
                             complex_to_channels, equispaced_mask_1d, estimate_sensitivity_maps,
                             fft2c, ifft2c, poisson_disc_mask_2d, random_mask_1d, random_mask_2d,
                             rss, smooth_random_phase)

MASKS_1D = (equispaced_mask_1d, random_mask_1d)
MASKS_2D = (random_mask_2d, poisson_disc_mask_2d)
SHAPE = (96, 80)


def _close(a, b, tol):
    assert torch.allclose(a, b, rtol=0, atol=tol), float((a - b).abs().max())


def _image(n=64, seed=0):
    """Complex test image: a smooth disc object with a smooth random phase, (1, 1, n, n)."""
    yy, xx = np.mgrid[:n, :n] - n // 2
    mag = np.clip(1.2 - np.hypot(yy / (0.40 * n), xx / (0.30 * n)) ** 2, 0, 1)
    mag = torch.from_numpy(mag).float()[None, None]
    phase = smooth_random_phase((1, 1, n, n), seed)
    return mag * torch.polar(torch.ones_like(phase), phase), mag[0, 0] > 0.25


@pytest.mark.parametrize("shape", [(8, 6), (7, 9)])
def test_fft2c_matches_numpy(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + shape) + 1j * rng.standard_normal((2, 3) + shape)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"),
                          axes=(-2, -1))
    iref = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"),
                           axes=(-2, -1))
    assert np.abs(fft2c(torch.from_numpy(x)).numpy() - ref).max() < 1e-12
    assert np.abs(ifft2c(torch.from_numpy(x)).numpy() - iref).max() < 1e-12
    x32 = torch.from_numpy(x).to(torch.complex64)
    assert np.abs(fft2c(x32).numpy() - ref).max() < 1e-6 * np.abs(ref).max()
    # DC of a constant image sits at (H // 2, W // 2) with value sqrt(H W) (orthonormal)
    k = fft2c(torch.ones(shape, dtype=torch.complex128))
    assert abs(k[shape[0] // 2, shape[1] // 2] - np.sqrt(shape[0] * shape[1])) < 1e-12
    assert torch.allclose(ifft2c(fft2c(x32)), x32, atol=1e-6)


def test_complex_channel_round_trip_and_errors():
    x = torch.randn(2, 1, 5, 4, dtype=torch.complex64)
    ch = complex_to_channels(x)
    assert ch.shape == (2, 2, 5, 4) and ch.dtype == torch.float32
    assert torch.equal(ch[:, 0], x.real[:, 0]) and torch.equal(ch[:, 1], x.imag[:, 0])
    assert torch.equal(channels_to_complex(ch), x)
    with pytest.raises(InputError):
        complex_to_channels(x.real)
    with pytest.raises(InputError):
        channels_to_complex(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("fn", MASKS_1D + MASKS_2D)
@pytest.mark.parametrize("accel", [2.0, 4.0, 6.0, 8.0])
def test_mask_acceleration_and_centre(fn, accel):
    mask = fn(SHAPE, accel, seed=3)
    assert mask.shape == SHAPE and mask.dtype == torch.bool
    assert abs(achieved_acceleration(mask) / accel - 1) < 0.05
    h, w = SHAPE
    if fn in MASKS_1D:
        n = round(0.32 / accel * w)  # default fastMRI-style centre fraction
        assert mask[:, w // 2 - n // 2:w // 2 - n // 2 + n].all()
        assert torch.equal(mask, mask[:1].expand_as(mask))  # whole phase-encoding lines
    else:
        nh, nw = round(0.125 * h), round(0.125 * w)
        assert mask[h // 2 - nh // 2:h // 2 - nh // 2 + nh,
                    w // 2 - nw // 2:w // 2 - nw // 2 + nw].all()
    rows, cols = calibration_region(mask)
    assert mask[rows, cols].all() and (rows.stop - rows.start) * (cols.stop - cols.start) > 1


@pytest.mark.parametrize("fn", MASKS_1D + MASKS_2D)
def test_mask_seeds_and_errors(fn):
    assert torch.equal(fn(SHAPE, 4, seed=11), fn(SHAPE, 4, seed=np.random.default_rng(11)))
    if fn is not equispaced_mask_1d:  # its seed only shifts the line offset
        assert not torch.equal(fn(SHAPE, 4, seed=11), fn(SHAPE, 4, seed=12))
    assert fn(SHAPE, 1.0, seed=0).all()
    for bad in (0.5, 0.0, -2.0):
        with pytest.raises(InputError, match="acceleration"):
            fn(SHAPE, bad)
    with pytest.raises(InputError):
        fn(SHAPE, 8.0, center_fraction=0.9)


def test_equispaced_lines_are_regular():
    mask = equispaced_mask_1d((64, 128), 4.0, center_fraction=0.08, seed=0)
    centre = set(range(64 - 5, 64 - 5 + 10))
    outer = [c for c in np.flatnonzero(mask[0].numpy()) if c not in centre]
    candidates = [c for c in range(128) if c not in centre]
    gaps = np.diff([candidates.index(c) for c in outer])
    assert set(gaps) <= {5, 6} and len(outer) == 22  # 118 candidates / 22 lines = 5.36


@pytest.mark.parametrize("fn", MASKS_2D)
def test_2d_masks_have_decaying_density(fn):
    mask = fn((128, 128), 6.0, seed=0).numpy()
    yy, xx = np.mgrid[:128, :128] - 64
    rho = np.hypot(yy, xx) / 64
    inner, outer = mask[(rho > 0.15) & (rho < 0.4)].mean(), mask[(rho > 0.7) & (rho < 1)].mean()
    assert inner > 2 * outer > 0


def test_poisson_disc_spreads_points_more_evenly_than_random():
    def mean_nn_distance(mask):
        pts = np.argwhere(mask.numpy())
        pts = pts[np.hypot(*(pts - 64).T) > 30]  # outer region, away from calibration
        d = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        return d.min(axis=1).mean()
    pd = mean_nn_distance(poisson_disc_mask_2d((128, 128), 8.0, seed=0))
    rd = mean_nn_distance(random_mask_2d((128, 128), 8.0, seed=0))
    assert pd > 1.4 * rd


def test_single_coil_operator():
    x, _ = _image(32)
    full = SingleCoilMRI(torch.ones(32, 32))
    _close(full.A_dagger(full.A(x)), x, 1e-6)
    mask = random_mask_1d((32, 32), 4.0, seed=1)
    op = SingleCoilMRI(mask.float(), GaussianNoise(0.05))
    y = op.A(x)
    assert torch.all(y[..., ~mask] == 0)
    _close(y, fft2c(x) * mask, 1e-6)
    _close(op.A(op.A_dagger(y)), y, 1e-6)  # A A^+ A = A
    noise = op(x, generator=4) - y
    assert torch.all(noise[..., ~mask] == 0)
    assert abs(float(noise[..., mask].abs().pow(2).mean()) - 0.05 ** 2) < 3e-4


def test_multi_coil_operator():
    x, _ = _image(32)
    maps = birdcage_maps((32, 32), 6)
    full = MultiCoilMRI(torch.ones(32, 32), maps)
    y = full.A(x)
    assert y.shape == (1, 6, 32, 32)
    _close(y[:, 2:3], fft2c(x * maps[2]), 1e-5)
    _close(full.A_adjoint(y), x, 1e-5)  # RSS-1 maps and full sampling: A^H A = I
    mask = poisson_disc_mask_2d((32, 32), 3.0, seed=2)
    op = MultiCoilMRI(mask, maps)
    y = op.A(x)
    _close(op.A(op.A_dagger(y)), y, 1e-3 * float(y.abs().max()))
    per_image = MultiCoilMRI(mask, torch.stack([maps, maps.conj()]))
    assert per_image.A(x.expand(2, -1, -1, -1)).shape == (2, 6, 32, 32)


def test_mri_user_errors():
    mask = random_mask_1d((16, 16), 2.0)
    op = SingleCoilMRI(mask)
    with pytest.raises(InputError, match="complex"):
        op.A(torch.zeros(1, 1, 16, 16))
    with pytest.raises(InputError, match="complex"):
        op.A_adjoint(torch.zeros(1, 1, 16, 16))  # real k-space
    with pytest.raises(InputError, match="shape"):
        op.A_adjoint(torch.zeros(1, 1, 16, 12, dtype=torch.complex64))  # mask/k-space mismatch
    with pytest.raises(InputError, match="maps"):
        MultiCoilMRI(mask, None)
    with pytest.raises(InputError, match="shape"):
        MultiCoilMRI(mask, birdcage_maps((16, 12), 4))
    multi = MultiCoilMRI(mask, birdcage_maps((16, 16), 4))
    with pytest.raises(InputError, match="shape"):
        multi.A_adjoint(torch.zeros(1, 3, 16, 16, dtype=torch.complex64))  # wrong coil count
    with pytest.raises(InputError):
        SingleCoilMRI(torch.full((16, 16), 0.3))  # not binary
    with pytest.raises(InputError):
        SingleCoilMRI(torch.ones(1, 16, 16))


def test_birdcage_maps_rss_and_smoothness():
    maps = birdcage_maps((64, 48), 8)
    assert maps.shape == (8, 64, 48) and maps.dtype == torch.complex64
    _close(rss(maps, dim=0, keepdim=False), torch.ones(64, 48), 1e-5)
    mags = maps.abs()
    assert float(mags[0].max() / mags[0].min()) > 2  # coils see different regions
    assert float((mags[0] - mags[4]).abs().mean()) > 0.05
    assert float((maps[:, 1:] - maps[:, :-1]).abs().max()) < 0.2  # smooth on the grid
    with pytest.raises(InputError):
        birdcage_maps((8, 8), 0)


def test_rss_matches_numpy():
    x = torch.randn(2, 5, 6, 7, dtype=torch.complex128)
    ref = np.sqrt((np.abs(x.numpy()) ** 2).sum(axis=1, keepdims=True))
    assert np.abs(rss(x).numpy() - ref).max() < 1e-12


@pytest.mark.parametrize("fn, accel, cf", [(random_mask_1d, 4.0, 0.125),
                                           (poisson_disc_mask_2d, 6.0, 0.125)])
def test_sensitivity_estimation_recovers_maps(fn, accel, cf):
    x, obj = _image(64, seed=1)
    maps = birdcage_maps((64, 64), 8)
    mask = fn((64, 64), accel, center_fraction=cf, seed=0)
    y = MultiCoilMRI(mask, maps, GaussianNoise(0.01))(x, generator=0)
    est = estimate_sensitivity_maps(y, mask)
    assert est.shape == (1, 8, 64, 64)
    _close(rss(est)[0, 0][obj], torch.ones(int(obj.sum())), 1e-4)
    # maps are defined up to a common per-pixel phase: align it before correlating
    psi = torch.angle((maps[None].conj() * est).sum(dim=1, keepdim=True))
    aligned = (est * torch.exp(-1j * psi))[0][:, obj]
    truth = maps[:, obj]
    corr = (truth.conj() * aligned).sum().abs() / (truth.norm() * aligned.norm())
    assert float(corr) > 0.95
    with pytest.raises(InputError):
        estimate_sensitivity_maps(y.real, mask)
    with pytest.raises(InputError, match="centre"):
        estimate_sensitivity_maps(y, torch.zeros(64, 64, dtype=torch.bool))


def test_smooth_random_phase():
    phi = smooth_random_phase((2, 1, 32, 32), 3, max_phase=1.5)
    assert phi.shape == (2, 1, 32, 32) and phi.dtype == torch.float32
    assert torch.allclose(phi.abs().amax(dim=(-2, -1)), torch.full((2, 1), 1.5))
    assert torch.equal(phi, smooth_random_phase((2, 1, 32, 32), 3, max_phase=1.5))
    assert not torch.equal(phi, smooth_random_phase((2, 1, 32, 32), 4, max_phase=1.5))
    spectrum = fft2c(phi.to(torch.complex64)).abs() ** 2
    yy, xx = np.mgrid[:32, :32] - 16
    high = torch.from_numpy(np.hypot(yy, xx) > 3)
    assert float(spectrum[..., high].sum() / spectrum.sum()) < 1e-6  # band-limited


def test_phase_estimated_from_the_calibration_region_matches_a_smooth_phase():
    """A smooth phase (a few cycles per FOV) is recovered from the fully sampled centre of a 4x
    random mask, to < 0.05 rad where the magnitude is not small; then the phase-modulated
    operator maps the magnitude image onto the measured k-space up to that error."""
    from meddiff.physics import PhaseModulated, SingleCoilMRI, estimate_phase, random_mask_1d
    from meddiff.physics.coils import smooth_random_phase

    n = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    mag = (0.3 + 0.7 * torch.exp(-(xx ** 2 + yy ** 2) / 0.5))[None, None]
    phase = smooth_random_phase((1, 1, n, n), 3, max_phase=1.5, n_cycles=1.0)
    op = SingleCoilMRI(random_mask_1d((n, n), 4.0, center_fraction=0.25, seed=0))
    y = op.A(torch.polar(mag, phase))
    est = estimate_phase(op, y)
    err = torch.angle(torch.polar(torch.ones_like(est), est - phase))
    assert float(err.abs().max()) < 0.05
    pm = PhaseModulated(op, est)
    assert float((pm.A(mag.to(torch.complex64)) - y).norm() / y.norm()) < 0.05
    assert torch.allclose(pm.A_adjoint(y) * torch.polar(torch.ones_like(est), est), op.A_adjoint(y),
                          atol=1e-5)
