"""YAML run configs; a training run that can be sampled."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meddiff.errors import ConfigError
from meddiff.train.run import load_run_config, train
from meddiff.zoo.store import load_diffusion


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,message", [
    ("train: {steps: 2, out_dir: x}\nmodel: {image_sise: 32}\n", "model.image_sise.*did you mean 'model.image_size'"),
    ("train: {steps: two, out_dir: x}\n", "train.steps: expected int"),
    ("train: {steps: 2, out_dir: x}\nmodel: {image_size: 30}\n", "not a multiple of 4"),
    ("train: {steps: 2, out_dir: x}\ndata: {dataset: brain_patches3d}\n", "spatial_dims=3"),
    ("model: {}\n", "missing required key 'train'"),
    ("train: {steps: 2, out_dir: x}\nmodel: {net: {num_head_channels: 48}}\n", "does not divide the attention"),
])
def test_bad_run_configs(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(_write(tmp_path, text))


def test_training_run_is_a_loadable_model_and_resumes(tmp_path):
    out = tmp_path / "run"
    cfg = load_run_config(_write(tmp_path, f"""
model:
  net: {{channels: [8, 16], attention_levels: [false, true], norm_num_groups: 8, num_head_channels: 8}}
  image_size: 16
data: {{length: 32, contrasts: [T1w]}}
train: {{steps: 4, out_dir: {out}, batch_size: 4, ckpt_every: 2, ema_decay: 0.5, lr: 0.001}}
"""))
    first = train(cfg)
    assert first["steps"] == 4 and (out / "model.json").exists()
    model = load_diffusion(out)
    assert model.spec.image_size == 16 and model.spec.data == {}
    again = train(cfg)  # resumes at the end: no further steps
    assert again["start_step"] == 4 and again["steps"] == 4
    trained = load_diffusion(out).denoiser.net.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in model.denoiser.net.state_dict().items())


def test_a_3d_run_trains_and_samples_volumes(tmp_path, capsys):
    from meddiff import api
    from meddiff.cli import main
    from meddiff.data.readers import load_image

    out = tmp_path / "run3d"
    cfg = load_run_config(_write(tmp_path, f"""
model:
  net: {{spatial_dims: 3, channels: [8, 16], attention_levels: [false, false], norm_num_groups: 8,
        num_head_channels: 8}}
  image_size: 16
data: {{dataset: brain_patches3d, length: 8, contrasts: [T2w]}}
train: {{steps: 2, out_dir: {out}, batch_size: 2}}
"""))
    assert train(cfg)["steps"] == 2
    vols = api.sample(api.load_model(str(out), "cpu"), n=2, steps=3, seed=0)
    assert vols.shape == (2, 1, 16, 16, 16)
    assert main(["sample", "--model", str(out), "--n", "2", "--steps", "3", "--out", str(tmp_path / "s")]) == 0
    assert load_image(tmp_path / "s" / "sample_001.nii.gz").array.shape == (16, 16, 16)
    assert "middle slices" in capsys.readouterr().out
