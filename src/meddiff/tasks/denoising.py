"""Denoising task: a registered denoising method (:mod:`meddiff.methods.denoising`) on images
or files.

    model = load_model("brain-prior-64")                          # meddiff.tasks.inputs
    clean = denoise(model, read_slices("scan.nii.gz", 64).images, sigma=0.05)
    denoise_file("ldct.nii.gz", "ldct_denoised.nii.gz", method="ldct")

Each method's registration names its default model and the options that apply to it;
:func:`denoise` checks them, batches the images and seeds the stochastic methods.
Intensity contract: every image passed in or returned is in *image space* [0, 1].
"""
from __future__ import annotations

import os
import time
import torch

from meddiff.data.writers import save_nifti
from meddiff.errors import ConfigError, InputError
from meddiff.eval.figures import save_panel
from meddiff.methods import registry
from meddiff.methods.denoising.interface import Noisy
from meddiff.methods.denoising.pet import MR_MODEL
from meddiff.tasks.batch import batches, file_task
from meddiff.tasks.inputs import DEFAULT_MODEL, load_model, read_slices
from meddiff.tasks.options import bundled_or_error, method_options
from meddiff.tasks.outputs import Grid, check_outputs, output_paths, to_file_grid
from meddiff.zoo.store import LoadedModel

DEFAULT_METHOD = "tweedie"
#: the methods whose network takes the noisy image (and P1's MR) as condition channels
CONDITIONAL = ("ldct", "pet")


def check_options(method: str, sampler=None, steps=None, samples=None, level=None, seed=0,
                  batch_size=None, sigma=None, mr: bool = False) -> dict:
    """The keyword options of ``method`` that are set
    (:func:`~meddiff.tasks.options.method_options`); ``--level`` must be > 0, ``sigma`` in
    (0, 1) and given only to the methods that use it, an MR image only to P1."""
    kw = method_options("denoising", method, dict(sampler=sampler, steps=steps, samples=samples,
                                                  level=level, seed=seed,
                                                  batch_size=batch_size))
    if level is not None and not level > 0:
        raise InputError(f"--level must be > 0, got {level}")
    if sigma is not None and not 0 < sigma < 1:
        raise ConfigError(f"sigma must be in (0, 1) (image-space noise std), got {sigma}")
    if sigma is not None and method in CONDITIONAL:
        raise InputError(f"--sigma does not apply to --method {method} (its network reads the "
                         "noise from the image)")
    if mr and method != "pet":
        raise InputError(f"--mr applies to --method pet, not {method}")
    return kw


def default_model(method: str, mr: bool = False) -> str:
    """The bundled model ``method`` loads when none is given (P1 with an MR image: the PET + MR
    model); a one-line error naming its config when it is not bundled."""
    return bundled_or_error(MR_MODEL if (method == "pet" and mr) else (
        registry.methods("denoising")[method].default_model or DEFAULT_MODEL))


def _check_model(model: LoadedModel, method: str, mr: bool) -> None:
    """The model must be real-valued 2D and take the condition channels the method gives it."""
    spec = model.spec
    if spec.intensity != "unit" or spec.net.spatial_dims != 2:
        raise InputError(f"denoising needs a real-valued 2D diffusion model; {model.name} is "
                         f"{spec.intensity}-valued {spec.net.spatial_dims}D")
    given = (1 + int(mr)) if method in CONDITIONAL else 0
    takes = spec.net.in_channels - spec.net.out_channels if spec.condition == "concat" else 0
    if given != takes:
        what = {0: "no condition (an unconditional prior)", 1: "the noisy image as condition",
                2: "the noisy image and an MR image as condition"}
        hint = f" (with --mr use {MR_MODEL})" if method == "pet" and mr else ""
        raise InputError(f"--method {method} gives the network {what.get(given)}; model "
                         f"{model.name} takes {what.get(takes, f'{takes} condition channels')}"
                         + hint)


def denoise(model: LoadedModel, images: torch.Tensor, sigma: float | None = None,
            method: str = DEFAULT_METHOD, mr: torch.Tensor | None = None, steps: int | None = None,
            seed: int = 0, samples: int | None = None, sampler: str | None = None,
            level: float | None = None, batch_size: int | None = None,
            progress: bool = False) -> torch.Tensor:
    """Denoise ``images`` (B, 1, H, W) in [0, 1] (H, W multiples of the network's divisor; any
    size, the networks are fully convolutional) with the registered denoising ``method`` and
    its ``model``; returns the same shape in [0, 1] on the CPU.

    ``sigma``: the image-space noise std (needed by tweedie / ddim / ddpm, estimated by oct when
    None, unused by ldct / pet); ``mr``: (B, 1, H, W) in [0, 1], P1's MR channel. ``batch_size``
    images go through the network at a time (None: all); one generator seeded by ``seed`` serves
    every batch, so the stochastic methods depend on it. ``progress``: a bar over the batches.
    """
    kw = check_options(method, sampler, steps, samples, level, seed, batch_size, sigma,
                       mr is not None)
    _check_model(model, method, mr is not None)
    if mr is not None and mr.shape != images.shape:
        raise InputError(f"the MR image has {tuple(mr.shape)} slices, the PET {tuple(images.shape)}:"
                         " they must share one grid")
    fn, den = registry.get("denoising", method), model.denoiser
    gen = torch.Generator(den.device).manual_seed(int(seed))
    out = []
    for part in batches(len(images), batch_size, "denoise", progress):
        noisy = Noisy(images[part].to(den.device), sigma,
                      None if mr is None else mr[part].to(den.device), gen)
        out.append(fn(den, noisy, **kw))
    return torch.cat(out)


@file_task("denoise")
def denoise_file(input: str | os.PathLike, out: str | os.PathLike, sigma: float | None = None,
                 method: str = DEFAULT_METHOD, mr: str | os.PathLike | None = None,
                 steps: int | None = None, sampler: str | None = None,
                 samples: int | None = None, level: float | None = None,
                 model: str | os.PathLike | None = None, resize: bool = False,
                 device: str = "auto", seed: int = 0, batch_size: int = 16,
                 progress: bool = False, overwrite: bool = False) -> dict:
    """Denoise every 2D slice of ``input`` (NIfTI, DICOM, PNG, TIFF, NPY; percentile-normalised
    to [0, 1]; sections in the models' frame, :func:`~meddiff.tasks.inputs.read_slices`) with
    :func:`denoise` and write ``out`` (NIfTI, the input's units, grid and affine), a PNG panel
    beside it (``out`` without its NIfTI ending + ``.png``: input / denoised / difference of
    the middle slice) and the sidecar ``<out>.json`` (:mod:`meddiff.tasks.batch`; a folder
    ``input`` is every file in it, ``out`` then a folder). ``mr``: an MR file on the same grid
    (P1). The slices keep the file's grid (padded to the network's divisor and cropped back;
    ``resize``: resampled to the model's training size, aspect kept, and back) and go through
    the network ``batch_size`` at a time (``progress``: a bar over the batches). ``model``
    None: the method's bundled default.

    Returns ``{"input", "model", "method", "sigma", "slices", "seconds", "outputs"}``; every
    check (output names, files, options, model) happens before anything is written; existing
    outputs are replaced only with ``overwrite``, an input never
    (:func:`~meddiff.tasks.outputs.check_outputs`); the files appear together or not at all.
    """
    check_options(method, sampler, steps, samples, level, seed, batch_size, sigma,
                  mr is not None)
    target, png = check_outputs(output_paths(out, ".png"), [input], overwrite)
    loaded = load_model(model or default_model(method, mr is not None), device=device)
    _check_model(loaded, method, mr is not None)
    spec = loaded.spec
    read = dict(resize=resize, divisor=spec.net.divisor, trained=spec.trained_sizes)
    sl = read_slices(input, spec.image_size, **read)
    mr_images = None if mr is None else read_slices(mr, spec.image_size, **read).images
    start = time.perf_counter()
    clean = sl.crop(denoise(loaded, sl.images, sigma, method, mr_images, steps, seed, samples,
                            sampler, level, batch_size, progress))
    seconds = time.perf_counter() - start
    images = sl.crop(sl.images)
    mid = len(clean) // 2
    grid = Grid.of(sl)
    save_nifti(target, to_file_grid(clean, grid, "image"), grid.affine)
    panel = save_panel(png,
                       [("input", images[mid, 0]), (f"denoised ({method})", clean[mid, 0]),
                        ("|difference|", (clean[mid, 0] - images[mid, 0]).abs())],
                       error_columns=[2], vmin=[0, 0, None], vmax=[1, 1, None])
    return {"model": loaded.name, "method": method, "sigma": sigma, "slices": len(clean),
            "seconds": round(seconds, 3), "outputs": [str(target), str(panel)]}
