"""Retrain, export and evaluate bundled networks from their configs (no training loop here).

    .venv/bin/python scripts/train_zoo.py brain-prior-64     # train (resumes), export, evaluate
    .venv/bin/python scripts/train_zoo.py latent-ae-64 latent-ddpm-64  # stage 2 needs stage 1
    .venv/bin/python scripts/train_zoo.py seg-unet-64 --export-only

For each NAME: ``meddiff train configs/NAME.yaml`` (:func:`meddiff.train.run.train`, resuming
after a kill), then :func:`meddiff.train.run.export` of the EMA weights to
``src/meddiff/zoo/weights/NAME.{json,safetensors}`` with the model card
``src/meddiff/zoo/cards/NAME.md`` (validation metrics included). Unconditional image-space
diffusion priors also get the realism evaluation: FD-MedEnc (meddiff's own feature encoder,
not FID) of N generated images against N augmented images of the held-out *test* slab, next to
N images of the training slabs (the floor: real images, different anatomy) and two degraded
versions of the test images; figures go to ``docs/figures/``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from scipy.ndimage import gaussian_filter

from meddiff.config import to_dict
from meddiff.core.samplers import generate
from meddiff.data.intensity import image_space
from meddiff.eval.figures import save_bars, save_grid
from meddiff.eval.frechet import feature_stats, frechet_distance
from meddiff.train.cards import write_card
from meddiff.train.data import make_dataset
from meddiff.train.run import RunConfig, export, load_run_config, train
from meddiff.zoo.catalogue import CARDS_DIR, WEIGHTS_DIR, read_document
from meddiff.zoo.store import load, load_diffusion, write_document

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """Images for the feature encoder: (N, 1, S, S) in [0, 1] (complex channels -> magnitude)."""
    return x.norm(dim=1, keepdim=True).clamp(0, 1) if x.shape[1] == 2 else x


def _real(cfg: RunConfig, split: str, n: int, seed: int) -> torch.Tensor:
    """``n`` augmented real images of ``split``, (n, 1, S, S) in [0, 1]."""
    ds = make_dataset(replace(cfg.data, seed=seed), cfg.model.image_size, split, augment=True,
                      length=n)
    return _magnitude(torch.stack([ds[i]["image"] for i in range(n)]))


def _generated(path: Path, n: int, sampler: str, steps: int, seed: int) -> torch.Tensor:
    model = load_diffusion(path, autocast=True)
    spec, gen = model.spec, torch.Generator().manual_seed(seed)
    shape = (spec.net.in_channels, spec.image_size, spec.image_size)
    out = [generate(model.denoiser, (min(64, n - i), *shape), sampler=sampler, steps=steps,
                    generator=gen) for i in range(0, n, 64)]
    return _magnitude(image_space(torch.cat(out).clamp(-1, 1), spec.intensity))


def realism(name: str, path: Path, cfg: RunConfig, n: int, seed: int) -> dict[str, float]:
    """FD-MedEnc of generated and reference sets against augmented held-out test images."""
    enc = load("feature_encoder", kind="feature-encoder").net
    size = cfg.model.image_size
    ref = feature_stats(enc, _real(cfg, "test", n, seed + 100))
    blur = torch.from_numpy(gaussian_filter(_real(cfg, "test", n, seed + 200).numpy(),
                                            (0, 0, 1.2, 1.2)))
    noisy = (_real(cfg, "test", n, seed + 300) + 0.08 * torch.randn(
        n, 1, size, size, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
    sets = {"real, training slabs": _real(cfg, "train", n, seed + 400),
            "generated, DDIM 50 steps": _generated(path, n, "ddim", 50, seed),
            "generated, DDPM 100 steps": _generated(path, n, "ddpm", 100, seed + 1),
            "real test, blurred (1.2 px)": blur, "real test, noise 0.08": noisy}
    fd = {k: round(frechet_distance(*feature_stats(enc, v), *ref), 2) for k, v in sets.items()}
    save_grid(FIGURES / f"{name}_samples.png", sets["generated, DDIM 50 steps"][:32], nrow=8,
              title=f"{name}: DDIM 50 steps, seed {seed}")
    save_bars(FIGURES / f"{name}_realism.png", fd, "FD-MedEnc (lower = closer)",
              title=f"vs {n} augmented held-out test-slab images", logy=True)
    return {"n_per_set": n, **fd}


def add_realism(name: str, path: Path, cfg: RunConfig, n: int, seed: int) -> None:
    """Evaluate, then rewrite the model's JSON card and markdown card with the results."""
    doc = read_document(path)
    card = {**doc["card"], "realism_fd_medenc": realism(name, path, cfg, n, seed),
            "figures": {"samples": f"../../../docs/figures/{name}_samples.png",
                        "realism": f"../../../docs/figures/{name}_realism.png"}}
    write_document(path, cfg.model, card, doc["weights"], doc["dtype"] == "float16")
    write_card(CARDS_DIR / f"{name}.md", name, card, to_dict(cfg.model))


def _has_realism(cfg: RunConfig) -> bool:
    m = cfg.model
    return (cfg.objective.name == "diffusion" and m.condition == "none"
            and m.autoencoder is None and m.net.spatial_dims == 2
            and cfg.objective.options.get("target", "image") == "image")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+", help="configs/NAME.yaml of bundled networks")
    p.add_argument("--export-only", action="store_true", help="skip training (run must exist)")
    p.add_argument("--n-eval", type=int, default=256, help="images per set for FD-MedEnc")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    for name in a.names:
        cfg = load_run_config(ROOT / "configs" / f"{name}.yaml")
        if not a.export_only:
            print(f"{name}: {json.dumps(train(cfg, resume=True))}")
        path = export(cfg, name, WEIGHTS_DIR, CARDS_DIR,
                      reproduce=f".venv/bin/python scripts/train_zoo.py {name} "
                                f"(config configs/{name}.yaml)")
        if _has_realism(cfg):
            add_realism(name, path, cfg, a.n_eval, a.seed)
        print(f"{name}: wrote {path} and {CARDS_DIR / f'{name}.md'}")


if __name__ == "__main__":
    main()
