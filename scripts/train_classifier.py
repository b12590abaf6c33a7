"""Train the noise-aware healthy-vs-lesion classifier that guides D4 (Wolleb) and D1 (Diff-SCM).

    .venv/bin/python scripts/train_classifier.py                      # lesion-classifier-64
    .venv/bin/python scripts/train_classifier.py --steps 20 --out-dir /tmp/clf   # smoke test

The classifier (:mod:`meddiff.methods.noisy_classifier`, MONAI DiffusionModelEncoder blocks
with a timestep embedding and a global pooling head) learns ``p(lesion | x_t, t)`` on noisy
images ``x_t ~ q(x_t | x_0)`` with ``t`` from the schedule of the diffusion prior it will
guide (``--prior``, default the bundled ``brain-prior-64``: its schedule, noise and image size
are used and stored), restricted to ``t < --max-t`` (default 500, Wolleb's noise level L) with
a curriculum: the range grows from ``--t-start`` (50) over the first half of training. Uniform
``t`` over all 1000 steps left the classifier at chance after 1500 and 4000 steps: at most
steps the lesions are buried in noise and the loss gives no gradient towards them. Data
(:class:`meddiff.data.lesion_bench.ClassifierData`): training slabs only, augmented, lesion
images with the classifier lesion preset (default ``LESIONS_CLASSIFIER``: round, 4-9 mm, in
white matter, training tissue; never the benchmark's lesions), each paired with its healthy
twin (the same image without the lesion).
Validation: balanced accuracy and AUROC at several ``t`` on the benchmark's
*validation* split (its large, shifted lesions) against the same healthy sections.

Writes ``NAME.safetensors`` + ``NAME.json`` (architecture, schedule, card; no pickle) to
``--out-dir`` (default ``src/meddiff/zoo/weights/classifiers``) and the model card
``NAME.md`` to ``--card-dir`` (default ``src/meddiff/zoo/cards``; with a custom ``--out-dir``
the card goes beside the weights).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from meddiff import api
from meddiff.core.noise import get_noise
from meddiff.data.intensity import to_model
from meddiff.data.lesion_bench import (LESIONS_CLASSIFIER, ClassifierData, healthy_bench,
                                       lesion_bench)
from meddiff.data.lesions import LESIONS_EVAL, LESIONS_TRAIN
from meddiff.eval.metrics import auroc
from meddiff.methods.noisy_classifier import (CLASSIFIER_DIR, DEFAULT_CLASSIFIER, ClassifierConfig,
                                              NoisyClassifier, classifier_loss, save_classifier)
from meddiff.nets.unet import count_parameters

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"classifier": LESIONS_CLASSIFIER, "train": LESIONS_TRAIN, "eval": LESIONS_EVAL}
VAL_TIMES = (0, 100, 250, 500, 750)


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default=DEFAULT_CLASSIFIER)
    p.add_argument("--prior", default=api.DEFAULT_MODEL, help="the diffusion model to guide")
    p.add_argument("--lesions", default="classifier", choices=tuple(PRESETS))
    p.add_argument("--contrasts", nargs="+", default=["T2w", "FLAIR"])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-t", type=int, default=500,
                   help="train on t < max-t (default 500, the Wolleb level L; the classifier is "
                        "near chance above it anyway)")
    p.add_argument("--t-start", type=int, default=50,
                   help="curriculum: the t range grows linearly from t-start to max-t over the "
                        "first half of training")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(CLASSIFIER_DIR))
    p.add_argument("--card-dir", default=None)
    return p.parse_args()


@torch.no_grad()
def validate(net, schedule, noise, size: int, contrasts, seed: int, device) -> dict:
    """Balanced accuracy and AUROC of ``p(lesion | x_t, t)`` at fixed ``t`` on the benchmark's
    val split (lesion images) and the same healthy val sections."""
    sick = lesion_bench("val", contrasts, size=size).images
    healthy = healthy_bench("val", contrasts, size=size).images
    x0 = to_model(torch.cat([sick, healthy])).to(device)
    y = np.r_[np.ones(len(sick)), np.zeros(len(healthy))]
    g = torch.Generator().manual_seed(seed + 12345)
    out = {}
    for t in VAL_TIMES:
        x_t = schedule.q_sample(x0, torch.tensor(float(t)), noise(x0, g))
        p = torch.softmax(net(x_t, float(t)), 1)[:, 1].cpu().numpy()
        hit = (p > 0.5) == y
        balanced = 0.5 * (hit[y == 1].mean() + hit[y == 0].mean())
        out[str(t)] = {"balanced_accuracy": round(float(balanced), 4),
                       "auroc": round(float(auroc(p, y)), 4)}
    return out


def train(a, net, schedule, noise, size: int, device) -> tuple[list[float], float]:
    data = ClassifierData(size=size, contrasts=tuple(a.contrasts), seed=a.seed,
                          length=a.steps * a.batch, lesions=PRESETS[a.lesions])
    loader = DataLoader(data, batch_size=a.batch, shuffle=False, num_workers=a.workers)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.05)
    g = torch.Generator(device).manual_seed(a.seed)
    losses, start = [], time.perf_counter()
    net.train()
    for step, batch in enumerate(bar := tqdm(loader, desc=a.name, total=a.steps)):
        x0 = to_model(batch["image"].to(device))
        t_max = a.t_start + (a.max_t - a.t_start) * min(1.0, 2 * step / a.steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = classifier_loss(net, x0, batch["label"].to(device), schedule, g, noise,
                                   t_max=round(t_max))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    net.eval()
    return losses, time.perf_counter() - start


def write_card(path: Path, name: str, card: dict) -> Path:
    rows = "\n".join(f"| {t} | {v['balanced_accuracy']:.3f} | {v['auroc']:.3f} |"
                     for t, v in card["validation"].items())
    tr = card["training"]
    text = f"""# {name}

Noise-aware healthy-vs-lesion classifier (Wolleb et al. 2022, MICCAI, arXiv 2203.04306) that
guides the D4 (Wolleb) and D1 (Diff-SCM) anomaly detectors of `meddiff detect`.

- **Network**: MONAI DiffusionModelEncoder blocks (timestep-conditioned) + global mean/max
  pooling head, channels {card['architecture']['channels']}, {card['parameters']} parameters;
  input `x_t` in model space [-1, 1] at {card['architecture']['image_size']} px, output logits
  (0 healthy, 1 lesion).
- **Guides**: `{card['prior']}` (schedule {card['schedule']}); trained on `x_t ~ q(x_t | x_0)`
  with `t` < {card['max_t']} (curriculum from {card['t_start']}) and its `{card['noise']}` noise.
- **Data**: simulated brain MRI ({', '.join(card['contrasts'])}), training slabs only, augmented;
  lesion preset `{card['lesions']}` ({card['lesion_config']}), each paired with its healthy
  twin (the same image without the lesion). The benchmark lesions (`LESIONS_BENCH`) are never
  used for training.
- **Training**: {tr['steps']} steps, batch {tr['batch_size']}, AdamW lr {tr['lr']} (one-cycle),
  final loss {tr['final_loss']}, wall time {tr['wall_time_s'] / 60:.1f} min on {tr['machine']}.
- **Reproduce**: `{card['reproduce']}`

## Validation (benchmark val split: shifted lesions vs the same healthy sections)

| t | balanced accuracy | AUROC |
|---|---|---|
{rows}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def main() -> None:
    a = arguments()
    torch.manual_seed(a.seed)
    device = api.device_of(a.device)
    prior = api.load_model(a.prior, device="cpu")
    schedule, size = prior.denoiser.schedule, prior.spec.image_size
    noise = get_noise(prior.spec.noise)
    config = ClassifierConfig(image_size=size)
    net = NoisyClassifier(config).to(device)
    losses, wall = train(a, net, schedule, noise, size, device)
    card = {"parameters": f"{count_parameters(net) / 1e6:.2f} M",
            "architecture": {"channels": list(config.channels), "image_size": size},
            "prior": prior.name, "schedule": f"{schedule.kind}, {schedule.num_steps} steps",
            "noise": prior.spec.noise, "max_t": a.max_t, "t_start": a.t_start,
            "contrasts": list(a.contrasts), "lesions": a.lesions,
            "lesion_config": str(PRESETS[a.lesions]).replace("\n", " "),
            "training": {"steps": a.steps, "batch_size": a.batch, "lr": a.lr,
                         "final_loss": round(float(np.mean(losses[-50:])), 5),
                         "wall_time_s": round(wall, 1),
                         "machine": f"{platform.processor() or platform.machine()}, "
                                    f"{device.type}, torch {torch.__version__}"},
            "validation": validate(net, schedule, noise, size, a.contrasts, a.seed, device),
            "reproduce": f".venv/bin/python scripts/train_classifier.py --name {a.name} "
                         f"--prior {a.prior} --lesions {a.lesions} --steps {a.steps} "
                         f"--max-t {a.max_t} --t-start {a.t_start} "
                         f"--batch {a.batch} --seed {a.seed}" + (" --bf16" if a.bf16 else "")}
    json_path = save_classifier(Path(a.out_dir) / a.name, net, schedule, card)
    card_dir = Path(a.card_dir) if a.card_dir else (
        ROOT / "src/meddiff/zoo/cards" if Path(a.out_dir) == CLASSIFIER_DIR else Path(a.out_dir))
    md = write_card(card_dir / f"{a.name}.md", a.name, card)
    print(json.dumps(card["validation"], indent=2))
    print(f"wrote {json_path}, {json_path.with_suffix('.safetensors')} and {md}")


if __name__ == "__main__":
    main()
