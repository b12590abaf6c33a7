"""The one generic trainer: any ``nn.Module``, any loss, any map-style dataset.

``loss_fn(model, batch, generator) -> scalar tensor`` holds all the method-specific maths (e.g.
the diffusion loss); the trainer does the rest:

* AdamW (Loshchilov & Hutter, 2019, arXiv:1711.05101) with a linear learning-rate warm-up
  (Goyal et al., 2017, arXiv:1706.02677, Sec. 2.2), optional gradient-norm clipping
  (Pascanu et al., 2013, arXiv:1211.5063, Alg. 2), EMA of the weights (:mod:`.ema`);
* optional bfloat16 autocast on CPU and CUDA (weights and optimiser state stay float32);
* a seeded data order that is a function of ``(seed, epoch)`` only; ``dataset.set_epoch(epoch)``
  is called (in the worker that loads the sample) when the dataset has it;
* data parallelism under ``torchrun`` (:mod:`.distributed`), transparent to the caller;
* logs (:mod:`.logs`), a tqdm progress bar, atomic pickle-free checkpoints (:mod:`.checkpoint`);
* exact resume: the checkpoint holds weights, EMA, optimiser state, step, loss history and the
  states of every random generator the step uses (the ``generator`` passed to ``loss_fn`` and
  the global torch RNG used by e.g. dropout, which the trainer seeds inside :meth:`Trainer.fit`
  and restores afterwards). Resuming at step ``k`` and training to ``N`` gives bit-identical
  weights to an uninterrupted run on CPU, provided data loading is itself deterministic given the
  index and epoch (augmentations should not draw from worker-global RNGs);
* a NaN/Inf guard: a non-finite loss or gradient norm stops training before the bad update is
  applied and leaves the last checkpoint untouched.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from tqdm import tqdm

from meddiff.errors import InputError, MeddiffError
from meddiff.train import distributed as dist_utils
from meddiff.train.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from meddiff.config import to_dict
from meddiff.train.config import TrainConfig
from meddiff.train.distributed import STREAM_GLOBAL, STREAM_LOSS, STREAM_WORKERS, derive_seed
from meddiff.train.ema import EMA
from meddiff.train.logs import RunLogger, require_logger

LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]
SampleFn = Callable[[nn.Module, int], None]

HISTORY_LEN = 1000  # loss values kept (and checkpointed) for the summary
FINAL_LOSS_WINDOW = 50
_log = logging.getLogger(__name__)


class NonFiniteLossError(MeddiffError):
    """Training stopped because the loss or the gradient norm was NaN or infinite."""


@dataclass
class StepStats:
    """Result of one optimiser step (loss and grad norm averaged over ranks)."""

    loss: float
    grad_norm: float
    lr: float
    seconds: float


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Learning rate of the (0-based) ``step``: linear ramp to ``base_lr`` over ``warmup_steps``."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested dict/list/tuple) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class _EpochIndexed(Dataset):
    """Dataset view indexed by ``(epoch, index)``; calls ``set_epoch`` where the item is loaded."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.epoch = dataset, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.epoch = epoch
        return self.dataset[index]


class _ResumableBatches(Sampler[list[tuple[int, int]]]):
    """Endless ``(epoch, index)`` batches for one rank, starting at global step ``start_step``."""

    def __init__(self, n: int, config: TrainConfig, ctx: dist_utils.DistContext,
                 start_step: int) -> None:
        self.n, self.config, self.ctx, self.start_step = n, config, ctx, start_step
        self.per_epoch = self._epoch(0, 0).batches_per_epoch()

    def _epoch(self, epoch: int, start: int) -> dist_utils.ShardedBatchSampler:
        return dist_utils.ShardedBatchSampler(self.n, self.config.batch_size, self.config.seed,
                                              epoch, self.ctx.rank, self.ctx.world_size, start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = divmod(self.start_step, self.per_epoch)
        while True:
            for batch in self._epoch(epoch, skip):
                yield [(epoch, i) for i in batch]
            epoch, skip = epoch + 1, 0


class Trainer:
    """Train ``model`` by minimising ``loss_fn(model, batch, generator)`` over ``dataset``.

    ``dataset`` is map-style (``__len__``/``__getitem__``); ``collate`` defaults to torch's
    default collation. ``sample_fn(ema_model, step)``, if given, is called on rank 0 every
    ``config.sample_every`` steps with an eval-mode copy of the model holding the EMA weights.
    ``run_config`` (a JSON-able dict, e.g. the whole experiment config) is stored in every
    checkpoint next to the training config.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, dataset: Dataset, config: TrainConfig,
                 collate: Callable | None = None, *, sample_fn: SampleFn | None = None,
                 run_config: dict | None = None) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise InputError("the trainer needs a map-style dataset with __len__ and __getitem__")
        self.config, self.loss_fn, self.dataset, self.collate = config, loss_fn, dataset, collate
        self.sample_fn, self.run_config = sample_fn, run_config or {}
        require_logger(config.logger)
        self.ctx = dist_utils.setup(config.device)
        self.device = self.ctx.device
        self.model = model.to(self.device)
        self.net: nn.Module = self.model
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._params, lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.ema = EMA(self.model, config.ema_decay)
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(derive_seed(config.seed, STREAM_LOSS, self.ctx.rank))
        self._global_rng = self._seeded_global_rng()
        self._rng_live = False
        self.step = 0
        self.history: deque[float] = deque(maxlen=HISTORY_LEN)
        self.out_dir = Path(config.out_dir)
        self.last_checkpoint: tuple[Path, int] | None = None
        _ResumableBatches(len(dataset), config, self.ctx, 0)  # validates batch size vs data/world

    # ----------------------------------------------------------------- random generators
    def _seeded_global_rng(self) -> dict[str, torch.Tensor]:
        seed = derive_seed(self.config.seed, STREAM_GLOBAL, self.ctx.rank)
        states = {"global": torch.Generator().manual_seed(seed).get_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.Generator(self.device).manual_seed(seed).get_state()
        return states

    def _read_global_rng(self) -> dict[str, torch.Tensor]:
        if not self._rng_live:
            return dict(self._global_rng)
        states = {"global": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def _write_global_rng(self, states: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(states["global"])
        if "cuda" in states:
            torch.cuda.set_rng_state(states["cuda"], self.device)

    @contextmanager
    def _training_rng(self) -> Iterator[None]:
        """Swap the trainer's global-RNG stream in (for dropout etc.) and the caller's back out."""
        outside = {"global": torch.get_rng_state()}
        if self.device.type == "cuda":
            outside["cuda"] = torch.cuda.get_rng_state(self.device)
        self._write_global_rng(self._global_rng)
        self._rng_live = True
        try:
            yield
        finally:
            self._global_rng = self._read_global_rng()
            self._rng_live = False
            self._write_global_rng(outside)

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """Generator states of all ranks, named ``<kind>.rank<r>`` (collective under DDP)."""
        local = {"loss": self.generator.get_state(), **self._read_global_rng()}
        out = {}
        for kind, state in local.items():
            for r, s in enumerate(dist_utils.all_gather(state, self.ctx)):
                out[f"{kind}.rank{r}"] = s
        return out

    # ----------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        """Write a checkpoint of the current state (rank 0 writes; all ranks must call)."""
        rng = self._rng_states()
        if not self.ctx.is_main:
            return None
        state = TrainState(
            step=self.step, model=self.model.state_dict(), ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(), rng=rng, history=list(self.history),
            config={"train": to_dict(self.config), "run": self.run_config},
            extra={"world_size": self.ctx.world_size, "device": self.device.type,
                   "torch": torch.__version__})
        path = save_checkpoint(self.out_dir / "ckpt", state, self.config.keep_previous)
        self.last_checkpoint = (path, self.step)
        return path

    def load(self, path: str | Path) -> int:
        """Restore the full training state from a checkpoint (or out_dir); returns the step."""
        state = load_checkpoint(path)
        self.model.load_state_dict(state.model)
        if state.ema is not None:
            self.ema.load_state_dict(state.ema)
        if state.optimizer is not None:
            self.optimizer.load_state_dict(state.optimizer)
        self.step = state.step
        self.history = deque(state.history, maxlen=HISTORY_LEN)
        self._restore_rng(state)
        saved = state.config.get("train", {})
        for key in ("seed", "batch_size", "lr", "bf16"):
            if key in saved and saved[key] != getattr(self.config, key):
                _log.warning("resuming with %s=%r (checkpoint: %r): not an exact continuation",
                             key, getattr(self.config, key), saved[key])
        return self.step

    def _restore_rng(self, state: TrainState) -> None:
        suffix = f".rank{self.ctx.rank}"
        then = (state.extra.get("world_size"), state.extra.get("device"))
        if then != (self.ctx.world_size, self.device.type) or f"loss{suffix}" not in state.rng:
            _log.warning("checkpoint was written with %s process(es) on %s, now %s on %s: random "
                         "streams are re-seeded, resume is not exact", *then,
                         self.ctx.world_size, self.device.type)
            return
        self.generator.set_state(state.rng[f"loss{suffix}"])
        states = {k: state.rng[f"{k}{suffix}"] for k in ("global", "cuda")
                  if f"{k}{suffix}" in state.rng}
        if self._rng_live:
            self._write_global_rng(states)
        else:
            self._global_rng = states

    def ema_model(self) -> nn.Module:
        """An eval-mode copy of the model holding the EMA weights."""
        model = copy.deepcopy(self.model)
        self.ema.copy_to(model)
        return model.eval()

    # ----------------------------------------------------------------- training
    def train_step(self, batch: Any) -> StepStats:
        """One optimiser step on ``batch`` (moved to the device); ``seconds`` is its wall time.

        Raises :class:`NonFiniteLossError` without applying the update if the loss or the
        gradient norm is not finite (buffers changed by the forward pass itself, e.g. BatchNorm
        statistics, are not rolled back; the last checkpoint holds the good state).
        """
        t0 = time.perf_counter()
        cfg = self.config
        lr = warmup_lr(self.step, cfg.lr, cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        batch = move_to(batch, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = self.loss_fn(self.net, batch, self.generator)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("loss_fn must return a scalar tensor")
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self._params, cfg.grad_clip or math.inf)
        both = torch.stack([loss.detach().float().reshape(()), norm.float().to(loss.device)])
        loss_v, norm_v = dist_utils.all_reduce_mean(both, self.ctx).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(self._non_finite_message(loss_v, norm_v))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        self.step += 1
        self.history.append(loss_v)
        return StepStats(loss_v, norm_v, lr, time.perf_counter() - t0)

    def _non_finite_message(self, loss: float, norm: float) -> str:
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        if self.last_checkpoint is not None:
            path, step = self.last_checkpoint
            kept = f"last good checkpoint: {path} (step {step})"
        else:
            kept = "no checkpoint was written in this run"
        return (f"non-finite {what} at step {self.step + 1}; training stopped without applying "
                f"it, {kept}")

    def _loader(self) -> Iterator[Any]:
        cfg = self.config
        seed = derive_seed(cfg.seed, STREAM_WORKERS, self.step, self.ctx.rank)
        loader = DataLoader(
            _EpochIndexed(self.dataset),
            batch_sampler=_ResumableBatches(len(self.dataset), cfg, self.ctx, self.step),
            collate_fn=self.collate, num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            generator=torch.Generator().manual_seed(seed))
        return iter(loader)

    def _sample(self) -> None:
        training = self._read_global_rng()  # sampling must not perturb the training streams
        try:
            self.sample_fn(self.ema_model(), self.step)
        finally:
            self._write_global_rng(training)

    def _resume(self, resume: bool | str | Path) -> None:
        if resume is True:
            found = latest_checkpoint(self.out_dir)
            if found is None:
                _log.info("no checkpoint in %s, starting from step 0", self.out_dir)
                return
            self.load(found)
        elif resume:
            self.load(resume)

    def fit(self, resume: bool | str | Path = False) -> dict[str, Any]:
        """Train until ``config.steps``; checkpoint every ``ckpt_every`` steps and at the end.

        ``resume=True`` continues from the newest checkpoint in ``out_dir`` if there is one;
        a path resumes from that checkpoint. Returns a summary: ``steps``, ``start_step``,
        ``wall_time_s``, ``final_loss`` (mean of the last 50 losses), ``steps_per_s``,
        ``step_time_s`` / ``data_time_s`` (mean per step) and ``checkpoint``.
        """
        self._resume(resume)
        cfg, main = self.config, self.ctx.is_main
        start = self.step
        logger = RunLogger(cfg.logger, self.out_dir, start) if main else None
        bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not main,
                   mininterval=1.0, dynamic_ncols=True)
        t_start = t_window = time.perf_counter()
        step_time = data_time = 0.0
        window: list[float] = []
        batches = self._loader() if start < cfg.steps else iter(())
        try:
            with self._training_rng():
                while self.step < cfg.steps:
                    t0 = time.perf_counter()
                    batch = next(batches)
                    data_time += time.perf_counter() - t0
                    stats = self.train_step(batch)
                    step_time += stats.seconds
                    window.append(stats.loss)
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        now = time.perf_counter()
                        metrics = {"loss": sum(window) / len(window), "lr": stats.lr,
                                   "grad_norm": stats.grad_norm,
                                   "steps_per_s": len(window) / max(now - t_window, 1e-9),
                                   "elapsed_s": now - t_start}
                        bar.set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)
                        if logger is not None:
                            logger.log(self.step, metrics)
                        window, t_window = [], now
                    if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                        self.save()
                    if (self.sample_fn is not None and cfg.sample_every and main
                            and self.step % cfg.sample_every == 0):
                        self._sample()
        finally:
            del batches
            bar.close()
            if logger is not None:
                logger.close()
        dist_utils.barrier(self.ctx)
        wall = time.perf_counter() - t_start
        done = max(self.step - start, 1)
        tail = list(self.history)[-FINAL_LOSS_WINDOW:]
        return {"steps": self.step, "start_step": start, "wall_time_s": wall,
                "final_loss": sum(tail) / len(tail) if tail else math.nan,
                "steps_per_s": (self.step - start) / max(wall, 1e-9),
                "step_time_s": step_time / done, "data_time_s": data_time / done,
                "checkpoint": str(self.last_checkpoint[0]) if self.last_checkpoint else None}

    def close(self) -> None:
        """Leave the process group if this trainer joined it (call once, after training)."""
        dist_utils.shutdown(self.ctx)
