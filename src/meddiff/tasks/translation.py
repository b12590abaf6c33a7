"""Translation task: a registered translation method (:mod:`meddiff.methods.translation`) on
images or files: T1w slices in, the target domain (T2w, FLAIR or head CT) out.

    model = load_model("t1w-t2w-cddpm-native")                   # meddiff.tasks.inputs
    t2w = translate(model, read_slices("t1.nii.gz", 64).images)  # (N, 1, H, W) in [0, 1]
    translate_file("t1.nii.gz", "t2w.nii.gz", target="t2w")

Intensity contract: images in and out are in *image space* [0, 1] (the target's: CT is
``(HU + 1000) / 2000``, written back in HU).
"""
from __future__ import annotations

import os
import time

import torch

from meddiff.data.modalities import CT_WINDOW_HU
from meddiff.data.writers import save_nifti
from meddiff.errors import InputError
from meddiff.eval.figures import save_panel
from meddiff.methods import registry
from meddiff.methods.translation.paired import DIFFUSION_MODEL, TARGETS, UNET_MODEL
from meddiff.tasks.batch import batches, file_task
from meddiff.tasks.inputs import load_model, read_slices
from meddiff.tasks.options import bundled_or_error, method_options
from meddiff.tasks.outputs import Grid, check_outputs, output_paths, to_file_grid
from meddiff.zoo.store import load

DEFAULT_METHOD = "cddpm"


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}; choose from {', '.join(TARGETS)} (the "
                         "source is T1w)")


def default_model(method: str, target: str) -> str:
    """The bundled model of ``method`` for ``target`` (one-line error when not trained)."""
    _check_target(target)
    baseline = registry.methods("translation")[method].baseline
    return bundled_or_error((UNET_MODEL if baseline else DIFFUSION_MODEL).format(target=target))


def load_network(method: str, name: str, device: str = "auto"):
    """``(network for the method, its name, divisor, training size, trained sizes)``: the
    diffusion model's denoiser, or the baseline's regression UNet."""
    if registry.methods("translation")[method].baseline:
        stored = load(name, kind="regression-unet")
        net = stored.net.eval()
        size = stored.spec.image_size
        return net, stored.name, stored.spec.divisor, size, (size, 4 * size)
    model = load_model(name, device=device)
    if model.spec.condition != "concat" or model.spec.net.in_channels != 2:
        raise InputError(f"--method {method} needs a diffusion model conditioned on one source "
                         f"image; {model.name} is not")
    return (model.denoiser, model.name, model.spec.net.divisor, model.spec.image_size,
            model.spec.trained_sizes)


def translate(net, images: torch.Tensor, method: str = DEFAULT_METHOD,
              sampler: str | None = None, steps: int | None = None, seed: int = 0,
              batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Translate ``images`` (B, 1, H, W) in [0, 1] (sides multiples of the network's divisor)
    with the registered translation ``method`` and its network (a Denoiser, or the UNet of a
    baseline); returns (B, 1, H, W) in the target's image space [0, 1] on the CPU. One
    generator seeded by ``seed`` serves every batch of ``batch_size`` (None: all)."""
    kw = method_options("translation", method, dict(sampler=sampler, steps=steps, seed=seed,
                                                    batch_size=batch_size))
    fn = registry.get("translation", method)
    dev = getattr(net, "device", None) or next(net.parameters()).device
    gen = torch.Generator(dev).manual_seed(int(seed))
    return torch.cat([fn(net, images[part].to(dev), generator=gen, **kw)
                      for part in batches(len(images), batch_size, "translate", progress)])


@file_task("translate")
def translate_file(input: str | os.PathLike, out: str | os.PathLike, target: str = "t2w",
                   method: str = DEFAULT_METHOD, sampler: str | None = None,
                   steps: int | None = None, model: str | os.PathLike | None = None,
                   resize: bool = False, device: str = "auto", seed: int = 0,
                   batch_size: int = 16, progress: bool = False,
                   overwrite: bool = False) -> dict:
    """Translate every 2D slice of a T1w ``input`` (NIfTI, DICOM, PNG, TIFF, NPY;
    percentile-normalised; sections in the models' frame) to ``target`` (t2w, flair, ct) and
    write ``out`` (NIfTI on the input's grid and affine; MR targets in [0, 1], CT in HU), a PNG
    panel (input / translation of the middle slice) and the sidecar ``<out>.json``
    (:mod:`meddiff.tasks.batch`; folders as the other file tasks). ``model`` None: the bundled
    model of the method for the target.

    Returns ``{"input", "method", "target", "model", "slices", "seconds", "outputs"}``; every
    check happens before anything is written, and the files appear together or not at all.
    """
    _check_target(target)
    method_options("translation", method, dict(sampler=sampler, steps=steps, seed=seed,
                                               batch_size=batch_size))
    dest, png = check_outputs(output_paths(out, ".png"), [input], overwrite)
    name = model or default_model(method, target)
    net, name, divisor, size, trained = load_network(method, name, device)
    sl = read_slices(input, size, resize=resize, divisor=divisor, trained=trained)
    start = time.perf_counter()
    result = sl.crop(translate(net, sl.images, method, sampler, steps, seed, batch_size,
                               progress))
    seconds = time.perf_counter() - start
    grid = Grid.of(sl)
    lo, hi = CT_WINDOW_HU if target == "ct" else (0.0, 1.0)
    save_nifti(dest, to_file_grid(lo + (hi - lo) * result, grid), grid.affine)
    mid = len(result) // 2
    panel = save_panel(png, [("input (T1w)", sl.crop(sl.images)[mid, 0]),
                             (f"{target} ({method})", result[mid, 0])])
    return {"method": method, "target": target, "model": name, "slices": len(result),
            "seconds": round(seconds, 3), "outputs": [str(dest), str(panel)]}
