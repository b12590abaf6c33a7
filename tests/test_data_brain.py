"""The MNI152 source, its slab split, and the BrainSlices / BrainPatches3D datasets."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from scipy import ndimage

from meddiff.data import brain as brain_mod
from meddiff.data.brain import load_brain, tissue_labels
from meddiff.data.datasets import BrainPatches3D, BrainSlices, default_split, section_fractions
from meddiff.data.lesions import LESIONS_EVAL
from meddiff.data.mri_signal import CONTRASTS
from meddiff.data.splits import axial_split, safe_sections, view_sections
from meddiff.errors import ConfigError, InputError


@pytest.fixture(scope="module", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDIFF_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def vol():
    return load_brain()


# ---------------------------------------------------------------- template
def test_fractions_sum_to_mask(vol):
    assert vol.gm.shape == (197, 233, 189) and vol.spacing_mm == (1.0, 1.0, 1.0)
    for a in (vol.csf, vol.gm, vol.wm, vol.t1):
        assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(vol.csf + vol.gm + vol.wm, vol.mask.astype(np.float32), atol=1e-6)
    assert 1.5e6 < vol.mask.sum() < 2.2e6  # ~1.9 litres of brain at 1 mm
    lab = vol.labels()
    np.testing.assert_array_equal(lab == 0, ~vol.mask)
    # the template T1 orders the tissues like a T1w image: WM > GM > CSF
    means = [vol.t1[lab == k].mean() for k in (1, 2, 3)]
    assert means[2] > means[1] > means[0]


def test_cache_is_npz_without_pickle(vol):
    path = brain_mod.cache_dir() / "mni152_2009_sym_v1.npz"
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"t1", "gm", "wm", "affine"} and z["gm"].dtype == np.uint8
    fresh = load_brain(use_cache=False)
    np.testing.assert_array_equal(fresh.wm, vol.wm)
    np.testing.assert_array_equal(fresh.affine, vol.affine)


def test_missing_nilearn_is_an_input_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="nilearn"):
        brain_mod.mni_files()


def test_tissue_labels_golden():
    csf = np.array([0.0, 0.6, 0.1, 0.2])
    gm = np.array([0.0, 0.3, 0.5, 0.2])
    wm = np.array([0.0, 0.1, 0.4, 0.6])
    np.testing.assert_array_equal(tissue_labels(csf, gm, wm), [0, 1, 2, 3])
    mask = np.array([0, 1, 1, 0.3])
    np.testing.assert_array_equal(tissue_labels(csf, gm, wm, mask), [0, 1, 2, 0])


# ---------------------------------------------------------------- split
def test_split_slabs_guards_disjoint(vol):
    sp = default_split()
    parts = [sp.train, sp.val, sp.test, sp.guard]
    allidx = np.concatenate(parts)
    assert np.unique(allidx).size == allidx.size  # pairwise disjoint
    np.testing.assert_array_equal(np.sort(allidx), sp.eligible)
    for slab in (sp.val, sp.test):
        assert np.all(np.diff(slab) == 1)  # contiguous
        below, above = np.arange(slab[0] - 8, slab[0]), np.arange(slab[-1] + 1, slab[-1] + 9)
        assert np.isin(below, sp.guard).all() and np.isin(above, sp.guard).all()
        assert np.abs(sp.train[:, None] - slab[None, :]).min() >= 9  # >= 8 mm gap
    # documented indices (splits.py docstring)
    assert (sp.val[0], sp.val[-1], sp.test[0], sp.test[-1]) == (47, 56, 81, 94)
    assert (sp.eligible[0], sp.eligible[-1], sp.train.size) == (22, 142, 65)
    again = axial_split(vol.mask)
    np.testing.assert_array_equal(again.train, sp.train)
    with pytest.raises(ConfigError):
        axial_split(vol.mask, val_center=0.5, test_center=0.55)


def test_safe_and_view_sections(vol):
    sp = default_split()
    held = np.zeros(vol.mask.shape[2], bool)
    held[sp.held_out()] = True
    for axis in (0, 1):
        safe = safe_sections(vol.mask, sp, axis)
        for s in safe:
            sec = np.take(vol.mask, s, axis=axis)  # (other in-plane axis, Z)
            assert not sec[:, held].any()
        assert vol.mask.shape[axis] // 2 not in safe  # central sections cut the test slab
        v, t = view_sections(vol.mask, axis, "val"), view_sections(vol.mask, axis, "test")
        assert len(v) > 5 and not np.intersect1d(v, t).size
    with pytest.raises(ConfigError):
        view_sections(vol.mask, 1, "train")


# ---------------------------------------------------------------- datasets
def _assert_item(item, size):
    img, br, tis, les = item["image"], item["brain"], item["tissue"], item["lesion"]
    assert img.shape == (1, size, size) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert br.shape == les.shape == (1, size, size) and tis.shape == (size, size)
    assert tis.dtype == torch.int64 and set(torch.unique(tis).tolist()) <= {0, 1, 2, 3}
    for m in (br, les):
        assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    assert isinstance(item["contrast"], int) and 0 <= item["contrast"] < 4


def test_slices_shapes_ranges_and_sections():
    ds = BrainSlices("train", size=64, seed=0, length=32)
    train = set(default_split().train.tolist())
    for i in range(32):
        item = ds[i]
        _assert_item(item, 64)
        assert item["section"] in train
    plain = BrainSlices("val", size=64, augment=False)
    assert len(plain) == 10 * 4
    item = plain[5]
    _assert_item(item, 64)
    assert item["section"] in default_split().val.tolist()
    np.testing.assert_array_equal(item["tissue"].numpy() == 0, item["brain"][0].numpy() == 0)
    assert BrainSlices("test", size=128, length=1)[0]["image"].shape == (1, 128, 128)
    assert BrainSlices("train", size=256, length=1)[0]["image"].shape == (1, 256, 256)
    with pytest.raises(IndexError):
        plain[len(plain)]


def test_reproducible_per_seed_and_epoch():
    a, b = BrainSlices(seed=3, length=8), BrainSlices(seed=3, length=8)
    for i in (0, 5):
        for k in ("image", "tissue", "brain"):
            assert torch.equal(a[i][k], b[i][k])
    first = a[0]["image"]
    a.set_epoch(1)
    assert not torch.equal(a[0]["image"], first)
    a.set_epoch(0)
    assert torch.equal(a[0]["image"], first)
    assert not torch.equal(BrainSlices(seed=4, length=8)[0]["image"], first)
    # val/test are a fixed set: the epoch does not change them
    v = BrainSlices("val", seed=3)
    ref = v[3]["image"]
    v.set_epoch(7)
    assert torch.equal(v[3]["image"], ref)


def test_contrast_ordering_on_real_anatomy():
    means = {}
    for c in ("T1w", "T2w", "FLAIR"):
        ds = BrainSlices("test", size=64, contrasts=(c,), augment=False)
        acc = np.zeros(4)
        for i in range(0, len(ds), 3):
            it = ds[i]
            lab = it["tissue"].numpy()
            pure = lab * (ndimage.binary_erosion(lab > 0, iterations=1))
            acc += [it["image"][0].numpy()[pure == k].mean() if k else 0 for k in range(4)]
        means[c] = acc
    t1, t2, fl = means["T1w"], means["T2w"], means["FLAIR"]
    assert t1[3] > t1[2] > t1[1]  # WM > GM > CSF
    assert t2[1] > t2[2] > t2[3]  # CSF > GM > WM
    assert fl[1] < 0.6 * fl[3] and fl[2] > fl[3]  # CSF dark, GM > WM


def test_lesions_in_wm_and_bright_on_flair():
    ds = BrainSlices("test", size=128, contrasts=("FLAIR",), lesions=LESIONS_EVAL, augment=False)
    fr, _ = section_fractions("axial", 128, tuple(int(s) for s in ds.sections))
    found = 0
    for i in range(0, len(ds), 2):
        it = ds[i]
        les = it["lesion"][0].numpy() > 0
        if les.sum() < 3:
            continue
        found += 1
        wm = fr[list(ds.sections).index(it["section"])][2]
        assert np.all(wm[les] >= 0.5)
        img = it["image"][0].numpy()
        ring = ndimage.binary_dilation(les, iterations=3) & ~ndimage.binary_dilation(les) \
            & (wm > 0.9)
        assert img[les].mean() > 1.2 * img[ring].mean()
    assert found >= 3
    healthy = BrainSlices("train", length=4)
    assert all(healthy[i]["lesion"].sum() == 0 for i in range(4))


def test_paired_and_views():
    ds = BrainSlices("train", paired=True, length=4)
    it = ds[0]
    assert it["image"].shape == (4, 64, 64) and it["contrast"].tolist() == [0, 1, 2, 3]
    # paired contrasts share anatomy: T1w and T2w anti-correlate inside the brain
    m = it["brain"][0] > 0
    corr = np.corrcoef(it["image"][0][m].numpy(), it["image"][1][m].numpy())[0, 1]
    assert corr < 0
    cor = BrainSlices("val", orientation="coronal")
    assert cor[0]["image"].shape == (1, 64, 64) and cor.spacing_mm > 2.5
    with pytest.raises(ConfigError):
        BrainSlices("train", orientation="coronal")
    with pytest.raises(ConfigError):
        BrainSlices(contrasts=("T1w", "DWI"))
    assert CONTRASTS[BrainSlices(contrasts=("FLAIR",), length=1)[0]["contrast"]] == "FLAIR"


def test_patches_3d():
    whole = BrainPatches3D("all", size=16, length=2)
    it = whole[0]
    assert it["image"].shape == (1, 16, 16, 16) and it["tissue"].shape == (16, 16, 16)
    assert 0 <= it["image"].min() and it["image"].max() <= 1 and it["brain"].sum() > 400
    patch = BrainPatches3D("test", size=8, spacing_mm=1.0, length=2, lesions=LESIONS_EVAL)
    sp = default_split()
    for z0 in patch.starts:  # 1 mm: patch slices are source slices
        assert np.isin(np.arange(z0, z0 + 8), sp.test).all()
    assert patch[1]["image"].shape == (1, 8, 8, 8)
    with pytest.raises(ConfigError):
        BrainPatches3D("train", size=16)  # whole-brain volumes cross the held-out slabs
    with pytest.raises(ConfigError):
        BrainPatches3D("test", size=32, spacing_mm=2.0)  # 64 mm does not fit a 14 mm slab
