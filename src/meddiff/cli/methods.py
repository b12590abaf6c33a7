"""``meddiff methods``: the 27 seed systems and every registered method
(:func:`meddiff.api.methods_table`, :func:`meddiff.api.method_rows`; no torch)."""
from __future__ import annotations

import argparse
import json

from meddiff import api
from meddiff.cli.common import common_options, example, print_table

HELP = "the 27 systems and what runs today"
EXAMPLE = "meddiff methods --json"


def add_parser(subparsers) -> argparse.ArgumentParser:
    t = subparsers.add_parser("methods", help=HELP, description=HELP, epilog=example(EXAMPLE))
    common_options(t, device=False, seed=False, json_flag=True)
    t.set_defaults(run=run)
    return t


def run(a: argparse.Namespace) -> None:
    systems, methods = api.methods_table(), api.method_rows()
    if a.json:
        print(json.dumps({"systems": systems, "methods": methods}, indent=2))
        return
    print_table(systems, [("id", "ID", ""), ("family", "family", ""), ("paper", "paper", ""),
                          ("ref", "reference", ""), ("status", "status", "")])
    works = sum(s["status"] == "works" for s in systems)
    print(f"\n{works} of {len(systems)} systems work today (CLI + bundled model + benchmark "
          "row).\n")
    print_table(methods, [("family", "family", ""), ("method", "method", ""),
                          ("system", "system", ""), ("kind", "kind", ""),
                          ("summary", "summary", "")])
