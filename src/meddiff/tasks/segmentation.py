"""Lesion segmentation task: G2 ensembles (Wolleb et al. 2022, MIDL;
:mod:`meddiff.methods.segmentation.ensembles`) or the supervised UNet baseline on a file,
model loading through the store.

:func:`segment_file` reads a 2D image or every slice of a volume (percentile-normalised to
[0, 1]), draws ``samples`` masks per slice from the conditional mask DDPM (or runs the UNet
once) and writes

- ``out`` (.nii / .nii.gz): the mean of the sampled masks, in [0, 1] on the file's grid
  (threshold at 0.5 for a binary mask);
- ``<out>_var.nii[.gz]``: the per-pixel variance of the samples (uncertainty), in [0, 0.25];
- ``<out>.png``: image / mean-mask overlay / variance of the middle slice;
- ``<out>_labels.nii[.gz]`` with a ``threshold``: the uint8 label map ``mean >= threshold``
  (0 / 1), as segmentation tools expect;
- ``<out>.json``: the sidecar (:mod:`meddiff.tasks.batch`; a folder ``input`` is every file in
  it, ``out`` then a folder).

Intensity contract: the images are converted to model space here; masks come back as
probabilities in [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from meddiff.data.intensity import to_model
from meddiff.data.writers import all_or_nothing, save_nifti
from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.segmentation.ensembles import Segmentation, segment
from meddiff.tasks.batch import file_task
from meddiff.tasks.inputs import load_model, read_slices
from meddiff.tasks.outputs import (Grid, check_outputs, output_paths, segmentation_panel,
                                  to_file_grid)
from meddiff.zoo.store import LoadedModel, load

OUTPUT_SUFFIXES = ("_var", ".png")
LABELS = "_labels"  # the thresholded label map beside the mean mask
SAMPLERS = ("ddpm", "ddim")


def load_mask_ddpm(name: str | None = None, device: str = "auto") -> LoadedModel:
    """The conditional mask DDPM (default: the registered default of ``ensemble``, the bundled
    ``seg-ddpm-64``), loaded as :func:`~meddiff.tasks.inputs.load_model` does. One-line
    :class:`InputError` when it is not a mask model (image concatenated to a one-channel
    mask)."""
    model = load_model(name or registry.methods("segmentation")["ensemble"].default_model,
                       device=device)
    net = model.spec.net
    if net.in_channels != 2 or net.out_channels != 1:
        raise InputError(f"{model.name}: not a mask DDPM (needs 2 input channels, mask + image, "
                         f"and 1 output; has {net.in_channels} / {net.out_channels})")
    return model


def load_seg_unet(name: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """The supervised segmentation UNet (default: the bundled ``seg-unet-64``), eval mode."""
    default = registry.methods("segmentation")["unet"].default_model
    return load(name or default, kind="seg-unet", device=device).net


UNET_DIVISOR = 16  # the supervised segmentation UNet (MONAI BasicUNet) halves the image 4 times


def segment_images(den, images01: torch.Tensor, samples: int, sampler: str, steps: int,
                   seed: int, batch_size: int = 64, progress: bool = False) -> Segmentation:
    """G2 on image-space slices (N, 1, H, W) in [0, 1] (converted to model space here), any
    H, W the mask DDPM's network divides; ``batch_size`` network rows (slice x sample) at a
    time, ``progress``: a bar over them."""
    return segment(den, to_model(images01), samples, sampler, steps, seed, batch_size, progress)


def _check_options(input: str, out: str, samples, steps, sampler, seed, batch_size,
                   threshold) -> None:
    if not (isinstance(samples, int) and samples >= 1):
        raise InputError(f"--samples must be >= 1, got {samples}")
    if not (isinstance(steps, int) and steps >= 1):
        raise InputError(f"--steps must be >= 1, got {steps}")
    if sampler not in SAMPLERS:
        raise InputError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if threshold is not None and not 0 < threshold <= 1:
        raise InputError(f"--threshold must be in (0, 1], got {threshold}")
    if not Path(input).exists():
        raise InputError(f"{input}: no such file or folder")
    output_paths(out, *OUTPUT_SUFFIXES)


def _suffixes(threshold: float | None) -> tuple[str, ...]:
    return OUTPUT_SUFFIXES + ((LABELS,) if threshold is not None else ())


@all_or_nothing()
def write_outputs(out_path: str | Path, images01: torch.Tensor, result: Segmentation,
                  grid: Grid, threshold: float | None = None) -> list[str]:
    """Mean mask, variance map (the file's grid and affine), the PNG panel of the middle
    slice and, with a ``threshold``, the uint8 label map ``mean >= threshold``; every file
    atomic, all together or none."""
    mean_path, var_path, png_path, *labels = output_paths(out_path, *_suffixes(threshold))
    mean = to_file_grid(result.mean, grid).clip(0.0, 1.0)
    save_nifti(mean_path, mean, grid.affine)
    save_nifti(var_path, to_file_grid(result.var, grid).clip(0.0, None), grid.affine)
    segmentation_panel(png_path, images01, result.mean, result.var, result.samples.shape[1])
    if labels:
        save_nifti(labels[0], (mean >= threshold).astype(np.uint8), grid.affine, np.uint8)
    return [str(p) for p in (mean_path, var_path, png_path, *labels)]


def _run(method: str, model, resize: bool, device: str, input: str, samples: int,
         steps: int, sampler: str, seed: int, batch_size: int, progress: bool):
    """(model name, slices, Segmentation) of ``method`` on the file's own grid: the G2
    ensemble of the mask DDPM, or the supervised UNet baseline (one deterministic "sample",
    variance 0), in batches."""
    if method == "unet":
        stored = load(model or registry.methods("segmentation")["unet"].default_model,
                      kind="seg-unet", device="cpu")
        sl = read_slices(input, stored.spec.image_size, resize=resize, divisor=UNET_DIVISOR)
        unet = registry.get("segmentation", "unet")
        parts = [unet(stored.net, to_model(sl.images[i:i + batch_size]))
                 for i in tqdm(range(0, len(sl.images), batch_size), desc="segment",
                               unit="batch", leave=False, disable=not progress)]
        return stored.name, sl, Segmentation(
            *(torch.cat([getattr(p, k) for p in parts]) for k in ("mean", "var", "samples")),
            sum(p.nfe for p in parts), sum(p.seconds for p in parts))
    ddpm = load_mask_ddpm(model, device)
    sl = read_slices(input, ddpm.spec.image_size, resize=resize, divisor=ddpm.spec.net.divisor)
    return ddpm.name, sl, segment_images(ddpm.denoiser, sl.images, samples, sampler, steps,
                                         seed, batch_size, progress)


@file_task("segment")
def segment_file(input, out, *, method="ensemble", samples=8, steps=50, sampler="ddpm",
                 model=None, threshold=None, resize=False, device="auto", seed=0,
                 batch_size=64, progress=False, overwrite=False) -> dict:
    """``meddiff segment`` (module docstring): ``method`` is a registered segmentation method,
    ``ensemble`` (G2) or the baseline ``unet`` (``samples``, ``steps`` and ``sampler`` apply to
    the ensemble only). The slices are the file's sections in the models' frame on its own
    grid (``resize``: resampled to the model's training size, aspect kept, and back);
    ``batch_size`` network rows at a time (ensemble: slice x sample; ``progress``: a bar over
    the batches). ``threshold`` in (0, 1]: also the label map ``<out>_labels``. Every check
    (options, output name, input file, model) runs before anything is written; existing
    outputs are replaced only with ``overwrite``, an input never
    (:func:`~meddiff.tasks.outputs.check_outputs`).

    Returns ``{"input", "method", "model", "samples", "sampler", "steps", "slices",
    "threshold", "lesion_pixels" (mean >= threshold, default 0.5), "max_variance", "nfe",
    "seconds", "outputs"}``.
    """
    registry.get("segmentation", method)  # one-line error listing the choices
    _check_options(str(input), str(out), samples, steps, sampler, seed, batch_size, threshold)
    check_outputs(output_paths(out, *_suffixes(threshold)), [input], overwrite)
    name, sl, result = _run(method, model, resize, device, str(input), samples, steps, sampler,
                            seed, batch_size, progress)
    result = sl.crop(result)  # the padding to the network's divisor: not part of the file
    written = write_outputs(out, sl.crop(sl.images), result, Grid.of(sl), threshold)
    cut = 0.5 if threshold is None else threshold
    return {"method": method, "model": name, "samples": result.samples.shape[1],
            "sampler": sampler, "steps": steps if method == "ensemble" else 0,
            "slices": len(sl.images), "threshold": cut,
            "lesion_pixels": int((result.mean >= cut).sum()),
            "max_variance": round(float(result.var.max()), 5), "nfe": result.nfe,
            "seconds": round(result.seconds, 3), "outputs": written}
