"""``meddiff segment``: lesion segmentation ensembles of a file (:func:`meddiff.api.segment_file`).

Reads a 2D image or every slice of a volume (NIfTI, DICOM, PNG, TIFF, NPY; percentile-normalised
to [0, 1] like the rest of the CLI), draws ``--samples`` masks per slice from the conditional
mask DDPM (G2, Wolleb et al. 2022, MIDL) and writes

- ``OUT`` (.nii / .nii.gz): the mean of the sampled masks, in [0, 1] on the file's grid
  (threshold at 0.5 for a binary mask);
- ``<OUT>_var.nii[.gz]``: the per-pixel variance of the samples (uncertainty), in [0, 0.25];
- ``<OUT>.png``: image / mean-mask overlay / variance of the middle slice;
- ``<OUT>_labels.nii[.gz]`` with ``--threshold T``: the uint8 label map ``mean >= T`` (0 / 1);
- ``<OUT>.json``: what made them (model, version, options, seed, input, results).

A folder ``--input`` is every file / DICOM series in it, ``--out`` then a folder.

Every check (options, output name, input file, model) runs before anything is written; each
file is written atomically, the three together; existing outputs are replaced only with
``--overwrite``.
"""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import (FOLDER_INPUT, FOLDER_OUT, MAX_BATCH, MAX_SAMPLES, MAX_STEPS,
                                bounded_float, bounded_int, call, common_options, defaults,
                                example, overwrite_option, print_runs, resize_option)

HELP = "segment lesions with a diffusion ensemble: mean mask, variance map, PNG overlay"
EXAMPLE = "meddiff segment --input flair.nii.gz --samples 8 --out lesion.nii.gz"


def add_parser(subparsers) -> argparse.ArgumentParser:
    d = defaults(api.segment_file)
    rows = [m for m in api.method_rows() if m["family"] == "segmentation"]
    s = subparsers.add_parser("segment", help=HELP, description=HELP, epilog=example(EXAMPLE))
    s.add_argument("--method", default=d["method"], choices=api.method_choices("segmentation"),
                   help="; ".join(f"{m['method']}: {m['summary']}" for m in rows))
    s.add_argument("--input", required=True, help="image (NIfTI, DICOM, PNG, TIFF, NPY); "
                                                  "T2w or FLAIR brain MRI" + FOLDER_INPUT)
    s.add_argument("--samples", type=bounded_int(None, MAX_SAMPLES), default=d["samples"],
                   help="masks sampled per slice")
    s.add_argument("--steps", type=bounded_int(None, MAX_STEPS), default=d["steps"],
                   help="reverse diffusion steps per sample")
    s.add_argument("--sampler", default=d["sampler"], choices=("ddpm", "ddim"),
                   help="the reverse process of each sample")
    s.add_argument("--model", default=d["model"],
                   help="NAME.json or run dir of the method's network (default: "
                        + ", ".join(f"{m['default_model']} for {m['method']}" for m in rows)
                        + ")")
    s.add_argument("--batch-size", type=bounded_int(None, MAX_BATCH), default=d["batch_size"],
                   help="network rows per batch (ensemble: slice x sample)")
    s.add_argument("--threshold", type=bounded_float(None, 1.0), default=d["threshold"],
                   help="also write <out>_labels.nii.gz, the uint8 label map mean >= T (0 / 1) "
                        "(default: no label map)")
    resize_option(s)
    s.add_argument("--out", required=True,
                   help="output NIfTI (.nii.gz) of the mean mask; <out>_var.nii.gz, <out>.png "
                        "and <out>.json are written beside it" + FOLDER_OUT)
    overwrite_option(s)
    common_options(s, json_flag=True)
    s.set_defaults(run=run)
    return s


def run(a: argparse.Namespace) -> None:
    a.progress = not a.json  # a bar over the network batches on stderr
    res = call(api.segment_file, a)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print_runs(res, print_result)


def print_result(res: dict) -> None:
    """One file's slices, samples, lesion pixels, cost and outputs."""
    how = (f"{res['samples']} samples x {res['steps']} {res['sampler']} steps"
           if res["method"] == "ensemble" else res["method"])
    print(f"{res['slices']} slice(s), {how}: {res['lesion_pixels']} lesion pixels "
          f"(mean >= {res['threshold']:g}), "
          f"{res['nfe']} network evaluations, {res['seconds']:.2f} s")
    print(f"wrote {', '.join(res['outputs'])}")
