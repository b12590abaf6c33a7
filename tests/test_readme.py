"""The README's systems table says what `meddiff methods` says, and opens with the two commands."""
from __future__ import annotations

import re
from pathlib import Path

from meddiff.methods.catalog import SYSTEMS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_methods_table_matches_the_catalogue():
    text = README.read_text(encoding="utf-8")
    for s in SYSTEMS:
        row = f"| {s.id} | {s.family} | {s.paper} | {s.ref} | {s.status_text} |"
        assert row in text, f"README row out of date: {row}"
        assert re.search(rf"^\| {s.id} \| {re.escape(s.claim)} \|", text, re.M), s.id


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    text = README.read_text(encoding="utf-8")
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
