"""The one model-card writer: a markdown page from the card dict stored with every model.

The card dict (``NAME.json``'s ``card``, written by :func:`meddiff.train.run.export`) holds
``summary`` (one line, for ``meddiff models``), ``description``, ``network``, ``objective``,
``data``, ``training`` (steps, batch, learning rate, EMA, bf16, wall time, machine, final loss),
``validation`` (metrics), ``intended_use``, ``limits``, ``licence``, ``reproduce`` and
``provenance`` (where the weights come from, when not from this recipe's run); any further
key (e.g. ``realism_fd_medenc``) becomes a metrics table of its own. Nested metric dicts are
flattened to dotted rows.

Every card states its terms: a card without ``intended_use``, ``limits`` or ``licence`` gets the
defaults :data:`DEFAULT_INTENDED_USE`, :data:`DEFAULT_LIMITS` and :data:`DEFAULT_LICENCE`, and
limits that do not say so end with "not for clinical use". Given the model's ``spec`` (the store
document's, as a plain dict), the card has an *Input contract* section: image size, channels,
pixel size, orientation and value range, as :func:`meddiff.zoo.contract.input_contract` derives
them (the one derivation; ``meddiff models NAME`` reads this section back).
:func:`rewrite_cards` regenerates the markdown cards of stored models from their JSON documents
(no training, the weights untouched).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from meddiff.data.writers import atomic_write
from meddiff.zoo.contract import input_contract

NOT_CLINICAL = "not for clinical use"
DEFAULT_INTENDED_USE = f"research and teaching; {NOT_CLINICAL}"
DEFAULT_LIMITS = f"no clinical validation of any kind; {NOT_CLINICAL}"
DEFAULT_LICENCE = ("not stated by this run (meddiff is Apache-2.0; the weights also carry the "
                   "terms of their training data)")
_DEFAULT_TERMS = {"intended_use": DEFAULT_INTENDED_USE, "limits": DEFAULT_LIMITS,
                  "licence": DEFAULT_LICENCE}

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


def with_terms(card: dict[str, Any]) -> dict[str, Any]:
    """``card`` with the default intended use, limits and licence where it has none, and limits
    that end with "not for clinical use" unless they already say so."""
    out = dict(card)
    for key, default in _DEFAULT_TERMS.items():
        if not str(out.get(key) or "").strip():
            out[key] = default
    if NOT_CLINICAL not in out["limits"].lower():
        out["limits"] = f"{out['limits'].rstrip().rstrip('.;')}; {NOT_CLINICAL}"
    return out


def card_markdown(name: str, card: dict[str, Any], spec: dict[str, Any] | None = None) -> str:
    """The markdown model card of model ``name`` (see the module docstring); with ``spec``
    (the model's spec as a plain dict) it has an *Input contract* section."""
    card = with_terms(card)
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
    if spec:
        out += ["", "## Input contract", ""]
        out += [f"- **{what}**: {text}" for what, text in input_contract(spec, card)]
    if card.get("validation"):
        out += ["", "## Validation", "", _table(("metric", "value"), card["validation"])]
    for key, value in card.items():
        if key not in _PROSE and isinstance(value, dict):
            out += ["", f"## {key}", "", _table(("", "value"), value)]
    if card.get("figures"):
        out += [""] + [f"![{label}]({path})" for label, path in card["figures"].items()]
    return "\n".join(out).rstrip() + "\n"


def write_card(path: str | Path, name: str, card: dict[str, Any],
               spec: dict[str, Any] | None = None) -> Path:
    """Write the markdown card of ``name`` (with its input contract when ``spec`` is given) to
    ``path`` atomically."""
    text = card_markdown(name, card, spec)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def rewrite_cards(weights_dir: str | Path | None = None, cards_dir: str | Path | None = None,
                  names: list[str] | None = None) -> list[Path]:
    """Regenerate the markdown cards ``cards_dir/NAME.md`` from the stored JSON documents
    ``weights_dir/NAME.json`` (their ``spec`` and ``card``; default: the bundled models), without
    training or touching the weights. Returns the paths written."""
    from meddiff.zoo.catalogue import CARDS_DIR, WEIGHTS_DIR, read_document

    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    cards_dir = Path(cards_dir or CARDS_DIR)
    paths = [weights_dir / f"{n}.json" for n in names] if names else \
        sorted(weights_dir.glob("*.json"))
    written = []
    for path in paths:
        doc = read_document(path)
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else None
        written.append(write_card(cards_dir / f"{path.stem}.md", path.stem, doc["card"], spec))
    return written


if __name__ == "__main__":  # python -m meddiff.train.cards [NAME ...]: rewrite bundled cards
    import sys

    for written_path in rewrite_cards(names=sys.argv[1:] or None):
        print(written_path)
