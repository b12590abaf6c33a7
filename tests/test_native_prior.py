"""Training a prior for native resolution: random windows of finer slices, domain
randomisation, fine-tuning from a stored model, and the bf16 fallback of CPUs without it."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from meddiff.data.crops import RandomCrops, window, window_starts
from meddiff.data.datasets import BrainSlices
from meddiff.data.randomize import RandomizeConfig, randomized_mr
from meddiff.data.reuse import ReusedDraws
from meddiff.errors import ConfigError
from meddiff.train.data import DataConfig, make_dataset
from tiny_model import TINY, save_tiny


class _Items(torch.utils.data.Dataset):
    """Items whose pixels encode their position: image[c, y, x] = 1000 c + 100 y + x."""

    def __init__(self, size: int = 12):
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.image = (100 * yy + xx).float()[None]
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 50

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image, "tissue": self.image[0].long(), "label": i}


def test_random_crops_cut_every_aligned_tensor_at_one_window():
    ds = RandomCrops(_Items(12), 5, seed=3)
    starts = set()
    for i in range(50):
        item = ds[i]
        y0, x0 = divmod(int(item["image"][0, 0, 0]), 100)
        expect = torch.tensor([[100 * (y0 + r) + x0 + c for c in range(5)] for r in range(5)])
        assert torch.equal(item["image"][0], expect.float())       # a contiguous window
        assert torch.equal(item["tissue"], expect)                   # the same window
        assert item["tissue"].dtype == torch.int64 and item["label"] == i
        starts.add((y0, x0))
    assert len(starts) > 20 and all(0 <= y <= 7 and 0 <= x <= 7 for y, x in starts)
    again = RandomCrops(_Items(12), 5, seed=3)
    assert torch.equal(again[7]["image"], ds[7]["image"])           # a function of the index
    ds.set_epoch(1)
    assert ds.dataset.epoch == 1                                    # forwarded
    assert not all(torch.equal(ds[i]["image"], again[i]["image"]) for i in range(10))


class _Counted(torch.utils.data.Dataset):
    """Items that are a function of (epoch, index) and count how often they were rendered."""

    def __init__(self):
        self.epoch, self.renders = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        self.renders += 1
        return {"image": torch.full((1, 2, 2), 10.0 * self.epoch + i)}


def test_reused_draws_serve_one_draw_for_several_epochs_and_render_it_once():
    ds = ReusedDraws(_Counted(), every=3)
    seen = {}
    for epoch in range(7):
        ds.set_epoch(epoch)
        seen[epoch] = [float(ds[i]["image"][0, 0, 0]) for i in (5, 0, 3, 0)]
    assert seen[0] == seen[1] == seen[2] == [5.0, 0.0, 3.0, 0.0]  # the source's epoch 0
    assert seen[3] == seen[5] == [15.0, 10.0, 13.0, 10.0] and seen[6][0] == 25.0
    assert ds.dataset.renders == 3 * 3  # 3 draws of 3 distinct items, each rendered once
    assert ReusedDraws(_Counted(), every=1)[4]["image"].sum() == 16.0
    assert isinstance(make_dataset(DataConfig(length=8, reuse_epochs=2), 64), ReusedDraws)
    assert not isinstance(make_dataset(DataConfig(length=8, reuse_epochs=2), 64, split="val"),
                          ReusedDraws)
    with pytest.raises(ConfigError, match="reuse_epochs must be >= 1"):
        DataConfig(reuse_epochs=0)


def test_windows_pad_images_smaller_than_the_window():
    arr = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    out = window(arr, window_starts((2, 3), 4, None), 4)
    assert out.shape == (1, 4, 4) and out.sum() == arr.sum()
    assert window_starts((2, 3), 4, None) == [-1, -1]


def test_native_size_training_items_are_windows_of_slices_at_several_pixel_sizes():
    d = DataConfig(render_sizes=(64, 128), length=40)
    train, val = make_dataset(d, 64), make_dataset(d, 64, split="val")
    assert tuple(train[0]["image"].shape) == (1, 64, 64)
    assert tuple(val[0]["image"].shape) == (1, 128, 128)         # whole held-out slices
    assert val.spacing_mm == pytest.approx(189 / 128, rel=0.02)
    # a window of a 64 px slice is the slice itself; windows of 128 px slices can be all brain
    coarse = BrainSlices("train", size=64, length=40)
    same = sum(torch.equal(train[i]["image"], coarse[i]["image"]) for i in range(40))
    fill = max(float(train[i]["brain"].mean()) for i in range(40))
    assert 5 < same < 35 and fill > 0.9 > max(float(coarse[i]["brain"].mean()) for i in range(40))
    with pytest.raises(ConfigError, match="render_sizes apply"):
        DataConfig(dataset="brain_patches3d", render_sizes=(128,))
    with pytest.raises(ConfigError, match="randomize applies"):
        DataConfig(dataset="head_ct_slices", randomize=0.5)


def test_randomized_slices_are_valid_images_with_head_layers():
    ds = BrainSlices("train", size=64, randomize=1.0, length=12)
    plain = BrainSlices("train", size=64, length=12)
    for i in range(12):
        img, brain = ds[i]["image"], ds[i]["brain"].bool()
        assert img.min() >= 0 and img.max() <= 1 and torch.isfinite(img).all()
        assert torch.equal(img, ds[i]["image"])                      # reproducible
    outside = [float(ds[i]["image"][~ds[i]["brain"].bool()].mean()) for i in range(12)]
    plain_out = [float(plain[i]["image"][~plain[i]["brain"].bool()].mean()) for i in range(12)]
    assert max(outside) > 3 * max(plain_out) + 0.02                 # skull / scalp / background
    # the brain's tissue contrasts are drawn, not the four sequences': GM/WM order varies
    order = [float(ds[i]["image"][0][ds[i]["tissue"] == 2].mean()
                   > ds[i]["image"][0][ds[i]["tissue"] == 3].mean()) for i in range(12)]
    assert 0 < sum(order) < 12
    with pytest.raises(ConfigError, match="probability"):
        BrainSlices("train", size=64, randomize=1.5)


def test_randomized_intensities_follow_the_tissue_fractions():
    """Without head, blur, bias, gamma or noise the image is the fraction-weighted mix of the
    drawn levels, normalised by its 99.5th percentile."""
    fr = np.zeros((3, 32, 32), np.float32)
    fr[0, 8:24, 8:16], fr[1, 8:24, 16:24] = 1.0, 1.0
    cfg = RandomizeConfig(head=0.0, background_level=(0.0, 0.0), max_blur_mm=0.0)
    rng = np.random.default_rng(0)
    levels = np.random.default_rng(0).uniform(0, 1, 3)
    img = randomized_mr(fr, 1.0, rng, cfg)
    csf, gm = float(np.median(img[8:24, 8:16])), float(np.median(img[8:24, 16:24]))
    assert csf / gm == pytest.approx(levels[0] / levels[1], rel=0.25)
    assert float(np.median(img[:6])) < 0.06                          # background stays dark


def test_init_from_starts_the_network_from_the_stored_weights(tmp_path):
    from meddiff.config import to_dict
    from meddiff.train.run import _initialised, _networks, make_objective, run_config
    from meddiff.zoo.store import load

    stored = save_tiny(tmp_path, "start", seed=5)

    def initialised(**model):
        cfg = run_config({"model": to_dict(TINY) | model,
                          "train": {"steps": 1, "out_dir": str(tmp_path / "run"),
                                    "init_from": str(stored)}})
        return _initialised(_networks(make_objective(cfg), 0), cfg, resume=True)

    nets = initialised(image_size=32)                     # the window size may differ
    want = load(stored).net.state_dict()
    assert all(torch.equal(v, want[k].float()) for k, v in nets["model"].state_dict().items())
    with pytest.raises(ConfigError, match="differs from the model section in parametrization"):
        initialised(parametrization="v")


def test_bf16_falls_back_to_float32_where_the_cpu_lacks_it(monkeypatch, caplog):
    from meddiff.train import trainer

    monkeypatch.setattr(trainer, "bf16_is_fast", lambda device: False)
    with caplog.at_level(logging.WARNING):
        assert trainer._bf16(True, torch.device("cpu")) is False
    assert "training in float32" in caplog.text
    monkeypatch.setattr(trainer, "bf16_is_fast", lambda device: True)
    assert trainer._bf16(True, torch.device("cpu")) is True
    assert trainer._bf16(False, torch.device("cpu")) is False


def test_a_windowed_prior_warns_only_outside_its_slice_sizes(caplog):
    from meddiff.tasks.inputs import check_size
    from meddiff.zoo.kinds import DiffusionSpec

    spec = DiffusionSpec(image_size=64, slice_sizes=(64, 128, 256))
    assert spec.trained_sizes == (64, 256) and DiffusionSpec().trained_sizes == (64, 64)
    with caplog.at_level(logging.WARNING):
        check_size((256, 320), spec.trained_sizes, 4)
        check_size((32, 32), spec.trained_sizes, 4)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        check_size((768, 768), spec.trained_sizes, 4)
    assert "trained on slices of 64-256 px" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_size((256, 256), 64, 4)                    # a whole-slice 64 px prior
    assert "trained on 64x64" in caplog.text
