"""Anomaly detection task: options, model loading through the store, batching, intensities and
outputs; the methods are the registered ``detection`` family
(:mod:`meddiff.methods.detection`).

    from meddiff.tasks import detection as dt
    opts = dt.DetectOptions(seed=0, t=250)
    runner = dt.prepare("anoddpm", opts)                    # loads the models once
    result = dt.detect(runner, images01, opts)              # maps (N, 1, H, W), higher = anomalous

A method's registration names its default model and the options that apply; the task loads
that diffusion model (:func:`meddiff.zoo.store.load_diffusion`), the autoencoder of a latent
model (``spec.autoencoder``: a sibling ``NAME.json`` or the bundled one) and, for methods with
the ``classifier`` option, the noise-aware classifier.

Intensity contract: inputs and reconstructions here are image space (B, 1, S, S) in [0, 1];
the methods see model space (``2 x - 1``); maps are returned as absolute image-space
differences (>= 0), half the model-space ones.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from meddiff.data.intensity import from_model, to_model
from meddiff.data.writers import all_or_nothing, save_nifti
from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.detection.interface import AnomalyResult
from meddiff.methods.detection.latent import LatentCodec, LatentDetector
from meddiff.tasks.batch import file_task
from meddiff.tasks.inputs import load_model, read_slices
from meddiff.tasks.outputs import (Grid, check_outputs, detection_panels, output_paths,
                                  to_file_grid)
from meddiff.zoo.catalogue import bundled, read_document, resolve
from meddiff.zoo.store import LoadedModel, load

DEFAULT_CLASSIFIER = "lesion-classifier-64"
METHOD_OPTIONS = ("classifier", "t", "level", "scale", "steps", "smooth", "samples")
OUTPUT_SUFFIXES = ("_healthy", ".png", "_overlay.png")


@dataclass(frozen=True)
class DetectOptions:
    """Options of a detection run; ``None`` means the method's default.

    model / classifier: bundled name, ``NAME.json`` or run dir; t: noise time (AnoDDPM; one
    latent level for D2); level: DDIM encoding level (D1 / D4); scale: classifier-guidance
    scale; steps: reverse (decoding) steps; smooth: Gaussian smoothing of the map in pixels;
    samples: AnoDDPM reconstructions averaged; batch_size: images per network batch (results
    depend on it for the stochastic methods, since one generator is shared).
    """

    model: str | None = None
    classifier: str | None = None
    device: str = "auto"
    seed: int = 0
    t: float | None = None
    level: float | None = None
    scale: float | None = None
    steps: int | None = None
    smooth: float | None = None
    samples: int | None = None
    batch_size: int = 16


@dataclass
class Runner:
    """A prepared method: ``run(x, generator) -> AnomalyResult`` on one model-space batch, the
    models' training image size, the models' names, the device and ``divisor``: what the
    networks need the image sides divisible by (they are fully convolutional otherwise)."""

    run: Callable[[torch.Tensor, torch.Generator], AnomalyResult]
    image_size: int
    names: tuple[str, ...]
    device: torch.device
    divisor: int = 1


@dataclass
class Detection:
    """maps: (N, 1, H, W) float32 image-space differences >= 0; recon: (N, 1, H, W) in [0, 1];
    nfe and seconds over all batches."""

    maps: torch.Tensor
    recon: torch.Tensor
    nfe: int
    seconds: float


# ------------------------------------------------------------------------------ checks
def check_options(method: str, o: DetectOptions) -> None:
    """One-line InputError for an unknown method, an option that does not apply to it, or a
    value out of range (times are checked against the model when it is loaded)."""
    choices = registry.methods("detection")
    if method not in choices:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(choices)}")
    applies = choices[method].options
    for name in METHOD_OPTIONS:
        if getattr(o, name) is not None and name not in applies:
            raise InputError(f"--{name} does not apply to --method {method} "
                             f"(it takes {', '.join('--' + a for a in sorted(applies))})")
    lows = {"seed": 0, "steps": 1, "scale": 0, "smooth": 0, "samples": 1, "batch_size": 1}
    for name, low in lows.items():
        value = getattr(o, name)
        if value is not None and value < low:
            raise InputError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def _check_times(o: DetectOptions, den, name: str) -> None:
    top = den.schedule.num_steps - 1
    for option in ("t", "level"):
        value = getattr(o, option)
        if value is not None and not 1 <= value <= top:
            raise InputError(f"--{option} must be in [1, {top}] for model {name}, got {value:g}")


# ------------------------------------------------------------------------------ loading
def _diffusion(name: str | None, default: str, device: str) -> LoadedModel:
    """The diffusion model ``name`` (default ``default``); a default that is not bundled is a
    one-line error that says how to get it."""
    if name is None:
        if default not in bundled():
            raise InputError(f"the bundled model {default!r} is not trained yet: train it with "
                             f"'meddiff train configs/{default}.yaml' or pass --model NAME.json "
                             "/ run dir")
        name = default
    return load_model(name, device=device)


def _is_latent(name: str) -> bool | None:
    """Whether the stored diffusion model ``name`` models latents (None: not found)."""
    try:
        return bool(read_document(resolve(name))["spec"].get("autoencoder"))
    except InputError:
        return None


def _latent(model_arg: str | None, model: LoadedModel) -> tuple[LatentDetector, str, int, int]:
    """(D2 pair, autoencoder name, image size, divisor) of a latent diffusion model ``model``
    loaded
    from ``model_arg`` (None: bundled): its autoencoder
    ``spec.autoencoder`` is the sibling ``NAME.json`` when there is one, else the bundled model;
    the latent scale it was trained with (card) must be the autoencoder's."""
    name = model.spec.autoencoder
    sibling = resolve(model_arg).with_name(f"{name}.json") if model_arg else None
    ae = load(sibling if sibling is not None and sibling.exists() else name, kind="autoencoder",
              device=model.denoiser.device)
    trained = model.card.get("latent_scale")
    if trained is not None and not math.isclose(float(trained), ae.spec.latent_scale,
                                                rel_tol=1e-5):
        raise InputError(f"{model.name}: latent DDPM was trained with latent scale {trained}, "
                         f"the autoencoder {ae.name} has {ae.spec.latent_scale:.6g}; retrain it")
    det = LatentDetector(LatentCodec(ae.net, ae.spec.latent_scale), model.denoiser)
    return det, ae.name, ae.spec.image_size, ae.spec.net.factor * model.spec.net.divisor


def load_latent(name: str | None = None, device: str = "auto"
                ) -> tuple[LatentDetector, tuple[str, str]]:
    """The D2 pair of the latent diffusion model ``name`` (default: the registered default of
    ``latent``) and (autoencoder, DDPM) names, e.g. for the autoencoder-residual baseline."""
    model = _diffusion(name, registry.methods("detection")["latent"].default_model, device)
    if not model.spec.autoencoder:
        raise InputError(f"{model.name} is not a latent diffusion model (no spec.autoencoder)")
    det, ae_name, _, _ = _latent(name, model)
    return det, (ae_name, model.name)


def _classifier(name: str | None, model: LoadedModel):
    """The noise-aware classifier (default :data:`DEFAULT_CLASSIFIER`) on the model's device,
    checked against the model's schedule and image size."""
    clf = load(name or DEFAULT_CLASSIFIER, kind="classifier", device=model.denoiser.device)
    sched = model.denoiser.schedule
    want = {"kind": sched.kind, "num_steps": sched.num_steps}
    have = {"kind": clf.spec.schedule, "num_steps": clf.spec.num_steps}
    if have != want:
        raise InputError(f"classifier {clf.name} was trained for schedule {have}, the diffusion "
                         f"model uses {want}")
    if clf.spec.net.image_size != model.spec.image_size:
        raise InputError(f"classifier {clf.name} takes {clf.spec.net.image_size} px images, "
                         f"model {model.name} {model.spec.image_size} px")
    return clf


def prepare(method: str, o: DetectOptions) -> Runner:
    """Check the options and load the models of ``method``."""
    check_options(method, o)
    info = registry.methods("detection")[method]
    model = _diffusion(o.model, info.default_model, o.device)
    _check_times(o, model.denoiser, model.name)
    latent = bool(model.spec.autoencoder)
    if _is_latent(info.default_model) not in (None, latent):
        kind = "a latent" if not latent else "an image-space"
        raise InputError(f"--method {method} needs {kind} diffusion model; {model.name} is not")
    net, names, size = model, (model.name,), model.spec.image_size
    divisor = model.spec.net.divisor
    if latent:
        net, ae_name, size, divisor = _latent(o.model, model)
        names = (ae_name, model.name)
    kw = {k: getattr(o, k) for k in info.options if k != "classifier" and getattr(o, k) is not None}
    if "classifier" in info.options:
        clf = _classifier(o.classifier, model)
        kw["classifier"], names = clf.net, names + (clf.name,)
        divisor = max(divisor, 2 ** len(clf.spec.net.channels))  # powers of two: their lcm
    fn = registry.get("detection", method)

    def run(x: torch.Tensor, g: torch.Generator) -> AnomalyResult:
        return fn(net, x, generator=g, **kw)

    return Runner(run, size, names, model.denoiser.device, divisor)


# ------------------------------------------------------------------------------ running
def detect(runner: Runner, images01: torch.Tensor, options: DetectOptions,
           progress: bool = False) -> Detection:
    """Run a prepared method over ``images01`` (N, 1, H, W) in [0, 1], H and W multiples of
    ``runner.divisor``, in batches (model space in, image space out), with one generator
    seeded by ``options.seed`` on the model's device; ``progress``: a bar over the batches."""
    if images01.ndim != 4 or images01.shape[1] != 1:
        raise InputError(f"images must be (N, 1, H, W), got {tuple(images01.shape)}")
    h, w = images01.shape[-2:]
    if h % runner.divisor or w % runner.divisor:
        raise InputError(f"the images are {h}x{w}, the networks need sides divisible by "
                         f"{runner.divisor}; pad or crop them, or pass --resize")
    g = torch.Generator(runner.device).manual_seed(int(options.seed))
    start, maps, recons, nfe = time.perf_counter(), [], [], 0
    for i in tqdm(range(0, len(images01), options.batch_size), desc="detect", unit="batch",
                  leave=False, disable=not progress):
        res = runner.run(to_model(images01[i:i + options.batch_size]), g)
        maps.append(res.maps * 0.5)  # |x - x_hat| in image space: model space halved
        recons.append(from_model(res.recon))
        nfe += res.nfe
    return Detection(torch.cat(maps), torch.cat(recons), nfe, time.perf_counter() - start)


# ------------------------------------------------------------------------------ outputs
@all_or_nothing()
def write_outputs(out_path: str | Path, det: Detection, slices, method: str) -> list[Path]:
    """``det`` without the padding of ``slices`` (:meth:`Grid.crop`). Write the map NIfTI (file
    grid, affine of the input, values kept), the healthy
    reconstruction NIfTI (file intensity units), a PNG panel input / reconstruction / map and
    a PNG overlay of the map on the input, for the most anomalous slice. Every file is written
    atomically; returns the paths."""
    map_path, healthy_path, panel_path, overlay_path = output_paths(out_path, *OUTPUT_SUFFIXES)
    grid = Grid.of(slices)
    save_nifti(map_path, to_file_grid(det.maps, grid, "values"), grid.affine)
    save_nifti(healthy_path, to_file_grid(det.recon, grid, "image"), grid.affine)
    detection_panels(panel_path, overlay_path, slices.crop(slices.images), det.recon, det.maps,
                     method)
    return [map_path, healthy_path, panel_path, overlay_path]


@file_task("detect")
def detect_file(input, out, *, method, model=None, classifier=None, t=None, level=None,
                scale=None, steps=None, smooth=None, samples=None, batch_size=16, resize=False,
                device="auto", seed=0, progress=False, overwrite=False) -> dict:
    """``meddiff detect``: anomaly maps of every slice of an image file (NIfTI, DICOM, PNG,
    TIFF, NPY) with a registered detection method. Writes the map ``out`` (the file's grid and
    affine), ``<out>_healthy`` (the healthy reconstruction, file units), ``<out>.png`` and
    ``<out>_overlay.png`` and the sidecar ``<out>.json`` (:mod:`meddiff.tasks.batch`; a folder
    ``input`` is every file in it, ``out`` then a folder). The slices are the file's sections in
    the models' frame on its own grid (``resize``: resampled to the models' training size,
    aspect kept, and back) and go through the networks ``batch_size`` at a time
    (``progress``: a bar over the batches). Every check runs before anything is written;
    existing outputs are replaced only with ``overwrite``, an input never
    (:func:`~meddiff.tasks.outputs.check_outputs`); the files appear together or not at all.

    Returns ``{"input", "method", "models", "slices", "nfe", "seconds", "seconds_per_slice",
    "map_max", "outputs"}``.
    """
    opts = DetectOptions(model=model, classifier=classifier, device=device, seed=seed, t=t,
                         level=level, scale=scale, steps=steps, smooth=smooth, samples=samples,
                         batch_size=batch_size)
    check_options(method, opts)
    check_outputs(output_paths(out, *OUTPUT_SUFFIXES), [input], overwrite)
    if not Path(str(input)).exists():
        raise InputError(f"{input}: no such file or folder")
    runner = prepare(method, opts)
    slices = read_slices(str(input), runner.image_size, resize=resize, divisor=runner.divisor)
    det = slices.crop(detect(runner, slices.images, opts, progress=progress))
    written = [str(p) for p in write_outputs(out, det, slices, method)]
    return {"method": method, "models": list(runner.names), "slices": len(det.maps),
            "nfe": det.nfe, "seconds": round(det.seconds, 3),
            "seconds_per_slice": round(det.seconds / len(det.maps), 4),
            "map_max": round(float(det.maps.max()), 5), "outputs": written}
