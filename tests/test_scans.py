"""Users' own scans (issue #10, items 1 and 2): inputs in the models' frame whatever their
orientation, outputs back on each file's own grid and affine; DICOM multi-frame and compressed
files read with their geometry or refused in one line; folders in, folders out; a JSON sidecar
that reproduces every output. The tiny models run at 16 px."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from meddiff import __version__, api
from meddiff.data.datasets import _as_sections
from meddiff.data.readers import load_image
from meddiff.data.writers import save_nifti, save_png
from meddiff.errors import InputError
from meddiff.nets.unet import preset
from meddiff.zoo.kinds import DiffusionSpec
from meddiff.zoo.store import build_denoiser, save
from dicom_files import SERIES_UID, write_dicom_slice
from conftest import run_cli as _run

X, Y, Z = 16, 12, 2  # a non-square RAS volume: 16 px left -> right, 12 px posterior -> anterior




def _anatomy() -> np.ndarray:
    """An asymmetric (X, Y, Z) RAS volume with a bright marker anterior-left in slice 1."""
    vol = np.random.default_rng(0).random((X, Y, Z)).astype(np.float32) * 100 + 50
    vol[1, Y - 2, 1] = 1000.0  # x = 1 (patient left), y = Y - 2 (anterior)
    return vol


def _ras_and_lps(tmp_path) -> tuple[str, str, np.ndarray]:
    """The same anatomy stored RAS and LPS (x and y flipped, the affine to match), written with
    nibabel."""
    vol = _anatomy()
    ras = np.array([[2.0, 0, 0, -16], [0, 2.0, 0, -12], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    lps = ras @ np.array([[-1.0, 0, 0, X - 1], [0, -1.0, 0, Y - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(vol, ras), tmp_path / "ras.nii.gz")
    nib.save(nib.Nifti1Image(vol[::-1, ::-1].copy(), lps), tmp_path / "lps.nii.gz")
    return str(tmp_path / "ras.nii.gz"), str(tmp_path / "lps.nii.gz"), vol


# ------------------------------------------------------------------------------ orientation
def test_ras_and_lps_files_give_the_training_frame_and_map_back_to_their_own_grid(
        tiny, tmp_path):
    ras, lps, vol = _ras_and_lps(tmp_path)
    a, b = api.read_slices(ras, 16), api.read_slices(lps, 16)
    assert nib.aff2axcodes(nib.load(lps).affine) == ("L", "P", "S")
    assert a.images.shape == (Z, 1, Y, X) and torch.equal(a.images, b.images)
    # the training frame: axial sections, rows anterior -> posterior, columns left -> right
    expected = _as_sections(vol, "axial")
    peak = np.unravel_index(int(a.images[1, 0].argmax()), (Y, X))
    assert peak == (1, 1) == np.unravel_index(int(expected[1].argmax()), (Y, X))
    # results go back onto each file's own grid and affine
    for path, stored in ((ras, vol), (lps, vol[::-1, ::-1])):
        sl = api.read_slices(path, 16)
        inside = (stored > sl.window[0]) & (stored < sl.window[1])
        assert np.allclose(sl.restore(sl.images)[inside], stored[inside], rtol=1e-5)
    out = {}
    for name, path in (("ras", ras), ("lps", lps)):
        api.denoise_file(path, tmp_path / f"d_{name}.nii.gz", 0.1, model=tiny, device="cpu")
        out[name] = load_image(tmp_path / f"d_{name}.nii.gz")
        assert np.allclose(out[name].affine, nib.load(path).affine)
    assert np.array_equal(out["lps"].array, out["ras"].array[::-1, ::-1])


def test_a_non_square_oriented_slice_round_trips_with_its_affine(tiny, tmp_path):
    img = np.random.default_rng(1).random((20, 12)).astype(np.float32) * 300
    affine = np.array([[0, -0.75, 0, 40.5], [1.25, 0, 0, -20.25], [0, 0, 4.0, 7], [0, 0, 0, 1]])
    src = save_nifti(tmp_path / "slice.nii.gz", img, affine)
    sl = api.read_slices(src, 16, divisor=8)
    assert sl.shape == (20, 12) and sl.images.shape == (1, 1, 24, 16) and sl.pad == (2, 2, 2, 2)
    inside = (img > sl.window[0]) & (img < sl.window[1])
    assert np.allclose(sl.restore(sl.images)[inside], img[inside], rtol=1e-5)
    res = api.denoise_file(src, tmp_path / "d.nii.gz", 0.1, model=tiny, device="cpu")
    got = load_image(res["outputs"][0])
    assert got.array.shape == img.shape and np.array_equal(got.affine, affine)


def test_resize_keeps_the_aspect_ratio_and_restores_the_grid(tmp_path):
    img = np.random.default_rng(2).random((12, 20)).astype(np.float32)  # no geometry: as stored
    src = save_nifti(tmp_path / "wide.nii.gz", img)
    plain = api.read_slices(src, 16)
    sl = api.read_slices(src, 16, resize=True)
    assert sl.images.shape == (1, 1, 16, 16) and sl.size == (10, 16) and sl.pad == (3, 3, 0, 0)
    assert not sl.images[..., :3, :].any() and not sl.images[..., 13:, :].any()  # zero-padded
    squeezed = F.interpolate(plain.images, size=(10, 16), mode="bilinear", antialias=True,
                             align_corners=False).clamp(0, 1)
    assert torch.allclose(sl.images[..., 3:13, :], squeezed)
    assert sl.restore(sl.images).shape == img.shape


def test_images_without_geometry_are_used_as_stored(tmp_path):
    img = np.random.default_rng(3).random((10, 14))
    for src in (save_png(tmp_path / "a.png", img, 0, 1), save_nifti(tmp_path / "a.nii", img)):
        sl = api.read_slices(src, 16)
        assert sl.images.shape == (1, 1, 10, 14) and not sl.image.oriented
        assert np.corrcoef(sl.images[0, 0].flatten(), img.flatten())[0, 1] > 0.99
    assert nib.load(tmp_path / "a.nii").header["sform_code"] == 0


# ------------------------------------------------------------------------------ DICOM
def _raw(k: int) -> np.ndarray:
    return (np.arange(120).reshape(10, 12) * 3 + 100 * k).astype(np.uint16)


Z_MM = {0: 10.0, 1: 12.5, 2: 15.0}


def _multiframe(path, order=(2, 0, 1), positions=True, same=False) -> None:
    """An enhanced CT multi-frame file of the frames ``order`` (raw ``_raw(k)`` at z =
    ``Z_MM[k]``) with shared pixel measures, orientation and rescale, and per-frame positions
    (all at one z with ``same``; none without ``positions``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    meta.MediaStorageSOPInstanceUID = f"{SERIES_UID}.77"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, f"{SERIES_UID}.77"
    ds.Modality, ds.SeriesInstanceUID = "CT", SERIES_UID
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(order), _raw(0).shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.75]
    shared.PixelMeasuresSequence[0].SliceThickness = 2.5
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelValueTransformationSequence = [Dataset()]
    shared.PixelValueTransformationSequence[0].RescaleSlope = 2.0
    shared.PixelValueTransformationSequence[0].RescaleIntercept = -1024.0
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in order:
        item = Dataset()
        if positions:
            item.PlanePositionSequence = [Dataset()]
            z = Z_MM[0] if same else Z_MM[k]
            item.PlanePositionSequence[0].ImagePositionPatient = [-20.0, 30.0, z]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack([_raw(k) for k in order]).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _series(folder) -> None:
    folder.mkdir()
    for k in range(3):
        write_dicom_slice(folder / f"s{k}.dcm", _raw(k), position=(-20.0, 30.0, Z_MM[k]))


def test_an_enhanced_multiframe_file_reads_like_its_series(tmp_path):
    _series(tmp_path / "series")
    _multiframe(tmp_path / "mf.dcm")
    series, frames = load_image(tmp_path / "series"), load_image(tmp_path / "mf.dcm")
    assert frames.array.shape == (10, 12, 3) and frames.oriented and series.oriented
    assert np.array_equal(frames.array, series.array)
    assert np.allclose(frames.affine, series.affine)
    assert np.array_equal(frames.array[..., 0], _raw(0) * 2.0 - 1024.0)
    folder = tmp_path / "one"  # a folder holding one multi-frame file is that file
    folder.mkdir()
    _multiframe(folder / "mf.dcm")
    assert np.array_equal(load_image(folder).array, frames.array)


def test_multiframe_files_without_usable_geometry_are_kept_as_stored_or_refused(tmp_path):
    _multiframe(tmp_path / "plain.dcm", positions=False)
    plain = load_image(tmp_path / "plain.dcm")
    assert not plain.oriented and plain.array.shape == (10, 12, 3)
    assert np.array_equal(plain.array[..., 0], _raw(2) * 2.0 - 1024.0)  # stored order
    assert any("no patient geometry" in n for n in plain.notes)
    _multiframe(tmp_path / "same.dcm", same=True)
    with pytest.raises(InputError, match="share one position") as err:
        load_image(tmp_path / "same.dcm")
    assert str(err.value).startswith(str(tmp_path / "same.dcm")) and "\n" not in str(err.value)


def test_compressed_dicom_is_decoded_with_its_geometry_or_refused_in_one_line(
        tiny, tmp_path, capsys):
    write_dicom_slice(tmp_path / "plain.dcm", _raw(1), position=(-20.0, 30.0, 12.5))
    ds = pydicom.dcmread(tmp_path / "plain.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    plain, rle = load_image(tmp_path / "plain.dcm"), load_image(tmp_path / "rle.dcm")
    assert np.array_equal(rle.array, plain.array) and np.array_equal(rle.affine, plain.affine)
    assert rle.oriented
    ds = pydicom.dcmread(tmp_path / "plain.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # no JPEG-LS decoder is installed
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7not a real codestream\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jls.dcm", enforce_file_format=True)
    code, _, err = _run(capsys, "denoise", "--input", tmp_path / "jls.dcm", "--sigma", 0.1,
                        "--model", tiny, "--out", tmp_path / "o.nii.gz", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "JPEG-LS" in err and "jls.dcm" in err
    assert not (tmp_path / "o.nii.gz").exists()


# ------------------------------------------------------------------------------ folders
def _folder(tmp_path) -> tuple:
    """Two NIfTI volumes, a PNG, a DICOM series subfolder, a text file and an empty folder."""
    d = tmp_path / "scans"
    d.mkdir()
    rng = np.random.default_rng(4)
    save_nifti(d / "a.nii.gz", rng.random((16, 16, 2)) * 500, np.diag([1.5, 1.5, 3, 1]))
    save_nifti(d / "b.nii", rng.random((16, 12, 2)) * 500, np.diag([-1.0, -1.0, 2, 1]))
    save_png(d / "c.png", rng.random((16, 16)))
    _series(d / "series")
    (d / "notes.txt").write_text("not an image")
    (d / "empty").mkdir()
    return d, tmp_path / "out"


def test_a_folder_gives_one_output_per_input_and_a_rerun_skips_finished_ones(
        tiny, tmp_path, capsys):
    src, out = _folder(tmp_path)
    code, text, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                           "--out", out, "--device", "cpu")
    assert code == 0, err
    for name, like in (("a", "a.nii.gz"), ("b", "b.nii"), ("c", "c.png"), ("series", "series")):
        got = load_image(out / f"{name}.nii.gz")
        assert got.array.shape == load_image(src / like).array.shape
        assert json.loads((out / f"{name}.json").read_text())["input"] == str(src / like)
    assert np.allclose(load_image(out / "series.nii.gz").affine, load_image(src / "series").affine)
    lines = text.splitlines()
    assert sum(line.startswith("wrote ") for line in lines) == 4
    assert any(line.startswith(f"skipped {src / 'notes.txt'}: unknown file type") for line in lines)
    assert any(line.startswith(f"skipped {src / 'empty'}: a folder without DICOM")
               for line in lines)
    assert "denoise" in err  # the bar over the files
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    code, text, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                           "--out", out, "--device", "cpu")
    assert code == 0, err
    finished = [line for line in text.splitlines() if ": finished (" in line]
    assert len(finished) == 4 and "wrote" not in text
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamp


def test_a_folder_with_nothing_usable_fails_in_one_line(tiny, tmp_path, capsys):
    src = tmp_path / "junk"
    src.mkdir()
    (src / "notes.txt").write_text("x")
    save_nifti(src / "flat.nii.gz", np.zeros((16, 16)))
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                        "--out", tmp_path / "out", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "no usable input in the folder" in err
    assert "flat.nii.gz: the image is constant" in err and not (tmp_path / "out").exists()
    code, _, err = _run(capsys, "denoise", "--input", src, "--sigma", 0.1, "--model", tiny,
                        "--out", src / "out", "--device", "cpu")
    assert code == 2 and "inside the input folder" in err


# ------------------------------------------------------------------------------ sidecars
def test_the_sidecar_records_the_seed_and_reproduces_the_output_bit_exactly(tiny, tmp_path):
    src = save_nifti(tmp_path / "in.nii.gz", np.random.default_rng(5).random((16, 16, 2)) * 9,
                     np.diag([1.0, 1.0, 2.0, 1.0]))
    res = api.denoise_file(src, tmp_path / "o.nii.gz", 0.2, method="ddpm", steps=3, seed=7,
                           model=tiny, device="cpu")
    side = json.loads((tmp_path / "o.json").read_text())
    assert res["outputs"][-1] == str(tmp_path / "o.json")
    assert side["seed"] == 7 == side["options"]["seed"] and side["meddiff"] == __version__
    assert side["model"] == "tiny" and side["method"] == "ddpm" and side["input"] == str(src)
    again = api.denoise_file(side["input"], tmp_path / "again.nii.gz", **side["options"])
    assert (tmp_path / "again.nii.gz").read_bytes() == (tmp_path / "o.nii.gz").read_bytes()
    assert json.loads((tmp_path / "again.json").read_text())["options"] == side["options"]
    other = dict(side["options"], seed=8)
    api.denoise_file(src, tmp_path / "other.nii.gz", **other)
    assert (tmp_path / "other.nii.gz").read_bytes() != (tmp_path / "o.nii.gz").read_bytes()
    assert again["slices"] == 2


def test_reconstruct_has_a_bar_and_its_sidecar_holds_metrics_and_the_self_check(
        tiny, tmp_path, capsys):
    src = save_nifti(tmp_path / "t1.nii.gz", np.random.default_rng(6).random((16, 16)) * 9,
                     np.diag([1.0, 1.0, 2.0, 1.0]))
    code, text, err = _run(capsys, "reconstruct", "--input", src, "--method", "score-mri",
                           "--steps", 2, "--model", tiny, "--out", tmp_path / "r.nii.gz",
                           "--device", "cpu")
    assert code == 0, err
    assert "network calls" in err and "r.json" in text
    api.reconstruct_file(src, tmp_path / "quiet.nii.gz", method="score-mri", steps=2,
                         model=tiny, device="cpu")  # no bar: the same output
    assert (tmp_path / "quiet.nii.gz").read_bytes() == (tmp_path / "r.nii.gz").read_bytes()
    side = json.loads((tmp_path / "r.json").read_text())
    assert side["task"] == "reconstruct" and side["model"] == "tiny"
    assert {m["method"] for m in side["results"]["metrics"]} == {"score-mri", "zero-filled"}
    assert "weights" in side["results"]["self_check"]


def test_segment_threshold_writes_a_uint8_label_map(tmp_path, capsys):
    torch.manual_seed(0)
    spec = DiffusionSpec(net=preset("tiny", in_channels=2), image_size=16, condition="concat")
    seg = save(tmp_path / "seg", build_denoiser(spec).net, spec, fp16=False)
    src = save_nifti(tmp_path / "in.nii.gz", np.random.default_rng(7).random((16, 16, 2)),
                     np.diag([2.0, 2.0, 5.0, 1.0]))
    code, text, err = _run(capsys, "segment", "--input", src, "--model", seg, "--samples", 2,
                           "--steps", 2, "--threshold", 0.4, "--out", tmp_path / "m.nii.gz",
                           "--device", "cpu")
    assert code == 0, err
    labels = nib.load(tmp_path / "m_labels.nii.gz")
    mean = load_image(tmp_path / "m.nii.gz").array
    assert labels.get_data_dtype() == np.uint8
    assert np.allclose(labels.affine, load_image(src).affine)
    assert np.array_equal(np.asarray(labels.dataobj), (mean >= 0.4).astype(np.uint8))
    assert "(mean >= 0.4)" in text
    code, _, err = _run(capsys, "segment", "--input", src, "--model", seg, "--threshold", 0,
                        "--out", tmp_path / "z.nii.gz", "--device", "cpu")
    assert code == 2 and "--threshold must be in (0, 1]" in err
