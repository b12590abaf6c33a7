"""The Python API; the CLI is a thin layer over these functions.

    import meddiff.api as md
    model = md.load_model("brain-prior-64")                 # bundled prior, or a path / run dir
    images = md.sample(model, n=16, sampler="ddim", steps=50, seed=0)   # (16, 1, 64, 64) in [0, 1]
    slices = md.read_slices("scan.nii.gz", size=model.spec.image_size)  # (N, 1, 64, 64) in [0, 1]
    clean = md.denoise(model, slices.images, sigma=0.05, seed=0)        # same shape, in [0, 1]

Intensity contract: every image a user passes or gets back is in *image space* [0, 1]; the
conversion to model space [-1, 1] happens here and nowhere else in user code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.core.noise import get_noise
from meddiff.core.samplers import SAMPLERS, default_spacing, generate, get_sampler
from meddiff.data.intensity import (denormalize, from_model, image_space, normalize_percentile,
                                    to_model)
from meddiff.data.io import Image, load_image, to_2d_slices
from meddiff.errors import ConfigError, InputError
from meddiff.device import resolve_device
from meddiff.zoo.store import LoadedModel, bundled_models
from meddiff.zoo.store import load_model as _load

DEFAULT_MODEL = "brain-prior-64"
DenoiseMethod = Literal["tweedie", "ddim", "ddpm"]


def device_of(choice: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a one-line error."""
    return resolve_device(choice)


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "auto") -> LoadedModel:
    """A bundled model by name (see :func:`list_models`), a saved ``NAME.json`` pair, or a
    training ``out_dir`` (its latest EMA weights). bf16 autocast is on for CPU inference."""
    dev = device_of(device)
    return _load(name_or_path, device=dev, autocast=dev.type == "cpu")


def list_models() -> list[str]:
    return bundled_models()


def _generator(seed: int, device: torch.device) -> torch.Generator:
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    return torch.Generator(device).manual_seed(int(seed))


def sample(model: LoadedModel, n: int = 16, sampler: str = "ddim", steps: int = 50, seed: int = 0,
           eta: float = 0.0, batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Draw ``n`` images from the model; returns (n, C, *spatial) float32 in the model's image
    space, clipped: [0, 1] (``spec.intensity == "unit"``), or real / imaginary channels in
    [-1, 1] (``"complex"``; :func:`meddiff.data.intensity.image_space`).

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
    shape = (spec.net.out_channels, *([spec.image_size] * spec.net.spatial_dims))
    opts = {"eta": eta} if get_sampler(sampler) is SAMPLERS["ddim"] else {}
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = generate(den, (b, *shape), sampler=sampler, steps=steps, generator=gen,
                     noise=get_noise(spec.noise), device=dev, progress=progress, **opts)
        lo = -1.0 if spec.intensity == "complex" else 0.0
        out.append(image_space(x, spec.intensity).clamp(lo, 1).cpu())
    return torch.cat(out)


@dataclass
class Slices:
    """2D slices read from a user file, ready for a 2D model.

    ``images``: (N, 1, S, S) float32 in [0, 1] (percentile-normalised); ``window``: the
    (low, high) input values mapped to 0 and 1; ``image``: the file as read; ``shape``: the
    slices' (H, W) in the file (differs from ``S`` when they were resampled).
    """

    images: torch.Tensor
    window: tuple[float, float]
    image: Image
    shape: tuple[int, int]

    def restore(self, x: torch.Tensor) -> np.ndarray:
        """Slices ``x`` (N, 1, S, S) in [0, 1] back on the file's grid and intensity units,
        laid out like ``image.array`` (2D, or 3D with the slice axis last)."""
        if tuple(x.shape[-2:]) != self.shape:
            x = F.interpolate(x, size=self.shape, mode="bilinear", align_corners=False)
        vol = denormalize(x[:, 0].numpy(), self.window)
        return vol[0] if self.image.array.ndim == 2 else np.moveaxis(vol, 0, -1)


def read_slices(path: str, size: int, resize: bool = False,
                normalize: bool = True) -> Slices:
    """Read a 2D image or every 2D slice of a volume (NIfTI, DICOM, PNG, TIFF, NPY).

    Intensities are mapped to [0, 1] by the 0.5 / 99.5 percentiles of the whole file
    (``normalize=False`` expects values already in [0, 1]). Slices of another size than
    ``size`` are refused unless ``resize=True`` (bilinear, antialiased; :meth:`Slices.restore`
    resamples results back to the file's grid). Volumes are sliced along their last axis.
    """
    image = load_image(path)
    arr = to_2d_slices(image, axis=-1)
    if normalize:
        arr, window = normalize_percentile(arr)
    else:
        if arr.min() < 0 or arr.max() > 1:
            raise InputError(f"{path}: values outside [0, 1] (range {arr.min():.3g}..{arr.max():.3g}); "
                             "drop --no-normalize to rescale them")
        window = (0.0, 1.0)
    x = torch.from_numpy(np.ascontiguousarray(arr))[:, None]
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if not resize:
            raise InputError(f"{path}: slices are {h}x{w} but the model takes {size}x{size}; "
                             "resample the file or pass --resize")
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).clamp(0, 1)
    return Slices(x, window, image, (h, w))


def denoise(model: LoadedModel, images: torch.Tensor, sigma: float, method: DenoiseMethod = "tweedie",
            steps: int = 20, seed: int = 0, samples: int = 1) -> torch.Tensor:
    """Remove additive Gaussian noise of std ``sigma`` (image space) with the diffusion prior.

    A noisy image ``y = x + sigma n`` in model space is ``x + 2 sigma n``, i.e. exactly the VE
    state at the time ``t0`` with ``sigma_ve(t0) = 2 sigma``; scaled by ``sqrt(abar_t0)`` it is a
    sample of ``q(x_t0 | x)`` (Song et al. 2021, arXiv 2011.13456, sec. 3.4). From there:

    - ``tweedie``: one network call, ``E[x | x_t0]`` (Tweedie's formula, Efron 2011) -- the
      minimum-MSE estimate under the prior;
    - ``ddim`` / ``ddpm``: run the reverse process from ``t0`` with ``steps`` steps (the
      partial-diffusion idea of SDEdit, Meng et al. 2022, arXiv 2108.01073); ``samples > 1``
      averages that many posterior samples (DDPM).

    ``images``: (B, 1, H, W) in [0, 1] at the model's size; returns the same shape in [0, 1].
    """
    den = model.denoiser
    if model.spec.intensity != "unit":
        raise ConfigError(f"denoising needs a real-valued image prior; {model.name} is "
                          f"{model.spec.intensity}-valued")
    if not 0 < sigma < 1:
        raise ConfigError(f"sigma must be in (0, 1) (image-space noise std), got {sigma}")
    if method not in ("tweedie", "ddim", "ddpm"):
        raise ConfigError(f"unknown denoising method {method!r}; use tweedie, ddim or ddpm")
    dev = den.device
    t0 = float(den.schedule.t_from_sigma_ve(2 * sigma).round().clamp(0, den.schedule.num_steps - 1))
    x_t = den.schedule.alpha_bar(t0).sqrt().float() * to_model(images.to(dev))
    if method == "tweedie":
        return from_model(den.predict(x_t, t0).x0).clamp(0, 1).cpu()
    gen = _generator(seed, dev)
    ts = den.schedule.timesteps(steps, t_start=t0, spacing=default_spacing(method))
    runs = [get_sampler(method)(den, x_t, ts, generator=gen) for _ in range(max(1, samples))]
    return from_model(torch.stack(runs).mean(0)).clamp(0, 1).cpu()
