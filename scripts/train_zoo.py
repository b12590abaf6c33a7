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
from meddiff.data.modalities import ComplexBrainSlices, HeadCTSlices
from meddiff.eval.figures import save_bars, save_grid
from meddiff.eval.frechet import feature_stats, frechet_distance, load_feature_encoder
from meddiff.nets.unet import count_parameters
from meddiff.train.build import RunConfig, load_run_config, train
from meddiff.train.checkpoint import load_checkpoint, load_model_weights
from meddiff.zoo.store import WEIGHTS_DIR, DiffusionSpec, build_denoiser, save_model, write_spec

ROOT = Path(__file__).resolve().parents[1]
_ANATOMY = "MNI152 2009a anatomy (nilearn's bundled files), axial training slabs only"
# per data.dataset: (what the card calls the model, training data, intensity contract, users)
KINDS = {
    "brain_slices": (
        "healthy brain MRI (magnitude)",
        f"simulated brain MRI slices: {_ANATOMY}; T1w/T2w/PDw/FLAIR signal equations with random "
        "parameters, elastic/affine warps, bias field, Rician noise",
        "image space [0, 1] -> model space [-1, 1]",
        "the healthy-anatomy prior shared by sampling, denoising, reconstruction of magnitude "
        "images and anomaly detection"),
    "complex_brain_slices": (
        "complex-valued brain MRI (real and imaginary channels)",
        f"simulated brain MRI slices with smooth random phase: {_ANATOMY}; T1w/T2w/PDw (FLAIR "
        "left out for the robustness benchmark), warps, bias field, Rician noise, phase = "
        "uniform offset + degree-3 polynomial (RMS 1 rad)",
        "two channels (real, imaginary) of an image of magnitude <= 1, used as model space",
        "MRI reconstruction (`meddiff reconstruct`, default for --modality mri): score-mri, song, "
        "mcg, dps, diffuserecon, langevin, CCDF warm starts"),
    "head_ct_slices": (
        "head CT",
        f"head-CT-like slices rendered from the tissue maps: {_ANATOMY}; CSF 8 / GM 37 / WM 28 "
        "HU, skull 4-8 mm at 700-1300 HU, scalp, warps",
        "image space (HU + 1000) / 2000 in [0, 1] -> model space [-1, 1]",
        "CT reconstruction (`meddiff reconstruct --modality ct`): sparse-view and low-dose"),
}


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """Images for the feature encoder: (N, 1, S, S) in [0, 1] (complex channels -> magnitude)."""
    return x.norm(dim=1, keepdim=True).clamp(0, 1) if x.shape[1] == 2 else x


def _image_fn(dataset: str, contrasts):
    classes = {"brain_slices": BrainSlices, "complex_brain_slices": ComplexBrainSlices}

    def images(split: str, n: int, size: int, seed: int) -> torch.Tensor:
        if dataset == "head_ct_slices":
            ds = HeadCTSlices(split, size=size, augment=True, seed=seed, length=n)
        else:
            ds = classes[dataset](split, size=size, contrasts=contrasts, augment=True, seed=seed,
                                  length=n)
        return _magnitude(torch.stack([ds[i]["image"] for i in range(n)]))
    return images


def realism(name: str, cfg: RunConfig, n: int, seed: int) -> dict[str, float]:
    """FD-MedEnc of generated and reference sets against augmented held-out test images
    (complex models: on magnitudes)."""
    model = api.load_model(name, device="cpu")
    size = model.spec.image_size
    _images = _image_fn(cfg.data.dataset, cfg.data.contrasts)
    enc = load_feature_encoder()
    ref = feature_stats(enc, _images("test", n, size, seed + 100))
    blur = _images("test", n, size, seed + 200)
    blur = torch.from_numpy(gaussian_filter(blur.numpy(), (0, 0, 1.2, 1.2)))
    noisy = (_images("test", n, size, seed + 300) + 0.08 * torch.randn(n, 1, size, size,
             generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
    sets = {"real, training slabs": _images("train", n, size, seed + 400),
            "generated, DDIM 50 steps": _magnitude(api.sample(model, n, "ddim", 50, seed=seed,
                                                              progress=True)),
            "generated, DDPM 100 steps": _magnitude(api.sample(model, n, "ddpm", 100, seed=seed + 1,
                                                               progress=True)),
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
    _, summary, intensity, _ = KINDS[cfg.data.dataset]
    spec = replace(cfg.model, data={"summary": summary, "intensity": intensity,
                                    "size": f"{cfg.model.image_size} px"})
    save_model(WEIGHTS_DIR / name, den.net, spec, card)
    return spec, card


def write_card(name: str, cfg: RunConfig, card: dict, fd: dict[str, float], n: int) -> Path:
    tr = card["training"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in fd.items())
    wall = f"{tr['wall_time_s'] / 60:.1f} min"
    what, summary, intensity, users = KINDS[cfg.data.dataset]
    bench = "bench/reconstruction.py"
    if cfg.model.noise == "simplex":  # AnoDDPM's healthy model: its one use is D3
        users, bench = "D3 AnoDDPM anomaly detection (`meddiff detect --method anoddpm`)", \
            "bench/detection.py"
    encoder_note = "" if cfg.data.dataset != "head_ct_slices" else (
        "\nThe encoder was trained on MR magnitude images; on CT it is a generic feature extractor, "
        "so read the values against the reference rows (real / blurred / noisy), not as absolute "
        "quality.\n")
    text = f"""# {name}

Unconditional 2D diffusion prior (DDPM, {cfg.model.schedule} schedule, {cfg.model.num_steps} steps,
{cfg.model.parametrization}-prediction, {cfg.model.noise} noise) of {what} at {cfg.model.image_size}x{cfg.model.image_size}.
Used by: {users}. Results with it: `{bench}` (README).

- **Network**: MONAI DiffusionModelUNet, channels {list(cfg.model.net.channels)}, attention at the
  coarsest level, {card['parameters']} parameters.
- **Data**: {summary}; contrasts used: {', '.join(cfg.data.contrasts)}. Held out: the
  validation and test slabs (guard-banded).
- **Training**: {tr['steps']} steps, batch {tr['batch_size']}, AdamW lr {tr['lr']}, EMA {tr['ema_decay']},
  bf16 autocast {tr['bf16']}; wall time {wall} on {tr['machine']}; final loss {tr['final_loss']}.
- **Reproduce**: `.venv/bin/python scripts/train_zoo.py {name}` (config `configs/{name}.yaml`).
- **Intensity**: {intensity}.

## Realism (FD-MedEnc, {n} images per set, against augmented held-out test-slab images)

FD-MedEnc is the Frechet distance on features of meddiff's own encoder (not FID; no Inception
weights can be downloaded). Lower is closer; "real, training slabs" is the floor.
Complex models are compared on magnitudes.
{encoder_note}
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
    fd = realism(a.name, cfg, a.n_eval, a.seed)
    card["realism_fd_medenc"] = {"n_per_set": a.n_eval, **fd}
    write_spec(WEIGHTS_DIR / a.name, spec, card)
    print(json.dumps(card, indent=2))
    print(f"card: {write_card(a.name, cfg, card, fd, a.n_eval)}")


if __name__ == "__main__":
    main()
