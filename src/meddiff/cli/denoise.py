"""``meddiff denoise``: denoise a file or folder with a registered denoising method
(:func:`meddiff.api.denoise_file`): Gaussian noise with the prior (tweedie / ddim / ddpm), low-dose
CT (C1 ``ldct``), low-count PET (P1 ``pet``, ``--mr`` adds the MR channel) and OCT speckle
(C3 ``oct``). The methods, which options apply to which and their defaults come from the
method registry."""
from __future__ import annotations

import argparse

from meddiff import api
from meddiff.cli.common import (FOLDER_INPUT, FOLDER_OUT, MAX_BATCH, MAX_SAMPLES, MAX_STEPS,
                                applies_to, bounded_float, bounded_int, call, common_options,
                                defaults, example, finite_float, overwrite_option, print_runs,
                                resize_option)

HELP = "denoise a 2D image or every slice of a volume (Gaussian, low-dose CT, PET, OCT)"
EXAMPLE = "meddiff denoise --method ldct --input lowdose_ct.nii.gz --out ct_denoised.nii.gz"

#: what each method option means and its type (which methods take it, and their defaults,
#: are added)
OPTIONS = {
    "sampler": (str, "ddim, ddpm or dpmpp_2m (oct also tweedie: one network call)"),
    "steps": (bounded_int(None, MAX_STEPS), "reverse diffusion steps"),
    "samples": (bounded_int(None, MAX_SAMPLES), "posterior samples averaged"),
    "level": (bounded_float(None, 10.0), "entry noise as a multiple of the estimated speckle "
                                        "std"),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    d, per_method = defaults(api.denoise_file), api.method_defaults("denoising")
    rows = [m for m in api.method_rows() if m["family"] == "denoising"]
    p = subparsers.add_parser("denoise", help=HELP, description=HELP, epilog=example(EXAMPLE))
    p.add_argument("--method", default=d["method"], choices=api.method_choices("denoising"),
                   help="; ".join(f"{m['method']}: {m['summary']}" for m in rows)
                        + f" (default {d['method']})")
    p.add_argument("--input", required=True,
                   help="NIfTI, DICOM file/series folder, PNG, TIFF or NPY" + FOLDER_INPUT)
    p.add_argument("--sigma", type=finite_float, default=None,
                   help="noise std as a fraction of the 0.5-99.5 percentile range, in (0, 1); "
                        "needed by tweedie / ddim / ddpm, estimated by oct when left out")
    p.add_argument("--mr", default=None,
                   help="pet: an MR image on the same grid as the PET, the second condition "
                        "channel (loads the PET + MR model)")
    for option, (kind, text) in OPTIONS.items():
        p.add_argument(f"--{option}", type=kind, default=d[option],
                       help=text + applies_to(option, rows, per_method))
    p.add_argument("--model", default=d["model"],
                   help="bundled name, NAME.json, or run dir (default: "
                        + ", ".join(f"{m['default_model']} for {m['method']}" for m in rows)
                        + ")")
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
    a.progress = True
    res = call(api.denoise_file, a)
    print_runs(res, lambda r: print(f"{r['method']} ({r['model']}): {r['slices']} slices, "
                                    f"{r['seconds']:.2f} s\nwrote {' and '.join(r['outputs'])}"))
