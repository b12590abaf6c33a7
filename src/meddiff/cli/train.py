"""``meddiff train``: train a network from a YAML run config (:mod:`meddiff.train.run`).

The one verb that runs outside :mod:`meddiff.api` (the inference API knows no trainer); the
trainer is imported when the verb runs.
"""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import MAX_SEED, bounded_int, example

HELP = "train a model from a YAML run config (resumes by default)"
EXAMPLE = "meddiff train configs/brain-prior-64.yaml --device cpu"


def add_parser(subparsers) -> argparse.ArgumentParser:
    r = subparsers.add_parser("train", help=HELP, description=HELP, epilog=example(EXAMPLE))
    r.add_argument("config", help="YAML run config (sections objective, model, data, train, "
                                  "card; see configs/)")
    r.add_argument("--restart", action="store_true",
                   help="ignore existing checkpoints in train.out_dir (otherwise it resumes)")
    r.add_argument("--device", default="auto", choices=api.DEVICE_CHOICES,
                   help="where to train: auto = CUDA if available, else the CPU")
    r.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=None,
                   help="random seed (default: the config's train.seed)")
    r.add_argument("--json", action="store_true", help="print the training summary as JSON")
    r.set_defaults(run=run)
    return r


def run(a: argparse.Namespace) -> None:
    from dataclasses import replace

    from meddiff.train.run import load_run_config, train

    cfg = load_run_config(a.config)
    cfg = replace(cfg, train=replace(cfg.train, device=a.device,
                                     seed=cfg.train.seed if a.seed is None else a.seed))
    summary = train(cfg, resume=not a.restart)
    print(json.dumps(summary, indent=2) if a.json else
          f"trained to step {summary['steps']} in {summary['wall_time_s']:.0f} s, "
          f"final loss {summary['final_loss']:.4g}, checkpoint {summary['checkpoint']}")
