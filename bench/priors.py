"""Old vs new brain prior in one run: realism (FD-MedEnc) and DDIM stability of samples.

    .venv/bin/python bench/priors.py                   # -> bench/results/priors.json,
                                                       #    docs/figures/priors_samples.png
    .venv/bin/python bench/priors.py --quick           # smoke run (bench/results/quick/)

Protocol. For every prior in ``--models`` (bundled names or run directories): ``--n`` samples
of 64 x 64 px from pure noise with DDPM (100 ancestral steps) and with deterministic DDIM (50
steps), the same seeds for every prior. References: ``--n`` augmented images of the held-out
*test* slab at 64 px (2.95 mm; whole slices, the pixel size both priors saw in training) and
``--n`` of the training slabs (real images of other anatomy: the natural floor).
- FD-MedEnc: Frechet distance on the features of meddiff's own encoder (``feature_encoder``;
  no Inception weights can be downloaded, so this is not FID and not comparable with FID).
- DDIM stability: the samples' pixel std and mean against the real test images', and the
  fraction of pixels the sampler pushed outside [-1, 1] before clipping (model space): a
  fragile prior's deterministic samples come out too noisy (std inflated) and saturated.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from common import run_header, write_results
from meddiff.core.samplers import generate
from meddiff.data.datasets import BrainSlices
from meddiff.data.intensity import image_space
from meddiff.eval.figures import save_grid
from meddiff.eval.frechet import feature_stats, frechet_distance
from meddiff.tasks.inputs import load_model
from meddiff.zoo.store import load

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
SAMPLERS = {"DDPM 100 steps": ("ddpm", 100), "DDIM 50 steps": ("ddim", 50)}


def real_images(split: str, n: int, seed: int) -> torch.Tensor:
    """``n`` augmented images (n, 1, 64, 64) in [0, 1] of ``split`` (all four contrasts)."""
    ds = BrainSlices(split, size=SIZE, augment=True, seed=seed, length=n)
    return torch.stack([ds[i]["image"] for i in range(n)])


def samples(model, sampler: str, steps: int, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """(n, 1, 64, 64) samples in [0, 1] and the fraction of model-space pixels outside [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    out = [generate(model.denoiser, (min(32, n - i), 1, SIZE, SIZE), sampler=sampler,
                    steps=steps, generator=gen) for i in range(0, n, 32)]
    x = torch.cat(out)
    return image_space(x.clamp(-1, 1), "unit"), float((x.abs() > 1).float().mean())


def stats(x: torch.Tensor) -> dict[str, float]:
    return {"pixel_std": round(float(x.std()), 4), "pixel_mean": round(float(x.mean()), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["brain-prior-64", "brain-prior-native"])
    p.add_argument("--n", type=int, default=128, help="images per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="8 images, 4 steps")
    a = p.parse_args()
    n = 8 if a.quick else a.n
    samplers = {k: (s, 4 if a.quick else st) for k, (s, st) in SAMPLERS.items()}
    start = time.perf_counter()
    enc = load("feature_encoder", kind="feature-encoder").net
    test = real_images("test", n, a.seed + 100)
    ref = feature_stats(enc, test)
    fd = lambda x: round(frechet_distance(*feature_stats(enc, x), *ref), 2)  # noqa: E731
    train = real_images("train", n, a.seed + 400)
    rows = [{"set": "real, training slabs (floor)", "fd_medenc": fd(train), **stats(train)},
            {"set": "real, test slab (reference)", **stats(test)}]
    grids = []
    for name in a.models:
        model = load_model(name, device="cpu")
        for label, (sampler, steps) in samplers.items():
            t0 = time.perf_counter()
            x, outside = samples(model, sampler, steps, n, a.seed)
            rows.append({"set": f"{model.name}, {label}", "model": model.name,
                         "sampler": label, "fd_medenc": fd(x), **stats(x),
                         "outside_range_fraction": round(outside, 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
            if sampler == "ddim":
                grids.append(x[:8])
    out = ROOT / "bench" / "results" / ("quick" if a.quick else "") / "priors.json"
    figure = ROOT / "docs" / "figures" / "priors_samples.png"
    if not a.quick:
        save_grid(figure, torch.cat(grids), nrow=8,
                  title=f"DDIM 50 steps, seed {a.seed}; rows: {', '.join(a.models)}")
    doc = {**run_header(" ".join(["bench/priors.py"] + sys.argv[1:]), "cpu"), "n_per_set": n,
           "rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    write_results(out, doc, None if a.quick else figure)


if __name__ == "__main__":
    main()
