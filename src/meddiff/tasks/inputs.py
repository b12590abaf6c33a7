"""What every task reads: a diffusion model for inference and the 2D slices of a user file.

Intensity contract: :func:`read_slices` returns *image space* [0, 1]; the tasks convert to the
model space of the prior (:mod:`meddiff.data.intensity`) and back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.data.intensity import normalize_percentile
from meddiff.data.readers import Image, load_image
from meddiff.data.slicing import to_2d_slices
from meddiff.device import resolve_device
from meddiff.errors import InputError
from meddiff.tasks.outputs import Grid, to_file_grid
from meddiff.zoo.store import LoadedModel, load_diffusion

DEFAULT_MODEL = "brain-prior-64"  # the bundled prior of sample / denoise / demo


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str = "auto") -> LoadedModel:
    """A diffusion model: a bundled name (:func:`meddiff.zoo.catalogue.bundled`), a saved
    ``NAME.json`` pair, or a training ``out_dir`` (its latest EMA weights), on ``device``
    (``auto`` | ``cpu`` | ``cuda``). bf16 autocast is on for CPU inference."""
    dev = resolve_device(device)
    return load_diffusion(name_or_path, device=dev, autocast=dev.type == "cpu")


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
        return to_file_grid(x, Grid.of(self), "image")


def read_slices(path: str | os.PathLike, size: int, resize: bool = False,
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
