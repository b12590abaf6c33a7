"""``torchrun -m meddiff.cli train CONFIG`` end to end: two CPU processes (gloo), as users
launch data-parallel training; only rank 0 prints (its progress bar and one summary line)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT_S = 120


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(f"""
model:
  net: {{channels: [8, 16], attention_levels: [false, false], norm_num_groups: 8,
        num_head_channels: 8}}
  image_size: 16
data: {{dataset: brain_slices, length: 8}}
train: {{steps: 3, batch_size: 4, log_every: 1, device: cpu, bf16: true,
        out_dir: {tmp_path / "run"}}}
""")
    return path


def _rank_logs(log_dir: Path) -> dict[int, dict[str, str]]:
    """``{local_rank: {"stdout": text, "stderr": text}}`` from torchrun's ``--log-dir`` tree
    (``<run id>/attempt_0/<local rank>/{stdout,stderr}.log``)."""
    out: dict[int, dict[str, str]] = {}
    for f in log_dir.rglob("*.log"):
        if f.parent.name.isdigit() and f.stem in ("stdout", "stderr"):
            out.setdefault(int(f.parent.name), {})[f.stem] = f.read_text(errors="replace")
    return out


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_only_rank0_speaks(tmp_path):
    cfg = _config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MEDDIFF_ALL_RANKS_VERBOSE", None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a stale torchrun environment must not leak into the launcher
    # torch.distributed.run is the module behind the torchrun script (found without PATH);
    # --standalone picks a free port; --tee keeps the console and writes per-rank log files
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--log-dir", str(tmp_path / "torchrun"), "--tee", "3",
           "-m", "meddiff.cli", "train", str(cfg)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=TIMEOUT_S)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    run = tmp_path / "run"
    ckpt = run / "ckpt" / "last"
    assert (ckpt / "ema.safetensors").is_file() and (ckpt / "state.json").is_file()
    assert (run / "model.json").is_file() and (run / "config.yaml").is_file()
    with (run / "log.csv").open(newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2, 3]

    # the summary line: once on the console, from rank 0
    summaries = [line for line in res.stdout.splitlines() if "trained to step 3" in line]
    assert len(summaries) == 1, res.stdout
    assert str(ckpt) in summaries[0]

    logs = _rank_logs(tmp_path / "torchrun")
    assert sorted(logs) == [0, 1], sorted(logs)
    assert "trained to step 3" in logs[0]["stdout"]
    assert "3/3" in logs[0]["stderr"]                           # rank 0's progress bar
    assert logs[1] == {"stdout": "", "stderr": ""}, logs[1]     # rank 1: silent, no warnings
    # a warning (here bf16 on a CPU without bf16 instructions, if this one lacks them) comes
    # from rank 0 at most once
    assert res.stderr.count("bf16 autocast requested") <= 1
