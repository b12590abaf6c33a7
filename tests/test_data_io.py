"""Readers / writers for users' own data.

Round trips, DICOM geometry, k-space, bad input, atomic writes.
"""
from __future__ import annotations

import gzip
import os

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from meddiff.data.kspace_io import KSpace, load_kspace, save_kspace
from meddiff.data.readers import Image, load_image
from meddiff.data.slicing import as_slice, to_2d_slices
from meddiff.data.writers import save_nifti, save_npy, save_png
from meddiff.errors import InputError
from dicom_files import PATIENT, PATIENT_ID, write_dicom_slice


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _expect_input_error(path, call) -> str:
    """Run ``call``; it must raise a one-line InputError naming ``path``'s file."""
    with pytest.raises(InputError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg
    assert os.path.basename(os.fspath(path).rstrip("/")) in msg
    return msg


# ------------------------------------------------------------------------------ NIfTI


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
def test_nifti_round_trip_exact(tmp_path, name):
    data = _rng().normal(size=(6, 5, 4)).astype(np.float32)
    # permuted, flipped, anisotropic axes; entries exactly representable in float32 (sform)
    affine = np.array([[0.0, -1.5, 0.0, 90.25],
                       [2.0, 0.0, 0.0, -126.5],
                       [0.0, 0.0, 0.75, -72.0],
                       [0.0, 0.0, 0.0, 1.0]])
    out = save_nifti(tmp_path / name, data, affine)
    img = load_image(out)
    assert img.source == "nifti" and img.array.dtype == np.float32
    np.testing.assert_array_equal(img.array, data)
    np.testing.assert_array_equal(img.affine, affine)
    assert img.spacing == (2.0, 1.5, 0.75)
    if name.endswith(".gz"):
        assert (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"


def test_nifti_general_affine_within_float32(tmp_path):
    affine = np.eye(4)
    affine[:3, :3] = _rng().normal(size=(3, 3))
    affine[:3, 3] = [10.1, -20.2, 30.3]
    img = load_image(save_nifti(tmp_path / "a.nii", np.ones((3, 3, 3)), affine))
    np.testing.assert_allclose(img.affine, affine, rtol=1e-6, atol=1e-5)


def test_nifti_2d_and_4d_singleton_squeezed(tmp_path):
    img2 = load_image(save_nifti(tmp_path / "slice.nii", np.arange(12.0).reshape(3, 4)))
    assert img2.array.shape == (3, 4)
    data = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4, 1)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])), tmp_path / "v4.nii")
    img = load_image(tmp_path / "v4.nii")
    np.testing.assert_array_equal(img.array, data[..., 0])
    assert img.spacing == (1.0, 2.0, 3.0)


def test_nifti_scaling_applied(tmp_path):
    img = nib.Nifti1Image(np.array([[0, 10], [20, 30]], dtype=np.int16)[..., None], np.eye(4))
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, tmp_path / "scaled.nii")
    np.testing.assert_allclose(load_image(tmp_path / "scaled.nii").array[..., 0],
                               [[-3.0, 2.0], [7.0, 12.0]])


# ------------------------------------------------------------------------------ PNG / TIFF / NPY


def test_png_round_trip_quantisation_bound(tmp_path):
    data = _rng().uniform(-3.0, 5.0, size=(17, 23)).astype(np.float32)
    vmin, vmax = -2.0, 4.0
    img = load_image(save_png(tmp_path / "sub" / "x.png", data, vmin=vmin, vmax=vmax))
    assert img.array.shape == (17, 23) and img.source == "png"
    assert img.array.min() == 0.0 and img.array.max() == 255.0   # clipped outside the window
    back = img.array / 255.0 * (vmax - vmin) + vmin
    expected = np.clip(data, vmin, vmax)
    assert np.abs(back - expected).max() <= (vmax - vmin) / 510 + 1e-6
    np.testing.assert_array_equal(img.affine, np.eye(4))
    assert img.spacing == (1.0, 1.0)


def test_png_default_window_and_constant(tmp_path):
    data = np.array([[1.0, 2.0], [3.0, 5.0]])
    arr = load_image(save_png(tmp_path / "w.png", data)).array
    np.testing.assert_array_equal(arr, [[0, 64], [128, 255]])   # rint(255 * [0, .25, .5, 1])
    assert not load_image(save_png(tmp_path / "c.png", np.full((3, 3), 7.0))).array.any()


def test_png_rgb_to_luminance(tmp_path):
    rgb = _rng().integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    PILImage.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    img = load_image(tmp_path / "rgb.png")
    manual = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(img.array, manual, rtol=1e-6)
    assert any("luminance" in n for n in img.notes)


def test_png_16bit(tmp_path):
    data = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    PILImage.fromarray(data).save(tmp_path / "d16.png")
    np.testing.assert_array_equal(load_image(tmp_path / "d16.png").array, data)


def test_tiff_round_trip_rgb_and_stack(tmp_path):
    data = _rng().normal(size=(9, 8)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", data)
    np.testing.assert_array_equal(load_image(tmp_path / "a.tif").array, data)

    rgb = _rng().integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb")
    manual = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(load_image(tmp_path / "rgb.tiff").array, manual, rtol=1e-6)

    stack = _rng().normal(size=(4, 5, 6)).astype(np.float32)          # (pages, H, W)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    img = load_image(tmp_path / "stack.tif")
    np.testing.assert_array_equal(img.array, np.moveaxis(stack, 0, -1))
    np.testing.assert_array_equal(as_slice(img, 2), stack[2])


def test_npy_round_trip_and_sniffing(tmp_path):
    data = _rng().normal(size=(4, 5, 6))
    img = load_image(save_npy(tmp_path / "v.npy", data))
    assert img.array.dtype == np.float32 and img.source == "npy"
    np.testing.assert_array_equal(img.array, data.astype(np.float32))
    assert np.load(tmp_path / "v.npy").dtype == np.float64            # dtype kept on disk
    ints = np.arange(6, dtype=np.int16).reshape(1, 2, 3)
    save_npy(tmp_path / "noext", ints)                                  # np.save adds no suffix
    img = load_image(tmp_path / "noext")                                # found by magic bytes
    np.testing.assert_array_equal(img.array, ints[0])                   # singleton axis dropped
    assert img.notes


# ------------------------------------------------------------------------------ DICOM


def _raw(k: int) -> np.ndarray:
    return (np.arange(20).reshape(4, 5) + 100 * k).astype(np.uint16)   # 4 rows x 5 cols


def test_dicom_series_order_rescale_affine(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    z = {0: 10.0, 1: 12.5, 2: 15.0}
    # file names and instance numbers deliberately disagree with the spatial order
    for name, k, inst in [("a.dcm", 2, 1), ("b", 0, 3), ("c.dcm", 1, 2)]:
        write_dicom_slice(folder / name, _raw(k), position=(-20.0, 30.0, z[k]), instance=inst)
    (folder / "notes.txt").write_text("not dicom")
    img = load_image(folder)
    assert img.source == "dicom-series" and img.array.shape == (4, 5, 3)
    for k in range(3):
        np.testing.assert_array_equal(img.array[..., k], _raw(k) * 2.0 - 1024.0)
    expected = np.array([[0.0, -0.75, 0.0, 20.0],      # LPS -> RAS: x, y negated
                         [-0.5, 0.0, 0.0, -30.0],
                         [0.0, 0.0, 2.5, 10.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(img.affine, expected, atol=1e-9)
    assert img.spacing == pytest.approx((0.5, 0.75, 2.5))
    # voxel (row 3, col 4, slice 2) sits at IPP + 3*0.5 along y + 4*0.75 along x (LPS)
    lps = np.array([-20.0 + 4 * 0.75, 30.0 + 3 * 0.5, 15.0])
    np.testing.assert_allclose(img.affine @ [3, 4, 2, 1], [-lps[0], -lps[1], lps[2], 1])
    text = repr(img) + str(img.meta) + str(img.notes)
    assert PATIENT not in text and "DOE" not in text and PATIENT_ID not in text
    assert "19700101" not in text
    assert img.meta["RescaleSlope"] == 2.0 and img.meta["Modality"] == "CT"


def test_dicom_series_instance_number_fallback(tmp_path):
    for name, k, inst in [("x1.dcm", 1, 2), ("x2.dcm", 0, 1), ("x3.dcm", 2, 3)]:
        write_dicom_slice(tmp_path / name, _raw(k), instance=inst, slope=1.0, intercept=0.0)
    img = load_image(tmp_path)
    for k in range(3):
        np.testing.assert_array_equal(img.array[..., k], _raw(k))
    assert any("InstanceNumber" in n for n in img.notes)


def test_dicom_series_refuses_duplicate_positions(tmp_path):
    for name in ("p.dcm", "q.dcm"):
        write_dicom_slice(tmp_path / name, _raw(0), position=(0.0, 0.0, 5.0))
    _expect_input_error(tmp_path, lambda: load_image(tmp_path))


def test_ct_small_hounsfield():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    manual = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + \
        float(ds.RescaleIntercept)
    img = load_image(path)
    assert img.source == "dicom" and img.array.shape == (128, 128)
    np.testing.assert_array_equal(img.array, manual.astype(np.float32))
    assert -1024.0 <= img.array.min() < 0.0 < img.array.max() < 3072.0    # HU-like
    assert img.spacing == pytest.approx((0.661468, 0.661468))
    ipp = [float(v) for v in ds.ImagePositionPatient]
    np.testing.assert_allclose(img.affine[:3, 3], [-ipp[0], -ipp[1], ipp[2]])
    text = repr(img) + str(img.meta)
    assert str(ds.PatientName) not in text and str(ds.PatientID) not in text
    assert "CompressedSamples" not in text


# ------------------------------------------------------------------------------ k-space


def _complex(shape) -> np.ndarray:
    rng = _rng()
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def test_kspace_round_trip_multicoil(tmp_path):
    ksp = _complex((2, 3, 8, 6))
    ref = np.sqrt((np.abs(np.fft.ifft2(ksp)) ** 2).sum(axis=1)).astype(np.float32)
    mask = np.array([1, 0, 1, 1, 0, 1], dtype=np.float32)
    out = save_kspace(tmp_path / "k" / "file.h5",
                      KSpace(ksp, ref, mask, {"acquisition": "CORPD_FBK", "max": 1.5}))
    with h5py.File(out, "a") as h5:
        h5.attrs["patient_id"] = "secret-id"
    k = load_kspace(out)
    np.testing.assert_array_equal(k.kspace, ksp)
    np.testing.assert_array_equal(k.reference, ref)
    np.testing.assert_array_equal(k.mask, mask)
    assert k.meta == {"acquisition": "CORPD_FBK", "max": 1.5}
    assert "secret-id" not in repr(k)
    one = load_kspace(out, slices=-1)
    np.testing.assert_array_equal(one.kspace, ksp[1:])
    np.testing.assert_array_equal(one.reference, ref[1:])


def test_kspace_single_coil_promoted(tmp_path):
    ksp = _complex((3, 4, 5))
    with h5py.File(tmp_path / "sc.h5", "w") as h5:
        h5["kspace"] = ksp
    k = load_kspace(tmp_path / "sc.h5")
    assert k.kspace.shape == (3, 1, 4, 5) and k.reference is None and k.mask is None
    np.testing.assert_array_equal(k.kspace[:, 0], ksp)
    save_kspace(tmp_path / "again.h5", k)                    # written back single-coil
    with h5py.File(tmp_path / "again.h5", "r") as h5:
        assert h5["kspace"].shape == (3, 4, 5)


def _h5(path, **datasets):
    with h5py.File(path, "w") as h5:
        for key, value in datasets.items():
            h5[key] = value
    return path


@pytest.mark.parametrize("case", ["real", "2d", "5d", "missing", "nan", "mask", "rss",
                                  "not_h5", "absent", "slice"])
def test_kspace_bad_input(tmp_path, case):
    p = tmp_path / f"bad_{case}.h5"
    good = _complex((2, 4, 5))
    if case == "real":
        _h5(p, kspace=np.ones((2, 4, 5, 2), np.float32))
    elif case == "2d":
        _h5(p, kspace=good[0])
    elif case == "5d":
        _h5(p, kspace=good[None, None])
    elif case == "missing":
        _h5(p, other=np.ones(3))
    elif case == "nan":
        bad = good.copy()
        bad[0, 0, :2] = np.nan
        _h5(p, kspace=bad)
    elif case == "mask":
        _h5(p, kspace=good, mask=np.ones(7))
    elif case == "rss":
        _h5(p, kspace=good, reconstruction_rss=np.ones((3, 4, 5)))
    elif case == "not_h5":
        p.write_bytes(b"this is not hdf5" * 10)
    elif case == "slice":
        _h5(p, kspace=good)
    msg = _expect_input_error(p, lambda: load_kspace(p, slices=5 if case == "slice" else None))
    if case == "nan":
        assert "2 NaN/Inf" in msg


# ------------------------------------------------------------------------------ bad image input


def _npy(path, arr, allow_pickle=False):
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=allow_pickle)
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _make_bad(tmp_path, case):
    p = tmp_path / case
    vol = np.ones((8, 8, 8), np.float32)
    if case == "missing.nii":
        return p
    if case == "empty_dir":
        p.mkdir()
        return p
    if case == "dir_no_dicom":
        p.mkdir()
        (p / "readme.txt").write_text("hello")
        return p
    if case in ("cut.nii", "cut.nii.gz"):
        nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
        return _truncate(p)
    if case == "garbage.nii.gz":
        p.write_bytes(gzip.compress(b"not a nifti header") + b"\x00junk")
        return p
    if case in ("ct_half.dcm", "ct_head.dcm"):
        p.write_bytes(open(get_testdata_file("CT_small.dcm"), "rb").read())
        return _truncate(p, 0.5 if case == "ct_half.dcm" else 0.01)
    if case == "image.xyz":
        p.write_bytes(b"\x00\x01" * 100)
        return p
    if case == "bad.png":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
        return p
    if case == "cut.png":
        PILImage.fromarray(np.zeros((64, 64), np.uint8) + 3).save(p)
        return _truncate(p, 0.6)
    if case == "bad.tif":
        p.write_bytes(b"II*\x00" + b"\xff" * 40)
        return p
    if case == "cut.npy":
        return _truncate(_npy(p, vol))
    arrays = {"one_d.npy": np.arange(5.0), "five_d.npy": np.ones((2, 2, 2, 2, 2)),
              "nan.npy": np.array([[1.0, np.nan], [np.inf, 2.0]]),
              "empty.npy": np.zeros((0, 5)), "complex.npy": np.ones((3, 3), np.complex64),
              "huge.npy": np.full((2, 2), 1e300)}
    if case in arrays:
        return _npy(p, arrays[case])
    if case == "pickled.npy":
        return _npy(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    if case == "inf.nii":
        vol[0, 0, 0] = np.inf
        nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
        return p
    if case == "four_d.nii":
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), p)
        return p
    if case == "five_d.nii":
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 1, 2), np.float32), np.eye(4)), p)
        return p
    if case == "one_d.nii":
        nib.save(nib.Nifti1Image(np.ones((5,), np.float32), np.eye(4)), p)
        return p
    if case == "kspace.h5":
        return _h5(p, kspace=_complex((2, 4, 5)))
    raise AssertionError(case)


BAD_IMAGES = ["missing.nii", "empty_dir", "dir_no_dicom", "cut.nii", "cut.nii.gz",
              "garbage.nii.gz", "ct_half.dcm", "ct_head.dcm", "image.xyz", "bad.png", "cut.png",
              "bad.tif", "cut.npy", "one_d.npy", "five_d.npy", "nan.npy", "empty.npy",
              "complex.npy", "huge.npy", "pickled.npy", "inf.nii", "four_d.nii", "five_d.nii",
              "one_d.nii", "kspace.h5"]


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_image_input_raises_one_line(tmp_path, case):
    path = _make_bad(tmp_path, case)
    msg = _expect_input_error(path, lambda: load_image(path))
    if case == "nan.npy":
        assert "2 NaN/Inf" in msg
    if case == "pickled.npy":
        assert "pickled" in msg


def test_dicom_folder_with_truncated_slice(tmp_path):
    for k in range(2):
        write_dicom_slice(tmp_path / f"s{k}.dcm", _raw(k), position=(0.0, 0.0, float(k)))
    _truncate(tmp_path / "s1.dcm", 0.9)
    msg = _expect_input_error(tmp_path, lambda: load_image(tmp_path))
    assert "s1.dcm" in msg


# ------------------------------------------------------------------------------ writers


def test_writers_refuse_bad_arrays(tmp_path):
    for call, name in [(lambda p: save_png(p, np.ones((2, 2, 2))), "three.png"),
                       (lambda p: save_png(p, np.array([[0.0, np.nan]])), "nan.png"),
                       (lambda p: save_png(p, np.ones((2, 2)), vmin=1.0, vmax=1.0), "win.png"),
                       (lambda p: save_nifti(p, np.ones(4)), "one.nii"),
                       (lambda p: save_nifti(p, np.ones((2, 2)), affine=np.eye(3)), "aff.nii"),
                       (lambda p: save_npy(p, np.array(["a", "b"])), "str.npy"),
                       (lambda p: save_npy(p, np.zeros((0,))), "empty.npy")]:
        path = tmp_path / name
        _expect_input_error(path, lambda: call(path))
        assert not path.exists()
    assert os.listdir(tmp_path) == []


def _half_then_fail(fh, *args, **kwargs):
    fh.write(b"\x93NUMPY half-written")
    raise RuntimeError("disk on fire")


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.npy"
    monkeypatch.setattr(np, "save", _half_then_fail)
    with pytest.raises(RuntimeError):
        save_npy(target, np.ones((3, 3)))
    assert not target.exists() and os.listdir(target.parent) == []


def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    save_png(target, np.eye(4))
    before = target.read_bytes()
    monkeypatch.setattr(PILImage.Image, "save", lambda self, fh, **kw: _half_then_fail(fh))
    with pytest.raises(RuntimeError):
        save_png(target, np.zeros((4, 4)))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["x.png"]


def test_write_oserror_becomes_input_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "sub" / "v.nii.gz"       # parent is a file
    _expect_input_error(target, lambda: save_nifti(target, np.ones((2, 2, 2))))


# ------------------------------------------------------------------------------ slicing


def test_slices():
    vol = np.arange(2 * 3 * 5, dtype=np.float64).reshape(2, 3, 5)
    img = Image(vol.astype(np.float32), np.eye(4), "npy", (1.0, 1.0, 1.0))
    mid = as_slice(img)
    assert mid.dtype == np.float32 and mid.shape == (2, 3)
    np.testing.assert_array_equal(mid, vol[:, :, 2])
    np.testing.assert_array_equal(as_slice(img, 1, axis=0), vol[1])
    np.testing.assert_array_equal(as_slice(vol[:, :, 0]), vol[:, :, 0])
    stack = to_2d_slices(img)
    assert stack.shape == (5, 2, 3) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack[4], vol[..., 4])
    assert to_2d_slices(img, axis=1).shape == (3, 2, 5)
    assert to_2d_slices(vol[0]).shape == (1, 3, 5)
    with pytest.raises(InputError, match="out of range"):
        as_slice(img, 5)
    with pytest.raises(InputError):
        as_slice(np.ones(4))

