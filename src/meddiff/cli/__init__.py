"""``meddiff`` command line: one module per verb, a thin layer over :mod:`meddiff.api`.

Every verb module has ``HELP`` (its line in ``meddiff --help``), ``add_parser(subparsers)`` and
``run(args)``; it parses, calls the API and prints, nothing else. Only the verb being run gets
its full parser: a verb's options may name task defaults that load torch, which ``meddiff
--help``, ``methods`` and ``models`` never need. Every command takes ``--device auto|cpu|cuda``
and ``--seed``; commands that print metrics take ``--json``. Errors the user can cause print one
line ``meddiff: error: ...`` and exit with 2; Ctrl-C exits with 130.
"""
from __future__ import annotations

import importlib
import sys

from meddiff import __version__
from meddiff.cli.common import EXIT_USAGE, Parser
from meddiff.errors import MeddiffError

VERBS = ("sample", "denoise", "demo", "methods", "models", "train", "reconstruct", "detect",
         "segment")


def build_parser(verb: str | None = None) -> Parser:
    """The ``meddiff`` parser; only ``verb`` (None: none) gets its options, the other verbs are
    listed with their help line."""
    p = Parser(prog="meddiff", description="Diffusion models for medical image analysis.")
    p.add_argument("--version", action="version", version=f"meddiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in VERBS:
        module = importlib.import_module(f"{__name__}.{name}")
        if name == verb:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``meddiff ARGV``; returns the exit code (0, 2 for a user error, 130 on Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = argv[0] if argv and argv[0] in VERBS else None
    args = build_parser(verb).parse_args(argv)
    try:
        args.run(args)
    except MeddiffError as err:
        print(f"meddiff: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("meddiff: interrupted", file=sys.stderr)
        return 130
    return 0
