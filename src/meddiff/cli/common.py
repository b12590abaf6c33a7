"""What every verb shares: the one-line-error parser, the help layout, the option types and
bounds, the common options, the table printer.

A usage error prints ``meddiff: error: <message> (see '<prog> --help')`` on one line and exits
with :data:`EXIT_USAGE` (2); :func:`meddiff.cli.main` maps a :class:`meddiff.errors.MeddiffError`
raised by the API to the same line and code.

Help: every option has a help text that shows its default (:class:`HelpFormatter`), and every
verb's help ends with one real example command (:func:`example`, the parser's epilog).

Numbers: every numeric option is parsed by :func:`finite_float`, :func:`bounded_float` or
:func:`bounded_int`, so NaN and infinities never reach a range check (``nan >= 0`` is False, but
so is ``nan < 0``) and every count has an upper bound (the ``MAX_*`` constants). Lower bounds
the API checks itself (``--steps >= 1``) are left to it, with its messages.
"""
from __future__ import annotations

import argparse
import inspect
import math
import re
from typing import Any, Callable

from meddiff import api

EXIT_USAGE = 2

#: upper bounds of the count options (a larger value is a typo, or hours of work and memory)
MAX_SEED = 2 ** 32 - 1
MAX_STEPS = 10_000      # reverse diffusion steps (the bundled schedules have 1000)
MAX_SAMPLES = 1_000     # images drawn, masks or reconstructions averaged
MAX_BATCH = 1_024       # images per network batch
MAX_SIZE = 1_024        # the side of a sampled image in pixels
MAX_COILS = 64          # simulated MRI receive coils
MAX_VIEWS = 4_096       # simulated CT view angles
#: upper bounds of the float options with a natural scale
MAX_ACCELERATION = 64.0  # MRI undersampling factor
MAX_SMOOTH_PX = 64.0     # Gaussian smoothing of an anomaly map, pixels
MAX_SCALE = 1_000.0      # classifier-guidance scale
MAX_NOISE_STD = 10.0     # simulated k-space noise, image-space units


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that keeps the epilog's line breaks and shows each option's default: appended as
    ``(default: X)`` unless the text already says what the default is, or there is nothing
    to show (no default, a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = "%(default)" in text or "default" in text.lower()
        empty = any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if not action.option_strings or shown or empty:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2, with the
    :class:`HelpFormatter` layout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        # "argument --steps: must be <= 10000, got 20000" -> "--steps must be <= 10000, ..."
        message = re.sub(r"^argument (\S+): (must be )", r"\1 \2", message)
        self.exit(EXIT_USAGE, f"meddiff: error: {message} (see '{self.prog} --help')\n")


def example(command: str) -> str:
    """A verb's epilog: one real example command line."""
    return f"example:\n  {command}"


def _number(text: str, kind: type) -> Any:
    """``kind(text)`` (int or float), a "must be a number" argparse error otherwise."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def bounded_float(low: float | None, high: float | None) -> Callable[[str], float]:
    """An argparse type: a finite float in [``low``, ``high``] (None: that side is left to the
    API's own check); NaN and infinities are refused."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {value:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


#: an argparse type: any finite float (the API checks the range)
finite_float = bounded_float(None, None)


def bounded_int(low: int | None, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [``low``, ``high``] (``low`` None: left to the API's own
    check, which words its message)."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def common_options(p: argparse.ArgumentParser, *, device: bool = True, seed: bool = True,
                   json_flag: bool = False) -> None:
    """``--device`` and ``--seed`` on the verbs where they change something, and optionally
    ``--json``, the same everywhere."""
    if device:
        p.add_argument("--device", default="auto", choices=api.DEVICE_CHOICES,
                       help="where to run: auto = CUDA if available, else the CPU")
    if seed:
        p.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=0,
                       help="random seed (results are reproducible for a seed, device and "
                            "batch size)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print results as JSON")


def overwrite_option(p: argparse.ArgumentParser) -> None:
    """``--overwrite``: the verbs that write files replace existing ones only with it."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (an input file is never replaced)")


def resize_option(p: argparse.ArgumentParser) -> None:
    """``--resize`` of the verbs that read image files."""
    p.add_argument("--resize", action="store_true",
                   help="resample slices to the model's training size and back, the aspect "
                        "ratio kept (the longer side fits, the shorter one is zero-padded); "
                        "otherwise they run on the file's own grid")


#: what ``--input`` / ``--out`` of the file verbs say about folders
FOLDER_INPUT = ("; or a folder of them (NIfTI / PNG / TIFF / NPY files, DICOM series "
                "subfolders): --out is then a folder")
FOLDER_OUT = ("; with a folder --input, a folder with one <name>.nii.gz per input (finished "
              "ones, with their <name>.json, are skipped)")


def print_runs(res: dict, one: Callable[[dict], None]) -> None:
    """A file task's result: ``one(result)`` for one file; for a folder, ``one`` per file it
    ran, then one line per skipped input (finished, unreadable, ...)."""
    for r in res.get("files", [res]):
        one(r)
    for skip in res.get("skipped", []):
        print(f"skipped {skip['input']}: {skip['reason']}")


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


def applies_to(option: str, rows: list[dict], method_defaults: dict) -> str:
    """``; for anoddpm (250), latent``: the methods whose registration takes ``option``
    (``rows``: :func:`meddiff.api.method_rows` of one family), with their defaults."""
    def shown(value) -> str:
        return value if isinstance(value, str) else f"{value:g}"

    users = [m["method"] + (f" ({shown(method_defaults[m['method']][option])})"
                            if option in method_defaults[m["method"]] else "")
             for m in rows if option in m["options"]]
    return f"; for {', '.join(users)}"


def call(func: Callable, args: argparse.Namespace) -> Any:
    """``func(**options)`` with every parsed option whose name is a parameter of ``func``
    (``--coil-mode`` -> ``coil_mode``): a verb's options are its API call's arguments by name."""
    params = inspect.signature(func).parameters
    return func(**{k: v for k, v in vars(args).items() if k in params})
