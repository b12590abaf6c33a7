"""The one registry of runnable methods, and the catalogue of the 27 seed systems.

A method is registered where it is defined::

    @register("score-mri", family="reconstruction", system="R9",
              summary="R9 score-MRI: predictor-corrector sampling + k-space projection")
    def score_mri(problem, sampler="pc_vp", ...): ...

Every ``--method`` choice, ``meddiff methods``, the README's system table and the status of a
system derive from these decorators. :func:`methods` reads them from the *source* (an AST scan
of ``meddiff/methods/**.py``, literal arguments only), so listing methods imports neither torch
nor a method module; :func:`get` imports the one defining module. A test checks that the
import-time registry (what the decorators recorded) equals the AST index.

Kinds of entries: a diffusion method (``baseline=False``), a classical / supervised baseline
behind the same family interface (``baseline=True``), and a *modifier* (``modifier=True``): a
switch that applies to every method of its family rather than a method of its own -- R8's
CCDF warm start is the ``--t0`` / ``--init`` option of every reconstruction method. Modifiers
are not ``--method`` choices (:func:`methods` leaves them out unless asked) but do mark their
system as working.

A system's status is derived: ``works`` iff a registered entry carries its ID, else
``planned`` (with its tracking issue when it has one).
"""
from __future__ import annotations

import ast
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, get_args

from meddiff.errors import ConfigError, InputError

Family = Literal["reconstruction", "detection", "segmentation", "translation", "denoising",
                 "synthesis"]
FAMILIES: tuple[str, ...] = get_args(Family)
METHODS_DIR = Path(__file__).resolve().parent
PACKAGE = __name__.rsplit(".", 1)[0]  # meddiff.methods


@dataclass(frozen=True)
class MethodInfo:
    """One registered entry.

    Attributes:
        name: the ``--method`` value (``score-mri``, ``cs``, ``anoddpm``, ...).
        family: the task family whose interface the callable implements.
        system: seed-list ID (``"R9"``) or None (baselines, non-seed methods such as DPS).
        summary: one line for ``--help`` and ``meddiff methods``.
        baseline: a classical / supervised comparison method.
        modifier: an option of every method of the family (not a ``--method`` choice).
        module / qualname: where the callable is defined.
        options: names of the task options that apply (e.g. ``("t", "steps")``).
        default_model: the bundled model the task loads by default (None: the family's default
            or no model).
    """

    name: str
    family: str
    system: str | None
    summary: str
    baseline: bool
    modifier: bool
    module: str
    qualname: str
    options: tuple[str, ...]
    default_model: str | None


_REGISTERED: dict[tuple[str, str], MethodInfo] = {}


def _info(name, module, qualname, family, summary, system=None, baseline=False, modifier=False,
          options=(), default_model=None) -> MethodInfo:
    if family not in FAMILIES:
        raise ConfigError(f"{module}.{qualname}: unknown family {family!r}; "
                          f"choose from {', '.join(FAMILIES)}")
    return MethodInfo(name, family, system, summary, bool(baseline), bool(modifier), module,
                      qualname, tuple(options), default_model)


def register(name: str, *, family: Family, summary: str, system: str | None = None,
             baseline: bool = False, modifier: bool = False, options: tuple[str, ...] = (),
             default_model: str | None = None) -> Callable:
    """Decorator registering the function / class it decorates as method ``name`` of
    ``family``. Use literal arguments only (the AST index of :func:`methods` reads them from
    the source). The object is returned unchanged."""

    def mark(obj):
        info = _info(name, obj.__module__, obj.__qualname__, family, summary, system, baseline,
                     modifier, options, default_model)
        key = (family, name)
        if key in _REGISTERED and _REGISTERED[key] != info:
            raise ConfigError(f"{family} method {name!r} is registered twice")
        _REGISTERED[key] = info
        return obj

    return mark


def registered() -> dict[tuple[str, str], MethodInfo]:
    """What the decorators of the method modules imported so far recorded (for the test that
    compares it with the AST index)."""
    return dict(_REGISTERED)


# ------------------------------------------------------------------------------ AST index
def _module_name(path: Path) -> str:
    rel = path.relative_to(METHODS_DIR).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGE, *parts])


def _is_register(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id == "register") or \
        (isinstance(f, ast.Attribute) and f.attr == "register")


def _scan_file(path: Path) -> list[MethodInfo]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module = _module_name(path)
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for dec in node.decorator_list:
            if not _is_register(dec):
                continue
            try:
                args = [ast.literal_eval(a) for a in dec.args]
                kw = {k.arg: ast.literal_eval(k.value) for k in dec.keywords}
            except ValueError:
                raise ConfigError(f"{path}:{dec.lineno}: register() takes literal "
                                  "arguments only") from None
            found.append(_info(*args, module=module, qualname=node.name, **kw))
    return found


@functools.lru_cache(maxsize=1)
def _index() -> dict[tuple[str, str], MethodInfo]:
    index: dict[tuple[str, str], MethodInfo] = {}
    for path in sorted(METHODS_DIR.rglob("*.py")):
        if path.name == "registry.py":
            continue
        for info in _scan_file(path):
            key = (info.family, info.name)
            if key in index:
                raise ConfigError(f"{info.family} method {info.name!r} is registered twice "
                                  f"({index[key].module} and {info.module})")
            index[key] = info
    return index


def methods(family: str | None = None, modifiers: bool = False) -> dict[str, MethodInfo]:
    """Registered methods by name (of one ``family``, or all -- then keyed ``family/name``):
    the methods before the baselines, each in source order (files sorted by path); modifiers
    only when ``modifiers``. Reads the sources: imports no torch and no method module."""
    if family is not None and family not in FAMILIES:
        raise InputError(f"unknown method family {family!r}; choose from {', '.join(FAMILIES)}")
    items = sorted(_index().items(), key=lambda kv: kv[1].baseline)
    return {(name if family else f"{fam}/{name}"): info for (fam, name), info in items
            if (family is None or fam == family) and (modifiers or not info.modifier)}


def get(family: str, name: str) -> Callable:
    """The callable registered as ``name`` in ``family`` (imports its module); one-line
    InputError listing the choices for an unknown name."""
    info = methods(family, modifiers=True).get(name)
    if info is None:
        raise InputError(f"unknown {family} method {name!r}; choose from "
                         f"{', '.join(methods(family)) or '(none yet)'}")
    return getattr(importlib.import_module(info.module), info.qualname)


# ------------------------------------------------------------------------------ catalogue
@dataclass(frozen=True)
class System:
    """A seed system: ``id`` (``R9``), catalogue ``family`` (display grouping), ``paper``,
    ``ref`` (arXiv id, or the venue where the paper has none), ``claim`` (the paper's headline
    claim, in our words) and the ``issue`` that tracks it (None: none yet)."""

    id: str
    family: str
    paper: str
    ref: str
    claim: str
    issue: int | None = None


SYSTEMS: tuple[System, ...] = (
    System("S1", "synthesis", "Chambon 2022, vision-language model adapted to radiographs",
           "2210.04133",
           "prompt-conditioned samples match their prompt (independent classifier far above "
           "chance)", 13),
    System("S2", "synthesis", "Fernandez 2022, brainSPADE: labels then images",
           "MICCAI 2022 SASHIMI",
           "a segmenter trained only on synthetic pairs nears one trained on real pairs (Dice "
           "ratio)", 13),
    System("S3", "synthesis", "Pinaya 2022, 3D brain latent diffusion", "MICCAI 2022 DGM",
           "3D latent samples follow the requested covariates (e.g. ventricle volume)", 13),
    System("S4", "synthesis", "Kim & Ye 2022, diffusion deformable model (4D)", "MICCAI 2022",
           "scaled latent codes give intermediate frames better than linear interpolation", 13),
    System("R1", "MRI reconstruction", "Cui 2022, Self-Score", "2209.00835",
           "a prior learned from undersampled k-space only nears the fully sampled prior", 12),
    System("R2", "MRI reconstruction", "Cao 2022, high-frequency space SDE", "2208.05481",
           "high-frequency-only diffusion reaches score-MRI quality with fewer NFE", 12),
    System("R3", "MRI reconstruction", "Dar & Cukur 2022, AdaDiff", "2207.05876",
           "test-time adaptation recovers quality on an unseen contrast", 12),
    System("R4", "MRI reconstruction", "Meng & Shen 2022, unified conditional score model",
           "2207.03430",
           "one model imputes any missing modality as well as pairwise translators", 12),
    System("R5", "MRI reconstruction", "Peng 2022, DiffuseRecon", "MICCAI 2022",
           "k-space-guided DDPM with coarse-to-fine averaging beats CS and gives a variance "
           "map", 3),
    System("R6", "MRI reconstruction", "Xie & Li 2022, MC-DDPM", "MICCAI 2022",
           "k-space-only diffusion gives accurate recon and an uncertainty map", 12),
    System("R7", "MRI reconstruction", "Luo & Uecker 2022, Langevin Markov chain", "2202.01479",
           "the Langevin chain's std map correlates with the error", 3),
    System("R8", "MRI reconstruction", "Chung 2022, CCDF warm start", "2112.05146",
           "a warm start at t0 keeps the quality at 10-50x fewer steps", 3),
    System("R9", "MRI reconstruction", "Chung & Ye 2022, score-MRI", "2110.05243",
           "beats zero-filled and CS at 4x and 8x, also on masks it was not tuned on", 3),
    System("C1", "CT / OCT / PET", "Xia & Wang 2022, low-dose CT DDPM", "2209.15136",
           "a conditional DDPM with a fast ODE solver matches 1000-step quality ~20x faster", 11),
    System("C2", "CT / OCT / PET", "Chung 2022, manifold constrained gradient (MCG)",
           "2206.00941",
           "the manifold-constrained gradient improves sparse-view CT / inpainting over "
           "projection only", 3),
    System("C3", "CT / OCT / PET", "Hu & Oguz 2022, OCT denoising", "SPIE MI 2022",
           "a DDPM trained on noisy images only denoises better than NLM / TV", 11),
    System("C4", "CT / OCT / PET", "Song 2022, score-based inverse problems", "2111.08005",
           "the lambda-weighted consistency step beats FBP / CS in sparse-view CT and MRI", 3),
    System("P1", "CT / OCT / PET", "Gong 2022, PET denoising", "2209.06167",
           "a conditional DDPM denoises low-count PET better than baselines (MR channel helps)", 11),
    System("T1", "translation", "Lyu & Wang 2022, CT <-> MRI", "2209.12104",
           "conditional DDPM / SDE translation beats a UNet regression (MAE / PSNR / SSIM)", 11),
    System("T2", "translation", "Ozbey & Cukur 2022, SynDiff", "2207.08208",
           "unpaired adversarial diffusion translates close to held-out true pairs", 11),
    System("T3", "translation", "Wolleb 2022, Swiss Army Knife", "2204.02641",
           "one target-domain model + a noise-aware task network serves several tasks", 11),
    System("D1", "detection", "Sanchez & Tsaftaris 2022, Diff-SCM", "MICCAI 2022 DGM",
           "counterfactual (guided DDIM) maps localise lesions (AUROC / Dice)", 4),
    System("D2", "detection", "Pinaya 2022, fast latent anomaly detection", "2206.03461",
           "latent partial diffusion localises lesions, much faster than image-space methods",
           4),
    System("D3", "detection", "Wyatt 2022, AnoDDPM (simplex noise)", "CVPR 2022 workshops",
           "simplex-noise partial diffusion localises lesions better than Gaussian noise", 4),
    System("D4", "detection", "Wolleb 2022, classifier-guided anomaly detection", "MICCAI 2022",
           "classifier-guided DDIM maps localise lesions (AUROC / Dice)", 4),
    System("G1", "segmentation", "Kim & Ye 2022, DARL vessel segmentation", "2209.14566",
           "label-free vessel segmentation beats Frangi vesselness", 13),
    System("G2", "segmentation", "Wolleb 2022, implicit segmentation ensembles", "MIDL 2022",
           "ensemble Dice matches a UNet and the variance map flags the errors", 4),
)


def status(system_id: str) -> Literal["works", "planned"]:
    """``works`` iff a registered method (or modifier) carries ``system_id``, else
    ``planned``."""
    carried = {info.system for info in _index().values()}
    return "works" if system_id in carried else "planned"


def status_text(system: System) -> str:
    """``works``, or ``planned (#N)`` with the tracking issue (``planned`` without one)."""
    s = status(system.id)
    return s + (f" (#{system.issue})" if system.issue and s != "works" else "")
