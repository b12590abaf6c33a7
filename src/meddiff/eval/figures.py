"""Figure helpers for reports: image grids, comparison panels, overlays, curves, bars and the
segmentation panel.

Matplotlib with the Agg canvas on standalone ``Figure`` objects (no pyplot, so no global figure
state and nothing to close); :func:`new_figure` and :func:`write_figure` are public for callers
that draw their own figures. Every file is written atomically through the package's one writer,
:func:`meddiff.data.writers.atomic_write` (temporary file in the destination folder, then
``os.replace``); on any error the temporary file is removed and an existing target is left
untouched. The format follows the suffix: .png, .pdf, .svg, .jpg. Inputs may be numpy arrays or
torch tensors; complex images are shown as magnitude. Grids and overlays take image space
[0, 1] and clip to it for display; panels take any range (see ``vmin`` / ``vmax``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from meddiff.data.writers import atomic_write
from meddiff.errors import InputError

FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")
Range = float | Sequence[float | None] | None


def _array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.abs() if x.is_complex() else x
        return x.to(torch.float64).numpy()
    a = np.asarray(x)
    a = np.abs(a) if np.iscomplexobj(a) else a
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {a.dtype}")
    return a.astype(np.float64)


def _target(path: str | Path) -> tuple[Path, str]:
    """``(path, format)`` for a figure file; InputError for a suffix not in :data:`FORMATS`."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InputError(f"unsupported figure format {path.suffix!r}; use one of "
                         f"{', '.join('.' + f for f in FORMATS)}")
    return path, fmt


def new_figure(width: float, height: float) -> Figure:
    """A standalone matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas
    (no pyplot state; nothing to close)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def write_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` to ``path`` (format from the suffix, see :data:`FORMATS`; tight bounding
    box) atomically with :func:`meddiff.data.writers.atomic_write`. Returns the path."""
    path, fmt = _target(path)
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight"))


def _image2d(x, name: str) -> np.ndarray:
    a = _array(x, name)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2D image (H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or Inf")
    return a


def _cmap(name: str):
    if name not in colormaps:
        raise InputError(f"unknown matplotlib colormap {name!r}")
    return colormaps[name]


def _rgba(color: str) -> tuple[float, float, float, float]:
    try:
        return to_rgba(color)
    except ValueError:
        raise InputError(f"unknown matplotlib colour {color!r}") from None


def _hide_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- grid


def save_grid(path: str | Path, images, nrow: int = 8, title: str | None = None,
              dpi: int = 100) -> Path:
    """Tile images (N, 1, H, W) in image space [0, 1] into a grid, ``nrow`` images per row.

    ``nrow`` counts images per row (as in torchvision's ``make_grid``); tiles are separated by a
    2-pixel white border; values are clipped to [0, 1] and shown in grey.
    """
    _target(path)  # refuse an unknown format before drawing
    x = _array(images, "images")
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] == 0:
        raise InputError(f"images must have shape (N, 1, H, W) with N >= 1, got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("images contain NaN or Inf")
    if nrow < 1:
        raise InputError(f"nrow must be >= 1, got {nrow}")
    n, _, h, w = x.shape
    cols, rows, pad = min(nrow, n), math.ceil(n / nrow), 2
    mosaic = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad))
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        mosaic[y0:y0 + h, x0:x0 + w] = np.clip(x[i, 0], 0.0, 1.0)
    scale = max(1.0, 96.0 / max(h, w)) / dpi  # inches per pixel; small tiles get enlarged
    fig = new_figure(max(2.0, mosaic.shape[1] * scale), max(2.0, mosaic.shape[0] * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return write_figure(fig, path, dpi=dpi)


# ----------------------------------------------------------------------------- panel


def _per_column(value: Range, n: int, name: str) -> list[float | None]:
    if value is None or isinstance(value, int | float):
        return [None if value is None else float(value)] * n
    vals = list(value)
    if len(vals) != n:
        raise InputError(f"{name} must be a number or one value per column ({n}), got {len(vals)}")
    return [None if v is None else float(v) for v in vals]


def _suptitle(suptitle: str | None, metrics: Mapping[str, float] | None) -> str | None:
    parts = [suptitle] if suptitle else []
    parts += [f"{k} {v:.4g}" for k, v in (metrics or {}).items()]
    return " | ".join(parts) or None


def save_panel(path: str | Path, columns: Sequence[tuple[str, object]], vmin: Range = 0.0,
               vmax: Range = 1.0, cmap: str = "gray", error_columns: Sequence[int] = (),
               error_cmap: str = "magma", suptitle: str | None = None,
               metrics: Mapping[str, float] | None = None, dpi: int = 100) -> Path:
    """One row of titled 2D images, e.g. ``[("input", x), ("recon", y), ("|error|", e)]``.

    vmin / vmax: a number shared by all image columns (default the image-space range [0, 1]),
    one value per column (``None`` = that column's own min / max), or ``None`` (all automatic).
    error_columns: indices drawn with ``error_cmap`` and a colour bar; a shared number does not
    apply to them (their range is [min(0, e.min()), e.max()] unless given per column).
    suptitle and ``metrics`` (e.g. ``{"PSNR": 31.2, "SSIM": 0.91}``) form the figure title.
    """
    _target(path)  # refuse an unknown format before drawing
    if not columns:
        raise InputError("save_panel needs at least one column")
    imgs = [_image2d(a, f"column {t!r}") for t, a in columns]
    n = len(imgs)
    errs = set(error_columns)
    if not errs <= set(range(n)):
        raise InputError(f"error_columns must be indices in [0, {n}), got {sorted(errs)}")
    shared = not isinstance(vmin, Sequence) and not isinstance(vmax, Sequence)
    lo, hi = _per_column(vmin, n, "vmin"), _per_column(vmax, n, "vmax")
    cm, ecm = _cmap(cmap), _cmap(error_cmap)
    fig = new_figure(2.6 * n, 2.9)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, ((title, _), img, ax) in enumerate(zip(columns, imgs, axes)):
        is_err = i in errs
        a, b = (None, None) if (is_err and shared) else (lo[i], hi[i])
        if is_err:
            a = min(0.0, float(img.min())) if a is None else a
        im = ax.imshow(img, cmap=ecm if is_err else cm, vmin=a, vmax=b,
                       interpolation="nearest")
        ax.set_title(str(title), fontsize=10)
        _hide_axes(ax)
        if is_err:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    text = _suptitle(suptitle, metrics)
    if text:
        fig.suptitle(text, fontsize=11)
    return write_figure(fig, path, dpi=dpi)


# ----------------------------------------------------------------------------- overlay


def save_overlay(path: str | Path, image, mask_or_prob, alpha: float = 0.5,
                 title: str | None = None, cmap: str = "autumn", mask_color: str = "red",
                 dpi: int = 100) -> Path:
    """Grey image (H, W) in [0, 1] with a mask or probability map (H, W) drawn on top.

    A boolean (or 0/1 integer) mask is drawn in ``mask_color`` with opacity ``alpha``; a float
    map in [0, 1] (probability / anomaly score) is coloured with ``cmap`` with opacity
    ``alpha * p``, so p = 0 is transparent and p = 1 has opacity ``alpha``.
    """
    _target(path)  # refuse an unknown format before drawing
    img = np.clip(_image2d(image, "image"), 0.0, 1.0)
    is_mask = (mask_or_prob.dtype == torch.bool or not mask_or_prob.is_floating_point()) \
        if isinstance(mask_or_prob, torch.Tensor) else np.asarray(mask_or_prob).dtype.kind in "biu"
    p = _image2d(mask_or_prob, "mask_or_prob")
    if p.shape != img.shape:
        raise InputError(f"shape mismatch: image {img.shape} vs mask_or_prob {p.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if p.min() < 0.0 or p.max() > 1.0:
        raise InputError("mask_or_prob must lie in [0, 1] (bool mask or probability map)")
    if is_mask:
        rgba = np.broadcast_to(np.array(_rgba(mask_color)), p.shape + (4,)).copy()
    else:
        rgba = _cmap(cmap)(p)
    rgba[..., 3] = alpha * p
    fig = new_figure(4.0, 4.3 if title else 4.0)
    ax = fig.add_subplot()
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.imshow(rgba, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return write_figure(fig, path, dpi=dpi)


# ----------------------------------------------------------------------------- curve


def save_curve(path: str | Path, xs, ys_by_label: Mapping[str, object], xlabel: str,
               ylabel: str, title: str | None = None, logx: bool = False, dpi: int = 100) -> Path:
    """Line plot of several series over shared x values, e.g. PSNR vs number of steps.

    xs: (n,) numbers; ys_by_label: {label: (n,) numbers}, one line each (markers when n <= 30);
    ``logx`` needs positive xs.
    """
    _target(path)  # refuse an unknown format before drawing
    x = _array(xs, "xs").ravel()
    if not ys_by_label:
        raise InputError("save_curve needs at least one series")
    series = {str(k): _array(v, f"series {k!r}").ravel() for k, v in ys_by_label.items()}
    bad = [k for k, v in series.items() if v.shape != x.shape]
    if bad:
        raise InputError(f"series {bad} do not have the {x.size} values of xs")
    if logx and (x <= 0).any():
        raise InputError("logx needs strictly positive xs")
    fig = new_figure(5.0, 3.6)
    ax = fig.add_subplot()
    for label, y in series.items():
        ax.plot(x, y, marker="o" if x.size <= 30 else None, markersize=3, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return write_figure(fig, path, dpi=dpi)


# ----------------------------------------------------------------------------- bars


def save_bars(path: str | Path, values: Mapping[str, float], ylabel: str, title: str | None = None,
              logy: bool = False, dpi: int = 100) -> Path:
    """Horizontal bar chart of named values (e.g. FD-MedEnc of several image sets), labelled."""
    _target(path)  # refuse an unknown format before drawing
    if not values:
        raise InputError("save_bars needs at least one value")
    names, vals = list(values), _array(list(values.values()), "values").ravel()
    if logy and (vals <= 0).any():
        raise InputError("a log axis needs strictly positive values")
    fig = new_figure(6.0, 0.5 * len(names) + 1.2)
    ax = fig.add_subplot()
    ax.barh(range(len(names)), vals, color="#4c72b0")
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.invert_yaxis()
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
    if logy:
        ax.set_xscale("log")
    ax.set_xlabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, dpi=dpi)


# ----------------------------------------------------------------------------- segmentation


def save_segment_panel(path: str | Path, image01, mean, var, title: str | None = None,
                       dpi: int = 100) -> Path:
    """Three panels of one slice of a segmentation ensemble (Wolleb et al. 2022, MIDL):

    1. ``image01`` (H, W) in image space [0, 1] (clipped), grey;
    2. the image with the ensemble's mean mask ``mean`` (H, W, clipped to [0, 1]) drawn in red
       with opacity 0.6 x mean, and the mean's 0.5 contour in yellow (when it crosses 0.5);
    3. the per-pixel variance ``var`` (H, W, >= 0; at most 0.25 for binary samples), magma,
       range [0, max(var.max(), 1e-6)], with a colour bar.

    ``title`` (optional) is the figure title. Inputs may be numpy arrays or torch tensors with
    leading singleton axes; shapes must agree. Atomic; returns the path.
    """
    _target(path)  # refuse an unknown format before drawing
    img = np.clip(_image2d(image01, "image"), 0.0, 1.0)
    m = np.clip(_image2d(mean, "mean mask"), 0.0, 1.0)
    v = _image2d(var, "variance")
    if not img.shape == m.shape == v.shape:
        raise InputError(f"shape mismatch: image {img.shape}, mean mask {m.shape}, "
                         f"variance {v.shape}")
    fig = new_figure(7.8, 2.9)
    axes = fig.subplots(1, 3)
    rgba = np.zeros(m.shape + (4,))
    rgba[..., 0], rgba[..., 3] = 1.0, 0.6 * m
    for ax, t in zip(axes, ("image", "mean mask (>= 0.5 contour)", "variance")):
        ax.set_title(t, fontsize=10)
        _hide_axes(ax)
    axes[0].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1].imshow(rgba, interpolation="nearest")
    if m.min() < 0.5 <= m.max():
        axes[1].contour(m, levels=[0.5], colors="yellow", linewidths=0.8)
    im = axes[2].imshow(v, cmap="magma", vmin=0.0, vmax=max(float(v.max()), 1e-6),
                        interpolation="nearest")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=11)
    return write_figure(fig, path, dpi=dpi)
