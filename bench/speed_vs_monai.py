"""Training and sampling throughput: meddiff's Trainer / sampler against a plain MONAI loop.

    .venv/bin/python bench/speed_vs_monai.py          # -> bench/results/speed_vs_monai.json

Both sides use the same UNet architecture (the bundled prior's), the same initial weights, the
same data (built-in brain slices, batch 16) and AdamW. The MONAI side is the textbook loop of
MONAI Generative's tutorials: ``DiffusionInferer`` + ``DDPMScheduler`` in float32 for training,
``DiffusionInferer.sample`` with ``DDIMScheduler`` (50 steps) for sampling. meddiff runs its
defaults: bf16 autocast, EMA, gradient clipping, its own DDIM loop. Target: >= 1.8x.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch.utils.data import DataLoader

from meddiff.core.samplers import generate
from meddiff.train.run import load_run_config, make_objective
from meddiff.train.trainer import Trainer
from meddiff.zoo.store import build_denoiser

OUT = Path(__file__).parent / "results" / "speed_vs_monai.json"
ROOT = Path(__file__).resolve().parents[1]


def monai_training(net, data, steps: int) -> float:
    """Steps per second of the plain MONAI loop (fp32), data loading included."""
    inferer = DiffusionInferer(DDPMScheduler(num_train_timesteps=1000))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for _, batch in zip(range(steps), loader):
        images = batch["image"] * 2 - 1
        noise = torch.randn_like(images)
        t = torch.randint(0, 1000, (images.shape[0],)).long()
        pred = inferer(inputs=images, diffusion_model=net, noise=noise, timesteps=t)
        loss = F.mse_loss(pred.float(), noise.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def meddiff_training(net, cfg, data, steps: int) -> float:
    """Steps per second of meddiff's Trainer (bf16, EMA, clipping, progress bar, final
    checkpoint), data loading included."""
    with tempfile.TemporaryDirectory() as tmp:
        tcfg = replace(cfg.train, out_dir=tmp, steps=steps, ckpt_every=10 ** 6)
        t0 = time.perf_counter()
        Trainer(net, make_objective(cfg).updates(), data, tcfg).fit()
        return steps / (time.perf_counter() - t0)


@torch.no_grad()
def monai_sampling(net, n: int, size: int, steps: int) -> float:
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(num_inference_steps=steps)
    inferer = DiffusionInferer(scheduler)
    noise = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    inferer.sample(input_noise=noise, diffusion_model=net, scheduler=scheduler, verbose=False)
    return n / (time.perf_counter() - t0)


def meddiff_sampling(den, n: int, size: int, steps: int) -> float:
    t0 = time.perf_counter()
    generate(den, (n, 1, size, size), sampler="ddim", steps=steps, generator=torch.Generator().manual_seed(0))
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--n", type=int, default=16)
    a = p.parse_args()
    cfg = load_run_config(ROOT / "configs" / "brain-prior-64.yaml")
    data = make_objective(cfg).dataset()
    torch.manual_seed(0)
    base = build_denoiser(cfg.model)
    size = cfg.model.image_size
    ours_train = meddiff_training(copy.deepcopy(base.net), cfg, data, a.train_steps)
    monai_train = monai_training(copy.deepcopy(base.net), data, a.train_steps)
    base.net.eval()
    monai_sample = monai_sampling(base.net, a.n, size, a.sample_steps)
    base.autocast = True
    ours_sample = meddiff_sampling(base, a.n, size, a.sample_steps)
    result = {"command": "python bench/speed_vs_monai.py", "image_size": size, "batch": 16,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "train_steps": a.train_steps,
              "training_steps_per_s": {"monai_fp32": round(monai_train, 3), "meddiff_bf16": round(ours_train, 3),
                                       "speedup": round(ours_train / monai_train, 2)},
              "sampling_images_per_s": {"monai_fp32_ddim": round(monai_sample, 3),
                                        "meddiff_bf16_ddim": round(ours_sample, 3),
                                        "speedup": round(ours_sample / monai_sample, 2),
                                        "steps": a.sample_steps, "n": a.n}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
