"""The files dataset (``data: {dataset: files}``): discovery, reading of every format, the
subject split, normalisation, native-size crops, the cache and a tiny training run on files."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from meddiff.data import files as fd
from meddiff.data.files import (FilesDataset, FilesOptions, decode, discover, load_file,
                                split_files)
from meddiff.data.kspace_io import KSpace, save_kspace
from meddiff.data.writers import save_nifti, save_npy, save_png
from meddiff.errors import ConfigError, InputError
from dicom_files import write_dicom_slice



@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDDIFF_CACHE", str(tmp_path / "cache"))


def _phantom(h: int, w: int, k: int = 0) -> np.ndarray:
    """A bright ellipse (plus a ramp and the index k) on a dark background, (h, w)."""
    y, x = np.mgrid[:h, :w]
    inside = ((y - h / 2) / (0.4 * h)) ** 2 + ((x - w / 2) / (0.35 * w)) ** 2 < 1
    return (inside * (100.0 + x + 3 * k)).astype(np.float32)


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _kspace_file(path: Path, coils: int = 2) -> np.ndarray:
    """A fully sampled fastMRI-style file of 2 slices; returns the coil images (S, C, H, W)."""
    img = np.stack([_phantom(24, 20, k) for k in range(2)]).astype(np.complex64)
    img = img * np.exp(1j * np.linspace(0, 1, 20))[None]
    sens = np.stack([np.linspace(0.5, 1.5, 24)[:, None] * np.ones(20), np.full((24, 20), 0.8)])
    coil_images = (img[:, None] * sens[None, :coils]).astype(np.complex64)
    save_kspace(path, KSpace(_fft2c(coil_images).astype(np.complex64)))
    return coil_images


def _folder(root: Path) -> dict[str, Path]:
    """One file of each format, plus a corrupt NIfTI."""
    root.mkdir()
    out = {"nifti": save_nifti(root / "vol.nii.gz", np.stack([_phantom(30, 28, k) for k in
                                                               range(4)], axis=-1)),
           "png": save_png(root / "slice.png", _phantom(26, 26)),
           "npy": save_npy(root / "slice.npy", _phantom(40, 36)),
           "h5": root / "k.h5"}
    _kspace_file(out["h5"])
    series = root / "dicom" / "subject1"
    series.mkdir(parents=True)
    for k in range(3):
        write_dicom_slice(series / f"im{k}.dcm", _phantom(32, 32, k).astype(np.uint16),
                          position=(0.0, 0.0, 2.0 * k), instance=k + 1, slope=1.0, intercept=0.0)
    out["dicom"] = series
    out["bad"] = root / "broken.nii.gz"
    out["bad"].write_bytes(b"\x1f\x8b not really gzip")
    return out


def _opts(**kw) -> FilesOptions:
    return replace(FilesOptions(paths=("unused",), dims=2, channels="magnitude"), **kw)


def test_every_format_is_read_and_a_corrupt_file_is_skipped_by_name(tmp_path, caplog):
    f = _folder(tmp_path / "data")
    globs = [str(tmp_path / "data" / p) for p in ("*.nii.gz", "*.png", "*.npy", "*.h5",
                                                  "dicom/*/", "*.tif")]
    with caplog.at_level(logging.WARNING, logger="meddiff.data.files"):
        paths = discover(globs)
        ds = FilesDataset(paths, _opts(min_foreground=0.0), size=16, seed=3, length=50)
    assert sorted(ds.files) == sorted(f[k] for k in ("nifti", "png", "npy", "h5", "dicom"))
    assert ds.skipped == [f["bad"]]
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"skipped {f['bad']}: ") for line in lines)
    assert any("*.tif" in line and "matches nothing" in line for line in lines)
    assert ds.units == 4 + 1 + 1 + 2 + 3   # NIfTI slices, PNG, NPY, k-space slices, DICOM
    items = [ds[i]["image"] for i in range(len(ds))]
    assert all(x.shape == (1, 16, 16) and x.dtype.is_floating_point for x in items)
    assert min(float(x.min()) for x in items) >= 0 and max(float(x.max()) for x in items) <= 1
    again = FilesDataset(paths, _opts(min_foreground=0.0), size=16, seed=3, length=50)
    assert all(np.array_equal(again[i]["image"], items[i]) for i in range(len(ds)))
    again.set_epoch(1)
    assert not all(np.array_equal(again[i]["image"], items[i]) for i in range(len(ds)))
    # the k-space slices are the RSS of the coil images, percentile-normalised per file
    coil_images = _kspace_file(tmp_path / "k2.h5")
    expected = np.sqrt((np.abs(coil_images) ** 2).sum(1))
    a, b = np.percentile(expected, [0.5, 99.5])
    got = decode(tmp_path / "k2.h5", _opts(min_foreground=0.0), 16)[:, 0]
    np.testing.assert_allclose(got, np.clip((expected - a) / (b - a), 0, 1), atol=1e-5)
    # DICOM slices come in spatial order
    dicom = decode(f["dicom"], _opts(normalize="none", min_foreground=0.0), 16)
    assert dicom.shape == (3, 1, 32, 32)


def test_complex_images_of_single_coil_kspace(tmp_path, caplog):
    coil_images = _kspace_file(tmp_path / "single.h5", coils=1)
    _kspace_file(tmp_path / "multi.h5", coils=2)
    o = _opts(channels="complex", min_foreground=0.0)
    got = decode(tmp_path / "single.h5", o, 16)
    z = coil_images[:, 0]
    scale = np.percentile(np.abs(z), 99.5)
    z = z / scale / np.maximum(np.abs(z) / scale, 1.0)
    np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], z, atol=1e-5)
    with caplog.at_level(logging.WARNING, logger="meddiff.data.files"):
        ds = FilesDataset([tmp_path / "single.h5", tmp_path / "multi.h5"], o, 16, length=4)
    assert ds.skipped == [tmp_path / "multi.h5"] and "single-coil" in caplog.text
    assert ds[0]["image"].shape == (2, 16, 16)


def test_nothing_matched_or_nothing_usable_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nothing matches '.*\*\.nii', '.*\*\.dcm'"):
        discover([str(tmp_path / "*.nii"), str(tmp_path / "*.dcm")])
    (tmp_path / "a.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="none of the 1 training file"):
        FilesDataset(discover([str(tmp_path / "*.npy")]), _opts(), 16)


def test_split_by_subject_is_disjoint_deterministic_and_written(tmp_path):
    files = [tmp_path / f"sub{s}" / f"scan{k}.nii.gz" for s in range(5) for k in range(2)]
    train, val = split_files(files, 0.3, seed=0)
    assert len(val) == 3 and not set(train) & set(val) and sorted(train + val) == sorted(files)
    assert split_files(files, 0.3, seed=0) == (train, val)
    assert split_files(files, 0.3, seed=1) != (train, val)
    train_f, val_f = split_files(files, 0.3, seed=0, split_by="folder")
    assert not {p.parent for p in train_f} & {p.parent for p in val_f} and len(val_f) == 4
    assert split_files(files[:1], 0.3, seed=0) == (files[:1], [])   # one subject: no val
    assert len(split_files(files, 0.01, seed=0)[1]) == 1            # at least one
    fd.write_split(tmp_path / "run", train, val)
    assert (tmp_path / "run" / "val_files.txt").read_text().split() == [str(p) for p in val]


def test_percentile_and_ct_window_values(tmp_path):
    x = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    save_npy(tmp_path / "ramp.npy", x)
    got = decode(tmp_path / "ramp.npy", _opts(percentiles=(10.0, 90.0), min_foreground=0.0), 8)
    lo, hi = 0.1 * 999, 0.9 * 999   # linear-interpolated percentiles of 0..999
    np.testing.assert_allclose(got[:, 0], np.clip((np.moveaxis(x, -1, 0) - lo) / (hi - lo), 0, 1),
                               atol=1e-6)
    hu = np.array([[-2000, -1000, 0], [500, 1000, 3000]], dtype=np.float32)
    save_npy(tmp_path / "ct.npy", hu)
    ct = decode(tmp_path / "ct.npy", _opts(normalize="ct_window", window=(-1000.0, 1000.0),
                                           min_foreground=0.0), 8)
    np.testing.assert_array_equal(ct[0, 0], [[0, 0, 0.5], [0.75, 1, 1]])


def test_background_slices_are_dropped(tmp_path):
    vol = np.stack([_phantom(20, 20) if k % 2 else np.zeros((20, 20)) for k in range(6)], -1)
    vol[0, 0, 0] = 1.0   # a speck is not foreground
    save_nifti(tmp_path / "v.nii", vol)
    kept = decode(tmp_path / "v.nii", _opts(min_foreground=0.1), 16)
    assert kept.shape[0] == 3 and (kept.reshape(3, -1) > 0.1).mean(1).min() >= 0.1
    assert decode(tmp_path / "v.nii", _opts(min_foreground=0.0), 16).shape[0] == 6


def _is_window(crop: np.ndarray, image: np.ndarray) -> bool:
    views = sliding_window_view(image, crop.shape)
    return bool((views == crop).all(axis=(-2, -1)).any())


def test_crops_are_windows_of_the_source_at_native_size(tmp_path):
    rng = np.random.default_rng(0)
    save_npy(tmp_path / "big.npy", rng.random((70, 90)).astype(np.float32) * 500)
    save_npy(tmp_path / "small.npy", rng.random((10, 12)).astype(np.float32) + 1)
    o = _opts(min_foreground=0.0)
    source = decode(tmp_path / "big.npy", o, 32)[0, 0]
    ds = FilesDataset([tmp_path / "big.npy"], o, 32, length=6)
    crops = [ds[i]["image"][0].numpy() for i in range(6)]
    assert all(_is_window(c, source) for c in crops)
    assert len({c.tobytes() for c in crops}) > 1             # random positions
    val = FilesDataset([tmp_path / "small.npy"], o, 16, split="val")
    small = decode(tmp_path / "small.npy", o, 16)[0, 0]
    item = val[0]["image"][0].numpy()
    np.testing.assert_array_equal(item[3:13, 2:14], small)   # centred, zero-padded
    assert item.sum() == pytest.approx(small.sum())
    resized = FilesDataset([tmp_path / "big.npy"], _opts(min_foreground=0.0, fit="resize"), 32)
    assert resized[0]["image"].shape == (1, 32, 32)


def test_3d_patches_are_windows_of_the_volume(tmp_path):
    vol = np.random.default_rng(1).random((20, 22, 18)).astype(np.float32)
    save_nifti(tmp_path / "v.nii.gz", vol)
    o = _opts(dims=3, normalize="none", min_foreground=0.0)
    ds = FilesDataset([tmp_path / "v.nii.gz"], o, 16, length=2)
    patch = ds[0]["image"].numpy()
    assert patch.shape == (1, 16, 16, 16)
    views = sliding_window_view(np.moveaxis(vol, -1, 0), patch.shape[1:])
    assert (views == patch[0]).all(axis=(-3, -2, -1)).any()


def test_cache_hit_returns_identical_arrays_without_decoding(tmp_path, monkeypatch):
    save_nifti(tmp_path / "v.nii.gz", np.stack([_phantom(20, 24, k) for k in range(3)], -1))
    o = _opts()
    first = load_file(tmp_path / "v.nii.gz", o, 16)
    where = fd.cache_path(tmp_path / "v.nii.gz", o, 16)
    assert where.is_file() and where.parent == tmp_path / "cache" / "files"

    def refuse(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(fd, "decode", refuse)
    hit = load_file(tmp_path / "v.nii.gz", o, 16)
    np.testing.assert_array_equal(np.asarray(hit), first)
    assert fd.cache_path(tmp_path / "v.nii.gz", replace(o, percentiles=(1.0, 99.0)), 16) != where
    save_nifti(tmp_path / "v.nii.gz", np.zeros((20, 24, 4)))   # changed file: another key
    assert fd.cache_path(tmp_path / "v.nii.gz", o, 16) != where


def test_a_tiny_run_on_files_is_a_loadable_model(tmp_path):
    from meddiff.train.run import export, load_run_config, train
    from meddiff.zoo.store import load_diffusion

    data = tmp_path / "scans"
    data.mkdir()
    for s in range(3):
        vol = np.stack([_phantom(24, 20, s + k) for k in range(3)], -1)
        save_nifti(data / f"sub{s}.nii.gz", vol)
    out = tmp_path / "run"
    (tmp_path / "run.yaml").write_text(f"""
model:
  net: {{channels: [8, 16], attention_levels: [false, false], norm_num_groups: 8, num_head_channels: 8}}
  image_size: 16
data: {{dataset: files, paths: ["{data}/*.nii.gz"], val_fraction: 0.3, length: 8}}
train: {{steps: 2, out_dir: {out}, batch_size: 2}}
""")
    cfg = load_run_config(tmp_path / "run.yaml")
    assert cfg.data.dims == 2 and cfg.data.channels == "magnitude"
    assert train(cfg)["steps"] == 2
    model = load_diffusion(out)
    assert model.spec.image_size == 16
    card = json.loads(export(out, "mine", tmp_path / "store").read_text())["card"]
    assert card["validation"]["val_loss"] > 0    # on the validation file's slices
    val = (out / "val_files.txt").read_text().split()
    assert len(val) == 1 and val[0] not in (out / "train_files.txt").read_text().split()
    with pytest.raises(ConfigError, match="needs data.paths"):
        (tmp_path / "bad.yaml").write_text("train: {steps: 1, out_dir: x}\n"
                                           "data: {dataset: files}\n")
        load_run_config(tmp_path / "bad.yaml")


def test_dims_and_channels_follow_the_model(tmp_path):
    from meddiff.train.run import load_run_config

    def data(model: str, extra: str = ""):
        (tmp_path / "r.yaml").write_text("train: {steps: 1, out_dir: x}\n"
                                         f"model: {model}\n"
                                         f"data: {{dataset: files, paths: [a.nii]{extra}}}\n")
        return load_run_config(tmp_path / "r.yaml").data

    d3 = data("{net: {spatial_dims: 3, channels: [8, 16], attention_levels: [false, false], "
              "norm_num_groups: 8, num_head_channels: 8}, image_size: 16}")
    assert d3.dims == 3 and d3.spatial_dims == 3 and d3.channels == "magnitude"
    complex_model = "{net: {in_channels: 2, out_channels: 2}, intensity: complex}"
    assert data(complex_model).channels == "complex"
    with pytest.raises(ConfigError, match="complex"):
        data(complex_model, ", channels: magnitude")
    with pytest.raises(ConfigError, match="data.paths applies to dataset files"):
        (tmp_path / "r.yaml").write_text("train: {steps: 1, out_dir: x}\ndata: {paths: [a]}\n")
        load_run_config(tmp_path / "r.yaml")


def test_the_example_config_loads():
    from meddiff.train.run import load_run_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_run_config(root / "configs" / "examples" / "own-data-prior.yaml")
    assert cfg.data.dataset == "files" and cfg.data.fit == "crop" and cfg.data.dims == 2


def test_training_sections_are_the_sections_inference_reads(tmp_path):
    """A file with geometry (here LPS) is cut into the same reoriented axial sections by the
    files dataset as by the inference commands (read_slices)."""
    from meddiff.tasks.inputs import read_slices

    vol = np.random.default_rng(0).uniform(0, 100, (12, 10, 3)).astype(np.float32)
    save_nifti(tmp_path / "lps.nii.gz", vol, np.diag([-2.0, -2.0, 2.0, 1.0]))
    stack = decode(tmp_path / "lps.nii.gz", FilesOptions(), 16)
    ref = read_slices(tmp_path / "lps.nii.gz", 16).images
    assert stack.shape[-2:] == (10, 12)                    # rows = y (A->P), columns = x (L->R)
    np.testing.assert_allclose(stack, ref.numpy(), atol=1e-6)
