"""Head-CT and complex-MRI renderings (meddiff.data.modalities) and their training configs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meddiff.data.crops import RandomCrops
from meddiff.data.datasets import BrainSlices
from meddiff.data.intensity import image_space, model_space
from meddiff.data.modalities import (CT_TISSUE_HU, ComplexBrainSlices, HeadCTSlices,
                                     LowDoseCTSlices, TranslationPairs, hu_to_image,
                                     render_head_ct)
from meddiff.errors import ConfigError
from meddiff.physics.acquisition import simulate_ct


def test_hu_window_maps_air_water_bone():
    np.testing.assert_allclose(hu_to_image(np.array([-1000.0, 0.0, 1000.0, 3000.0])),
                               [0.0, 0.5, 1.0, 1.0])


def test_head_ct_has_tissue_hu_inside_a_bone_ring_in_air():
    """A disc of pure grey matter: inside ~37 HU, a shell of bone (700-1300 HU) of the drawn
    thickness right outside it, then scalp and air far away."""
    n, spacing = 64, 2.0
    yy, xx = np.mgrid[:n, :n] - n / 2 + 0.5
    disc = (np.hypot(yy, xx) < 20).astype(np.float32)
    fr = np.stack([np.zeros_like(disc), disc, np.zeros_like(disc)])
    hu = render_head_ct(fr, spacing, np.random.default_rng(0))
    r = np.hypot(yy, xx)
    assert abs(float(np.median(hu[r < 15])) - CT_TISSUE_HU[1]) < 3
    ring = hu[(r > 22) & (r < 23)]
    assert 700 * 0.8 < float(np.median(ring)) < 1300
    assert float(hu[0, 0]) < -990  # corner: air


def test_head_ct_slices_are_deterministic_and_in_range():
    ds = HeadCTSlices("test", seed=3)
    a, b = ds[2], HeadCTSlices("test", seed=3)[2]
    assert torch.equal(a["image"], b["image"]) and a["contrast"] == -1
    img = a["image"]
    assert img.shape == (1, 64, 64) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert float(img.max()) > 0.8  # bone is present
    brain = a["brain"].bool()
    assert abs(float(img[brain].median()) - 0.515) < 0.01  # brain tissue ~30 HU


def test_low_dose_pairs_have_noise_that_grows_as_the_dose_falls():
    """The low-dose FBP is the noiseless FBP plus noise whose power scales as 1 / dose (FBP of
    transmission Poisson data, delta method: 10x less dose, 10x the variance; measured 9.3,
    clipping to [0, 1] trims a little); items are reproducible, and a training window cuts
    the pair at the same place."""
    def noise_power(doses):
        ds = LowDoseCTSlices("train", size=32, length=6, doses=doses)
        items = [ds[i] for i in range(6)]
        assert torch.equal(items[2]["lowdose"], ds[2]["lowdose"])
        assert all(it["lowdose"].shape == it["image"].shape == (1, 32, 32) for it in items)
        clean = [simulate_ct(it["image"][None])[0].fbp(simulate_ct(it["image"][None])[1])
                 for it in items]
        return sum(float((it["lowdose"] - c[0].clamp(0, 1)).pow(2).mean())
                   for it, c in zip(items, clean))

    assert 8 < noise_power((0.05, 0.05)) / noise_power((0.5, 0.5)) < 11
    crops = RandomCrops(LowDoseCTSlices("train", size=48, length=2), 16)
    it, full = crops[1], LowDoseCTSlices("train", size=48, length=2)[1]
    found = [(y, x) for y in range(33) for x in range(33)
             if torch.equal(full["image"][:, y:y + 16, x:x + 16], it["image"])]
    assert found and any(torch.equal(full["lowdose"][:, y:y + 16, x:x + 16], it["lowdose"])
                         for y, x in found)
    with pytest.raises(ConfigError):
        LowDoseCTSlices(doses=(0.0, 0.5))


def test_complex_slices_have_the_magnitude_of_the_mr_slice_and_a_smooth_phase():
    ds = ComplexBrainSlices("val", contrasts=("T2w",), seed=1)
    mr = BrainSlices("val", contrasts=("T2w",), seed=1)
    item, ref = ds[4], mr[4]
    z = torch.complex(item["image"][0], item["image"][1])
    assert torch.allclose(z.abs(), ref["image"][0], atol=1e-6)
    phase = torch.angle(z)[ref["brain"][0].bool()]
    assert float(phase.std()) > 0.05  # not a constant phase
    # smooth: neighbouring brain pixels differ little in phase (wrapped difference)
    zb = z * ref["brain"][0]
    dphi = torch.angle(zb[:, 1:] * zb[:, :-1].conj())[(zb[:, 1:].abs() > 0.2) & (zb[:, :-1].abs() > 0.2)]
    assert float(dphi.abs().median()) < 0.1
    assert torch.equal(ComplexBrainSlices("val", contrasts=("T2w",), seed=1)[4]["image"], item["image"])
    with pytest.raises(ConfigError):
        ComplexBrainSlices("val", phase_rms=-1)


def _tissue_means(image: torch.Tensor, tissue: torch.Tensor) -> list[float]:
    """Mean of ``image`` over background, CSF, GM, WM (labels 0-3)."""
    return [float(image.reshape(-1)[tissue.reshape(-1) == k].mean()) for k in range(4)]


def test_translation_pairs_show_one_anatomy_in_two_domains():
    """T1w -> T2w: the same tissue map, the contrast of CSF and WM inverted (T1w CSF < WM,
    T2w CSF > WM); T1w -> CT: bone-bright skull around water-like brain; reproducible, and
    the two images of a pair differ only in rendering."""
    pairs = TranslationPairs("val", size=64, source="T1w", target="T2w")
    item = pairs[5]
    src, tgt = _tissue_means(item["source"], item["tissue"]), _tissue_means(item["image"],
                                                                            item["tissue"])
    assert src[1] < src[3] and tgt[1] > tgt[3]  # CSF vs WM
    assert src[0] < 0.05 and tgt[0] < 0.05  # background
    again = TranslationPairs("val", size=64, source="T1w", target="T2w")[5]
    assert torch.equal(again["source"], item["source"]) and torch.equal(again["image"],
                                                                         item["image"])
    ct = TranslationPairs("val", size=64, source="T1w", target="CT")[5]
    assert torch.equal(ct["tissue"], item["tissue"])  # same section, same anatomy
    brain = ct["image"][0][ct["brain"][0] > 0]
    assert 0.5 < float(brain.mean()) < 0.53 and float(ct["image"].max()) > 0.8  # water, bone
    with pytest.raises(ConfigError, match="two different domains"):
        TranslationPairs(source="T1w", target="T1w")
    with pytest.raises(ConfigError, match="two different domains"):
        TranslationPairs(source="T1w", target="PET")


def test_intensity_maps_round_trip():
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(image_space(model_space(x)), x)
    c = torch.rand(2, 2, 4, 4) * 2 - 1
    assert torch.equal(model_space(c, "complex"), c) and torch.equal(image_space(c, "complex"), c)


def test_configs_of_the_new_priors_load_and_are_consistent(tmp_path):
    from pathlib import Path

    from meddiff.train.run import load_run_config

    root = Path(__file__).resolve().parents[1] / "configs"
    ct, mri = load_run_config(root / "ct-prior-64.yaml"), load_run_config(root / "mri-complex-64.yaml")
    assert ct.model.intensity == "unit" and ct.data.dataset == "head_ct_slices"
    assert mri.model.intensity == "complex" and mri.model.net.in_channels == 2
    assert "FLAIR" not in mri.data.contrasts  # one contrast left out, as configured
    bad = (root / "mri-complex-64.yaml").read_text().replace("intensity: complex", "")
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(ConfigError, match="complex"):
        load_run_config(tmp_path / "bad.yaml")
