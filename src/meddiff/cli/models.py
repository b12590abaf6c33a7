"""``meddiff models [NAME]``: the bundled models (:func:`meddiff.api.models_table`), or what one
model expects of its input (:func:`meddiff.api.model_contract`); reads JSON, markdown cards and
safetensors headers only, no torch."""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import common_options, example, print_table

HELP = "bundled models, or one model's input contract"
EXAMPLE = "meddiff models brain-prior-64"


def add_parser(subparsers) -> argparse.ArgumentParser:
    o = subparsers.add_parser("models", help=HELP, description=HELP, epilog=example(EXAMPLE))
    o.add_argument("name", nargs="?", default=None,
                   help="a bundled name, NAME.json or run dir: print its input contract (image "
                        "size, channels, pixel size, orientation, value range) instead of the "
                        "list")
    common_options(o, device=False, seed=False, json_flag=True)
    o.set_defaults(run=run)
    return o


def run(a: argparse.Namespace) -> None:
    if a.name is not None:
        print_contract(api.model_contract(a.name), a.json)
        return
    rows = api.models_table()
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print_table(rows, [("name", "name", ""), ("summary", "kind", ""),
                       ("image_size", "size", ""), ("parameters", "parameters", ""),
                       ("steps", "train steps", ""), ("card", "model card (in the package)", "")])


def print_contract(info: dict, as_json: bool) -> None:
    """A model's name, kind, summary and input contract, one item per line (or JSON)."""
    if as_json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['name']}: {info['summary']} ({info['kind']})\n\ninput contract:")
    width = max(len(what) for what in info["contract"])
    for what, text in info["contract"].items():
        print(f"  {what.ljust(width)}  {text}")
    if info["card"]:
        print(f"\nmodel card: {info['card']}")
