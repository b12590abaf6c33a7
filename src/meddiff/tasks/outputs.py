"""What every task writes: output path naming, results back on the input file's grid, and the
PNG panels.

- :func:`output_paths`: the one parser of ``--out`` (a NIfTI name) and the files beside it;
- :func:`check_outputs`: what every task checks about its outputs before any work: distinct
  names, never an input, no existing file replaced without ``overwrite``, a writable folder;
- :class:`Grid` + :func:`to_file_grid`: the one way slices (N, 1, S, S) go back onto the
  file's grid (padding cropped, bilinear when they were resampled, the reorientation undone
  exactly) and, optionally, its intensity units; :meth:`Grid.crop` drops the padding of
  results (metrics, panels);
- ``*_panel``: the figures of the reconstruction, detection and segmentation tasks (public
  helpers of :mod:`meddiff.eval.figures`).

Every file is written atomically (:mod:`meddiff.data.writers`, :mod:`meddiff.eval.figures`),
and a task's files together (:func:`meddiff.data.writers.all_or_nothing`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.data.intensity import denormalize
from meddiff.data.slicing import Frame
from meddiff.errors import InputError
from meddiff.eval.figures import save_overlay, save_panel, save_segment_panel

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def output_paths(out: str | Path, *suffixes: str) -> tuple[Path, ...]:
    """``(out, *beside)`` for the NIfTI name ``out`` (``stem.nii[.gz]``): a suffix with a dot is
    a whole ending (``".png"`` -> ``stem.png``, ``"_overlay.png"`` -> ``stem_overlay.png``),
    one without keeps the NIfTI ending (``"_std"`` -> ``stem_std.nii.gz``). One-line InputError
    when ``out`` is not a NIfTI file name."""
    out = Path(out)
    low = out.name.lower()
    nifti = next((s for s in NIFTI_SUFFIXES if low.endswith(s)), None)
    if nifti is None or len(out.name) == len(nifti):
        raise InputError(f"{out}: the output must be a NIfTI file name (.nii or .nii.gz)")
    stem, ending = out.name[:-len(nifti)], out.name[-len(nifti):]
    return (out, *(out.with_name(stem + s + ("" if "." in s else ending)) for s in suffixes))


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file (resolved links, or one existing file twice)."""
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def _check_folder(path: Path) -> None:
    """The folder of ``path`` exists or can be created, and is writable."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{path}: cannot create its folder ({folder} is a file)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: the folder {folder} is not writable")


def check_outputs(paths: Iterable[str | os.PathLike], inputs: Iterable = (),
                  overwrite: bool = False) -> tuple[Path, ...]:
    """Check the files a task will write, before it does any work; returns them as paths.

    One-line InputError when two outputs share a name, when an output is one of ``inputs``
    (refused even with ``overwrite``: the result would replace its source), when an output
    is a folder, when an output exists and ``overwrite`` is false, or when its folder cannot
    be created or written. Nothing is created here.
    """
    outs = tuple(Path(p) for p in paths)
    sources = [Path(p) for p in inputs if p is not None]
    for k, out in enumerate(outs):
        clash = next((o for o in outs[:k] if _same(o, out)), None)
        if clash is not None:
            raise InputError(f"{out}: two outputs would be written to the same file ({clash}); "
                             "choose another --out")
        source = next((p for p in sources if _same(p, out)), None)
        if source is not None:
            raise InputError(f"{out}: an output would replace the input {source}; "
                             "choose another --out")
        if out.is_dir():
            raise InputError(f"{out}: is a folder, not a file name")
        if out.exists() and not overwrite:
            raise InputError(f"{out}: exists; pass --overwrite to replace it")
        _check_folder(out)
    return outs


@dataclass(frozen=True)
class Grid:
    """Where slice results go: the sections' (H, W) ``shape`` on the file's grid, the ``frame``
    that puts sections back into the file's array layout (:class:`meddiff.data.slicing.Frame`),
    the ``affine`` (4x4, index -> RAS+ mm; None: the file has no patient geometry, outputs are
    written without one), the intensity ``window`` (low, high) the file's values were mapped
    from to [0, 1] (None: the values are kept), the ``pad`` (top, bottom, left, right) the
    slices were given (the network's divisor, or the square of ``--resize``) and ``size``: the
    slices' (h, w) before the padding (``shape``, or the resampled size with ``--resize``)."""

    shape: tuple[int, int]
    frame: Frame
    affine: np.ndarray | None = None
    window: tuple[float, float] | None = None
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    size: tuple[int, int] | None = None

    @staticmethod
    def of(slices) -> Grid:
        """The grid of :class:`meddiff.tasks.inputs.Slices` read from a file."""
        image = slices.image
        return Grid(tuple(slices.shape), slices.frame or Frame(image.array.shape),
                    np.asarray(image.affine) if image.oriented else None, slices.window,
                    tuple(slices.pad), tuple(slices.size or slices.shape))

    def crop(self, x):
        """``x`` without the padding, done once right after a method runs: a tensor
        (..., h + top + bottom, w + left + right) -> (..., h, w) (``size``); a dataclass (a
        task's result): each tensor field cropped, the rest kept; None unchanged. Without
        padding ``x`` is returned as it is."""
        if is_dataclass(x) and not isinstance(x, type):
            return replace(x, **{f.name: self.crop(getattr(x, f.name)) for f in fields(x)
                                 if f.init})
        if not isinstance(x, torch.Tensor) or not any(self.pad):
            return x
        top, bottom, left, right = self.pad
        h, w = self.size or self.shape
        padded = (h + top + bottom, w + left + right)
        if tuple(x.shape[-2:]) != padded:
            raise ValueError(f"expected padded slices of {padded}, got {tuple(x.shape[-2:])}")
        return x[..., top:top + h, left:left + w]

    @staticmethod
    def plain(n: int, shape: tuple[int, int]) -> Grid:
        """``n`` slices of ``shape`` without geometry or window (k-space input): written as a
        2D image (one slice) or (H, W, n)."""
        return Grid(tuple(shape), Frame(tuple(shape) if n == 1 else (*shape, n)))


def to_file_grid(x: torch.Tensor, grid: Grid, units: str = "values") -> np.ndarray:
    """Slices ``x`` (N, 1, h, w) without padding (:meth:`Grid.crop`) onto the file's grid:
    resampled (bilinear) to ``grid.shape`` when they differ (``--resize``), put back into the
    file's array layout by ``grid.frame`` (the exact inverse of the reorientation), float32.
    ``units``: ``"values"`` keeps the values (maps, masks); ``"image"`` maps [0, 1] to the
    file's intensities through ``grid.window``; ``"scale"`` multiplies by the window's width
    (standard deviations and differences of image-space values)."""
    if units not in ("values", "image", "scale"):
        raise ValueError(f"units must be values, image or scale, got {units!r}")
    if tuple(x.shape[-2:]) != tuple(grid.shape):
        x = F.interpolate(x.float(), size=tuple(grid.shape), mode="bilinear",
                          align_corners=False)
    vol = x[:, 0].float().numpy()
    if units == "image" and grid.window is not None:
        vol = denormalize(vol, grid.window)
    elif units == "scale" and grid.window is not None:
        vol = vol * (grid.window[1] - grid.window[0])
    return grid.frame.array(vol.astype(np.float32))


# ------------------------------------------------------------------------------ panels
def reconstruction_panel(path: Path, x01: torch.Tensor, baseline01: torch.Tensor,
                         reference01: torch.Tensor | None, method: str, baseline_name: str,
                         scores: dict | None) -> Path:
    """Middle slice: reference (if any) / baseline / reconstruction / |error| (if a reference),
    PSNR / SSIM of ``method`` in the title. Images (N, 1, H, W) in [0, 1]."""
    mid = len(x01) // 2
    cols = [] if reference01 is None else [("reference", reference01[mid, 0])]
    cols += [(baseline_name, baseline01[mid, 0]), (method, x01[mid, 0])]
    if reference01 is not None:
        cols.append(("|error|", (x01[mid, 0] - reference01[mid, 0]).abs()))
    n_img = len(cols) - (reference01 is not None)
    return save_panel(path, cols, error_columns=[n_img] if reference01 is not None else [],
                      vmin=[0] * n_img + [0] * (reference01 is not None),
                      vmax=[1] * n_img + [None] * (reference01 is not None),
                      metrics={"PSNR": scores["psnr"], "SSIM": scores["ssim"]} if scores else None,
                      suptitle=f"slice {mid}")


def shown_slice(maps: torch.Tensor) -> int:
    """The slice a detection figure shows: the one with the highest 99th-percentile value."""
    return int(torch.quantile(maps.flatten(1).float(), 0.99, dim=1).argmax())


def detection_panels(panel: Path, overlay: Path, images01: torch.Tensor, recon01: torch.Tensor,
                     maps: torch.Tensor, method: str) -> list[Path]:
    """For the most anomalous slice: a panel input / healthy reconstruction / map and the map
    (scaled by its maximum) over the input. Images (N, 1, S, S) in [0, 1], maps >= 0."""
    k = shown_slice(maps)
    x, m = images01[k, 0], maps[k, 0]
    save_panel(panel, [("input", x), ("healthy reconstruction", recon01[k, 0]),
                       ("anomaly map", m)],
               vmin=[0, 0, 0], vmax=[1, 1, None], error_columns=[2],
               suptitle=f"{method}, slice {k}")
    top = float(maps.max())
    save_overlay(overlay, x, (m / top).clamp(0, 1) if top > 0 else m * 0,
                 title=f"{method}: map / {top:.3g}")
    return [panel, overlay]


def segmentation_panel(path: Path, images01: torch.Tensor, mean: torch.Tensor,
                       var: torch.Tensor, samples: int) -> Path:
    """Middle slice: image / mean mask over it / variance map."""
    mid = len(images01) // 2
    return save_segment_panel(path, images01[mid, 0], mean[mid, 0], var[mid, 0],
                              title=f"slice {mid}: {samples} samples")
