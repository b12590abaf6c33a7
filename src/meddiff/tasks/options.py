"""What the file tasks check about a registered method before they load anything: which of
its options apply (from its registration) and that its bundled default model exists."""
from __future__ import annotations

from typing import Any

from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.zoo.catalogue import bundled

#: the lower bound of each numeric option a task may take
LOWER_BOUNDS = {"seed": 0, "steps": 1, "samples": 1, "batch_size": 1}


def method_options(family: str, method: str, given: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of ``method`` that are set in ``given`` (name -> value, None:
    unset); one-line InputError for an unknown method, a set option that does not apply to it
    (by its registration) or a value below :data:`LOWER_BOUNDS`. ``given`` may also hold run
    settings (``seed``, ``batch_size``): they are range-checked, not returned."""
    choices = registry.methods(family)
    if method not in choices:
        raise InputError(f"unknown {family} method {method!r}; choose from "
                         f"{', '.join(choices)}")
    applies = choices[method].options
    for name, value in given.items():
        if value is None:
            continue
        if name not in applies and name not in ("seed", "batch_size"):
            taken = ", ".join("--" + a for a in applies) or "no options"
            raise InputError(f"--{name} does not apply to --method {method} (it takes {taken})")
        low = LOWER_BOUNDS.get(name)
        if low is not None and value < low:
            raise InputError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    return {k: given[k] for k in applies if given.get(k) is not None}


def bundled_or_error(name: str) -> str:
    """``name`` if it is a bundled model, else a one-line error naming its config."""
    if name not in bundled():
        raise InputError(f"the bundled model {name!r} is not trained yet: train it with "
                         f"'meddiff train configs/{name}.yaml' or pass --model RUN_DIR")
    return name
