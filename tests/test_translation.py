"""Translation (T1): the conditional DDPM and score-SDE samplers draw the exact conditional
distribution of a Gaussian oracle, the UNet baseline is the regression network, and the task
and CLI write the target domain's units on the input's grid, refusing bad options in one line."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from gaussian_oracle import ConditionalGaussianNet
from meddiff.cli import main
from meddiff.core.model import Denoiser
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.writers import save_nifti
from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.translation.paired import unet
from meddiff.nets.basic_unet import ResidualUNet
from meddiff.nets.unet import preset
from meddiff.tasks.translation import translate
from meddiff.zoo.kinds import RegressionUNetSpec
from meddiff.zoo.store import DiffusionSpec, build_denoiser, save

STD = 0.1


def _oracle() -> Denoiser:
    sched = NoiseSchedule("cosine")
    return Denoiser(ConditionalGaussianNet(sched, STD), sched, parametrization="v")


@pytest.mark.parametrize("method,kw,std_tol", [("cddpm", {"steps": 50}, 0.1),
                                               ("csde", {"steps": 100}, 0.2)])
def test_diffusion_methods_sample_the_exact_conditional_distribution(method, kw, std_tol):
    """x | source ~ N(source, 0.1^2) per pixel (model space): the DPM-Solver++ samples and the
    predictor-corrector (VP SDE) samples have that mean and spread (the PC sampler's Langevin
    corrector at snr 0.16 over-disperses this narrow Gaussian by ~12 %, at 100 to 1000 steps
    alike: measured 0.110 / 0.112 / 0.113)."""
    src = 0.3 + 0.4 * torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    reps = 1000
    out = translate(_oracle(), src.expand(reps, -1, -1, -1), method, seed=2, **kw)
    x = (out.double() * 2 - 1).reshape(reps, -1)
    m = src.double().reshape(-1) * 2 - 1
    assert (x.mean(0) - m).abs().max() < 0.015
    assert ((x.std(0) / STD) - 1).abs().max() < std_tol


def test_unet_baseline_is_the_residual_regression_network():
    net = ResidualUNet(1, (4, 4, 8, 8, 8, 4)).eval()
    for p in net.net.parameters():
        nn.init.zeros_(p)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(unet(net, x), x)
    assert torch.equal(translate(net, x, "unet"), x)


def test_options_are_checked_against_the_registration():
    x = torch.full((1, 1, 4, 4), 0.5)
    with pytest.raises(InputError, match="--sampler does not apply to --method csde"):
        translate(_oracle(), x, "csde", sampler="ddim")
    with pytest.raises(InputError, match="unknown translation method 'gan'"):
        translate(_oracle(), x, "gan")
    with pytest.raises(InputError, match="--steps must be >= 1"):
        translate(_oracle(), x, "cddpm", steps=0)
    rows = registry.methods("translation")
    assert {n: (i.system, i.baseline) for n, i in rows.items()} == {
        "cddpm": ("T1", False), "csde": ("T1", False), "unet": (None, True)}


def _scan(path, shape=(32, 32, 2)):
    rng = np.random.default_rng(0)
    save_nifti(path, (rng.random(shape) * 500).astype(np.float32), np.diag([1.5, 1.5, 3, 1]))
    return path


def test_cli_translates_to_ct_in_hu_on_the_input_grid(tmp_path, capsys):
    spec = DiffusionSpec(net=preset("tiny", in_channels=2), image_size=16, schedule="cosine",
                         parametrization="v", condition="concat")
    torch.manual_seed(0)
    model = save(tmp_path / "cond", build_denoiser(spec).net, spec, card={"parameters": "tiny"})
    src = _scan(tmp_path / "t1.nii.gz")
    args = ["translate", "--target", "ct", "--model", str(model), "--input", str(src),
            "--steps", "2", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "ct.nii.gz")]) == 0
    img = nib.load(tmp_path / "ct.nii.gz")
    assert img.shape == (32, 32, 2) and np.allclose(img.affine, np.diag([1.5, 1.5, 3, 1]))
    assert -1000 <= img.get_fdata().min() and img.get_fdata().max() <= 1000
    assert (tmp_path / "ct.png").exists() and (tmp_path / "ct.json").exists()
    assert "cddpm (cond) -> ct: 2 slices" in capsys.readouterr().out
    assert main([*args, "--sampler", "euler", "--out", str(tmp_path / "x.nii.gz")]) != 0
    err = capsys.readouterr().err
    assert "unknown sampler 'euler'" in err and "Traceback" not in err
    assert not (tmp_path / "x.nii.gz").exists()


def test_cli_unet_baseline_and_missing_bundled_model(tmp_path, capsys, monkeypatch):
    spec = RegressionUNetSpec(features=(4, 4, 8, 8, 8, 4), image_size=32)
    net = ResidualUNet(1, spec.features)
    path = save(tmp_path / "reg", net, spec, card={"parameters": "tiny"})
    src = _scan(tmp_path / "t1.nii.gz")
    assert main(["translate", "--method", "unet", "--model", str(path), "--input", str(src),
                 "--out", str(tmp_path / "u.nii.gz"), "--device", "cpu"]) == 0
    monkeypatch.setattr("meddiff.tasks.options.bundled", lambda: {})
    code = main(["translate", "--target", "flair", "--input", str(src), "--out",
                 str(tmp_path / "f.nii.gz")])
    err = capsys.readouterr().err
    assert code != 0 and "'t1w-flair-cddpm-native' is not trained yet" in err
