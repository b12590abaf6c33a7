"""``meddiff detect``: unsupervised anomaly maps of a file (:func:`meddiff.api.detect_file`).

Reads an image file (NIfTI, DICOM, PNG, TIFF, NPY; volumes slice by slice), runs one anomaly
detection method with the healthy prior and writes the anomaly map NIfTI (``--out``, the file's
grid and affine), the healthy reconstruction ``<out>_healthy.nii.gz``, a PNG panel
``<out>.png`` (input / reconstruction / map), ``<out>_overlay.png`` and ``<out>.json`` (what
made them). A folder ``--input`` is every file / DICOM series in it, ``--out`` then a folder.
Every check runs before anything is written; existing outputs are replaced only with
``--overwrite``. The methods,
which options apply to which and their defaults come from the method registry.
"""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import (FOLDER_INPUT, FOLDER_OUT, MAX_BATCH, MAX_SAMPLES, MAX_SCALE,
                                MAX_SMOOTH_PX, MAX_STEPS, applies_to, bounded_float, bounded_int,
                                call, common_options, defaults, example, finite_float,
                                overwrite_option, print_runs, resize_option)

HELP = "unsupervised anomaly (lesion) maps with a healthy diffusion prior"
EXAMPLE = "meddiff detect --method wolleb --input flair.nii.gz --out anomaly.nii.gz"

#: what each method option means and its type (which methods take it, and their defaults,
#: are added); the lower bounds are the task's
OPTIONS = {
    "classifier": (None, "noise-aware classifier, bundled name or NAME.json (default: the "
                         "bundled lesion classifier)"),
    "t": (finite_float, "noise time 1..T-1 of the partial diffusion (latent: one level instead "
                        "of its default levels)"),
    "level": (finite_float, "DDIM encoding level (default T-1 where none is given)"),
    "scale": (bounded_float(None, MAX_SCALE), "classifier-guidance scale"),
    "steps": (bounded_int(None, MAX_STEPS), "reverse steps (anoddpm default: every step from t)"),
    "smooth": (bounded_float(None, MAX_SMOOTH_PX), "Gaussian smoothing of the map in pixels"),
    "samples": (bounded_int(None, MAX_SAMPLES), "reconstructions averaged"),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    d, per_method = defaults(api.detect_file), api.method_defaults("detection")
    rows = [m for m in api.method_rows() if m["family"] == "detection" and m["kind"] != "modifier"]
    p = subparsers.add_parser("detect", help=HELP, description=HELP, epilog=example(EXAMPLE))
    p.add_argument("--method", required=True, choices=api.method_choices("detection"),
                   help="; ".join(f"{m['method']}: {m['summary']}" for m in rows))
    p.add_argument("--input", required=True,
                   help="NIfTI, DICOM file/series folder, PNG, TIFF or NPY" + FOLDER_INPUT)
    p.add_argument("--out", required=True,
                   help="anomaly map NIfTI (.nii.gz); <out>_healthy.nii.gz, <out>.png and "
                        "<out>_overlay.png and <out>.json are written beside it" + FOLDER_OUT)
    p.add_argument("--model", default=d["model"],
                   help="bundled name, NAME.json, or run dir; latent: a folder with the "
                        "autoencoder and latent DDPM, or the latent DDPM's NAME.json (default: "
                        + ", ".join(f"{m['default_model']} for {m['method']}" for m in rows)
                        + ")")
    for option, (kind, text) in OPTIONS.items():
        p.add_argument(f"--{option}", type=kind, default=d[option],
                       help=text + applies_to(option, rows, per_method))
    p.add_argument("--batch-size", type=bounded_int(None, MAX_BATCH), default=d["batch_size"],
                   help="slices per network batch (the stochastic methods' results depend on it)")
    resize_option(p)
    overwrite_option(p)
    common_options(p, json_flag=True)
    p.set_defaults(run=run)
    return p


def run(a: argparse.Namespace) -> None:
    a.progress = not a.json  # a bar over the slice batches on stderr
    res = call(api.detect_file, a)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print_runs(res, print_result)


def print_result(res: dict) -> None:
    """One file's method, models, cost, map maximum and outputs."""
    print(f"{res['method']} ({', '.join(res['models'])}): {res['slices']} slices, {res['nfe']} "
          f"network evaluations, {res['seconds']:.2f} s, map max {res['map_max']:.4g}")
    print(f"wrote {', '.join(res['outputs'])}")
