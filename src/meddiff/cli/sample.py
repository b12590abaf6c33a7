"""``meddiff sample``: draw images (2D) or volumes (3D) from a model (:func:`meddiff.api.sample_files`)."""
from __future__ import annotations

import argparse

from meddiff import api
from meddiff.cli.common import (MAX_BATCH, MAX_SAMPLES, MAX_SIZE, MAX_STEPS, bounded_float,
                                bounded_int, common_options, defaults, example,
                                overwrite_option)

HELP = "draw images (2D) or volumes (3D) from a model: PNG grid + NIfTI files"
EXAMPLE = "meddiff sample --model brain-prior-64 --n 8 --steps 50 --out samples"


def add_parser(subparsers) -> argparse.ArgumentParser:
    d = defaults(api.sample_files)
    s = subparsers.add_parser("sample", help=HELP, description=HELP, epilog=example(EXAMPLE))
    s.add_argument("--model", default=d["model"], help="bundled name, NAME.json, or run dir")
    s.add_argument("--n", type=bounded_int(1, MAX_SAMPLES), default=d["n"],
                   help="how many images to draw")
    s.add_argument("--sampler", default=d["sampler"],
                   help="ddpm | ddim | dpmpp_2m | pc_ve | pc_vp")
    s.add_argument("--steps", type=bounded_int(None, MAX_STEPS), default=d["steps"],
                   help="reverse diffusion steps")
    s.add_argument("--eta", type=bounded_float(0.0, 1.0), default=d["eta"],
                   help="DDIM stochasticity (0 = deterministic)")
    s.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=d["batch_size"],
                   help="images per network batch")
    s.add_argument("--size", type=bounded_int(1, MAX_SIZE), default=d["size"],
                   help="image side in pixels (default: the model's training size; any multiple "
                        "of the network's divisor)")
    s.add_argument("--out", required=True,
                   help="output folder: samples.png and sample_000.nii.gz, ...")
    overwrite_option(s)
    common_options(s)
    s.set_defaults(run=run)
    return s


def run(a: argparse.Namespace) -> None:
    res = api.sample_files(a.out, model=a.model, n=a.n, sampler=a.sampler, steps=a.steps,
                           eta=a.eta, batch_size=a.batch_size, device=a.device, seed=a.seed,
                           progress=True, size=a.size, overwrite=a.overwrite)
    what = "middle slices" if res["volumes"] else "images"
    print(f"wrote {res['grid']} ({what}) and {a.n} NIfTI files "
          f"sample_000..{a.n - 1:03d}.nii.gz in {a.out}")
