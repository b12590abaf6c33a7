"""Sampler overhead: wall time of a full sampling loop / (NFE x one network forward).

    .venv/bin/python bench/sampler_overhead.py        # -> bench/results/sampler_overhead.json

Same network (the bundled prior's UNet), same batch, same autocast setting for the loop and
the reference forward; the forward is timed as the mean of as many back-to-back calls as the
loop makes, before and after the loop. A ratio of 1.00
means the loop adds nothing to the network's own cost; the median over ``--repeats`` runs is
reported. Target: <= 1.02.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from meddiff import api
from meddiff.core.samplers import get_sampler

OUT = Path(__file__).parent / "results" / "sampler_overhead.json"


def forward_seconds(den, x: torch.Tensor, calls: int) -> float:
    """Mean seconds of one network forward over ``calls`` back-to-back calls (after 2 warm-up
    calls), timed like the sampling loop: total wall time / calls."""
    t = torch.full((x.shape[0],), 500.0)
    with torch.no_grad():
        for _ in range(2):
            den.net_output(x, t)
        t0 = time.perf_counter()
        for _ in range(calls):
            den.net_output(x, t)
    return (time.perf_counter() - t0) / calls


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
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    model = api.load_model(a.model, device="cpu")
    den, size = model.denoiser, model.spec.image_size
    x = torch.randn(a.batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for sampler in ("ddim", "ddpm"):
        runs = []
        for _ in range(a.repeats):  # the machine is shared: repeat and keep the median ratio
            f_before = forward_seconds(den, x, a.steps)
            wall, nfe = loop_seconds(den, sampler, x, a.steps)
            f_after = forward_seconds(den, x, a.steps)
            fwd = (f_before + f_after) / 2
            runs.append({"wall_s": round(wall, 3), "forward_s": round(fwd, 4),
                         "overhead": round(wall / (nfe * fwd), 4)})
        runs.sort(key=lambda r: r["overhead"])
        rows.append({"sampler": sampler, "steps": a.steps, "nfe": nfe, **runs[len(runs) // 2],
                     "overhead_all_repeats": [r["overhead"] for r in runs]})
        print(rows[-1])
    result = {"command": "python bench/sampler_overhead.py", "model": model.name,
              "batch": a.batch, "image_size": size, "bf16_autocast": den.autocast,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
