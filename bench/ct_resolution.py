"""CT at native resolution: sparse-view and low-dose head CT at 64 / 128 / 256 px, old vs new
head-CT prior in one run (issue #9).

    .venv/bin/python bench/ct_resolution.py          # -> bench/results/ct_resolution.{json,md},
                                                     #    docs/figures/resolution_ct.png
    .venv/bin/python bench/ct_resolution.py --quick  # smoke run (bench/results/quick/)

Protocol: ``bench/resolution.py``'s, on head-CT-like slices (``HeadCTSlices``) of the held-out
*test* slab rendered at each size (2.95 / 1.48 / 0.74 mm pixels, one 189 mm field of view) and
parallel-beam CT with 60 views over 180 degrees (noiseless); at 64 px also 30 views and 180
views at a quarter dose (transmission Poisson noise; the diffusion methods use the
noise-aware consistency of ``bench/noisy.py``). Rows: FBP, CS-TV (weight tuned per size on
validation slices), the supervised UNet (trained at 64 px, applied as it is), and per prior
MCG at full length and its CCDF warm start from FBP (VE noise 0.72, <= 20 NFE).
``gain_vs_cs_db``: PSNR minus CS-TV's at the same size. No targets: the issue's targets are
MRI's (``bench/resolution.py``).
"""
from __future__ import annotations

import time

from common import write_results
from meddiff.data.writers import atomic_write
from resolution import (ROOT, _table, diffusion_specs, figure, load_priors, parse, results_doc,
                        run_size)

MAIN = {"modality": "ct", "views": 60, "dose": None}
EXTRA = [{"modality": "ct", "views": 30, "dose": None},
         {"modality": "ct", "views": None, "dose": 0.25}]
TITLE = "CT 60 views"


def markdown(doc: dict) -> str:
    return "\n\n".join([
        _table(doc["sizes"], f"{TITLE}, native resolution (test slices: "
               + ", ".join(f"{g['size']} px: {g['test_slices']}" for g in doc["sizes"]) + ")"),
        *([_table(doc["other_settings"], "Other CT settings, 64 px")]
          if doc["other_settings"] else [])]) + "\n"


def main() -> None:
    a = parse(description=__doc__.splitlines()[0], models=["ct-prior-64", "ct-prior-native"],
              methods=["mcg"], skip=["ct-prior-64@256"])  # its attention: ~7 s per evaluation
    start = time.perf_counter()
    priors, skipped = load_priors(a.models, a.device)
    specs = diffusion_specs(a)
    groups, tables = [], {}
    for size in a.sizes:
        group, tables[size] = run_size(size, priors, specs, a, MAIN)
        groups.append(group)
    extra = [] if a.quick else [run_size(64, priors, specs, a, s)[0] for s in EXTRA]
    out = ROOT / "bench" / "results" / ("quick" if a.quick else "")
    fig_dir = out if a.quick else ROOT / "docs" / "figures"
    fig = figure(fig_dir / "resolution_ct.png", groups[-1], tables[a.sizes[-1]], priors, specs,
                 TITLE)
    doc = results_doc("ct_resolution.py", TITLE, a, priors, skipped, specs, groups, extra, fig,
                      start)
    atomic_write(out / "ct_resolution.md", lambda fh: fh.write(markdown(doc).encode()))
    write_results(out / "ct_resolution.json", doc, fig)


if __name__ == "__main__":
    main()
