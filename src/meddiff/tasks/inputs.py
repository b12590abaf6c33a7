"""What every task reads: a diffusion model for inference and the 2D slices of a user file.

Intensity contract: :func:`read_slices` returns *image space* [0, 1]; the tasks convert to the
model space of the prior (:mod:`meddiff.data.intensity`) and back.

Orientation: the slices are the sections the models were trained on
(:func:`meddiff.data.slicing.model_frame`: axial, rows anterior -> posterior, columns patient
left -> right) for files with patient geometry (NIfTI, DICOM); 2D images without it (PNG, TIFF,
NPY) are used as stored. Results go back onto the file's own grid and affine exactly.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.data.checks import check_content
from meddiff.data.intensity import normalize_percentile
from meddiff.data.readers import Image, load_image
from meddiff.data.slicing import Frame, model_frame
from meddiff.device import bf16_is_fast, resolve_device
from meddiff.errors import InputError
from meddiff.tasks.outputs import Grid, to_file_grid
from meddiff.zoo.store import LoadedModel, load_diffusion

DEFAULT_MODEL = "brain-prior-64"  # the bundled prior of sample / denoise / demo
FAR = 2.0  # a side this many times the training size (or 1 / FAR of it) gets a warning

_log = logging.getLogger(__name__)


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL,
               device: str = "auto") -> LoadedModel:
    """A diffusion model: a bundled name (:func:`meddiff.zoo.catalogue.bundled`), a saved
    ``NAME.json`` pair, or a training ``out_dir`` (its latest averaged weights), on ``device``
    (``auto`` | ``cpu`` | ``cuda``). bf16 autocast is on for CPU inference where the CPU has
    bfloat16 instructions (:func:`~meddiff.device.bf16_is_fast`), float32 elsewhere."""
    dev = resolve_device(device)
    return load_diffusion(name_or_path, device=dev,
                          autocast=dev.type == "cpu" and bf16_is_fast(dev))


class UnusableInput(InputError):
    """An input file that cannot be read or used (unreadable, wrong type, constant, too
    small); a folder run reports it and goes on with the next file."""


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """A block that reads ``path``: its InputErrors become :class:`UnusableInput`."""
    try:
        yield
    except UnusableInput:
        raise
    except InputError as err:
        raise UnusableInput(str(err)) from None


@dataclass
class Slices:
    """2D slices read from a user file, ready for a 2D model.

    ``images``: (N, 1, H', W') float32 in [0, 1] (percentile-normalised), the file's sections
    in the models' frame (``frame``, :func:`meddiff.data.slicing.model_frame`): on the file's
    own grid (reflect-padded to the network's divisor, see ``pad``), or with ``resize`` the
    model's training size S x S (resampled to ``size``, the aspect ratio kept, then
    zero-padded); ``window``: the (low, high) input values mapped to 0 and 1; ``image``: the
    file as read; ``shape``: the sections' (H, W) on the file's grid; ``size``: their (h, w)
    before the padding (``shape`` unless resampled); ``pad``: the (top, bottom, left, right)
    pixels added.
    """

    images: torch.Tensor
    window: tuple[float, float]
    image: Image
    shape: tuple[int, int]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    frame: Frame | None = None
    size: tuple[int, int] | None = None

    def restore(self, x: torch.Tensor, units: str = "image") -> np.ndarray:
        """Slices ``x`` (N, 1, H', W') back on the file's grid, laid out like ``image.array``;
        ``units`` as :func:`~meddiff.tasks.outputs.to_file_grid` (``"image"``: [0, 1] to the
        file's intensities)."""
        return to_file_grid(self.crop(x), Grid.of(self), units)

    def crop(self, x):
        """``x`` without the padding (:meth:`meddiff.tasks.outputs.Grid.crop`)."""
        return Grid.of(self).crop(x)


def pad_to(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """``x`` (N, C, H, W) padded symmetrically (the odd pixel at the end) so that H and W are
    multiples of ``divisor``: reflected, or replicated where a side is too small to reflect.
    Returns the padded tensor and the (top, bottom, left, right) padding."""
    h, w = x.shape[-2:]
    dh, dw = -h % divisor, -w % divisor
    pad = (dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
    if not (dh or dw):
        return x, pad
    top, bottom, left, right = pad
    mode = "reflect" if max(top, bottom) < h and max(left, right) < w else "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode), pad


def check_size(hw: tuple[int, ...], trained: int | tuple[int, int], divisor: int,
               what: str = "the images", resize: bool = True) -> None:
    """Whether a network trained on ``trained`` px images (or slices of sizes ``(lo, hi)``,
    :attr:`~meddiff.zoo.kinds.DiffusionSpec.trained_sizes`) can run on a ``hw`` grid: a one-line
    InputError when a side is not a multiple of ``divisor`` (the network halves the image that
    many times; image slices are padded before, :func:`pad_to`), a warning (log) when a side is
    more than :data:`FAR` x above ``hi`` or below ``lo`` (the prior then sees another pixel size
    than it learned). ``resize``: the warning mentions ``--resize`` (the caller has that
    option)."""
    lo, hi = (trained, trained) if isinstance(trained, int) else trained
    sides = "x".join(str(int(n)) for n in hw)
    if any(int(n) % divisor for n in hw):
        raise InputError(f"{what} are {sides}, the network needs sides divisible by {divisor}; "
                         f"choose a multiple of {divisor}")
    if any(n > FAR * hi or n * FAR < lo for n in hw):
        seen = f"{lo}x{lo}" if lo == hi else f"slices of {lo}-{hi} px"
        _log.warning("meddiff: warning: %s are %s, the model was trained on %s: the prior "
                     "sees another pixel size, results may be worse%s", what, sides, seen,
                     " (--resize resamples)" if resize else "")


def fit_square(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int],
                                                      tuple[int, int, int, int]]:
    """``x`` (N, C, H, W) in [0, 1] resampled so that its longer side is ``size`` (bilinear,
    antialiased; the aspect ratio kept, never squashed), then zero-padded (the background of
    the training images) symmetrically to ``size`` x ``size``. Returns the square tensor, the
    resampled (h, w) and the (top, bottom, left, right) padding."""
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    if hw != (h, w):
        x = F.interpolate(x, size=hw, mode="bilinear", antialias=True,
                          align_corners=False).clamp(0, 1)
    dh, dw = size - hw[0], size - hw[1]
    pad = (dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
    return F.pad(x, (pad[2], pad[3], pad[0], pad[1])), hw, pad


def _sections(path: str | os.PathLike, normalize: bool
              ) -> tuple[Image, Frame, np.ndarray, tuple[float, float]]:
    """(image, frame, sections (N, H, W) in [0, 1], window) of a file; UnusableInput when it
    cannot be read or used."""
    with reading(path):
        image = load_image(path)
        frame = model_frame(image)
        arr = frame.sections(image.array)
        check_content(path, arr)  # constant or tiny: nothing to process
        if normalize:
            arr, window = normalize_percentile(arr)
        elif arr.min() < 0 or arr.max() > 1:
            raise InputError(f"{path}: values outside [0, 1] (range {arr.min():.3g}.."
                             f"{arr.max():.3g}); drop --no-normalize to rescale them")
        else:
            window = (0.0, 1.0)
    return image, frame, arr, window


def read_slices(path: str | os.PathLike, size: int, resize: bool = False,
                normalize: bool = True, divisor: int = 1,
                trained: tuple[int, int] | None = None) -> Slices:
    """Read a 2D image or the sections of a volume (NIfTI, DICOM, PNG, TIFF, NPY) in the
    models' frame (module docstring; :func:`meddiff.data.slicing.model_frame`).

    Intensities are mapped to [0, 1] by the 0.5 / 99.5 percentiles of the whole file
    (``normalize=False`` expects values already in [0, 1]). The slices keep the file's own
    grid (native resolution): ``size`` is the model's training size and ``divisor`` what the
    network needs its sides divisible by; other sides are reflect-padded up to the next
    multiple (:func:`pad_to`; ``Slices.pad``; :meth:`Slices.crop` and :meth:`Slices.restore`
    crop it away) and a side far from ``size`` (or from the ``trained`` slice sizes of a
    windowed prior) gets a warning (:func:`check_size`).
    ``resize=True`` resamples them to ``size`` x ``size`` instead, keeping the aspect ratio:
    the longer side becomes ``size``, the shorter one is zero-padded (:func:`fit_square`;
    :meth:`Slices.restore` crops and resamples results back to the file's grid). Any problem
    with the file (unreadable, constant, slices under 8 px a side) is a one-line
    :class:`UnusableInput` (:func:`~meddiff.data.checks.check_content`).
    """
    image, frame, arr, window = _sections(path, normalize)
    x = torch.from_numpy(np.ascontiguousarray(arr))[:, None]
    h, w = x.shape[-2:]
    if resize:
        x, hw, pad = fit_square(x, size)
    else:
        hw = (h, w)
        x, pad = pad_to(x, divisor)
        check_size(tuple(x.shape[-2:]), trained or size, divisor, f"{path}: slices")
    return Slices(x, window, image, (h, w), pad, frame, hw)
