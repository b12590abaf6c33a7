"""Segmentation benchmark: G2 diffusion ensembles vs a supervised UNet on held-out lesions.

    .venv/bin/python bench/segmentation.py            # -> bench/results/segmentation.json,
                                                      #    docs/figures/segmentation_examples.png
    .venv/bin/python bench/segmentation.py --quick    # smoke run (bench/results/quick/)

Protocol. Test set: the ``--contrast`` (FLAIR) items of the fixed lesion benchmark's *test*
split (:func:`meddiff.data.lesion_bench.lesion_bench`: held-out slabs, 1-2 lesions of
:data:`meddiff.train.data.SEG_LESIONS`' family per image; the same images as
``bench/detection.py``), ``--n-images`` of them by a fixed seed (default all 56). Images
(N, 1, 64, 64) in [0, 1]; masks (N, 1, 64, 64) in {0, 1}. Nothing is tuned: both methods
threshold at 0.5.

- G2 (Wolleb et al. 2022, MIDL): ``seg-ddpm-64``, ``--samples`` (8) masks per image from
  independent noise with ``--steps`` (50) steps of ``--sampler`` (the ``meddiff segment``
  defaults); segmentation = mean mask >= 0.5, uncertainty = per-pixel variance of the samples.
  A single sample (the first) thresholded at 0.5 is reported too, for the ensemble's gain.
- UNet: ``seg-unet-64`` (MONAI BasicUNet, Dice + CE), sigmoid >= 0.5.

Metrics: Dice per image (an empty prediction on an image with a lesion scores 0), mean +- std
over images, and pooled over all pixels; for G2 the Pearson correlation between the variance
map and the error ``|1[mean >= 0.5] - truth|`` over all pixels and over the brain pixels
(:func:`meddiff.methods.segmentation.ensembles.uncertainty_error_correlation`), and the mean variance of
the wrong vs the correct brain pixels; wall seconds per image (all samples for G2).
Budget: < 15 min on 2 CPU cores. Estimate: the 64 px UNet costs ~0.016 s per image and
evaluation at batch 16 with 2 threads (bench/results/sampler_overhead.json), so 56 images x 8
samples x 50 steps = 22 400 evaluations ~ 6 min; the UNet takes seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common import run_header, write_results
from meddiff.data.lesion_bench import LesionBench, lesion_bench
from meddiff.data.mri_signal import CONTRASTS
from meddiff.errors import MeddiffError
from meddiff.data.writers import atomic_write
from meddiff.eval.metrics import dice
from meddiff.data.intensity import to_model
from meddiff.methods.segmentation import ensembles as sg
from meddiff.methods.segmentation.unet import unet as unet_segment
from meddiff.tasks import segmentation as st
from meddiff.device import resolve_device

ROOT = Path(__file__).resolve().parents[1]


def subset(bench: LesionBench, n: int | None, seed: int) -> LesionBench:
    """A fixed-seed subset of ``n`` items (all when ``n`` is None or >= the size), in order."""
    if n is None or n >= len(bench):
        return bench
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(bench), generator=g)[:n].sort().values
    return LesionBench(*(v[keep] for v in (bench.images, bench.lesions, bench.brains,
                                           bench.contrasts, bench.sections)))


# ------------------------------------------------------------------------------ metrics
def _num(x: float, digits: int) -> float | None:
    """``x`` rounded, or None (JSON null) when it is NaN / infinite."""
    return round(float(x), digits) if np.isfinite(x) else None


def dice_stats(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    """Per-image Dice mean / std (population) and pooled Dice of binary (N, 1, S, S) masks."""
    per = np.array([dice(p, g) for p, g in zip(pred, gt)])
    return {"dice_mean": round(float(per.mean()), 4), "dice_std": round(float(per.std()), 4),
            "dice_pooled": round(dice(pred, gt), 4)}


def uncertainty(var: torch.Tensor, mean: torch.Tensor, gt: torch.Tensor,
                brain: torch.Tensor) -> dict:
    """How the variance map (N, 1, S, S) in [0, 0.25] relates to the error of ``mean >= 0.5``:
    Pearson r over all pixels and over brain pixels; mean variance of wrong / correct brain
    pixels."""
    wrong = ((mean >= 0.5) != gt) & brain
    right = ((mean >= 0.5) == gt) & brain
    mv = {k: float(var[m].mean()) if m.any() else float("nan")
          for k, m in (("wrong", wrong), ("correct", right))}
    return {"var_error_r": _num(sg.uncertainty_error_correlation(var, mean, gt), 4),
            "var_error_r_brain": _num(sg.uncertainty_error_correlation(
                var[brain], mean[brain], gt[brain]), 4),
            "mean_var_wrong": _num(mv["wrong"], 5), "mean_var_correct": _num(mv["correct"], 5),
            "var_ratio_wrong_over_correct": _num(mv["wrong"] / mv["correct"], 2)
            if mv["correct"] > 0 else None,
            "wrong_pixel_fraction_brain": round(float(wrong.sum() / brain.sum()), 4)}


# ------------------------------------------------------------------------------ methods
def run_ensemble(a, test: LesionBench) -> tuple[dict, sg.Segmentation]:
    """G2 on the test images; (row, segmentation). MeddiffError when weights are missing."""
    model = st.load_mask_ddpm(a.ddpm_model, device=a.device)
    seg = st.segment_images(model.denoiser, test.images, a.samples, a.sampler, a.steps, a.seed,
                            a.batch)
    gt = test.lesions
    row = {"method": f"G2 ensemble (N={a.samples})", "model": model.name,
           "setting": f"{a.samples} samples, {a.steps} {a.sampler} steps, mean >= 0.5",
           **dice_stats(seg.mask, gt),
           "single_sample": dice_stats(seg.samples[:, 0] >= 0.5, gt),
           **uncertainty(seg.var, seg.mean, gt, test.brains),
           "nfe_per_image": a.samples * seg.nfe // math.ceil(len(test) * a.samples / a.batch),
           "seconds_per_image": round(seg.seconds / len(test), 4)}
    return row, seg


def run_unet(a, test: LesionBench) -> tuple[dict, torch.Tensor]:
    """The supervised UNet on the test images; (row, probabilities (N, 1, S, S))."""
    net = st.load_seg_unet(a.unet_model)
    net.to(resolve_device(a.device))
    start = time.perf_counter()
    prob = torch.cat([unet_segment(net, to_model(test.images[i:i + a.batch])).mean
                      for i in range(0, len(test), a.batch)])
    seconds = time.perf_counter() - start
    name = Path(a.unet_model).stem if a.unet_model else "seg-unet-64"
    row = {"method": "UNet (supervised)", "model": name, "setting": "sigmoid >= 0.5",
           **dice_stats(prob >= 0.5, test.lesions), "nfe_per_image": 1,
           "seconds_per_image": round(seconds / len(test), 4)}
    return row, prob


def print_row(row: dict) -> None:
    extra = ""
    if "var_error_r" in row:
        extra = (f"  single sample {row['single_sample']['dice_mean']:.3f}  var/error r "
                 f"{row['var_error_r']} (brain {row['var_error_r_brain']})  mean var "
                 f"wrong {row['mean_var_wrong']} / correct {row['mean_var_correct']}")
    print(f"  {row['method']:22s} Dice {row['dice_mean']:.3f} +- {row['dice_std']:.3f} "
          f"(pooled {row['dice_pooled']:.3f})  {row['seconds_per_image']:.3f} s/image{extra}",
          flush=True)


# ------------------------------------------------------------------------------ figure
def save_examples(path: Path, test: LesionBench, seg: sg.Segmentation | None,
                  prob: torch.Tensor | None, n: int) -> Path:
    """Rows: ``n`` evenly spaced test images; columns: image, truth, ensemble mean (0..1),
    variance (0 .. its 99.5th percentile), UNet probability (0..1); missing methods are left
    out."""
    picks = [int(i) for i in np.linspace(0, len(test) - 1, min(n, len(test))).round()]
    cols = [("image", test.images, "gray", 1.0), ("truth", test.lesions.float(), "gray", 1.0)]
    if seg is not None:
        top = max(float(torch.quantile(seg.var.flatten(), 0.995)), 1e-6)
        cols += [("ensemble mean", seg.mean, "gray", 1.0), ("variance", seg.var, "magma", top)]
    if prob is not None:
        cols.append(("UNet", prob, "gray", 1.0))
    fig = Figure(figsize=(1.7 * len(cols), 1.8 * len(picks)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(picks), len(cols), squeeze=False)
    for r, i in enumerate(picks):
        for j, (title, x, cmap, vmax) in enumerate(cols):
            ax = axes[r, j]
            ax.imshow(x[i, 0], cmap=cmap, vmin=0, vmax=vmax)
            if j >= 2:
                ax.contour(test.lesions[i, 0].float().numpy(), levels=[0.5], colors="cyan",
                           linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
        axes[r, 0].set_ylabel(f"test #{i}", fontsize=8)
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90,
                                                     bbox_inches="tight"))


# ------------------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=None,
                   help="fixed-seed subset of the test images (default: all)")
    p.add_argument("--contrast", default="FLAIR", choices=CONTRASTS)
    p.add_argument("--ddpm-model", default=None,
                   help="mask DDPM NAME.json (default: bundled seg-ddpm-64)")
    p.add_argument("--unet-model", default=None,
                   help="UNet NAME.json (default: bundled seg-unet-64)")
    p.add_argument("--samples", type=int, default=sg.DEFAULT_SAMPLES)
    p.add_argument("--steps", type=int, default=sg.DEFAULT_STEPS)
    p.add_argument("--sampler", default=sg.DEFAULT_SAMPLER, choices=("ddpm", "ddim"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch", type=int, default=64, help="masks per network batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure-images", type=int, default=4)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 images, 2 samples, 3 steps, outputs in bench/results/quick/")
    a = p.parse_args()
    if a.quick:
        a.n_images, a.samples, a.steps = 2, 2, 3
    return a


def main() -> None:
    a = parse_args()
    start = time.perf_counter()
    test = subset(lesion_bench("test").select(a.contrast), a.n_images, a.seed)
    print(f"{a.contrast} test images: {len(test)}", flush=True)
    rows, skipped, seg, prob = [], [], None, None
    for name, fn in (("g2", run_ensemble), ("unet", run_unet)):
        try:
            row, out = fn(a, test)
        except MeddiffError as err:
            print(f"  skipped {name}: {err}", flush=True)
            skipped.append({"method": name, "reason": str(err)})
            continue
        seg, prob = (out, prob) if name == "g2" else (seg, out)
        rows.append(row)
        print_row(row)
    out_dir = ROOT / "bench" / "results" / ("quick" if a.quick else "")
    figures = out_dir if a.quick else ROOT / "docs" / "figures"
    figure = save_examples(figures / "segmentation_examples.png", test, seg, prob,
                           a.figure_images) if rows else None
    summary = {}
    if len(rows) == 2:
        g2, unet = rows
        summary = {"ensemble_minus_unet_dice": round(g2["dice_mean"] - unet["dice_mean"], 4),
                   "within_0.02_of_unet": g2["dice_mean"] >= unet["dice_mean"] - 0.02,
                   "variance_higher_where_wrong": None if None in (
                       g2["mean_var_wrong"], g2["mean_var_correct"])
                   else g2["mean_var_wrong"] > g2["mean_var_correct"]}
    doc = {**run_header("python bench/segmentation.py" + (" --quick" if a.quick else ""),
                        a.device),
           "contrast": a.contrast, "test_images": len(test), "seed": a.seed, "quick": a.quick,
           "rows": rows, "skipped": skipped, "summary": summary,
           "figure": str(figure.relative_to(ROOT)) if figure else None,
           "seconds": round(time.perf_counter() - start, 1)}
    print(f"summary: {json.dumps(summary)}")
    write_results(out_dir / "segmentation.json", doc, figure)


if __name__ == "__main__":
    main()
