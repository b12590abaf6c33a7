"""Reconstruction benchmark: undersampled MRI and sparse-view / low-dose CT on held-out slices.

    .venv/bin/python bench/reconstruction.py --model brain-prior-64
        # -> bench/results/reconstruction.json, docs/figures/reconstruction_*.png
    .venv/bin/python bench/reconstruction.py --model brain-prior-64 --quick   # smoke run

Protocol: every clean slice of the held-out test slab (all contrasts; ``--n-slices`` draws a
fixed-seed subset) is the ground truth in image space [0, 1]; measurements are simulated with
:mod:`meddiff.tasks.reconstruction` (MRI: single-coil 1D masks, equispaced and random, 4x and
8x, real images cast to complex and reconstructed with ``view="real"``; ``--multicoil`` adds
8-coil 4x random; CT: parallel beam with 30 and 60 views, and 180 views at a quarter dose).
Rows: the direct baseline (zero-filled / FBP), CS-TV with its weight tuned on the validation
slab (never on the test slab), every diffusion method at a full-length step count, and CCDF
warm starts (Chung, Sim & Ye 2022, arXiv 2112.05146) from the direct baseline at ``t0 = 200``
with at most 20 network evaluations. PSNR / SSIM (data range 1) are means over slices; NFE is
per image; seconds are wall time per slice. A PSNR-vs-NFE curve compares CCDF (a ``t0`` sweep
at a fixed step size) with full-length sampling at the same NFE (score-MRI, MRI 4x random).
The method options below are sensible defaults, not tuned per setting.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from meddiff import api
from meddiff.eval.denoising import held_out
from meddiff.eval.figures import atomic_write, save_curve, save_panel
from meddiff.tasks import reconstruction as rt

ROOT = Path(__file__).resolve().parents[1]
T0 = 200
# name -> (steps, options) of the full-length and the CCDF (t0 = T0, <= 20 NFE) rows
FULL = {"score-mri": (100, {}), "song": (100, {}), "mcg": (100, {"alpha": 1.0}),
        "dps": (100, {"alpha": 0.3}),
        "diffuserecon": (50, {"n_samples": 2, "t_refine": 20}),
        "langevin": (100, {"burn_in": 20, "n_chain": 60})}
CCDF = {"score-mri": (10, {}), "song": (10, {}), "mcg": (20, {"alpha": 1.0}),
        "dps": (20, {"alpha": 0.3}), "diffuserecon": (8, {"n_samples": 1, "t_refine": 10})}
QUICK_FULL = {"score-mri": (4, {}), "song": (4, {}), "mcg": (4, {"alpha": 1.0}),
              "dps": (4, {"alpha": 0.3}), "diffuserecon": (3, {"n_samples": 2, "t_refine": 2}),
              "langevin": (4, {"burn_in": 1, "n_chain": 2})}
QUICK_CCDF = {"score-mri": (2, {}), "dps": (2, {"alpha": 0.3})}
CS_GRID = {"mri": [0.003, 0.01, 0.03, 0.1, 0.3], "ct": [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3]}


def settings(quick: bool, multicoil: bool) -> list[dict]:
    if quick:
        return [{"modality": "mri", "mask": "random", "acceleration": 4, "coils": 1},
                {"modality": "ct", "views": 30, "dose": None}]
    mri = [{"modality": "mri", "mask": m, "acceleration": r, "coils": 1}
           for r in (4, 8) for m in ("equispaced", "random")]
    if multicoil:
        mri.append({"modality": "mri", "mask": "random", "acceleration": 4, "coils": 8})
    ct = [{"modality": "ct", "views": v, "dose": None} for v in (30, 60)]
    return mri + ct + [{"modality": "ct", "views": None, "dose": 0.25}]


def label(s: dict) -> str:
    if s["modality"] == "mri":
        coils = "single-coil" if s["coils"] == 1 else f"{s['coils']} coils"
        return f"MRI {s['acceleration']}x {s['mask']} {coils}"
    views = f"{s['views'] or rt.FULL_VIEWS} views"
    return f"CT {views}" + (f", dose {s['dose']}" if s["dose"] else "")


def simulate(s: dict, images: torch.Tensor, seed: int):
    if s["modality"] == "mri":
        return rt.simulate_mri(images, s["mask"], s["acceleration"], s["coils"], seed=seed)
    return rt.simulate_ct(images, s["views"], s["dose"], seed=seed)


def chunks(s: dict, images: torch.Tensor, seed: int, batch: int):
    """(operator, y, clean) per batch of slices; the mask / noise seed is shared."""
    for i in range(0, len(images), batch):
        clean = images[i:i + batch]
        yield (*simulate(s, clean, seed + i), clean)


def evaluate(model, s: dict, images: torch.Tensor, method: str, seed: int, batch: int,
             **kw) -> tuple[dict, torch.Tensor]:
    """Mean metrics of ``method`` over ``images``; returns (row, reconstructions)."""
    outs, nfe, seconds = [], 0, 0.0
    for k, (op, y, _) in enumerate(chunks(s, images, seed, batch)):
        res = rt.run(model, op, y, method, seed=seed + k, **kw)
        outs.append(res.image01)
        nfe, seconds = res.nfe, seconds + res.seconds
    out = torch.cat(outs)
    m = rt.metrics(out, images)
    return {"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4), "nfe": nfe,
            "seconds_per_slice": round(seconds / len(images), 4)}, out


def tune_cs(s: dict, val: torch.Tensor, seed: int, batch: int, grid: list[float]) -> float:
    """The CS-TV weight (relative to ||A||^2) with the best mean PSNR on validation slices."""
    scores = [evaluate(None, s, val, "cs", seed, batch, lam=lam)[0]["psnr"] for lam in grid]
    return grid[max(range(len(grid)), key=scores.__getitem__)]


def run_setting(model, s: dict, test, val, a, full, ccdf) -> tuple[list[dict], dict]:
    base = "fbp" if s["modality"] == "ct" else "zero-filled"
    rows, outs = [], {}

    def add(name, method, setting, **kw):
        row, outs[name] = evaluate(model, s, test, method, a.seed, a.batch, **kw)
        rows.append({"method": name, "setting": setting, **row})
        print(f"  {name:28s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  NFE {row['nfe']:4d}"
              f"  {row['seconds_per_slice']:.3f} s/slice", flush=True)

    add(base, base, "")
    grid = CS_GRID[s["modality"]]
    lam = tune_cs(s, val, a.seed, a.batch, grid[1::2] if a.quick else grid)
    add("CS-TV", "cs", f"lambda {lam} x ||A||^2 (tuned on val), {rt.CS_ITERS} PDHG iterations",
        lam=lam)
    for name, (steps, opts) in full.items():
        add(name, name, f"{steps} steps {opts}" if opts else f"{steps} steps",
            steps=steps, **opts)
    for name, (steps, opts) in ccdf.items():
        add(f"{name} CCDF", name, f"t0 {T0}, {steps} steps, init {base}", steps=steps, t0=T0,
            init=base, **opts)
        assert rows[-1]["nfe"] <= 20, rows[-1]
    return rows, outs


def psnr_vs_nfe(model, images, a) -> dict:
    """score-MRI, MRI 4x random: CCDF (t0 = 10 x steps) vs full-length, same step counts."""
    s = {"modality": "mri", "mask": "random", "acceleration": 4, "coils": 1}
    step_list = [2, 4] if a.quick else [5, 10, 20, 40]
    curves = {"CCDF (t0 = 10 x steps, init zero-filled)": [], "full length (t0 = T-1)": []}
    nfes = []
    for steps in step_list:
        row, _ = evaluate(model, s, images, "score-mri", a.seed, a.batch, steps=steps,
                          t0=10 * steps, init="zero-filled")
        full, _ = evaluate(model, s, images, "score-mri", a.seed, a.batch, steps=steps)
        assert row["nfe"] == full["nfe"]
        nfes.append(row["nfe"])
        for key, r in zip(curves, (row, full)):
            curves[key].append(r["psnr"])
    return {"setting": label(s), "method": "score-mri", "steps": step_list, "nfe": nfes,
            "psnr": curves}


def panel(path: Path, title: str, clean, outs: dict, names: list[str], index: int) -> None:
    names = [n for n in names if n in outs]
    cols = [("reference", clean[index, 0])] + [(n, outs[n][index, 0]) for n in names]
    cols.append((f"|error| {names[-1]}", (outs[names[-1]][index, 0] - clean[index, 0]).abs()))
    n = len(cols) - 1
    save_panel(path, cols, error_columns=[n], vmin=[0] * (n + 1), vmax=[1] * n + [None],
               suptitle=title)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=api.DEFAULT_MODEL)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--n-slices", type=int, default=None, help="fixed-seed subset of the test slab")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--multicoil", action="store_true", help="add 8-coil MRI at 4x random")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 4 slices, 2 settings, a few steps; results under bench/results")
    a = p.parse_args()
    start = time.perf_counter()
    model = api.load_model(a.model, device=a.device)
    size = model.spec.image_size
    test, val = held_out("test", size), held_out("val", size)
    n = 4 if a.quick and a.n_slices is None else a.n_slices
    g = torch.Generator().manual_seed(a.seed)
    if n is not None:
        test = test[torch.randperm(len(test), generator=g)[:n].sort().values]
    val = val[torch.randperm(len(val), generator=g)[:4 if a.quick else 16].sort().values]
    full, ccdf = (QUICK_FULL, QUICK_CCDF) if a.quick else (FULL, CCDF)
    figures = ROOT / "bench" / "results" / "quick" if a.quick else ROOT / "docs" / "figures"
    out_json = ROOT / "bench" / "results" / ("reconstruction_quick.json" if a.quick
                                             else "reconstruction.json")
    results = []
    for k, s in enumerate(settings(a.quick, a.multicoil)):
        print(f"{label(s)} ({len(test)} slices)", flush=True)
        rows, outs = run_setting(model, s, test, val, a, full, ccdf)
        results.append({"setting": label(s), **s, "rows": rows})
        if k == 0 or (s["modality"] == "ct" and results[-2]["modality"] == "mri"):
            base = "fbp" if s["modality"] == "ct" else "zero-filled"
            panel(figures / f"reconstruction_{s['modality']}.png", label(s), test, outs,
                  [base, "CS-TV", "score-mri CCDF", "score-mri"], len(test) // 2)
    curve = psnr_vs_nfe(model, test, a)
    save_curve(figures / "reconstruction_psnr_vs_nfe.png", curve["nfe"], curve["psnr"],
               "network evaluations (NFE)", "PSNR (dB)",
               title=f"{curve['method']}, {curve['setting']}", logx=True)
    doc = {"model": model.name, "device": str(model.denoiser.device),
           "machine": platform.processor() or platform.machine(), "test_slices": len(test),
           "val_slices_for_tuning": len(val), "seed": a.seed, "quick": a.quick,
           "settings": results, "psnr_vs_nfe": curve,
           "seconds": round(time.perf_counter() - start, 1)}
    atomic_write(out_json, lambda fh: fh.write((json.dumps(doc, indent=2) + "\n").encode()))
    print(f"wrote {out_json} and figures in {figures} ({doc['seconds']} s)")


if __name__ == "__main__":
    main()
