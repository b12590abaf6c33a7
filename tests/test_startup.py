"""``meddiff --help``, ``methods`` and ``models`` answer without importing torch or MONAI (the
listing reads sources and JSON documents only), and say the right things."""
from __future__ import annotations

import json
import subprocess
import sys

WORKS = {"R5", "R7", "R8", "R9", "C1", "C2", "C3", "C4", "P1", "T1", "D1", "D2", "D3", "D4", "G2"}

#: runs the CLI in a fresh interpreter, then prints which heavy modules got imported
PROBE = """
import contextlib, io, json, sys
from meddiff.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:  # --help exits through argparse
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(),
                  "heavy": sorted(m for m in ("torch", "monai") if m in sys.modules)}))
"""


def _probe(*argv: str) -> dict:
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout)


def test_help_lists_every_verb_without_torch():
    res = _probe("--help")
    assert res["code"] == 0 and res["heavy"] == []
    for verb in ("sample", "denoise", "demo", "methods", "models", "train", "reconstruct",
                 "detect", "segment"):
        assert f"    {verb} " in res["out"]


def test_methods_lists_the_27_systems_and_the_registered_methods_without_torch():
    res = _probe("methods", "--json")
    assert res["code"] == 0 and res["heavy"] == []
    table = json.loads(res["out"])
    systems = table["systems"]
    assert len(systems) == 27 == len({s["id"] for s in systems})
    assert {s["id"] for s in systems if s["status"] == "works"} == WORKS
    methods = {(m["family"], m["method"]): m for m in table["methods"]}
    assert methods[("reconstruction", "score-mri")]["system"] == "R9"
    assert methods[("reconstruction", "cs")]["kind"] == "baseline"
    assert {m["system"] for m in methods.values()} - {"-"} == WORKS


def test_models_lists_the_bundled_networks_without_torch():
    res = _probe("models", "--json")
    assert res["code"] == 0 and res["heavy"] == []
    rows = {r["name"]: r for r in json.loads(res["out"])}
    assert {"brain-prior-64", "ct-prior-64", "seg-ddpm-64", "lesion-classifier-64",
            "latent-ddpm-64", "feature_encoder"} <= set(rows)
    assert rows["brain-prior-64"]["kind"] == "diffusion"
    assert rows["brain-prior-64"]["parameters"] == "2.73 M"
