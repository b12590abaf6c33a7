"""Train D2 (Pinaya et al. 2022, latent-diffusion anomaly detection): autoencoder, then latent DDPM.

    .venv/bin/python scripts/train_latent.py ae      # stage 1: KL autoencoder, <= ~19 min
    .venv/bin/python scripts/train_latent.py ddpm    # stage 2: DDPM on its latents, <= ~19 min

Data: healthy simulated slices of the training slabs, all four contrasts, augmented (warp, bias,
gamma, Rician noise), 64 x 64, image space [0, 1] (:class:`meddiff.data.datasets.BrainSlices`).
Stage 1: L1 + 1e-6 KL (no perceptual / adversarial loss), AdamW, bf16 autocast; the latent
scale (1 / std of the latents over 2048 training images) is stored with the weights. Stage 2
encodes ``--n-latents`` augmented training images once and trains an eps-prediction DDPM
(1000 linear steps) on the scaled latents with EMA.

Training stops at ``--steps`` or after ``--minutes`` of wall time, whichever comes first; the
learning rate follows warm-up + cosine decay over that progress, so a time-capped run still
ends annealed (the card records the steps actually done; ``--minutes 0`` disables the cap).
Weights: ``src/meddiff/zoo/weights/latent/latent-{ae,ddpm}-64.*`` (safetensors + JSON metadata,
no pickle); cards: ``src/meddiff/zoo/cards/latent-{ae,ddpm}-64.md``.
"""
from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from meddiff.core.losses import diffusion_loss
from meddiff.data.datasets import BrainSlices
from meddiff.data.lesion_bench import lesion_bench
from meddiff.eval.metrics import auroc, psnr_batch
from meddiff.methods import latent as lt
from meddiff.nets.unet import count_parameters
from meddiff.train.ema import EMA
from meddiff.zoo.store import build_denoiser

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "src" / "meddiff" / "zoo" / "cards"
SIZE = 64
DATA = ("healthy simulated brain MRI slices (MNI152 anatomy, T1w/T2w/PDw/FLAIR, augmented: warp, "
        "bias field, gamma, Rician noise), axial training slabs only, 64 x 64, image space [0, 1]")


class Budget:
    """Progress ``max(step / steps, elapsed / (minutes * 60))`` in [0, 1] and the learning rate
    at that progress: linear warm-up over the first 5 %, then cosine decay to 5 % of ``lr``."""

    def __init__(self, steps: int, minutes: float, lr: float):
        self.steps, self.seconds, self.lr = steps, minutes * 60.0, lr
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def progress(self, step: int) -> float:
        p = step / self.steps
        return max(p, self.elapsed() / self.seconds) if self.seconds > 0 else p

    def rate(self, step: int) -> float:
        p = min(self.progress(step), 1.0)
        if p < 0.05:
            return self.lr * max(p / 0.05, 0.02)
        return self.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (p - 0.05) / 0.95)))


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def images(split: str, n: int, seed: int, augment: bool, **kw) -> dict[str, torch.Tensor]:
    ds = BrainSlices(split, size=SIZE, augment=augment, seed=seed, length=n if split == "train"
                     else None, **kw)
    n = min(n, len(ds))
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "brain", "lesion")}


def write_card(name: str, title: str, lines: list[str], card: dict, where: Path = CARDS) -> Path:
    facts = "\n".join(f"| {k} | {v} |" for k, v in card.items() if not isinstance(v, dict))
    nested = "\n".join(f"| {k}.{kk} | {vv} |" for k, v in card.items() if isinstance(v, dict)
                       for kk, vv in v.items())
    text = f"# {name}\n\n{title}\n\n" + "\n".join(f"- {ln}" for ln in lines) + \
        f"\n\n| fact | value |\n|---|---|\n{facts}\n{nested}\n"
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def _step(opt, loss, budget: Budget, step: int) -> None:
    for g in opt.param_groups:
        g["lr"] = budget.rate(step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ------------------------------------------------------------------------------ stage 1
@torch.no_grad()
def validate_ae(codec: lt.LatentCodec, seed: int) -> dict[str, float]:
    val = images("val", 10 ** 6, seed, augment=False)
    rec = codec.decode(codec.encode(val["image"]))
    return {"val_psnr_db": round(float(psnr_batch(rec, val["image"], 1.0).mean()), 2),
            "val_l1": round(float((rec - val["image"]).abs().mean()), 5), "val_images": len(rec)}


def train_ae(a: argparse.Namespace) -> None:
    torch.manual_seed(a.seed)
    cfg = lt.AEConfig()
    ae = lt.build_autoencoder(cfg)
    opt = torch.optim.AdamW(ae.parameters(), lr=a.lr, weight_decay=1e-4)
    ds = BrainSlices("train", size=SIZE, augment=True, seed=a.seed, length=a.steps * a.batch)
    gen = torch.Generator().manual_seed(a.seed)
    budget, hist, step = Budget(a.steps, a.minutes, a.lr), [], 0
    with tqdm(total=a.steps, desc="latent autoencoder") as bar:
        while step < a.steps and budget.progress(step) < 1.0:
            x = torch.stack([ds[step * a.batch + i]["image"] for i in range(a.batch)])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, parts = lt.autoencoder_loss(ae, x, a.kl_weight, gen)
            _step(opt, loss, budget, step)
            hist.append(parts["l1"])
            step += 1
            bar.update()
            bar.set_postfix(l1=f"{np.mean(hist[-50:]):.4f}", kl=f"{parts['kl']:.0f}")
    wall = budget.elapsed()
    ae.eval().requires_grad_(False)
    scale = lt.latent_scale(ae, images("train", 2048, a.seed + 1, augment=True)["image"])
    codec = lt.LatentCodec(ae, scale)
    card = {"parameters": f"{count_parameters(ae) / 1e6:.2f} M", "steps": step, "batch_size": a.batch,
            "lr": a.lr, "kl_weight": a.kl_weight, "final_l1": round(float(np.mean(hist[-50:])), 5),
            "latent_scale": round(scale, 6), "wall_time_s": round(wall, 1), "machine": machine(),
            **validate_ae(codec, a.seed),
            "reproduce": f".venv/bin/python scripts/train_latent.py ae --steps {step} --minutes 0 "
                         f"--seed {a.seed}"}
    path = lt.save_autoencoder(a.weights_dir / f"{lt.AE_NAME}.safetensors", ae, cfg, scale, card)
    md = write_card(lt.AE_NAME, "Stage 1 of D2 (Pinaya et al. 2022): KL autoencoder 64 x 64 x 1 -> "
                    "16 x 16 x 3 of healthy brain MRI.", [
                        "**Network**: MONAI AutoencoderKL, channels (32, 64, 64), 1 residual block "
                        "per level, no attention, 3 latent channels.",
                        f"**Data**: {DATA}.",
                        "**Loss**: L1 (model space [-1, 1]) + KL x kl_weight; no perceptual loss.",
                        "**Use**: `meddiff.methods.latent.load_detector()`; residual baseline "
                        "`ae_residual`.",
                        "Stage 2 (`latent-ddpm-64`) must be retrained after retraining this."],
                    card, a.cards)
    print(f"wrote {path} and {md}: {card}")


# ------------------------------------------------------------------------------ stage 2
@torch.no_grad()
def encode_all(codec: lt.LatentCodec, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([codec.encode(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def val_loss(den, z: torch.Tensor, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    return round(float(np.mean([float(diffusion_loss(den, z, gen)) for _ in range(8)])), 5)


def val_detection(det: lt.LatentDetector, seed: int, n: int) -> dict:
    """Pixel AUROC (brain pixels, pooled) on the first ``n`` FLAIR items of the lesion
    benchmark's validation split: a sanity number, not the benchmark (bench/detection.py)."""
    x, gt, brain = lesion_bench("val", contrasts=("FLAIR",))
    x, gt, inside = x[:n], gt[:n], brain[:n]
    out = {"val_slices": int(len(x))}
    maps = {"ae_residual": lt.ae_residual(det.codec, x),
            "latent_input": lt.anomaly_map(det, x, seed=seed),
            "latent_reconstruction": lt.anomaly_map(det, x, seed=seed, reference="reconstruction")}
    for k, m in maps.items():
        out[f"auroc_{k}"] = round(auroc(m[inside].numpy(), gt[inside].numpy()), 4)
    start = time.perf_counter()
    lt.anomaly_map(det, x[:1], seed=seed)
    out["seconds_per_image"] = round(time.perf_counter() - start, 3)
    return out


def train_ddpm(a: argparse.Namespace) -> None:
    torch.manual_seed(a.seed)
    codec, _ = lt.load_autoencoder(a.weights_dir / f"{lt.AE_NAME}.safetensors")
    z = encode_all(codec, images("train", a.n_latents, a.seed + 2, augment=True)["image"])
    z_val = encode_all(codec, images("val", 10 ** 6, a.seed, augment=False)["image"])
    print(f"{len(z)} training latents {tuple(z.shape[1:])}, std {float(z.std()):.3f}")
    spec = lt.latent_spec()
    den = build_denoiser(spec, autocast=True)
    ema = EMA(den.net, a.ema)
    opt = torch.optim.AdamW(den.net.parameters(), lr=a.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(a.seed)
    budget, hist, step = Budget(a.steps, a.minutes, a.lr), [], 0
    with tqdm(total=a.steps, desc="latent ddpm") as bar:
        while step < a.steps and budget.progress(step) < 1.0:
            idx = torch.randint(len(z), (a.batch,), generator=gen)
            loss = diffusion_loss(den, z[idx], gen)
            _step(opt, loss, budget, step)
            ema.update(den.net)
            hist.append(float(loss.detach()))
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(hist[-100:]):.4f}")
    wall = budget.elapsed()
    ema.copy_to(den.net)
    den.net.eval().requires_grad_(False)
    card = {"parameters": f"{count_parameters(den.net) / 1e6:.2f} M", "steps": step,
            "batch_size": a.batch, "lr": a.lr, "ema_decay": a.ema, "training_latents": len(z),
            "final_loss": round(float(np.mean(hist[-100:])), 5), "val_loss": val_loss(den, z_val, 1),
            "wall_time_s": round(wall, 1), "machine": machine(),
            "autoencoder": f"{lt.AE_NAME} (latent scale {codec.scale:.6g})",
            "reproduce": f".venv/bin/python scripts/train_latent.py ddpm --steps {step} "
                         f"--minutes 0 --seed {a.seed}"}
    target = a.weights_dir / lt.DDPM_NAME
    path = lt.save_latent_ddpm(target, den.net, spec, codec.scale, card)
    det = lt.load_detector(a.weights_dir / f"{lt.AE_NAME}.safetensors", path)
    card["val_detection"] = val_detection(det, a.seed + 5, a.n_val)
    lt.save_latent_ddpm(target, den.net, spec, codec.scale, card)
    md = write_card(lt.DDPM_NAME, "Stage 2 of D2 (Pinaya et al. 2022): DDPM on the scaled "
                    f"16 x 16 x 3 latents of {lt.AE_NAME}.", [
                        "**Network**: MONAI DiffusionModelUNet, channels (64, 128, 128), attention "
                        "at 8 x 8 and 4 x 4; eps-prediction, linear schedule, 1000 steps, no x0 clip.",
                        f"**Data**: latents of {DATA}; scaled to unit std.",
                        f"**Detection defaults**: partial diffusion to t in {list(lt.DEFAULT_T)}, "
                        f"{lt.DEFAULT_STEPS} DDIM steps each, residuals averaged, Gaussian "
                        f"sigma {lt.DEFAULT_SMOOTH_PX} px.",
                        "**val_detection**: pooled brain-pixel AUROC on FLAIR items of "
                        "lesion_bench('val') (sanity check; the benchmark is separate)."],
                    card, a.cards)
    print(f"wrote {path} and {md}: {card}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=("ae", "ddpm"))
    p.add_argument("--steps", type=int, default=None, help="default 5000 (ae) / 8000 (ddpm)")
    p.add_argument("--minutes", type=float, default=18.0, help="wall-time cap (0: none)")
    p.add_argument("--batch", type=int, default=None, help="default 16 (ae) / 32 (ddpm)")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (ae) / 4e-4 (ddpm)")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--n-latents", type=int, default=16384, help="stage 2 training images")
    p.add_argument("--n-val", type=int, default=48, help="stage 2 validation slices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights-dir", type=Path, default=lt.LATENT_DIR,
                   help="where the weights go (default: the bundled folder); cards go to "
                        "zoo/cards for the default, else beside the weights")
    a = p.parse_args()
    a.cards = CARDS if a.weights_dir == lt.LATENT_DIR else a.weights_dir
    ae = a.stage == "ae"
    a.steps = a.steps or (5000 if ae else 8000)
    a.batch = a.batch or (16 if ae else 32)
    a.lr = a.lr or (1e-3 if ae else 4e-4)
    (train_ae if ae else train_ddpm)(a)


if __name__ == "__main__":
    main()
