"""``meddiff denoise``: Gaussian denoising of a file or folder with the prior
(:func:`meddiff.api.denoise_file`)."""
from __future__ import annotations

import argparse

from meddiff import api
from meddiff.cli.common import (FOLDER_INPUT, FOLDER_OUT, MAX_BATCH, MAX_STEPS, bounded_int,
                                common_options, defaults, example, finite_float,
                                overwrite_option, print_runs, resize_option)

HELP = "remove Gaussian noise from a 2D image or every slice of a volume"
EXAMPLE = "meddiff denoise --input scan.nii.gz --sigma 0.05 --out denoised.nii.gz"


def add_parser(subparsers) -> argparse.ArgumentParser:
    d = defaults(api.denoise_file)
    p = subparsers.add_parser("denoise", help=HELP, description=HELP, epilog=example(EXAMPLE))
    p.add_argument("--input", required=True,
                   help="NIfTI, DICOM file/series folder, PNG, TIFF or NPY" + FOLDER_INPUT)
    p.add_argument("--sigma", type=finite_float, required=True,
                   help="noise std as a fraction of the 0.5-99.5 percentile range, in (0, 1)")
    p.add_argument("--method", default=d["method"], choices=("tweedie", "ddim", "ddpm"),
                   help="tweedie: one network call (the MMSE estimate); ddim / ddpm: reverse "
                        "diffusion from the noise level")
    p.add_argument("--steps", type=bounded_int(None, MAX_STEPS), default=d["steps"],
                   help="reverse steps of ddim / ddpm")
    p.add_argument("--model", default=d["model"], help="bundled name, NAME.json, or run dir")
    p.add_argument("--batch-size", type=bounded_int(None, MAX_BATCH), default=d["batch_size"],
                   help="slices per network batch")
    resize_option(p)
    p.add_argument("--out", required=True,
                   help="output NIfTI (.nii.gz); <out>.png, a panel, and <out>.json, what made "
                        "it, are written beside it" + FOLDER_OUT)
    overwrite_option(p)
    common_options(p)
    p.set_defaults(run=run)
    return p


def run(a: argparse.Namespace) -> None:
    res = api.denoise_file(a.input, a.out, a.sigma, method=a.method, steps=a.steps,
                           model=a.model, resize=a.resize, device=a.device, seed=a.seed,
                           batch_size=a.batch_size, progress=True, overwrite=a.overwrite)
    print_runs(res, lambda r: print(f"wrote {' and '.join(r['outputs'])}"))
