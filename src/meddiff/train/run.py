"""``meddiff train CONFIG.yaml``: a validated run config -> objective -> the one Trainer; and
the export of a finished run into the model store with its card.

A run config has five sections, each read with the strict codec of :mod:`meddiff.config`
(unknown keys and wrong types are one-line errors)::

    objective:   # which objective trains which network (meddiff.train.objectives)
      name: diffusion
      options: {}
    model:       # the spec of the objective's store kind (meddiff.zoo.kinds)
      net: {channels: [32, 64, 128], attention_levels: [false, false, true]}
      image_size: 64
    data:        # meddiff.train.data.DataConfig
      dataset: brain_slices
    train:       # meddiff.train.config.TrainConfig
      steps: 4000
      out_dir: runs/prior64
    card:        # CardConfig: the model card's prose
      summary: brain MRI prior

The run writes ``out_dir/model.json`` at start, so ``meddiff sample --model out_dir`` (and
:func:`meddiff.zoo.store.load`) works on any checkpoint while training goes on, and
``out_dir/config.yaml``, the full run config (defaults filled in); with ``data.dataset: files``
also ``out_dir/train_files.txt`` and ``out_dir/val_files.txt``, the split by subject.
"""
from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from meddiff.config import from_dict, read_yaml, to_dict
from meddiff.data.writers import atomic_write
from meddiff.errors import ConfigError
from meddiff.nets.unet import count_parameters
from meddiff.train.cards import write_card
from meddiff.train.checkpoint import TrainState, load_checkpoint
from meddiff.train.config import TrainConfig
from meddiff.train.data import DataConfig, write_data_split
from meddiff.train.ema import without_start
from meddiff.train.objectives import Objective, get
from meddiff.train.trainer import PRIMARY, Trainer
from meddiff.zoo.kinds import get_kind
from meddiff.zoo.runs import RUN_SPEC, latest_checkpoint
from meddiff.zoo.store import check_bounds, load, save, write_document

_log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"  # the full run config, written into out_dir
MAX_DATA_LENGTH = 2 ** 24  # training items per epoch (the epoch's permutation is held in memory)
DEFAULT_LICENCE = ("Apache-2.0, as meddiff; trained only on images simulated from the MNI152 "
                   "2009a template files shipped with nilearn")


@dataclass(frozen=True)
class ObjectiveConfig:
    """``name``: an objective of :data:`meddiff.train.objectives.OBJECTIVES`; ``options``: its
    options (checked against the objective's ``Options``)."""

    name: str = "diffusion"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CardConfig:
    """The model card's prose: ``summary`` (one line for ``meddiff models``),
    ``description`` (the opening paragraph), ``data``, ``intended_use``, ``limits``,
    ``licence``."""

    summary: str = ""
    description: str = ""
    data: str = ""
    intended_use: str = ""
    limits: str = ""
    licence: str = DEFAULT_LICENCE


@dataclass(frozen=True)
class RunConfig:
    """A training run: ``model`` is the spec of the objective's store kind."""

    train: TrainConfig
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    card: CardConfig = field(default_factory=CardConfig)


def make_objective(cfg: RunConfig) -> Objective:
    """The objective of ``cfg`` (its options parsed and the sections checked together)."""
    cls = get(cfg.objective.name)
    options = from_dict(cls.Options, cfg.objective.options, "objective.options")
    return cls(options, cfg.model, cfg.data, cfg.train)


def run_config(doc: Any, path: str = "") -> RunConfig:
    """A :class:`RunConfig` from a plain mapping (one-line ConfigError for any mistake)."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{path or 'run config'}: expected a mapping")
    cfg = from_dict(RunConfig, doc)
    cls = get(cfg.objective.name)
    options = from_dict(cls.Options, cfg.objective.options, "objective.options")
    spec = from_dict(get_kind(cls.spec_kind(options)).spec, doc.get("model", {}), "model")
    check_bounds(spec, "model")  # widths, levels, steps, size: before anything is built
    if cfg.data.length > MAX_DATA_LENGTH:
        raise ConfigError(f"data.length: {cfg.data.length} is outside [1, {MAX_DATA_LENGTH}]")
    cfg = replace(cfg, model=spec, data=cfg.data.for_model(spec))
    make_objective(cfg)
    return cfg


def load_run_config(path: str | Path) -> RunConfig:
    """Read and check a YAML run config; errors name the file."""
    doc = read_yaml(path)
    try:
        return run_config(doc, str(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _networks(objective: Objective, seed: int) -> dict[str, nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return objective.networks()


#: spec entries a fine-tuning run may change (the data description, the training window size)
_FREE_FOR_FINE_TUNING = ("data", "image_size")


def _initialised(nets: dict[str, nn.Module], cfg: RunConfig, resume: bool) -> dict[str, nn.Module]:
    """``nets`` with the primary network loaded from ``train.init_from`` (fine-tuning), unless
    there is none or the run resumes from its own checkpoint."""
    source = cfg.train.init_from
    if source is None or (resume and latest_checkpoint(cfg.train.out_dir) is not None):
        return nets
    stored = load(source)
    ours, theirs = to_dict(cfg.model), to_dict(stored.spec)
    keys = [k for k in ours if k not in _FREE_FOR_FINE_TUNING and ours[k] != theirs.get(k)]
    if keys or type(stored.spec) is not type(cfg.model):
        raise ConfigError(f"train.init_from {source}: its spec differs from the model section "
                          f"in {', '.join(keys) or 'kind'}")
    nets[PRIMARY].load_state_dict({k: v.float() for k, v in stored.net.state_dict().items()})
    _log.info("initialised %s from %s", PRIMARY, stored.name)
    return nets


def train(cfg: RunConfig, resume: bool = True) -> dict[str, Any]:
    """Run (or continue, ``resume``) the training described by ``cfg``; returns the trainer's
    summary (:meth:`~meddiff.train.trainer.Trainer.fit`)."""
    objective = make_objective(cfg)
    nets = _initialised(_networks(objective, cfg.train.seed), cfg, resume)
    trainer = Trainer(nets, objective.updates(),
                      objective.dataset(), cfg.train, run_config=to_dict(cfg))
    try:
        if trainer.ctx.is_main:
            out = Path(cfg.train.out_dir)
            write_document(out / RUN_SPEC, cfg.model, card={"run_config": to_dict(cfg)},
                           weights="ckpt/last/ema.safetensors", fp16=False)
            text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
            atomic_write(out / RUN_CONFIG, lambda fh: fh.write(text.encode("utf-8")))
            write_data_split(cfg.data, out)  # dataset files: the subject split
        return trainer.fit(resume=resume)
    finally:
        trainer.close()


def _machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def training_facts(cfg: RunConfig, state: TrainState) -> dict[str, Any]:
    """The card's ``training`` entry from the run config and its last checkpoint."""
    t, tail = cfg.train, state.history[-50:]
    return {"steps": state.step, "batch_size": t.batch_size, "lr": t.lr,
            "lr_schedule": t.lr_schedule, "warmup_steps": t.warmup_steps,
            "ema_decay": t.ema_decay, "bf16": t.bf16, "seed": t.seed,
            "final_loss": round(sum(tail) / max(len(tail), 1), 5),
            "wall_time_s": round(60.0 * float(state.extra.get("minutes", 0.0)), 1),
            "machine": _machine()}


def _trained(objective: Objective, state: TrainState, cfg: RunConfig) -> dict[str, nn.Module]:
    """The objective's networks holding the checkpoint's EMA weights without the share of the
    start weights (:func:`~meddiff.train.ema.without_start`; the start is rebuilt exactly as
    training began: seeded initialisation, or ``train.init_from``), eval mode, CPU."""
    start = _initialised(_networks(objective, cfg.train.seed), cfg, resume=False)
    weights = {PRIMARY: state.ema, **{n: part.ema for n, part in state.others.items()}}
    nets = objective.networks()
    for name, net in nets.items():
        net.load_state_dict(without_start(weights[name], start[name].state_dict(),
                                          cfg.train.ema_decay, state.step))
        net.eval().requires_grad_(False)
    return nets


def export(cfg_or_run_dir: RunConfig | str | Path, name: str, dest: str | Path,
           card_dir: str | Path | None = None, reproduce: str | None = None) -> Path:
    """Write the EMA weights (their start share removed, :func:`_trained`) of a finished (or
    interrupted) run to the store as
    ``dest/NAME.{json,safetensors}`` (float16 where the kind allows) with its card, and the
    markdown card ``card_dir/NAME.md`` (default: beside the weights). Validation metrics are
    computed here. ``reproduce``: the card's command line (default: ``meddiff train`` on the
    run's ``config.yaml``). Returns the JSON path."""
    if isinstance(cfg_or_run_dir, RunConfig):
        cfg = cfg_or_run_dir
        state = load_checkpoint(cfg.train.out_dir)
    else:
        state = load_checkpoint(cfg_or_run_dir)
        cfg = run_config(state.config.get("run", {}), str(cfg_or_run_dir))
    objective = make_objective(cfg)
    nets = _trained(objective, state, cfg)
    net = nets[PRIMARY]
    spec = objective.final_spec(net)
    card = {"summary": cfg.card.summary, "description": cfg.card.description,
            "network": objective.network_text(spec, net), "objective": objective.loss_text(),
            "data": cfg.card.data, "parameters": f"{count_parameters(net) / 1e6:.2f} M",
            "training": training_facts(cfg, state), "validation": objective.validate(nets, spec),
            "intended_use": cfg.card.intended_use, "limits": cfg.card.limits,
            "licence": cfg.card.licence,
            "reproduce": reproduce or f"meddiff train {Path(cfg.train.out_dir) / RUN_CONFIG}"}
    path = save(Path(dest) / name, net, spec, card, fp16=True)
    write_card(Path(card_dir or dest) / f"{name}.md", name, card, to_dict(spec))
    return path
