"""Data-parallel training under ``torchrun`` and seeded, resumable data order.

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus
``MASTER_ADDR``/``MASTER_PORT``); :func:`setup` then joins the process group (``gloo`` on CPU,
``nccl`` on CUDA). Without them it is a no-op single-process context. Gradients are averaged by
``torch.nn.parallel.DistributedDataParallel`` (Li et al., 2020, arXiv:2006.15704).

Only rank 0 speaks: when :func:`setup` joins the group it makes every other rank silent
(:func:`quiet_other_ranks`: its ``print`` output goes to ``os.devnull``, Python warnings are
ignored and log records below ERROR dropped), so ``torchrun --nproc_per_node=N -m meddiff.cli
train CONFIG`` prints one progress bar and one summary. Errors and tracebacks of any rank still
reach stderr. ``MEDDIFF_ALL_RANKS_VERBOSE=1`` keeps every rank's output (for debugging).

The data order is a pure function of ``(seed, epoch)``: a permutation of the dataset split into
global batches; rank ``r`` of ``W`` takes the ``r``-th contiguous slice of each global batch, so
``W`` ranks with batch ``B/W`` see exactly the samples of one process with batch ``B``.
Resuming at a step skips whole batches without loading them.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from meddiff.device import resolve_device
from meddiff.errors import ConfigError

# Tags that separate the random streams derived from one user seed.
STREAM_DATA, STREAM_WORKERS, STREAM_LOSS, STREAM_GLOBAL = 0xDA7A, 0x3025, 0x1055, 0x610B


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from non-negative integers (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, local rank and its torch device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, samples and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


VERBOSE_ENV = "MEDDIFF_ALL_RANKS_VERBOSE"  # set to 1: ranks > 0 keep printing and warning


def quiet_other_ranks(rank: int) -> bool:
    """Silence this process if it is not rank 0 (unless ``MEDDIFF_ALL_RANKS_VERBOSE=1``):
    ``sys.stdout`` goes to ``os.devnull``, Python warnings are ignored and log records below
    ERROR are dropped; errors and tracebacks still reach stderr. Returns whether it silenced.
    For a process that stays a rank > 0 worker for the rest of its life (``torchrun``)."""
    if rank == 0 or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return False
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives with the process
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    return True


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun process group if ``WORLD_SIZE > 1`` (idempotent) and pick the device.

    A rank > 0 that joins the group here is silenced first (:func:`quiet_other_ranks`)."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    if world > 1 and not dist.is_initialized():
        quiet_other_ranks(rank)
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
        owns = True
    return DistContext(rank, world, local_rank, dev, owns)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of ``t`` over ranks (``t`` itself when not distributed). Non-finite values stay so."""
    if not ctx.distributed:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def all_gather(t: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """``t`` from every rank (same shape everywhere), returned on ``t``'s device."""
    if not ctx.distributed:
        return [t]
    comm = t.to(ctx.device)
    parts = [torch.empty_like(comm) for _ in range(ctx.world_size)]
    dist.all_gather(parts, comm)
    return [p.to(t.device) for p in parts]


def barrier(ctx: DistContext) -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if ctx.distributed:
        dist.barrier()


class ShardedBatchSampler(Sampler[list[int]]):
    """Index batches of one epoch for one rank, derived from ``(seed, epoch)`` only.

    The epoch's permutation of ``range(n)`` is cut into ``n // global_batch`` global batches
    (the remainder is dropped); this rank yields slice ``[rank*b, (rank+1)*b)`` of each, with
    ``b = global_batch // world_size``, starting at global batch ``start``.
    """

    def __init__(self, n: int, global_batch: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, start: int = 0) -> None:
        if global_batch % world_size:
            raise ConfigError(f"batch_size {global_batch} is not divisible by the "
                              f"{world_size} processes")
        if n < global_batch:
            raise ConfigError(f"dataset has {n} samples, fewer than batch_size {global_batch}")
        self.n, self.global_batch, self.seed, self.epoch = n, global_batch, seed, epoch
        self.rank, self.world_size, self.start = rank, world_size, start

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return max(self.batches_per_epoch() - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(derive_seed(self.seed, STREAM_DATA, self.epoch))
        perm = rng.permutation(self.n)
        b = self.global_batch // self.world_size
        for j in range(self.start, self.batches_per_epoch()):
            lo = j * self.global_batch + self.rank * b
            yield perm[lo:lo + b].tolist()
