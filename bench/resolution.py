"""Resolution benchmark: MRI reconstruction at native resolution, 64 / 128 / 256 px (issue #9).

    .venv/bin/python bench/resolution.py                 # -> bench/results/resolution.{json,md},
                                                         #    docs/figures/resolution.png
    .venv/bin/python bench/resolution.py --quick         # smoke run (bench/results/quick/)
    .venv/bin/python bench/resolution.py --models brain-prior-64 runs/brain-prior-native

Protocol. One setting: MRI 4x random (1D random mask), single coil, magnitude images, the
acquisition and metrics of ``bench/reconstruction.py`` (its helpers are imported, not copied).
- Data: per size S in ``--sizes`` (64, 128, 256 px: 2.95 / 1.48 / 0.74 mm pixels of the same
  189 mm field of view), ``--n-slices`` fixed-seed slices (``--n-slices-256`` at >= 256 px,
  which costs ~16x 64 px) of the held-out *test* slab over all four contrasts, rendered at S
  (native pixel size, no crop, no resampling of the outputs). CS-TV's weight is tuned per size
  on slices of the *validation* slab.
- Rows: zero-filled, CS-TV, the supervised UNet (trained at 64 px; fully convolutional, applied
  as it is at every size) and, for every prior in ``--models`` (a bundled name or a training
  run directory; one that cannot be loaded is skipped with a note), each diffusion method at
  the full length of ``bench/reconstruction.py`` (``--methods``, default MCG and score-MRI)
  and its CCDF warm start from zero-filled (``--ccdf``, ``t0 = 200``, <= 20 NFE). The priors
  are fully convolutional and run on the S x S grid directly. ``gain_vs_cs_db``: PSNR minus
  CS-TV's at the same size.
- Robustness (64 px, as ``bench/reconstruction.py``): an unseen contrast, coronal and sagittal
  views and a finer resolution (1.97 mm, cropped), CS-TV weight of the 64 px tuning; rows
  CS-TV, UNet and every prior's diffusion methods.
- Other settings (64 px, where today's gains were measured): 8x random and 4x equispaced.
- Targets, per prior: (a) every diffusion row that beats CS-TV at 64 px beats it by >= 3 dB at
  every larger size; (b) the finer-resolution robustness row of the best diffusion method (the
  highest PSNR at 64 px) beats CS-TV; (c) that method's in-distribution gain at 64 px is
  >= +5.1 dB; (d) the best row at 8x random gains >= +4.2 dB and (e) at 4x equispaced >= +4
  dB.
PSNR / SSIM (data range 1) are means over slices; NFE per image; seconds are wall time per
slice. Method options are fixed defaults, not tuned per size or prior.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from common import run_header, write_results
from meddiff import api
from meddiff.data.datasets import BrainSlices
from meddiff.data.modalities import HeadCTSlices
from meddiff.data.writers import atomic_write
from meddiff.errors import MeddiffError
from reconstruction import MRI_4X_RANDOM as SETTING
from reconstruction import (CCDF, FULL, QUICK_CCDF, QUICK_FULL, T0_NOISE, Table, panel,
                            robustness_sets, subset, t0_of, tune_cs)
from reconstruction import label as setting_label

ROOT = Path(__file__).resolve().parents[1]
SETTING_LABEL = "MRI 4x random single-coil"
FINER = "finer resolution (1.97 mm, cropped)"
UNSEEN = "unseen contrast (heavy T2, TE 200 ms)"
GAIN_AT_FINER_DB = 3.0  # target (a)
GAIN_AT_64_DB = 5.1  # target (c)
GAIN_8X_DB, GAIN_EQUI_DB = 4.2, 4.0  # targets (d), (e)


# ------------------------------------------------------------------------------ data / models
def native_images(split: str, size: int, n: int, seed: int,
                  modality: str = "mri") -> tuple[torch.Tensor, float]:
    """``n`` fixed-seed slices (N, 1, size, size) in [0, 1] of ``split`` (MRI: over all
    contrasts; CT: head-CT-like), rendered at ``size`` (the same selection as
    ``reconstruction.mri_images`` / ``ct_images`` + ``subset``), and the pixel size in mm."""
    ds = (HeadCTSlices if modality == "ct" else BrainSlices)(split, size=size, augment=False)
    idx = subset(torch.arange(len(ds)), n, seed).tolist()
    return torch.stack([ds[i]["image"] for i in idx]), float(ds.spacing_mm)


def load_priors(names: list[str], device: str) -> tuple[dict, list[dict]]:
    """label -> loaded prior for every loadable name; the skipped ones with the reason."""
    priors, skipped = {}, []
    for name in names:
        try:
            model = api.load_model(name, device=device)
        except (MeddiffError, OSError, ValueError) as exc:
            print(f"skipping model {name}: {exc}", flush=True)
            skipped.append({"model": name, "reason": str(exc)})
            continue
        label = Path(model.name).name
        priors[label if label not in priors else name] = model
    return priors, skipped


def diffusion_specs(a) -> list[tuple[str, str, int, dict, bool]]:
    """(row name, method, steps, options, warm start) of the diffusion rows of one prior."""
    specs = []
    for m in a.methods:
        steps, opts = QUICK_FULL.get(m, (4, FULL[m][1])) if a.quick else FULL[m]
        specs.append((m, m, steps, opts, False))
    for m in a.ccdf:
        steps, opts = QUICK_CCDF.get(m, (2, CCDF[m][1])) if a.quick else CCDF[m]
        specs.append((f"{m} CCDF", m, steps, opts, True))
    return specs


# ------------------------------------------------------------------------------ running
def add_diffusion(table: Table, priors: dict, specs: list, skip: tuple = ()) -> None:
    """Every prior's diffusion rows (``"method [prior]"``), with ``gain_vs_cs_db``; priors
    whose label is in ``skip`` are left out."""
    cs = next(r for r in table.rows if r["method"] == "CS-TV")["psnr"]
    for label, model in priors.items():
        if label in skip:
            continue
        for name, method, steps, opts, warm in specs:
            kw = {"steps": steps, **opts}
            setting = f"{steps} steps {opts}" if opts else f"{steps} steps"
            if warm:
                init = "fbp" if table.s["modality"] == "ct" else "zero-filled"
                kw.update(t0=t0_of(model), init=init)
                setting = f"t0 {kw['t0']:g} (noise {T0_NOISE}), {setting}, init {init}"
            row = table.add(f"{name} [{label}]", method, setting, model=model, **kw)
            assert not warm or row["nfe"] <= 20, row
            table.rows[-1].update(prior=label, base_method=name,
                                  gain_vs_cs_db=round(row["psnr"] - cs, 3))


def run_size(size: int, priors: dict, specs: list, a, setting: dict = SETTING
             ) -> tuple[dict, Table]:
    """One acquisition ``setting`` (default 4x random) on ``size`` px test slices."""
    n = a.n_slices_256 if size >= 256 else a.n_slices
    test, mm = native_images("test", size, n, a.seed, setting["modality"])
    val, _ = native_images("val", size, a.n_val, a.seed, setting["modality"])
    name = f"{size} px ({mm:.2f} mm)" + ("" if setting is SETTING else f", {short(setting)}")
    print(f"{setting_label(setting)}, {size} px ({mm:.2f} mm), {len(test)} slices", flush=True)
    lam = tune_cs(setting, val, a)
    table = Table(None, setting, test, a)
    table.baselines(lam)
    skip = tuple(p for p, s in (x.split("@") for x in a.skip) if int(s) == size)
    add_diffusion(table, priors, specs, skip)
    group = {"setting": name, "skipped_priors": list(skip), "size": size, "pixel_mm": round(mm, 3), **setting,
             "test_slices": len(test), "cs_lambda": lam, "rows": table.rows}
    return group, table


def short(setting: dict) -> str:
    """The part of a setting's label that differs from the bench's main setting."""
    if setting["modality"] == "mri":
        return f"{setting['acceleration']}x {setting['mask']}"
    return setting_label(setting).removeprefix("CT ")


def run_extra(priors: dict, specs: list, a) -> list[dict]:
    """The other single-coil settings of the issue's targets (8x random, 4x equispaced) at
    64 px, where today's gains were measured."""
    return [run_size(64, priors, specs, a, {**SETTING, "mask": m, "acceleration": r})[0]
            for m, r in (("random", 8), ("equispaced", 4))]


def run_robustness(priors: dict, specs: list, lam: float, a) -> list[dict]:
    """The robustness sets of ``bench/reconstruction.py`` at 64 px (quick: the unseen
    contrast and the finer resolution only)."""
    sets = robustness_sets(SimpleNamespace(quick=False, n_slices=a.n_slices, seed=a.seed))
    if a.quick:
        sets = {k: v for k, v in sets.items() if k in (UNSEEN, FINER)}
    results = []
    for name, images in sets.items():
        print(f"robustness: {name} ({len(images)} slices)", flush=True)
        table = Table(None, SETTING, images, a)
        table.baselines(lam)
        add_diffusion(table, priors, specs)
        results.append({"setting": name, "test_slices": len(images), "cs_lambda": lam,
                        "rows": table.rows})
    return results


# ------------------------------------------------------------------------------ targets
def _rows(group: dict) -> dict[str, dict]:
    return {r["method"]: r for r in group["rows"]}


def _check(target: str, prior: str, text: str, ok: bool | None, **values) -> dict:
    verdict = "N/A" if ok is None else ("PASS" if ok else "FAIL")
    print(f"target ({target}) [{prior}] {verdict}: {text} {values}", flush=True)
    return {"target": target, "prior": prior, "description": text, "pass": ok, **values}


def check_targets(groups: list[dict], robust: list[dict], priors: dict) -> list[dict]:
    by_size = {g["size"]: _rows(g) for g in groups}
    finer = next((_rows(g) for g in robust if g["setting"] == FINER), None)
    larger = sorted(s for s in by_size if s > 64)
    checks = []
    for label in priors:
        at64 = {n: r for n, r in by_size.get(64, {}).items() if r.get("prior") == label}
        winners = [n for n, r in at64.items() if r["gain_vs_cs_db"] > 0]
        gains = {f"{n} @ {s} px": by_size[s][n]["gain_vs_cs_db"] for n in winners for s in larger
                 if n in by_size[s]}  # rows left out with --skip are not judged
        ok_a = all(g >= GAIN_AT_FINER_DB for g in gains.values()) if gains else None
        checks.append(_check("a", label, f"every diffusion row beating CS-TV at 64 px beats it by "
                             f">= {GAIN_AT_FINER_DB} dB at {larger} px", ok_a,
                             rows_beating_cs_at_64=winners, gain_vs_cs_db=gains))
        best = max(at64, key=lambda n: at64[n]["psnr"], default=None)
        margin = None if best is None or finer is None or best not in finer else round(
            finer[best]["psnr"] - finer["CS-TV"]["psnr"], 3)
        checks.append(_check("b", label, f"the best diffusion row at 64 px beats CS-TV on the "
                             f"robustness set '{FINER}'", None if margin is None else margin > 0,
                             best_method=best, margin_vs_cs_db=margin))
        gain = None if best is None else at64[best]["gain_vs_cs_db"]
        checks.append(_check("c", label, f"in-distribution gain at 64 px >= +{GAIN_AT_64_DB} dB",
                             None if gain is None else gain >= GAIN_AT_64_DB,
                             best_method=best, gain_vs_cs_db=gain))
    return checks


def check_extra(extra: list[dict], priors: dict) -> list[dict]:
    """(d) 8x random: the best diffusion row gains >= +4.2 dB over CS-TV (today's); (e) 4x
    equispaced: >= +4 dB (today +2.5)."""
    checks = []
    for group, (target, need) in zip(extra, (("d", GAIN_8X_DB), ("e", GAIN_EQUI_DB))):
        rows = _rows(group)
        for label in priors:
            mine = {n: r for n, r in rows.items() if r.get("prior") == label}
            best = max(mine, key=lambda n: mine[n]["psnr"], default=None)
            gain = None if best is None else mine[best]["gain_vs_cs_db"]
            checks.append(_check(target, label, f"{group['setting']}: best diffusion row >= "
                                 f"+{need} dB over CS-TV", None if gain is None else gain >= need,
                                 best_method=best, gain_vs_cs_db=gain))
    return checks


# ------------------------------------------------------------------------------ outputs
def _table(groups: list[dict], title: str) -> str:
    names = list(dict.fromkeys(r["method"] for g in groups for r in g["rows"]))
    lines = [f"**{title}** (PSNR dB / SSIM (s/slice))", "",
             "| method | " + " | ".join(g["setting"] for g in groups) + " | NFE |",
             "|---" * (len(groups) + 2) + "|"]
    for n in names:
        cells, nfe = [], ""
        for g in groups:
            r = _rows(g).get(n)
            cells.append("-" if r is None else
                         f"{r['psnr']:.2f} / {r['ssim']:.3f} ({r['seconds_per_slice']:.2f} s)")
            nfe = nfe or ("" if r is None else str(r["nfe"]))
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {nfe} |")
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "N/A"}
    targets = [f"- ({c['target']}) [{c['prior']}] {verdict[c['pass']]}: {c['description']}"
               for c in doc["targets"]]
    return "\n\n".join([
        _table(doc["sizes"], f"{SETTING_LABEL}, native resolution (test slices: "
               + ", ".join(f"{g['size']} px: {g['test_slices']}" for g in doc["sizes"]) + ")"),
        *([_table(doc["other_settings"], "Other single-coil settings, 64 px")]
          if doc["other_settings"] else []),
        _table(doc["robustness"], f"Robustness, {SETTING_LABEL}, 64 px"),
        "**Targets**\n\n" + "\n".join(targets)]) + "\n"


def figure(path: Path, group: dict, table: Table, priors: dict, specs: list,
           title: str = SETTING_LABEL) -> Path | None:
    """Reference / CS-TV / UNet / each prior's MCG (else its first diffusion row) / |error|
    of the middle slice of the largest size."""
    if not specs:
        return None
    name = "mcg" if any(s[0] == "mcg" for s in specs) else specs[0][0]
    names = ["CS-TV", "UNet (supervised)"] + [f"{name} [{p}]" for p in priors]
    panel(path, f"{title}, {group['setting']}", table.images, table.outs, names,
          len(table.images) // 2)
    return path


def parse(argv=None, description: str = __doc__.splitlines()[0], **defaults):
    """The options (``defaults`` override the MRI bench's, e.g. ``models``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--models", nargs="+", default=["brain-prior-64", "brain-prior-native"],
                   help="priors: bundled names or training run directories")
    p.add_argument("--sizes", nargs="+", type=int, default=None,
                   help="image sizes in px (default 64 128 256; --quick: 64 128)")
    p.add_argument("--n-slices", type=int, default=6, help="test slices below 256 px")
    p.add_argument("--n-slices-256", type=int, default=3, help="test slices at >= 256 px")
    p.add_argument("--methods", nargs="*", default=["mcg", "score-mri"], choices=list(FULL),
                   help="full-length diffusion methods (steps of bench/reconstruction.py)")
    p.add_argument("--ccdf", nargs="*", default=["mcg"], choices=list(CCDF),
                   help=f"CCDF warm starts (from VE noise {T0_NOISE}, <= 20 NFE)")
    p.add_argument("--skip", nargs="*", default=[], metavar="PRIOR@SIZE",
                   help="leave a prior's diffusion rows out at a size (e.g. brain-prior-64@256:"
                        " its attention over 4096 tokens costs ~7 s per network evaluation)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 64 and 128 px, 2 slices, 4 steps (bench/results/quick/)")
    p.set_defaults(**defaults)
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.n_slices, a.n_slices_256 = a.sizes or [64, 128], 2, 2
    a.sizes = sorted(set(a.sizes or [64, 128, 256]))
    a.n_val = 2 if a.quick else 8
    return a


def results_doc(script: str, setting: str, a, priors: dict, skipped: list, specs: list,
                groups: list, extra: list, fig: Path | None, start: float, **more) -> dict:
    """The results JSON of a resolution bench run (``more``: its own sections)."""
    command = f"python bench/{script} " + " ".join(sys.argv[1:])
    return {**run_header(command.strip(), a.device), "setting": setting,
            "models": {label: m.name for label, m in priors.items()}, "skipped_models": skipped,
            "methods": [{"row": n, "method": m, "steps": s, "options": o,
                         **({"t0_noise": T0_NOISE} if w else {})} for n, m, s, o, w in specs],
            "unet": "the bundled supervised UNet (trained at 64 px, 2.95 mm), applied as it is",
            "val_slices_for_tuning": a.n_val, "seed": a.seed, "quick": a.quick,
            "sizes": groups, "other_settings": extra, **more,
            "figure": None if fig is None else str(fig.relative_to(ROOT)),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    a = parse()
    start = time.perf_counter()
    priors, skipped = load_priors(a.models, a.device)
    specs = diffusion_specs(a)
    groups, tables = [], {}
    for size in a.sizes:
        group, tables[size] = run_size(size, priors, specs, a)
        groups.append(group)
    lam64 = groups[0]["cs_lambda"] if a.sizes[0] == 64 else tune_cs(
        SETTING, native_images("val", 64, a.n_val, a.seed)[0], a)
    robust = run_robustness(priors, specs, lam64, a)
    extra = [] if a.quick else run_extra(priors, specs, a)
    targets = check_targets(groups, robust, priors) + check_extra(extra, priors)
    out = ROOT / "bench" / "results" / ("quick" if a.quick else "")
    fig_dir = out if a.quick else ROOT / "docs" / "figures"
    fig = figure(fig_dir / "resolution.png", groups[-1], tables[a.sizes[-1]], priors, specs)
    doc = results_doc("resolution.py", SETTING_LABEL, a, priors, skipped, specs, groups, extra,
                      fig, start, robustness=robust, targets=targets)
    atomic_write(out / "resolution.md", lambda fh: fh.write(markdown(doc).encode()))
    write_results(out / "resolution.json", doc, fig)


if __name__ == "__main__":
    main()
