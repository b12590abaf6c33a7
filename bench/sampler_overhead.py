"""Sampler overhead: wall time of a full sampling loop / (NFE x one network forward).

    .venv/bin/python bench/sampler_overhead.py        # -> bench/results/sampler_overhead.json

Same network (the bundled prior's UNet), same batch, same autocast setting for the loop and
the reference forward; the forward is timed as the median of repeated calls. A ratio of 1.00
means the loop adds nothing to the network's own cost. Target: <= 1.02.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from meddiff import api
from meddiff.core.samplers import get_sampler

OUT = Path(__file__).parent / "results" / "sampler_overhead.json"


def forward_seconds(den, x: torch.Tensor, repeats: int) -> float:
    t = torch.full((x.shape[0],), 500.0)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 2):
            t0 = time.perf_counter()
            den.net_output(x, t)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def loop_seconds(den, sampler: str, x: torch.Tensor, steps: int) -> tuple[float, int]:
    ts = den.schedule.timesteps(steps)
    nfe0 = den.nfe
    t0 = time.perf_counter()
    get_sampler(sampler)(den, x, ts, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t0, den.nfe - nfe0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=api.DEFAULT_MODEL)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    a = p.parse_args()
    model = api.load_model(a.model, device="cpu")
    den, size = model.denoiser, model.spec.image_size
    x = torch.randn(a.batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for sampler in ("ddim", "ddpm"):
        f_before = forward_seconds(den, x, 20)
        wall, nfe = loop_seconds(den, sampler, x, a.steps)
        f_after = forward_seconds(den, x, 20)
        fwd = (f_before + f_after) / 2
        rows.append({"sampler": sampler, "steps": a.steps, "nfe": nfe, "wall_s": round(wall, 3),
                     "forward_s": round(fwd, 4), "overhead": round(wall / (nfe * fwd), 4)})
        print(rows[-1])
    result = {"command": "python bench/sampler_overhead.py", "model": model.name,
              "batch": a.batch, "image_size": size, "bf16_autocast": den.autocast,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
