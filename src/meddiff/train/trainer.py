"""The one generic trainer: any networks, any losses, any map-style dataset.

One network: ``Trainer(model, loss_fn, dataset, config)`` with
``loss_fn(model, batch, generator) -> scalar tensor`` holding all the method-specific maths
(e.g. the diffusion loss). Several networks (e.g. a generator and its discriminator):
``Trainer({"generator": g, "discriminator": d}, [Update("discriminator", d_loss),
Update("generator", g_loss)], dataset, config)``; every step runs the updates in order, each
computing ``update.loss(nets, batch, generator, step)`` with the *other* networks frozen and
stepping the optimiser of ``update.net`` only (the alternating scheme of Goodfellow et al.
2014, arXiv:1406.2661, Alg. 1). The first network is the primary one: its update's loss is the
logged ``loss`` and its EMA weights are what a run exports. The trainer does the rest:

* AdamW per network (Loshchilov & Hutter, 2019, arXiv:1711.05101) with a linear learning-rate
  warm-up (Goyal et al., 2017, arXiv:1706.02677, Sec. 2.2), then a constant rate or a cosine
  decay over the progress of the step and wall-time budgets (:func:`learning_rate`); optional
  gradient-norm clipping (Pascanu et al., 2013, arXiv:1211.5063, Alg. 2); EMA of the weights of
  every network (:mod:`.ema`);
* optional bfloat16 autocast on CPU and CUDA (weights and optimiser state stay float32);
* a seeded data order that is a function of ``(seed, epoch)`` only; ``dataset.set_epoch(epoch)``
  is called (in the worker that loads the sample) when the dataset has it;
* data parallelism under ``torchrun`` (:mod:`.distributed`), transparent to the caller;
* logs (:mod:`.logs`), a tqdm progress bar, atomic pickle-free checkpoints (:mod:`.checkpoint`);
* a wall-time budget (``max_minutes``, summed over resumed segments and agreed by all ranks);
* exact resume: the checkpoint holds weights, EMAs, optimiser states, step, loss history and the
  states of every random generator the step uses (the ``generator`` passed to the losses and
  the global torch RNG used by e.g. dropout, which the trainer seeds inside :meth:`Trainer.fit`
  and restores afterwards). Resuming at step ``k`` and training to ``N`` gives bit-identical
  weights to an uninterrupted run on CPU, provided data loading is itself deterministic given the
  index and epoch and no wall-time budget steers the run;
* a NaN/Inf guard: a non-finite loss or gradient norm stops training before that update is
  applied and leaves the last checkpoint untouched.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from tqdm import tqdm

from meddiff.config import to_dict
from meddiff.data.writers import atomic_write
from meddiff.device import bf16_is_fast
from meddiff.errors import ConfigError, InputError, MeddiffError
from meddiff.train import distributed as dist_utils
from meddiff.train.checkpoint import NetState, TrainState, load_checkpoint, save_checkpoint
from meddiff.train.config import TrainConfig
from meddiff.train.distributed import STREAM_GLOBAL, STREAM_LOSS, STREAM_WORKERS, derive_seed
from meddiff.train.ema import EMA, without_start
from meddiff.train.logs import RunLogger, require_logger
from meddiff.zoo.runs import START_WEIGHTS, latest_checkpoint

LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]
UpdateFn = Callable[[Mapping[str, nn.Module], Any, torch.Generator, int], torch.Tensor]
SampleFn = Callable[[nn.Module, int], None]

PRIMARY = "model"  # the network name of a single-network trainer
HISTORY_LEN = 1000  # loss values kept (and checkpointed) for the summary
FINAL_LOSS_WINDOW = 50
_log = logging.getLogger(__name__)


class NonFiniteLossError(MeddiffError):
    """Training stopped because the loss or the gradient norm was NaN or infinite."""


@dataclass(frozen=True)
class Update:
    """One optimiser update of a training step: minimise ``loss(nets, batch, generator, step)``
    over the parameters of network ``net`` and of the networks ``jointly`` (e.g. auxiliary
    heads; one gradient clip over all of them); every other network is frozen meanwhile. Its
    learning rate is ``lr_scale`` times the schedule's."""

    net: str
    loss: UpdateFn
    lr_scale: float = 1.0
    jointly: tuple[str, ...] = ()

    @property
    def trained(self) -> tuple[str, ...]:
        return (self.net, *self.jointly)


@dataclass
class StepStats:
    """Result of one training step (losses and grad norm averaged over ranks).

    ``loss`` / ``grad_norm``: of the primary network's update; ``losses``: every update's loss
    by network name; ``minutes``: training wall time so far (all segments)."""

    loss: float
    grad_norm: float
    lr: float
    seconds: float
    losses: dict[str, float]
    minutes: float


def learning_rate(step: int, config: TrainConfig, minutes: float = 0.0) -> float:
    """Learning rate of the (0-based) ``step`` after ``minutes`` of training.

    Linear warm-up to ``lr`` over ``warmup_steps``, times (``lr_schedule='cosine'``)
    ``r + (1 - r) (1 + cos(pi p)) / 2`` with ``r = min_lr_ratio`` and the progress
    ``p = min(1, max(step / steps, minutes / max_minutes))``.
    """
    warm = 1.0 if config.warmup_steps <= 0 else min(1.0, (step + 1) / config.warmup_steps)
    if config.lr_schedule == "constant":
        return config.lr * warm
    p = step / config.steps
    if config.max_minutes is not None:
        p = max(p, minutes / config.max_minutes)
    r = config.min_lr_ratio
    return config.lr * warm * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0))))


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


def _as_updates(nets: nn.Module | Mapping[str, nn.Module],
                loss: LossFn | Sequence[Update]) -> tuple[dict[str, nn.Module], list[Update]]:
    """Normalise the single-network call form to named networks and updates."""
    models = {PRIMARY: nets} if isinstance(nets, nn.Module) else dict(nets)
    if callable(loss):
        if len(models) != 1:
            raise ConfigError("several networks need a list of Update (one loss per network)")
        name = next(iter(models))
        return models, [Update(name, lambda n, batch, g, step: loss(n[name], batch, g))]
    updates = list(loss)
    unknown = sorted({n for u in updates for n in u.trained} - models.keys())
    if not updates or unknown:
        raise ConfigError(f"updates name unknown networks {unknown}; networks: {list(models)}")
    if next(iter(models)) not in {u.net for u in updates}:
        raise ConfigError("the first (primary) network needs an update of its own")
    return models, updates


def _bf16(requested: bool, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: as ``requested``, except on a device where it is
    slow (:func:`~meddiff.device.bf16_is_fast`), which trains in float32 with one warning."""
    if requested and not bf16_is_fast(device):
        _log.warning("bf16 autocast requested, but this %s has no bfloat16 instructions, where "
                     "it is ~3x slower than float32: training in float32", device.type.upper())
        return False
    return requested


class Trainer:
    """Train ``nets`` by minimising the losses of ``updates`` over ``dataset``.

    ``nets``: one ``nn.Module`` (trained with ``loss_fn(model, batch, generator)``) or a mapping
    name -> module with a list of :class:`Update`; the first network is the primary one.
    ``dataset`` is map-style (``__len__``/``__getitem__``); ``collate`` defaults to torch's
    default collation. ``sample_fn(ema_model, step)``, if given, is called on rank 0 every
    ``config.sample_every`` steps with an eval-mode copy of the primary network holding its EMA
    weights. ``run_config`` (a JSON-able dict, e.g. the whole experiment config) is stored in
    every checkpoint next to the training config.
    """

    def __init__(self, nets: nn.Module | Mapping[str, nn.Module],
                 loss: LossFn | Sequence[Update], dataset: Dataset, config: TrainConfig,
                 collate: Callable | None = None, *, sample_fn: SampleFn | None = None,
                 run_config: dict | None = None) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise InputError("the trainer needs a map-style dataset with __len__ and __getitem__")
        models, self.updates = _as_updates(nets, loss)
        self.config, self.dataset, self.collate = config, dataset, collate
        self.sample_fn, self.run_config = sample_fn, run_config or {}
        require_logger(config.logger)
        self.ctx = dist_utils.setup(config.device)
        self.device = self.ctx.device
        self.bf16 = _bf16(config.bf16, self.device)
        self.models = {name: m.to(self.device) for name, m in models.items()}
        self.primary = next(iter(self.models))
        self.wrapped = {name: self._wrap(m) for name, m in self.models.items()}
        self._params = {name: [p for p in m.parameters() if p.requires_grad]
                        for name, m in self.models.items()}
        self.optimizers = {name: torch.optim.AdamW(params, lr=config.lr,
                                                   weight_decay=config.weight_decay)
                           for name, params in self._params.items() if params}
        self.emas = {name: EMA(m, config.ema_decay) for name, m in self.models.items()}
        # the primary network's start weights: the EMA's share of them is removed from the
        # inference weights of every checkpoint (None: a resumed run that did not keep them)
        self._start: dict[str, torch.Tensor] | None = {
            k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(derive_seed(config.seed, STREAM_LOSS, self.ctx.rank))
        self._global_rng = self._seeded_global_rng()
        self._rng_live = False
        self.step = 0
        self.minutes_before = 0.0  # training wall time of earlier segments (from the checkpoint)
        self.minutes = 0.0         # training wall time so far, agreed by all ranks
        self.history: deque[float] = deque(maxlen=HISTORY_LEN)
        self.out_dir = Path(config.out_dir)
        self.last_checkpoint: tuple[Path, int] | None = None
        _ResumableBatches(len(dataset), config, self.ctx, 0)  # validates batch size vs data/world

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.ctx.distributed or not any(p.requires_grad for p in model.parameters()):
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    @property
    def model(self) -> nn.Module:
        """The primary network."""
        return self.models[self.primary]

    @property
    def ema(self) -> EMA:
        """The EMA of the primary network."""
        return self.emas[self.primary]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of the primary network."""
        return self.optimizers[self.primary]

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
        others = {name: NetState(m.state_dict(), self.emas[name].state_dict(),
                                 self.optimizers[name].state_dict())
                  for name, m in self.models.items() if name != self.primary}
        ema = self.ema.state_dict()
        average = None if self._start is None or not self.config.ema_decay else without_start(
            ema, self._start, self.config.ema_decay, self.step)  # decay 0: the EMA is the model
        state = TrainState(
            step=self.step, model=self.model.state_dict(), ema=ema, average=average,
            optimizer=self.optimizer.state_dict(), rng=rng, history=list(self.history),
            config={"train": to_dict(self.config), "run": self.run_config},
            extra={"world_size": self.ctx.world_size, "device": self.device.type,
                   "torch": torch.__version__, "minutes": self.minutes},
            others=others)
        path = save_checkpoint(self.out_dir / "ckpt", state, self.config.keep_previous)
        self.last_checkpoint = (path, self.step)
        return path

    def _write_start(self) -> None:
        """Keep the start weights in ``out_dir`` (rank 0; a run from step 0 replaces them)."""
        path = self.out_dir / START_WEIGHTS
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: fh.write(safetensors_bytes(self._start)))

    def load(self, path: str | Path) -> int:
        """Restore the full training state from a checkpoint (or out_dir); returns the step."""
        state = load_checkpoint(path)
        start = self.out_dir / START_WEIGHTS
        self._start = load_file(str(start)) if start.is_file() else None
        saved_nets = {self.primary, *state.others}
        if saved_nets != set(self.models):
            raise InputError(f"{path}: checkpoint holds networks {sorted(saved_nets)}, this run "
                             f"trains {sorted(self.models)}")
        parts = {self.primary: NetState(state.model, state.ema, state.optimizer), **state.others}
        for name, part in parts.items():
            self.models[name].load_state_dict(part.model)
            if part.ema is not None:
                self.emas[name].load_state_dict(part.ema)
            if part.optimizer is not None:
                self.optimizers[name].load_state_dict(part.optimizer)
        self.step = state.step
        self.minutes_before = self.minutes = float(state.extra.get("minutes", 0.0))
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

    def ema_model(self, name: str | None = None) -> nn.Module:
        """An eval-mode copy of network ``name`` (default: the primary) with its EMA weights."""
        name = name or self.primary
        model = copy.deepcopy(self.models[name])
        self.emas[name].copy_to(model)
        return model.eval()

    # ----------------------------------------------------------------- training
    @contextmanager
    def _only_trains(self, names: tuple[str, ...]) -> Iterator[dict[str, nn.Module]]:
        """Freeze every network not in ``names``; yields the networks to hand to the loss (the
        trained ones DDP-wrapped, the others plain)."""
        frozen = [p for other, params in self._params.items() if other not in names
                  for p in params]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield {n: (self.wrapped[n] if n in names else m) for n, m in self.models.items()}
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _apply(self, update: Update, batch: Any, lr: float, t_segment: float) -> list[float]:
        """One optimiser update; returns ``[loss, grad_norm, minutes]`` averaged over ranks."""
        cfg = self.config
        optimizers = [self.optimizers[n] for n in update.trained]
        for group in (g for opt in optimizers for g in opt.param_groups):
            group["lr"] = lr * update.lr_scale
        with self._only_trains(update.trained) as nets, \
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = update.loss(nets, batch, self.generator, self.step)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("a loss must return a scalar tensor")
        loss.backward()
        params = [p for n in update.trained for p in self._params[n]]
        norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
        minutes = self.minutes_before + (time.perf_counter() - t_segment) / 60.0
        local = torch.tensor([float(loss.detach().float()), float(norm), minutes],
                             dtype=torch.float64, device=self.device)
        values = dist_utils.all_reduce_mean(local, self.ctx).tolist()
        if not (math.isfinite(values[0]) and math.isfinite(values[1])):
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            raise NonFiniteLossError(self._non_finite_message(update.net, *values[:2]))
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return values

    def train_step(self, batch: Any, t_segment: float | None = None) -> StepStats:
        """One training step (every update once) on ``batch`` (moved to the device).

        ``t_segment``: ``time.perf_counter()`` at the start of this training segment (for the
        wall-time budget; default now). Raises :class:`NonFiniteLossError` without applying the
        failing update if its loss or gradient norm is not finite (buffers changed by the
        forward pass itself, e.g. BatchNorm statistics, and earlier updates of the step are not
        rolled back; the last checkpoint holds the good state).
        """
        t0 = time.perf_counter()
        lr = learning_rate(self.step, self.config, self.minutes)
        for net in self.wrapped.values():
            net.train()
        batch = move_to(batch, self.device)
        losses, norm = {}, math.nan
        for update in self.updates:
            loss, grad_norm, self.minutes = self._apply(update, batch, lr, t_segment or t0)
            losses[update.net] = loss
            if update.net == self.primary:
                norm = grad_norm
        for name, model in self.models.items():
            self.emas[name].update(model)
        self.step += 1
        self.history.append(losses[self.primary])
        return StepStats(losses[self.primary], norm, lr, time.perf_counter() - t0, losses,
                         self.minutes)

    def _non_finite_message(self, name: str, loss: float, norm: float) -> str:
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        if len(self.models) > 1:
            what += f" of network {name!r}"
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

    def _done(self) -> bool:
        budget = self.config.max_minutes
        return self.step >= self.config.steps or (budget is not None and self.minutes >= budget)

    def _log_columns(self) -> tuple[str, ...]:
        return tuple(f"loss_{u.net}" for u in self.updates if u.net != self.primary)

    def fit(self, resume: bool | str | Path = False) -> dict[str, Any]:
        """Train until ``config.steps`` or the wall-time budget; checkpoint every ``ckpt_every``
        steps and at the end.

        ``resume=True`` continues from the newest checkpoint in ``out_dir`` if there is one;
        a path resumes from that checkpoint. Returns a summary: ``steps``, ``start_step``,
        ``wall_time_s`` (this segment), ``train_minutes`` (all segments), ``final_loss`` (mean
        of the last 50 primary losses), ``steps_per_s``, ``step_time_s`` / ``data_time_s`` (mean
        per step), ``stopped`` (``"steps"`` or ``"time"``) and ``checkpoint``.
        """
        self._resume(resume)
        cfg, main = self.config, self.ctx.is_main
        if self.step == 0 and main:
            self._write_start()
        start = self.step
        extra = self._log_columns()
        logger = RunLogger(cfg.logger, self.out_dir, start, extra) if main else None
        bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not main,
                   mininterval=1.0, dynamic_ncols=True)
        t_start = t_window = time.perf_counter()
        step_time = data_time = 0.0
        window: list[StepStats] = []
        batches = self._loader() if not self._done() else iter(())
        try:
            with self._training_rng():
                while not self._done():
                    t0 = time.perf_counter()
                    batch = next(batches)
                    data_time += time.perf_counter() - t0
                    stats = self.train_step(batch, t_start)
                    step_time += stats.seconds
                    window.append(stats)
                    bar.update(1)
                    last = self._done()
                    if self.step % cfg.log_every == 0 or last:
                        now = time.perf_counter()
                        metrics = {"loss": sum(s.loss for s in window) / len(window),
                                   "lr": stats.lr, "grad_norm": stats.grad_norm,
                                   "steps_per_s": len(window) / max(now - t_window, 1e-9),
                                   "elapsed_s": now - t_start}
                        for column in extra:
                            net = column[len("loss_"):]
                            metrics[column] = sum(s.losses[net] for s in window) / len(window)
                        bar.set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)
                        if logger is not None:
                            logger.log(self.step, metrics)
                        window, t_window = [], now
                    if self.step % cfg.ckpt_every == 0 or last:
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
                "train_minutes": self.minutes,
                "final_loss": sum(tail) / len(tail) if tail else math.nan,
                "steps_per_s": (self.step - start) / max(wall, 1e-9),
                "step_time_s": step_time / done, "data_time_s": data_time / done,
                "stopped": "steps" if self.step >= cfg.steps else "time",
                "checkpoint": str(self.last_checkpoint[0]) if self.last_checkpoint else None}

    def close(self) -> None:
        """Leave the process group if this trainer joined it (call once, after training)."""
        dist_utils.shutdown(self.ctx)
