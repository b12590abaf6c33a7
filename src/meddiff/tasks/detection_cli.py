"""``meddiff detect``: a thin layer over :mod:`meddiff.tasks.detection`.

Reads an image file (NIfTI, DICOM, PNG, TIFF, NPY; volumes slice by slice), runs one anomaly
detection method with the healthy prior and writes the anomaly map NIfTI (``--out``, the file's
grid and affine), the healthy reconstruction ``<out>_healthy.nii.gz``, a PNG panel
``<out>.png`` (input / reconstruction / map) and ``<out>_overlay.png``. Every check runs before
anything is written.
"""
from __future__ import annotations

import argparse
import json

from meddiff.cli import common_options
from meddiff.tasks import detection as dt


def add_detect_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``detect`` sub-command to the ``subparsers`` of :func:`meddiff.cli.build_parser`."""
    d = subparsers.add_parser(
        "detect", help="unsupervised anomaly (lesion) maps with a healthy diffusion prior")
    d.add_argument("--method", required=True, choices=tuple(dt.DETECTORS),
                   help="; ".join(f"{k}: {v.summary}" for k, v in dt.DETECTORS.items()))
    d.add_argument("--input", required=True, help="NIfTI, DICOM file/folder, PNG, TIFF or NPY")
    d.add_argument("--out", required=True,
                   help="anomaly map NIfTI (.nii.gz); <out>_healthy.nii.gz, <out>.png and "
                        "<out>_overlay.png are written beside it")
    d.add_argument("--model", default=None,
                   help="bundled name, NAME.json, or run dir; latent: a folder with the "
                        "autoencoder and latent DDPM, or the latent DDPM's NAME.json (default: "
                        + ", ".join(f"{v.default_model} for {k}" for k, v in dt.DETECTORS.items())
                        + ")")
    d.add_argument("--classifier", default=None,
                   help="noise-aware classifier for wolleb / diff-scm: bundled name or NAME.json "
                        "(default lesion-classifier-64)")
    d.add_argument("--t", type=float, default=None,
                   help=f"anoddpm: noise time 1..T-1 (default {dt.an.ANODDPM_T:g}); latent: one "
                        "noise level instead of the default 100, 200, 300")
    d.add_argument("--level", type=float, default=None,
                   help=f"wolleb / diff-scm: DDIM encoding level (default {dt.an.WOLLEB.level:g} "
                        "for wolleb, T-1 for diff-scm)")
    d.add_argument("--scale", type=float, default=None,
                   help=f"wolleb / diff-scm: classifier-guidance scale (default "
                        f"{dt.an.WOLLEB.scale:g} / {dt.an.DIFF_SCM.scale:g})")
    d.add_argument("--steps", type=int, default=None,
                   help="reverse steps (default: every step from t for anoddpm, 5 per level "
                        f"for latent, {dt.an.WOLLEB.steps} DDIM steps otherwise)")
    d.add_argument("--smooth", type=float, default=None,
                   help=f"Gaussian smoothing of the map in pixels (default "
                        f"{dt.an.ANODDPM_SMOOTH_PX:g} for anoddpm, 1 for latent, 0 otherwise)")
    d.add_argument("--samples", type=int, default=None,
                   help="anoddpm: reconstructions averaged (default 1)")
    d.add_argument("--batch-size", type=int, default=16)
    d.add_argument("--resize", action="store_true", help="resample slices to the model's size")
    common_options(d, json_flag=True)
    d.set_defaults(func=cmd_detect)
    return d


def options_from_args(a: argparse.Namespace) -> dt.DetectOptions:
    return dt.DetectOptions(model=a.model, classifier=a.classifier, device=a.device, seed=a.seed,
                            t=a.t, level=a.level, scale=a.scale, steps=a.steps, smooth=a.smooth,
                            samples=a.samples, batch_size=a.batch_size)


def cmd_detect(a: argparse.Namespace) -> None:
    """Run ``meddiff detect`` (see the module docstring)."""
    from meddiff import api

    opts = options_from_args(a)
    dt.check_options(a.method, opts)
    dt.output_paths(a.out)
    runner = dt.DETECTORS[a.method].prepare(opts)
    slices = api.read_slices(a.input, runner.image_size, resize=a.resize)
    det = dt.detect(runner, slices.images, opts)
    written = [str(p) for p in dt.write_outputs(a.out, det, slices, a.method)]
    summary = {"method": a.method, "models": list(runner.names), "slices": len(det.maps),
               "nfe": det.nfe, "seconds": round(det.seconds, 3),
               "seconds_per_slice": round(det.seconds / len(det.maps), 4),
               "map_max": round(float(det.maps.max()), 5), "outputs": written}
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{a.method} ({', '.join(runner.names)}): {summary['slices']} slices, {det.nfe} network "
          f"evaluations, {det.seconds:.2f} s, map max {summary['map_max']:.4g}")
    print(f"wrote {', '.join(written)}")
