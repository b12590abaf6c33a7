"""The denoising family: conditional sampling against a Gaussian oracle (C1 / P1 draw the exact
conditional distribution, the MR channel arrives in its place), C3's entry at the speckle
level, and the task's one-line refusals; the CLI end to end on tiny models."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from gaussian_oracle import ConditionalGaussianNet, GaussianEpsNet, random_gaussian
from meddiff import api
from meddiff.cli import main
from meddiff.core.model import Denoiser
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.oct import OCTScans, estimate_speckle_std
from meddiff.data.writers import save_nifti
from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.denoising.interface import enter_at_noise
from meddiff.nets.unet import preset
from meddiff.tasks.denoising import denoise
from meddiff.zoo.store import DiffusionSpec, LoadedModel, build_denoiser, save

S = 0.1  # std of x0 given the condition, model space

def _conditional(channels: int) -> LoadedModel:
    sched = NoiseSchedule("cosine")
    spec = DiffusionSpec(net=preset("tiny", in_channels=1 + channels), image_size=4,
                         schedule="cosine", parametrization="v", condition="concat")
    den = Denoiser(ConditionalGaussianNet(sched, S), sched, parametrization="v")
    return LoadedModel("oracle", den, spec, {})


def _stats(out01: torch.Tensor, cond_mean01: torch.Tensor, reps: int):
    """Per-pixel mean and std over ``reps`` samples, in model space."""
    x = (out01.double() * 2 - 1).reshape(reps, -1)
    return x.mean(0), x.std(0), cond_mean01.double().reshape(-1) * 2 - 1


@pytest.mark.parametrize("method,sampler,steps", [
    ("ldct", "dpmpp_2m", 50), ("ldct", "ddim", 200), ("pet", "ddpm", 1000)])
def test_conditional_methods_draw_the_exact_conditional_distribution(method, sampler, steps):
    """DPM-Solver++ is exact to 10 % in 50 steps; DDIM (ODE, first order) needs ~200 and DDPM
    the full 1000 (at 50 they under-disperse this narrow S = 0.1 by 12 / 21 %)."""
    g = torch.Generator().manual_seed(0)
    c = 0.5 + 0.3 * (torch.rand(1, 1, 4, 4, generator=g) - 0.5)  # image space
    reps = 2000
    one = {"samples": 1} if method == "pet" else {}
    out = denoise(_conditional(1), c.expand(reps, -1, -1, -1), method=method, sampler=sampler,
                  steps=steps, seed=1, **one)
    mean, std, m = _stats(out, c, reps)
    assert (mean - m).abs().max() < 0.012  # 4 standard errors of S / sqrt(2000)
    assert ((std / S) - 1).abs().max() < 0.1


def test_pet_averages_independent_samples_by_default():
    """The mean of 4 exact conditional samples: the same mean, half the spread."""
    g = torch.Generator().manual_seed(0)
    c = 0.5 + 0.3 * (torch.rand(1, 1, 4, 4, generator=g) - 0.5)
    reps = 2000
    out = denoise(_conditional(1), c.expand(reps, -1, -1, -1), method="pet",
                  sampler="dpmpp_2m", steps=50, seed=1)
    mean, std, m = _stats(out, c, reps)
    assert (mean - m).abs().max() < 0.006  # 4 standard errors of S / 2 / sqrt(2000)
    assert ((std / (S / 2)) - 1).abs().max() < 0.1


def test_pet_with_mr_passes_both_channels_in_order():
    """The oracle's mean is the average of its condition channels: the MR must arrive."""
    pet01, mr01 = torch.full((1, 1, 4, 4), 0.3), torch.full((1, 1, 4, 4), 0.7)
    reps = 500
    out = denoise(_conditional(2), pet01.expand(reps, -1, -1, -1), method="pet",
                  mr=mr01.expand(reps, -1, -1, -1), steps=20, seed=0)
    mean = (out.double() * 2 - 1).mean()
    assert abs(float(mean) - 0.0) < 0.01  # (2*0.3-1 + 2*0.7-1) / 2 = 0
    with pytest.raises(InputError, match="takes the noisy image as condition"):
        denoise(_conditional(1), pet01, method="pet", mr=mr01)  # PET-only model, MR given
    with pytest.raises(InputError, match="takes the noisy image and an MR image"):
        denoise(_conditional(2), pet01, method="pet")


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    c = torch.full((4, 1, 4, 4), 0.5)
    a, b = (denoise(_conditional(1), c, method="ldct", seed=3) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, denoise(_conditional(1), c, method="ldct", seed=4))


def test_one_ddim_step_is_the_posterior_mean_of_the_condition():
    """From pure noise at T-1 one DDIM step returns E[x0 | x_T, c], which is the condition's
    mean up to the tiny signal left at T-1 (abar ~ 1e-9 for cosine)."""
    c = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.25
    out = denoise(_conditional(1), c, method="ldct", sampler="ddim", steps=1)
    assert torch.allclose(out, c, atol=1e-4)


def test_oct_entry_at_a_given_level_is_the_exact_posterior_mean():
    """C3 with a known noise level and the one-call estimate: the entry at ``level * sigma`` is
    Tweedie's E[x | y] under the (here Gaussian) prior of the noisy scans."""
    mu, cov = random_gaussian(16, seed=5)
    mu, cov = 0.3 * mu, 0.05 * cov
    sched = NoiseSchedule("linear")
    den = Denoiser(GaussianEpsNet(mu, cov, sched), sched)
    model = LoadedModel("gauss", den, DiffusionSpec(image_size=4), {})
    sigma = float(sched.sigma_ve(40.0)) / 2
    y01 = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.3
    y = (y01.double() * 2 - 1).reshape(8, 16)
    expected = mu + (y - mu) @ torch.linalg.solve(cov + 4 * sigma ** 2 * torch.eye(16,
                                                  dtype=torch.float64), cov).T
    out = denoise(model, y01, sigma / 2, method="oct", sampler="tweedie", level=2.0)
    assert torch.allclose(out.reshape(8, 16).double() * 2 - 1, expected, atol=2e-5)
    ref = enter_at_noise(den, y01, sigma, "tweedie")
    assert torch.allclose(out, ref)


def test_speckle_std_estimate_is_within_ten_percent_on_unseen_scans():
    ds = OCTScans("test", size=128)
    for i in range(6):
        item = ds[i]
        true = float((item["noisy"] - item["image"]).std())
        est = estimate_speckle_std(item["noisy"][0].double().numpy())
        assert abs(est / true - 1) < 0.1, (i, est, true)


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="tweedie", steps=5, sigma=0.1), "--steps does not apply to --method tweedie"),
    (dict(method="ldct", level=1.0), "--level does not apply to --method ldct"),
    (dict(method="nope"), "unknown denoising method 'nope'"),
    (dict(method="ddim", steps=0, sigma=0.1), "--steps must be >= 1"),
    (dict(method="oct", level=-1.0), "--level must be > 0"),
    (dict(method="ldct", sampler="euler"), "unknown sampler 'euler'"),
    (dict(method="ldct", sigma=0.1), "--sigma does not apply to --method ldct"),
    (dict(method="oct", mr=torch.full((1, 1, 4, 4), 0.5)), "--mr applies to --method pet"),
])
def test_bad_options_are_refused_in_one_line(kwargs, message):
    with pytest.raises(InputError, match=message):
        denoise(_conditional(1), torch.full((1, 1, 4, 4), 0.5), **kwargs)


def _gaussian_prior(seed: int) -> LoadedModel:
    """An unconditional prior of 4 x 4 images with an exact Gaussian denoiser."""
    mu, cov = random_gaussian(16, seed=seed)
    sched = NoiseSchedule("linear")
    return LoadedModel("gauss", Denoiser(GaussianEpsNet(0.1 * mu, 0.05 * cov, sched), sched),
                       DiffusionSpec(image_size=4), {})


def test_prior_methods_need_sigma_and_an_unconditional_model():
    prior = _gaussian_prior(1)
    x = torch.full((1, 1, 4, 4), 0.5)
    with pytest.raises(InputError, match="needs the noise level: give --sigma"):
        denoise(prior, x, method="tweedie")
    with pytest.raises(InputError, match="gives the network the noisy image as condition"):
        denoise(prior, x, method="ldct")
    with pytest.raises(InputError, match="takes the noisy image as condition"):
        denoise(_conditional(1), x, 0.1, method="tweedie")


def test_every_denoising_method_is_registered_with_its_system():
    rows = registry.methods("denoising")
    assert {n: i.system for n, i in rows.items()} == {
        "tweedie": None, "ddim": None, "ddpm": None, "ldct": "C1", "oct": "C3", "pet": "P1"}
    assert rows["pet"].default_model == "pet-cddpm-64"


# ------------------------------------------------------------------------------ CLI
def _save_conditional(directory, channels: int):
    spec = DiffusionSpec(net=preset("tiny", in_channels=1 + channels), image_size=16,
                         schedule="cosine", parametrization="v", condition="concat")
    torch.manual_seed(0)
    return save(directory / f"cond{channels}", build_denoiser(spec).net, spec,
                card={"parameters": "tiny"})


def _scan(path, seed=0, shape=(16, 16, 3)):
    rng = np.random.default_rng(seed)
    save_nifti(path, (rng.random(shape) * 1000).astype(np.float32), np.diag([2.0, 2, 3, 1]))
    return path


def test_cli_denoises_low_dose_ct_and_pet_with_mr_reproducibly(tmp_path, capsys):
    model1, model2 = _save_conditional(tmp_path, 1), _save_conditional(tmp_path, 2)
    ct, mr = _scan(tmp_path / "ct.nii.gz"), _scan(tmp_path / "mr.nii.gz", seed=1)
    common = ["--device", "cpu", "--steps", "3", "--seed", "7"]
    assert main(["denoise", "--method", "ldct", "--model", str(model1), "--input", str(ct),
                 "--out", str(tmp_path / "a.nii.gz"), *common]) == 0
    assert main(["denoise", "--method", "ldct", "--model", str(model1), "--input", str(ct),
                 "--out", str(tmp_path / "b.nii.gz"), *common]) == 0
    a, b = (nib.load(tmp_path / f"{n}.nii.gz") for n in "ab")
    assert np.array_equal(a.get_fdata(), b.get_fdata()) and a.shape == (16, 16, 3)
    assert np.allclose(a.affine, np.diag([2.0, 2, 3, 1]))
    assert (tmp_path / "a.png").exists() and (tmp_path / "a.json").exists()
    assert main(["denoise", "--method", "pet", "--model", str(model2), "--input", str(ct),
                 "--mr", str(mr), "--out", str(tmp_path / "p.nii.gz"), *common]) == 0
    out = capsys.readouterr().out
    assert "pet (cond2): 3 slices" in out
    code = main(["denoise", "--method", "pet", "--model", str(model1), "--input", str(ct),
                 "--mr", str(mr), "--out", str(tmp_path / "q.nii.gz"), *common])
    err = capsys.readouterr().err
    assert code != 0 and "use pet-mr-cddpm-64" in err and "Traceback" not in err
    assert not (tmp_path / "q.nii.gz").exists()


def test_cli_refuses_a_method_whose_bundled_model_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("meddiff.tasks.options.bundled", lambda: {})
    ct = _scan(tmp_path / "ct.nii.gz")
    code = main(["denoise", "--method", "ldct", "--input", str(ct), "--out",
                 str(tmp_path / "o.nii.gz")])
    err = capsys.readouterr().err
    assert code != 0 and "'ldct-cddpm-native' is not trained yet" in err
    assert len(err.strip().splitlines()) == 1


def test_api_denoise_keeps_its_positional_sigma():
    """``api.denoise(model, images, sigma)`` as before the denoising family existed."""
    model = _gaussian_prior(2)
    x = torch.full((2, 1, 4, 4), 0.5)
    assert torch.equal(api.denoise(model, x, 0.05), denoise(model, x, sigma=0.05))
