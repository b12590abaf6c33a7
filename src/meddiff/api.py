"""The Python API: every task in model-agnostic terms; the ``meddiff`` CLI is a thin layer over it.

    import meddiff.api as md
    model = md.load_model("brain-prior-64")                 # bundled prior, or a path / run dir
    images = md.sample(model, n=16, sampler="ddim", steps=50, seed=0)   # (16, 1, 64, 64) in [0, 1]
    slices = md.read_slices("scan.nii.gz", size=model.spec.image_size)  # (N, 1, 64, 64) in [0, 1]
    clean = md.denoise(model, slices.images, sigma=0.05, seed=0)        # same shape, in [0, 1]
    md.reconstruct_file("t1.nii.gz", "recon.nii.gz", method="score-mri", acceleration=4)
    md.detect_file("flair.nii.gz", "anomaly.nii.gz", method="wolleb")
    md.segment_file("flair.nii.gz", "lesion.nii.gz", samples=8)
    md.denoise_file("lowdose_ct.nii.gz", "ct.nii.gz", method="ldct")   # C1; pet: P1, oct: C3
    md.translate_file("t1.nii.gz", "t2w.nii.gz", target="t2w")         # T1

File-level functions (``sample_files``, ``denoise_file``, ``reconstruct_file``, ``detect_file``,
``segment_file``, ``translate_file``, ``run_demo``) check everything before they write, write
their outputs and return the dict the CLI prints. The per-file tasks (all but ``sample_files``
and ``run_demo``) also write ``<out>.json`` (model, version, options, seed, input, results; the
options rerun the output exactly) and take a folder as ``input`` (``out`` is then a folder,
finished outputs are skipped; :mod:`meddiff.tasks.batch`). Files with patient geometry are
read as the models' training sections (axial, rows anterior -> posterior, columns left ->
right) and written back onto their own grid and affine (:func:`read_slices`). Intensity
contract: every image a user passes or gets back is in *image space* [0, 1]; the tasks convert
to and from the model space [-1, 1].

Listing (:func:`list_models`, :func:`models_table`, :func:`model_contract`,
:func:`methods_table`, :func:`method_choices`) reads JSON documents and sources only. The task
functions are imported from :mod:`meddiff.tasks` on first use (module ``__getattr__``), so
``import meddiff.api`` loads neither torch nor MONAI and ``meddiff --help`` / ``methods`` /
``models`` answer at once.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from meddiff.device import DEVICE_CHOICES
from meddiff.methods import registry
from meddiff.zoo import catalogue

#: public name -> the module that defines it, imported on first access
_LAZY = {
    "DEFAULT_MODEL": "meddiff.tasks.inputs", "load_model": "meddiff.tasks.inputs",
    "read_slices": "meddiff.tasks.inputs", "Slices": "meddiff.tasks.inputs",
    "sample": "meddiff.tasks.prior", "denoise": "meddiff.tasks.denoising",
    "sample_files": "meddiff.tasks.prior", "denoise_file": "meddiff.tasks.denoising",
    "reconstruct_file": "meddiff.tasks.reconstruction",
    "detect_file": "meddiff.tasks.detection",
    "segment_file": "meddiff.tasks.segmentation",
    "translate": "meddiff.tasks.translation", "translate_file": "meddiff.tasks.translation",
    "run_demo": "meddiff.demo",
}

__all__ = ["DEVICE_CHOICES", *_LAZY, "list_models", "models_table", "model_contract",
           "method_choices", "method_rows", "methods_table", "method_defaults",
           "reconstruction_defaults"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def list_models() -> list[str]:
    """Names of the bundled models, sorted."""
    return catalogue.bundled()


def models_table() -> list[dict]:
    """One row per bundled model: name, kind, summary, image_size, parameters, steps, card
    (:func:`meddiff.zoo.catalogue.catalogue`; reads JSON and safetensors headers only)."""
    return catalogue.catalogue()


def model_contract(name_or_path: str) -> dict:
    """What a model (bundled name, ``NAME.json`` or run dir) expects of its input: ``name``,
    ``kind``, ``summary``, ``contract`` (image size, channels, pixel size, orientation, value
    range) and ``card`` (:func:`meddiff.zoo.catalogue.contract`; JSON and markdown only)."""
    return catalogue.contract(name_or_path)


def method_choices(family: str) -> tuple[str, ...]:
    """The ``--method`` values of a task family (``reconstruction``, ``detection``, ...), in
    registration order."""
    return tuple(registry.methods(family))


def method_rows() -> list[dict]:
    """One row per registered method: family, method (the ``--method`` value), system (seed ID
    or ``-``), kind (``diffusion`` / ``modifier`` / ``baseline``), summary, default_model,
    options (the task options that apply); sorted by family, then kind in that order, then
    registration order."""
    rows = []
    for info in registry.methods(modifiers=True).values():
        kind = "modifier" if info.modifier else "baseline" if info.baseline else "diffusion"
        rows.append({"family": info.family, "method": info.name, "system": info.system or "-",
                     "kind": kind, "summary": info.summary,
                     "default_model": info.default_model or "", "options": list(info.options)})
    kinds = ("diffusion", "modifier", "baseline")
    return sorted(rows, key=lambda r: (r["family"], kinds.index(r["kind"])))


def methods_table() -> list[dict]:
    """The 27 seed systems: id, family, paper, ref, status (``works`` iff a registered method
    carries the ID, else ``planned (#issue)``), claim, and methods (the registered names that
    carry the ID)."""
    carried: dict[str, list[str]] = {}
    for row in method_rows():
        carried.setdefault(row["system"], []).append(row["method"])
    return [{"id": s.id, "family": s.family, "paper": s.paper, "ref": s.ref,
             "status": registry.status_text(s), "claim": s.claim,
             "methods": carried.get(s.id, [])} for s in registry.SYSTEMS]


def method_defaults(family: str) -> dict[str, dict[str, Any]]:
    """For each ``--method`` choice of ``family``: the defaults of its task options (the
    registered ``options`` that its function's signature gives a default other than None).
    Imports the method modules (torch)."""
    out = {}
    for name, info in registry.methods(family).items():
        params = inspect.signature(registry.get(family, name)).parameters
        out[name] = {o: params[o].default for o in info.options
                     if o in params and params[o].default not in (None, inspect.Parameter.empty)}
    return out


def reconstruction_defaults() -> dict[str, Any]:
    """What ``reconstruct_file`` does with an acquisition option left out: ``masks`` (the
    choices), ``acceleration``, ``views`` (CT), ``cs_lam`` per modality, ``models`` (the
    bundled prior per modality). Imports the task (torch)."""
    from meddiff.methods.reconstruction.baselines import CS_LAM
    from meddiff.physics.acquisition import DEFAULT_ACCELERATION, FULL_VIEWS, MASKS
    from meddiff.tasks.reconstruction import DEFAULT_MODELS

    return {"masks": tuple(MASKS), "acceleration": DEFAULT_ACCELERATION, "views": FULL_VIEWS,
            "cs_lam": dict(CS_LAM), "models": dict(DEFAULT_MODELS)}
