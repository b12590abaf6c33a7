"""Model cards state their terms (intended use, limits, licence; never for clinical use) and the
input contract (image size, pixel size, orientation, value range) of the model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from meddiff.train.cards import DEFAULT_LICENCE, NOT_CLINICAL, card_markdown, rewrite_cards
from meddiff.zoo.catalogue import CARDS_DIR, WEIGHTS_DIR
from meddiff.zoo.contract import NOT_RECORDED, input_contract

CONTRACT = ("Image size", "Pixel size", "Orientation", "Value range")
TERMS = ("Intended use", "Limits", "Licence")
BUNDLED = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _spec(**data: str) -> dict:
    return {"net": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [8, 16]},
            "parametrization": "eps", "image_size": 16, "intensity": "unit",
            "condition": "none", "autoencoder": None, "data": data, "slice_sizes": []}


def test_a_bare_card_gets_default_terms_and_the_input_contract_of_its_spec():
    spec = _spec(summary="my scans", intensity="percentiles 1-99 -> [0, 1] -> [-1, 1]",
                 size="16 px", pixel_size="1.0 mm", orientation="axial, radiological")
    text = card_markdown("m", {"summary": "s"}, spec)
    for title in TERMS:
        assert f"- **{title}**: " in text
    assert NOT_CLINICAL in text.split("- **Limits**: ")[1].splitlines()[0]
    assert DEFAULT_LICENCE in text
    contract = _section(text, "Input contract")
    for what in CONTRACT:
        assert f"- **{what}**: " in contract
    assert "16 x 16 px" in contract and "- **Pixel size**: 1.0 mm" in contract
    assert "- **Orientation**: axial, radiological" in contract
    assert "percentiles 1-99 -> [0, 1] -> [-1, 1]" in contract
    # no spec, no contract (the old call form still works)
    assert "## Input contract" not in card_markdown("m", {"summary": "s"})


def test_limits_that_do_not_say_so_end_with_not_for_clinical_use():
    text = card_markdown("m", {"summary": "s", "limits": "blurred outputs."})
    assert "- **Limits**: blurred outputs; not for clinical use" in text
    kept = card_markdown("m", {"summary": "s", "limits": "one anatomy; not for clinical use"})
    assert "- **Limits**: one anatomy; not for clinical use\n" in kept


def test_the_contract_derives_what_the_spec_data_leave_out():
    unknown = dict(input_contract(_spec(summary="my own scans")))
    assert unknown["Pixel size"] == NOT_RECORDED and unknown["Orientation"] == NOT_RECORDED
    assert unknown["Value range"].startswith("image space [0, 1] -> model space [-1, 1]")
    native = _spec(summary="simulated brain MRI slices: MNI152 anatomy")
    native["image_size"], native["slice_sizes"] = 64, [64, 128, 256]
    rows = dict(input_contract(native))
    assert rows["Pixel size"].startswith("0.74-2.95 mm")        # 189 mm over 256 / 64 px
    assert rows["Orientation"].startswith("axial")
    assert "slices of 64-256 px" in rows["Image size"] and "above 512 px" in rows["Image size"]
    latent = _spec(space="latents of ae (3 x 16^2)")
    latent["autoencoder"] = "ae"
    rows = dict(input_contract(latent))
    assert "ae" in rows["Pixel size"] and "latents of ae" in rows["Value range"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_cards_are_the_writers_output_with_terms_and_contract(name):
    doc = json.loads((WEIGHTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    text = (CARDS_DIR / f"{name}.md").read_text(encoding="utf-8")
    assert text == card_markdown(name, doc["card"], doc["spec"]), \
        f"regenerate with: python -m meddiff.train.cards {name}"
    for title in TERMS:
        assert f"- **{title}**: " in text
    assert NOT_CLINICAL in text
    contract = _section(text, "Input contract")
    for what in CONTRACT:
        assert f"- **{what}**: " in contract


def test_rewrite_cards_writes_markdown_from_the_json_documents_only(tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()}
    written = rewrite_cards(WEIGHTS_DIR, tmp_path, names=["brain-prior-64"])
    assert written == [tmp_path / "brain-prior-64.md"]
    assert written[0].read_text() == (CARDS_DIR / "brain-prior-64.md").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()} == before


def test_export_writes_the_contract_and_default_limits(tmp_path, one_thread):
    from meddiff.train.run import export, load_run_config, train

    (tmp_path / "run.yaml").write_text(f"""
model:
  net: {{channels: [8, 16], attention_levels: [false, false], norm_num_groups: 8,
        num_head_channels: 8}}
  image_size: 16
  data: {{summary: "simulated brain MRI slices: MNI152 anatomy", size: "16 px",
          intensity: "image space [0, 1] -> model space [-1, 1]"}}
data: {{length: 8, contrasts: [T1w]}}
train: {{steps: 1, out_dir: {tmp_path / 'out'}, batch_size: 4, device: cpu}}
card: {{summary: tiny prior}}
""")
    cfg = load_run_config(tmp_path / "run.yaml")
    train(cfg)
    export(tmp_path / "out", "tiny", tmp_path / "zoo")
    text = Path(tmp_path / "zoo" / "tiny.md").read_text()
    assert "- **Limits**: " in text and NOT_CLINICAL in text
    contract = _section(text, "Input contract")
    assert "- **Image size**: 16 x 16 px" in contract
    assert "- **Pixel size**: 11.81 mm" in contract            # 189 mm over 16 px
    assert "- **Value range**: image space [0, 1] -> model space [-1, 1]" in contract
