"""Options of the generic :class:`meddiff.train.trainer.Trainer` (loaded with the strict codec
of :mod:`meddiff.config`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meddiff.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class TrainConfig:
    """Options of the generic trainer (AdamW with linear warm-up, EMA, bf16 autocast).

    ``batch_size`` is the global batch (split evenly over DDP ranks). ``grad_clip=None`` disables
    clipping; ``sample_every=None`` disables periodic sampling. ``logger='tensorboard'`` writes
    TensorBoard events in addition to the CSV log. ``device='auto'`` picks CUDA when available.

    Budget and learning rate: training stops after ``steps`` optimiser steps or ``max_minutes``
    of training wall time (summed over resumed segments; ``None``: no time limit), whichever
    comes first. ``lr_schedule='constant'``: linear warm-up over ``warmup_steps`` then ``lr``;
    ``'cosine'``: the warm-up times a cosine decay from ``lr`` to ``min_lr_ratio * lr`` over the
    progress ``p = max(step / steps, minutes / max_minutes)`` (Loshchilov & Hutter 2017,
    arXiv:1608.03983, eq. 5 without restarts), so a run cut by its time budget still ends
    annealed. ``ema_decay=0`` keeps no average (the exported weights are the last ones).

    Fine-tuning: ``init_from`` (a bundled model name, a saved ``.json`` or a run directory)
    starts the trained network from that model's weights instead of a random initialisation;
    its spec must match the run's ``model`` section. A run that resumes from its own checkpoint
    ignores it.
    """

    steps: int
    out_dir: str
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    bf16: bool = False
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    sample_every: int | None = None
    keep_previous: bool = True
    num_workers: int = 0
    logger: Literal["csv", "tensorboard"] = "csv"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_minutes: float | None = None
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    init_from: str | None = None

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _require(self.grad_clip is None or self.grad_clip > 0,
                 f"grad_clip must be > 0 or null, got {self.grad_clip}")
        _require(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _require(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        _require(self.ckpt_every >= 1, f"ckpt_every must be >= 1, got {self.ckpt_every}")
        _require(self.sample_every is None or self.sample_every >= 1,
                 f"sample_every must be >= 1 or null, got {self.sample_every}")
        _require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        _require(bool(self.out_dir), "out_dir must not be empty")
        _require(self.max_minutes is None or self.max_minutes > 0,
                 f"max_minutes must be > 0 or null, got {self.max_minutes}")
        _require(0.0 <= self.min_lr_ratio <= 1.0,
                 f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
