"""Paired image translation T1w -> T2w (T1): conditional DDPM and score SDE against the UNet.

    .venv/bin/python bench/translation.py                # -> bench/results/translation.{json,md},
                                                         #    docs/figures/translation_*.png
    .venv/bin/python bench/translation.py --n 4 --n-fd 16 --quick

Protocol: co-registered T1w / T2w pairs of the held-out *test* slab
(:class:`~meddiff.data.modalities.TranslationPairs`, never seen in training), augmented
(warps, per-image bias / gamma / noise) so that the set is larger than the slab's sections; at
64 px (2.95 mm) and 128 px (1.48 mm). Rows: the supervised residual UNet regression
(``t1w-t2w-unet-native``, trained on the same pairs), T1's conditional DDPM sampled with
DPM-Solver++ (20 steps) and DDIM (50), its one-step posterior mean (DDIM 1), and the conditional
score SDE (predictor-corrector, 100 steps) -- one network, ``t1w-t2w-cddpm-native``. PSNR / SSIM
(data range 1), MAE, seconds per image; realism at 64 px: FD-MedEnc (meddiff's feature encoder)
of each row's translations against an independent draw of real T2w test images (lower is
closer; the real-vs-real distance of two draws is the floor).
"""
from __future__ import annotations

import argparse
import time

import torch

from common import Table, parse_with_outputs, run_header, stack_items, write_tables
from meddiff import api
from meddiff.data.modalities import TranslationPairs
from meddiff.eval.frechet import feature_stats, frechet_distance
from meddiff.zoo.store import load



def pairs(size: int, n: int, seed: int) -> list[torch.Tensor]:
    """``n`` augmented test pairs: [(n, 1, S, S) T1w, (n, 1, S, S) T2w] in [0, 1]."""
    ds = TranslationPairs("test", size=size, source="T1w", target="T2w", augment=True,
                          seed=seed, length=n)
    return stack_items(ds, ("source", "image"), n)


def rows(t: Table, a, source: torch.Tensor, quick: bool) -> None:
    unet = load(a.unet, kind="regression-unet").net.eval()
    model = api.load_model(a.model, device=a.device)
    t.add("UNet regression (supervised)", lambda: api.translate(unet, source, "unet"),
          "supervised")
    settings = [("cddpm", "dpmpp_2m", 20), ("cddpm", "ddim", 1)]
    if not quick:
        settings += [("cddpm", "ddim", 50), ("csde", None, 100)]
    for method, sampler, steps in settings:
        name = {("cddpm", "dpmpp_2m"): f"T1 cDDPM, DPM-Solver++ {steps} steps",
                ("cddpm", "ddim"): (f"T1 cDDPM, DDIM {steps} steps" if steps > 1 else
                                    "T1 cDDPM, posterior mean (DDIM 1 step)"),
                ("csde", None): f"T1 cSDE, predictor-corrector {steps} steps"}[(method, sampler)]
        kw = {"sampler": sampler} if sampler else {}
        t.add(name, lambda: api.translate(model.denoiser, source, method, steps=steps, seed=0,
                                          **kw), "diffusion", steps)


def realism(t: Table, real: torch.Tensor) -> dict[str, float]:
    """FD-MedEnc of every row's outputs (and of an independent real draw) against ``real``."""
    enc = load("feature_encoder", kind="feature-encoder").net
    ref = feature_stats(enc, real)
    sets = {"real T2w (independent draw)": t.reference, **t.outs}
    return {k: round(frechet_distance(*feature_stats(enc, v), *ref), 2) for k, v in sets.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=16, help="test pairs at 128 px")
    p.add_argument("--n-fd", type=int, default=64, help="test pairs at 64 px (FD-MedEnc)")
    p.add_argument("--quick", action="store_true", help="fewer rows (a smoke run)")
    p.add_argument("--model", default="t1w-t2w-cddpm-native")
    p.add_argument("--unet", default="t1w-t2w-unet-native")
    a = parse_with_outputs(p)
    start = time.perf_counter()
    command = f"python bench/translation.py --n {a.n} --n-fd {a.n_fd}" + (
        " --quick" if a.quick else "")
    doc = {**run_header(command, a.device), "results": {"t1w-t2w": []}}
    with torch.no_grad():
        for size, n in ((64, a.n_fd), (128, a.n)):
            source, target = pairs(size, n, seed=1)
            t = Table(f"T1w -> T2w, {size} px ({189 / size:.2f} mm), {n} test pairs", target)
            print(t.setting, flush=True)
            rows(t, a, source, a.quick)
            summary = t.summary()
            if size == 64:
                summary["fd_medenc"] = realism(t, pairs(size, n, seed=2)[1])
                print("  FD-MedEnc:", summary["fd_medenc"], flush=True)
            t.figure(a.figures / f"translation_{size}.png",
                     [r["method"] for r in t.rows], index=n // 2)
            doc["results"]["t1w-t2w"].append(summary)
    doc["seconds"] = round(time.perf_counter() - start, 1)
    write_tables(a.out, "translation" + ("_quick" if a.quick else ""), doc, a.figures)


if __name__ == "__main__":
    main()
