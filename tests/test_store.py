"""The one model store: round trips for every kind, fp16 storage, refusals, the catalogue."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from meddiff.errors import ConfigError, InputError
from meddiff.zoo import catalogue, store
from meddiff.zoo.contract import NOT_RECORDED
from meddiff.zoo.kinds import (KINDS, AutoencoderSpec, ClassifierSpec, DiffusionSpec,
                               FeatureEncoderSpec, ReconUNetSpec, RegressionUNetSpec, SegUNetSpec,
                               kind_of)
from meddiff.nets.autoencoder import AEConfig
from meddiff.nets.classifier import ClassifierConfig
from meddiff.nets.discriminator import DiscriminatorSpec
from meddiff.nets.unet import preset
from tiny_model import TINY, save_tiny

SMALL = (4, 8, 8, 8, 8, 4)
SPECS = {
    "diffusion": TINY,
    "classifier": ClassifierSpec(net=ClassifierConfig(image_size=16, channels=(8, 8),
                                                      attention_levels=(False, False),
                                                      norm_num_groups=4, num_head_channels=8)),
    "autoencoder": AutoencoderSpec(net=AEConfig(channels=(8, 8), latent_channels=2,
                                                norm_num_groups=4), image_size=16,
                                   latent_scale=0.5),
    "recon-unet": ReconUNetSpec(modality="mri", features=SMALL, image_size=32),
    "regression-unet": RegressionUNetSpec(in_channels=2, features=SMALL, image_size=32),
    "seg-unet": SegUNetSpec(features=SMALL, image_size=32),
    "feature-encoder": FeatureEncoderSpec(),
    "discriminator": DiscriminatorSpec(in_channels=1, channels=(8, 8), image_size=16),
}


def _probe(kind: str, net: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    size = 32 if kind.endswith("unet") else 16  # BasicUNet halves four times
    channels = 2 if kind in ("recon-unet", "regression-unet") else 1
    x = torch.rand(2, channels, size, size, generator=g) * 2 - 1
    with torch.no_grad():
        if kind in ("diffusion", "classifier"):
            return net(x, torch.tensor([3.0, 700.0]))
        if kind == "autoencoder":
            return net.reconstruct(x)
        return net(x)


def test_every_kind_has_a_round_trip_test():
    assert set(SPECS) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_round_trip_per_kind_fp32_exact_fp16_close(tmp_path, kind):
    spec = SPECS[kind]
    assert kind_of(spec) == kind
    torch.manual_seed(0)
    net = store.build(kind, spec).eval()
    with torch.no_grad():  # no zero-initialised layers: every weight matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = _probe(kind, net)
    exact = store.load(store.save(tmp_path / "a", net, spec, {"x": 1}, fp16=False), kind=kind)
    assert exact.spec == spec and exact.card == {"x": 1} and exact.kind == kind
    assert torch.equal(_probe(kind, exact.net), ref)
    assert not any(p.requires_grad for p in exact.net.parameters())
    half_path = store.save(tmp_path / "b", net, spec, fp16=True)
    doc = json.loads(half_path.read_text())
    assert doc["dtype"] == "float16" and doc["format"] == catalogue.FORMAT
    half = store.load(half_path)
    assert next(half.net.parameters()).dtype == torch.float32  # fp16 on disk, fp32 in memory
    err = float((_probe(kind, half.net) - ref).norm() / ref.norm())
    assert 0 < err < 2e-3  # float16 has an 11-bit significand: ~5e-4 relative per weight
    assert half_path.with_suffix(".safetensors").stat().st_size < \
        0.6 * (tmp_path / "a.safetensors").stat().st_size


def test_load_diffusion_gives_a_ready_denoiser(tmp_path):
    path = save_tiny(tmp_path)
    a, b = store.load_diffusion(path), store.load_diffusion(path.with_suffix(".safetensors"))
    assert a.spec == TINY and a.card == {"parameters": "tiny"} and a.name == "tiny"
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    assert torch.equal(a.denoiser.net_output(x, t), b.denoiser.net_output(x, t))


def test_refusals_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="unknown model 'no-such-model'; bundled models: .*brain-prior-64"):
        store.load("no-such-model")
    path = save_tiny(tmp_path)
    with pytest.raises(InputError, match="tiny is a diffusion model, not a classifier"):
        store.load(path, kind="classifier")
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(InputError, match="unreadable weights"):
        store.load(path)
    other = save_tiny(tmp_path, "other")
    doc = json.loads(other.read_text())
    doc["spec"]["net"]["channels"] = [16, 32]  # does not match the saved tensors
    other.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="do not match the architecture"):
        store.load(other)
    doc["spec"]["net"]["chanels"] = doc["spec"]["net"].pop("channels")
    other.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="chanels"):
        store.load(other)
    doc["format"] = "something-else"
    other.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not a meddiff model"):
        store.load(other)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="not a meddiff model"):
        store.load(tmp_path / "x.txt")


def test_spec_rules():
    with pytest.raises(ConfigError, match="concat-conditioned"):
        DiffusionSpec(net=preset("tiny"), image_size=16, condition="concat")
    with pytest.raises(ConfigError, match="num_class_embeds"):
        DiffusionSpec(net=preset("tiny"), image_size=16, condition="class")
    with pytest.raises(ConfigError, match="unknown model kind 'gan'"):
        store.build("gan", None)


def test_bundled_models_load_and_the_catalogue_reads_them_without_torch():
    names = catalogue.bundled()
    assert {"brain-prior-64", "ct-prior-64", "anoddpm-64", "latent-ddpm-64", "latent-ae-64",
            "seg-ddpm-64", "seg-unet-64", "lesion-classifier-64", "recon-unet-mri-64",
            "recon-unet-ct-64", "feature_encoder"} <= set(names)
    rows = {r["name"]: r for r in catalogue.catalogue()}
    assert rows["brain-prior-64"]["parameters"] == "2.73 M"
    assert rows["latent-ddpm-64"]["image_size"] == "16 (latent)"
    for name in names:
        stored = store.load(name)
        n = sum(p.numel() for p in stored.net.parameters()) + \
            sum(b.numel() for b in stored.net.buffers())
        assert rows[name]["parameters"] == f"{n / 1e6:.2f} M", name
        assert rows[name]["dtype"] == "float16" and rows[name]["steps"], name
    ae = store.load("latent-ae-64").spec
    assert store.load("latent-ddpm-64").spec.autoencoder == "latent-ae-64"
    assert store.load("latent-ddpm-64").card["latent_scale"] == pytest.approx(ae.latent_scale)
    code = ("import sys, json; from meddiff.zoo.catalogue import catalogue; rows = catalogue(); "
            "print(json.dumps([len(rows), 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [len(names), False]


def test_a_model_without_a_markdown_card_gets_the_contract_its_card_would_state(tmp_path):
    """No markdown card: the contract is the cards' derivation from the spec (not a second,
    cruder one); a card beside ``NAME.json`` is read back instead and wins."""
    from meddiff.train.cards import write_card

    path = save_tiny(tmp_path, "mine")
    info = catalogue.contract(path)
    assert info["name"] == "mine" and info["kind"] == "diffusion" and info["card"] == ""
    rows = info["contract"]
    assert list(rows) == ["Image size", "Channels", "Pixel size", "Orientation", "Value range"]
    assert rows["Image size"] == ("16 x 16 px (trained on 16 px; other sizes are padded to a "
                                  "multiple of 2, and meddiff warns below 8 or above 32 px)")
    assert rows["Channels"] == "1"
    assert rows["Pixel size"] == rows["Orientation"] == NOT_RECORDED
    assert rows["Value range"].startswith("image space [0, 1] -> model space [-1, 1]; "
                                          "meddiff's readers map")
    doc = json.loads(path.read_text())
    write_card(path.with_suffix(".md"), "mine", doc["card"], doc["spec"])
    carded = catalogue.contract(path)
    assert carded["contract"] == rows and carded["card"] == str(path.with_suffix(".md"))
    path.with_suffix(".md").write_text("# mine\n\n## Input contract\n\n- **Image size**: 99 px\n")
    assert catalogue.contract(path)["contract"] == {"Image size": "99 px"}
