"""What every verb shares: the one-line-error parser, the common options, the table printer.

A usage error prints ``meddiff: error: <message> (see '<prog> --help')`` on one line and exits
with :data:`EXIT_USAGE` (2); :func:`meddiff.cli.main` maps a :class:`meddiff.errors.MeddiffError`
raised by the API to the same line and code.
"""
from __future__ import annotations

import argparse
import inspect
from typing import Any, Callable

from meddiff import api

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"meddiff: error: {message} (see '{self.prog} --help')\n")


def common_options(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    """``--device``, ``--seed`` and optionally ``--json``, the same on every command."""
    p.add_argument("--device", default="auto", choices=api.DEVICE_CHOICES,
                   help="where to run (default: auto = CUDA if available)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print results as JSON")


def defaults(func: Callable) -> dict[str, Any]:
    """The keyword defaults of an API function, so that an option's default and its help text
    come from the one signature instead of a copy."""
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Rows as an aligned text table; ``columns`` are (key, header, format): numbers (a
    non-empty format) right-aligned, text left-aligned, the header underlined with dashes."""
    cells = [[h for _, h, _ in columns]]
    cells += [[format(r[k], f) if f else str(r[k]) for k, _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    numeric = [bool(f) for _, _, f in columns]
    for j, line in enumerate(cells):
        print("  ".join(c.rjust(w) if num else c.ljust(w)
                        for c, w, num in zip(line, widths, numeric)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def call(func: Callable, args: argparse.Namespace) -> Any:
    """``func(**options)`` with every parsed option whose name is a parameter of ``func``
    (``--coil-mode`` -> ``coil_mode``): a verb's options are its API call's arguments by name."""
    params = inspect.signature(func).parameters
    return func(**{k: v for k, v in vars(args).items() if k in params})
