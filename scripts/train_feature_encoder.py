"""Train the FD-MedEnc feature encoder (:class:`meddiff.eval.frechet.FeatureEncoder`).

Data: meddiff's built-in simulated brain slices (``BrainSlices``, split 'train', 64 px, all
contrasts; augmented items plus a quarter as many unaugmented ones). The items are rendered once,
then batches (with random left-right flips) are drawn with a seeded generator. Three auxiliary tasks on the 128-d features make them sensitive to
what a realism metric must see:

* contrast class (cross-entropy, 4 classes)            -> intensity/contrast statistics;
* normalised axial slice position in [0, 1] (MSE)     -> anatomy;
* corruption type: clean / blur / noise / shuffled patches (cross-entropy; half of every batch
  is clean)                                            -> realism (texture, sharpness, coherence).

Writes ``feature_encoder.safetensors`` and a JSON model card (data, steps, wall time, final
losses, 'val' accuracies, FD-MedEnc calibration values) into ``--out-dir`` (default: the bundled
weights folder of the package). Usage::

    .venv/bin/python scripts/train_feature_encoder.py [--steps 480] [--max-seconds 220]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meddiff.data.datasets import BrainSlices, default_split
from meddiff.eval.figures import atomic_write
from meddiff.eval.frechet import DEFAULT_WEIGHTS, FeatureEncoder, fd_medenc, save_feature_encoder

KINDS = ("clean", "blur", "noise", "shuffle")
N_CONTRASTS = 4


class AuxHeads(nn.Module):
    """Task heads on (B, 128) features: contrast logits, slice position, corruption logits."""

    def __init__(self, n_contrasts: int = N_CONTRASTS, features: int = FeatureEncoder.FEATURES):
        super().__init__()
        self.n_contrasts = n_contrasts
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(features, 128), nn.SiLU(),
                                 nn.Linear(128, n_contrasts + 1 + len(KINDS)))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.mlp(f)
        k = self.n_contrasts
        return out[:, :k], torch.sigmoid(out[:, k]), out[:, k + 1:]


# ----------------------------------------------------------------------------- corruptions


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (1, H, W) image (reflect padding)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(x[None], (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[0]


def _shuffle(x: torch.Tensor, gen: torch.Generator, grid: int = 4) -> torch.Tensor:
    """Cyclically swap 2-6 grid patches of (1, H, W) that contain signal (anatomically incoherent)."""
    _, h, w = x.shape
    ph, pw = h // grid, w // grid
    patches = x[:, :ph * grid, :pw * grid].reshape(1, grid, ph, grid, pw).permute(1, 3, 0, 2, 4)
    patches = patches.reshape(grid * grid, 1, ph, pw)
    candidates = torch.nonzero(patches.mean(dim=(1, 2, 3)) > 0.05).flatten()
    if candidates.numel() < 2:
        candidates = torch.arange(grid * grid)
    k = int(torch.randint(2, min(6, candidates.numel()) + 1, (1,), generator=gen))
    chosen = candidates[torch.randperm(candidates.numel(), generator=gen)[:k]]
    patches = patches.clone()
    patches[chosen] = patches[chosen.roll(1)]
    out = x.clone()
    out[:, :ph * grid, :pw * grid] = patches.reshape(grid, grid, 1, ph, pw).permute(2, 0, 3, 1, 4) \
        .reshape(1, ph * grid, pw * grid)
    return out


def corrupt(x: torch.Tensor, kinds: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply corruption ``KINDS[kinds[i]]`` to image ``x[i]`` of (B, 1, H, W) in [0, 1].

    blur: Gaussian, sigma ~ U(0.6, 2) px; noise: additive Gaussian, std ~ U(0.03, 0.15), clipped
    to [0, 1]; shuffle: 2-6 of the 4x4 grid patches with signal cyclically swapped.
    """
    out = x.clone()
    for i, k in enumerate(kinds.tolist()):
        u = float(torch.rand((), generator=gen))
        if KINDS[k] == "blur":
            out[i] = _blur(x[i], 0.6 + 1.4 * u)
        elif KINDS[k] == "noise":
            n = torch.randn(x[i].shape, generator=gen)
            out[i] = (x[i] + (0.03 + 0.12 * u) * n).clamp(0.0, 1.0)
        elif KINDS[k] == "shuffle":
            out[i] = _shuffle(x[i], gen)
    return out


def draw_kinds(n: int, gen: torch.Generator) -> torch.Tensor:
    """Corruption labels for a batch: clean with probability 1/2, else uniform over the rest."""
    clean = torch.rand(n, generator=gen) < 0.5
    other = torch.randint(1, len(KINDS), (n,), generator=gen)
    return torch.where(clean, torch.zeros_like(other), other)


# ----------------------------------------------------------------------------- data


def build_pool(datasets: Sequence, position_range: tuple[float, float]) -> dict[str, torch.Tensor]:
    """Render every item of ``datasets``: 'image' (n, 1, H, W), 'contrast' (n,), 'position' (n,).

    position = (section - lo) / (hi - lo) for ``position_range`` (lo, hi), clipped to [0, 1].
    """
    lo, hi = position_range
    items = [ds[i] for ds in datasets for i in range(len(ds))]
    pos = torch.tensor([(it["section"] - lo) / (hi - lo) for it in items], dtype=torch.float32)
    return {"image": torch.stack([it["image"] for it in items]).float(),
            "contrast": torch.tensor([int(it["contrast"]) for it in items]),
            "position": pos.clamp(0.0, 1.0)}


# ----------------------------------------------------------------------------- training


def losses(encoder: nn.Module, heads: AuxHeads, x: torch.Tensor, contrast: torch.Tensor,
           position: torch.Tensor, kinds: torch.Tensor, bf16: bool = False) -> dict[str, torch.Tensor]:
    """The three task losses on a (corrupted) batch."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        c_logit, pos, k_logit = heads(encoder(x))
    return {"contrast": F.cross_entropy(c_logit.float(), contrast),
            "position": 10.0 * F.mse_loss(pos.float(), position),
            "corruption": F.cross_entropy(k_logit.float(), kinds)}


def train(encoder: FeatureEncoder, heads: AuxHeads, pool: dict[str, torch.Tensor], steps: int,
          batch_size: int = 32, lr: float = 2e-3, seed: int = 0, max_seconds: float = math.inf,
          bf16: bool = False) -> dict:
    """AdamW with linear warm-up (5 %) and cosine decay; stops early after ``max_seconds``.

    Returns steps done, wall time and per-task losses averaged over the last 10 % of steps.
    """
    gen = torch.Generator().manual_seed(seed)
    params = list(encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    encoder.train()
    heads.train()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    n = pool["image"].shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x = pool["image"][idx]
        x = torch.where(torch.rand(batch_size, 1, 1, 1, generator=gen) < 0.5, x, x.flip(-1))
        kinds = draw_kinds(batch_size, gen)
        parts = losses(encoder, heads, corrupt(x, kinds, gen), pool["contrast"][idx],
                       pool["position"][idx], kinds, bf16)
        loss = sum(parts.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append({k: v.detach().item() for k, v in parts.items()})
        if time.perf_counter() - start > max_seconds:
            break
    tail = history[-max(1, len(history) // 10):]
    return {"steps_done": len(history), "wall_time_s": round(time.perf_counter() - start, 1),
            "final_losses": {k: round(float(np.mean([h[k] for h in tail])), 4) for k in tail[0]}}


@torch.no_grad()
def evaluate(encoder: FeatureEncoder, heads: AuxHeads, pool: dict[str, torch.Tensor],
             train_position: float, seed: int = 1) -> dict:
    """Accuracies on ``pool``: contrast, slice-position MAE, corruption (4-way and clean vs not).

    Every image is scored once per corruption kind (fixed generator), contrast/position on the
    clean copies. ``position_mae_baseline`` predicts the mean training position for every image.
    """
    encoder.eval()
    heads.eval()
    gen = torch.Generator().manual_seed(seed)
    x, n = pool["image"], pool["image"].shape[0]
    c_logit, pos, _ = heads(encoder(x))
    hits, binary = [], []
    for k in range(len(KINDS)):
        kinds = torch.full((n,), k)
        pred = heads(encoder(corrupt(x, kinds, gen)))[2].argmax(1)
        hits.append((pred == k).float())
        binary.append(((pred > 0) == (k > 0)).float())
    return {"n_images": n,
            "contrast_acc": round(float((c_logit.argmax(1) == pool["contrast"]).float().mean()), 4),
            "position_mae": round(float((pos - pool["position"]).abs().mean()), 4),
            "position_mae_baseline": round(float((train_position - pool["position"]).abs().mean()), 4),
            "corruption_acc": round(float(torch.cat(hits).mean()), 4),
            "clean_vs_corrupted_acc": round(float(torch.cat(binary).mean()), 4)}


def calibration(encoder: FeatureEncoder, a: torch.Tensor, b: torch.Tensor, seed: int = 2) -> dict:
    """FD-MedEnc of two disjoint real sets, and of the first against corrupted copies of the second."""
    gen = torch.Generator().manual_seed(seed)
    out = {"n_per_set": int(a.shape[0]), "real_vs_real": fd_medenc(a, b, encoder)}
    for k in range(1, len(KINDS)):
        out[f"real_vs_{KINDS[k]}"] = fd_medenc(a, corrupt(b, torch.full((b.shape[0],), k), gen), encoder)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


# ----------------------------------------------------------------------------- main


def run(train_sets: Sequence, val_sets: dict[str, object], calib_sets: tuple, out_dir: Path,
        args: argparse.Namespace, position_range: tuple[float, float], data_card: dict) -> dict:
    """Render, train, evaluate on each of ``val_sets``, save weights + JSON card; returns the card."""
    t0 = time.perf_counter()
    pool = build_pool(train_sets, position_range)
    vals = {name: build_pool([ds], position_range) for name, ds in val_sets.items()}
    calib_a, calib_b = (build_pool([ds], position_range)["image"] for ds in calib_sets)
    t_data = time.perf_counter() - t0
    encoder, heads = FeatureEncoder(seed=args.seed), AuxHeads()
    fit = train(encoder, heads, pool, args.steps, args.batch_size, args.lr, args.seed,
                args.max_seconds, args.bf16)
    mean_pos = float(pool["position"].mean())
    card = {
        "name": "FD-MedEnc feature encoder (meddiff.eval.frechet.FeatureEncoder)",
        "metric": "Frechet distance between Gaussian fits of these 128-d features (not FID)",
        "weights": "feature_encoder.safetensors",
        "data": data_card | {"train_items": int(pool["image"].shape[0])},
        "tasks": ["contrast class (CE)", "normalised axial slice position (MSE x10)",
                  f"corruption type {list(KINDS)} (CE, half of each batch clean)"],
        "training": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                     "seed": args.seed, "bf16_autocast": args.bf16,
                     "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                     "data_render_s": round(t_data, 1)} | fit,
        **{name: evaluate(encoder, heads, v, mean_pos) for name, v in vals.items()},
        "fd_medenc_calibration": calibration(encoder, calib_a, calib_b),
    }
    weights = save_feature_encoder(encoder, out_dir / "feature_encoder.safetensors")
    card["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    card["total_wall_time_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(card, indent=2) + "\n"
    atomic_write(out_dir / "feature_encoder.json", lambda fh: fh.write(text.encode()))
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=DEFAULT_WEIGHTS.parent)
    p.add_argument("--steps", type=int, default=480)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pool", type=int, default=4096, help="augmented training items rendered once")
    p.add_argument("--val", type=int, default=160, help="augmented 'val' items to evaluate on")
    p.add_argument("--calib", type=int, default=256, help="val items per FD calibration set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=math.inf, help="stop training early")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fast only on CPUs with bf16)")
    args = p.parse_args(argv)
    if min(args.steps, args.batch_size, args.pool, args.val, args.threads) < 1 or args.calib < 2:
        p.error("--steps, --batch-size, --pool, --val, --threads must be >= 1, --calib >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    eligible = default_split().eligible
    train_sets = [BrainSlices("train", size=64, seed=args.seed, length=args.pool),
                  BrainSlices("train", size=64, seed=args.seed, augment=False,
                              length=max(1, args.pool // 4))]
    val_sets = {"val": BrainSlices("val", size=64, seed=args.seed, augment=True, length=args.val),
                "val_unaugmented": BrainSlices("val", size=64, seed=args.seed)}
    calib = tuple(BrainSlices("val", size=64, augment=True, seed=args.seed + s, length=args.calib)
                  for s in (1, 2))
    data_card = {
        "dataset": "meddiff.data.datasets.BrainSlices", "size": 64,
        "contrasts": list(train_sets[0].contrasts),
        "train": f"split 'train' ({len(train_sets[0].sections)} axial sections): {args.pool} "
                 f"augmented items + {len(train_sets[1])} unaugmented, random left-right flips",
        "val": f"split 'val' ({len(val_sets['val'].sections)} axial sections, held-out slab): "
               f"{args.val} augmented items; 'val_unaugmented': {len(val_sets['val_unaugmented'])}",
        "calibration": f"2 disjoint draws of {args.calib} augmented 'val' items (seeds +1, +2)"}
    card = run(train_sets, val_sets, calib, args.out_dir, args,
               (float(eligible.min()), float(eligible.max())), data_card)
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
