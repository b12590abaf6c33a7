"""Training objectives as plug-ins of the one Trainer: exact losses, learning on a fixed batch,
exact resume of a two-network objective, export -> store round trip, cards."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from meddiff.core.schedule import NoiseSchedule
from meddiff.errors import ConfigError
from meddiff.nets.autoencoder import AEConfig
from meddiff.nets.classifier import ClassifierConfig
from meddiff.nets.discriminator import DiscriminatorSpec, PatchDiscriminator
from meddiff.nets.unet import preset
from meddiff.train.cards import card_markdown
from meddiff.train.checkpoint import load_checkpoint
from meddiff.train.config import TrainConfig
from meddiff.train.data import DataConfig
from meddiff.train.objectives import OBJECTIVES, get
from meddiff.train.objectives.adversarial import (Adversarial, AdversarialOptions,
                                                  discriminator_loss, generator_loss)
from meddiff.train.objectives.autoencoder import (Autoencoder, AutoencoderOptions, kl_divergence,
                                                  latent_scale)
from meddiff.train.objectives.classifier import (Classifier, ClassifierOptions, classifier_loss,
                                                 curriculum_t_max)
from meddiff.train.objectives.diffusion import Diffusion, DiffusionOptions
from meddiff.train.objectives.feature_encoder import (KINDS, FeatureEncoderObjective,
                                                      FeatureEncoderOptions, corrupt)
from meddiff.train.objectives.reconstruction import ReconOptions, ReconUNet
from meddiff.train.objectives.regression import RegressionOptions, RegressionUNet
from meddiff.train.objectives.segmentation import SegUNet, dice_bce_loss
from meddiff.train.run import export, load_run_config, train
from meddiff.train.trainer import Trainer
from meddiff.zoo.kinds import (AutoencoderSpec, ClassifierSpec, DiffusionSpec, FeatureEncoderSpec,
                               ReconUNetSpec, RegressionUNetSpec, SegUNetSpec)
from meddiff.zoo.store import build, load
from ddp_env import as_rank, free_port

TINY_FEATURES = (4, 4, 8, 8, 8, 4)


pytestmark = pytest.mark.usefixtures("one_thread")


class Fixed(Dataset):
    """The same ``n`` items every epoch (a fixed batch when batch_size = n)."""

    def __init__(self, items: dict[str, torch.Tensor]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(next(iter(self.items.values())))

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.items.items()}


def _blobs(n: int, size: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Smooth random images (n, channels, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 4, 4, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def _cfg(tmp_path: Path, name: str = "run", **kw) -> TrainConfig:
    base = dict(steps=12, out_dir=str(tmp_path / name), batch_size=8, lr=3e-3, warmup_steps=0,
                ema_decay=0.0, log_every=4, ckpt_every=6, device="cpu", seed=1)
    return TrainConfig(**{**base, **kw})


def _fixed_batch_loss(objective, nets, batch: dict, step: int) -> float:
    """The first update's loss on ``batch`` with a fixed generator (no gradient)."""
    with torch.no_grad():
        return float(objective.updates()[0].loss(nets, batch, torch.Generator().manual_seed(9),
                                                 step))


def _learns(objective, items: dict, tmp_path: Path, steps: int = 12, **kw) -> tuple[float, float]:
    """Loss of the fixed batch before and after ``steps`` training steps on it."""
    cfg = _cfg(tmp_path, steps=steps, batch_size=len(next(iter(items.values()))), **kw)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = objective.networks()
    trainer = Trainer(nets, objective.updates(), Fixed(items), cfg)
    before = _fixed_batch_loss(objective, trainer.models, items, steps)
    trainer.fit()
    return before, _fixed_batch_loss(objective, trainer.models, items, steps)


# ------------------------------------------------------------------------------ registry
def test_registry_lists_every_objective_and_refuses_unknown_names():
    assert set(OBJECTIVES) == {"diffusion", "classifier", "autoencoder", "seg-unet",
                               "recon-unet", "regression", "feature-encoder", "adversarial"}
    assert all(get(n).name == n for n in OBJECTIVES)
    with pytest.raises(ConfigError, match="unknown objective 'difusion'; choose from diffusion"):
        get("difusion")


# ------------------------------------------------------------------------------ diffusion
TINY = DiffusionSpec(net=preset("tiny"), image_size=16)


def _diffusion(spec: DiffusionSpec = TINY, **options) -> Diffusion:
    return Diffusion(DiffusionOptions(**options), spec, DataConfig(), _cfg(Path("unused")))


def test_concat_condition_equals_the_unconditional_loss_of_a_net_ignoring_it():
    base = _diffusion().networks()["model"]

    class IgnoresCondition(nn.Module):
        def forward(self, x, t):
            assert x.shape[1] == 2  # the state and the concatenated image
            return base(x[:, :1], t)

    cond_spec = replace(TINY, net=replace(TINY.net, in_channels=2), condition="concat")
    cond = _diffusion(cond_spec, target="lesion", condition="image")
    batch = {"lesion": (_blobs(4, 16) > 0.5).float(), "image": _blobs(4, 16, seed=1)}
    plain = _diffusion(target="lesion")
    a = cond.loss({"model": IgnoresCondition()}, batch, torch.Generator().manual_seed(3), 0)
    b = plain.loss({"model": base}, batch, torch.Generator().manual_seed(3), 0)
    assert torch.equal(a, b) and a > 0


def test_a_list_of_condition_items_is_concatenated_in_order():
    """P1's PET + MR condition: ``condition: [lowcount, mr]`` -> channels (lowcount, mr) in
    model space; a list needs concat conditioning."""
    spec = replace(TINY, net=replace(TINY.net, in_channels=3), condition="concat")
    batch = {"lowcount": _blobs(2, 16), "mr": _blobs(2, 16, seed=1)}
    cond = _diffusion(spec, condition=("lowcount", "mr")).condition(batch)
    assert torch.equal(cond.concat, torch.cat([batch["lowcount"], batch["mr"]], 1) * 2 - 1)
    with pytest.raises(ConfigError, match="a list of condition items needs model.condition"):
        _diffusion(replace(TINY, net=replace(TINY.net, num_class_embeds=4), condition="class"),
                   condition=("lowcount", "mr"))


@pytest.mark.parametrize("mode", ["none", "concat", "class", "context"])
def test_diffusion_learns_a_fixed_batch_in_every_conditioning_mode(tmp_path, mode):
    net = {"none": {}, "concat": {"in_channels": 2}, "class": {"num_class_embeds": 4},
           "context": {"cross_attention_dim": 4}}[mode]
    spec = replace(TINY, net=replace(TINY.net, **net), condition=mode)
    key = {"none": None, "concat": "image", "class": "contrast", "context": "contrast"}[mode]
    target = "lesion" if mode == "concat" else "image"
    items = {"image": _blobs(8, 16), "lesion": (_blobs(8, 16, seed=5) > 0.5).float(),
             "contrast": torch.arange(8) % 4}
    before, after = _learns(_diffusion(spec, target=target, condition=key), items, tmp_path,
                            steps=12, lr=1e-2)
    assert after < 0.7 * before


def test_diffusion_config_mistakes_are_one_line_errors():
    with pytest.raises(ConfigError, match="options.condition"):
        _diffusion(replace(TINY, net=replace(TINY.net, in_channels=2), condition="concat"))
    with pytest.raises(ConfigError, match="spatial_dims=3"):
        Diffusion(DiffusionOptions(), TINY, DataConfig(dataset="brain_patches3d"), _cfg(Path("u")))


# ------------------------------------------------------------------------------ classifier
class LinearClassifier(nn.Module):
    """logits = W [mean(x_t), t / 1000] + b: tiny, deterministic, time-aware."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float32).expand(len(x))
        return self.lin(torch.stack([x.mean((1, 2, 3)), t / 1000.0], 1))


def test_classifier_loss_is_cross_entropy_of_a_hand_computed_x_t():
    schedule, net = NoiseSchedule("linear", 1000), LinearClassifier()
    x0, y = 2 * _blobs(6, 8) - 1, torch.tensor([0, 1, 0, 1, 1, 0])
    loss = classifier_loss(net, x0, y, schedule, torch.Generator().manual_seed(4), t_max=50)
    g = torch.Generator().manual_seed(4)
    t = torch.randint(0, 50, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = schedule.alpha_bar(t).float()[:, None, None, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    assert torch.allclose(loss, F.cross_entropy(net(x_t, t), y), rtol=1e-6, atol=1e-7)
    assert [curriculum_t_max(s, 100, 50, 500) for s in (0, 25, 50, 99)] == [50, 275, 500, 500]


def test_classifier_learns_a_fixed_batch(tmp_path):
    net = ClassifierConfig(image_size=16, channels=(16, 16), attention_levels=(False, False),
                           norm_num_groups=8, num_head_channels=8)
    objective = Classifier(ClassifierOptions(max_t=20, t_start=5), ClassifierSpec(net=net),
                           DataConfig(dataset="lesion_pairs", lesions="classifier"),
                           _cfg(tmp_path, steps=30))
    x = _blobs(8, 16)
    label = torch.arange(8) % 2
    x[label == 1, :, 6:10, 6:10] = 1.0  # a bright "lesion"
    before, after = _learns(objective, {"image": x, "label": label}, tmp_path, steps=30)
    assert after < 0.5 * before


# ------------------------------------------------------------------------------ autoencoder
TINY_AE = AutoencoderSpec(net=AEConfig(channels=(8, 8), latent_channels=2, norm_num_groups=8),
                          image_size=16)


def test_kl_divergence_matches_the_closed_form():
    mu, sigma = torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2)
    assert float(kl_divergence(mu, sigma)) == pytest.approx(0.0, abs=1e-7)
    per = 0.5 * (1.0 + 4.0 - 1.0 - math.log(4.0))  # mu = 1, sigma = 2
    assert float(kl_divergence(mu + 1, 2 * sigma)) == pytest.approx(12 * per, rel=1e-6)


class PixelAE(nn.Module):
    """An exactly invertible 'autoencoder': space-to-depth by 4, sigma 0."""

    def encode(self, x):
        return F.pixel_unshuffle(x, 4), torch.zeros(1)

    def decode(self, z):
        return F.pixel_shuffle(z, 4)


def test_latent_scale_gives_unit_std_latents():
    x01 = 0.5 + 0.1 * torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    scale = latent_scale(PixelAE(), x01)
    assert scale == pytest.approx(1.0 / float((2 * x01 - 1).std()), rel=1e-5)
    assert scale == pytest.approx(5.0, rel=0.03)


def test_autoencoder_learns_and_measures_its_latent_scale(tmp_path, monkeypatch):
    objective = Autoencoder(AutoencoderOptions(scale_images=16), TINY_AE, DataConfig(),
                            _cfg(tmp_path))
    items = {"image": _blobs(8, 16)}
    before, after = _learns(objective, items, tmp_path, steps=25, lr=1e-2)
    assert after < 0.7 * before
    monkeypatch.setattr("meddiff.train.objectives.autoencoder.make_dataset",
                        lambda data, size: Fixed(items))
    net = objective.networks()["model"]
    spec = objective.final_spec(net)
    assert spec.latent_scale == pytest.approx(latent_scale(net, items["image"]))


# ------------------------------------------------------------------------------ segmentation
def test_dice_bce_loss_of_perfect_and_wrong_logits():
    gt = torch.zeros(1, 1, 8, 8)
    gt[..., 2:5, 2:5] = 1
    loss = dice_bce_loss()
    perfect, wrong = float(loss(40 * (2 * gt - 1), gt)), float(loss(-40 * (2 * gt - 1), gt))
    assert perfect < 1e-3 and wrong > 1.5


def test_seg_unet_learns_a_fixed_batch(tmp_path):
    objective = SegUNet(None, SegUNetSpec(features=TINY_FEATURES, image_size=32),
                        DataConfig(lesions="segmentation"), _cfg(tmp_path))
    mask = (_blobs(8, 32, seed=3) > 0.55).float()
    items = {"image": 0.3 + 0.5 * mask, "lesion": mask}
    before, after = _learns(objective, items, tmp_path, steps=20, lr=1e-2)
    assert after < 0.7 * before


# ------------------------------------------------------------------------------ reconstruction
def _recon(tmp_path: Path, **cfg) -> ReconUNet:
    return ReconUNet(ReconOptions(), ReconUNetSpec(modality="mri", features=TINY_FEATURES,
                                                   image_size=32),
                     DataConfig(dataset="complex_brain_slices"), _cfg(tmp_path, **cfg))


def test_recon_unet_learns_a_fixed_batch(tmp_path):
    clean = torch.cat([_blobs(8, 32), torch.zeros(8, 1, 32, 32)], 1)  # real images, phase 0
    before, after = _learns(_recon(tmp_path), {"image": clean}, tmp_path, steps=20, lr=1e-2)
    assert after < 0.8 * before


def test_recon_unet_checks_its_data_and_acquisitions(tmp_path):
    spec = ReconUNetSpec(modality="ct", features=TINY_FEATURES, image_size=32)
    with pytest.raises(ConfigError, match="head_ct_slices"):
        ReconUNet(ReconOptions(), spec, DataConfig(dataset="brain_slices"), _cfg(tmp_path))


# ------------------------------------------------------------------------------ feature encoder
def test_regression_unet_is_residual_on_its_first_channel_and_learns_a_fixed_batch(tmp_path):
    """d + f(d, g): with f = 0 the output is the first input channel; L1 training on a fixed
    batch of (degraded, guidance) -> target pairs lowers the loss."""
    spec = RegressionUNetSpec(in_channels=2, out_channels=1, features=TINY_FEATURES,
                              image_size=32)
    objective = RegressionUNet(RegressionOptions(source=("low", "mr"), target="image"), spec,
                               DataConfig(), _cfg(tmp_path))
    net = objective.networks()["model"]
    for p in net.net.parameters():
        nn.init.zeros_(p)
    items = {"low": _blobs(8, 32), "mr": _blobs(8, 32, seed=1), "image": _blobs(8, 32, seed=2)}
    assert torch.equal(net(torch.cat([items["low"], items["mr"]], 1)), items["low"])
    before, after = _learns(objective, items, tmp_path, steps=12, lr=1e-2)
    assert after < 0.7 * before
    with pytest.raises(ConfigError, match="names 1 item"):
        RegressionUNet(RegressionOptions(source="low"), spec, DataConfig(), _cfg(tmp_path))
    with pytest.raises(ConfigError, match="1 <= out_channels <= in_channels"):
        RegressionUNetSpec(in_channels=1, out_channels=2)


def test_corruptions_do_what_they_claim():
    x = _blobs(4, 32, seed=2)
    gen = torch.Generator().manual_seed(0)
    out = {k: corrupt(x, torch.full((4,), i), gen) for i, k in enumerate(KINDS)}
    tv = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert torch.equal(out["clean"], x) and tv(out["blur"]) < 0.9 * tv(x)
    assert tv(out["noise"]) > 1.2 * tv(x) and 0 <= out["noise"].min() <= out["noise"].max() <= 1
    assert not torch.equal(out["shuffle"], x)
    assert torch.equal(out["shuffle"].flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_feature_encoder_trains_with_its_heads_jointly(tmp_path):
    objective = FeatureEncoderObjective(FeatureEncoderOptions(), FeatureEncoderSpec(),
                                        DataConfig(), _cfg(tmp_path))
    items = {"image": _blobs(8, 32), "contrast": torch.arange(8) % 4,
             "section": 40 + 10 * torch.arange(8)}
    nets = objective.networks()
    assert set(nets) == {"model", "heads"}
    cfg = _cfg(tmp_path, steps=3, batch_size=8)
    trainer = Trainer(nets, objective.updates(), Fixed(items), cfg)
    heads0 = {k: v.clone() for k, v in nets["heads"].state_dict().items()}
    trainer.fit()
    assert all(not torch.equal(heads0[k], v) for k, v in nets["heads"].state_dict().items())


# ------------------------------------------------------------------------------ adversarial
def test_gan_losses_of_perfect_and_chance_discriminators():
    big = torch.full((2, 1, 3, 3), 30.0)
    assert float(discriminator_loss(big, -big, "nonsaturating")) == pytest.approx(
        2 * math.log1p(math.exp(-30.0)), rel=1e-6)  # perfect: ~0
    zero = torch.zeros(2, 1, 3, 3)
    assert float(discriminator_loss(zero, zero, "nonsaturating")) == pytest.approx(
        2 * math.log(2.0))  # chance: 2 log 2 (Goodfellow et al. 2014, Thm. 1: -log 4)
    assert float(discriminator_loss(torch.full_like(zero, 1.5), -torch.ones_like(zero),
                                    "hinge")) == 0.0  # margins met
    assert float(generator_loss(-big, "nonsaturating")) == pytest.approx(30.0, rel=1e-6)
    assert float(generator_loss(torch.full_like(zero, 2.0), "hinge")) == -2.0


def _adversarial(tmp_path: Path, name: str, **cfg) -> Adversarial:
    options = AdversarialOptions(base="recon-unet", weight=0.1,
                                 discriminator=DiscriminatorSpec(in_channels=4, channels=(8, 16),
                                                                 image_size=32))
    spec = ReconUNetSpec(modality="mri", features=TINY_FEATURES, image_size=32)
    return Adversarial(options, spec, DataConfig(dataset="complex_brain_slices"),
                       _cfg(tmp_path, name, **cfg))


def test_discriminator_input_channels_are_checked(tmp_path):
    options = AdversarialOptions(discriminator=DiscriminatorSpec(in_channels=1, image_size=32))
    with pytest.raises(ConfigError, match="in_channels must be 4"):
        Adversarial(options, ReconUNetSpec(features=TINY_FEATURES, image_size=32),
                    DataConfig(dataset="complex_brain_slices"), _cfg(tmp_path))


class Killed(RuntimeError):
    pass


def _adversarial_trainer(tmp_path: Path, name: str, kill_at: int | None = None,
                         **cfg) -> Trainer:
    objective = _adversarial(tmp_path, name, **{"steps": 6, "ckpt_every": 3, "ema_decay": 0.5,
                                                **cfg})
    updates = objective.updates()
    if kill_at is not None:
        calls, real = {"n": 0}, updates[1].loss

        def dies(nets, batch, g, step):
            calls["n"] += 1
            if calls["n"] == kill_at:
                raise Killed("simulated kill")
            return real(nets, batch, g, step)
        updates[1] = replace(updates[1], loss=dies)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = objective.networks()
    clean = torch.cat([_blobs(16, 32), torch.zeros(16, 1, 32, 32)], 1)
    return Trainer(nets, updates, Fixed({"image": clean}), objective.train)


@pytest.mark.parametrize("bf16", [False, True])
def test_two_network_resume_is_bit_identical(tmp_path, bf16):
    straight = _adversarial_trainer(tmp_path, "a", bf16=bf16)
    straight.fit()
    with pytest.raises(Killed):  # dies in step 5's discriminator update (checkpoint: step 3)
        _adversarial_trainer(tmp_path, "b", kill_at=5, bf16=bf16).fit()
    resumed = _adversarial_trainer(tmp_path, "b", bf16=bf16)
    summary = resumed.fit(resume=True)
    assert summary["start_step"] == 3 and summary["steps"] == 6
    for name in ("model", "discriminator"):
        for a, b in ((straight.models[name].state_dict(), resumed.models[name].state_dict()),
                     (straight.emas[name].state_dict(), resumed.emas[name].state_dict())):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        opt_a = straight.optimizers[name].state_dict()["state"]
        opt_b = resumed.optimizers[name].state_dict()["state"]
        assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    assert list(straight.history) == list(resumed.history)
    d0 = PatchDiscriminator(DiscriminatorSpec(in_channels=4, channels=(8, 16), image_size=32))
    assert d0(torch.zeros(2, 4, 32, 32)).shape == (2, 1, 7, 7)  # 32 -> 16 -> 8 -> 7 patches


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    as_rank(rank, port)
    torch.set_num_threads(1)
    trainer = _adversarial_trainer(Path(out_dir), "ddp", steps=3)
    trainer.fit()
    for name, net in trainer.models.items():
        save_file(net.state_dict(), f"{out_dir}/{name}.rank{rank}.safetensors")
    trainer.close()


def test_two_networks_stay_synchronised_under_ddp(tmp_path):
    mp.start_processes(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2,
                       start_method="fork")
    start = _adversarial_trainer(tmp_path, "init").models
    for name in ("model", "discriminator"):
        r0, r1 = (load_file(str(tmp_path / f"{name}.rank{r}.safetensors")) for r in (0, 1))
        assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
        assert any(not torch.equal(r0[k], v) for k, v in start[name].state_dict().items())
    assert load_checkpoint(tmp_path / "ddp").others["discriminator"].optimizer["state"]


# ------------------------------------------------------------------------------ run + export
def _run_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"""
objective: {{name: diffusion}}
model:
  net: {{channels: [8, 16], attention_levels: [false, true], norm_num_groups: 8,
        num_head_channels: 8}}
  image_size: 16
data: {{length: 16, contrasts: [T1w]}}
train: {{steps: 4, out_dir: {tmp_path / 'out'}, batch_size: 4, ckpt_every: 2, ema_decay: 0.5,
        lr: 0.001, lr_schedule: cosine, warmup_steps: 1}}
card: {{summary: tiny prior, intended_use: tests, limits: none}}
""")
    return path


def test_export_round_trip_reproduces_outputs_and_writes_the_card(tmp_path):
    cfg = load_run_config(_run_yaml(tmp_path))
    assert train(cfg)["steps"] == 4
    assert (tmp_path / "out" / "config.yaml").is_file()
    json_path = export(tmp_path / "out", "tiny", tmp_path / "zoo")
    stored = load(json_path)
    run = load(tmp_path / "out")  # the run dir: its averaged weights in float32
    assert stored.kind == "diffusion" and stored.spec == cfg.model
    assert stored.card["training"]["steps"] == 4 and "val_loss" in stored.card["validation"]
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    torch.manual_seed(cfg.train.seed)  # the start weights, rebuilt as training began
    start = build("diffusion", cfg.model).state_dict()
    kept = load_file(str(tmp_path / "out" / "start.safetensors"))
    assert all(torch.equal(kept[k], v) for k, v in start.items())
    share = 0.5 ** 4  # ema_decay ** steps: the start's share in the run's EMA
    ema = load_file(str(tmp_path / "out" / "ckpt" / "last" / "ema.safetensors"))
    expected = {k: ((v - share * start[k]) / (1 - share) if v.is_floating_point() else v)
                for k, v in ema.items()}
    averaged = run.net.state_dict()
    assert all(torch.allclose(averaged[k], v, atol=1e-6) for k, v in expected.items())
    run.net.load_state_dict({k: v.half().float() for k, v in averaged.items()})  # fp16 store
    assert torch.equal(stored.net(x, t), run.net(x, t))
    text = (tmp_path / "zoo" / "tiny.md").read_text()
    assert text.startswith("# tiny\n") and "- **Training**: 4 steps, batch 4" in text
    assert "| val_loss |" in text and "**Intended use**: tests" in text


def test_card_markdown_flattens_metrics_and_extra_tables():
    card = {"summary": "s", "training": {"steps": 3, "batch_size": 2, "lr": 0.1,
                                         "wall_time_s": 60.0, "final_loss": 0.5},
            "validation": {"t=0": {"auroc": 0.9}}, "realism_fd_medenc": {"real": 1.0}}
    text = card_markdown("m", card)
    assert "| t=0.auroc | 0.9 |" in text and "## realism_fd_medenc" in text
    assert "wall time 1.0 min" in text
