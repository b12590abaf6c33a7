"""The CLI: outputs match the API, bad input is one line with exit code 2 and writes nothing."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from meddiff import api
from meddiff.data.readers import load_image
from meddiff.data.writers import save_nifti
from meddiff.methods import registry
from conftest import run_cli as _run
from meddiff.cli import main




def test_sample_writes_grid_and_nifti_equal_to_the_api(tiny, tmp_path, capsys):
    code, out, _ = _run(capsys, "sample", "--model", tiny, "--n", 3, "--steps", 4, "--seed", 5,
                        "--out", tmp_path, "--device", "cpu")
    assert code == 0 and "samples.png" in out
    ref = api.sample(api.load_model(tiny, "cpu"), n=3, steps=4, seed=5)
    for i in range(3):
        img = load_image(tmp_path / f"sample_{i:03d}.nii.gz").array
        assert np.allclose(img, ref[i, 0].numpy(), atol=1e-6)
    assert (tmp_path / "samples.png").stat().st_size > 1000


def test_denoise_keeps_geometry_of_a_volume(tiny, tmp_path, capsys):
    vol = np.random.default_rng(0).random((16, 16, 4)).astype(np.float32) * 300
    affine = np.diag([1.5, 1.5, 4.0, 1.0])
    src = save_nifti(tmp_path / "in.nii.gz", vol, affine)
    code, out, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                          "--out", tmp_path / "out.nii.gz")
    assert code == 0, err
    res = load_image(tmp_path / "out.nii.gz")
    assert res.array.shape == vol.shape and np.allclose(res.affine, affine)
    assert (tmp_path / "out.png").exists()


def _raw_nifti(path, arr):
    """Write with nibabel directly (meddiff's writer refuses NaN)."""
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("make_input,message", [
    (lambda d: d / "missing.nii.gz", "no such file"),
    (lambda d: _raw_nifti(d / "nan.nii.gz", np.full((16, 16), np.nan, np.float32)), "NaN"),
    (lambda d: (d / "cut.nii.gz").write_bytes(
        gzip.compress(save_nifti(d / "ok.nii", np.ones((16, 16, 2), np.float32)).read_bytes()[:400]))
        and d / "cut.nii.gz", "cut.nii.gz"),
])
def test_bad_inputs_are_one_line_and_write_nothing(tiny, tmp_path, capsys, make_input, message):
    src = make_input(tmp_path)
    target = tmp_path / "result.nii.gz"
    code, out, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                          "--out", target)
    assert code == 2 and message in err and err.startswith("meddiff: error:")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not target.exists() and not target.with_name("result.png").exists()


def test_unknown_model_and_bad_options_exit_2(tmp_path, capsys):
    code, _, err = _run(capsys, "sample", "--model", "nope", "--out", tmp_path / "s")
    assert code == 2 and "unknown model 'nope'" in err and not (tmp_path / "s").exists()
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--n", "many", "--out", str(tmp_path)])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: 1, out_dir: x, lr: fast}\n")
    code, _, err = _run(capsys, "train", bad)
    assert code == 2 and "train.lr: expected float" in err


def test_methods_table_lists_the_27_systems_and_every_registered_method(capsys):
    code, out, _ = _run(capsys, "methods", "--json")
    table = json.loads(out)
    rows = table["systems"]
    assert code == 0 and len(rows) == 27 == len({r["id"] for r in rows})
    assert {r["id"][0] for r in rows} == set("SRCPTDG")
    assert [s.id for s in registry.SYSTEMS] == [r["id"] for r in rows]
    for r in rows:  # works iff a registered method carries the ID
        assert (r["status"] == "works") == bool(r["methods"]), r
        assert r["status"] == "works" or r["status"].startswith("planned")
    listed = {(m["family"], m["method"]) for m in table["methods"]}
    for family in registry.FAMILIES:
        assert {(family, name) for name in api.method_choices(family)} <= listed
    code, text, _ = _run(capsys, "methods")
    assert code == 0 and "15 of 27 systems work today" in text and "score-mri" in text


def test_entry_point_runs_as_a_program(tmp_path):
    res = subprocess.run([sys.executable, "-m", "meddiff.cli", "sample", "--model", "nope", "--out",
                          str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().startswith("meddiff: error: unknown model")
    assert "Traceback" not in res.stderr


def test_models_lists_every_bundled_network_with_its_parameter_count(capsys):
    from safetensors.torch import load_file

    from meddiff.zoo.catalogue import WEIGHTS_DIR

    code, out, _ = _run(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {p.stem for p in WEIGHTS_DIR.glob("*.safetensors")}
    for path in WEIGHTS_DIR.glob("*.safetensors"):
        n = sum(t.numel() for t in load_file(path).values())
        assert rows[path.stem]["parameters"] == f"{n / 1e6:.2f} M"
    assert {"brain-prior-64", "ct-prior-64", "feature_encoder"} <= set(rows)
    code, text, _ = _run(capsys, "models")
    assert code == 0 and text.splitlines()[0].split()[:2] == ["name", "kind"]
