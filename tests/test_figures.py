"""meddiff.eval.figures: files are written, hold real pictures, and are written atomically."""
from __future__ import annotations

import os

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from meddiff.errors import InputError
from meddiff.eval import figures


def _phantom(h: int = 48, w: int = 48, shift: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
    img = 0.8 * (((xx - shift) / 0.7) ** 2 + (yy / 0.9) ** 2 < 1)
    img += 0.2 * (((xx + 0.2) / 0.2) ** 2 + (yy / 0.3) ** 2 < 1)
    return np.clip(img, 0, 1).astype(np.float32)


def _read(path) -> np.ndarray:
    px = mpimg.imread(path)
    assert px.ndim == 3 and px.shape[2] in (3, 4)
    return px


def _only(tmp_path, name: str) -> None:
    """The folder holds exactly ``name`` (no temporary files left behind)."""
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_save_grid_writes_a_nontrivial_png(tmp_path):
    imgs = torch.from_numpy(np.stack([_phantom(shift=s)[None] for s in np.linspace(-0.3, 0.3, 6)]))
    out = figures.save_grid(tmp_path / "grid.png", imgs, nrow=3, title="samples")
    px = _read(out)
    assert px.shape[0] >= 150 and px.shape[1] >= 250  # 2 rows x 3 columns of enlarged tiles
    assert px[..., :3].var() > 0.02
    _only(tmp_path, "grid.png")


def test_save_grid_rejects_bad_shape_and_leaves_no_file(tmp_path):
    with pytest.raises(InputError):
        figures.save_grid(tmp_path / "g.png", np.zeros((4, 3, 8, 8)), nrow=2)
    with pytest.raises(InputError):
        figures.save_grid(tmp_path / "g.png", np.zeros((4, 1, 8, 8)), nrow=0)
    with pytest.raises(InputError, match="format"):
        figures.save_grid(tmp_path / "g.bmpx", np.zeros((4, 1, 8, 8)), nrow=2)
    assert list(tmp_path.iterdir()) == []


def test_save_panel_with_error_map_and_metrics(tmp_path):
    ref = _phantom()
    rec = np.clip(ref + 0.05 * np.random.default_rng(0).standard_normal(ref.shape), 0, 1)
    out = figures.save_panel(tmp_path / "panel.png",
                             [("reference", ref), ("recon", torch.from_numpy(rec)),
                              ("|error|", np.abs(rec - ref))],
                             error_columns=[2], suptitle="case 1",
                             metrics={"PSNR": 26.1234, "SSIM": 0.8})
    px = _read(out)
    assert px.shape[1] > 2 * px.shape[0]  # one row of three columns
    assert px[..., :3].var() > 0.02
    # the magma error map adds colour: some pixels have clearly different R, G, B
    assert (np.ptp(px[..., :3], axis=2) > 0.3).mean() > 0.01
    out2 = figures.save_panel(tmp_path / "panel2.pdf", [("a", ref), ("b", ref * 3)],
                              vmin=[0.0, None], vmax=[1.0, None])
    assert out2.stat().st_size > 1000
    with pytest.raises(InputError):
        figures.save_panel(tmp_path / "bad.png", [("a", ref)], vmin=[0.0, 0.0])
    with pytest.raises(InputError):
        figures.save_panel(tmp_path / "bad.png", [("a", ref)], error_columns=[3])
    with pytest.raises(InputError):
        figures.save_panel(tmp_path / "bad.png", [("a", np.zeros((2, 4, 4)))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panel.png", "panel2.pdf"]


def test_save_overlay_mask_is_red_and_prob_map_is_drawn(tmp_path):
    img = _phantom(64, 64) * 0.7
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True

    def red_fraction(px: np.ndarray) -> float:
        return float(((px[..., 0] - px[..., 1] > 0.3) & (px[..., 0] - px[..., 2] > 0.3)).mean())

    plain = _read(figures.save_overlay(tmp_path / "none.png", img, np.zeros((64, 64), bool)))
    red = _read(figures.save_overlay(tmp_path / "mask.png", img, torch.from_numpy(mask), alpha=0.6))
    assert red_fraction(plain) == 0.0
    assert 0.05 < red_fraction(red) < 0.2  # the 20x20 square is ~10 % of the image
    prob = np.clip(np.random.default_rng(1).random((64, 64)) * mask, 0, 1)
    heat = _read(figures.save_overlay(tmp_path / "prob.png", img, prob, alpha=0.8))
    assert np.abs(heat[..., :3] - plain[..., :3]).mean() > 0.005
    with pytest.raises(InputError):
        figures.save_overlay(tmp_path / "bad.png", img, prob * 2)
    with pytest.raises(InputError):
        figures.save_overlay(tmp_path / "bad.png", img, prob[:10])
    assert not (tmp_path / "bad.png").exists()


def test_save_segment_panel_draws_mask_contour_and_variance(tmp_path):
    img = _phantom(64, 64) * 0.7
    mean = np.zeros((64, 64), np.float32)
    mean[20:40, 20:40] = 0.9
    var = mean * (1 - mean)                       # 0.09 inside the square, 0 outside

    def red(px):
        return (px[..., 0] - px[..., 1] > 0.3) & (px[..., 0] - px[..., 2] > 0.3)

    def yellow(px):
        return (px[..., 0] > 0.8) & (px[..., 1] > 0.8) & (px[..., 2] < 0.3)

    def magma_top(px):
        return (px[..., 0] > 0.9) & (px[..., 1] > 0.9) & (px[..., 2] > 0.6) & (px[..., 2] < 0.85)

    def thirds(px):
        w = px.shape[1] // 3
        return px[:, :w], px[:, w:2 * w], px[:, 2 * w:]

    full = _read(figures.save_segment_panel(tmp_path / "seg.png", torch.from_numpy(img)[None],
                                            torch.from_numpy(mean), var, title="slice 0"))
    empty = _read(figures.save_segment_panel(tmp_path / "empty.png", img, 0 * mean, 0 * var))
    image_f, overlay_f, _ = thirds(full)
    image_e, overlay_e, _ = thirds(empty)
    assert red(image_f).mean() == 0.0 and red(overlay_e).mean() == 0.0
    assert 0.02 < red(overlay_f).mean() < 0.2      # the 20x20 square in a 64x64 tile
    assert yellow(overlay_f).sum() > 20 and yellow(overlay_e).sum() == 0  # the 0.5 contour
    # variance panel: the square at the top of the magma range (pale yellow, as the colour bar's
    # top); with zero variance only the colour bar carries that colour
    assert magma_top(thirds(full)[2]).sum() > magma_top(thirds(empty)[2]).sum() + 1000
    with pytest.raises(InputError):
        figures.save_segment_panel(tmp_path / "bad.png", img, mean[:10], var)
    with pytest.raises(InputError):
        figures.save_segment_panel(tmp_path / "bad.bmpx", img, mean, var)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "seg.png"]


def test_save_curve_png_and_svg(tmp_path):
    xs = [1, 2, 5, 10, 20, 50]
    ys = {"DDIM": [20, 24, 27, 29, 30, 30.5], "DDPM": [15, 18, 22, 26, 28, 30]}
    px = _read(figures.save_curve(tmp_path / "c.png", xs, ys, "steps", "PSNR [dB]", "PSNR", logx=True))
    assert px.shape[0] > 200 and px[..., :3].var() > 0.003
    svg = figures.save_curve(tmp_path / "c.svg", np.array(xs), ys, "steps", "PSNR", None)
    assert "<svg" in svg.read_text()
    with pytest.raises(InputError):
        figures.save_curve(tmp_path / "bad.png", [0, 1], {"a": [1, 2]}, "x", "y", "t", logx=True)
    with pytest.raises(InputError):
        figures.save_curve(tmp_path / "bad.png", [1, 2], {"a": [1, 2, 3]}, "x", "y", "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "c.svg"]


def test_failure_while_writing_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old contents")

    def broken_savefig(self, fh, **kwargs):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(InputError, match="cannot write"):  # OS errors become one-line InputErrors
        figures.save_grid(target, np.full((2, 1, 8, 8), 0.5), nrow=2)
    assert target.read_bytes() == b"old contents"
    _only(tmp_path, "fig.png")
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        figures.save_curve(tmp_path / "new.png", [1, 2], {"a": [1, 2]}, "x", "y", "t")
    _only(tmp_path, "fig.png")


def test_written_files_get_normal_permissions(tmp_path):
    out = figures.save_grid(tmp_path / "g.png", np.full((1, 1, 8, 8), 0.5), nrow=1)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
