"""``meddiff denoise``: Gaussian denoising of a file with the prior (:func:`meddiff.api.denoise_file`)."""
from __future__ import annotations

import argparse

from meddiff import api
from meddiff.cli.common import common_options

HELP = "remove Gaussian noise from a 2D image or every slice of a volume"


def add_parser(subparsers) -> argparse.ArgumentParser:
    d = subparsers.add_parser("denoise", help=HELP)
    d.add_argument("--input", required=True, help="NIfTI, DICOM file/folder, PNG, TIFF or NPY")
    d.add_argument("--sigma", type=float, required=True,
                   help="noise std as a fraction of the 0.5-99.5 percentile range")
    d.add_argument("--method", default="tweedie", choices=("tweedie", "ddim", "ddpm"))
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--model", default=api.DEFAULT_MODEL)
    d.add_argument("--batch-size", type=int, default=16, help="slices per network batch")
    d.add_argument("--resize", action="store_true",
                   help="resample slices to the model's training size and back (default: run "
                        "on the file's own grid)")
    d.add_argument("--out", required=True, help="output NIfTI (a PNG panel is written beside it)")
    common_options(d)
    d.set_defaults(run=run)
    return d


def run(a: argparse.Namespace) -> None:
    res = api.denoise_file(a.input, a.out, a.sigma, method=a.method, steps=a.steps,
                           model=a.model, resize=a.resize, device=a.device, seed=a.seed,
                           batch_size=a.batch_size, progress=True)
    print(f"wrote {' and '.join(res['outputs'])}")
