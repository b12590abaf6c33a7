"""The README says what the registry says: its system table is the catalogue with the derived
status, its method table lists every registered method (so every ``--method`` choice of every
family), and it opens with the two commands."""
from __future__ import annotations

import re
from pathlib import Path

from meddiff import api
from meddiff.methods import registry

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(pattern, line)]


def test_readme_system_table_is_the_catalogue_with_its_status():
    text = README.read_text(encoding="utf-8")
    expected = [f"| {s.id} | {s.family} | {s.paper} | {s.ref} | {registry.status_text(s)} |"
                for s in registry.SYSTEMS]
    assert _rows(text, r"\| [A-Z]\d \| [^|]+ \| [^|]+ \| [^|]+ \| [^|]+ \|$") == expected
    for s in registry.SYSTEMS:  # the claims table names every system's claim
        assert re.search(rf"^\| {s.id} \| {re.escape(s.claim)} \|", text, re.M), s.id


def test_readme_method_table_lists_every_registered_method():
    text = README.read_text(encoding="utf-8")
    expected = [f"| {m['family']} | `{m['method']}` | {m['system']} | {m['kind']} | "
                f"{m['summary']} |" for m in api.method_rows()]
    assert _rows(text, r"\| [a-z]+ \| `[^`]+` \|") == expected
    for family in registry.FAMILIES:  # hence every --method choice
        for name in api.method_choices(family):
            assert f"| {family} | `{name}` |" in text


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    text = README.read_text(encoding="utf-8")
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
