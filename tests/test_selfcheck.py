"""The ground-truth-free self-check: hold-out splits (meddiff.physics.holdout), held-out scoring
and blend selection (meddiff.tasks.selfcheck), and its wiring into ``meddiff reconstruct``."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from meddiff import api, cli
from meddiff.errors import InputError
from meddiff.physics import Inpainting, PhaseModulated, calibration_region, random_pixel_mask
from meddiff.physics.acquisition import simulate_ct, simulate_mri
from meddiff.physics.holdout import split_measurement
from meddiff.tasks import selfcheck as sc
from meddiff.tasks import reconstruction as rt
from meddiff.tasks.reconstruction import Result
from tiny_model import save_tiny

S = 32


def _phantom(n: int = 2, size: int = S) -> torch.Tensor:
    """Blobs and edges in [0, 1], (n, 1, size, size)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    out = [0.7 * torch.exp(-((xx - 0.3 * k) ** 2 + yy ** 2) / 0.2) + 0.3 * (xx > 0.2 * k - 0.3)
           * (yy.abs() < 0.5) for k in range(n)]
    return torch.stack(out)[:, None].clamp(0, 1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


# ------------------------------------------------------------------------------ splits
@pytest.mark.parametrize("mask,coils", [("random", 1), ("equispaced", 4), ("poisson", 1)])
def test_mri_split_partitions_the_mask_outside_the_calibration_region(mask, coils):
    op, y = simulate_mri(_phantom(), mask, 4.0, coils=coils, seed=1)
    rows, cols = calibration_region(op.mask)
    for seed in range(5):
        h = split_measurement(op, y, 0.1, seed)
        fit, held = h.fit_op.mask, h.held_op.mask
        assert type(h.fit_op) is type(op) and not (fit & held).any()
        assert torch.equal(fit | held, op.mask) and not held[rows, cols].any()
        assert torch.equal(h.fit_y + h.held_y, y)
        assert torch.equal(h.held_y, y * held)
    lines = mask != "poisson"
    n = int(op.mask[0].sum()) if lines else int(op.mask.sum())
    assert h.units == ("k-space lines" if lines else "k-space samples")
    assert h.n_measured == n and h.n_held == round(0.1 * n) >= 1
    if lines:  # whole columns
        assert torch.equal(held, held[:1].expand_as(held)) and int(held[0].sum()) == h.n_held
    again = split_measurement(op, y, 0.1, 4)
    assert torch.equal(again.held_op.mask, held)
    assert len({tuple(split_measurement(op, y, 0.1, s).held_op.mask.flatten().nonzero()
                      .flatten().tolist()) for s in range(5)}) > 1


def test_phase_modulated_mri_splits_its_inner_operator_and_keeps_the_phase():
    x = _phantom(1)
    op, y = simulate_mri(x, "random", 4.0, seed=0)
    phase = torch.full((1, 1, S, S), 0.7)
    pm = PhaseModulated(op, phase)
    h = split_measurement(pm, pm.A(x.to(torch.complex64)), 0.2, 0)
    assert isinstance(h.held_op, PhaseModulated)
    assert torch.allclose(h.held_op.A(x.to(torch.complex64)), h.held_y, atol=1e-6)


def test_ct_split_partitions_the_views_and_keeps_the_geometry():
    x = _phantom()
    op, y = simulate_ct(x, views=30)
    h = split_measurement(op, y, 0.1, seed=2)
    assert h.units == "projection views" and h.n_held == 3 and h.n_measured == 30
    fit_idx = [int((op.angles == a).nonzero()) for a in h.fit_op.angles]
    held_idx = [int((op.angles == a).nonzero()) for a in h.held_op.angles]
    assert sorted(fit_idx + held_idx) == list(range(30))
    assert [held_idx[i + 1] - held_idx[i] for i in range(2)] != [1, 1]  # spread, one per tenth
    assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(held_idx))
    for part, idx in ((h.fit_op, fit_idx), (h.held_op, held_idx)):
        assert part.n_detectors == op.n_detectors and part.img_shape == op.img_shape
        assert part.backend == op.backend
        assert torch.allclose(part.A(x), op.A(x)[:, :, idx], atol=1e-5)
    assert torch.equal(h.fit_y, y[:, :, fit_idx]) and torch.equal(h.held_y, y[:, :, held_idx])


@pytest.mark.parametrize("make,message", [
    (lambda: simulate_mri(_phantom(1), "equispaced", 1.0), "nothing to hold out"),
    (lambda: simulate_ct(_phantom(1), views=1), "nothing to hold out"),
    (lambda: (Inpainting(random_pixel_mask((S, S), 0.5, seed=0)), torch.zeros(1, 1, S, S)),
     "self-check supports MRI and CT operators"),
])
def test_unsplittable_data_raise_one_line(make, message):
    op, y = make()
    with pytest.raises(InputError, match=message):
        split_measurement(op, y)
    with pytest.raises(InputError, match="fraction must be in"):
        split_measurement(*simulate_ct(_phantom(1), views=8), fraction=1.0)


# ------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("simulate", [lambda x: simulate_mri(x, "random", 4.0, seed=3),
                                      lambda x: simulate_mri(x, "poisson", 4.0, coils=4),
                                      lambda x: simulate_ct(x, views=20)])
def test_held_out_error_is_zero_for_the_truth_and_large_for_wrong_images(simulate):
    x = _phantom()
    h = split_measurement(*simulate(x), 0.2, 0)
    assert float(sc.held_out_error(x, h).max()) < 1e-5
    assert torch.allclose(sc.held_out_error(torch.zeros_like(x), h), torch.ones(2))
    assert float(sc.held_out_error(_blur(x), h).min()) > 0.02


def test_the_blend_selection_picks_the_candidate_that_predicts_the_held_out_data():
    x = _phantom(3)
    h = split_measurement(*simulate_mri(x, "random", 4.0, seed=0), 0.2, 0)
    garbage = torch.rand_like(x)
    assert torch.equal(sc.choose_weights(sc.blend_errors(x, garbage, h)), torch.ones(3))
    assert torch.equal(sc.choose_weights(sc.blend_errors(garbage, x, h)), torch.zeros(3))
    d = 0.1 * torch.randn_like(x)  # the midpoint of x + d and x - d is the truth
    errors = sc.blend_errors(x + d, x - d, h)
    assert torch.equal(sc.choose_weights(errors), torch.full((3,), 0.5))
    for k, w in enumerate(sc.WEIGHTS):  # blended predictions == predictions of the blend
        mix = sc.blend(x + d, x - d, torch.full((3,), w))
        assert torch.allclose(errors[k], sc.held_out_error(mix, h), atol=1e-6)
    mixed = torch.stack([x[0], garbage[1], x[2]])  # per slice
    assert sc.choose_weights(sc.blend_errors(mixed, torch.stack([garbage[0], x[1], garbage[2]]),
                                             h)).tolist() == [1.0, 0.0, 1.0]


def _fake_run(truth: torch.Tensor, prior_is_right: bool):
    """A stand-in for :func:`meddiff.tasks.reconstruction.run`: the truth from one method,
    noise from the other, whatever the data (no network)."""
    def fake(model, op, y, method, **kw):
        right = (method != "cs") == prior_is_right
        image = truth if right else torch.rand(truth.shape, generator=torch.Generator()
                                               .manual_seed(0))
        return Result(image, None, 0 if method == "cs" else 5, 0.0)
    return fake


@pytest.mark.parametrize("prior_is_right", [True, False])
def test_self_check_chooses_the_right_candidate_and_warns(prior_is_right):
    x = _phantom()
    op, y = simulate_mri(x, "random", 4.0, seed=0)
    fake = _fake_run(x, prior_is_right)
    check = sc.self_check(fake, None, op, y, "mcg", steps=3)
    assert check.weights.tolist() == [float(prior_is_right)] * 2
    assert torch.allclose(check.result.image01, x) and check.result.nfe == 10
    assert float(check.scores["blend"].max()) < 1e-5
    assert torch.equal(check.scores["blend"], torch.minimum(check.scores["diffusion"],
                                                            check.scores["cs"]))
    if prior_is_right:
        assert check.warning is None
    else:
        assert "predicts the held-out k-space lines worse than CS" in check.warning
        assert "on 2 of 2 slices" in check.warning and "weight 0)" in check.warning
    assert check.held_out == "1 of 8 k-space lines"
    report = sc.report(check)
    assert json.loads(json.dumps(report))["weights"] == [float(prior_is_right)] * 2
    with pytest.raises(InputError, match="cs is a baseline"):
        sc.self_check(fake, None, op, y, "cs")


def test_self_check_with_a_tiny_network_blends_the_full_data_runs(tmp_path, one_thread):
    model = api.load_model(str(save_tiny(tmp_path)), device="cpu")
    x = _phantom(2, 16)
    op, y = simulate_ct(x, views=12)
    check = sc.self_check(rt.run, model, op, y, "diffuserecon", steps=2, n_samples=2,
                          t_refine=1)
    d, c = check.candidates["diffusion"], check.candidates["cs"]
    assert torch.allclose(check.result.image01, sc.blend(d.image01, c.image01, check.weights))
    assert check.result.image01.shape == x.shape and check.result.nfe == 2 * d.nfe > 0
    assert torch.allclose(check.result.std01, sc.blend(d.std01, 0 * d.std01, check.weights))
    assert all(s.shape == (2,) for s in check.scores.values())
    assert set(check.weights.tolist()) <= set(sc.WEIGHTS)


# ------------------------------------------------------------------------------ file task / CLI
def _nifti(path, arr) -> str:
    nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), path)
    return str(path)


def test_reconstruct_reports_the_self_check_unless_switched_off(tmp_path, capsys, one_thread):
    tiny = str(save_tiny(tmp_path))
    src = _nifti(tmp_path / "t1.nii.gz", _phantom(3, 16)[:, 0].permute(1, 2, 0).numpy() * 500)
    args = ["reconstruct", "--input", src, "--method", "score-mri", "--steps", "2",
            "--model", tiny, "--device", "cpu"]
    assert cli.main([*args, "--out", str(tmp_path / "a.nii.gz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    check = report["self_check"]
    assert check["held_out_fraction"] == 0.1 and len(check["weights"]) == 3
    assert {k: len(v) for k, v in check["held_out_error"].items()} == {
        "diffusion": 3, "cs": 3, "blend": 3}
    assert report["nfe"] == 8  # two runs of 2 predictor-corrector steps
    assert nib.load(tmp_path / "a.nii.gz").shape == (16, 16, 3)
    assert cli.main([*args, "--out", str(tmp_path / "b.nii.gz")]) == 0
    text = capsys.readouterr().out
    assert "self-check (1 of 4 k-space lines held out): held-out error diffusion" in text
    assert cli.main([*args, "--out", str(tmp_path / "c.nii.gz"), "--no-self-check",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "self_check" not in report and report["nfe"] == 4
    assert (tmp_path / "c.png").exists()
    full = api.reconstruct_file(src, tmp_path / "d.nii.gz", method="score-mri", steps=1,
                                acceleration=1, model=tiny, device="cpu")
    assert "nothing to hold out" in full["self_check"]["skipped"]
