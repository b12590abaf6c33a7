"""What the bench scripts share: the run header of a results JSON, and writing it."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from meddiff.data.writers import atomic_write
from meddiff.device import resolve_device


def run_header(command: str, device: str) -> dict:
    """``command``, ``device``, ``threads``, ``machine`` and ``torch`` of this run."""
    return {"command": command, "device": str(resolve_device(device)),
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__}


def write_results(path: Path, doc: dict, figure: Path | None) -> None:
    """Write ``doc`` as JSON atomically and say where it and the figure went."""
    atomic_write(path, lambda fh: fh.write((json.dumps(doc, indent=2) + "\n").encode()))
    print(f"wrote {path}" + (f" and {figure}" if figure else "") + f" ({doc['seconds']} s)")
