"""Train G2 (Wolleb et al. 2022, MIDL): the conditional mask DDPM, and the supervised UNet baseline.

    .venv/bin/python scripts/train_segmentation.py ddpm   # conditional mask DDPM, <= ~19 min
    .venv/bin/python scripts/train_segmentation.py unet   # MONAI BasicUNet, Dice + BCE, ~8 min

Data (both models, identical stream): T2w and FLAIR slices of the axial training slabs with
0-2 lesions of the benchmark's family (``SEG_LESIONS``: radius 6-12 mm, long-T2 tissue),
augmented (warp, bias, gamma, Rician noise), 64 x 64, image space [0, 1]; target the lesion
mask. The DDPM takes the noised mask and the image as two input channels and predicts the clean
mask (``--parametrization``, default x0), 1000 linear steps, EMA; the UNet maps the image to
mask logits. Both AdamW + bf16 autocast, warm-up +
cosine learning rate over ``max(step / steps, time / minutes)`` (see ``train_latent.py``).

Validation (written to the card): Dice of mean >= 0.5 on the first ``--n-val`` items of the
lesion benchmark's validation split (``lesion_bench('val')``, T2w / FLAIR); for the DDPM a quick
ensemble of 4 samples x 20 DDIM steps, and the variance-error correlation.
Weights: ``src/meddiff/zoo/weights/segmentation/seg-{ddpm,unet}-64.*`` (safetensors + JSON, no
pickle); cards: ``src/meddiff/zoo/cards/seg-{ddpm,unet}-64.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from meddiff.data.datasets import BrainSlices
from meddiff.data.lesion_bench import lesion_bench
from meddiff.eval.metrics import dice
from meddiff.methods import segmentation as sg
from meddiff.nets.unet import count_parameters
from meddiff.train.ema import EMA
from meddiff.zoo.store import build_denoiser, save_model
from train_latent import CARDS, SIZE, Budget, _step, machine, write_card

DATA = ("T2w and FLAIR simulated brain MRI slices of the axial training slabs (MNI152 anatomy, "
        "augmented: warp, bias field, gamma, Rician noise) with 0-2 synthetic white-matter "
        "lesions of the lesion benchmark's family (SEG_LESIONS: radius 6-12 mm, long-T2 tissue), "
        "64 x 64, image space [0, 1]; target: the lesion mask")


def batch_at(ds: BrainSlices, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[step * size + i] for i in range(size)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["lesion"] for it in items])


def val_set(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` items of the lesion benchmark's validation split (T2w and FLAIR,
    LESIONS_BENCH lesions on the validation slab; every item has a lesion)."""
    bench = lesion_bench("val", contrasts=sg.SEG_CONTRASTS)
    return bench.images[:n], bench.lesions[:n].float()


def dice_scores(prob: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    per = [dice(p[0].numpy() >= 0.5, g[0].numpy() > 0.5) for p, g in zip(prob, gt)]
    return {"val_dice_mean": round(float(np.mean(per)), 4), "val_dice_std": round(float(np.std(per)), 4),
            "val_slices": len(per)}


def train_loop(a, params, loss_fn, desc: str, on_step=None) -> tuple[int, list[float], float]:
    ds = BrainSlices("train", size=SIZE, contrasts=sg.SEG_CONTRASTS, augment=True,
                     lesions=sg.SEG_LESIONS, seed=a.seed, length=a.steps * a.batch)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-4)
    budget, hist, step = Budget(a.steps, a.minutes, a.lr), [], 0
    with tqdm(total=a.steps, desc=desc) as bar:
        while step < a.steps and budget.progress(step) < 1.0:
            x, m = batch_at(ds, step, a.batch)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn(x, m)
            _step(opt, loss, budget, step)
            if on_step is not None:
                on_step()
            hist.append(float(loss.detach()))
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(hist[-50:]):.4f}")
    return step, hist, budget.elapsed()


def common_card(a, net, step: int, hist: list[float], wall: float) -> dict:
    return {"parameters": f"{count_parameters(net) / 1e6:.2f} M", "steps": step,
            "batch_size": a.batch, "lr": a.lr, "final_loss": round(float(np.mean(hist[-50:])), 5),
            "wall_time_s": round(wall, 1), "machine": machine()}


def train_ddpm(a: argparse.Namespace) -> None:
    torch.manual_seed(a.seed)
    spec = sg.seg_spec(a.parametrization)
    den = build_denoiser(spec, autocast=True)
    ema = EMA(den.net, a.ema)
    gen = torch.Generator().manual_seed(a.seed)
    step, hist, wall = train_loop(a, den.net.parameters(),
                                  lambda x, m: sg.seg_diffusion_loss(den, x, m, gen),
                                  "mask ddpm", lambda: ema.update(den.net))
    ema.copy_to(den.net)
    den.net.eval().requires_grad_(False)
    x, gt = val_set(a.n_val)
    res = sg.segment(den, x, n_samples=4, sampler="ddim", steps=20, seed=a.seed)
    card = {**common_card(a, den.net, step, hist, wall), "ema_decay": a.ema,
            "parametrization": a.parametrization, "validation": {
                **dice_scores(res.mean, gt), "ensemble": "4 samples x 20 DDIM steps",
                "var_error_correlation": round(sg.uncertainty_error_correlation(res.var, res.mean, gt), 4)},
            "reproduce": f".venv/bin/python scripts/train_segmentation.py ddpm --steps {step} "
                         f"--minutes 0 --seed {a.seed}"}
    path = save_model(a.weights_dir / sg.DDPM_NAME, den.net, spec, card)
    md = write_card(sg.DDPM_NAME, "G2 (Wolleb et al. 2022, MIDL): conditional DDPM generating a "
                    "lesion mask given the image; N samples -> mean mask + variance map.", [
                        f"**Network**: MONAI DiffusionModelUNet (prior64 preset), input = noised "
                        f"mask (+) image, output 1 channel; {a.parametrization}-prediction, linear "
                        "schedule, 1000 steps, x0 clipped to [-1, 1].",
                        f"**Data**: {DATA}.",
                        "**Use**: `meddiff segment --input FILE --samples 8 --out mask.nii.gz`; "
                        "`meddiff.methods.segmentation.segment`.",
                        "**Validation**: lesion_bench('val') T2w/FLAIR items, Dice of mean >= 0.5 "
                        "(quick ensemble; the benchmark is separate)."], card, a.cards)
    print(f"wrote {path} and {md}: {card}")


def train_unet(a: argparse.Namespace) -> None:
    torch.manual_seed(a.seed)
    net = sg.build_seg_unet()
    loss = sg.unet_loss()
    step, hist, wall = train_loop(a, net.parameters(),
                                  lambda x, m: loss(net(x * 2 - 1).float(), m), "seg unet")
    net.eval().requires_grad_(False)
    x, gt = val_set(a.n_val)
    card = {**common_card(a, net, step, hist, wall), "loss": "DiceCELoss(sigmoid=True)",
            "validation": dice_scores(sg.unet_segment(net, x), gt),
            "reproduce": f".venv/bin/python scripts/train_segmentation.py unet --steps {step} "
                         f"--minutes 0 --seed {a.seed}"}
    path = sg.save_seg_unet(a.weights_dir / f"{sg.UNET_NAME}.safetensors", net, card)
    md = write_card(sg.UNET_NAME, "G2 baseline: supervised MONAI BasicUNet lesion segmentation "
                    "(Dice + BCE), same data as seg-ddpm-64.", [
                        f"**Network**: BasicUNet features {list(sg.UNET_FEATURES)}, image in model "
                        "space [-1, 1] -> mask logits.",
                        f"**Data**: {DATA}.",
                        "**Use**: `meddiff.methods.segmentation.load_seg_unet` + `unet_segment`."],
                    card, a.cards)
    print(f"wrote {path} and {md}: {card}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=("ddpm", "unet"))
    p.add_argument("--steps", type=int, default=None, help="default 2400 (ddpm) / 3000 (unet)")
    p.add_argument("--minutes", type=float, default=18.0, help="wall-time cap (0: none)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="default 4e-4 (ddpm) / 1e-3 (unet)")
    p.add_argument("--ema", type=float, default=0.995, help="EMA decay (ddpm)")
    p.add_argument("--parametrization", default="x0", choices=("eps", "x0", "v"))
    p.add_argument("--n-val", type=int, default=48, help="validation slices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights-dir", type=Path, default=sg.SEG_DIR,
                   help="where the weights go (default: the bundled folder); cards go to "
                        "zoo/cards for the default, else beside the weights")
    a = p.parse_args()
    ddpm = a.model == "ddpm"
    a.steps = a.steps or (2400 if ddpm else 3000)
    a.lr = a.lr or (4e-4 if ddpm else 1e-3)
    a.cards = CARDS if a.weights_dir == sg.SEG_DIR else a.weights_dir
    (train_ddpm if ddpm else train_unet)(a)


if __name__ == "__main__":
    main()
