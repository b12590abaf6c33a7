"""Anomaly detection (D1 / D3 / D4): exact-denoiser checks of the maps, the lesion benchmark,
and the ``meddiff detect`` CLI.

The methods work in model space (:mod:`meddiff.methods.detection.interface`); the checks below
state their numbers in image space through :func:`_image`, the task's conversion."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gaussian_oracle import GaussianEpsNet
from meddiff.cli import main
from meddiff.core.model import Denoiser
from meddiff.core.noise import gaussian, simplex
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.readers import load_image
from meddiff.data.writers import save_nifti
from meddiff.data.lesion_bench import (HEALTHY, LESION, ClassifierData, healthy_bench,
                                       lesion_bench)
from meddiff.data.intensity import from_model, to_model
from meddiff.methods.detection import anoddpm as d3
from meddiff.methods.detection import counterfactual as cf
from meddiff.methods.detection import latent as lt
from meddiff.methods.detection.interface import gaussian_smooth
from meddiff.nets.autoencoder import AEConfig
from meddiff.nets.classifier import ClassifierConfig, NoisyClassifier
from meddiff.nets.unet import preset
from meddiff.tasks import detection as dt
from meddiff.zoo.kinds import AutoencoderSpec, ClassifierSpec, DiffusionSpec
from meddiff.zoo.store import build, build_denoiser, save
from tiny_model import save_tiny

S = 16
SCHEDULE = NoiseSchedule()
TINY_CLF = ClassifierConfig(image_size=S, channels=(16, 16), attention_levels=(False, False),
                            norm_num_groups=8, num_head_channels=8)


def _template() -> torch.Tensor:
    """A 'healthy' image (S, S) in [0, 1]: a bright disc on a darker background."""
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    return 0.3 + 0.4 * (((yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 36).double()


def _iso_denoiser(tau: float) -> Denoiser:
    """Exact denoiser of data ``N(to_model(template), tau^2 I)`` in model space."""
    mu = to_model(_template()).flatten()
    cov = tau ** 2 * torch.eye(S * S, dtype=torch.float64)
    return Denoiser(GaussianEpsNet(mu, cov, SCHEDULE), SCHEDULE)


def _images(tau: float, seed: int = 0) -> torch.Tensor:
    """(2, 1, S, S) image space: an in-distribution draw and the same image with a +0.25 bump."""
    g = torch.Generator().manual_seed(seed)
    x = (_template() + 0.5 * tau * torch.randn(S, S, generator=g, dtype=torch.float64)).float()
    bump = x.clone()
    bump[6:9, 6:9] += 0.25
    return torch.stack([x, bump])[:, None]


BUMP = torch.zeros(S, S, dtype=torch.bool)
BUMP[6:9, 6:9] = True


def _image(res) -> SimpleNamespace:
    """A method's model-space result in image space, as the detection task converts it."""
    return SimpleNamespace(maps=res.maps * 0.5, recon=from_model(res.recon), nfe=res.nfe)


def _anoddpm(model, x01, **kw) -> SimpleNamespace:
    return _image(d3.anoddpm(model, to_model(x01), **kw))


def _counterfactual(model, x01, classifier, **kw) -> SimpleNamespace:
    return _image(cf.counterfactual(model, to_model(x01), classifier, **kw))


# ------------------------------------------------------------------------------ D3 AnoDDPM
def test_anoddpm_keeps_healthy_images_and_flags_a_bump():
    den, x = _iso_denoiser(0.02), _images(0.02)
    raw = d3.anoddpm(den, to_model(x), t=100, smooth=0, generator=torch.Generator().manual_seed(1))
    assert raw.nfe == 101  # every integer time from t down to 0
    assert torch.equal(raw.maps, (to_model(x) - raw.recon).abs())  # unsmoothed: |x - x_hat|
    res = _image(raw)
    healthy, sick = res.maps[0, 0], res.maps[1, 0]
    assert healthy.mean() < 0.02 and healthy.max() < 0.07
    # exact prior N(mu, tau^2 I): E[x_hat] = mu + (1 - k)(x - mu), k = s^2 / (s^2 + a^2 tau^2)
    # ~ 0.997, so the bump (0.25) comes back almost entirely in the map
    assert sick[BUMP].min() > 0.18 and sick[BUMP].min() > sick[~BUMP].max()


def test_anoddpm_mean_reconstruction_is_the_exact_posterior_mean():
    tau, t = 0.3, 100.0
    den, x = _iso_denoiser(tau), _images(0.02)
    res = _anoddpm(den, x, t=t, steps=20, smooth=0, samples=24,
                   generator=torch.Generator().manual_seed(2))
    # prior N(mu, tau^2 I): E[x_hat | x] = mu + (1 - k)(x - mu), k = s^2 / (s^2 + a^2 tau^2);
    # the DDPM chain's mean is exact for any step count (each step is linear in x0_hat)
    ab = float(SCHEDULE.alpha_bar(t))
    k = (1 - ab) / (1 - ab + ab * tau ** 2)
    expected = _template() + (1 - k) * (x.double() - _template())  # image space, linear map
    err = res.recon.double() - expected
    assert err.mean().abs() < 0.006 and err.abs().mean() < 0.03  # MC std ~ 0.0015 / 0.023
    kept = float((res.recon[1, 0] - _template().float())[BUMP].mean()) / 0.25
    assert 0.3 < 1 - k < 0.6 and kept == pytest.approx(1 - k, abs=0.1)


def test_anoddpm_is_seeded_and_uses_the_models_training_noise():
    den, x = _iso_denoiser(0.1), _images(0.1)
    run = lambda seed, model=den, **kw: d3.anoddpm(  # noqa: E731
        model, to_model(x), t=50, steps=10, generator=torch.Generator().manual_seed(seed),
        **kw).maps
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
    loaded = SimpleNamespace(denoiser=den, spec=SimpleNamespace(noise="simplex"))
    assert torch.equal(run(3, loaded), run(3, noise=simplex))
    assert not torch.equal(run(3, loaded), run(3, noise=gaussian))


def test_gaussian_smoothing_keeps_mass_and_spreads_a_point():
    x = torch.zeros(1, 1, S, S)
    x[0, 0, 8, 8] = 1.0
    y = gaussian_smooth(x, 1.5)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5) and y.max() < 0.1
    assert y[0, 0, 8, 8] == y.max() and torch.allclose(y, y.flip(-1).roll(1, -1), atol=1e-7)
    assert torch.equal(gaussian_smooth(x, 0), x)


# ------------------------------------------------------------------------------ D1 / D4
@pytest.mark.parametrize("level", [500.0, None])
def test_ddim_encode_decode_without_guidance_round_trips(level):
    den, x = _iso_denoiser(0.3), _images(0.1)
    zero = lambda x_t, t: torch.zeros(x_t.shape[0], 2)  # noqa: E731
    res = _counterfactual(den, x, zero, level=level, scale=0.0, steps=500, smooth=0)
    assert (res.recon - x).abs().max() < 0.01 and res.maps.max() < 0.01
    assert res.nfe == 2 * 500 - 1  # encoding (steps - 1) + decoding (steps)
    coarse = _counterfactual(den, x, zero, level=level, scale=0.0, steps=50, smooth=0)
    assert coarse.maps.max() > 2 * res.maps.max()  # the error is DDIM discretisation


def _region_classifier(beta: float = 10.0):
    """logits (healthy, lesion) = (-beta d, beta d), d = mean of x_t over the bump region minus
    its mean under the prior (sqrt(abar_t) mu): 'lesion' means brighter than healthy there."""
    ref = float(to_model(_template())[BUMP].mean())

    def classifier(x_t, t):
        d = x_t[:, 0][:, BUMP].mean(1) - SCHEDULE.alpha_bar(t).sqrt().float() * ref
        return torch.stack([-beta * d, beta * d], 1)
    return classifier


def test_guidance_moves_the_counterfactual_towards_the_target_class_only_where_it_looks():
    den, x = _iso_denoiser(0.3), _images(0.1)
    clf = _region_classifier()
    cfs = {s: _counterfactual(den, x, clf, level=500, scale=s, steps=50, smooth=0).recon[:, 0]
           for s in (0.0, 0.5, 2.0)}
    inside = {s: float(v[1][BUMP].mean()) for s, v in cfs.items()}  # the image with the bump
    assert inside[0.0] - inside[0.5] > 0.02 and inside[0.5] - inside[2.0] > 0.02  # monotone
    # isotropic prior: pixels decouple, so nothing outside the classifier's region moves
    assert (cfs[2.0] - cfs[0.0])[:, ~BUMP].abs().max() < 1e-4
    lesion = _counterfactual(den, x, clf, level=500, scale=2.0, steps=50, target=LESION)
    healthy_in = float(cfs[0.0][0][BUMP].mean())
    assert float(lesion.recon[0, 0][BUMP].mean()) > healthy_in + 0.02  # other class: brighter
    res = cf.wolleb(den, to_model(x[1:]), classifier=clf, scale=2.0, steps=50)
    assert res.maps[0, 0][BUMP].mean() > 5 * res.maps[0, 0][~BUMP].mean()


def test_wolleb_and_diff_scm_differ_only_in_their_explicit_defaults():
    den, x = _iso_denoiser(0.3), to_model(_images(0.1)[1:])
    clf = _region_classifier()
    a = cf.diff_scm(den, x, classifier=clf, scale=1.0, steps=20)
    b = cf.counterfactual(den, x, clf, level=None, scale=1.0, steps=20, target=HEALTHY)
    c = cf.wolleb(den, x, classifier=clf, level=999, scale=1.0, steps=20)
    assert torch.equal(a.maps, b.maps) and torch.equal(a.maps, c.maps)
    assert cf.WOLLEB.level == 500 and cf.DIFF_SCM.level is None


# ------------------------------------------------------------------------------ benchmark data
def test_lesion_bench_is_fixed_with_large_lesions_inside_the_brain():
    test = lesion_bench("test")
    again = lesion_bench("test")
    images, lesions, brains = test
    assert all(torch.equal(a, b) for a, b in zip(test, again))
    images[:] = 0  # callers get clones: the cache is untouched
    assert torch.equal(lesion_bench("test").lesions, again.lesions)
    images, lesions, brains = again
    assert len(again) >= 100 and images.dtype == torch.float32 and lesions.dtype == torch.bool
    assert 0 <= images.min() and images.max() <= 1
    assert lesions.flatten(1).any(1).all() and not (lesions & ~brains).any()
    areas = lesions.flatten(1).sum(1).float()
    clf = ClassifierData(length=40)
    clf_areas = torch.stack([clf[i]["lesion"].sum() for i in range(0, 40, 2)])
    assert areas.mean() > 1.5 * clf_areas.mean()  # bench lesions are larger
    flair = again.select("FLAIR")
    assert len(flair) == (again.contrasts == 3).sum() > 0
    les, wm = flair.images[flair.lesions], flair.images[flair.brains & ~flair.lesions]
    assert les.mean() > 1.3 * wm.median()  # bright on FLAIR
    val = lesion_bench("val")
    assert not set(val.sections.tolist()) & set(again.sections.tolist())
    assert not lesion_bench("test", seed=5).lesions.equal(again.lesions)
    assert not healthy_bench("test").lesions.any()


def test_classifier_data_pairs_differ_only_around_the_lesion():
    data = ClassifierData(length=8, seed=1)
    for k in range(4):
        j, _ = data._draw_index(k)
        sick, healthy = data[2 * k], data[2 * k + 1]
        assert int(sick["label"]) == LESION and int(healthy["label"]) == HEALTHY
        assert sick["lesion"].sum() > 0 and healthy["lesion"].sum() == 0
        assert data.lesion_ds.healthy_twin(j)["section"] == data.lesion_ds[j]["section"]
        near = torch.nn.functional.max_pool2d(sick["lesion"], 5, 1, 2) > 0  # partial volume
        diff = (sick["image"] - healthy["image"]).abs()
        # elsewhere only the global intensity normalisation moves (a few percent)
        assert diff[~near].mean() < 0.01 and diff[sick["lesion"] > 0].mean() > 5 * diff[~near].max()
        assert torch.equal(data[2 * k]["image"], sick["image"])  # deterministic


# ------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save(d / "clf", NoisyClassifier(TINY_CLF), ClassifierSpec(net=TINY_CLF), fp16=False)
    return {"model": str(save_tiny(d)), "classifier": str(d / "clf.json")}


def _volume(tmp_path):
    vol = np.random.default_rng(0).random((S, S, 3)).astype(np.float32) * 500
    return save_nifti(tmp_path / "in.nii.gz", vol, np.diag([1.2, 1.2, 3.0, 1.0])), vol


def _run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_anoddpm_writes_map_on_the_file_grid_equal_to_the_api(tiny, tmp_path, capsys):
    src, vol = _volume(tmp_path)
    out = tmp_path / "res" / "map.nii.gz"
    code, text, err = _run(capsys, "detect", "--method", "anoddpm", "--input", src, "--out", out,
                           "--model", tiny["model"], "--t", 20, "--steps", 3, "--seed", 4,
                           "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["slices"] == 3 and report["nfe"] == 3 and len(report["outputs"]) == 5  # + json
    got = load_image(out)
    assert got.array.shape == vol.shape and np.allclose(got.affine, np.diag([1.2, 1.2, 3.0, 1.0]))
    opts = dt.DetectOptions(model=tiny["model"], device="cpu", seed=4, t=20, steps=3)
    from meddiff import api
    sl = api.read_slices(str(src), S)  # the sections in the models' frame
    ref = dt.detect(dt.prepare("anoddpm", opts), sl.images, opts)
    assert np.allclose(got.array, sl.restore(ref.maps, "values"), atol=1e-6)
    assert (tmp_path / "res" / "map.png").stat().st_size > 1000
    assert (tmp_path / "res" / "map_overlay.png").exists()
    assert load_image(tmp_path / "res" / "map_healthy.nii.gz").array.shape == vol.shape


def test_detect_wolleb_runs_with_a_given_classifier(tiny, tmp_path, capsys):
    src, _ = _volume(tmp_path)
    out = tmp_path / "w.nii.gz"
    code, text, err = _run(capsys, "detect", "--method", "wolleb", "--input", src, "--out", out,
                           "--model", tiny["model"], "--classifier", tiny["classifier"],
                           "--level", 50, "--steps", 3, "--scale", 2, "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["nfe"] == 5 and report["models"][1] == "clf"  # 2 encode + 3 decode steps
    maps = load_image(out).array
    assert maps.min() >= 0 and maps.max() > 0


@pytest.fixture(scope="module")
def tiny_latent(tmp_path_factory):
    """A random tiny D2 pair in one folder: autoencoder ``tiny-ae`` (16 -> 8 px) and the latent
    DDPM ``tiny-ddpm`` whose spec names it (found beside it, not among the bundled models)."""
    d = tmp_path_factory.mktemp("latent")
    torch.manual_seed(0)
    ae = AutoencoderSpec(net=AEConfig(channels=(8, 8), latent_channels=2, norm_num_groups=8),
                         image_size=S, latent_scale=1.5)
    save(d / "tiny-ae", build("autoencoder", ae), ae, fp16=False)
    spec = DiffusionSpec(net=preset("tiny", in_channels=2, out_channels=2),
                         image_size=S // ae.net.factor, clip_x0=False, autoencoder="tiny-ae")
    return save(d / "tiny-ddpm", build_denoiser(spec).net, spec, {"latent_scale": 1.5},
                fp16=False)


def test_detect_latent_writes_the_api_map_of_the_pair(tiny_latent, tmp_path, capsys):
    src, vol = _volume(tmp_path)
    out = tmp_path / "l.nii.gz"
    code, text, err = _run(capsys, "detect", "--method", "latent", "--input", src, "--out", out,
                           "--model", tiny_latent, "--t", 30, "--steps", 2, "--seed", 1,
                           "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["nfe"] == 2 and report["models"] == ["tiny-ae", "tiny-ddpm"]
    from meddiff import api
    from meddiff.zoo.store import load, load_diffusion
    ae = load(tiny_latent.with_name("tiny-ae.json"), kind="autoencoder")
    det = lt.LatentDetector(lt.LatentCodec(ae.net, ae.spec.latent_scale),
                            load_diffusion(tiny_latent, autocast=True).denoiser)
    sl = api.read_slices(str(src), S)  # the sections in the models' frame
    x = to_model(sl.images)
    ref = lt.detect(det, x, (30,), 2, lt.DEFAULT_SMOOTH_PX,
                    generator=torch.Generator().manual_seed(1))
    maps = load_image(out).array
    assert maps.shape == vol.shape and maps.max() > 0
    assert np.allclose(maps, sl.restore(0.5 * ref.maps, "values"), atol=1e-6)
    code, _, err = _run(capsys, "detect", "--method", "latent", "--input", src, "--out", out,
                        "--model", tiny_latent, "--t", 5000, "--device", "cpu", "--overwrite")
    assert code == 2 and "--t must be in [1, 999]" in err
    code, _, err = _run(capsys, "detect", "--method", "anoddpm", "--input", src, "--out", out,
                        "--model", tiny_latent, "--device", "cpu", "--overwrite")
    assert code == 2 and "needs an image-space diffusion model" in err


@pytest.mark.parametrize("extra,message", [
    (["--method", "anoddpm", "--out", "{d}/map.png"], "must be a NIfTI file name"),
    (["--method", "wolleb", "--t", "100"], "--t does not apply to --method wolleb"),
    (["--method", "anoddpm", "--level", "100"], "--level does not apply"),
    (["--method", "anoddpm", "--t", "5000", "--model", "{model}"], "--t must be in [1, 999]"),
    (["--method", "anoddpm", "--steps", "0"], "--steps must be >= 1"),
    (["--method", "anoddpm"], "'anoddpm-64' is not trained yet"),
    (["--method", "diff-scm", "--model", "{model}", "--classifier", "no-such-classifier"],
     "unknown model 'no-such-classifier'"),
    (["--method", "anoddpm", "--model", "{model}", "--input", "{d}/missing.nii.gz"],
     "no such file"),
    (["--method", "latent-nope"], "invalid choice"),
    (["--method", "latent", "--level", "100"], "--level does not apply to --method latent"),
    (["--method", "latent", "--model", "{model}"], "needs a latent diffusion model"),
])
def test_detect_bad_input_is_one_line_exit_2_and_writes_nothing(tiny, tmp_path, capsys,
                                                                monkeypatch, extra, message):
    monkeypatch.setattr("meddiff.tasks.detection.bundled", lambda: [])  # no bundled defaults
    src, _ = _volume(tmp_path)
    out_dir = tmp_path / "out"
    argv = ["detect", "--input", src, "--out", out_dir / "m.nii.gz", "--device", "cpu"]
    argv += [a.format(d=out_dir, model=tiny["model"]) for a in extra]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and err.startswith("meddiff: error:")
    assert len(err.splitlines()) == 1 and not out_dir.exists()
