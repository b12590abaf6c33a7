"""``meddiff segment``: lesion segmentation ensembles (G2, Wolleb et al. 2022, MIDL) on a file.

Reads a 2D image or every slice of a volume (NIfTI, DICOM, PNG, TIFF, NPY; percentile-normalised
to [0, 1] like the rest of the CLI), draws ``--samples`` masks per slice from the conditional
mask DDPM (:mod:`meddiff.methods.segmentation`) and writes

- ``OUT`` (.nii / .nii.gz): the mean of the sampled masks, in [0, 1] on the file's grid
  (threshold at 0.5 for a binary mask);
- ``<OUT>_var.nii[.gz]``: the per-pixel variance of the samples (uncertainty), in [0, 0.25];
- ``<OUT>.png``: image / mean-mask overlay / variance of the middle slice.

Every check (options, output name, input file, model) runs before anything is written; each
file is written atomically.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.cli import common_options
from meddiff.errors import InputError
from meddiff.methods import segmentation as seg


def add_segment_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``segment`` sub-command to the ``subparsers`` of
    :func:`meddiff.cli.build_parser`."""
    s = subparsers.add_parser(
        "segment", help="segment lesions with a diffusion ensemble: mean mask, variance map, "
                        "PNG overlay")
    s.add_argument("--input", required=True, help="image (NIfTI, DICOM, PNG, TIFF, NPY); "
                                                  "T2w or FLAIR brain MRI")
    s.add_argument("--samples", type=int, default=seg.DEFAULT_SAMPLES,
                   help=f"masks sampled per slice (default {seg.DEFAULT_SAMPLES})")
    s.add_argument("--steps", type=int, default=seg.DEFAULT_STEPS,
                   help=f"reverse diffusion steps per sample (default {seg.DEFAULT_STEPS})")
    s.add_argument("--sampler", default=seg.DEFAULT_SAMPLER, choices=("ddpm", "ddim"))
    s.add_argument("--model", default=None,
                   help=f"mask DDPM NAME.json (default: the bundled {seg.DDPM_NAME})")
    s.add_argument("--resize", action="store_true", help="resample slices to the model's size")
    s.add_argument("--out", required=True,
                   help="output NIfTI (.nii.gz) of the mean mask; <out>_var.nii.gz and "
                        "<out>.png are written beside it")
    common_options(s, json_flag=True)
    s.set_defaults(func=cmd_segment)
    return s


def output_paths(out_path: str | Path) -> tuple[Path, Path, Path]:
    """``(mean, var, panel)`` paths for ``out.nii[.gz]``: ``out_var.nii[.gz]``, ``out.png``."""
    out = Path(out_path)
    name = out.name
    low = name.lower()
    suffix = ".nii.gz" if low.endswith(".nii.gz") else ".nii" if low.endswith(".nii") else None
    if suffix is None or len(name) == len(suffix):
        raise InputError(f"{out}: the output must be a NIfTI file name (.nii or .nii.gz)")
    stem = name[:-len(suffix)]
    return out, out.with_name(f"{stem}_var{suffix}"), out.with_name(f"{stem}.png")


def _check_options(a: argparse.Namespace) -> None:
    if a.samples < 1:
        raise InputError(f"--samples must be >= 1, got {a.samples}")
    if a.steps < 1:
        raise InputError(f"--steps must be >= 1, got {a.steps}")
    if a.seed < 0:
        raise InputError(f"--seed must be >= 0, got {a.seed}")
    if not Path(a.input).exists():
        raise InputError(f"{a.input}: no such file or folder")
    output_paths(a.out)


def to_file_grid(maps: torch.Tensor, shape: tuple[int, int], ndim: int) -> np.ndarray:
    """Maps (N, 1, S, S) -> the file's grid: (H, W) for a 2D file, (H, W, N) for a volume
    (slice axis last), bilinear when the slices were resampled; values unchanged otherwise."""
    if tuple(maps.shape[-2:]) != tuple(shape):
        maps = F.interpolate(maps, size=shape, mode="bilinear", align_corners=False)
    vol = maps[:, 0].numpy().astype(np.float32)
    return vol[0] if ndim == 2 else np.moveaxis(vol, 0, -1)


def save_segment_panel(path: str | Path, image01, mean, var, title: str | None = None) -> Path:
    """PNG panel of one slice: the image, the mean mask drawn over it (red, opacity 0.6 x
    mean) with its 0.5 contour, and the variance map (magma, colour bar). Inputs (H, W)."""
    from meddiff.eval import figures as fg

    target = fg._target(path)
    img = np.clip(fg._image2d(image01, "image"), 0.0, 1.0)
    m = np.clip(fg._image2d(mean, "mean mask"), 0.0, 1.0)
    v = fg._image2d(var, "variance")
    fig = fg._new_figure(7.8, 2.9)
    axes = fig.subplots(1, 3)
    rgba = np.zeros(m.shape + (4,))
    rgba[..., 0], rgba[..., 3] = 1.0, 0.6 * m
    for ax, t in zip(axes, ("image", "mean mask (>= 0.5 contour)", "variance")):
        ax.set_title(t, fontsize=10)
        fg._hide_axes(ax)
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
    return fg._write(fig, *target, dpi=100)


def write_outputs(out_path: str | Path, images01: torch.Tensor, result: seg.Segmentation,
                  shape: tuple[int, int], ndim: int, affine) -> list[str]:
    """Mean mask, variance map (file grid, ``affine``) and the PNG panel of the middle slice."""
    mean_path, var_path, png_path = output_paths(out_path)
    mean = to_file_grid(result.mean, shape, ndim).clip(0.0, 1.0)
    var = to_file_grid(result.var, shape, ndim).clip(0.0, None)
    from meddiff.data.io import save_nifti

    save_nifti(mean_path, mean, affine)
    save_nifti(var_path, var, affine)
    mid = len(images01) // 2
    save_segment_panel(png_path, images01[mid, 0], result.mean[mid, 0], result.var[mid, 0],
                       title=f"slice {mid}: {result.samples.shape[1]} samples")
    return [str(mean_path), str(var_path), str(png_path)]


def cmd_segment(a: argparse.Namespace) -> None:
    """Run ``meddiff segment`` (see the module docstring)."""
    from meddiff import api

    _check_options(a)
    model = seg.load_seg_ddpm(a.model, device=api.device_of(a.device))
    sl = api.read_slices(a.input, model.spec.image_size, resize=a.resize)
    result = seg.segment(model.denoiser, sl.images, a.samples, a.sampler, a.steps, a.seed)
    written = write_outputs(a.out, sl.images, result, sl.shape, sl.image.array.ndim,
                            np.asarray(sl.image.affine))
    area = int(result.mask.sum())
    if a.json:
        print(json.dumps({"samples": a.samples, "sampler": a.sampler, "steps": a.steps,
                          "slices": len(sl.images), "lesion_pixels": area,
                          "max_variance": round(float(result.var.max()), 5), "nfe": result.nfe,
                          "seconds": round(result.seconds, 3), "outputs": written}, indent=2))
        return
    print(f"{len(sl.images)} slice(s), {a.samples} samples x {a.steps} {a.sampler} steps: "
          f"{area} lesion pixels (mean >= 0.5), {result.nfe} network evaluations, "
          f"{result.seconds:.2f} s")
    print(f"wrote {', '.join(written)}")


__all__ = ["add_segment_parser", "cmd_segment", "output_paths", "to_file_grid",
           "save_segment_panel", "write_outputs"]
