"""The one model-card writer: a markdown page from the card dict stored with every model.

The card dict (``NAME.json``'s ``card``, written by :func:`meddiff.train.run.export`) holds
``summary`` (one line, for ``meddiff models``), ``description``, ``network``, ``objective``,
``data``, ``training`` (steps, batch, learning rate, EMA, bf16, wall time, machine, final loss),
``validation`` (metrics), ``intended_use``, ``limits``, ``licence``, ``reproduce`` and
``provenance`` (where the weights come from, when not from this recipe's run); any further
key (e.g. ``realism_fd_medenc``) becomes a metrics table of its own. Nested metric dicts are
flattened to dotted rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from meddiff.data.writers import atomic_write

_BULLETS = (("network", "Network"), ("objective", "Objective"), ("data", "Data"),
            ("intended_use", "Intended use"), ("limits", "Limits"), ("licence", "Licence"),
            ("reproduce", "Reproduce"), ("provenance", "Provenance"))
_PROSE = {"summary", "description", "training", "validation", "figures",
          *(key for key, _ in _BULLETS)}


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows


def _table(header: tuple[str, str], values: dict[str, Any]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _flatten(values)]
    return "\n".join(lines)


def _training_line(tr: dict[str, Any]) -> str:
    parts = [f"{tr['steps']} steps", f"batch {tr['batch_size']}",
             f"AdamW lr {tr['lr']} ({tr.get('lr_schedule', 'constant')})"]
    if tr.get("ema_decay"):
        parts.append(f"EMA {tr['ema_decay']}")
    parts.append(f"bf16 autocast {tr.get('bf16', False)}")
    parts.append(f"wall time {tr['wall_time_s'] / 60:.1f} min on {tr.get('machine', '?')}")
    parts.append(f"final loss {tr['final_loss']}")
    return ", ".join(parts)


def card_markdown(name: str, card: dict[str, Any]) -> str:
    """The markdown model card of model ``name`` (see the module docstring)."""
    out = [f"# {name}", "", card.get("description") or card.get("summary", ""), ""]
    for key, title in _BULLETS[:3]:
        if card.get(key):
            out.append(f"- **{title}**: {card[key]}")
    if card.get("training"):
        out.append(f"- **Training**: {_training_line(card['training'])}.")
    for key, title in _BULLETS[3:]:
        if card.get(key):
            value = f"`{card[key]}`" if key == "reproduce" else card[key]
            out.append(f"- **{title}**: {value}")
    if card.get("validation"):
        out += ["", "## Validation", "", _table(("metric", "value"), card["validation"])]
    for key, value in card.items():
        if key not in _PROSE and isinstance(value, dict):
            out += ["", f"## {key}", "", _table(("", "value"), value)]
    if card.get("figures"):
        out += [""] + [f"![{label}]({path})" for label, path in card["figures"].items()]
    return "\n".join(out).rstrip() + "\n"


def write_card(path: str | Path, name: str, card: dict[str, Any]) -> Path:
    """Write the markdown card of ``name`` to ``path`` atomically."""
    text = card_markdown(name, card)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
