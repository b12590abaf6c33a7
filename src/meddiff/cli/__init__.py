"""``meddiff`` command line: one module per verb, a thin layer over :mod:`meddiff.api`.

Every verb module has ``HELP`` (its line in ``meddiff --help``), ``add_parser(subparsers)`` and
``run(args)``; it parses, calls the API and prints, nothing else. Only the verb being run gets
its full parser: a verb's options may name task defaults that load torch, which ``meddiff
--help``, ``methods`` and ``models`` never need. The verbs that compute take ``--device
auto|cpu|cuda`` and ``--seed``; those that print metrics take ``--json``; those that write files
take ``--overwrite`` (:mod:`meddiff.cli.common`).

Errors print one line and no traceback: what the user can cause (:class:`MeddiffError`, and
the file system's refusals, :class:`OSError`) as ``meddiff: error: ...`` with exit code 2;
anything else as ``meddiff: internal error: ...`` with exit code 1 (``MEDDIFF_DEBUG=1`` raises
it with its traceback instead); Ctrl-C exits with 130. Warnings of the libraries raised while a
verb runs are held back: shown after it succeeds, dropped when it fails (the error line is then
the only output on stderr besides progress bars).
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

from meddiff import __version__
from meddiff.cli.common import EXIT_USAGE, Parser
from meddiff.errors import MeddiffError

VERBS = ("sample", "denoise", "demo", "methods", "models", "train", "reconstruct", "detect",
         "segment", "translate")
EXIT_INTERNAL = 1


def build_parser(verb: str | None = None) -> Parser:
    """The ``meddiff`` parser; only ``verb`` (None: none) gets its options, the other verbs are
    listed with their help line."""
    p = Parser(prog="meddiff", description="Diffusion models for medical image analysis.",
               epilog="'meddiff VERB --help' shows a verb's options and an example.")
    p.add_argument("--version", action="version", version=f"meddiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in VERBS:
        module = importlib.import_module(f"{__name__}.{name}")
        if name == verb:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return p


def _fail(message: str, code: int = EXIT_USAGE, prefix: str = "error") -> int:
    """Print ``meddiff: <prefix>: <message>`` as one line on stderr; returns ``code``."""
    print(f"meddiff: {prefix}: {' '.join(message.split())}", file=sys.stderr)
    return code


def _os_message(err: OSError) -> str:
    """``<file>: <reason>`` of a file system error (the reason alone without a file)."""
    reason = err.strerror or str(err) or type(err).__name__
    return f"{err.filename}: {reason}" if err.filename else reason


def _run(args) -> int:
    """Run the parsed verb; library warnings are shown after success only."""
    with warnings.catch_warnings(record=True) as caught:
        args.run(args)
    for w in caught:
        print(warnings.formatwarning(w.message, w.category, w.filename, w.lineno), end="",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``meddiff ARGV``; returns the exit code (0; 2 for a user error; 1 for an internal
    one; 130 on Ctrl-C). Usage errors and ``--help`` exit through argparse (SystemExit)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = argv[0] if argv and argv[0] in VERBS else None
    args = build_parser(verb).parse_args(argv)
    try:
        return _run(args)
    except MeddiffError as err:
        return _fail(str(err))
    except OSError as err:  # the user's file system: a read-only folder, a file for a folder
        return _fail(_os_message(err))
    except KeyboardInterrupt:
        print("meddiff: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: one line, the traceback on request
        if os.environ.get("MEDDIFF_DEBUG"):
            raise
        detail = " ".join(str(err).split())[:300]
        return _fail(f"{type(err).__name__}: {detail} (MEDDIFF_DEBUG=1 shows the traceback)",
                     EXIT_INTERNAL, "internal error")
