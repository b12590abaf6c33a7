"""What the bench scripts share: the run header of a results JSON, writing it, and the scored
table of image-to-image methods (denoising, translation)."""
from __future__ import annotations

import argparse
import json
import platform
import textwrap
import time
from pathlib import Path
from typing import Callable

import torch

from meddiff.data.writers import atomic_write
from meddiff.device import resolve_device
from meddiff.eval.figures import save_panel
from meddiff.eval.metrics import psnr_batch, ssim_batch

ROOT = Path(__file__).resolve().parents[1]


def run_header(command: str, device: str) -> dict:
    """``command``, ``device``, ``threads``, ``machine`` and ``torch`` of this run."""
    return {"command": command, "device": str(resolve_device(device)),
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__}


def write_results(path: Path, doc: dict, figure: Path | None) -> None:
    """Write ``doc`` as JSON atomically and say where it and the figure went."""
    atomic_write(path, lambda fh: fh.write((json.dumps(doc, indent=2) + "\n").encode()))
    print(f"wrote {path}" + (f" and {figure}" if figure else "") + f" ({doc['seconds']} s)")


class Table:
    """Rows of one setting: each method's output on the same inputs, scored and timed."""

    def __init__(self, setting: str, reference: torch.Tensor):
        self.setting, self.reference = setting, reference
        self.rows: list[dict] = []
        self.outs: dict[str, torch.Tensor] = {}

    def add(self, name: str, fn: Callable[[], torch.Tensor], kind: str,
            nfe: int = 0) -> torch.Tensor:
        """Run ``fn`` (-> (N, 1, H, W) in [0, 1]), time it and score it; ``kind``: baseline
        (a classic filter or the input), supervised or diffusion."""
        start = time.perf_counter()
        out = fn().float().clamp(0, 1)
        seconds = time.perf_counter() - start
        ref = self.reference
        row = {"method": name, "kind": kind, "nfe": nfe,
               "psnr": round(float(psnr_batch(out, ref, 1.0).mean()), 2),
               "ssim": round(float(ssim_batch(out, ref, 1.0).mean()), 4),
               "mae": round(float((out - ref).abs().mean()), 4),
               "seconds_per_image": round(seconds / len(ref), 4)}
        self.rows.append(row)
        self.outs[name] = out
        print(f"  {name:42s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  MAE "
              f"{row['mae']:.4f}  {row['seconds_per_image']:.3f} s/img", flush=True)
        return out

    def best(self, kind: str) -> dict:
        return max((r for r in self.rows if r["kind"] == kind), key=lambda r: r["psnr"])

    def summary(self) -> dict:
        """The rows, and the best diffusion row's PSNR against the best classic baseline
        (``gain_db``) and the best supervised network (``vs_supervised_db``), where they ran."""
        diff = self.best("diffusion")
        out = {"setting": self.setting, "rows": self.rows, "best_diffusion": diff["method"]}
        kinds = {r["kind"] for r in self.rows}
        for kind, key in (("baseline", "gain_db"), ("supervised", "vs_supervised_db")):
            if kind in kinds:
                out[key] = round(diff["psnr"] - self.best(kind)["psnr"], 2)
                out[f"best_{kind}"] = self.best(kind)["method"]
        return out

    def figure(self, path: Path, names: list[str], index: int) -> None:
        cols = [("reference", self.reference[index, 0])]
        cols += [(f"{textwrap.fill(n, 24)}\n"
                  f"{psnr_one(self.outs[n][index], self.reference[index]):.1f} dB",
                  self.outs[n][index, 0]) for n in names if n in self.outs]
        save_panel(path, cols, suptitle=self.setting)


def psnr_one(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR (data range 1) of one image (C, H, W) against its reference."""
    return float(psnr_batch(x[None], ref[None], 1.0)[0])


def stack_items(ds, keys: tuple[str, ...], n: int) -> list[torch.Tensor]:
    """The first ``n`` items of ``ds`` (all of them if it has fewer) stacked per key:
    [(n, C, H, W), ...]."""
    items = [ds[i] for i in range(min(n, len(ds)))]
    return [torch.stack([it[k] for it in items]) for k in keys]


def markdown(doc: dict) -> str:
    """The tables of a results document whose ``results`` map parts to lists of
    :meth:`Table.summary` dicts (optionally with ``ancestral`` rows on the first images)."""
    lines = [f"Command: `{doc['command']}` ({doc['seconds']} s, {doc['threads']} threads, "
             f"{doc['device']})", ""]
    for part in doc["results"].values():
        for s in part:
            gains = [f"{s[key]:+.2f} dB vs the best {what}"
                     for key, what in (("gain_db", "classic baseline"),
                                       ("vs_supervised_db", "supervised UNet")) if key in s]
            lines += [f"**{s['setting']}** (best diffusion row: {', '.join(gains)})", "",
                      "| method | PSNR | SSIM | MAE | NFE | s / image |",
                      "|---|---|---|---|---|---|"]
            rows = s["rows"] + [{**r, "method": f"{r['method']} (first images)"}
                                for r in s.get("ancestral") or []]
            lines += [f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['mae']:.4f} | "
                      f"{r['nfe']} | {r['seconds_per_image']:.3f} |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def parse_with_outputs(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse ``p`` with the options every table bench shares: ``--device``, ``--out`` (the
    results folder) and ``--figures`` (created)."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    a = p.parse_args()
    a.figures.mkdir(parents=True, exist_ok=True)
    return a


def write_tables(out: Path, stem: str, doc: dict, figures: Path) -> None:
    """``out/STEM.json`` (:func:`write_results`) and its tables as ``out/STEM.md``
    (:func:`markdown`)."""
    write_results(out / f"{stem}.json", doc, figures)
    text = markdown(doc)
    atomic_write(out / f"{stem}.md", lambda fh: fh.write(text.encode()))

