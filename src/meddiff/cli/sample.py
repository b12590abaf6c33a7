"""``meddiff sample``: draw images (2D) or volumes (3D) from a model (:func:`meddiff.api.sample_files`)."""
from __future__ import annotations

import argparse

from meddiff import api
from meddiff.cli.common import common_options

HELP = "draw images (2D) or volumes (3D) from a model: PNG grid + NIfTI files"


def add_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser("sample", help=HELP)
    s.add_argument("--model", default=api.DEFAULT_MODEL, help="bundled name, NAME.json, or run dir")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--sampler", default="ddim", help="ddpm | ddim | dpmpp_2m | pc_ve | pc_vp")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 = deterministic)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default: the model's training size; any multiple "
                        "of the network's divisor)")
    s.add_argument("--out", required=True, help="output directory")
    common_options(s)
    s.set_defaults(run=run)
    return s


def run(a: argparse.Namespace) -> None:
    res = api.sample_files(a.out, model=a.model, n=a.n, sampler=a.sampler, steps=a.steps,
                           eta=a.eta, batch_size=a.batch_size, device=a.device, seed=a.seed,
                           progress=True, size=a.size)
    what = "middle slices" if res["volumes"] else "images"
    print(f"wrote {res['grid']} ({what}) and {a.n} NIfTI files "
          f"sample_000..{a.n - 1:03d}.nii.gz in {a.out}")
