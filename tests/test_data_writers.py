"""meddiff.data.writers.atomic_write: the package's one atomic writer.

Contract: the target gets exactly the bytes written, with 0o666 minus the umask; on failure no
temporary file stays behind and an existing target is untouched; OS errors become one-line
InputErrors naming the file; no other module of the package renames temporary files.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import meddiff
from meddiff.data.writers import atomic_write
from meddiff.errors import InputError

SRC = Path(meddiff.__file__).resolve().parent
#: ``os.replace`` is allowed only in the atomic writer and in the checkpoint rotation, which
#: swaps whole directories (``last`` / ``previous``), not files.
REPLACE_ALLOWED = {"data/writers.py", "train/checkpoint.py"}


def test_writes_exact_bytes_creates_parents_and_normal_permissions(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    out = atomic_write(target, lambda fh: fh.write(b"\x00\x01meddiff"))
    assert out == target and target.read_bytes() == b"\x00\x01meddiff"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.bin"]


def test_file_object_is_seekable_for_hdf5(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)

    def write(fh):
        with h5py.File(fh, "w") as h5:
            h5.create_dataset("x", data=data)

    with h5py.File(atomic_write(tmp_path / "x.h5", write), "r") as h5:
        np.testing.assert_array_equal(h5["x"][()], data)


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.json"
    target.write_bytes(b"old")

    def broken(fh):
        fh.write(b"half")
        raise KeyError("boom")

    with pytest.raises(KeyError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.json"]


def test_os_error_is_a_one_line_input_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "x.png"                 # parent is a file
    with pytest.raises(InputError) as info:
        atomic_write(target, lambda fh: fh.write(b"x"))
    msg = str(info.value)
    assert msg.startswith(f"{target}: cannot write file (") and "\n" not in msg

    def full_disk(fh):
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="No space left on device"):
        atomic_write(tmp_path / "y.png", full_disk)
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def _calls_os_replace(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "replace" and isinstance(n.func.value, ast.Name)
               and n.func.value.id == "os" for n in ast.walk(tree))


def test_there_is_one_atomic_writer():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if rel not in REPLACE_ALLOWED and _calls_os_replace(tree):
            offenders.append(f"{rel}: os.replace")
        defined = {n.name for n in ast.walk(tree)
                   if isinstance(n, ast.FunctionDef) and "atomic" in n.name.lower()}
        if rel != "data/writers.py" and defined:
            offenders.append(f"{rel}: defines {sorted(defined)}")
    assert offenders == [], "write files with meddiff.data.writers.atomic_write"
