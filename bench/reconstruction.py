"""Reconstruction benchmark: undersampled MRI and sparse-view / low-dose CT on held-out slices.

    .venv/bin/python bench/reconstruction.py            # -> bench/results/reconstruction.json,
                                                        #    docs/figures/reconstruction_*.png
    .venv/bin/python bench/reconstruction.py --quick    # smoke run (bench/results/quick/)
    .venv/bin/python bench/reconstruction.py --headline # the claims' headline rows only, against
                                                        # the committed full run

Protocol. Ground truth: ``--n-slices`` fixed-seed slices of the held-out *test* slab; CS-TV's
weight is tuned on slices of the *validation* slab, never on the test slab.
- MRI (``brain-prior-64``, all four contrasts): magnitude images; single-coil 1D masks
  (equispaced and random) at 4x and 8x, and 8-coil (birdcage maps) at 4x random (SENSE, plus
  score-MRI's coil-by-coil + root-sum-of-squares at half the steps, since it costs 8x).
  Complex data: the same at 4x random with a smooth random phase, reconstructed by the
  magnitude prior with the phase estimated from the calibration region (``view="phase"``)
  and by Chung & Ye's real / imaginary parts as separate images (arXiv 2110.05243, sec. 3.3);
  ``--complex-model`` adds a two-channel complex prior (a trained run directory). Metrics on
  the magnitude.
- CT: head-CT-like slices (``ct-prior-64``), parallel beam with 30 and 60 views (noiseless)
  and 180 views at a quarter dose (transmission Poisson noise).
- Rows: the direct baseline (zero-filled / FBP), CS-TV, the supervised UNet, every diffusion
  method at full length (DPS and Langevin only at MRI 4x random and CT 30 views), and CCDF warm starts (Chung, Sim & Ye 2022, arXiv 2112.05146) from
  VE noise level 0.72 (``t0 = 200`` on the linear schedule) with at most 20 network evaluations.
- Robustness (MRI 4x random, single-coil, the same prior): a contrast outside the prior's
  training (heavily T2-weighted, TE 200 ms), coronal and sagittal views (the prior saw axial slices only) and a finer
  resolution (1.97 mm pixels, cropped field of view, instead of 2.95 mm).
- PSNR vs NFE: MCG and score-MRI, CCDF (``t0 = 10 x steps``) vs full-length sampling with the
  same number of steps, and the fraction of the full-length gain over the direct baseline that
  the warm start keeps at <= 20 NFE.
PSNR / SSIM (data range 1) are means over slices; NFE per image; seconds are wall time per
slice. Method options are fixed defaults, not tuned per setting.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from common import run_header, write_results
from meddiff import api
from meddiff.data.datasets import BrainSlices
from meddiff.data.modalities import ComplexBrainSlices, HeadCTSlices
from meddiff.data.mri_signal import CONTRASTS, Sequence, render_contrast
from meddiff.data.writers import atomic_write
from meddiff.eval.figures import save_curve, save_panel
from meddiff.physics.mri import channels_to_complex
from meddiff.methods.reconstruction.baselines import CS_ITERS
from meddiff.methods.reconstruction.ccdf import warm_start_time
from meddiff.physics.acquisition import FULL_VIEWS, simulate_ct, simulate_mri
from meddiff.tasks import reconstruction as rt

ROOT = Path(__file__).resolve().parents[1]
# the priors of this bench's protocol (64 px, 2.95 mm slices); the native-resolution prior is
# compared in bench/resolution.py
BENCH_MODELS = {"mri": "brain-prior-64", "ct": "ct-prior-64"}
# CCDF starts at VE noise std 0.72 in model units: t0 = 200 on the linear schedule, 393 on the
# cosine one (meddiff.methods.reconstruction.ccdf.warm_start_time)
T0_NOISE = 0.72


def t0_of(model) -> float:
    """The warm-start time of ``model``'s schedule for :data:`T0_NOISE`."""
    return warm_start_time(model.denoiser.schedule, T0_NOISE)
MRI_4X_RANDOM = {"modality": "mri", "mask": "random", "acceleration": 4, "coils": 1}  # the headline and robustness setting
# name -> (steps, options) of the full-length rows and the CCDF (t0 = T0, <= 20 NFE) rows
FULL = {"score-mri": (100, {}), "song": (100, {}), "mcg": (100, {"alpha": 1.0}),
        "dps": (100, {"alpha": 0.3}), "diffuserecon": (50, {"n_samples": 2, "t_refine": 20}),
        "langevin": (100, {"burn_in": 20, "n_chain": 60}), "ddrm": (100, {})}
CCDF = {"score-mri": (10, {}), "song": (10, {}), "mcg": (20, {"alpha": 1.0}),
        "dps": (20, {"alpha": 0.3}), "diffuserecon": (8, {"n_samples": 1, "t_refine": 10})}
ALL_METHODS_IN = ("MRI 4x random single-coil", "CT 30 views")  # elsewhere: no dps / langevin
ROBUST_FULL = {k: FULL[k] for k in ("score-mri", "mcg", "diffuserecon")}
ROBUST_FULL["song DDIM"] = (100, {"sampler": "ddim"})  # deterministic sampling
ROBUST_CCDF = {"score-mri": (10, {}), "mcg": (20, {"alpha": 1.0})}
QUICK_FULL = {"score-mri": (4, {}), "mcg": (4, {"alpha": 1.0}), "langevin": (4, {"burn_in": 1, "n_chain": 2})}
QUICK_CCDF = {"mcg": (2, {"alpha": 1.0})}
CS_GRID = {"mri": [0.003, 0.006, 0.01, 0.02, 0.03, 0.06, 0.1],
           "ct": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]}


# ------------------------------------------------------------------------------ data
def mri_images(split: str, contrasts=CONTRASTS, orientation: str = "axial", zoom: float = 1.0,
               phase: bool = False, seed: int = 0) -> torch.Tensor:
    """Clean MR slices (N, 1, 64, 64): magnitude in [0, 1], or complex with a smooth random
    phase (``phase``); ``zoom > 1`` renders at ``64 * zoom`` px and crops the centre (finer
    pixels, smaller field of view)."""
    size = int(round(64 * zoom))
    cls = ComplexBrainSlices if phase else BrainSlices
    ds = cls(split, size=size, contrasts=contrasts, augment=False, seed=seed,
             orientation=orientation)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    if size != 64:
        lo = (size - 64) // 2
        x = x[..., lo:lo + 64, lo:lo + 64]
    return channels_to_complex(x) if phase else x


def unseen_contrast_images(split: str) -> torch.Tensor:
    """Heavily T2-weighted slices (TR 8000 ms, TE 200 ms: bright CSF, dark tissue), a contrast
    outside every training range (T2w TE <= 120 ms), (N, 1, 64, 64) in [0, 1]."""
    ds = BrainSlices(split, size=64, contrasts=("T2w",), augment=False)
    seq = Sequence(tr=8000.0, te=200.0)
    return torch.stack([torch.from_numpy(render_contrast(fr, seq))[None] for fr in ds.fractions])


def ct_images(split: str, seed: int = 0) -> torch.Tensor:
    ds = HeadCTSlices(split, size=64, augment=False, seed=seed)
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def subset(x: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    if n is None or n >= len(x):
        return x
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:n].sort().values]


# ------------------------------------------------------------------------------ running
def label(s: dict) -> str:
    if s["modality"] == "mri":
        coils = "single-coil" if s["coils"] == 1 else f"{s['coils']} coils"
        return f"MRI {s['acceleration']}x {s['mask']} {coils}" + (
            ", image with phase" if s.get("phase") else "") + (
            f", k-space noise {s['noise_std']}" if s.get("noise_std") else "")
    views = f"{s['views'] or FULL_VIEWS} views"
    return f"CT {views}" + (f", dose {s['dose']}" if s["dose"] else "")


def simulate(s: dict, images: torch.Tensor, seed: int):
    if s["modality"] == "mri":
        return simulate_mri(images, s["mask"], s["acceleration"], s["coils"],
                            s.get("noise_std", 0.0), seed=seed)
    return simulate_ct(images, s["views"], s["dose"], seed=seed)


def evaluate(model, s: dict, images: torch.Tensor, method: str, seed: int, batch: int,
             runner=rt.run, **kw) -> tuple[dict, torch.Tensor]:
    """Mean metrics of ``method`` over ``images`` (magnitude vs |truth|); (row, outputs).
    Methods with an uncertainty map also get ``std_error_corr``: the Pearson correlation of
    the std map with the absolute error over the pixels of each slice, averaged."""
    outs, stds, nfe, seconds = [], [], 0, 0.0
    for k in range(0, len(images), batch):
        op, y = simulate(s, images[k:k + batch], seed + k)
        res = runner(model, op, y, method, seed=seed + k, **kw)
        outs.append(res.image01)
        stds.append(res.std01)
        nfe, seconds = res.nfe, seconds + res.seconds
    out = torch.cat(outs)
    m = rt.metrics(out, images.abs())
    row = {"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4), "nfe": nfe,
           "seconds_per_slice": round(seconds / len(images), 4)}
    if stds[0] is not None and any(float(t.max()) > 0 for t in stds):  # one sample: no spread
        err = (out - images.abs()).abs().flatten(1)
        std = torch.cat(stds).flatten(1)
        corr = [float(torch.corrcoef(torch.stack([a, b]))[0, 1]) for a, b in zip(std, err)]
        row["std_error_corr"] = round(sum(corr) / len(corr), 3)
    return row, out


def tune_cs(s: dict, val: torch.Tensor, a) -> float:
    """The CS-TV weight (relative to ||A||^2) with the best mean PSNR on validation slices."""
    grid = CS_GRID[s["modality"]][1::2] if a.quick else CS_GRID[s["modality"]]
    scores = [evaluate(None, s, val, "cs", a.seed, a.batch, cs_lam=lam)[0]["psnr"] for lam in grid]
    return grid[max(range(len(grid)), key=scores.__getitem__)]


class Table:
    """Rows of one setting, printed as they come."""

    def __init__(self, model, s: dict, images: torch.Tensor, a):
        self.model, self.s, self.images, self.a = model, s, images, a
        self.rows, self.outs = [], {}

    def add(self, name: str, method: str, setting: str = "", model=None, **kw) -> dict:
        row, self.outs[name] = evaluate(model or self.model, self.s, self.images, method,
                                        self.a.seed, self.a.batch, **kw)
        self.rows.append({"method": name, "setting": setting, **row})
        corr = f"  std/error r {row['std_error_corr']:.2f}" if "std_error_corr" in row else ""
        print(f"  {name:30s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  NFE {row['nfe']:4d}"
              f"  {row['seconds_per_slice']:.3f} s/slice{corr}", flush=True)
        return row

    def baselines(self, lam: float) -> str:
        base = "fbp" if self.s["modality"] == "ct" else "zero-filled"
        self.add(base, base)
        self.add("CS-TV", "cs", f"lambda {lam} x ||A||^2 (tuned on val), {CS_ITERS} PDHG "
                 "iterations", cs_lam=lam)
        self.add("UNet (supervised)", "unet", "residual BasicUNet on the direct reconstruction")
        return base

    def diffusion(self, full: dict, ccdf: dict, init: str) -> None:
        """Full-length rows (``name`` or ``"method variant"``) and CCDF rows from ``init``."""
        for name, (steps, opts) in full.items():
            self.add(name, name.split()[0], f"{steps} steps {opts}" if opts else f"{steps} steps",
                     steps=steps, **opts)
        for name, (steps, opts) in ccdf.items():
            tag = f"{name} CCDF" + ("" if init in ("zero-filled", "fbp") else f" from {init}")
            t0 = t0_of(self.model)
            row = self.add(tag, name, f"t0 {t0:g} (noise {T0_NOISE}), {steps} steps, init {init}",
                           steps=steps, t0=t0, init=init, **opts)
            assert row["nfe"] <= 20, row


def psnr_vs_nfe(model, images, a) -> dict:
    """CCDF (t0 = 10 x steps, init zero-filled) vs full length at equal steps, MRI 4x random."""
    s = MRI_4X_RANDOM
    step_list = [2, 4] if a.quick else [5, 10, 20, 40]
    base = evaluate(None, s, images, "zero-filled", a.seed, a.batch)[0]["psnr"]
    out = {"setting": label(s), "steps": step_list, "zero_filled_psnr": base, "methods": {}}
    for method, opts in (("mcg", {"alpha": 1.0}), ("score-mri", {})):
        curves, nfes = {"CCDF": [], "full length": []}, []
        for steps in step_list:
            warm, _ = evaluate(model, s, images, method, a.seed, a.batch, steps=steps,
                               t0=10 * steps, init="zero-filled", **opts)
            full, _ = evaluate(model, s, images, method, a.seed, a.batch, steps=steps, **opts)
            nfes.append(warm["nfe"])
            curves["CCDF"].append(warm["psnr"])
            curves["full length"].append(full["psnr"])
        steps_ref = 4 if a.quick else FULL[method][0]
        ref, _ = evaluate(model, s, images, method, a.seed, a.batch, steps=steps_ref, **opts)
        best20 = max([p for p, n in zip(curves["CCDF"], nfes) if n <= 20], default=None)
        frac = None if best20 is None else round((best20 - base) / (ref["psnr"] - base), 3)
        out["methods"][method] = {"nfe": nfes, "psnr": curves, "reference": {
            "steps": steps_ref, "nfe": ref["nfe"], "psnr": ref["psnr"]},
            "best_ccdf_psnr_at_most_20_nfe": best20, "fraction_of_full_gain": frac}
    return out


def panel(path: Path, title: str, clean, outs: dict, names: list[str], index: int) -> None:
    names = [n for n in names if n in outs]
    ref = clean.abs()
    cols = [("reference", ref[index, 0])] + [(n, outs[n][index, 0]) for n in names]
    cols.append((f"|error| {names[-1]}", (outs[names[-1]][index, 0] - ref[index, 0]).abs()))
    n = len(cols) - 1
    save_panel(path, cols, error_columns=[n], vmin=[0] * (n + 1), vmax=[1] * n + [None],
               suptitle=title)


# ------------------------------------------------------------------------------ suites
def main_settings(quick: bool) -> list[dict]:
    mri = [{"modality": "mri", "mask": m, "acceleration": r, "coils": 1}
           for r in (4, 8) for m in ("equispaced", "random")]
    mri.append({"modality": "mri", "mask": "random", "acceleration": 4, "coils": 8})
    mri.append({"modality": "mri", "mask": "random", "acceleration": 4, "coils": 1, "phase": True})
    ct = [{"modality": "ct", "views": v, "dose": None} for v in (30, 60)]
    ct.append({"modality": "ct", "views": None, "dose": 0.25})
    return [mri[1], mri[-1], ct[0]] if quick else mri + ct


def robustness_sets(a) -> dict[str, torch.Tensor]:
    sets = {"unseen contrast (heavy T2, TE 200 ms)": unseen_contrast_images("test"),
            "coronal views": mri_images("test", orientation="coronal"),
            "sagittal views": mri_images("test", orientation="sagittal"),
            "finer resolution (1.97 mm, cropped)": mri_images("test", zoom=1.5)}
    if a.quick:
        sets = dict(list(sets.items())[:1])
    return {k: subset(v, a.n_slices, a.seed + 1) for k, v in sets.items()}


def phase_rows(table: "Table", full: dict, ccdf: dict, models: dict) -> None:
    """Complex data through a magnitude prior (phase view, Chung & Ye's re/im batch) and,
    when given, a complex two-channel prior."""
    steps = full["score-mri"][0] if "score-mri" in full else 4
    for name in ("score-mri", "mcg"):
        if name in full:
            table.add(f"{name} (phase from calibration)", name, f"{full[name][0]} steps",
                      steps=full[name][0], view="phase", **full[name][1])
    if "mcg" in ccdf:
        t0 = t0_of(table.model)
        table.add("mcg CCDF (phase from calibration)", "mcg", f"t0 {t0:g}, {ccdf['mcg'][0]} steps",
                  steps=ccdf["mcg"][0], t0=t0, init="zero-filled", view="phase", **ccdf["mcg"][1])
    table.add("score-mri (re / im as two images)", "score-mri", f"{steps} steps", steps=steps,
              view="batch")
    if "complex" in models:
        table.add("mcg, complex two-channel prior", "mcg", f"{models['complex'].name}, "
                  f"{steps} steps", model=models["complex"], steps=steps, alpha=1.0)


def run_main(models: dict, data: dict, a, full, ccdf, figures: Path) -> list[dict]:
    results, lams = [], {}
    for s in main_settings(a.quick):
        mod = s["modality"]
        test, val = data["mri phase" if s.get("phase") else mod]
        print(f"{label(s)} ({len(test)} slices, model {models[mod].name})", flush=True)
        lams[label(s)] = lam = tune_cs(s, val, a)
        table = Table(models[mod], s, test, a)
        base = table.baselines(lam)
        if s.get("phase"):
            phase_rows(table, full, ccdf, models)
            results.append({"setting": label(s), **s, "model": models[mod].name,
                            "rows": table.rows})
            continue
        skip = () if label(s) in ALL_METHODS_IN or a.quick else ("dps", "langevin")
        if mod == "ct" or s.get("coils", 1) > 1:
            skip += ("ddrm",)  # it needs an operator with a known SVD
        table.diffusion({k: v for k, v in full.items() if k not in skip}, ccdf, base)
        if (mod == "ct" or label(s) == "MRI 4x random single-coil") and "mcg" in full:
            table.add("mcg, alpha 0 (projection only)", "mcg", "100 steps, no gradient",
                      steps=full["mcg"][0], alpha=0.0)
        if s.get("dose") and "song" in full:  # noisy data: a soft consistency step
            table.add("song, lambda 0.2 (noise-aware)", "song", "100 steps, lambda 0.2",
                      steps=full["song"][0], lam=0.2)
        if s.get("coils", 1) > 1:
            steps = full["score-mri"][0] // 2 if "score-mri" in full else 2
            table.add("score-mri coil-by-coil + RSS", "score-mri", f"{steps} steps per coil, "
                      "no coil maps", runner=rt.run_coil_by_coil, steps=steps)
        results.append({"setting": label(s), **s, "model": models[mod].name, "rows": table.rows})
        if label(s) in ("MRI 4x random single-coil", "CT 30 views"):
            panel(figures / f"reconstruction_{mod}.png", label(s), test, table.outs,
                  [base, "CS-TV", "UNet (supervised)", "mcg CCDF", "mcg"], len(test) // 2)
    return results, lams


def run_robustness(model, a, lam: float, full, ccdf, figures: Path) -> list[dict]:
    s = MRI_4X_RANDOM
    results = []
    for name, images in robustness_sets(a).items():
        print(f"robustness: {name} ({len(images)} slices)", flush=True)
        table = Table(model, s, images, a)
        base = table.baselines(lam)
        table.diffusion(full, ccdf, base)
        table.diffusion({}, ccdf, "cs")
        results.append({"setting": f"{label(s)}, {name}", "rows": table.rows})
        if name.startswith("unseen"):
            panel(figures / "reconstruction_robustness.png", f"{label(s)}, {name}", images,
                  table.outs, ["zero-filled", "CS-TV", "UNet (supervised)", "mcg"],
                  len(images) // 2)
    return results


def markdown(doc: dict) -> str:
    """README tables from a results document: PSNR / SSIM per method and setting."""
    def table(groups: list[dict], title: str) -> str:
        names = list(dict.fromkeys(r["method"] for g in groups for r in g["rows"]))
        head = "| method | " + " | ".join(g["setting"] for g in groups) + " | NFE |"
        lines = [f"**{title}** (PSNR dB / SSIM)", "", head,
                 "|---" * (len(groups) + 2) + "|"]
        for n in names:
            cells, nfe = [], ""
            for g in groups:
                row = next((r for r in g["rows"] if r["method"] == n), None)
                cells.append("-" if row is None else f"{row['psnr']:.2f} / {row['ssim']:.3f}")
                nfe = nfe or ("" if row is None else str(row["nfe"]))
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {nfe} |")
        return "\n".join(lines)

    mri = [g for g in doc["settings"] if g["modality"] == "mri" and not g.get("phase")]
    ct = [g for g in doc["settings"] if g["modality"] == "ct"]
    phase = [g for g in doc["settings"] if g.get("phase")]
    parts = [table(mri, "MRI"), table(ct, "CT")]
    if phase:
        parts.append(table(phase, "MRI with phase"))
    parts.append(table(doc["robustness"], "Robustness, MRI 4x random single-coil"))
    return "\n\n".join(parts) + "\n"


#: the rows behind the headline claims (R9, C2 at MRI 4x random; R5 at CT 60 views): what
#: ``--headline`` reruns when something moves that should not change the table (e.g. weights)
HEADLINE = ((MRI_4X_RANDOM, "mcg"), (MRI_4X_RANDOM, "score-mri"),
            ({"modality": "ct", "views": 60, "dose": None}, "diffuserecon"))


def run_headline(a) -> None:
    """Rerun :data:`HEADLINE` with the full protocol and write them next to the numbers of the
    committed full run (``bench/results/reconstruction.json``) to
    ``bench/results/reconstruction_headline.json``."""
    start = time.perf_counter()
    committed = json.loads((ROOT / "bench" / "results" / "reconstruction.json").read_text())
    before = {(g["setting"], r["method"]): r for g in committed["settings"] for r in g["rows"]}
    images = {"mri": subset(mri_images("test"), a.n_slices, a.seed),
              "ct": subset(ct_images("test"), a.n_slices, a.seed)}
    rows = []
    for s, method in HEADLINE:
        model = api.load_model(BENCH_MODELS[s["modality"]], device=a.device)
        steps, opts = FULL[method]
        row, _ = evaluate(model, s, images[s["modality"]], method, a.seed, a.batch, steps=steps,
                          **opts)
        old = before[(label(s), method)]
        rows.append({"setting": label(s), "method": method, "model": model.name, **row,
                     "committed_psnr": old["psnr"], "committed_ssim": old["ssim"],
                     "psnr_change": round(row["psnr"] - old["psnr"], 3)})
        print(f"{label(s):28s} {method:13s} PSNR {row['psnr']:.3f} (committed {old['psnr']:.3f})")
    doc = {**run_header("python bench/reconstruction.py --headline", a.device),
           "test_slices": a.n_slices, "seed": a.seed, "rows": rows,
           "seconds": round(time.perf_counter() - start, 1)}
    write_results(ROOT / "bench" / "results" / "reconstruction_headline.json", doc, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mri-model", default=BENCH_MODELS["mri"])
    p.add_argument("--ct-model", default=BENCH_MODELS["ct"])
    p.add_argument("--complex-model", default="",
                   help="optional two-channel complex prior (e.g. runs/mri-complex-64) for an "
                        "extra row on the data with phase")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--n-slices", type=int, default=8, help="fixed-seed subset of the test slab")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 slices, few steps")
    p.add_argument("--headline", action="store_true",
                   help="only the headline rows, against the committed full run")
    a = p.parse_args()
    if a.headline:
        return run_headline(a)
    if a.quick:
        a.n_slices = 2
    start = time.perf_counter()
    models = {"mri": api.load_model(a.mri_model, device=a.device),
              "ct": api.load_model(a.ct_model, device=a.device)}
    if a.complex_model:
        models["complex"] = api.load_model(a.complex_model, device=a.device)
    n_val = 2 if a.quick else 8
    data = {"mri": (subset(mri_images("test"), a.n_slices, a.seed),
                    subset(mri_images("val"), n_val, a.seed)),
            "mri phase": (subset(mri_images("test", phase=True), a.n_slices, a.seed),
                          subset(mri_images("val", phase=True), n_val, a.seed)),
            "ct": (subset(ct_images("test"), a.n_slices, a.seed),
                   subset(ct_images("val"), n_val, a.seed))}
    full, ccdf = (QUICK_FULL, QUICK_CCDF) if a.quick else (FULL, CCDF)
    figures = ROOT / "bench" / "results" / "quick" if a.quick else ROOT / "docs" / "figures"
    results, lams = run_main(models, data, a, full, ccdf, figures)
    robust = run_robustness(models["mri"], a, lams["MRI 4x random single-coil"],
                            QUICK_FULL if a.quick else ROBUST_FULL,
                            QUICK_CCDF if a.quick else ROBUST_CCDF, figures)
    curve = psnr_vs_nfe(models["mri"], data["mri"][0], a)
    series = {f"{m}, {k}": v for m, c in curve["methods"].items() for k, v in c["psnr"].items()}
    series["zero-filled"] = [curve["zero_filled_psnr"]] * len(curve["steps"])
    save_curve(figures / "reconstruction_psnr_vs_nfe.png", curve["steps"], series,
               "reverse steps (MCG: NFE = steps; score-MRI: NFE = 2 x steps)", "PSNR (dB)",
               title=f"CCDF warm start vs full length, {curve['setting']}", logx=True)
    doc = {"models": {k: m.name for k, m in models.items()}, "device": str(models["mri"].denoiser.device),
           "machine": platform.processor() or platform.machine(), "test_slices": a.n_slices,
           "val_slices_for_tuning": n_val, "seed": a.seed, "quick": a.quick,
           "settings": results, "robustness": robust, "psnr_vs_nfe": curve,
           "seconds": round(time.perf_counter() - start, 1)}
    out_json = ROOT / "bench" / "results" / ("reconstruction_quick.json" if a.quick
                                             else "reconstruction.json")
    atomic_write(out_json.with_suffix(".md"), lambda fh: fh.write(markdown(doc).encode()))
    write_results(out_json, doc, figures)


if __name__ == "__main__":
    main()
