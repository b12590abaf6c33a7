"""Train the supervised UNet reconstruction baseline (``meddiff reconstruct --method unet``).

    .venv/bin/python scripts/train_recon_unet.py mri      # ~1500 steps, minutes on 2 CPU cores
    .venv/bin/python scripts/train_recon_unet.py ct

Data: the same simulated training slabs as the diffusion priors (MRI: complex slices with
smooth phase, contrasts T1w / T2w / PDw, as ``mri-complex-64``; CT: head-CT-like slices, as
``ct-prior-64``), re-drawn every batch. Each batch gets one acquisition drawn at random from
the benchmark's settings (MRI: random or equispaced 1D masks at 4x or 8x, single-coil; CT: 30
or 60 views, or 180 views at dose 0.25). Loss: L1 between ``x = d + f(d)`` and the image,
AdamW with cosine decay, bf16 autocast. Validation PSNR (magnitude, data range 1) on the
validation slab is written to the card inside the weights file
(``meddiff/zoo/weights/supervised/recon-unet-<modality>-64.safetensors``).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from tqdm import tqdm

from meddiff.data.modalities import ComplexBrainSlices, HeadCTSlices
from meddiff.eval.metrics import psnr_batch
from meddiff.methods import unet_recon as ur
from meddiff.nets.unet import count_parameters
from meddiff.physics.mri import channels_to_complex
from meddiff.tasks import reconstruction as rt

MRI_SETTINGS = [(m, r) for m in ("random", "equispaced") for r in (4, 8)]
CT_SETTINGS = [(30, None), (60, None), (None, 0.25)]
SIZE = 64


def dataset(modality: str, split: str, seed: int, length: int | None = None):
    if modality == "mri":
        return ComplexBrainSlices(split, size=SIZE, seed=seed, length=length)
    return HeadCTSlices(split, size=SIZE, seed=seed, length=length)


def as_image(item_image: torch.Tensor, modality: str) -> torch.Tensor:
    """Dataset images (B, C, H, W) -> (B, 1, H, W) image space (complex for MRI)."""
    return channels_to_complex(item_image) if modality == "mri" else item_image


def pair(modality: str, clean: torch.Tensor, setting, seed: int):
    """(network input, target) for a batch of clean images under one acquisition setting."""
    if modality == "mri":
        op, y = rt.simulate_mri(clean, setting[0], setting[1], seed=seed)
        direct = op.A_adjoint(y)
    else:
        op, y = rt.simulate_ct(clean, setting[0], setting[1], seed=seed)
        direct = op.fbp(y)
    return ur.to_input(direct), ur.to_input(clean)


def validate(net, modality: str, settings, seed: int) -> dict[str, float]:
    ds = dataset(modality, "val", seed)
    clean = as_image(torch.stack([ds[i]["image"] for i in range(len(ds))]), modality)
    out = {}
    with torch.no_grad():
        for k, setting in enumerate(settings):
            inp, _ = pair(modality, clean, setting, seed + 1000 + k)
            rec = ur.from_output(net(inp), modality)
            mag = (rec.abs() if rec.is_complex() else rec).clamp(0, 1)
            out[str(setting)] = round(float(psnr_batch(mag, clean.abs(), 1.0).mean()), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modality", choices=("mri", "ct"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    settings = MRI_SETTINGS if a.modality == "mri" else CT_SETTINGS
    net = ur.ResidualUNet(ur.CHANNELS[a.modality])
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.05)
    ds = dataset(a.modality, "train", a.seed, length=a.steps * a.batch)
    rng = np.random.default_rng(a.seed)
    start, losses = time.perf_counter(), []
    for step in (bar := tqdm(range(a.steps), desc=f"unet {a.modality}")):
        batch = torch.stack([ds[step * a.batch + i]["image"] for i in range(a.batch)])
        setting = settings[int(rng.integers(len(settings)))]
        inp, target = pair(a.modality, as_image(batch, a.modality), setting, a.seed + step)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (net(inp).float() - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    wall = time.perf_counter() - start
    net.eval()
    card = {"parameters": f"{count_parameters(net) / 1e6:.2f} M", "steps": a.steps,
            "batch_size": a.batch, "lr": a.lr, "final_loss": round(float(np.mean(losses[-50:])), 5),
            "wall_time_s": round(wall, 1), "settings": [str(s) for s in settings],
            "val_psnr": validate(net, a.modality, settings, a.seed),
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} threads, torch {torch.__version__}",
            "reproduce": f".venv/bin/python scripts/train_recon_unet.py {a.modality} "
                         f"--steps {a.steps} --seed {a.seed}"}
    path = ur.weights_path(a.modality, SIZE)
    ur.save(path, net, a.modality, card)
    print(f"wrote {path}: {card}")


if __name__ == "__main__":
    main()
