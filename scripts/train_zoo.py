"""Train, export and evaluate a bundled diffusion model of the zoo.

    .venv/bin/python scripts/train_zoo.py brain-prior-64            # train (resumes), export, evaluate
    .venv/bin/python scripts/train_zoo.py brain-prior-64 --export-only

Reads ``configs/NAME.yaml`` (a ``meddiff train`` run config), trains into its ``out_dir`` with
resume after a kill, then writes the EMA weights to ``src/meddiff/zoo/weights/NAME.{safetensors,
json}``, a sample grid and a realism figure to ``docs/figures/`` and the model card
``src/meddiff/zoo/cards/NAME.md``.

Realism (FD-MedEnc, meddiff's own feature encoder, not FID): N generated images against N
augmented images rendered from the held-out *test* slab, next to N images of the training slabs
(the floor: real images, different anatomy) and two degraded versions of the test images.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
from dataclasses import replace
from pathlib import Path

import torch
from scipy.ndimage import gaussian_filter

from meddiff import api
from meddiff.data.datasets import BrainSlices
from meddiff.eval.figures import save_bars, save_grid
from meddiff.eval.frechet import feature_stats, frechet_distance, load_feature_encoder
from meddiff.nets.unet import count_parameters
from meddiff.train.build import RunConfig, load_run_config, train
from meddiff.train.checkpoint import load_checkpoint, load_model_weights
from meddiff.zoo.store import WEIGHTS_DIR, DiffusionSpec, build_denoiser, save_model, write_spec

ROOT = Path(__file__).resolve().parents[1]
DATA_SUMMARY = ("simulated brain MRI slices: MNI152 2009a anatomy (nilearn's bundled files), "
                "T1w/T2w/PDw/FLAIR signal equations with random parameters, elastic/affine "
                "warps, bias field, Rician noise; axial training slabs only")


def _images(split: str, n: int, size: int, seed: int) -> torch.Tensor:
    ds = BrainSlices(split, size=size, augment=True, seed=seed, length=n)
    return torch.stack([ds[i]["image"] for i in range(n)])


def realism(name: str, n: int, seed: int) -> dict[str, float]:
    """FD-MedEnc of generated and reference sets against augmented held-out test images."""
    model = api.load_model(name, device="cpu")
    size = model.spec.image_size
    enc = load_feature_encoder()
    ref = feature_stats(enc, _images("test", n, size, seed + 100))
    blur = _images("test", n, size, seed + 200)
    blur = torch.from_numpy(gaussian_filter(blur.numpy(), (0, 0, 1.2, 1.2)))
    noisy = (_images("test", n, size, seed + 300) + 0.08 * torch.randn(n, 1, size, size,
             generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
    sets = {"real, training slabs": _images("train", n, size, seed + 400),
            "generated, DDIM 50 steps": api.sample(model, n, "ddim", 50, seed=seed, progress=True),
            "generated, DDPM 100 steps": api.sample(model, n, "ddpm", 100, seed=seed + 1, progress=True),
            "real test, blurred (1.2 px)": blur, "real test, noise 0.08": noisy}
    fd = {k: round(frechet_distance(*feature_stats(enc, v), *ref), 2) for k, v in sets.items()}
    save_grid(ROOT / "docs/figures" / f"{name}_samples.png", sets["generated, DDIM 50 steps"][:32],
              nrow=8, title=f"{name}: DDIM 50 steps, seed {seed}")
    save_grid(ROOT / "docs/figures" / f"{name}_real.png", sets["real, training slabs"][:32], nrow=8,
              title="real training-slab images (augmented)")
    save_bars(ROOT / "docs/figures" / f"{name}_realism.png", fd, "FD-MedEnc (lower = closer)",
              title=f"vs {n} augmented held-out test-slab images", logy=True)
    return fd


def _wall_time(out_dir: Path) -> float:
    """Training wall time from the run's CSV log, summed over resumed segments
    (``elapsed_s`` restarts from 0 in each segment)."""
    total = last = 0.0
    for row in csv.DictReader((out_dir / "log.csv").open()):
        elapsed = float(row["elapsed_s"])
        if elapsed < last:
            total += last
        last = elapsed
    return round(total + last, 1)


def export(name: str, cfg: RunConfig) -> tuple[DiffusionSpec, dict]:
    """EMA weights of the finished run -> the bundled pair, with the card's training facts."""
    out_dir = Path(cfg.train.out_dir)
    state = load_checkpoint(out_dir / "ckpt" / "last")
    den = build_denoiser(cfg.model)
    step = load_model_weights(out_dir, den.net, use_ema=True)
    history = state.history[-50:]
    card = {"parameters": f"{count_parameters(den.net) / 1e6:.2f} M",
            "training": {"steps": step, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
                         "ema_decay": cfg.train.ema_decay, "bf16": cfg.train.bf16,
                         "final_loss": round(sum(history) / max(len(history), 1), 5),
                         "wall_time_s": _wall_time(out_dir),
                         "machine": f"{platform.processor() or platform.machine()}, "
                                    f"{torch.get_num_threads()} threads, torch {torch.__version__}"},
            "config": f"configs/{name}.yaml"}
    spec = replace(cfg.model, data={"summary": DATA_SUMMARY, "intensity": "image space [0, 1] -> "
                                    "model space [-1, 1]", "size": f"{cfg.model.image_size} px"})
    save_model(WEIGHTS_DIR / name, den.net, spec, card)
    return spec, card


def write_card(name: str, cfg: RunConfig, card: dict, fd: dict[str, float], n: int) -> Path:
    tr = card["training"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in fd.items())
    wall = f"{tr['wall_time_s'] / 60:.1f} min"
    text = f"""# {name}

Unconditional 2D diffusion prior (DDPM, {cfg.model.schedule} schedule, {cfg.model.num_steps} steps,
{cfg.model.parametrization}-prediction) of healthy brain MRI at {cfg.model.image_size}x{cfg.model.image_size}.
Shared by the methods that need a healthy-anatomy prior.

- **Network**: MONAI DiffusionModelUNet, channels {list(cfg.model.net.channels)}, attention at the
  coarsest level, {card['parameters']} parameters.
- **Data**: {DATA_SUMMARY}. Held out: the validation and test slabs (guard-banded).
- **Training**: {tr['steps']} steps, batch {tr['batch_size']}, AdamW lr {tr['lr']}, EMA {tr['ema_decay']},
  bf16 autocast {tr['bf16']}; wall time {wall} on {tr['machine']}; final loss {tr['final_loss']}.
- **Reproduce**: `.venv/bin/python scripts/train_zoo.py {name}` (config `configs/{name}.yaml`).
- **Intensity**: inputs in [0, 1] (image space), network in [-1, 1].

## Realism (FD-MedEnc, {n} images per set, against augmented held-out test-slab images)

FD-MedEnc is the Frechet distance on features of meddiff's own encoder (not FID; no Inception
weights can be downloaded). Lower is closer; "real, training slabs" is the floor.

| image set | FD-MedEnc |
|---|---|
{rows}

![samples](../../../docs/figures/{name}_samples.png)
![realism](../../../docs/figures/{name}_realism.png)
"""
    path = Path(__file__).resolve().parents[1] / "src/meddiff/zoo/cards" / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", default="brain-prior-64")
    p.add_argument("--export-only", action="store_true", help="skip training (run must exist)")
    p.add_argument("--n-eval", type=int, default=256, help="images per set for FD-MedEnc")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cfg = load_run_config(ROOT / "configs" / f"{a.name}.yaml")
    if not a.export_only:
        print(f"training: {train(cfg, resume=True)}")
    spec, card = export(a.name, cfg)
    fd = realism(a.name, a.n_eval, a.seed)
    card["realism_fd_medenc"] = {"n_per_set": a.n_eval, **fd}
    write_spec(WEIGHTS_DIR / a.name, spec, card)
    print(json.dumps(card, indent=2))
    print(f"card: {write_card(a.name, cfg, card, fd, a.n_eval)}")


if __name__ == "__main__":
    main()
