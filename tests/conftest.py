"""Fixtures shared by several test files."""
from __future__ import annotations

import pytest
import torch

from tiny_model import save_tiny


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and without thread contention on shared CPUs) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random diffusion model in the store (its JSON path), shared by a test module."""
    return str(save_tiny(tmp_path_factory.mktemp("model")))


def run_cli(capsys, *argv):
    """``meddiff ARGV``: (exit code, stdout, stderr)."""
    from meddiff.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
