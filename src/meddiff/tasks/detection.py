"""Anomaly detection task: method registry, model loading, batching and outputs.

    from meddiff.tasks import detection as dt
    opts = dt.DetectOptions(seed=0, t=250)
    runner = dt.prepare("anoddpm", opts)                    # loads the models once
    result = dt.detect(runner, images01, opts)              # maps (N, 1, S, S), higher = anomalous

A method is one :class:`Detector` entry of :data:`DETECTORS`: its default model, the options
that apply to it and a ``prepare(options) -> Runner`` function that loads what it needs and
returns ``run(images01, generator) -> AnomalyResult`` (:mod:`meddiff.methods.anomaly`).
Adding a method is adding one entry (the CLI's ``--method`` choices follow the dict).

Intensity contract: inputs and reconstructions are image space (B, 1, S, S) in [0, 1]; maps are
absolute image-space differences (>= 0).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.errors import InputError
from meddiff.eval.figures import save_overlay, save_panel
from meddiff.methods import anomaly as an
from meddiff.methods import latent as lt
from meddiff.methods.noisy_classifier import DEFAULT_CLASSIFIER, load_classifier


@dataclass(frozen=True)
class DetectOptions:
    """Options of a detection run; ``None`` means the method's default.

    model / classifier: bundled name, ``NAME.json`` or run dir; t: AnoDDPM noise time;
    level: DDIM encoding level (D1 / D4); scale: classifier-guidance scale; steps: reverse
    (decoding) steps; smooth: Gaussian smoothing of the map in pixels; samples: AnoDDPM
    reconstructions averaged; batch_size: images per network batch (results depend on it for
    the stochastic methods, since one generator is shared).
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


METHOD_OPTIONS = ("classifier", "t", "level", "scale", "steps", "smooth", "samples")


@dataclass
class Runner:
    """A prepared method: ``run(images01, generator) -> AnomalyResult`` on one batch, the model
    input size, the models' names and the device."""

    run: Callable[[torch.Tensor, torch.Generator], an.AnomalyResult]
    image_size: int
    names: tuple[str, ...]
    device: torch.device


@dataclass(frozen=True)
class Detector:
    """One detection method: help text, default model, applicable options, loader."""

    summary: str
    default_model: str
    options: frozenset[str]
    prepare: Callable[[DetectOptions], Runner]


@dataclass
class Detection:
    """maps / recon: (N, 1, S, S) float32 (recon in [0, 1]); nfe and seconds over all batches."""

    maps: torch.Tensor
    recon: torch.Tensor
    nfe: int
    seconds: float


# ------------------------------------------------------------------------------ loading
def load_diffusion(name: str | None, default: str, device: str):
    """The diffusion model ``name`` (default ``default``); a default that is not bundled yet is
    a one-line error that says how to train it."""
    from meddiff import api

    if name is None:
        if default not in api.list_models():
            raise InputError(f"the bundled model {default!r} is not trained yet: run 'python "
                             f"scripts/train_zoo.py {default}' or pass --model NAME.json / run dir")
        name = default
    return api.load_model(name, device=device)


def _check_range(name: str, value: float | None, model) -> None:
    top = model.denoiser.schedule.num_steps - 1
    if value is not None and not 1 <= value <= top:
        raise InputError(f"--{name} must be in [1, {top}] for model {model.name}, got {value:g}")


def _prepare_anoddpm(o: DetectOptions) -> Runner:
    model = load_diffusion(o.model, DETECTORS["anoddpm"].default_model, o.device)
    _check_range("t", o.t, model)
    t = an.ANODDPM_T if o.t is None else o.t
    smooth = an.ANODDPM_SMOOTH_PX if o.smooth is None else o.smooth

    def run(x: torch.Tensor, g: torch.Generator) -> an.AnomalyResult:
        return an.anoddpm(model, x, t, steps=o.steps, smooth_px=smooth, samples=o.samples or 1,
                          generator=g)

    return Runner(run, model.spec.image_size, (model.name,), model.denoiser.device)


def _counterfactual_preparer(method: str, defaults: an.CounterfactualDefaults):
    def prepare(o: DetectOptions) -> Runner:
        model = load_diffusion(o.model, DETECTORS[method].default_model, o.device)
        _check_range("level", o.level, model)
        clf = load_classifier(o.classifier or DEFAULT_CLASSIFIER, device=model.denoiser.device)
        clf.check_schedule(model.denoiser.schedule)
        if clf.net.config.image_size != model.spec.image_size:
            raise InputError(f"classifier {clf.name} takes {clf.net.config.image_size} px images, "
                             f"model {model.name} {model.spec.image_size} px")
        level = defaults.level if o.level is None else o.level
        kw = {"scale": defaults.scale if o.scale is None else o.scale,
              "steps": defaults.steps if o.steps is None else o.steps,
              "smooth_px": defaults.smooth_px if o.smooth is None else o.smooth}

        def run(x: torch.Tensor, g: torch.Generator) -> an.AnomalyResult:
            return an.counterfactual(model, x, clf, level=level, **kw)

        return Runner(run, model.spec.image_size, (model.name, clf.name), model.denoiser.device)

    return prepare


def latent_paths(model: str | None) -> tuple[Path | None, Path | None]:
    """(autoencoder, latent DDPM JSON) of ``--model`` for the latent method (D2): None -> the
    bundled pair (``None, None``); a folder -> ``latent-ae-64.safetensors`` and
    ``latent-ddpm-64.json`` in it (what ``scripts/train_latent.py --weights-dir`` writes); a
    ``NAME.json`` -> that latent DDPM with ``latent-ae-64.safetensors`` beside it; a bare name
    -> ``NAME.json`` in the bundled folder."""
    if model is None:
        return None, None
    path = Path(model)
    if path.is_dir():
        ddpm = path / f"{lt.DDPM_NAME}.json"
    elif path.name == str(model) and not path.suffix:
        ddpm = lt.LATENT_DIR / f"{model}.json"
    else:
        ddpm = path.with_suffix(".json")
    return ddpm.with_name(f"{lt.AE_NAME}.safetensors"), ddpm


def _prepare_latent(o: DetectOptions) -> Runner:
    ae, ddpm = latent_paths(o.model)
    det = lt.load_detector(ae, ddpm, device=o.device)
    top = det.denoiser.schedule.num_steps - 1
    if o.t is not None and not 1 <= o.t <= top:
        raise InputError(f"--t must be in [1, {top}] for the latent DDPM, got {o.t:g}")
    ts = lt.DEFAULT_T if o.t is None else (o.t,)
    steps = lt.DEFAULT_STEPS if o.steps is None else o.steps
    smooth = lt.DEFAULT_SMOOTH_PX if o.smooth is None else o.smooth

    def run(x: torch.Tensor, g: torch.Generator) -> an.AnomalyResult:
        return lt.detect(det, x, ts, steps, smooth, generator=g)

    names = tuple(p.stem if p else n for p, n in zip((ae, ddpm), (lt.AE_NAME, lt.DDPM_NAME)))
    return Runner(run, _latent_image_size(det, ddpm), names, det.denoiser.device)


def _latent_image_size(det: lt.LatentDetector, ddpm: Path | None) -> int:
    """Image size the D2 pair works at: the latent DDPM's size (its JSON spec) times the
    autoencoder's downsampling factor (probed with one 64 px encoding)."""
    doc = json.loads((ddpm or lt.LATENT_DIR / f"{lt.DDPM_NAME}.json").read_text(encoding="utf-8"))
    probe = torch.zeros(1, 1, 64, 64, device=det.denoiser.device)
    return int(doc["spec"]["image_size"]) * (64 // det.codec.encode(probe).shape[-1])


_CF = frozenset({"classifier", "level", "scale", "steps", "smooth"})
DETECTORS: dict[str, Detector] = {
    "anoddpm": Detector("D3 AnoDDPM: partial diffusion with simplex noise and back",
                        "anoddpm-64", frozenset({"t", "steps", "smooth", "samples"}),
                        _prepare_anoddpm),
    "wolleb": Detector("D4 Wolleb: DDIM encoding to level L, classifier-guided decoding",
                       "brain-prior-64", _CF, _counterfactual_preparer("wolleb", an.WOLLEB)),
    "diff-scm": Detector("D1 Diff-SCM: DDIM abduction to T, classifier-guided decoding",
                         "brain-prior-64", _CF, _counterfactual_preparer("diff-scm", an.DIFF_SCM)),
    "latent": Detector("D2 Pinaya: latent DDPM, partial diffusion of the autoencoder latent",
                       lt.DDPM_NAME, frozenset({"t", "steps", "smooth"}), _prepare_latent),
}


# ------------------------------------------------------------------------------ running
def check_options(method: str, o: DetectOptions) -> None:
    """One-line InputError for an unknown method, an option that does not apply to it, or a
    value out of range (times are checked against the model when it is loaded)."""
    if method not in DETECTORS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(DETECTORS)}")
    applies = DETECTORS[method].options
    for name in METHOD_OPTIONS:
        if getattr(o, name) is not None and name not in applies:
            raise InputError(f"--{name} does not apply to --method {method} "
                             f"(it takes {', '.join('--' + a for a in sorted(applies))})")
    lows = {"seed": 0, "steps": 1, "scale": 0, "smooth": 0, "samples": 1, "batch_size": 1}
    for name, low in lows.items():
        value = getattr(o, name)
        if value is not None and value < low:
            raise InputError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def prepare(method: str, options: DetectOptions) -> Runner:
    """Check the options and load the models of ``method``."""
    check_options(method, options)
    return DETECTORS[method].prepare(options)


def detect(runner: Runner, images01: torch.Tensor, options: DetectOptions) -> Detection:
    """Run a prepared method over ``images01`` (N, 1, S, S) in [0, 1] in batches, with one
    generator seeded by ``options.seed`` on the model's device."""
    if images01.ndim != 4 or images01.shape[1] != 1 or images01.shape[-1] != runner.image_size:
        raise InputError(f"images must be (N, 1, {runner.image_size}, {runner.image_size}), "
                         f"got {tuple(images01.shape)}")
    g = torch.Generator(runner.device).manual_seed(int(options.seed))
    start, maps, recons, nfe = time.perf_counter(), [], [], 0
    for i in range(0, len(images01), options.batch_size):
        res = runner.run(images01[i:i + options.batch_size], g)
        maps.append(res.maps)
        recons.append(res.recon)
        nfe += res.nfe
    return Detection(torch.cat(maps), torch.cat(recons), nfe, time.perf_counter() - start)


# ------------------------------------------------------------------------------ outputs
def output_paths(out_path: str | Path) -> tuple[Path, Path, Path, Path]:
    """``(map, healthy, panel, overlay)`` for ``out.nii[.gz]``: ``out_healthy.nii[.gz]``,
    ``out.png``, ``out_overlay.png``."""
    out = Path(out_path)
    low = out.name.lower()
    suffix = ".nii.gz" if low.endswith(".nii.gz") else ".nii" if low.endswith(".nii") else None
    if suffix is None or len(out.name) == len(suffix):
        raise InputError(f"{out}: the output must be a NIfTI file name (.nii or .nii.gz)")
    stem = out.name[:-len(suffix)]
    return (out, out.with_name(f"{stem}_healthy{suffix}"), out.with_name(f"{stem}.png"),
            out.with_name(f"{stem}_overlay.png"))


def restore_map(maps: torch.Tensor, shape: tuple[int, int], ndim: int) -> np.ndarray:
    """Maps (N, 1, S, S) onto the file's slice grid ``shape`` (bilinear), laid out like the
    file's array (2D, or 3D with the slice axis last); values are kept (no intensity window)."""
    if tuple(maps.shape[-2:]) != tuple(shape):
        maps = F.interpolate(maps, size=tuple(shape), mode="bilinear", align_corners=False)
    vol = maps[:, 0].float().numpy()
    return vol[0] if ndim == 2 else np.moveaxis(vol, 0, -1)


def shown_slice(maps: torch.Tensor) -> int:
    """The slice the figures show: the one with the highest 99th-percentile map value."""
    return int(torch.quantile(maps.flatten(1).float(), 0.99, dim=1).argmax())


def write_outputs(out_path: str | Path, det: Detection, slices, method: str) -> list[Path]:
    """Write the map NIfTI (file grid, affine of the input), the healthy reconstruction NIfTI
    (file intensity units, :meth:`meddiff.api.Slices.restore`), a PNG panel
    input / reconstruction / map and a PNG overlay of the map on the input, for the most
    anomalous slice. Every file is written atomically; returns the paths."""
    map_path, healthy_path, panel_path, overlay_path = output_paths(out_path)
    from meddiff.data.io import save_nifti

    affine = slices.image.affine
    save_nifti(map_path, restore_map(det.maps, slices.shape, slices.image.array.ndim), affine)
    save_nifti(healthy_path, slices.restore(det.recon), affine)
    k = shown_slice(det.maps)
    x, m = slices.images[k, 0], det.maps[k, 0]
    save_panel(panel_path, [("input", x), ("healthy reconstruction", det.recon[k, 0]),
                            ("anomaly map", m)],
               vmin=[0, 0, 0], vmax=[1, 1, None], error_columns=[2],
               suptitle=f"{method}, slice {k}")
    top = float(det.maps.max())
    save_overlay(overlay_path, x, (m / top).clamp(0, 1) if top > 0 else m * 0,
                 title=f"{method}: map / {top:.3g}")
    return [map_path, healthy_path, panel_path, overlay_path]
