"""The method registry: the AST index equals what the decorators record at import, every
registered system is in the catalogue, listing imports no torch, and the baselines answer
through the same interface as the diffusion methods with the numbers of the direct functions."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
import torch

from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.reconstruction.baselines import CS_ITERS, CS_LAM, cs_tv, direct
from meddiff.methods.reconstruction.interface import Problem, Reconstruction
from meddiff.consistency.steps import operator_norm_sq
from meddiff.physics import SingleCoilMRI, SparseViewCT, random_mask_2d


def _import_all() -> None:
    for info in registry.methods(modifiers=True).values():
        importlib.import_module(info.module)


def test_the_ast_index_equals_the_import_time_registry():
    _import_all()
    index = {(i.family, i.name): i for i in registry.methods(modifiers=True).values()}
    assert index == registry.registered()
    for info in index.values():  # the index points at the decorated objects
        assert callable(getattr(importlib.import_module(info.module), info.qualname))


def test_every_registered_system_is_in_the_catalogue_and_the_works_set_is_derived():
    ids = [s.id for s in registry.SYSTEMS]
    assert len(ids) == 27 == len(set(ids))
    carried = {i.system for i in registry.methods(modifiers=True).values()} - {None}
    assert carried <= set(ids)
    works = {s.id for s in registry.SYSTEMS if registry.status(s.id) == "works"}
    assert works == carried == {"R5", "R7", "R8", "R9", "C1", "C2", "C3",
                                "C4", "P1", "T1", "D1", "D2", "D3", "D4", "G2"}
    r8 = next(s for s in registry.SYSTEMS if s.id == "R8")
    r1 = next(s for s in registry.SYSTEMS if s.id == "R1")
    assert registry.status_text(r8) == "works" and registry.status_text(r1) == "planned (#12)"
    assert registry.status_text(registry.System("X1", "x", "p", "r", "c")) == "planned"


def test_modifiers_mark_their_system_but_are_no_method_choice():
    choices = registry.methods("reconstruction")
    assert "warm-start" not in choices and "score-mri" in choices
    info = registry.methods("reconstruction", modifiers=True)["warm-start"]
    assert info.system == "R8" and info.modifier and info.options == ("t0", "t0_noise", "init")
    names = list(choices)  # the methods first, then the baselines
    assert names[-4:] == ["zero-filled", "fbp", "cs", "unet"]
    assert not any(choices[n].baseline for n in names[:-4])


def test_listing_imports_neither_torch_nor_a_method_module():
    code = ("import sys, json; from meddiff.methods import registry; "
            "m = registry.methods(modifiers=True); "
            "print(json.dumps([len(m), 'torch' in sys.modules, "
            "sorted(k for k in sys.modules if k.startswith('meddiff.methods.'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, torch_loaded, loaded = json.loads(out.stdout)
    assert n == len(registry.methods(modifiers=True)) and not torch_loaded
    assert loaded == ["meddiff.methods.registry"]


def test_unknown_method_or_family_is_one_line_listing_the_choices():
    with pytest.raises(InputError) as err:
        registry.get("detection", "nope")
    msg = str(err.value)
    assert "\n" not in msg and "unknown detection method 'nope'" in msg
    assert "anoddpm, wolleb, diff-scm, latent" in msg
    with pytest.raises(InputError, match="unknown method family 'recon'"):
        registry.methods("recon")
    assert registry.methods("synthesis") == {}  # a family with no method yet


def test_register_refuses_unknown_families_and_non_literal_arguments(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="unknown family 'imaging'"):
        registry.register("x", family="imaging", summary="s")(lambda: None)
    bad = tmp_path / "bad.py"
    bad.write_text("from meddiff.methods.registry import register\nNAME = 'x'\n"
                   "@register(NAME, family='detection', summary='s')\ndef f():\n    pass\n")
    monkeypatch.setattr(registry, "METHODS_DIR", tmp_path)
    with pytest.raises(Exception, match="literal arguments only"):
        registry._scan_file(bad)


def _phantom(n: int = 16) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    return ((xx ** 2 + yy ** 2 < 0.6).float() * 0.7 + 0.2 * (xx > 0.3).float())[None, None]


def _run(name: str, op, y, model=None, **opts) -> torch.Tensor:
    out = registry.get("reconstruction", name)(Problem(model, op, y), **opts)
    assert isinstance(out, Reconstruction) and out.nfe == 0 and out.std is None
    return out.x


def test_baselines_behind_the_interface_equal_the_direct_functions():
    x = _phantom()
    mri = SingleCoilMRI(random_mask_2d((16, 16), 3, seed=0))
    y = mri.A(x.to(torch.complex64))
    assert torch.equal(_run("zero-filled", mri, y), mri.A_adjoint(y))
    start = direct(mri, y)
    norm_sq = operator_norm_sq(mri, start) * 1.05
    ref = cs_tv(mri, y, lam=CS_LAM["mri"] * norm_sq, n_iter=CS_ITERS, init=start,
                op_norm_sq=norm_sq)
    assert torch.equal(_run("cs", mri, y), ref)
    assert not torch.equal(_run("cs", mri, y, lam=0.3), ref)
    ct = SparseViewCT(12, 16)
    s = ct.A(x)
    assert torch.equal(_run("fbp", ct, s), ct.fbp(s))
    with pytest.raises(InputError, match="use fbp for CT"):
        _run("zero-filled", ct, s)
    with pytest.raises(InputError, match="needs a CT operator"):
        _run("fbp", mri, y)


def test_unet_baseline_applies_the_given_network_to_the_direct_image():
    class Double(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, v):
            return self.w * v

    x = _phantom()
    mri = SingleCoilMRI(random_mask_2d((16, 16), 3, seed=0))
    y = mri.A(x.to(torch.complex64))
    out = _run("unet", mri, y, model=Double())  # two channels (real, imaginary) and back
    assert out.is_complex() and torch.allclose(out, 2 * mri.A_adjoint(y))
    with pytest.raises(InputError, match="needs its trained network"):
        _run("unet", mri, y)
