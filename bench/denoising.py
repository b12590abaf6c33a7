"""Low-dose CT (C1), low-count PET (P1) and OCT speckle (C3) denoising against classic filters.

    .venv/bin/python bench/denoising.py                  # -> bench/results/denoising.{json,md},
                                                         #    docs/figures/denoising_*.png
    .venv/bin/python bench/denoising.py --only oct --n 4 --quick

Protocol: held-out *test* items of the training sources (the test slabs of the anatomy; OCT:
the test stream of retinas), never seen in training; every baseline parameter (filter width,
TV weight, C3's entry level) is tuned on *validation* items, then fixed. PSNR / SSIM (data
range 1), MAE, all in the models' image space [0, 1], means over images; seconds per image on
this machine (batch of all images, one process).

- **CT** (180 views, transmission Poisson noise; 64 px (2.95 mm) at a quarter and a tenth of
  the full dose, 128 px (1.48 mm) at a quarter): the low-dose FBP, a Gaussian filter and TV on it, the supervised residual UNet
  ``ldct-unet-native`` (trained on the same pairs as C1), and C1 with DPM-Solver++ at 10 / 20 /
  50 steps and DDIM 50, the one-step posterior mean ``E[x | c]`` (DDIM 1), and on the first
  images the 1000-step ancestral DDPM of the paper's speed comparison.
- **PET** (``--only pet``, its own table ``denoising_pet``; 64 px; 1e5-5e5 counts per slice,
  MLEM): the low-count MLEM, a Gaussian filter, the supervised UNets on PET and on PET + MR,
  and P1 with the PET-only and the PET + MR models (DDIM 20: one sample as in the paper and the
  mean of four, the default; and the one-step posterior means).
- **OCT** (64 and 128 px; 1-look speckle): the noisy scan, NLM, TV, and C3 from the estimated
  speckle level (DDIM 10 and the one-call Tweedie estimate).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from common import Table, parse_with_outputs, run_header, stack_items, write_tables
from meddiff import api
from meddiff.data.modalities import LowDoseCTSlices
from meddiff.data.oct import OCTScans, nlm_baseline, tv_baseline
from meddiff.data.pet import PETSlices, gaussian_filter_baseline
from meddiff.eval.metrics import psnr_batch
from meddiff.methods.denoising.pet import SAMPLES
from meddiff.zoo.store import load



def _tune(make: Callable[[float], Callable], grid: list[float], noisy, clean) -> float:
    """The grid value with the best mean PSNR on validation pairs."""
    scores = [float(psnr_batch(make(v)(noisy), clean, 1.0).mean()) for v in grid]
    return grid[int(np.argmax(scores))]


def _diffusion(method: str, model, **opts) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x, **kw: api.denoise(model, x, method=method, seed=0, **opts, **kw)


# ------------------------------------------------------------------------------ CT (C1)
#: (size px, dose): 64 px at a quarter and a tenth of the full dose, and 128 px (1.48 mm)
CT_SETTINGS = ((64, 0.25), (64, 0.1), (128, 0.25))


def ct(a) -> list[dict]:
    model = api.load_model(a.ct_model, device=a.device)
    unet = load(a.ct_unet_model, kind="regression-unet").net.eval()
    out = []
    for size, dose in CT_SETTINGS:
        test = LowDoseCTSlices("test", size=size, doses=(dose, dose), seed=1)
        val = LowDoseCTSlices("val", size=size, doses=(dose, dose), seed=1)
        clean, low = stack_items(test, ("image", "lowdose"), a.n)
        vclean, vlow = stack_items(val, ("image", "lowdose"), a.n_val)
        fwhm = _tune(lambda w: lambda x: gaussian_filter_baseline(x, w),
                     [0.5, 1.0, 1.5, 2.0, 3.0], vlow, vclean)
        tv = _tune(lambda w: lambda x: tv_baseline(x, w), [0.005, 0.01, 0.02, 0.04, 0.08],
                   vlow, vclean)
        t = Table(f"CT 180 views, {dose:g} x full dose, {size} px ({189 / size:.2f} mm)", clean)
        print(t.setting, flush=True)
        t.add("FBP (low dose)", lambda: low, "baseline")
        t.add(f"Gaussian filter (FWHM {fwhm:g} px)",
              lambda: gaussian_filter_baseline(low, fwhm), "baseline")
        t.add(f"TV (weight {tv:g})", lambda: tv_baseline(low, tv), "baseline")
        t.add("UNet (supervised)", lambda: unet(low), "supervised")
        c1 = _diffusion("ldct", model)
        for sampler, steps in ((("dpmpp_2m", 10), ("dpmpp_2m", 20), ("dpmpp_2m", 50),
                                ("ddim", 50), ("ddim", 1))
                               if not a.quick else (("dpmpp_2m", 10), ("ddim", 1))):
            name = ("C1 posterior mean (DDIM 1 step)" if steps == 1
                    else f"C1 {sampler} {steps} steps")
            t.add(name, lambda: c1(low, sampler=sampler, steps=steps), "diffusion", steps)
        first = size == 64 and dose == 0.25 and not a.quick
        ancestral = _ancestral(t, c1, low, min(a.n, a.n_ancestral)) if first else None
        t.figure(a.figures / f"denoising_ct_{size}_{int(dose * 100)}.png",
                 ["FBP (low dose)", f"TV (weight {tv:g})",
                  "UNet (supervised)", "C1 dpmpp_2m 20 steps"
                  if not a.quick else "C1 dpmpp_2m 10 steps", "C1 posterior mean (DDIM 1 step)"],
                 index=len(clean) // 2)
        out.append({**t.summary(), "size": size, "dose": dose, "gaussian_fwhm_px": fwhm,
                    "tv_weight": tv, "model": model.name, "ancestral": ancestral})
    return out


def _ancestral(t: Table, c1, low: torch.Tensor, k: int) -> list[dict]:
    """The paper's comparison on the first ``k`` images: DPM-Solver++ 20 steps against the
    1000-step ancestral sampling of the same model."""
    ref = Table(t.setting + f" (first {k} images)", t.reference[:k])
    ref.add("C1 dpmpp_2m 20 steps", lambda: c1(low[:k], sampler="dpmpp_2m", steps=20),
            "diffusion", 20)
    ref.add("C1 ddpm 1000 steps (ancestral)", lambda: c1(low[:k], sampler="ddpm", steps=1000),
            "diffusion", 1000)
    return ref.rows


# ------------------------------------------------------------------------------ PET (P1)
def pet(a) -> list[dict]:
    models = {"PET": api.load_model(a.pet_model, device=a.device),
              "PET + MR": api.load_model(a.pet_mr_model, device=a.device)}
    test, val = PETSlices("test", size=64, seed=1), PETSlices("val", size=64, seed=1)
    clean, low, mr = stack_items(test, ("image", "lowcount", "mr"), a.n)
    vclean, vlow = stack_items(val, ("image", "lowcount"), a.n_val)
    fwhm = _tune(lambda w: lambda x: gaussian_filter_baseline(x, w), [1.0, 1.5, 2.0, 3.0, 4.0],
                 vlow, vclean)
    t = Table("PET 1e5-5e5 counts, MLEM, 64 px", clean)
    print(t.setting, flush=True)
    t.add("MLEM (low count)", lambda: low, "baseline")
    t.add(f"Gaussian filter (FWHM {fwhm:g} px)", lambda: gaussian_filter_baseline(low, fwhm),
          "baseline")
    for tag, name in (("PET", a.pet_unet_model), ("PET + MR", a.pet_mr_unet_model)):
        unet = load(name, kind="regression-unet").net.eval()
        source = low if tag == "PET" else torch.cat([low, mr], 1)
        t.add(f"UNet (supervised, {tag})", lambda: unet(source), "supervised")
    for tag, model in models.items():
        extra = {"mr": mr} if tag == "PET + MR" else {}
        p1 = _diffusion("pet", model)
        t.add(f"P1 {tag}, DDIM 20 steps, 1 sample (the paper)",
              lambda: p1(low, sampler="ddim", steps=20, samples=1, **extra), "diffusion", 20)
        t.add(f"P1 {tag}, DDIM 20 steps, mean of {SAMPLES} samples (default)",
              lambda: p1(low, sampler="ddim", steps=20, **extra), "diffusion", 20 * SAMPLES)
        t.add(f"P1 {tag}, posterior mean (DDIM 1 step)",
              lambda: p1(low, sampler="ddim", steps=1, samples=1, **extra), "diffusion", 1)
    t.figure(a.figures / "denoising_pet.png",
             ["MLEM (low count)", f"Gaussian filter (FWHM {fwhm:g} px)",
              "UNet (supervised, PET + MR)", "P1 PET, DDIM 20 steps, 1 sample (the paper)",
              f"P1 PET, DDIM 20 steps, mean of {SAMPLES} samples (default)",
              f"P1 PET + MR, DDIM 20 steps, mean of {SAMPLES} samples (default)"],
             index=a.n // 2)
    return [{**t.summary(), "gaussian_fwhm_px": fwhm,
             "models": [m.name for m in models.values()]}]


# ------------------------------------------------------------------------------ OCT (C3)
def oct(a, sizes=(64, 128)) -> list[dict]:
    model = api.load_model(a.oct_model, device=a.device)
    out = []
    for size in sizes:
        noisy, clean = stack_items(OCTScans("test", size=size, seed=1), ("noisy", "image"), a.n)
        vnoisy, vclean = stack_items(OCTScans("val", size=size, seed=1), ("noisy", "image"), a.n_val)
        tv = _tune(lambda w: lambda x: tv_baseline(x, w), [0.05, 0.1, 0.15, 0.2], vnoisy, vclean)
        level = _tune(lambda v: lambda x: api.denoise(model, x, method="oct", sampler="tweedie",
                                                      level=v),
                      [1.0, 1.25, 1.5, 2.0, 2.5], vnoisy, vclean)
        t = Table(f"OCT 1-look speckle, {size} px", clean)
        print(t.setting, f"(C3 entry level {level:g} x the estimated speckle std)", flush=True)
        t.add("noisy", lambda: noisy, "baseline")
        t.add("NLM", lambda: nlm_baseline(noisy), "baseline")
        t.add(f"TV (weight {tv:g})", lambda: tv_baseline(noisy, tv), "baseline")
        c3 = _diffusion("oct", model, level=level)
        t.add("C3 Tweedie (1 call)", lambda: c3(noisy, sampler="tweedie"), "diffusion", 1)
        t.add("C3 DDIM 10 steps", lambda: c3(noisy, sampler="ddim", steps=10), "diffusion", 10)
        t.add("C3 DDPM 10 steps", lambda: c3(noisy, sampler="ddpm", steps=10), "diffusion", 10)
        t.figure(a.figures / f"denoising_oct_{size}.png",
                 ["noisy", "NLM", f"TV (weight {tv:g})", "C3 Tweedie (1 call)",
                  "C3 DDIM 10 steps"], index=a.n // 2)
        out.append({**t.summary(), "size": size, "tv_weight": tv, "c3_level": level,
                    "model": model.name})
    return out


# ------------------------------------------------------------------------------ report
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=("ct", "pet", "oct"), default=["ct", "oct"],
                   help="parts to run (pet: once its models are trained, see --pet-model)")
    p.add_argument("--n", type=int, default=16, help="test images per setting")
    p.add_argument("--n-val", type=int, default=16, help="validation images for the tuning")
    p.add_argument("--n-ancestral", type=int, default=4,
                   help="images of the 1000-step ancestral comparison (C1)")
    p.add_argument("--quick", action="store_true", help="fewer rows (a smoke run)")
    for name, default in (("ct", "ldct-cddpm-native"), ("pet", "pet-cddpm-64"),
                          ("pet-mr", "pet-mr-cddpm-64"), ("oct", "oct-ddpm-native"),
                          ("ct-unet", "ldct-unet-native"), ("pet-unet", "pet-unet-64"),
                          ("pet-mr-unet", "pet-mr-unet-64")):
        p.add_argument(f"--{name}-model", default=default, help="bundled name or run dir")
    a = parse_with_outputs(p)
    start = time.perf_counter()
    command = "python bench/denoising.py " + " ".join(
        f"--only {' '.join(a.only)}" if k == "only" else f"--{k.replace('_', '-')} {v}"
        for k, v in (("only", a.only), ("n", a.n), ("n_val", a.n_val)))
    doc = {**run_header(command + (" --quick" if a.quick else ""), a.device), "results": {}}
    parts = {"ct": ct, "pet": pet, "oct": oct}
    with torch.no_grad():
        for name in a.only:
            doc["results"][name] = parts[name](a)
    doc["seconds"] = round(time.perf_counter() - start, 1)
    stem = "denoising" if a.only == ["ct", "oct"] else "_".join(["denoising", *a.only])
    write_tables(a.out, stem + ("_quick" if a.quick else ""), doc, a.figures)


if __name__ == "__main__":
    main()
