"""Layout of a training run directory, shared by the trainer (which writes it) and the store
(which loads a run's latest averaged weights as a model)::

    out_dir/model.json            the model document (kind, spec, card) of the network trained
    out_dir/start.safetensors     the primary network's weights before the first step
    out_dir/ckpt/last/            the newest complete checkpoint
    out_dir/ckpt/previous/        the one before it
        model.safetensors  ema.safetensors  state.safetensors  state.json
        average.safetensors       the EMA without its share of the start weights (inference)
"""
from __future__ import annotations

from pathlib import Path

RUN_SPEC = "model.json"
START_WEIGHTS = "start.safetensors"
AVERAGE_WEIGHTS = "average.safetensors"
CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "state.safetensors", "state.json")


def latest_checkpoint(path: str | Path) -> Path | None:
    """The newest complete checkpoint under ``path`` (an out_dir, its ``ckpt`` dir, or a
    checkpoint dir itself), or None if there is none."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for root in (path / "ckpt", path):
        for name in ("last", "previous"):
            cand = root / name
            if all((cand / f).is_file() for f in CHECKPOINT_FILES if f != "ema.safetensors"):
                return cand
    return None
