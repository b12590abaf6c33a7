"""Self-check benchmark: does the held-out check pick the better of diffusion and CS-TV?

    .venv/bin/python bench/selfcheck.py                  # -> bench/results/selfcheck.json
    .venv/bin/python bench/selfcheck.py --quick          # smoke run (bench/results/quick/)
    .venv/bin/python bench/selfcheck.py --model runs/x   # a trained run directory

Protocol (the robustness protocol of ``bench/reconstruction.py``, imported from it): MRI 4x
random single-coil on ``--n-slices`` fixed-seed slices of the in-distribution test slab and of
each robustness set (an unseen contrast, coronal and sagittal views, a finer resolution);
CS-TV's weight tuned on validation slices of the in-distribution slab. Per slice: CS-TV and
the diffusion method (default ``mcg``, 100 steps, alpha 1) on the full data, and the
self-checked blend (:func:`meddiff.tasks.selfcheck.self_check`: 10 % of the sampled lines held
out, diffusion weights 0, 0.25, ..., 1 chosen per slice on the held-out lines). Reported per
setting: mean PSNR (data range 1) of CS-TV, the diffusion method, the blend and the per-slice
oracle (the better of diffusion and CS-TV); how often the check picks the better of the two
(weight >= 0.5 exactly when diffusion's PSNR is higher); the worst slice's blend-minus-CS-TV
PSNR; the mean weight and the mean held-out relative errors; NFE per image (both diffusion
runs of the check).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from common import run_header, write_results
from meddiff import api
from meddiff.eval.metrics import psnr_batch
from meddiff.tasks import reconstruction as rt
from meddiff.tasks.selfcheck import FRACTION, WEIGHTS, self_check
from reconstruction import MRI_4X_RANDOM as SETTING
from reconstruction import FULL, mri_images, robustness_sets, simulate, subset, tune_cs

ROOT = Path(__file__).resolve().parents[1]
QUICK_STEPS = 4


def test_sets(a) -> dict[str, torch.Tensor]:
    """The in-distribution test slices, then the robustness sets (quick: the first only)."""
    return {"in distribution (test slab)": subset(mri_images("test"), a.n_slices, a.seed),
            **robustness_sets(a)}


def checked(model, images: torch.Tensor, lam: float, a) -> dict[str, torch.Tensor]:
    """Per-slice PSNR of ``cs`` / ``diffusion`` / ``blend``, the chosen ``weights`` and the
    held-out errors ``err_*``, and per batch ``nfe`` (per image: both diffusion runs) and
    ``seconds``, over batches of ``images``."""
    per: dict[str, list] = {}
    for k in range(0, len(images), a.batch):
        x = images[k:k + a.batch]
        op, y = simulate(SETTING, x, a.seed + k)
        check = self_check(rt.run, model, op, y, a.method, seed=a.seed + k, steps=a.steps,
                           cs_lam=lam, **a.options)
        results = {**check.candidates, "blend": check.result}
        row = {n: torch.as_tensor(psnr_batch(r.image01, x.abs(), 1.0)) for n, r in results.items()}
        row.update({f"err_{n}": s for n, s in check.scores.items()}, weights=check.weights,
                   nfe=torch.tensor([check.result.nfe]),
                   seconds=torch.tensor([check.result.seconds]))
        for name, v in row.items():
            per.setdefault(name, []).append(v.float())
    return {name: torch.cat(v) for name, v in per.items()}


def _mean(t: torch.Tensor) -> float:
    return round(float(t.mean()), 3)


def summary(name: str, per: dict[str, torch.Tensor]) -> dict:
    """One results row from the per-slice values of :func:`checked`."""
    d, c, b, w = per["diffusion"], per["cs"], per["blend"], per["weights"]
    return {"setting": name, "slices": len(d), "psnr_cs": _mean(c), "psnr_diffusion": _mean(d),
            "psnr_blend": _mean(b), "psnr_oracle": _mean(torch.maximum(d, c)),
            "picks_better": _mean(((w >= 0.5) == (d > c)).float()),
            "worst_blend_minus_cs": round(float((b - c).min()), 3), "mean_weight": _mean(w),
            "held_out_error": {n: round(float(per[f"err_{n}"].mean()), 5)
                               for n in ("diffusion", "cs", "blend")},
            "nfe": int(per["nfe"].max()),
            "seconds_per_slice": round(float(per["seconds"].sum()) / len(d), 3)}


def markdown(rows: list[dict], method: str) -> str:
    head = (f"| setting | CS-TV | {method} | self-checked blend | oracle | picks better | "
            "worst blend - CS (dB) | mean weight |")
    lines = [head, "|---" * 8 + "|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['psnr_cs']:.2f} | {r['psnr_diffusion']:.2f} | "
                     f"{r['psnr_blend']:.2f} | {r['psnr_oracle']:.2f} | "
                     f"{r['picks_better']:.0%} | {r['worst_blend_minus_cs']:+.2f} | "
                     f"{r['mean_weight']:.2f} |")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=rt.DEFAULT_MODELS["mri"],
                   help="bundled name, NAME.json or a training run directory")
    p.add_argument("--method", default="mcg", choices=sorted(FULL))
    p.add_argument("--steps", type=int, default=None,
                   help=f"reverse steps (default: bench/reconstruction.py's; quick {QUICK_STEPS})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--n-slices", type=int, default=8, help="fixed-seed slices per setting")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: 2 slices, 2 settings, {QUICK_STEPS} steps")
    a = p.parse_args()
    steps, a.options = FULL[a.method]
    a.steps = a.steps or (QUICK_STEPS if a.quick else steps)
    if a.quick:
        a.n_slices = 2
    return a


def main() -> None:
    a = parse()
    start = time.perf_counter()
    model = api.load_model(a.model, device=a.device)
    n_val = 2 if a.quick else 8
    lam = tune_cs(SETTING, subset(mri_images("val"), n_val, a.seed), a)
    rows = []
    for name, images in test_sets(a).items():
        rows.append(summary(name, checked(model, images, lam, a)))
        r = rows[-1]
        print(f"{name:40s} CS {r['psnr_cs']:6.2f}  {a.method} {r['psnr_diffusion']:6.2f}  "
              f"blend {r['psnr_blend']:6.2f}  picks better {r['picks_better']:.0%}", flush=True)
    command = " ".join(["python bench/selfcheck.py"] + sys.argv[1:])
    doc = {**run_header(command, a.device), "model": model.name, "method": a.method,
           "steps": a.steps, "options": a.options, "setting": "MRI 4x random single-coil",
           "cs_lam": lam, "held_out_fraction": FRACTION, "weights": list(WEIGHTS),
           "test_slices": a.n_slices, "val_slices_for_tuning": n_val, "seed": a.seed,
           "quick": a.quick, "settings": rows, "seconds": round(time.perf_counter() - start, 1)}
    print(markdown(rows, a.method))
    write_results(ROOT / "bench" / "results" / ("quick" if a.quick else "") / "selfcheck.json",
                  doc, None)


if __name__ == "__main__":
    main()
