"""D2 latent anomaly detection and G2 segmentation ensembles: numbers from analytic models.

The methods work in model space (images ``2 x - 1``); the tasks convert."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meddiff.cli import main
from meddiff.core.model import Denoiser
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.readers import load_image
from meddiff.data.writers import save_nifti
from meddiff.data.intensity import to_model
from meddiff.eval.metrics import auroc, dice
from meddiff.methods.detection import latent as lt
from meddiff.methods.segmentation import ensembles as sg
from meddiff.methods.segmentation import unet as seg_unet
from meddiff.nets.basic_unet import build_seg_unet
from meddiff.nets.unet import preset
from meddiff.tasks import segmentation as st
from meddiff.zoo.kinds import DiffusionSpec, SegUNetSpec
from meddiff.zoo.store import build_denoiser, save
from tiny_model import save_tiny


# ------------------------------------------------------------------------------ helpers
class PixelAE(nn.Module):
    """An exactly invertible 'autoencoder': space-to-depth by 4 (B, 1, H, W) -> (B, 16, H/4, W/4)."""

    def encode(self, x):
        z = F.pixel_unshuffle(x, 4)
        return z, torch.ones_like(z)

    def decode(self, z):
        return F.pixel_shuffle(z, 4)


class ConstantX0(nn.Module):
    """A latent 'denoiser' whose clean-sample prediction is always the healthy latent."""

    def __init__(self, z_healthy: torch.Tensor):
        super().__init__()
        self.z = z_healthy

    def forward(self, x, t):
        return self.z.expand_as(x)


class MaskOracle(nn.Module):
    """Conditional mask denoiser that knows the truth: mask = (image > 0.5), from the image
    channel (model space > 0); returns the x0 or the eps that goes with it."""

    def __init__(self, parametrization: str, schedule: NoiseSchedule):
        super().__init__()
        self.parametrization, self.schedule = parametrization, schedule

    def forward(self, inp, t):
        x_t, image = inp[:, :1], inp[:, 1:]
        x0 = torch.where(image > 0, 1.0, -1.0)
        if self.parametrization == "x0":
            return x0
        ab = self.schedule.alpha_bar(t).float().view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def _healthy(size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return (0.3 + 0.2 * torch.sin(6 * xx) * torch.cos(4 * yy))[None, None]


def _detector(h01: torch.Tensor) -> lt.LatentDetector:
    codec = lt.LatentCodec(PixelAE(), scale=2.0)
    den = Denoiser(ConstantX0(codec.encode(to_model(h01))), NoiseSchedule(), parametrization="x0")
    return lt.LatentDetector(codec, den)


def _lesion_image(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = (((yy - 12) ** 2 + (xx - 19) ** 2) <= 16).float()[None, None]
    return 0.3 + 0.55 * disk, disk


# ------------------------------------------------------------------------------ D2 building blocks
def test_codec_scales_the_latents_and_clips_decoded_images():
    xm = 2 * torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) - 1
    codec = lt.LatentCodec(PixelAE(), 5.0)
    z = codec.encode(xm)
    assert torch.allclose(z, 5 * F.pixel_unshuffle(xm, 4)) and torch.allclose(codec.decode(z), xm)
    assert float(codec.decode(3 * z).abs().max()) == 1.0  # model space: clipped to [-1, 1]


def test_identity_autoencoder_has_zero_residual_even_on_a_lesion():
    x, _ = _lesion_image()
    res = lt.ae_residual(lt.LatentCodec(PixelAE(), 3.0), to_model(x))
    assert float(res.max()) < 1e-6  # a perfect autoencoder reproduces the lesion too


def test_latent_partial_diffusion_returns_healthy_anatomy_and_lights_up_the_lesion():
    h = _healthy()
    hm = to_model(h)
    det = _detector(h)
    recon = lt.latent_reconstructions(det, to_model(h + 0.1), t_starts=(100, 250), steps=3, seed=1)
    assert recon.shape == (2, 1, 1, 32, 32)
    assert torch.allclose(recon, hm.expand_as(recon), atol=1e-5)  # the healthy image, each level
    bump, disk = _lesion_image()
    xm = to_model(h + (bump - 0.3) * disk)  # the lesion raises intensity in the disk only
    raw = lt.detect(det, xm, smooth_px=0.0).maps
    assert torch.allclose(raw, (xm - hm).abs(), atol=1e-5)
    assert float(raw[disk == 0].max()) < 1e-5
    res = lt.detect(det, xm, t_starts=(100, 200, 300), steps=4, smooth_px=1.0)
    assert auroc(res.maps.flatten().numpy(), disk.flatten().numpy() > 0) > 0.99
    assert res.nfe == 3 * 4 and torch.allclose(res.recon, hm, atol=1e-5)
    rec_ref = lt.detect(det, xm, smooth_px=0.0, reference="reconstruction").maps
    assert torch.allclose(rec_ref, raw, atol=1e-5)  # identity codec: D(E(x)) = x
    one = lt.latent(det, xm, t=200, steps=4, smooth=0.0, generator=torch.Generator())
    assert torch.allclose(one.maps, raw, atol=1e-5) and one.nfe == 4  # the registered entry


def test_latent_map_is_reproducible_with_a_seed():
    torch.manual_seed(0)
    spec = DiffusionSpec(net=preset("tiny", in_channels=16, out_channels=16), image_size=4,
                         clip_x0=False)
    det = lt.LatentDetector(lt.LatentCodec(PixelAE(), 2.0), build_denoiser(spec))
    x = 2 * torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3)) - 1
    a, b = (lt.detect(det, x, (50, 150), steps=2, seed=7).maps for _ in range(2))
    c = lt.detect(det, x, (50, 150), steps=2, seed=8).maps
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(Exception, match="noise levels"):
        lt.detect(det, x, (5000,))


# ------------------------------------------------------------------------------ G2
def test_ensemble_stats_equal_numpy_mean_and_population_variance():
    s = torch.rand(3, 7, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    mean, var = sg.ensemble_stats(s)
    assert np.allclose(mean.numpy(), s.numpy().mean(1), atol=1e-6)
    assert np.allclose(var.numpy(), s.numpy().var(1), atol=1e-6)
    assert bool((var <= mean * (1 - mean) + 1e-6).all())  # Bhatia-Davis bound for [0, 1] values
    assert float(sg.ensemble_stats(s[:, :1])[1].abs().max()) == 0.0


@pytest.mark.parametrize("parametrization", ["x0", "eps"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_denoiser_samples_the_true_mask_with_zero_variance(parametrization, sampler):
    sched = NoiseSchedule()
    den = Denoiser(MaskOracle(parametrization, sched), sched, parametrization=parametrization,
                   clip_x0=(-1.0, 1.0))
    image, truth = _lesion_image(16)
    images = torch.cat([image, image * 0.5])  # second image: no pixel > 0.5 -> empty mask
    res = sg.segment(den, to_model(images), n_samples=5, sampler=sampler, steps=10, seed=0)
    assert res.samples.shape == (2, 5, 1, 16, 16)
    assert dice(res.mask[0, 0].numpy(), truth[0, 0].numpy() > 0) == 1.0
    assert not bool(res.mask[1].any())
    assert float(res.var.max()) < 1e-4 and res.nfe == 10


def test_mask_sampling_is_reproducible_with_a_seed():
    torch.manual_seed(0)
    den = build_denoiser(DiffusionSpec(net=preset("tiny", in_channels=2), image_size=16))
    x = 2 * torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) - 1
    a = sg.sample_masks(den, x, 3, "ddpm", 4, seed=5)
    b = sg.sample_masks(den, x, 3, "ddpm", 4, seed=5)
    c = sg.sample_masks(den, x, 3, "ddpm", 4, seed=6)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.allclose(a[:, 0], a[:, 1])  # samples differ: an ensemble, not copies
    with pytest.raises(Exception, match="samples must be"):
        sg.sample_masks(den, x, 0)


def test_variance_error_correlation():
    gt = torch.zeros(1, 1, 8, 8)
    gt[..., 2:5, 2:5] = 1
    mean = gt.clone()
    mean[..., 0, :] = 0.9  # a false-positive row
    err = ((mean >= 0.5).float() - gt).abs()
    assert sg.uncertainty_error_correlation(0.2 * err, mean, gt) == pytest.approx(1.0)
    assert math.isnan(sg.uncertainty_error_correlation(torch.zeros_like(gt), mean, gt))


def test_unet_baseline_is_a_one_sample_segmentation_of_sigmoid_probabilities():
    torch.manual_seed(0)
    net = build_seg_unet((8, 8, 8, 8, 8, 8)).eval()
    x = 2 * torch.rand(2, 1, 32, 32) - 1
    res = seg_unet.unet(net, x)
    with torch.no_grad():
        assert torch.equal(res.mean, torch.sigmoid(net(x)))
    assert res.samples.shape == (2, 1, 1, 32, 32) and float(res.var.abs().max()) == 0.0
    assert res.nfe == 0 and float(res.mean.min()) >= 0 and float(res.mean.max()) <= 1


# ------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    torch.manual_seed(0)
    spec = DiffusionSpec(net=preset("tiny", in_channels=2), image_size=16, condition="concat")
    return str(save(tmp_path_factory.mktemp("seg") / "seg", build_denoiser(spec).net, spec,
                    fp16=False))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_segment_cli_writes_mean_variance_and_panel_matching_the_api(seg_model, tmp_path, capsys):
    vol = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32) * 500
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    src = save_nifti(tmp_path / "in.nii.gz", vol, affine)
    out = tmp_path / "res" / "mask.nii.gz"
    code, text, err = _run(capsys, "segment", "--input", src, "--model", seg_model, "--samples", 3,
                           "--steps", 4, "--seed", 2, "--out", out, "--device", "cpu")
    assert code == 0, err
    mean, var = load_image(out), load_image(tmp_path / "res" / "mask_var.nii.gz")
    assert mean.array.shape == vol.shape and np.allclose(mean.affine, affine)
    m, v = mean.array, var.array
    assert m.min() >= 0 and m.max() <= 1 and v.min() >= 0 and (v <= m * (1 - m) + 1e-5).all()
    from meddiff import api
    sl = api.read_slices(str(src), 16)
    den = st.load_mask_ddpm(seg_model, device="cpu").denoiser
    res = st.segment_images(den, sl.images, 3, "ddpm", 4, seed=2)
    assert np.allclose(m, sl.restore(res.mean, "values"), atol=1e-6)  # back from the frame
    assert (tmp_path / "res" / "mask.png").stat().st_size > 1000 and "wrote" in text


def test_segment_cli_runs_the_unet_baseline_through_the_same_task(tmp_path, capsys):
    torch.manual_seed(0)
    spec = SegUNetSpec(features=(4, 4, 8, 8, 8, 4), image_size=32)
    net = build_seg_unet(spec.features)
    unet_model = str(save(tmp_path / "unet", net, spec, fp16=False))
    img = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    src = save_nifti(tmp_path / "in.nii.gz", img)
    out = tmp_path / "u" / "mask.nii.gz"
    code, text, err = _run(capsys, "segment", "--method", "unet", "--input", src, "--model",
                           unet_model, "--out", out, "--device", "cpu")
    assert code == 0, err
    from meddiff import api
    sl = api.read_slices(str(src), 32)
    with torch.no_grad():
        prob = torch.sigmoid(net.eval()(sl.images * 2 - 1))[0, 0].numpy()
    assert np.allclose(load_image(out).array, prob, atol=1e-5)
    assert float(np.abs(load_image(tmp_path / "u" / "mask_var.nii.gz").array).max()) == 0
    assert "unet:" in text and "0 network evaluations" in text
    code, _, err = _run(capsys, "segment", "--method", "ensemble", "--input", src, "--model",
                        unet_model, "--out", tmp_path / "e" / "mask.nii.gz")
    assert code == 2 and "is a seg-unet model, not a diffusion" in err


@pytest.mark.parametrize("args,message", [
    (["--input", "{d}/missing.nii.gz"], "no such file"),
    (["--input", "{src}", "--samples", "0"], "--samples must be >= 1"),
    (["--input", "{src}", "--out", "{d}/mask.png"], "must be a NIfTI file name"),
    (["--input", "{src}", "--model", "{d}/none.json"], "unknown model"),
    (["--input", "{src}", "--model", "{tiny}"], "not a mask DDPM"),
])
def test_segment_cli_bad_input_is_one_line_and_writes_nothing(seg_model, tmp_path, capsys, args,
                                                              message):
    src = save_nifti(tmp_path / "in.nii.gz", np.ones((16, 16), np.float32))
    tiny = save_tiny(tmp_path)
    fill = {"d": tmp_path, "src": src, "tiny": tiny}
    argv = [a.format(**fill) for a in args]
    if "--model" not in argv:
        argv += ["--model", seg_model]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o" / "mask.nii.gz")]
    code, _, err = _run(capsys, "segment", *argv)
    assert code == 2 and message in err and err.startswith("meddiff: error:"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "mask.png").exists()
