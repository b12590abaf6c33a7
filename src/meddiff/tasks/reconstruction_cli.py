"""``meddiff reconstruct``: a thin layer over :mod:`meddiff.tasks.reconstruction`.

An image file (NIfTI, DICOM, PNG, TIFF, NPY) is the ground truth of a simulated acquisition
(MRI: undersampled k-space; CT: sparse-view / low-dose sinogram); an HDF5 file is real
fastMRI-style k-space (:func:`meddiff.data.io.load_kspace`), reconstructed as it is when
undersampled or undersampled retrospectively when fully sampled. Writes the reconstruction
NIfTI, ``<out>_std.nii.gz`` for methods with an uncertainty map and a PNG panel, and prints
PSNR / SSIM / NMSE against the reference when there is one. Every check runs before anything
is written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from meddiff.cli import common_options
from meddiff.errors import InputError
from meddiff.tasks import reconstruction as rt

_KSPACE_SUFFIXES = (".h5", ".hdf5")


def add_reconstruct_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``reconstruct`` sub-command to the ``subparsers`` of
    :func:`meddiff.cli.build_parser`."""
    r = subparsers.add_parser(
        "reconstruct", help="reconstruct undersampled MRI (simulated or fastMRI k-space) or "
                            "sparse-view / low-dose CT (simulated) with a diffusion prior")
    r.add_argument("--input", required=True,
                   help="ground-truth image (NIfTI, DICOM, PNG, TIFF, NPY) for a simulated "
                        "acquisition, or fastMRI-style k-space (.h5)")
    r.add_argument("--modality", default="mri", choices=("mri", "ct"))
    r.add_argument("--method", default="score-mri", choices=rt.METHOD_NAMES)
    r.add_argument("--mask", default="random", choices=tuple(rt.MASKS),
                   help="MRI sampling mask (default random 1D columns)")
    r.add_argument("--acceleration", type=float, default=None,
                   help=f"MRI acceleration R >= 1 (default {rt.DEFAULT_ACCELERATION:g}; not "
                        "for k-space that is already undersampled)")
    r.add_argument("--coils", type=int, default=1, help="simulated MRI receive coils")
    r.add_argument("--coil-mode", default="sense", choices=("sense", "coil-by-coil"),
                   help="multi-coil MRI: one image through the coil maps (SENSE), or every coil "
                        "image separately + root-sum-of-squares (score-MRI's coil-by-coil)")
    r.add_argument("--noise-std", type=float, default=0.0,
                   help="simulated MRI k-space noise std (image-space units)")
    r.add_argument("--views", type=int, default=None,
                   help=f"CT view angles over 180 degrees (default {rt.FULL_VIEWS})")
    r.add_argument("--dose", type=float, default=None,
                   help="CT dose as a fraction of full dose (Poisson counts; default noiseless)")
    r.add_argument("--steps", type=int, default=100, help="reverse diffusion steps")
    r.add_argument("--t0", type=float, default=None,
                   help="CCDF warm start: start at this diffusion time (0..T-1) from --init")
    r.add_argument("--init", default=None, choices=("zero-filled", "fbp", "cs", "unet"),
                   help="warm-start image (default zero-filled for MRI, fbp for CT)")
    r.add_argument("--cs-lam", type=float, default=None,
                   help="CS-TV weight relative to ||A||^2 (method cs, --init cs; default "
                        f"{rt.CS_LAM['mri']:g} MRI, {rt.CS_LAM['ct']:g} CT)")
    r.add_argument("--model", default=None,
                   help="bundled name, NAME.json, or run dir (default: "
                        + ", ".join(f"{v} for {k}" for k, v in rt.DEFAULT_MODELS.items()) + ")")
    r.add_argument("--resize", action="store_true", help="resample slices to the model's size")
    r.add_argument("--out", required=True,
                   help="output NIfTI (.nii.gz); a PNG panel and, for methods with an "
                        "uncertainty map, <out>_std.nii.gz are written beside it")
    common_options(r, json_flag=True)
    r.set_defaults(func=cmd_reconstruct)
    return r


def _check_options(a: argparse.Namespace, kspace: bool) -> None:
    """Refuse option combinations that do not apply, before any work."""
    ct = a.modality == "ct"
    if kspace and ct:
        raise InputError(f"{a.input}: k-space input is MRI; drop --modality ct")
    if ct and (a.acceleration is not None or a.coils != 1 or a.noise_std):
        raise InputError("--acceleration, --coils and --noise-std apply to --modality mri")
    if not ct and (a.views is not None or a.dose is not None):
        raise InputError("--views and --dose apply to --modality ct")
    if kspace and (a.coils != 1 or a.noise_std):
        raise InputError("--coils and --noise-std apply to simulated MRI, not k-space input")
    if a.acceleration is not None:
        rt.check_acceleration(a.acceleration)
    if a.init is not None and a.t0 is None:
        raise InputError("--init needs a warm-start time --t0")
    if a.method in rt.BASELINES and a.t0 is not None:
        raise InputError(f"--t0 applies to the diffusion methods, not {a.method}")
    if a.seed < 0:
        raise InputError(f"--seed must be >= 0, got {a.seed}")
    rt.output_paths(a.out)


def _problem(a: argparse.Namespace, size: int, kspace: bool, real_prior: bool):
    """(operator, y, reference01, geometry, view) for the input file (view None: the model's
    default, see :func:`meddiff.tasks.reconstruction.run`)."""
    if kspace:
        from meddiff.data.io import load_kspace

        op, y, ref = rt.measurement_from_kspace(load_kspace(a.input), a.mask, a.acceleration,
                                                a.seed, size=size)
        return op, y, ref, rt.Geometry.plain(), "batch" if real_prior else None
    image01, geometry = rt.read_image(a.input, size, a.resize)
    if a.modality == "ct":
        op, y = rt.simulate_ct(image01, a.views, a.dose, a.seed)
    else:
        accel = rt.DEFAULT_ACCELERATION if a.acceleration is None else a.acceleration
        op, y = rt.simulate_mri(image01, a.mask, accel, a.coils, a.noise_std, a.seed)
    return op, y, image01, geometry, None


def cmd_reconstruct(a: argparse.Namespace) -> None:
    """Run ``meddiff reconstruct`` (see the module docstring)."""
    from meddiff import api
    from meddiff.cli import _print_table

    kspace = Path(a.input).suffix.lower() in _KSPACE_SUFFIXES
    _check_options(a, kspace)
    model = api.load_model(a.model or rt.DEFAULT_MODELS[a.modality], device=a.device)
    op, y, ref, geometry, view = _problem(a, model.spec.image_size, kspace,
                                          model.spec.intensity == "unit")
    base_name = "fbp" if rt.is_ct(op) else "zero-filled"
    runner = rt.run
    if a.coil_mode == "coil-by-coil":
        if not isinstance(op, rt.MultiCoilMRI) or a.method in rt.BASELINES:
            raise InputError("--coil-mode coil-by-coil needs multi-coil data and a diffusion method")
        runner = rt.run_coil_by_coil
    result = runner(model, op, y, a.method, steps=a.steps, t0=a.t0, init=a.init, seed=a.seed,
                    view=view, cs_lam=a.cs_lam)
    base = result if a.method == base_name else rt.run(None, op, y, base_name)
    scores = rt.write_outputs(a.out, result, ref, base.image01, geometry, base_name, a.method)
    recon_path, std_path, png_path = rt.output_paths(a.out)
    written = [str(recon_path)] + ([str(std_path)] if result.std01 is not None else []) \
        + [str(png_path)]
    rows = [{"method": name, **s, "nfe": result.nfe if name == a.method else 0,
             "seconds": result.seconds if name == a.method else base.seconds}
            for name, s in scores.items()]
    if a.json:
        print(json.dumps({"method": a.method, "nfe": result.nfe,
                          "seconds": round(result.seconds, 3), "metrics": rows,
                          "outputs": written}, indent=2))
        return
    if rows:
        _print_table(rows, [("method", "method", ""), ("psnr", "PSNR dB", ".2f"),
                            ("ssim", "SSIM", ".3f"), ("nmse", "NMSE", ".4f"),
                            ("nfe", "NFE", "d"), ("seconds", "seconds", ".2f")])
    else:
        print(f"{a.method}: {result.nfe} network evaluations, {result.seconds:.2f} s "
              "(no reference: no metrics)")
    print(f"wrote {', '.join(written)}")
