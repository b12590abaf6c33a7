"""``meddiff reconstruct``: MRI / CT reconstruction of a file (:func:`meddiff.api.reconstruct_file`).

An image file (NIfTI, DICOM, PNG, TIFF, NPY) is the ground truth of a simulated acquisition
(MRI: undersampled k-space; CT: sparse-view / low-dose sinogram); an HDF5 file is real
fastMRI-style k-space, reconstructed as it is when undersampled or undersampled retrospectively
when fully sampled. Writes the reconstruction NIfTI, ``<out>_std.nii.gz`` for methods with an
uncertainty map and a PNG panel, and prints PSNR / SSIM / NMSE against the reference when there
is one; ``<out>.json`` records the options, metrics and self-check. A folder ``--input`` is
every file / DICOM series in it, ``--out`` then a folder. A bar over the network calls runs on
stderr (not with ``--json``). Every check runs before anything is written; existing outputs
are replaced only with ``--overwrite``.

Diffusion methods are self-checked unless ``--no-self-check``: a tenth of the measured k-space
lines (CT: views) is held out, the diffusion method and CS-TV reconstruct from the rest, and the
blend of the two that best predicts the held-out data (per slice) is applied to the full-data
reconstructions; the held-out errors, the chosen weights and a warning when the output leans on
CS are printed (:mod:`meddiff.tasks.selfcheck`).
"""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import (FOLDER_INPUT, FOLDER_OUT, MAX_ACCELERATION, MAX_COILS,
                                MAX_NOISE_STD, MAX_STEPS, MAX_VIEWS, bounded_float, bounded_int,
                                call, common_options, defaults, example, finite_float,
                                overwrite_option, print_runs, print_table, resize_option)

HELP = ("reconstruct undersampled MRI (simulated or fastMRI k-space) or sparse-view / low-dose "
        "CT (simulated) with a diffusion prior")
EXAMPLE = ("meddiff reconstruct --input t1.nii.gz --method score-mri --acceleration 4 "
           "--out recon.nii.gz")


def add_parser(subparsers) -> argparse.ArgumentParser:
    d, t = defaults(api.reconstruct_file), api.reconstruction_defaults()
    rows = [m for m in api.method_rows() if m["family"] == "reconstruction"]
    r = subparsers.add_parser("reconstruct", help=HELP, description=HELP,
                              epilog=example(EXAMPLE))
    r.add_argument("--input", required=True,
                   help="ground-truth image (NIfTI, DICOM, PNG, TIFF, NPY) for a simulated "
                        "acquisition, fastMRI-style k-space (.h5), or a measured CT sinogram "
                        "(.h5 with 'sinogram', 'angles' and attribute pixel_mm; with --modality "
                        "ct)" + FOLDER_INPUT)
    r.add_argument("--modality", default=d["modality"], choices=("mri", "ct"),
                   help="what the image file is the ground truth of (k-space input is MRI, "
                        "a sinogram CT)")
    r.add_argument("--method", default=d["method"], choices=api.method_choices("reconstruction"),
                   help="diffusion method or baseline (what each does: 'meddiff methods')")
    r.add_argument("--mask", default=d["mask"], choices=t["masks"],
                   help=f"MRI sampling mask (default {d['mask']} 1D columns)")
    r.add_argument("--acceleration", type=bounded_float(None, MAX_ACCELERATION),
                   default=d["acceleration"],
                   help=f"MRI acceleration R >= 1 (default {t['acceleration']:g}; not for "
                        "k-space that is already undersampled)")
    r.add_argument("--coils", type=bounded_int(None, MAX_COILS), default=d["coils"],
                   help="simulated MRI receive coils")
    r.add_argument("--coil-mode", default=d["coil_mode"], choices=("sense", "coil-by-coil"),
                   help="multi-coil MRI: one image through the coil maps (SENSE), or every coil "
                        "image separately + root-sum-of-squares (score-MRI's coil-by-coil)")
    r.add_argument("--noise-std", type=bounded_float(None, MAX_NOISE_STD),
                   default=d["noise_std"],
                   help="simulated MRI k-space noise std (image-space units)")
    r.add_argument("--views", type=bounded_int(None, MAX_VIEWS), default=d["views"],
                   help=f"CT view angles over 180 degrees (default {t['views']})")
    r.add_argument("--dose", type=bounded_float(None, 1.0), default=d["dose"],
                   help="CT dose as a fraction of full dose (Poisson counts; default noiseless)")
    r.add_argument("--steps", type=bounded_int(None, MAX_STEPS), default=d["steps"],
                   help="reverse diffusion steps")
    r.add_argument("--t0", type=finite_float, default=d["t0"],
                   help="CCDF warm start: start at this diffusion time (0..T-1) from --init "
                        "(default: none, the full reverse process from noise)")
    r.add_argument("--t0-noise", type=finite_float, default=d["t0_noise"],
                   help="CCDF warm start given as the noise level it starts from (VE noise std "
                        "in model units [-1, 1], e.g. 0.7); the same start on every schedule, "
                        "unlike --t0")
    r.add_argument("--init", default=d["init"],
                   choices=[m["method"] for m in rows if m["kind"] == "baseline"],
                   help="warm-start image (default zero-filled for MRI, fbp for CT)")
    r.add_argument("--cs-lam", type=finite_float, default=d["cs_lam"],
                   help="CS-TV weight relative to ||A||^2 (method cs, --init cs; default "
                        f"{t['cs_lam']['mri']:g} MRI, {t['cs_lam']['ct']:g} CT)")
    r.add_argument("--model", default=d["model"],
                   help="bundled name, NAME.json, or run dir (default: "
                        + ", ".join(f"{v} for {k}" for k, v in t["models"].items()) + ")")
    resize_option(r)
    r.add_argument("--out", required=True,
                   help="output NIfTI (.nii.gz); a PNG panel and, for methods with an "
                        "uncertainty map, <out>_std.nii.gz are written beside it, and "
                        "<out>.json, what made it" + FOLDER_OUT)
    r.add_argument("--no-self-check", dest="self_check", action="store_false",
                   default=d["self_check"],
                   help="diffusion methods: skip the ground-truth-free self-check (by default "
                        "10%% of the measured lines / views are held out, the method and CS-TV "
                        "are scored on predicting them and the output is their best blend; "
                        "costs two extra runs)")
    overwrite_option(r)
    common_options(r, json_flag=True)
    r.set_defaults(run=run)
    return r


def run(a: argparse.Namespace) -> None:
    a.progress = not a.json  # a bar over the network calls on stderr
    res = call(api.reconstruct_file, a)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print_runs(res, print_result)


def print_result(res: dict) -> None:
    """One file's metrics table (or NFE and time), self-check and outputs."""
    if res["metrics"]:
        print_table(res["metrics"], [("method", "method", ""), ("psnr", "PSNR dB", ".2f"),
                                     ("ssim", "SSIM", ".3f"), ("nmse", "NMSE", ".4f"),
                                     ("nfe", "NFE", "d"), ("seconds", "seconds", ".2f")])
    else:
        print(f"{res['method']}: {res['nfe']} network evaluations, {res['seconds']:.2f} s "
              "(no reference: no metrics)")
    if "self_check" in res:
        print_self_check(res["self_check"])
    print(f"wrote {', '.join(res['outputs'])}")


def print_self_check(check: dict) -> None:
    """The self-check's mean held-out errors, the chosen diffusion weights and its warning."""
    if "skipped" in check:
        print(f"self-check skipped: {check['skipped']}")
        return
    err = {k: sum(v) / len(v) for k, v in check["held_out_error"].items()}
    counts = {w: check["weights"].count(w) for w in sorted(set(check["weights"]), reverse=True)}
    weights = ", ".join(f"{w:g} ({n} slice{'s' * (n > 1)})" for w, n in counts.items())
    print(f"self-check ({check['held_out']} held out): held-out error diffusion "
          f"{err['diffusion']:.4f}, CS-TV {err['cs']:.4f}, blend {err['blend']:.4f}; "
          f"diffusion weight {weights}")
    if check["warning"]:
        print(f"warning: {check['warning']}")
