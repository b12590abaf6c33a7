"""Noise-aware data consistency on noisy measurements: low-dose CT and noisy k-space.

    .venv/bin/python bench/noisy.py            # -> bench/results/noisy.{json,md},
                                               #    docs/figures/noisy_ct.png
    .venv/bin/python bench/noisy.py --ct-models ct-prior-64 ct-prior-native --quick

Protocol (held-out *test* slab, the slices of ``bench/reconstruction.py``): head-CT-like slices
with 180 views at a quarter and a tenth of the full dose (transmission Poisson noise), and MRI
4x random single-coil with complex Gaussian k-space noise. Rows: the direct baseline (FBP /
zero-filled), CS-TV (weight tuned on validation slices), the supervised UNet, and each
projecting diffusion method twice at the full length of the reconstruction bench: treating
the noisy data as exact (hard projection, the papers' steps) and noise-aware
(:func:`meddiff.consistency.steps.consistency_update`: weighted least squares with the noise
variance the operator carries). PSNR / SSIM (data range 1), means over slices.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import run_header, write_results
from meddiff import api
from meddiff.data.writers import atomic_write
from reconstruction import (FULL, MRI_4X_RANDOM, QUICK_FULL, Table, ct_images, label,
                            mri_images, panel, subset, tune_cs)

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("score-mri", "song", "mcg", "diffuserecon")
SETTINGS = [{"modality": "ct", "views": None, "dose": 0.25},
            {"modality": "ct", "views": None, "dose": 0.1},
            {**MRI_4X_RANDOM, "noise_std": 0.02}]


def rows(table: Table, full: dict) -> None:
    """Each method of :data:`METHODS` with the data taken as exact, then noise-aware."""
    for name in METHODS:
        steps, opts = full.get(name, (4, {}))  # --quick: methods QUICK_FULL leaves out
        for aware in (False, True):
            tag = f"{name}, " + ("noise-aware" if aware else "data as exact")
            table.add(tag, name, f"{steps} steps {opts}", steps=steps, noise_aware=aware,
                      **opts)


def run_setting(s: dict, model, images, val, a, full) -> dict:
    print(f"{label(s)} ({model.name}, {len(images)} slices)", flush=True)
    lam = tune_cs(s, val, a)
    table = Table(model, s, images, a)
    base = table.baselines(lam)
    rows(table, full)
    best = max((r for r in table.rows if "noise-aware" in r["method"]), key=lambda r: r["psnr"])
    ref = {r["method"]: r["psnr"] for r in table.rows}
    print(f"  best noise-aware {best['method']}: {best['psnr'] - ref[base]:+.2f} dB vs {base}, "
          f"{best['psnr'] - ref['UNet (supervised)']:+.2f} dB vs the UNet", flush=True)
    if s["modality"] == "ct" and s["dose"] == 0.25 and model.name == a.ct_models[-1]:
        panel(a.figures / "noisy_ct.png", f"{label(s)}, {model.name}", images, table.outs,
              [base, "CS-TV", "UNet (supervised)", "mcg, data as exact", "mcg, noise-aware",
               "diffuserecon, noise-aware"], len(images) // 2)
    return {"setting": label(s), **s, "model": model.name, "cs_lam": lam, "rows": table.rows}


def markdown(doc: dict) -> str:
    out = ["# Noisy measurements: data as exact vs noise-aware consistency\n",
           f"`{doc['command']}` ({doc['test_slices']} test slices, {doc['seconds']} s)\n"]
    for s in doc["settings"]:
        out += [f"\n## {s['setting']} ({s['model']})\n", "| method | PSNR | SSIM | s/slice |",
                "|---|---|---|---|"]
        out += [f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                f"{r['seconds_per_slice']:.2f} |" for r in s["rows"]]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ct-models", nargs="+", default=["ct-prior-64"])
    p.add_argument("--mri-model", default="brain-prior-64")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--n-slices", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 slices, few steps")
    a = p.parse_args()
    start = time.perf_counter()
    if a.quick:
        a.n_slices = 2
    a.figures = ROOT / "bench" / "results" / "quick" if a.quick else ROOT / "docs" / "figures"
    full = QUICK_FULL if a.quick else FULL
    n_val = 2 if a.quick else 8
    data = {"ct": (subset(ct_images("test"), a.n_slices, a.seed),
                   subset(ct_images("val"), n_val, a.seed)),
            "mri": (subset(mri_images("test"), a.n_slices, a.seed),
                    subset(mri_images("val"), n_val, a.seed))}
    results = []
    for s in SETTINGS:
        names = a.ct_models if s["modality"] == "ct" else [a.mri_model]
        for name in names:
            model = api.load_model(name, device=a.device)
            results.append(run_setting(s, model, *data[s["modality"]], a, full))
    doc = {**run_header("python bench/noisy.py " + " ".join(
        f"--ct-models {' '.join(a.ct_models)}".split()) + (" --quick" if a.quick else ""),
        a.device), "test_slices": a.n_slices, "val_slices_for_tuning": n_val, "seed": a.seed,
        "settings": results, "seconds": round(time.perf_counter() - start, 1)}
    out = ROOT / "bench" / "results" / ("noisy_quick.json" if a.quick else "noisy.json")
    atomic_write(out.with_suffix(".md"), lambda fh: fh.write(markdown(doc).encode()))
    write_results(out, doc, a.figures / "noisy_ct.png")


if __name__ == "__main__":
    main()
