"""``meddiff translate``: translate a T1w file or folder to T2w, FLAIR or head CT with a
registered translation method (:func:`meddiff.api.translate_file`); the methods, which options
apply to which and their defaults come from the method registry."""
from __future__ import annotations

import argparse

from meddiff import api
from meddiff.cli.common import (FOLDER_INPUT, FOLDER_OUT, MAX_BATCH, MAX_STEPS, bounded_int,
                                call, common_options, defaults, example, overwrite_option,
                                print_runs, resize_option)

HELP = "translate T1w images to T2w, FLAIR or head CT (paired conditional diffusion, T1)"
EXAMPLE = "meddiff translate --target t2w --input t1.nii.gz --out t2w.nii.gz"


def add_parser(subparsers) -> argparse.ArgumentParser:
    d, per_method = defaults(api.translate_file), api.method_defaults("translation")
    rows = [m for m in api.method_rows() if m["family"] == "translation"]
    p = subparsers.add_parser("translate", help=HELP, description=HELP,
                              epilog=example(EXAMPLE))
    p.add_argument("--method", default=d["method"], choices=api.method_choices("translation"),
                   help="; ".join(f"{m['method']}: {m['summary']}" for m in rows)
                        + f" (default {d['method']})")
    p.add_argument("--target", default=d["target"], choices=("t2w", "flair", "ct"),
                   help="the target domain; the input is a T1w image")
    p.add_argument("--input", required=True,
                   help="T1w NIfTI, DICOM file/series folder, PNG, TIFF or NPY" + FOLDER_INPUT)
    p.add_argument("--out", required=True,
                   help="output NIfTI (.nii.gz; MR targets in [0, 1], CT in HU); <out>.png and "
                        "<out>.json are written beside it" + FOLDER_OUT)
    p.add_argument("--sampler", default=d["sampler"],
                   help="cddpm: dpmpp_2m, ddim or ddpm (default "
                        f"{per_method['cddpm'].get('sampler')})")
    p.add_argument("--steps", type=bounded_int(None, MAX_STEPS), default=d["steps"],
                   help="reverse steps (defaults: " + ", ".join(
                       f"{m} {o['steps']}" for m, o in per_method.items() if "steps" in o) + ")")
    p.add_argument("--model", default=d["model"],
                   help="bundled name, NAME.json, or run dir (default: t1w-TARGET-cddpm-native, "
                        "the unet baseline t1w-TARGET-unet-native)")
    p.add_argument("--batch-size", type=bounded_int(None, MAX_BATCH), default=d["batch_size"],
                   help="slices per network batch")
    resize_option(p)
    overwrite_option(p)
    common_options(p)
    p.set_defaults(run=run)
    return p


def run(a: argparse.Namespace) -> None:
    a.progress = True
    res = call(api.translate_file, a)
    print_runs(res, lambda r: print(f"{r['method']} ({r['model']}) -> {r['target']}: "
                                    f"{r['slices']} slices, {r['seconds']:.2f} s\n"
                                    f"wrote {' and '.join(r['outputs'])}"))
