"""Native resolution (issue 9): every task runs on the input's own grid, not the model's
training size (the tiny models here are trained at 16 px, divisor 2; the files are 24-48 px).
Image slices the network cannot take are reflect-padded to its divisor and cropped back; only
such k-space (and ``sample --size``) is refused (one line); ``--resize`` still resamples."""
from __future__ import annotations

import json
import logging

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meddiff import api
from meddiff.cli import main
from meddiff.data.intensity import to_model
from meddiff.data.readers import load_image
from meddiff.data.writers import save_nifti
from meddiff.nets.autoencoder import AEConfig
from meddiff.nets.basic_unet import build_seg_unet
from meddiff.nets.classifier import ClassifierConfig, NoisyClassifier
from meddiff.nets.unet import preset
from meddiff.physics import fft2c
from meddiff.tasks import detection as dt
from meddiff.zoo.kinds import AutoencoderSpec, ClassifierSpec, DiffusionSpec, SegUNetSpec
from meddiff.zoo.store import build, build_denoiser, load, save
from tiny_model import save_tiny

AFFINE = np.diag([0.9, 0.9, 3.0, 1.0])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random networks trained "at" 16 px: the prior, a classifier, a latent pair
    (autoencoder 16 -> 8 px + latent DDPM), a mask DDPM and a seg UNet (32 px)."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    clf = ClassifierConfig(image_size=16, channels=(16, 16), attention_levels=(False, False),
                           norm_num_groups=8, num_head_channels=8)
    save(d / "clf", NoisyClassifier(clf), ClassifierSpec(net=clf), fp16=False)
    ae = AutoencoderSpec(net=AEConfig(channels=(8, 8), latent_channels=2, norm_num_groups=8),
                         image_size=16, latent_scale=1.5)
    save(d / "tiny-ae", build("autoencoder", ae), ae, fp16=False)
    lat = DiffusionSpec(net=preset("tiny", in_channels=2, out_channels=2), image_size=8,
                        clip_x0=False, autoencoder="tiny-ae")
    save(d / "tiny-ddpm", build_denoiser(lat).net, lat, {"latent_scale": 1.5}, fp16=False)
    seg = DiffusionSpec(net=preset("tiny", in_channels=2), image_size=16, condition="concat")
    save(d / "seg", build_denoiser(seg).net, seg, fp16=False)
    unet = SegUNetSpec(features=(4, 4, 8, 8, 8, 4), image_size=32)
    save(d / "unet", build_seg_unet(unet.features), unet, fp16=False)
    return {"prior": str(save_tiny(d)), "clf": str(d / "clf.json"),
            "latent": str(d / "tiny-ddpm.json"), "seg": str(d / "seg.json"),
            "unet": str(d / "unet.json")}


def _blobs(h: int, w: int, n: int = 2) -> np.ndarray:
    """Smooth blobs in [0, 1], (h, w, n)."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return np.stack([0.9 * np.exp(-((xx - 0.3 * k) ** 2 + yy ** 2) / 0.3) + 0.05 * (xx > 0)
                     for k in range(n)], -1).astype(np.float32)


def _volume(tmp_path, h: int = 24, w: int = 32, n: int = 2, name: str = "in.nii.gz"):
    vol = _blobs(h, w, n) * 700 + 20
    return str(save_nifti(tmp_path / name, vol, AFFINE)), vol


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------ sample
def test_sample_at_another_size_is_seeded_and_the_cli_writes_that_size(models, tmp_path, capsys):
    model = api.load_model(models["prior"], device="cpu")
    a = api.sample(model, n=2, steps=3, seed=5, size=24)
    assert a.shape == (2, 1, 24, 24) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, api.sample(model, n=2, steps=3, seed=5, size=24))
    assert not torch.equal(a, api.sample(model, n=2, steps=3, seed=6, size=24))
    assert api.sample(model, n=1, steps=2).shape == (1, 1, 16, 16)  # default: training size
    code, _, err = _run(capsys, "sample", "--model", models["prior"], "--n", 2, "--steps", 3,
                        "--size", 24, "--seed", 5, "--out", tmp_path / "s", "--device", "cpu")
    assert code == 0, err
    got = load_image(tmp_path / "s" / "sample_001.nii.gz").array
    assert got.shape == (24, 24) and np.allclose(got, a[1, 0].numpy(), atol=1e-6)
    code, _, err = _run(capsys, "sample", "--model", models["prior"], "--size", 25,
                        "--out", tmp_path / "bad", "--device", "cpu")
    assert code == 2 and len(err.splitlines()) == 1
    assert "the samples are 25x25, the network needs sides divisible by 2; choose a multiple of 2" \
        in err
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ denoise
def test_denoise_runs_on_the_files_grid_and_batches_do_not_change_it(models, tmp_path, capsys):
    src, vol = _volume(tmp_path, 24, 32, 3)
    out = tmp_path / "d.nii.gz"
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model",
                        models["prior"], "--batch-size", 2, "--out", out, "--device", "cpu")
    assert code == 0, err
    got = load_image(out)
    assert got.array.shape == vol.shape and np.allclose(got.affine, AFFINE)
    model = api.load_model(models["prior"], device="cpu")
    sl = api.read_slices(src, 16)
    assert sl.images.shape == (3, 1, 32, 24)  # no resampling; sections of the RAS volume
    ref = sl.restore(api.denoise(model, sl.images, 0.1))
    assert np.allclose(got.array, ref, rtol=1e-4, atol=1e-3)
    # --resize: through 16 x 16 and back onto the file's grid, a different result
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model",
                        models["prior"], "--resize", "--out", tmp_path / "r.nii.gz",
                        "--device", "cpu")
    assert code == 0, err
    resized = load_image(tmp_path / "r.nii.gz")
    assert resized.array.shape == vol.shape and np.allclose(resized.affine, AFFINE)
    assert not np.allclose(resized.array, got.array, atol=1e-3)


def test_far_sizes_warn_and_indivisible_sizes_are_padded_and_cropped_back(models, tmp_path,
                                                                          capsys, caplog):
    big, _ = _volume(tmp_path, 48, 48, 1, "big.nii.gz")
    with caplog.at_level(logging.WARNING, logger="meddiff.tasks.inputs"):
        assert api.read_slices(big, 16, divisor=2).images.shape == (1, 1, 48, 48)
    assert "48x48, the model was trained on 16x16" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meddiff.tasks.inputs"):
        api.read_slices(_volume(tmp_path, 24, 32)[0], 16, divisor=2)
    assert caplog.text == ""  # within 2x of the training size
    odd, _ = _volume(tmp_path, 24, 27, 1, "odd.nii.gz")
    sl = api.read_slices(odd, 16, divisor=2)  # its axial section: 27 rows (A -> P) x 24
    assert sl.images.shape == (1, 1, 28, 24) and sl.pad == (0, 1, 0, 0) and sl.shape == (27, 24)
    code, _, err = _run(capsys, "denoise", "--input", odd, "--sigma", 0.1, "--model",
                        models["prior"], "--out", tmp_path / "o.nii.gz", "--device", "cpu")
    assert code == 0, err
    got = load_image(tmp_path / "o.nii.gz")
    assert got.array.shape == (24, 27, 1) and np.allclose(got.affine, AFFINE)
    # the same as denoising the explicitly reflect-padded slice and cropping it
    plain = api.read_slices(odd, 16)  # divisor 1: the file's slices as they are
    model = api.load_model(models["prior"], device="cpu")
    clean = api.denoise(model, F.pad(plain.images, (0, 0, 0, 1), mode="reflect"), 0.1)
    assert np.allclose(got.array, plain.restore(clean[..., :27, :]), rtol=1e-4, atol=1e-3)
    code, _, err = _run(capsys, "denoise", "--input", odd, "--sigma", 0.1, "--model",
                        models["prior"], "--resize", "--out", tmp_path / "o.nii.gz",
                        "--device", "cpu", "--overwrite")
    assert code == 0, err
    assert load_image(tmp_path / "o.nii.gz").array.shape == (24, 27, 1)


# ------------------------------------------------------------------------------ reconstruct
def test_reconstruct_an_image_at_its_own_size(models, tmp_path, capsys):
    src, vol = _volume(tmp_path, 24, 32, 2)
    out = tmp_path / "full.nii.gz"  # fully sampled zero-filled: the image itself, on its grid
    code, text, err = _run(capsys, "reconstruct", "--input", src, "--method", "zero-filled",
                           "--acceleration", 1, "--model", models["prior"], "--out", out,
                           "--device", "cpu", "--json")
    assert code == 0, err
    got = load_image(out)
    sl = api.read_slices(src, 16)
    assert got.array.shape == vol.shape and np.allclose(got.affine, AFFINE)
    assert np.allclose(got.array, sl.restore(sl.images), rtol=1e-4, atol=1e-2)
    out = tmp_path / "song.nii.gz"
    code, text, err = _run(capsys, "reconstruct", "--input", src, "--method", "song", "--steps",
                           2, "--model", models["prior"], "--out", out, "--device", "cpu",
                           "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["nfe"] == 8 and all(np.isfinite(r["psnr"]) for r in report["metrics"])
    assert nib.load(out).shape == vol.shape
    code, _, err = _run(capsys, "reconstruct", "--input", src, "--modality", "ct", "--views", 12,
                        "--method", "fbp", "--model", models["prior"],
                        "--out", tmp_path / "ct.nii.gz", "--device", "cpu")
    assert code == 0, err
    assert nib.load(tmp_path / "ct.nii.gz").shape == vol.shape
    odd, vol = _volume(tmp_path, 23, 30, 2, "odd.nii.gz")  # sections 30 x 23 padded to 30 x 24
    out = tmp_path / "odd_full.nii.gz"
    code, text, err = _run(capsys, "reconstruct", "--input", odd, "--method", "zero-filled",
                           "--acceleration", 1, "--model", models["prior"], "--out", out,
                           "--device", "cpu", "--json")
    assert code == 0, err
    got = load_image(out)
    assert got.array.shape == vol.shape and np.allclose(got.affine, AFFINE)
    sl = api.read_slices(odd, 16)
    assert np.allclose(got.array, sl.restore(sl.images), rtol=1e-4, atol=1e-2)
    assert json.loads(text)["metrics"][0]["psnr"] > 40  # on the file's region, not the padding


def _h5(path, image: np.ndarray) -> str:
    """A fully sampled single-coil fastMRI-style file of the complex images (slices, H, W)."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("kspace", data=fft2c(torch.from_numpy(image)).numpy())
    return str(path)


def test_reconstruct_fastmri_kspace_at_its_own_size(models, tmp_path, capsys):
    img = np.moveaxis(_blobs(24, 24, 2), -1, 0).astype(np.complex64)
    src = _h5(tmp_path / "k.h5", img)
    out = tmp_path / "k.nii.gz"
    code, text, err = _run(capsys, "reconstruct", "--input", src, "--method", "score-mri",
                           "--steps", 2, "--model", models["prior"], "--out", out,
                           "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(text)["nfe"] == 8 and nib.load(out).shape == (24, 24, 2)  # self-check
    code, text, err = _run(capsys, "reconstruct", "--input", src, "--method", "zero-filled",
                           "--acceleration", 1, "--model", models["prior"], "--out", out,
                           "--device", "cpu", "--json", "--overwrite")
    assert code == 0, err
    scale = np.percentile(np.abs(img), 99.5)
    want = np.moveaxis(np.abs(img) / scale, 0, -1).clip(0, 1)
    assert np.allclose(nib.load(out).get_fdata(), want, atol=1e-4)
    odd = _h5(tmp_path / "odd.h5", img[:, :23, :24])
    code, _, err = _run(capsys, "reconstruct", "--input", odd, "--method", "score-mri",
                        "--model", models["prior"], "--out", tmp_path / "o" / "k.nii.gz",
                        "--device", "cpu")
    assert code == 2 and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
    assert "k-space is 23x24, the network needs sides divisible by 2" in err


# ------------------------------------------------------------------------------ detect / segment
@pytest.mark.parametrize("method,extra", [
    ("anoddpm", ["--t", 20, "--steps", 2]),
    ("wolleb", ["--classifier", "{clf}", "--level", 50, "--steps", 2]),
    ("diff-scm", ["--classifier", "{clf}", "--level", 50, "--steps", 2]),
    ("latent", ["--t", 30, "--steps", 2]),
])
def test_detect_at_the_files_size(models, tmp_path, capsys, method, extra):
    src, vol = _volume(tmp_path, 24, 32, 3)
    out = tmp_path / "map.nii.gz"
    model = models["latent" if method == "latent" else "prior"]
    code, text, err = _run(capsys, "detect", "--method", method, "--input", src, "--out", out,
                           "--model", model, "--batch-size", 2, "--seed", 1, "--device", "cpu",
                           "--json", *[str(a).format(**models) for a in extra])
    assert code == 0, err
    maps = load_image(out)
    assert maps.array.shape == vol.shape and np.allclose(maps.affine, AFFINE)
    assert maps.array.min() >= 0 and json.loads(text)["slices"] == 3
    if method == "anoddpm":  # the file task is the API on the native slices
        opts = dt.DetectOptions(model=model, device="cpu", seed=1, t=20, steps=2, batch_size=2)
        sl = api.read_slices(src, 16)
        ref = dt.detect(dt.prepare("anoddpm", opts), sl.images, opts)
        assert np.allclose(maps.array, sl.restore(ref.maps, "values"), atol=1e-6)
    if method == "latent":  # autoencoder factor 2 x latent UNet divisor 2
        odd, vol = _volume(tmp_path, 24, 30, 1, "odd.nii.gz")  # sections 30 x 24 -> 32 x 24
        out = tmp_path / "o" / "m.nii.gz"
        code, _, err = _run(capsys, "detect", "--method", method, "--input", odd, "--out", out,
                            "--model", model, "--device", "cpu")
        assert code == 0, err
        for path in (out, tmp_path / "o" / "m_healthy.nii.gz"):
            got = load_image(path)
            assert got.array.shape == vol.shape and np.allclose(got.affine, AFFINE)


def test_segment_ensemble_and_unet_at_the_files_size(models, tmp_path, capsys):
    src, vol = _volume(tmp_path, 24, 32, 2)
    out = tmp_path / "mask.nii.gz"
    code, _, err = _run(capsys, "segment", "--input", src, "--model", models["seg"], "--samples",
                        2, "--steps", 3, "--batch-size", 3, "--out", out, "--device", "cpu")
    assert code == 0, err
    mean = load_image(out)
    assert mean.array.shape == vol.shape and np.allclose(mean.affine, AFFINE)
    assert load_image(tmp_path / "mask_var.nii.gz").array.shape == vol.shape
    src48, vol48 = _volume(tmp_path, 48, 64, 3, "u.nii.gz")
    out = tmp_path / "u_mask.nii.gz"
    code, _, err = _run(capsys, "segment", "--method", "unet", "--input", src48, "--model",
                        models["unet"], "--batch-size", 2, "--out", out, "--device", "cpu")
    assert code == 0, err
    net = load(models["unet"], kind="seg-unet").net
    sl48 = api.read_slices(src48, 32)
    with torch.no_grad():
        prob = torch.sigmoid(net(to_model(sl48.images)))
    got = load_image(out)
    assert got.array.shape == vol48.shape and np.allclose(got.affine, AFFINE)
    assert np.allclose(got.array, sl48.restore(prob, "values"), atol=1e-5)
    out = tmp_path / "o" / "m.nii.gz"  # sections 32 x 24: reflect-padded to 32 x 32, cropped
    code, _, err = _run(capsys, "segment", "--method", "unet", "--input", src, "--model",
                        models["unet"], "--out", out, "--device", "cpu")
    assert code == 0, err
    plain = api.read_slices(src, 32)
    with torch.no_grad():
        prob = torch.sigmoid(net(to_model(F.pad(plain.images, (4, 4, 0, 0), mode="reflect"))))
    got = load_image(out)
    assert got.array.shape == vol.shape and np.allclose(got.affine, AFFINE)
    assert np.allclose(got.array, plain.restore(prob[..., 4:28], "values"), atol=1e-5)
