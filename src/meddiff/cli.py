"""``meddiff`` command line: a thin layer over :mod:`meddiff.api`.

Every command takes ``--device auto|cpu|cuda`` and ``--seed``; commands that print metrics take
``--json``. Errors the user can cause print one line ``meddiff: error: ...`` and exit with 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


from meddiff import __version__
from meddiff.errors import MeddiffError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"meddiff: error: {message} (see '{self.prog} --help')\n")


def common_options(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    """``--device``, ``--seed`` and optionally ``--json``, the same on every command."""
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run (default: auto = CUDA if available)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print results as JSON")


def _print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Rows as an aligned text table; ``columns`` are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    cells += [[format(r[k], f) if f else str(r[k]) for k, _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    numeric = [bool(f) for _, _, f in columns]
    for j, line in enumerate(cells):
        print("  ".join(c.rjust(w) if num else c.ljust(w)
                        for c, w, num in zip(line, widths, numeric)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


# ------------------------------------------------------------------------------ commands
def cmd_sample(a: argparse.Namespace) -> None:
    from meddiff import api
    from meddiff.data.io import save_nifti
    from meddiff.eval.figures import save_grid

    model = api.load_model(a.model, device=a.device)
    images = api.sample(model, n=a.n, sampler=a.sampler, steps=a.steps, seed=a.seed, eta=a.eta,
                        batch_size=a.batch_size, progress=True)
    if model.spec.intensity == "complex":  # (real, imag) channels -> magnitude in [0, 1]
        images = images.norm(dim=1, keepdim=True).clamp(0, 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = images if images.ndim == 4 else images[:, :, :, :, images.shape[-1] // 2]
    grid = save_grid(out / "samples.png", shown, nrow=min(8, a.n),
                     title=f"{model.name}: {a.sampler} {a.steps} steps, seed {a.seed}")
    for i, im in enumerate(images):
        save_nifti(out / f"sample_{i:03d}.nii.gz", im[0].numpy())
    what = "middle slices" if images.ndim == 5 else "images"
    print(f"wrote {grid} ({what}) and {a.n} NIfTI files sample_000..{a.n - 1:03d}.nii.gz in {out}")


def cmd_denoise(a: argparse.Namespace) -> None:
    from meddiff import api
    from meddiff.data.io import save_nifti
    from meddiff.eval.figures import save_panel

    model = api.load_model(a.model, device=a.device)
    sl = api.read_slices(a.input, model.spec.image_size, resize=a.resize)
    out = api.denoise(model, sl.images, a.sigma, method=a.method, steps=a.steps, seed=a.seed)
    target = Path(a.out)
    mid = len(out) // 2
    save_nifti(target, sl.restore(out), sl.image.affine)
    panel = save_panel(target.with_name(target.name.split(".")[0] + ".png"),
                       [("input", sl.images[mid, 0]), (f"denoised ({a.method})", out[mid, 0]),
                        ("|difference|", (out[mid, 0] - sl.images[mid, 0]).abs())],
                       error_columns=[2], vmin=[0, 0, None], vmax=[1, 1, None])
    print(f"wrote {target} and {panel}")


def cmd_demo(a: argparse.Namespace) -> None:
    from meddiff.demo import run_demo

    res = run_demo(a.out, model_name=a.model, device=a.device, seed=a.seed, progress=not a.json)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"\nmeddiff demo: model {res['model']} on {res['device']}, "
          f"{res['test_slices']} held-out test slices (4 contrasts), seed {res['seed']}\n")
    _print_table(res["rows"], [("method", "method", ""), ("sigma", "sigma", ".2f"),
                               ("psnr", "PSNR dB", ".2f"), ("ssim", "SSIM", ".3f"),
                               ("nmse", "NMSE", ".4f"), ("nfe", "NFE", "d"),
                               ("seconds_per_slice", "s/slice", ".3f")])
    print(f"\nwrote {', '.join(res['outputs'])}  ({res['seconds']} s)")


def cmd_methods(a: argparse.Namespace) -> None:
    from meddiff.methods.catalog import SYSTEMS

    rows = [{"id": s.id, "family": s.family, "paper": s.paper, "ref": s.ref,
             "status": s.status_text, "claim": s.claim} for s in SYSTEMS]
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    _print_table(rows, [("id", "ID", ""), ("family", "family", ""), ("paper", "paper", ""),
                        ("ref", "reference", ""), ("status", "status", "")])
    works = sum(s.status == "works" for s in SYSTEMS)
    print(f"\n{works} of {len(SYSTEMS)} systems work today (CLI + bundled model + benchmark row).")


def cmd_models(a: argparse.Namespace) -> None:
    from meddiff.eval.frechet import DEFAULT_WEIGHTS
    from meddiff.methods import unet_recon
    from meddiff.zoo.store import bundled_models, describe

    rows = []
    for name in bundled_models():
        d = describe(name)
        spec, card = d["spec"], d["card"]
        rows.append({"name": name, "kind": f"{spec['net']['spatial_dims']}D diffusion prior",
                     "size": spec["image_size"], "params": card.get("parameters", ""),
                     "steps": card.get("training", {}).get("steps", ""),
                     "card": f"zoo/cards/{name}.md"})
    for path in sorted(unet_recon.SUPERVISED_DIR.glob("*.safetensors")):
        modality = path.stem.split("-")[2]
        card = unet_recon.load(modality, int(path.stem.rsplit("-", 1)[1]))[1]
        rows.append({"name": path.stem, "kind": f"supervised {modality.upper()} UNet (baseline)",
                     "size": int(path.stem.rsplit("-", 1)[1]), "params": card["parameters"],
                     "steps": card["steps"], "card": "weights file metadata"})
    rows += _task_model_rows()
    enc = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text(encoding="utf-8"))
    rows.append({"name": DEFAULT_WEIGHTS.stem, "kind": "FD-MedEnc feature encoder",
                 "size": enc["data"]["size"], "params": "", "steps": enc["training"]["steps"],
                 "card": f"zoo/weights/{DEFAULT_WEIGHTS.stem}.json"})
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    _print_table(rows, [("name", "name", ""), ("kind", "kind", ""), ("size", "size", ""),
                        ("params", "parameters", ""), ("steps", "train steps", ""),
                        ("card", "model card (in the package)", "")])


#: bundled task networks (sub-folders of zoo/weights) and what `meddiff models` calls them
TASK_MODELS = (("latent", "D2 latent AE / latent DDPM"), ("segmentation", "G2 segmentation"),
               ("classifiers", "noise-aware classifier (D1/D4)"))


def _task_model_rows() -> list[dict]:
    """One row per bundled task network: parameters counted from the safetensors header."""
    from safetensors import safe_open

    from meddiff.zoo.store import WEIGHTS_DIR

    rows = []
    for folder, kind in TASK_MODELS:
        for path in sorted((WEIGHTS_DIR / folder).glob("*.safetensors")):
            with safe_open(str(path), "pt") as f:
                n = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
            card = WEIGHTS_DIR.parent / "cards" / f"{path.stem}.md"
            rows.append({"name": path.stem, "kind": kind, "size": path.stem.rsplit("-", 1)[-1],
                         "params": f"{n / 1e6:.2f} M", "steps": "",
                         "card": f"zoo/cards/{card.name}" if card.exists() else ""})
    return rows


def cmd_train(a: argparse.Namespace) -> None:
    from dataclasses import replace

    from meddiff.train.build import load_run_config, train

    cfg = load_run_config(a.config)
    cfg = replace(cfg, train=replace(cfg.train, device=a.device,
                                     seed=cfg.train.seed if a.seed is None else a.seed))
    summary = train(cfg, resume=not a.restart)
    print(json.dumps(summary, indent=2) if a.json else
          f"trained to step {summary['steps']} in {summary['wall_time_s']:.0f} s, "
          f"final loss {summary['final_loss']:.4g}, checkpoint {summary['checkpoint']}")


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from meddiff.api import DEFAULT_MODEL

    p = _Parser(prog="meddiff", description="Diffusion models for medical image analysis.")
    p.add_argument("--version", action="version", version=f"meddiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sample", help="draw images (2D) or volumes (3D) from a model: PNG grid + NIfTI files")
    s.add_argument("--model", default=DEFAULT_MODEL, help="bundled name, NAME.json, or run dir")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--sampler", default="ddim", help="ddpm | ddim | dpmpp_2m | pc_ve | pc_vp")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 = deterministic)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--out", required=True, help="output directory")
    common_options(s)
    s.set_defaults(func=cmd_sample)

    d = sub.add_parser("denoise", help="remove Gaussian noise from a 2D image or every slice of a volume")
    d.add_argument("--input", required=True, help="NIfTI, DICOM file/folder, PNG, TIFF or NPY")
    d.add_argument("--sigma", type=float, required=True,
                   help="noise std as a fraction of the 0.5-99.5 percentile range")
    d.add_argument("--method", default="tweedie", choices=("tweedie", "ddim", "ddpm"))
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--model", default=DEFAULT_MODEL)
    d.add_argument("--resize", action="store_true", help="resample slices to the model's size")
    d.add_argument("--out", required=True, help="output NIfTI (a PNG panel is written beside it)")
    common_options(d)
    d.set_defaults(func=cmd_denoise)

    m = sub.add_parser("demo", help="the bundled prior end to end (samples + denoising benchmark)")
    m.add_argument("--out", default="demo_out")
    m.add_argument("--model", default=DEFAULT_MODEL)
    common_options(m, json_flag=True)
    m.set_defaults(func=cmd_demo)

    t = sub.add_parser("methods", help="the 27 systems and what runs today")
    common_options(t, json_flag=True)
    t.set_defaults(func=cmd_methods)

    o = sub.add_parser("models", help="bundled models")
    common_options(o, json_flag=True)
    o.set_defaults(func=cmd_models)

    r = sub.add_parser("train", help="train a model from a YAML run config (resumes by default)")
    r.add_argument("config")
    r.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument("--seed", type=int, default=None, help="override train.seed")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_train)

    from meddiff.tasks.reconstruction_cli import add_reconstruct_parser
    add_reconstruct_parser(sub)
    from meddiff.tasks.detection_cli import add_detect_parser
    add_detect_parser(sub)
    from meddiff.tasks.segmentation_cli import add_segment_parser
    add_segment_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MeddiffError as err:
        print(f"meddiff: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("meddiff: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
