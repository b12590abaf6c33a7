"""Generic trainer: learning, EMA maths, exact resume, NaN guard, checkpoints, DDP."""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from meddiff.errors import ConfigError
from meddiff.train import checkpoint
from meddiff.train.checkpoint import (TrainState, load_checkpoint, load_model_weights,
                                      save_checkpoint)
from meddiff.train.config import TrainConfig
from meddiff.train.distributed import ShardedBatchSampler
from meddiff.train.ema import EMA, without_start
from meddiff.train.trainer import NonFiniteLossError, Trainer, learning_rate
from meddiff.zoo.runs import latest_checkpoint
from ddp_env import as_rank, free_port

W_TRUE = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


pytestmark = pytest.mark.usefixtures("one_thread")


class ToyData(Dataset):
    """y = x @ W_TRUE for 64 fixed Gaussian x; records the epochs it is told about."""

    def __init__(self, n: int = 64) -> None:
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
        self.y = self.x @ W_TRUE
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def make_model(seed: int = 0, stochastic: bool = True) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if stochastic:  # BatchNorm buffers + dropout (global RNG) exercise the full state
            return nn.Sequential(nn.Linear(4, 32), nn.BatchNorm1d(32), nn.GELU(),
                                 nn.Dropout(0.1), nn.Linear(32, 1))
        return nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))


def noisy_mse(model: nn.Module, batch: dict, g: torch.Generator) -> torch.Tensor:
    x = batch["x"] + 0.01 * torch.randn(batch["x"].shape, generator=g)
    return F.mse_loss(model(x).float(), batch["y"])


def plain_mse(model: nn.Module, batch: dict, g: torch.Generator) -> torch.Tensor:
    return F.mse_loss(model(batch["x"]), batch["y"])


def config(tmp_path, name: str, **kw) -> TrainConfig:
    base = dict(steps=12, out_dir=str(tmp_path / name), batch_size=8, lr=1e-2, warmup_steps=3,
                ema_decay=0.9, log_every=2, ckpt_every=6, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_schedules():
    warm = TrainConfig(steps=10, out_dir="o", lr=1.0, warmup_steps=4)
    assert [learning_rate(s, warm) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert learning_rate(0, TrainConfig(steps=10, out_dir="o", lr=0.3)) == 0.3
    cos = TrainConfig(steps=10, out_dir="o", lr=2.0, lr_schedule="cosine", min_lr_ratio=0.1,
                      max_minutes=4.0)
    assert learning_rate(0, cos) == pytest.approx(2.0)
    assert learning_rate(5, cos) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half way in steps
    assert learning_rate(1, cos, minutes=2.0) == pytest.approx(1.1)  # half way in time
    assert learning_rate(9, cos, minutes=8.0) == pytest.approx(0.2)  # past the budget: floor
    assert learning_rate(1, replace(cos, warmup_steps=4)) == pytest.approx(
        0.5 * 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.1))))


def test_loss_decreases_and_logs(tmp_path):
    data = ToyData()
    cfg = config(tmp_path, "run", steps=60, batch_size=16, lr=3e-2, log_every=10, ckpt_every=30)
    trainer = Trainer(make_model(), noisy_mse, data, cfg)
    summary = trainer.fit()
    first = trainer.history[0]
    assert summary["steps"] == 60 and summary["final_loss"] < 0.1 * first
    assert summary["steps_per_s"] > 0 and summary["step_time_s"] > 0
    assert data.epochs == list(range(15))  # 64 samples / batch 16 = 4 steps per epoch
    with open(cfg.out_dir + "/log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert load_model_weights(cfg.out_dir, make_model(1), use_ema=True) == 60


def test_tensorboard_logger_needs_package(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs the tensorboard package"):
            Trainer(make_model(), noisy_mse, ToyData(),
                    config(tmp_path, "tb", logger="tensorboard"))
    else:
        Trainer(make_model(), noisy_mse, ToyData(), config(tmp_path, "tb", steps=2,
                                                           logger="tensorboard")).fit()
        assert any((tmp_path / "tb" / "tb").iterdir())


def test_bad_batch_size_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="dataset has 64 samples, fewer than batch_size 100"):
        Trainer(make_model(), noisy_mse, ToyData(), config(tmp_path, "bs", batch_size=100))


def test_ema_golden_values():
    model = nn.Linear(1, 1, bias=False)
    model.register_buffer("count", torch.tensor(0))
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9)
    for value, count in ((2.0, 1), (4.0, 2)):
        with torch.no_grad():
            model.weight.fill_(value)
            model.count.fill_(count)
        ema.update(model)
    # by hand: 0.9*1 + 0.1*2 = 1.1; 0.9*1.1 + 0.1*4 = 1.39; buffers are copied, not averaged
    assert ema.state_dict()["weight"].item() == pytest.approx(1.39, abs=1e-6)
    assert ema.state_dict()["count"].item() == 2
    other = EMA(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    other.copy_to(model)
    assert model.weight.item() == pytest.approx(1.39, abs=1e-6)
    # without the start (1.0): weights 0.1 * 0.9 on theta_1 = 2 and 0.1 on theta_2 = 4,
    # normalised: (0.18 + 0.4) / 0.19
    start = {"weight": torch.ones(1, 1), "count": torch.tensor(0)}
    out = without_start(ema.state_dict(), start, 0.9, 2)
    assert out["weight"].item() == pytest.approx(0.58 / 0.19, abs=1e-6)
    assert out["count"].item() == 2  # buffers as they are
    assert without_start(ema.state_dict(), start, 0.9, 0)["weight"].item() == pytest.approx(1.39)


class Killed(RuntimeError):
    pass


def killing(loss_fn, at_call: int):
    calls = {"n": 0}

    def wrapped(model, batch, g):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise Killed("simulated kill")
        return loss_fn(model, batch, g)
    return wrapped


@pytest.mark.parametrize("bf16", [False, True])
def test_exact_resume_after_kill(tmp_path, bf16):
    straight = Trainer(make_model(), noisy_mse, ToyData(), config(tmp_path, "a", bf16=bf16))
    straight.fit()
    cfg_b = config(tmp_path, "b", bf16=bf16)
    with pytest.raises(Killed):  # dies during step 9, after the checkpoint at step 6
        Trainer(make_model(), killing(noisy_mse, 9), ToyData(), cfg_b).fit()
    assert load_checkpoint(cfg_b.out_dir).step == 6
    resumed = Trainer(make_model(seed=7), noisy_mse, ToyData(), cfg_b)
    summary = resumed.fit(resume=True)
    assert summary["start_step"] == 6 and summary["steps"] == 12
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert states_equal(straight.ema.state_dict(), resumed.ema.state_dict())
    # the inference average removes the *first* segment's start weights (kept in out_dir),
    # not the differently seeded network the resumed trainer was built with
    averages = [load_file(str(latest_checkpoint(c) / "average.safetensors"))
                for c in (straight.out_dir, cfg_b.out_dir)]
    assert states_equal(*averages)
    assert list(straight.history) == list(resumed.history)
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(states_equal(opt_a[i], opt_b[i]) for i in opt_a)
    with open(cfg_b.out_dir + "/log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4, 6, 8, 10, 12]


def test_wall_time_budget_stops_and_anneals(tmp_path, monkeypatch):
    clock = {"t": 0.0}

    def fake_clock() -> float:  # every reading is 3 s later: a step lasts 0.1-0.2 "minutes"
        clock["t"] += 3.0
        return clock["t"]
    monkeypatch.setattr("meddiff.train.trainer.time.perf_counter", fake_clock)
    cfg = config(tmp_path, "budget", steps=100, max_minutes=1.0, lr_schedule="cosine",
                 warmup_steps=0, ckpt_every=50)
    trainer = Trainer(make_model(), noisy_mse, ToyData(), cfg)
    summary = trainer.fit()
    assert summary["stopped"] == "time" and 1 < summary["steps"] < 20
    assert summary["train_minutes"] >= 1.0
    saved = load_checkpoint(cfg.out_dir)  # the final checkpoint is written at the stop
    assert saved.step == summary["steps"] and saved.extra["minutes"] >= 1.0
    with open(cfg.out_dir + "/log.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.2 * cfg.lr
    again = Trainer(make_model(), noisy_mse, ToyData(), cfg).fit(resume=True)
    assert again["start_step"] == again["steps"] == summary["steps"]  # budget already spent


def test_data_order_does_not_depend_on_worker_count(tmp_path):
    runs = []
    for workers in (0, 2):
        cfg = config(tmp_path, f"w{workers}", steps=10, num_workers=workers)  # crosses an epoch
        trainer = Trainer(make_model(), noisy_mse, ToyData(), cfg)
        trainer.fit()
        runs.append(trainer.model.state_dict())
    assert states_equal(*runs)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    def nan_at_5(model, batch, g, calls={"n": 0}):
        calls["n"] += 1
        loss = noisy_mse(model, batch, g)
        return loss * float("nan") if calls["n"] == 5 else loss

    cfg = config(tmp_path, "nan", steps=10, ckpt_every=2)
    trainer = Trainer(make_model(), nan_at_5, ToyData(), cfg)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 5;.*\(step 4\)"):
        trainer.fit()
    saved = load_checkpoint(cfg.out_dir)
    assert saved.step == 4 and trainer.step == 4
    assert load_checkpoint(os.path.join(cfg.out_dir, "ckpt", "previous")).step == 2
    # the bad update was not applied: the parameters in memory are the checkpointed ones
    # (buffers such as BatchNorm statistics are updated by the failed forward pass itself)
    params = dict(trainer.model.named_parameters())
    assert states_equal({k: saved.model[k] for k in params}, {k: p.data for k, p in params.items()})
    assert all(torch.isfinite(t).all() for t in saved.model.values())


def test_checkpoint_is_pickle_free_and_complete(tmp_path):
    cfg = config(tmp_path, "ck", steps=4, ckpt_every=4)
    trainer = Trainer(make_model(), noisy_mse, ToyData(), cfg, run_config={"net": {"ch": 8}})
    trainer.fit()
    last = latest_checkpoint(cfg.out_dir)
    names = sorted(p.name for p in last.iterdir())
    assert names == ["average.safetensors", "ema.safetensors", "model.safetensors", "state.json",
                     "state.safetensors"]
    for p in last.iterdir():
        head = p.read_bytes()[:2]
        assert head not in (b"\x80\x02", b"\x80\x04", b"\x80\x05", b"PK")  # pickle / torch zip
        if p.suffix == ".safetensors":
            with safe_open(str(p), framework="pt") as f:
                assert len(list(f.keys())) > 0
    meta = json.loads((last / "state.json").read_text())
    assert meta["step"] == 4 and meta["config"]["run"] == {"net": {"ch": 8}}
    assert meta["config"]["train"]["batch_size"] == 8
    tensors = load_file(str(last / "state.safetensors"))
    assert any(k.startswith("optimizer.") for k in tensors)
    assert tensors["rng.loss.rank0"].dtype == torch.uint8
    restored = load_checkpoint(last).optimizer
    current = trainer.optimizer.state_dict()
    assert restored["param_groups"] == current["param_groups"]
    assert all(states_equal(restored["state"][i], current["state"][i]) for i in current["state"])


def _state(step: int) -> TrainState:
    return TrainState(step=step, model={"w": torch.full((3,), float(step))},
                      ema={"w": torch.zeros(3)}, history=[1.0, 0.5])


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    save_checkpoint(root, _state(1))
    real_save = checkpoint.save_file

    def dies_on_second_file(tensors, filename, *a, **k):
        if not filename.endswith("model.safetensors"):
            raise KeyboardInterrupt("killed while writing")
        real_save(tensors, filename, *a, **k)
    monkeypatch.setattr(checkpoint, "save_file", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(root, _state(2))
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert load_checkpoint(root).step == 1
    assert sorted(p.name for p in root.iterdir()) == ["last"]

    save_checkpoint(root, _state(2))
    real_replace, calls = os.replace, {"n": 0}

    def dies_on_final_rename(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # previous->trash, last->previous done; tmp->last dies
            raise KeyboardInterrupt("killed between renames")
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", dies_on_final_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(root, _state(3))
    monkeypatch.setattr(os, "replace", real_replace)
    assert latest_checkpoint(root).name == "previous" and load_checkpoint(root).step == 2
    save_checkpoint(root, _state(4))  # recovers and cleans up stale temporaries
    assert load_checkpoint(root).step == 4
    assert sorted(p.name for p in root.iterdir()) == ["last", "previous"]


def test_rng_and_nested_state_round_trip(tmp_path):
    npg, tg = np.random.default_rng(5), torch.Generator().manual_seed(5)
    npg.random(3), torch.rand(3, generator=tg)
    nested = {"state": {0: {"step": torch.tensor(3.0), "buf": torch.ones(2, 2)}},
              "param_groups": [{"betas": (0.9, 0.99), "lr": 1e-3, "params": [0], "x": None}]}
    st = _state(1)
    st.rng, st.optimizer = {"np": checkpoint.rng_state(npg), "t": checkpoint.rng_state(tg)}, nested
    save_checkpoint(tmp_path, st)
    back = load_checkpoint(tmp_path)
    assert back.optimizer["param_groups"] == nested["param_groups"]
    assert states_equal(back.optimizer["state"][0], nested["state"][0])
    npg2, tg2 = np.random.default_rng(0), torch.Generator()
    checkpoint.set_rng_state(npg2, back.rng["np"])
    checkpoint.set_rng_state(tg2, back.rng["t"])
    assert np.array_equal(npg.random(4), npg2.random(4))
    assert torch.equal(torch.rand(4, generator=tg), torch.rand(4, generator=tg2))


def test_sharded_sampler_partitions_global_batches():
    full = list(ShardedBatchSampler(10, 4, seed=1, epoch=0))
    ranks = [list(ShardedBatchSampler(10, 4, seed=1, epoch=0, rank=r, world_size=2))
             for r in range(2)]
    assert len(full) == 2 and all(len(b) == 4 for b in full)
    assert [a + b for a, b in zip(*ranks)] == full
    assert full == list(ShardedBatchSampler(10, 4, seed=1, epoch=0))
    assert full != list(ShardedBatchSampler(10, 4, seed=1, epoch=1))
    assert list(ShardedBatchSampler(10, 4, seed=1, epoch=0, start=1)) == full[1:]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    as_rank(rank, port)
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=6, out_dir=out_dir + "/ddp", batch_size=8, lr=1e-2, warmup_steps=2,
                      ema_decay=0.9, log_every=3, ckpt_every=6, device="cpu", seed=3)
    trainer = Trainer(make_model(stochastic=False), plain_mse, ToyData(), cfg)
    summary = trainer.fit()
    save_file(trainer.model.state_dict(), f"{out_dir}/rank{rank}.safetensors")
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"history": list(trainer.history), "ckpt": summary["checkpoint"]}, f)
    trainer.close()


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    # fork: the workers reuse the imported modules (spawn would re-import torch in each); they
    # run single-threaded, which keeps forking after OpenMP use in this process safe
    mp.start_processes(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2,
                       start_method="fork")
    cfg = TrainConfig(steps=6, out_dir=str(tmp_path / "single"), batch_size=8, lr=1e-2,
                      warmup_steps=2, ema_decay=0.9, log_every=3, ckpt_every=6, device="cpu",
                      seed=3)
    single = Trainer(make_model(stochastic=False), plain_mse, ToyData(), cfg)
    single.fit()
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert states_equal(r0, r1)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0[k], v, atol=1e-5, rtol=0)
    assert not torch.equal(r0["0.weight"], make_model(stochastic=False).state_dict()["0.weight"])
    meta = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert meta[0]["history"] == meta[1]["history"]  # all-reduced loss
    np.testing.assert_allclose(meta[0]["history"], list(single.history), rtol=1e-5)
    assert meta[0]["ckpt"] is not None and meta[1]["ckpt"] is None  # only rank 0 writes
    assert load_checkpoint(tmp_path / "ddp").extra["world_size"] == 2
