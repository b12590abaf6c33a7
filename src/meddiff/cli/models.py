"""``meddiff models``: the bundled models (:func:`meddiff.api.models_table`; reads JSON and
safetensors headers only, no torch)."""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import common_options, print_table

HELP = "bundled models"


def add_parser(subparsers) -> argparse.ArgumentParser:
    o = subparsers.add_parser("models", help=HELP)
    common_options(o, json_flag=True)
    o.set_defaults(run=run)
    return o


def run(a: argparse.Namespace) -> None:
    rows = api.models_table()
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print_table(rows, [("name", "name", ""), ("summary", "kind", ""),
                       ("image_size", "size", ""), ("parameters", "parameters", ""),
                       ("steps", "train steps", ""), ("card", "model card (in the package)", "")])
