"""Bad and odd inputs (issue #10, items 4 and 5): nothing lost, nothing blown up, help that
teaches. Every test writes its offending input itself; every refusal is one line, exit code 2,
before any work and without touching a file."""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import warnings

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from meddiff import api
from meddiff.cli import VERBS, build_parser, main
from meddiff.cli.common import MAX_SAMPLES
from meddiff.data.checks import MAX_VOXELS
from meddiff.data.kspace_io import load_kspace
from meddiff.data.readers import load_image
from meddiff.data.writers import all_or_nothing, save_nifti, save_png
from meddiff.errors import ConfigError, InputError
from meddiff.tasks.outputs import check_outputs, output_paths
from meddiff.train.run import load_run_config, train
from meddiff.zoo.store import load, load_diffusion
from tiny_model import save_tiny

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only folders


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("model")))


def _run(capsys, *argv):
    """``meddiff ARGV`` -> (exit code, stdout, stderr); argparse's exits included."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code, err, message):
    assert code == 2, err
    assert err.startswith("meddiff: error:") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err


def _scan(path, shape=(16, 16, 2)):
    vol = np.random.default_rng(0).random(shape).astype(np.float32) * 100
    return save_nifti(path, vol)


# ------------------------------------------------------------------------------ 1. outputs
def test_out_equal_to_input_is_refused_even_with_overwrite(tiny, tmp_path, capsys):
    src = _scan(tmp_path / "scan.nii.gz")
    before = src.read_bytes()
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                        "--out", src, "--overwrite")
    _refused(code, err, "an output would replace the input")
    assert src.read_bytes() == before


def test_the_png_panel_never_replaces_a_png_input(tiny, tmp_path, capsys):
    src = save_png(tmp_path / "scan.png", np.random.default_rng(1).random((16, 16)))
    before = src.read_bytes()
    for verb in (["denoise", "--sigma", 0.1], ["reconstruct", "--method", "zero-filled"]):
        code, _, err = _run(capsys, *verb, "--input", src, "--model", tiny,
                            "--out", tmp_path / "scan.nii.gz", "--overwrite")
        _refused(code, err, "an output would replace the input")
    assert src.read_bytes() == before and not (tmp_path / "scan.nii.gz").exists()


@pytest.mark.parametrize("argv,existing", [
    (["sample", "--out", "{d}/s"], "s/samples.png"),
    (["denoise", "--input", "{src}", "--sigma", "0.1", "--out", "{d}/o.nii.gz"], "o.png"),
    (["reconstruct", "--input", "{src}", "--out", "{d}/o.nii.gz"], "o_std.nii.gz"),
    (["detect", "--method", "anoddpm", "--input", "{src}", "--out", "{d}/o.nii.gz"],
     "o_overlay.png"),
    (["segment", "--input", "{src}", "--out", "{d}/o.nii.gz"], "o_var.nii.gz"),
    (["demo", "--out", "{d}/demo"], "demo/metrics.json"),
])
def test_an_existing_output_is_refused_before_any_work(tmp_path, capsys, argv, existing):
    src = _scan(tmp_path / "in.nii.gz")
    target = tmp_path / existing
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"keep me")
    filled = [a.format(d=tmp_path, src=src) for a in argv]
    # the model does not exist: the output check comes first, before any model is loaded
    code, _, err = _run(capsys, *filled, "--model", "no-such-model", "--device", "cpu")
    _refused(code, err, f"{target}: exists; pass --overwrite to replace it")
    assert target.read_bytes() == b"keep me"
    code, _, err = _run(capsys, *filled, "--model", "no-such-model", "--overwrite")
    _refused(code, err, "unknown model 'no-such-model'")  # --overwrite: on to the next check


def test_overwrite_replaces_and_the_api_refuses_by_default(tiny, tmp_path, capsys):
    src = _scan(tmp_path / "in.nii.gz")
    out = tmp_path / "o.nii.gz"
    out.write_bytes(b"old")
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        api.denoise_file(src, out, 0.1, model=tiny, device="cpu")
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                        "--out", out, "--device", "cpu", "--overwrite")
    assert code == 0, err
    assert load_image(out).array.shape == (16, 16, 2) and (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------------ 2. declared sizes
def _nifti_header(shape, dtype=np.float32) -> bytes:
    """A NIfTI-1 header (348 bytes + extension flag) declaring ``shape``, without data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def test_a_nifti_header_declaring_8_gb_is_refused_before_reading(tmp_path):
    raw = tmp_path / "huge.nii"
    raw.write_bytes(_nifti_header((2048, 2048, 512)))  # 8 GiB of float32
    with pytest.raises(InputError, match="declares a 2048x2048x512 array"):
        load_image(raw)
    small = tmp_path / "tiny.nii.gz"
    small.write_bytes(gzip.compress(_nifti_header((2048, 2048, 512))))
    assert small.stat().st_size < 200
    with pytest.raises(InputError, match="more than meddiff reads at once"):
        load_image(small)


def test_a_small_gzip_of_a_1024_cubed_volume_is_refused_before_inflating(tmp_path):
    path = tmp_path / "cube.nii.gz"
    with gzip.open(path, "wb") as fh:  # the header and the first 4 MiB of zeros of 1 GiB
        fh.write(_nifti_header((1024, 1024, 1024), np.uint8) + bytes(4 << 20))
    assert 1024 ** 3 > MAX_VOXELS
    with pytest.raises(InputError, match="1024x1024x1024"):
        load_image(path)


def test_a_nifti_or_npy_holding_less_data_than_declared_is_truncated(tmp_path):
    nii = tmp_path / "short.nii"
    nii.write_bytes(_nifti_header((64, 64, 64)) + bytes(1000))
    with pytest.raises(InputError, match="truncated: the NIfTI header declares 1,048,576 bytes"):
        load_image(nii)
    npy = tmp_path / "huge.npy"
    with open(npy, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (4096, 4096, 4096)})
    with pytest.raises(InputError, match="the NPY header declares a 4096x4096x4096 array"):
        load_image(npy)


def test_a_tiny_hdf5_declaring_a_huge_kspace_is_refused(tmp_path):
    path = tmp_path / "k.h5"
    with h5py.File(path, "w") as h5:  # no data written: HDF5 allocates nothing
        h5.create_dataset("kspace", shape=(64, 32, 640, 640), dtype=np.complex64)
    assert path.stat().st_size < 100_000
    with pytest.raises(InputError, match="the HDF5 dataset 'kspace' declares"):
        load_kspace(path)
    assert load_kspace(path, slices=0).kspace.shape == (1, 32, 640, 640)  # one slice fits


def _model_json(tmp_path, name, edit):
    path = save_tiny(tmp_path, name)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


def _set_net(**values):
    return lambda doc: doc["spec"]["net"].update(values)


@pytest.mark.parametrize("edit,message", [
    (_set_net(channels=[16, 1048576], attention_levels=[False, False]),
     "spec.net.channels[1]: 1048576 is outside [1, 4096]"),
    (_set_net(channels=[4096] * 4, attention_levels=[False] * 4), "M parameters, more than"),
    (lambda doc: doc["spec"].update(num_steps=10 ** 9), "spec.num_steps: 1000000000 is outside"),
])
def test_a_model_declaring_a_huge_network_is_refused_before_building(tmp_path, capsys, edit,
                                                                    message):
    path = _model_json(tmp_path, "huge", edit)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path)
    code, _, err = _run(capsys, "sample", "--model", path, "--out", tmp_path / "s")
    _refused(code, err, message)


# ------------------------------------------------------------------------------ 3. numbers
@pytest.mark.parametrize("argv,message", [
    (["segment", "--input", "x.nii.gz", "--out", "o.nii.gz", "--samples", "1000000"],
     f"--samples must be <= {MAX_SAMPLES}, got 1000000"),
    (["reconstruct", "--input", "x.nii.gz", "--out", "o.nii.gz", "--coils", "100000"],
     "--coils must be <= 64"),
    (["reconstruct", "--input", "x.nii.gz", "--out", "o.nii.gz", "--modality", "ct", "--views",
      "100000"], "--views must be <= 4096"),
    (["sample", "--out", "s", "--steps", "1000000000"], "--steps must be <= 10000"),
    (["sample", "--out", "s", "--n", "1e6"], "--n must be an integer, got '1e6'"),
    (["detect", "--method", "anoddpm", "--input", "x", "--out", "o.nii.gz", "--smooth", "nan"],
     "--smooth must be a finite number, got 'nan'"),
    (["denoise", "--input", "x", "--out", "o.nii.gz", "--sigma", "nan"],
     "--sigma must be a finite number"),
    (["reconstruct", "--input", "x", "--out", "o.nii.gz", "--noise-std", "nan"],
     "--noise-std must be a finite number"),
    (["reconstruct", "--input", "x", "--out", "o.nii.gz", "--acceleration", "inf"],
     "--acceleration must be a finite number"),
    (["sample", "--out", "s", "--seed", "-1"], "--seed must be >= 0, got -1"),
])
def test_counts_are_bounded_and_floats_finite(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    _refused(code, err, message)


@pytest.mark.parametrize("yaml,message", [
    ("data: {length: 100000000}", "data.length: 100000000 is outside [1, 16777216]"),
    ("model: {net: {channels: [16, 65536], attention_levels: [false, false]}}",
     "model.net.channels[1]: 65536 is outside [1, 4096]"),
    ("train: {steps: 1, out_dir: x, lr: .nan}", "train.lr: expected a finite number"),
    ("model: {net: {norm_num_groups: 0}}", "model.net: invalid values (ZeroDivisionError"),
])
def test_training_sizes_are_bounded(tmp_path, yaml, message):
    text = yaml if yaml.startswith("train") else f"train: {{steps: 1, out_dir: x}}\n{yaml}"
    (tmp_path / "r.yaml").write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(tmp_path / "r.yaml")
    assert message in str(err.value) and str(err.value).startswith(str(tmp_path / "r.yaml"))


# ------------------------------------------------------------------------------ 4. output paths
def test_out_png_is_refused_instead_of_losing_the_volume(tiny, tmp_path, capsys):
    src = _scan(tmp_path / "in.nii.gz")
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                        "--out", tmp_path / "x.png")
    _refused(code, err, "must be a NIfTI file name")
    assert not (tmp_path / "x.png").exists()


def test_outputs_whose_folder_cannot_be_written_are_refused_before_work(tmp_path, capsys):
    src = _scan(tmp_path / "in.nii.gz")
    (tmp_path / "file").write_text("not a folder")
    code, _, err = _run(capsys, "segment", "--input", src, "--model", "no-such-model",
                        "--out", tmp_path / "file" / "sub" / "m.nii.gz")
    _refused(code, err, "cannot create its folder")
    with pytest.raises(InputError, match="two outputs would be written to the same file"):
        check_outputs([tmp_path / "a.nii", tmp_path / "b" / ".." / "a.nii"])
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_outputs(output_paths(tmp_path / "dir.nii.gz"), overwrite=True)


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_work(tmp_path, capsys):
    src = _scan(tmp_path / "in.nii.gz")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1,
                        "--out", locked / "o.nii.gz")
    _refused(code, err, "is not writable")


def test_a_failing_later_output_leaves_no_earlier_one(tiny, tmp_path, monkeypatch, capsys):
    with pytest.raises(RuntimeError), all_or_nothing():
        save_nifti(tmp_path / "first.nii.gz", np.ones((4, 4)))
        raise RuntimeError("the second file cannot be written")
    assert list(tmp_path.iterdir()) == []

    def broken_panel(path, *args, **kwargs):
        raise InputError(f"{path}: cannot write file (disk full)")

    monkeypatch.setattr("meddiff.tasks.denoising.save_panel", broken_panel)
    src = _scan(tmp_path / "in.nii.gz")
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                        "--out", tmp_path / "o.nii.gz", "--device", "cpu")
    _refused(code, err.split("\r")[-1], "disk full")  # after the progress bar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


# ------------------------------------------------------------------------------ 5. one line
@pytest.mark.parametrize("name,edit,message", [
    ("cut", lambda path: path.write_text(path.read_text()[:200]), "unreadable model document"),
    ("nokind", lambda path: _rewrite(path, lambda d: d.pop("kind")), "'kind' is missing"),
    ("weights", lambda path: _rewrite(path, lambda d: d.update(weights=5)),
     "'weights' is of type int, expected str"),
    ("levels", lambda path: _rewrite(path, _set_net(channels=[], attention_levels=[])),
     "invalid values"),
    ("groups", lambda path: _rewrite(path, _set_net(norm_num_groups=0)), "invalid values"),
    ("heads", lambda path: _rewrite(path, _set_net(num_head_channels=0)), "invalid values"),
])
def test_a_malformed_model_json_is_one_line(tmp_path, capsys, name, edit, message):
    path = save_tiny(tmp_path, name)
    edit(path)
    code, _, err = _run(capsys, "sample", "--model", path, "--out", tmp_path / "s")
    _refused(code, err, message)


def _rewrite(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_training_into_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"train: {{steps: 1, batch_size: 2, out_dir: {tmp_path / 'taken'}}}\n"
                   "model: {net: {channels: [8, 16], attention_levels: [false, false], "
                   "norm_num_groups: 8, num_head_channels: 8}, image_size: 16}\n"
                   "data: {length: 4, contrasts: [T1w]}\n")
    code, _, err = _run(capsys, "train", cfg, "--device", "cpu")
    _refused(code, err, "taken")
    assert (tmp_path / "taken").read_text() == "a file"


def test_library_warnings_are_held_back_on_error_and_shown_on_success(monkeypatch, capsys):
    def fails():
        warnings.warn("a library complains", UserWarning)
        raise InputError("the real problem")

    monkeypatch.setattr(api, "models_table", fails)
    code, _, err = _run(capsys, "models")
    _refused(code, err, "the real problem")
    assert "complains" not in err

    def works():
        warnings.warn("a library complains", UserWarning)
        return []

    monkeypatch.setattr(api, "models_table", works)
    code, _, err = _run(capsys, "models", "--json")
    assert code == 0 and "a library complains" in err

    def bug():
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(api, "models_table", bug)
    code, _, err = _run(capsys, "models")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("meddiff: internal error: RuntimeError: something unexpected")


# ------------------------------------------------------------------------------ 6. seeded training
def test_two_trainings_with_one_seed_give_identical_weights(tmp_path, one_thread):
    def run(name: str, seed: int) -> dict:
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"""
model:
  net: {{channels: [8, 16], attention_levels: [false, false], norm_num_groups: 8,
        num_head_channels: 8}}
  image_size: 16
data: {{length: 4, contrasts: [T1w]}}
train: {{steps: 2, out_dir: {tmp_path / name}, batch_size: 2, ema_decay: 0, seed: {seed},
        device: cpu}}
""")
        train(load_run_config(cfg))
        return load_diffusion(tmp_path / name).denoiser.net.state_dict()

    a, b, other = run("a", 7), run("b", 7), run("c", 8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)


# ------------------------------------------------------------------------------ 7. nothing to do
@pytest.mark.parametrize("array,message", [
    (np.zeros((16, 16, 3), np.float32), "the image is constant (all values 0)"),
    (np.full((16, 16), 5.0, np.float32), "the image is constant (all values 5)"),
    (np.random.default_rng(2).random((4, 6)).astype(np.float32), "the image is 4x6 pixels"),
])
def test_constant_and_tiny_images_are_refused(tiny, tmp_path, capsys, array, message):
    src = save_nifti(tmp_path / "in.nii.gz", array)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.read_slices(src, 16)
    for verb in (["denoise", "--sigma", 0.1], ["reconstruct", "--method", "zero-filled"]):
        code, _, err = _run(capsys, *verb, "--input", src, "--model", tiny,
                            "--out", tmp_path / "o.nii.gz", "--device", "cpu")
        _refused(code, err, message)
    assert not (tmp_path / "o.nii.gz").exists()


# ------------------------------------------------------------------------------ help
def _verb_parser(verb: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser(verb)._actions
               if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


@pytest.mark.parametrize("verb", VERBS)
def test_every_option_has_help_showing_its_default_and_a_real_example(verb):
    parser = _verb_parser(verb)
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{verb} {action.dest} has no help"
        shown = parser.formatter_class("x")._get_help_string(action)
        if action.option_strings and action.default is not None and action.default is not False:
            assert "default" in shown, f"{verb} {action.option_strings} hides its default"
    example = text.rstrip().splitlines()[-1].strip()
    assert text.rstrip().splitlines()[-2] == "example:" and example.startswith(f"meddiff {verb}")
    args = build_parser(verb).parse_args(example.split()[1:])  # a real, valid command line
    assert args.command == verb
    has = {o for a in parser._actions for o in a.option_strings}
    assert ("--device" in has) == ("--seed" in has) == (verb not in ("methods", "models"))
    assert ("--overwrite" in has) == (verb in ("sample", "denoise", "reconstruct", "detect",
                                               "segment", "demo", "translate"))


def test_models_name_prints_the_input_contract_without_torch(tmp_path):
    probe = ("import sys, json; from meddiff.cli import main; code = main(sys.argv[1:]); "
             "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))")
    res = subprocess.run([sys.executable, "-c", probe, "models", "brain-prior-64"],
                         capture_output=True, text=True, check=True)
    text, status = res.stdout.rsplit("\n", 2)[0], json.loads(res.stdout.splitlines()[-1])
    assert status == {"code": 0, "torch": False}
    for what in ("Image size", "Channels", "Pixel size", "Orientation", "Value range"):
        assert what in text
    assert "64 x 64 px" in text and "2.95 mm" in text and "axial" in text and "[0, 1]" in text
    own = save_tiny(tmp_path, "mine")  # no markdown card: what the spec states
    info = api.model_contract(str(own))
    assert info["contract"]["Image size"].startswith("16 x 16 px (trained on 16 px;")
    assert info["card"] == ""
    assert info["contract"]["Value range"].startswith("image space [0, 1]")
