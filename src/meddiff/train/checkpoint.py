"""Atomic, pickle-free training checkpoints (safetensors + JSON).

Layout of one checkpoint directory (``<out_dir>/ckpt/last``, the one before it in
``<out_dir>/ckpt/previous``)::

    model.safetensors   model.state_dict() of the primary network (the one a run exports)
    ema.safetensors     EMA weights, same keys as the model (loads into it directly)
    NAME.model.safetensors, NAME.ema.safetensors
                        the same for every further network NAME of the run (e.g. the
                        discriminator of an adversarial objective)
    state.safetensors   tensors of the training state: "optimizer.<path>" (optimizer state
                        flattened with key prefixes; further networks under
                        "optimizer.<NAME>") and "rng.<name>" (torch generator states, uint8
                        tensors)
    state.json          everything else: step, optimizer structure and hyper-parameters (tensors
                        referenced by key), numpy bit-generator states, loss-history tail,
                        configs, free-form ``extra``

A checkpoint is written into a temporary directory next to ``last`` and moved into place with
``os.replace``; at every instant ``last`` or ``previous`` is a complete checkpoint, so a crash
mid-write never destroys the last good one. Nothing is pickled; loading uses safetensors and json.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from meddiff.errors import InputError
from meddiff.zoo.runs import AVERAGE_WEIGHTS, latest_checkpoint

FORMAT = "meddiff-train-checkpoint/1"

RngState = torch.Tensor | dict


@dataclass
class NetState:
    """Weights, EMA weights and optimiser state of one further network of a run."""

    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict


@dataclass
class TrainState:
    """Everything needed to continue training exactly.

    ``rng`` maps a name to a torch generator state (uint8 tensor, see :func:`rng_state`) or a
    numpy bit-generator state (dict). ``optimizer`` is ``optimizer.state_dict()`` of the primary
    network; ``others`` holds the further networks by name. ``average``: the primary network's
    inference weights (its EMA without the start weights' share), written for the store and
    not read back.
    """

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict | None = None
    rng: dict[str, RngState] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    others: dict[str, NetState] = field(default_factory=dict)
    average: dict[str, torch.Tensor] | None = None


def rng_state(gen: torch.Generator | np.random.Generator) -> RngState:
    """State of a torch generator (uint8 tensor, CPU) or numpy generator (JSON-able dict)."""
    if isinstance(gen, torch.Generator):
        return gen.get_state()
    if isinstance(gen, np.random.Generator):
        return gen.bit_generator.state
    raise TypeError(f"not a random generator: {type(gen).__name__}")


def set_rng_state(gen: torch.Generator | np.random.Generator, state: RngState) -> None:
    """Restore a state produced by :func:`rng_state` into ``gen`` (same kind of generator)."""
    if isinstance(gen, torch.Generator) and isinstance(state, torch.Tensor):
        gen.set_state(state.to(torch.uint8).cpu())
    elif isinstance(gen, np.random.Generator) and isinstance(state, dict):
        gen.bit_generator.state = state
    else:
        raise TypeError(f"cannot restore a {type(state).__name__} state into "
                        f"{type(gen).__name__}")


def encode(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able description of a nested structure; tensors go to ``tensors[<prefix>.<path>]``.

    Dicts keep int keys (encoded as ``{"__dict__": [[key, value], ...]}``), tuples stay tuples.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"checkpoint: unsupported key {k!r} at {prefix}")
            items.append([k, encode(v, f"{prefix}.{k}", tensors)])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {prefix}")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(decode(v, tensors) for v in obj["__tuple__"])
        return {k: decode(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no shared storage (safetensors refuses shared tensors)."""
    out, seen = {}, set()
    for k, t in state.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[k] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_dir(target: Path, state: TrainState) -> None:
    tensors: dict[str, torch.Tensor] = {}
    rng_json = {}
    for name, value in state.rng.items():
        if isinstance(value, torch.Tensor):
            tensors[f"rng.{name}"] = value.detach().cpu().contiguous()
        else:
            rng_json[name] = value
    optimizer = encode(state.optimizer, "optimizer", tensors) if state.optimizer else None
    others = {name: encode(net.optimizer, f"optimizer.{name}", tensors)
              for name, net in state.others.items()}
    meta = {"format": FORMAT, "step": state.step, "optimizer": optimizer, "rng": rng_json,
            "history": [float(x) for x in state.history], "config": state.config,
            "extra": state.extra, "has_ema": state.ema is not None, "others": others}
    save_file(_unshared(state.model), str(target / "model.safetensors"))
    if state.ema is not None:
        save_file(_unshared(state.ema), str(target / "ema.safetensors"))
    if state.average is not None:
        save_file(_unshared(state.average), str(target / AVERAGE_WEIGHTS))
    for name, net in state.others.items():
        save_file(_unshared(net.model), str(target / f"{name}.model.safetensors"))
        save_file(_unshared(net.ema), str(target / f"{name}.ema.safetensors"))
    save_file(tensors, str(target / "state.safetensors"))
    (target / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    for f in target.iterdir():
        _fsync(f)
    _fsync(target)


def save_checkpoint(root: str | Path, state: TrainState, keep_previous: bool = True) -> Path:
    """Write ``state`` atomically to ``root/last`` (moving the old one to ``root/previous``).

    ``root`` is usually ``<out_dir>/ckpt``. Returns the path of the new checkpoint directory.
    If anything fails before the final rename, the existing checkpoints are left untouched.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        _write_dir(tmp, state)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    last, prev = root / "last", root / "previous"
    trash = root / f".tmp-old-{tmp.name}"
    if last.exists():
        if prev.exists():
            os.replace(prev, trash)  # `last` is still complete
        os.replace(last, prev if keep_previous else trash)  # `previous` is complete
    os.replace(tmp, last)
    _fsync(root)
    shutil.rmtree(trash, ignore_errors=True)
    return last


def _resolve(path: str | Path) -> Path:
    found = latest_checkpoint(path)
    if found is None:
        raise InputError(f"no checkpoint found at {path}")
    return found


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors + json only)."""
    path = _resolve(path)
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable checkpoint state {path / 'state.json'}: {err}") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a meddiff training checkpoint (format "
                         f"{meta.get('format')!r})")
    dev = str(device)
    tensors = load_file(str(path / "state.safetensors"), device=dev)
    rng: dict[str, RngState] = {k[len("rng."):]: v.cpu() for k, v in tensors.items()
                                if k.startswith("rng.")}
    rng.update(meta["rng"])
    others = {name: NetState(load_file(str(path / f"{name}.model.safetensors"), device=dev),
                             load_file(str(path / f"{name}.ema.safetensors"), device=dev),
                             decode(opt, tensors))
              for name, opt in meta.get("others", {}).items()}
    return TrainState(
        step=int(meta["step"]),
        model=load_file(str(path / "model.safetensors"), device=dev),
        ema=load_file(str(path / "ema.safetensors"), device=dev) if meta["has_ema"] else None,
        optimizer=decode(meta["optimizer"], tensors) if meta["optimizer"] else None,
        rng=rng, history=list(meta["history"]), config=meta["config"], extra=meta["extra"],
        others=others)


def load_model_weights(path: str | Path, model: nn.Module, use_ema: bool = True) -> int:
    """Load the (EMA, if saved and ``use_ema``) weights of a checkpoint into ``model``.

    ``path`` may be an out_dir, its ``ckpt`` dir, or a checkpoint dir. Returns the step.
    """
    path = _resolve(path)
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    name = "ema.safetensors" if use_ema and meta["has_ema"] else "model.safetensors"
    model.load_state_dict(load_file(str(path / name), device="cpu"))
    return int(meta["step"])
