"""What an unconditional diffusion prior does on its own: draw samples, remove Gaussian noise.

    model = load_model("brain-prior-64")                          # meddiff.tasks.inputs
    images = sample(model, n=16, sampler="ddim", steps=50, seed=0)   # (16, 1, 64, 64) in [0, 1]
    clean = denoise(model, read_slices("scan.nii.gz", 64).images, sigma=0.05)

:func:`sample_files` and :func:`denoise_file` are ``meddiff sample`` / ``meddiff denoise``: a
file (or folder) in, files out, a summary dict back. Intensity contract: every image passed in
or returned is in *image space* [0, 1]; the conversion to model space [-1, 1] happens here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from meddiff.core.noise import get_noise
from meddiff.core.samplers import SAMPLERS, default_spacing, generate, get_sampler
from meddiff.data.intensity import from_model, image_space, to_model
from meddiff.data.writers import all_or_nothing, save_nifti
from meddiff.errors import ConfigError
from meddiff.eval.figures import save_grid, save_panel
from meddiff.tasks.batch import file_task
from meddiff.tasks.inputs import DEFAULT_MODEL, check_size, load_model, read_slices
from meddiff.tasks.outputs import Grid, check_outputs, output_paths, to_file_grid
from meddiff.zoo.store import LoadedModel

DenoiseMethod = Literal["tweedie", "ddim", "ddpm"]
DENOISE_METHODS = ("tweedie", "ddim", "ddpm")


def _generator(seed: int, device: torch.device) -> torch.Generator:
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    return torch.Generator(device).manual_seed(int(seed))


def sample(model: LoadedModel, n: int = 16, sampler: str = "ddim", steps: int = 50, seed: int = 0,
           eta: float = 0.0, batch_size: int = 16, progress: bool = False,
           size: int | None = None) -> torch.Tensor:
    """Draw ``n`` images from the model; returns (n, C, *spatial) float32 in the model's image
    space, clipped: [0, 1] (``spec.intensity == "unit"``), or real / imaginary channels in
    [-1, 1] (``"complex"``; :func:`meddiff.data.intensity.image_space`).

    ``size``: the side of the images (default the training size ``spec.image_size``); the
    network is fully convolutional, so any multiple of its divisor works
    (:func:`~meddiff.tasks.inputs.check_size`), at the training pixel size.

    ``sampler``: ddpm | ddim | dpmpp_2m | pc_ve | pc_vp; ``eta`` applies to DDIM only.
    Reproducible with ``seed`` for a given device and batch size.
    """
    den = model.denoiser
    try:
        get_sampler(sampler)
    except KeyError as err:
        raise ConfigError(str(err).strip("'\"")) from None
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if not 1 <= steps <= den.schedule.num_steps:
        raise ConfigError(f"steps must be in [1, {den.schedule.num_steps}], got {steps}")
    dev = den.device
    gen = _generator(seed, dev)
    spec = model.spec
    size = spec.image_size if size is None else int(size)
    check_size((size,) * spec.net.spatial_dims, spec.trained_sizes, spec.net.divisor,
               "the samples", resize=False)
    shape = (spec.net.out_channels, *([size] * spec.net.spatial_dims))
    opts = {"eta": eta} if get_sampler(sampler) is SAMPLERS["ddim"] else {}
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = generate(den, (b, *shape), sampler=sampler, steps=steps, generator=gen,
                     noise=get_noise(spec.noise), device=dev, progress=progress, **opts)
        lo = -1.0 if spec.intensity == "complex" else 0.0
        out.append(image_space(x, spec.intensity).clamp(lo, 1).cpu())
    return torch.cat(out)


def denoise(model: LoadedModel, images: torch.Tensor, sigma: float,
            method: DenoiseMethod = "tweedie", steps: int = 20, seed: int = 0,
            samples: int = 1, batch_size: int | None = None,
            progress: bool = False) -> torch.Tensor:
    """Remove additive Gaussian noise of std ``sigma`` (image space) with the diffusion prior.

    A noisy image ``y = x + sigma n`` in model space is ``x + 2 sigma n``, i.e. exactly the VE
    state at the time ``t0`` with ``sigma_ve(t0) = 2 sigma``; scaled by ``sqrt(abar_t0)`` it is a
    sample of ``q(x_t0 | x)`` (Song et al. 2021, arXiv 2011.13456, sec. 3.4). From there:

    - ``tweedie``: one network call, ``E[x | x_t0]`` (Tweedie's formula, Efron 2011) -- the
      minimum-MSE estimate under the prior;
    - ``ddim`` / ``ddpm``: run the reverse process from ``t0`` with ``steps`` steps (the
      partial-diffusion idea of SDEdit, Meng et al. 2022, arXiv 2108.01073); ``samples > 1``
      averages that many posterior samples (DDPM).

    ``images``: (B, 1, H, W) in [0, 1], H and W multiples of the network's divisor (any size:
    the network is fully convolutional); returns the same shape in [0, 1]. ``batch_size``
    images go through the network at a time (None: all); one generator serves every batch, so
    the stochastic methods depend on it. ``progress``: a bar over the batches (stderr).
    """
    den = model.denoiser
    if model.spec.intensity != "unit":
        raise ConfigError(f"denoising needs a real-valued image prior; {model.name} is "
                          f"{model.spec.intensity}-valued")
    if not 0 < sigma < 1:
        raise ConfigError(f"sigma must be in (0, 1) (image-space noise std), got {sigma}")
    if method not in DENOISE_METHODS:
        raise ConfigError(f"unknown denoising method {method!r}; use tweedie, ddim or ddpm")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    dev = den.device
    t0 = float(den.schedule.t_from_sigma_ve(2 * sigma).round().clamp(0, den.schedule.num_steps - 1))
    gen = None if method == "tweedie" else _generator(seed, dev)
    step = batch_size or max(1, len(images))
    out = []
    for i in tqdm(range(0, len(images), step), desc="denoise", unit="batch", leave=False,
                  disable=not progress):
        x_t = den.schedule.alpha_bar(t0).sqrt().float() * to_model(images[i:i + step].to(dev))
        out.append(_denoise_batch(den, x_t, t0, method, steps, samples, gen))
    return torch.cat(out)


def _denoise_batch(den, x_t: torch.Tensor, t0: float, method: str, steps: int, samples: int,
                   gen: torch.Generator | None) -> torch.Tensor:
    """:func:`denoise` of one batch of VE states ``x_t`` (model space) -> [0, 1] on the CPU."""
    if method == "tweedie":
        return from_model(den.predict(x_t, t0).x0).clamp(0, 1).cpu()
    ts = den.schedule.timesteps(steps, t_start=t0, spacing=default_spacing(method))
    runs = [get_sampler(method)(den, x_t, ts, generator=gen) for _ in range(max(1, samples))]
    return from_model(torch.stack(runs).mean(0)).clamp(0, 1).cpu()


@all_or_nothing()
def sample_files(out_dir: str | os.PathLike, model: str | os.PathLike = DEFAULT_MODEL, n: int = 16,
                 sampler: str = "ddim", steps: int = 50, eta: float = 0.0, batch_size: int = 16,
                 device: str = "auto", seed: int = 0, progress: bool = False,
                 size: int | None = None, overwrite: bool = False) -> dict:
    """Draw ``n`` samples of ``model`` (``size`` px, default its training size) and write
    ``out_dir/samples.png`` (a grid; middle slices for a 3D model; magnitude for a complex one)
    and one NIfTI ``sample_###.nii.gz`` each (no patient geometry: readers use them as
    stored, the models' frame).

    Returns ``{"model", "n", "sampler", "steps", "seed", "grid", "volumes", "files"}``
    (``volumes``: the model is 3D; ``files``: the NIfTI paths). Nothing is written before the
    model is loaded and the samples are drawn; existing files are replaced only with
    ``overwrite`` (checked first, :func:`~meddiff.tasks.outputs.check_outputs`), and the files
    appear together or not at all.
    """
    out = Path(out_dir)
    check_outputs([out / "samples.png", *(out / f"sample_{i:03d}.nii.gz" for i in range(n))],
                  overwrite=overwrite)
    loaded = load_model(model, device=device)
    images = sample(loaded, n=n, sampler=sampler, steps=steps, seed=seed, eta=eta,
                    batch_size=batch_size, progress=progress, size=size)
    if loaded.spec.intensity == "complex":  # (real, imag) channels -> magnitude in [0, 1]
        images = images.norm(dim=1, keepdim=True).clamp(0, 1)
    out.mkdir(parents=True, exist_ok=True)
    volumes = images.ndim == 5
    shown = images[:, :, :, :, images.shape[-1] // 2] if volumes else images
    grid = save_grid(out / "samples.png", shown, nrow=min(8, n),
                     title=f"{loaded.name}: {sampler} {steps} steps, seed {seed}")
    files = [str(save_nifti(out / f"sample_{i:03d}.nii.gz", im[0].numpy()))
             for i, im in enumerate(images)]
    return {"model": loaded.name, "n": n, "sampler": sampler, "steps": steps, "seed": seed,
            "grid": str(grid), "volumes": volumes, "files": files}


@file_task("denoise")
def denoise_file(input: str | os.PathLike, out: str | os.PathLike, sigma: float,
                 method: DenoiseMethod = "tweedie", steps: int = 20,
                 model: str | os.PathLike = DEFAULT_MODEL, resize: bool = False,
                 device: str = "auto", seed: int = 0, batch_size: int = 16,
                 progress: bool = False, overwrite: bool = False) -> dict:
    """Denoise every 2D slice of ``input`` (NIfTI, DICOM, PNG, TIFF, NPY; percentile-normalised
    to [0, 1]; sections in the models' frame, :func:`~meddiff.tasks.inputs.read_slices`) with
    :func:`denoise` and write ``out`` (NIfTI, the input's units, grid and affine), a PNG panel
    beside it (``out`` without its NIfTI ending + ``.png``: input / denoised / difference of
    the middle slice) and the sidecar ``<out>.json`` (:mod:`meddiff.tasks.batch`; a folder
    ``input`` is every file in it, ``out`` then a folder). The slices keep the file's grid
    (padded to the network's divisor and cropped back; ``resize``: resampled to the model's
    training size, aspect kept, and back) and go through the network ``batch_size`` at a time
    (``progress``: a bar over the batches).

    Returns ``{"input", "model", "method", "sigma", "slices", "outputs": [nifti, png, json]}``;
    every check (output names, file, size, sigma, method) happens before anything is written;
    existing outputs are replaced only with ``overwrite``, an input never
    (:func:`~meddiff.tasks.outputs.check_outputs`); the files appear together or not at all.
    """
    target, png = check_outputs(output_paths(out, ".png"), [input], overwrite)
    loaded = load_model(model, device=device)
    sl = read_slices(input, loaded.spec.image_size, resize=resize,
                     divisor=loaded.spec.net.divisor, trained=loaded.spec.trained_sizes)
    clean = sl.crop(denoise(loaded, sl.images, sigma, method=method, steps=steps, seed=seed,
                            batch_size=batch_size, progress=progress))
    images = sl.crop(sl.images)
    mid = len(clean) // 2
    grid = Grid.of(sl)
    save_nifti(target, to_file_grid(clean, grid, "image"), grid.affine)
    panel = save_panel(png,
                       [("input", images[mid, 0]), (f"denoised ({method})", clean[mid, 0]),
                        ("|difference|", (clean[mid, 0] - images[mid, 0]).abs())],
                       error_columns=[2], vmin=[0, 0, None], vmax=[1, 1, None])
    return {"model": loaded.name, "method": method, "sigma": sigma, "slices": len(clean),
            "outputs": [str(target), str(panel)]}
