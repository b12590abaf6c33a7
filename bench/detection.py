"""Detection benchmark: unsupervised lesion localisation (D1-D4) on the fixed lesion benchmark.

    .venv/bin/python bench/detection.py            # -> bench/results/detection.json,
                                                   #    docs/figures/detection_examples.png
    .venv/bin/python bench/detection.py --quick    # smoke run (bench/results/quick/)

Protocol. Data: :func:`meddiff.data.lesion_bench.lesion_bench` (held-out slabs, 1-2 large
irregular long-T2 lesions per image, unlike any training lesion), FLAIR and T2w reported
separately. Per contrast, ``--n-images`` fixed-seed images of the *test* split are scored and
``--n-val`` fixed-seed images of the *validation* split choose each method's Dice threshold
(per method and contrast: the threshold with the best pooled Dice over the validation brain
pixels); the test split never chooses anything. Images (N, 1, 64, 64) in [0, 1]; maps
(N, 1, 64, 64) >= 0, higher = more anomalous.

Rows (method options are fixed defaults, not tuned on the test set):
- ``anoddpm`` (D3, Wyatt et al. 2022): the simplex-noise model ``anoddpm-64``, t = ``--t``
  (250 of 1000), ``--anoddpm-steps`` strided ancestral steps back (the paper runs every step).
- ``anoddpm, Gaussian noise``: the same partial diffusion (same t and steps) through
  the Gaussian-noise healthy prior: the check of D3's claim "simplex noise beats Gaussian".
  The two rows differ in the noise *and* in the network (two separately trained models).
- ``wolleb`` (D4, L = 500, guidance scale 100) and ``diff-scm`` (D1, abduction to T, scale 30):
  ``brain-prior-64`` + the noise-aware classifier ``lesion-classifier-64``, ``--cf-steps`` DDIM
  steps each way (the method default is 100; fewer for the time budget).
- ``latent`` (D2, Pinaya et al. 2022): ``latent-ae-64`` + ``latent-ddpm-64``, levels 100 / 200 /
  300, 5 DDIM steps each.
- ``ae-residual``: the baseline ``|x - D(E(x))|`` of the same autoencoder (Baur et al. 2021).
Methods whose weights are missing are skipped with a note (and listed as skipped in the JSON).

Metrics per (method, contrast) on the test images: pixel AUROC and AUPRC over the pixels inside
the brain mask (pooled over images); Dice at the validation threshold (prediction ``map >= thr``
inside the brain; pooled over pixels, and the mean of per-image Dice); ``oracle_dice``, the best
Dice over all thresholds on the test pixels (an upper bound for reference, not a result); wall
seconds per image (test run, after the validation run warmed up) and network evaluations per
image. Budget: < 20 min on 2 CPU cores at the defaults. Estimate: the 64 px UNet costs
~0.016 s per image and evaluation at batch 16 with 2 threads (bench/results/sampler_overhead.json);
a classifier gradient costs ~0.6 and a simplex draw ~0.2 evaluations. Per image: D3 50 x 1.2,
Gaussian D3 50, D1 and D4 (49 + 50 + 50 x 0.6) each: ~370 evaluations, x 96 images (64 test +
32 validation) x 0.016 s ~ 9.5 min; D2 (15 evaluations on 16 x 16 latents) and the baseline
add < 1 min.
"""
from __future__ import annotations

import argparse
import json
import sys
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common import run_header, write_results
from meddiff.data.lesion_bench import LesionBench, lesion_bench
from meddiff.errors import MeddiffError
from meddiff.data.writers import atomic_write
from meddiff.eval.metrics import auprc, auroc, best_dice, dice
from meddiff.data.intensity import to_model
from meddiff.methods.detection import anoddpm as d3
from meddiff.methods.detection import counterfactual as cf
from meddiff.methods.detection import latent as lt
from meddiff.tasks import detection as dt

ROOT = Path(__file__).resolve().parents[1]
CONTRASTS = ("FLAIR", "T2w")
METHODS = ("anoddpm", "anoddpm-gaussian", "wolleb", "diff-scm", "latent", "ae-residual")
GAUSSIAN_ROW = "anoddpm, Gaussian noise"


@dataclass
class Method:
    """A loaded method: ``run(images01 (N, 1, S, S)) -> (maps (N, 1, S, S) >= 0, network
    evaluations per image, wall seconds)``; ``setting`` says what was run."""

    name: str
    setting: str
    run: Callable[[torch.Tensor], tuple[torch.Tensor, int, float]]


# ------------------------------------------------------------------------------ data
def subset(bench: LesionBench, n: int | None, seed: int) -> LesionBench:
    """A fixed-seed subset of ``n`` items (all when ``n`` is None or >= the size), in order."""
    if n is None or n >= len(bench):
        return bench
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(bench), generator=g)[:n].sort().values
    return LesionBench(*(v[keep] for v in (bench.images, bench.lesions, bench.brains,
                                           bench.contrasts, bench.sections)))


def load_sets(a) -> dict[str, dict[str, LesionBench]]:
    """``{contrast: {"val": ..., "test": ...}}`` of the fixed lesion benchmark."""
    test, val = lesion_bench("test"), lesion_bench("val")
    return {c: {"test": subset(test.select(c), a.n_images, a.seed),
                "val": subset(val.select(c), a.n_val, a.seed + 1)} for c in CONTRASTS}


# ------------------------------------------------------------------------------ methods
def detector(name: str, method: str, opts: dt.DetectOptions, setting: str) -> Method:
    """A registered detection method run by :mod:`meddiff.tasks.detection` (loads its models
    now)."""
    runner = dt.prepare(method, opts)

    def run(x: torch.Tensor):
        det = dt.detect(runner, x, opts)  # det.nfe counts batched calls: per batch, summed
        return det.maps, det.nfe / math.ceil(len(x) / opts.batch_size), det.seconds

    return Method(name, f"{', '.join(runner.names)}; {setting}", run)


def ae_baseline(a) -> Method:
    """The autoencoder-residual baseline ``|x - D(E(x))|`` of the D2 autoencoder."""
    det, names = dt.load_latent(a.latent_model, a.device)
    codec, dev = det.codec, det.denoiser.device

    def run(x: torch.Tensor):  # model space in; image-space differences (half) out
        start = time.perf_counter()
        maps = torch.cat([0.5 * lt.ae_residual(codec, to_model(x[i:i + a.batch]).to(dev)).cpu()
                          for i in range(0, len(x), a.batch)])
        return maps, 0, time.perf_counter() - start

    return Method("ae-residual", f"{names[0]}; |x - D(E(x))|, "
                  "no smoothing", run)


def build(key: str, a) -> Method:
    """Load the method ``key`` of :data:`METHODS`; MeddiffError when its weights are missing."""
    o = dict(device=a.device, seed=a.seed, batch_size=a.batch)
    if key == "anoddpm":
        return detector("anoddpm", "anoddpm", dt.DetectOptions(
            model=a.anoddpm_model, t=a.t, steps=a.anoddpm_steps, **o),
            f"the model's training noise (simplex), t {a.t:g}, {a.anoddpm_steps} DDPM steps")
    if key == "anoddpm-gaussian":
        return detector(GAUSSIAN_ROW, "anoddpm", dt.DetectOptions(
            model=a.prior_model, t=a.t, steps=a.anoddpm_steps, **o),
            f"Gaussian noise, t {a.t:g}, {a.anoddpm_steps} DDPM steps")
    if key in ("wolleb", "diff-scm"):
        d = cf.WOLLEB if key == "wolleb" else cf.DIFF_SCM
        level = "T - 1" if d.level is None else f"{d.level:g}"
        return detector(key, key, dt.DetectOptions(
            model=a.prior_model, classifier=a.classifier, steps=a.cf_steps, **o),
            f"level {level}, scale {d.scale:g}, {a.cf_steps} DDIM steps")
    if key == "latent":
        return detector("latent", "latent", dt.DetectOptions(
            model=a.latent_model, steps=a.latent_steps, **o),
            f"levels {list(lt.DEFAULT_T)}, {a.latent_steps or lt.DEFAULT_STEPS} DDIM steps")
    return ae_baseline(a)


# ------------------------------------------------------------------------------ metrics
def best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold ``thr`` maximising the pooled Dice of ``scores >= thr`` against ``labels``
    (1-D, same length), trying every distinct score (as
    :func:`meddiff.eval.metrics.best_dice`); labels must contain a positive."""
    s, g = scores.double().numpy(), labels.numpy().astype(bool)
    order = np.argsort(-s, kind="stable")
    s, g = s[order], g[order]
    tp = np.cumsum(g)
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    dices = 2.0 * tp[ends] / (ends + 1 + g.sum())
    return float(s[ends[int(dices.argmax())]])


def score(maps: torch.Tensor, bench: LesionBench, thr: float) -> dict:
    """Test metrics of ``maps`` (N, 1, S, S) against ``bench`` at the threshold ``thr``."""
    brain, gt = bench.brains, bench.lesions
    s, g = maps[brain], gt[brain]
    pred = (maps >= thr) & brain
    per_image = [dice(p, t) for p, t in zip(pred, gt)]
    return {"auroc": round(auroc(s, g), 4), "auprc": round(auprc(s, g), 4),
            "threshold_from_val": round(thr, 5), "dice": round(dice(pred, gt), 4),
            "dice_per_image_mean": round(float(np.mean(per_image)), 4),
            "oracle_dice": round(best_dice(s, g), 4)}


def evaluate(m: Method, sets: dict, maps_out: dict) -> list[dict]:
    """Rows (one per contrast) of method ``m``; test maps go to ``maps_out[m.name][contrast]``."""
    rows = []
    for c in CONTRASTS:
        val, test = sets[c]["val"], sets[c]["test"]
        vmaps, _, _ = m.run(val.images)
        thr = best_threshold(vmaps[val.brains], val.lesions[val.brains])
        maps, nfe, seconds = m.run(test.images)
        maps_out.setdefault(m.name, {})[c] = maps
        row = {"method": m.name, "contrast": c, "setting": m.setting, **score(maps, test, thr),
               "nfe_per_image": round(nfe, 1),
               "seconds_per_image": round(seconds / len(test), 4)}
        rows.append(row)
        print(f"  {c:5s} {m.name:36s} AUROC {row['auroc']:.3f}  AUPRC {row['auprc']:.3f}  "
              f"Dice {row['dice']:.3f} (oracle {row['oracle_dice']:.3f})  "
              f"NFE {row['nfe_per_image']:6.1f}  {row['seconds_per_image']:.3f} s/image",
              flush=True)
    return rows


# ------------------------------------------------------------------------------ summaries
def _row(rows: list[dict], method: str, contrast: str) -> dict | None:
    return next((r for r in rows if r["method"] == method and r["contrast"] == contrast), None)


def claims(rows: list[dict]) -> dict:
    """D3's simplex-vs-Gaussian check, D2's speed claim and the issue's FLAIR targets."""
    out = {"simplex_vs_gaussian": {}, "latent_speedup": {}}
    for c in CONTRASTS:
        sx, ga = _row(rows, "anoddpm", c), _row(rows, GAUSSIAN_ROW, c)
        if sx and ga:
            out["simplex_vs_gaussian"][c] = {
                k: {"simplex": sx[k], "gaussian": ga[k]} for k in ("auroc", "auprc", "dice")}
            out["simplex_vs_gaussian"][c]["simplex_better_auroc"] = sx["auroc"] > ga["auroc"]
    lat = [r for r in rows if r["method"] == "latent"]
    for other in ("anoddpm", "wolleb", "diff-scm"):
        pairs = [(r, _row(rows, other, r["contrast"])) for r in lat]
        ratios = [o["seconds_per_image"] / r["seconds_per_image"] for r, o in pairs
                  if o and r["seconds_per_image"] > 0]
        if ratios:
            out["latent_speedup"][other] = round(float(np.mean(ratios)), 1)
    flair = [r for r in rows if r["contrast"] == "FLAIR" and r["method"] != "ae-residual"]
    if flair:
        best = max(flair, key=lambda r: r["auroc"])
        out["flair_targets"] = {"best_method": best["method"], "auroc": best["auroc"],
                                "dice": best["dice"], "auroc_at_least_0.95": best["auroc"] >= 0.95,
                                "dice_at_least_0.6": best["dice"] >= 0.6}
    return out


def save_examples(path: Path, sets: dict, maps: dict, per_contrast: int) -> Path:
    """Rows: ``per_contrast`` test images of each contrast; columns: input, ground truth and
    each method's map (magma, 0 .. the 99.5th percentile of that method's brain pixels of the
    contrast; the ground-truth outline in cyan)."""
    names = list(maps)
    picks = [(c, int(i)) for c in CONTRASTS for i in np.linspace(
        0, len(sets[c]["test"]) - 1, min(per_contrast, len(sets[c]["test"]))).round()]
    fig = Figure(figsize=(1.6 * (2 + len(names)), 1.7 * len(picks)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(picks), 2 + len(names), squeeze=False)
    for r, (c, i) in enumerate(picks):
        b = sets[c]["test"]
        axes[r, 0].imshow(b.images[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[r, 1].imshow(b.lesions[i, 0].float(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(f"{c}, test #{i}", fontsize=8)
        for j, n in enumerate(names):
            m = maps[n][c]
            top = max(float(torch.quantile(m[b.brains].float(), 0.995)), 1e-8)
            ax = axes[r, 2 + j]
            ax.imshow(m[i, 0], cmap="magma", vmin=0, vmax=top)
            ax.contour(b.lesions[i, 0].float().numpy(), levels=[0.5], colors="cyan",
                       linewidths=0.6)
    for j, title in enumerate(["input", "ground truth"] + names):
        axes[0, j].set_title(title.replace(", ", ",\n"), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90,
                                                     bbox_inches="tight"))


# ------------------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=32, help="test images per contrast "
                   "(fixed-seed subset; default 32)")
    p.add_argument("--n-val", type=int, default=16, help="validation images per contrast for "
                   "the Dice thresholds (default 16)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--anoddpm-model", default=None, help="D3 model (default: bundled anoddpm-64)")
    p.add_argument("--prior-model", default="brain-prior-64",
                   help="Gaussian healthy prior of D1 / D4 and of the Gaussian AnoDDPM row")
    p.add_argument("--classifier", default=None,
                   help="noise-aware classifier NAME.json (default: bundled lesion-classifier-64)")
    p.add_argument("--latent-model", default=None, help="D2 weights folder or latent DDPM "
                   "NAME.json with latent-ae-64.safetensors beside it (default: bundled)")
    p.add_argument("--t", type=float, default=d3.ANODDPM_T, help="AnoDDPM noise time (250)")
    p.add_argument("--anoddpm-steps", type=int, default=50, help="AnoDDPM reverse steps (50)")
    p.add_argument("--cf-steps", type=int, default=50, help="D1 / D4 DDIM steps (50)")
    p.add_argument("--latent-steps", type=int, default=None,
                   help=f"D2 DDIM steps per level (default {lt.DEFAULT_STEPS})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure-images", type=int, default=2, help="figure rows per contrast")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 + 2 images per contrast, 3 steps, outputs in "
                        "bench/results/quick/")
    p.add_argument("--tag", default="",
                   help="a variant run (e.g. another prior): results in detection_TAG.json and "
                        "detection_examples_TAG.png, leaving the main run's files alone")
    a = p.parse_args()
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = set(a.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if a.quick:
        a.n_images, a.n_val, a.anoddpm_steps, a.cf_steps, a.latent_steps = 2, 2, 3, 3, 2
    return a


def main() -> None:
    a = parse_args()
    start = time.perf_counter()
    sets = load_sets(a)
    print("images per contrast: " + ", ".join(
        f"{c} test {len(s['test'])} / val {len(s['val'])}" for c, s in sets.items()), flush=True)
    rows, skipped, maps = [], [], {}
    for key in a.methods:
        try:
            m = build(key, a)
        except MeddiffError as err:
            print(f"  skipped {key}: {err}", flush=True)
            skipped.append({"method": key, "reason": str(err)})
            continue
        print(f"{m.name} ({m.setting})", flush=True)
        rows += evaluate(m, sets, maps)
    out_dir = ROOT / "bench" / "results" / ("quick" if a.quick else "")
    figures = out_dir if a.quick else ROOT / "docs" / "figures"
    suffix = f"_{a.tag}" if a.tag else ""
    figure = save_examples(figures / f"detection_examples{suffix}.png", sets, maps,
                           a.figure_images) if maps else None
    doc = {**run_header(" ".join(["python bench/detection.py", *sys.argv[1:]]), a.device),
           "test_images_per_contrast": {c: len(s["test"]) for c, s in sets.items()},
           "val_images_per_contrast": {c: len(s["val"]) for c, s in sets.items()},
           "seed": a.seed, "quick": a.quick, "rows": rows, "skipped": skipped,
           "claims": claims(rows), "figure": str(figure.relative_to(ROOT)) if figure else None,
           "seconds": round(time.perf_counter() - start, 1)}
    print(f"claims: {json.dumps(doc['claims'])}")
    write_results(out_dir / f"detection{suffix}.json", doc, figure)


if __name__ == "__main__":
    main()
