"""``meddiff demo``: the bundled prior end to end (:func:`meddiff.api.run_demo`)."""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import common_options, defaults, example, overwrite_option, print_table

HELP = "the bundled prior end to end (samples + denoising benchmark)"
EXAMPLE = "meddiff demo --out demo_out"


def add_parser(subparsers) -> argparse.ArgumentParser:
    d = defaults(api.run_demo)
    m = subparsers.add_parser("demo", help=HELP, description=HELP, epilog=example(EXAMPLE))
    m.add_argument("--out", default="demo_out",
                   help="output folder: samples.png, denoising.png and metrics.json")
    m.add_argument("--model", default=d["model_name"], help="bundled name, NAME.json, or run dir")
    overwrite_option(m)
    common_options(m, json_flag=True)
    m.set_defaults(run=run)
    return m


def run(a: argparse.Namespace) -> None:
    res = api.run_demo(a.out, model_name=a.model, device=a.device, seed=a.seed,
                       progress=not a.json, overwrite=a.overwrite)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"\nmeddiff demo: model {res['model']} on {res['device']}, "
          f"{res['test_slices']} held-out test slices (4 contrasts), seed {res['seed']}\n")
    print_table(res["rows"], [("method", "method", ""), ("sigma", "sigma", ".2f"),
                              ("psnr", "PSNR dB", ".2f"), ("ssim", "SSIM", ".3f"),
                              ("nmse", "NMSE", ".4f"), ("nfe", "NFE", "d"),
                              ("seconds_per_slice", "s/slice", ".3f")])
    print(f"\nwrote {', '.join(res['outputs'])}  ({res['seconds']} s)")
