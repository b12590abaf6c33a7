"""What a diffusion prior does on its own: draw samples.

    model = load_model("brain-prior-64")                          # meddiff.tasks.inputs
    images = sample(model, n=16, sampler="ddim", steps=50, seed=0)   # (16, 1, 64, 64) in [0, 1]

:func:`sample_files` is ``meddiff sample``: files out, a summary dict back (denoising is
:mod:`meddiff.tasks.denoising`). Intensity contract: every image passed in
or returned is in *image space* [0, 1]; the conversion to model space [-1, 1] happens here.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from meddiff.core.noise import get_noise
from meddiff.core.samplers import SAMPLERS, generate, get_sampler
from meddiff.data.intensity import image_space
from meddiff.data.writers import all_or_nothing, save_nifti
from meddiff.errors import ConfigError
from meddiff.eval.figures import save_grid
from meddiff.tasks.inputs import DEFAULT_MODEL, check_size, load_model
from meddiff.tasks.outputs import check_outputs
from meddiff.zoo.store import LoadedModel


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
