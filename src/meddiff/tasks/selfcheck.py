"""A self-check of diffusion reconstructions that needs no ground truth (issue #9).

On scans unlike its training data a diffusion prior can lose to compressed sensing. The check
holds out a fraction of the measured samples (:func:`meddiff.physics.holdout.split_measurement`:
MRI k-space lines or points, CT views), reconstructs from the rest with the diffusion method and
with CS-TV, and scores every blend ``w x_diffusion + (1 - w) x_cs`` by how well it predicts the
held-out samples (relative error ``||A_held x - y_held|| / ||y_held||``, the held-out k-space
validation of SSDU, Yaman et al. 2020, arXiv 1910.09116). The weight with the lowest error is
chosen per slice, both methods are rerun on the full data and blended with it; a warning says
when the output leans on CS.

    from meddiff.tasks import reconstruction as rt
    from meddiff.tasks.selfcheck import self_check
    check = self_check(rt.run, model, op, y, "mcg", steps=100, alpha=1.0)
    check.result.image01, check.weights, check.scores["blend"], check.warning

The reconstruction runner (:func:`meddiff.tasks.reconstruction.run`) is passed in: this module
sits below the reconstruction task, whose ``reconstruct_file`` calls it. Images are image space
(B, 1, H, W) float32 in [0, 1] on the CPU, as :class:`meddiff.tasks.reconstruction.Result`.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.physics.acquisition import is_ct
from meddiff.physics.base import LinearOperator
from meddiff.physics.holdout import Holdout, split_measurement
from meddiff.physics.mri import estimate_phase

if TYPE_CHECKING:
    from meddiff.tasks.reconstruction import Result

Runner = Callable[..., "Result"]  # run(model, op, y, method, **kw) -> Result

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # candidate weights of the diffusion result
FRACTION = 0.1                         # share of the measured samples held out


@dataclass
class Check:
    """The outcome of :func:`self_check`.

    ``result``: the blend on the full data (``nfe``: both diffusion runs; ``seconds``: all
    four runs and the scoring); ``weights``: (B,) the diffusion weight chosen per slice;
    ``scores``: ``"diffusion"``, ``"cs"``, ``"blend"`` -> (B,) held-out relative errors of the
    reconstructions from the fit part; ``warning``: a sentence when some weight is below 1,
    else None; ``candidates``: the full-data ``"diffusion"`` and ``"cs"`` results;
    ``held_out``: what was held out, e.g. ``"2 of 16 k-space lines"``; ``fraction``: the
    requested share.
    """

    result: Result
    weights: torch.Tensor
    scores: dict[str, torch.Tensor]
    warning: str | None
    candidates: dict[str, Result]
    held_out: str
    fraction: float


# ------------------------------------------------------------------------------ scoring
def _predict(image01: torch.Tensor, op: LinearOperator,
             phase: torch.Tensor | None = None) -> torch.Tensor:
    """``op.A`` of an image-space image (B, 1, H, W) real: cast to complex for MRI operators
    (times ``exp(i phase)`` when a phase (B or 1, 1, H, W) is given), as is for CT."""
    if not op.complex_domain:
        return op.A(image01)
    x = image01.to(torch.complex64)
    return op.A(x if phase is None else x * torch.polar(torch.ones_like(phase), phase))


def _relative(residual: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-slice ``||residual|| / ||reference||`` over all dims but the first (..., B, rest)
    -> (..., B), ``reference`` (B, rest)."""
    norm = reference.abs().flatten(1).norm(dim=1)
    return residual.abs().flatten(residual.dim() - reference.dim() + 1).norm(dim=-1) / \
        norm.clamp_min(torch.finfo(norm.dtype).tiny)


def held_out_error(image01: torch.Tensor, hold: Holdout,
                   phase: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) relative error ``||A_held x - y_held|| / ||y_held||`` of image-space images
    ``image01`` (B, 1, H, W) real in [0, 1]; ``phase``: see :func:`_predict`."""
    return _relative(_predict(image01, hold.held_op, phase) - hold.held_y, hold.held_y)


def blend_errors(x_diffusion: torch.Tensor, x_cs: torch.Tensor, hold: Holdout,
                 weights=WEIGHTS, phase: torch.Tensor | None = None) -> torch.Tensor:
    """(K, B) held-out errors of ``w x_diffusion + (1 - w) x_cs`` for the K ``weights``; the
    operator is linear, so the two predictions are computed once and blended."""
    p_d = _predict(x_diffusion, hold.held_op, phase)
    p_c = _predict(x_cs, hold.held_op, phase)
    w = torch.tensor(weights, dtype=p_d.real.dtype).reshape(-1, *([1] * p_d.dim()))
    return _relative(w * p_d + (1 - w) * p_c - hold.held_y, hold.held_y)


def choose_weights(errors: torch.Tensor, weights=WEIGHTS) -> torch.Tensor:
    """(B,) the weight of lowest error per slice from (K, B) ``errors`` (first on ties)."""
    return torch.tensor(weights, dtype=torch.float32)[errors.argmin(dim=0)]


def blend(x_diffusion: torch.Tensor, x_cs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``w x_diffusion + (1 - w) x_cs`` per slice; ``w`` (B,), images (B, 1, H, W)."""
    w = w.reshape(-1, *([1] * (x_diffusion.dim() - 1))).to(x_diffusion.dtype)
    return w * x_diffusion + (1 - w) * x_cs


def warning(weights: torch.Tensor, scores: dict[str, torch.Tensor], units: str) -> str | None:
    """One sentence when some slice's diffusion weight is below 1 (None otherwise), quoting the
    mean held-out errors over those slices."""
    low = weights < 1
    if not bool(low.any()):
        return None
    d, c, b = (float(scores[k][low].mean()) for k in ("diffusion", "cs", "blend"))
    lead = (f"the prior predicts the held-out {units} worse than CS ({d:.3g} vs {c:.3g})"
            if d > c else f"a blend with CS predicts the held-out {units} better than the "
            f"prior alone ({b:.3g} vs {d:.3g})")
    where = f"on {int(low.sum())} of {len(weights)} slices " if len(weights) > 1 else ""
    ws = sorted({round(float(w), 2) for w in weights[low]})
    return f"{lead}: {where}the output leans on CS (diffusion weight " \
        f"{' / '.join(f'{w:g}' for w in ws)})"


# ------------------------------------------------------------------------------ running
def _phase(model, op: LinearOperator, y: torch.Tensor, view: str | None):
    """The phase the magnitude results predict the data with: None for CT and for a
    real-valued prior's ``real`` view (real images), else the low-resolution phase of the
    calibration region (:func:`~meddiff.physics.mri.estimate_phase`), which the held-out
    k-space never touches."""
    complex_prior = getattr(getattr(model, "spec", None), "intensity", "unit") == "complex"
    if is_ct(op) or (view in (None, "real") and not complex_prior):
        return None
    return estimate_phase(op, y).cpu()


def _pair(run: Runner, model, op, y, method: str, cs_lam, **kw) -> dict[str, Result]:
    """The diffusion ``method`` (``**kw``: ``run``'s) and CS-TV on ``(op, y)``."""
    return {"diffusion": run(model, op, y, method, cs_lam=cs_lam, **kw),
            "cs": run(None, op, y, "cs", cs_lam=cs_lam)}


def self_check(run: Runner, model, op: LinearOperator, y: torch.Tensor, method: str, *,
               weights=WEIGHTS, fraction: float = FRACTION, seed: int = 0, steps: int = 100,
               cs_lam: float | None = None, hold: Holdout | None = None, **opts) -> Check:
    """Reconstruct with ``method`` blended with CS-TV by the held-out check (module docstring).

    Args:
        run: :func:`meddiff.tasks.reconstruction.run` (or a stand-in with its signature).
        model, op, y, method, steps, cs_lam, **opts: as ``run``
            (``y`` the measurement of the image-space image; ``opts`` e.g. ``view``, ``t0``,
            ``init`` and the method's options); ``method`` must be a diffusion method.
        weights: candidate diffusion weights in [0, 1].
        fraction, seed: the hold-out split (:func:`split_measurement`); ``seed`` is also the
            sampler's.
        hold: a ready split of ``(op, y)`` (default: made from ``fraction`` and ``seed``).
    Returns:
        :class:`Check`; ``result.image01`` (B, 1, H, W) in [0, 1].
    """
    info = registry.methods("reconstruction").get(method)
    if info is not None and info.baseline:
        raise InputError(f"the self-check blends a diffusion method with CS; {method} is a "
                         "baseline")
    if not all(0 <= w <= 1 for w in weights):
        raise InputError(f"blend weights must be in [0, 1], got {weights}")
    start = time.perf_counter()
    if hold is None:
        hold = split_measurement(op, y, fraction, seed)
    kw = {"steps": steps, "seed": seed, **opts}
    fit = _pair(run, model, hold.fit_op, hold.fit_y, method, cs_lam, **kw)
    phase = _phase(model, hold.fit_op, hold.fit_y, opts.get("view"))
    errors = blend_errors(fit["diffusion"].image01, fit["cs"].image01, hold, weights, phase)
    w = choose_weights(errors, weights)
    scores = {"diffusion": held_out_error(fit["diffusion"].image01, hold, phase),
              "cs": held_out_error(fit["cs"].image01, hold, phase),
              "blend": errors.min(dim=0).values}
    full = _pair(run, model, op, y, method, cs_lam, **kw)
    d = full["diffusion"]
    std01 = None if d.std01 is None else blend(d.std01, torch.zeros_like(d.std01), w)
    result = dataclasses.replace(d, image01=blend(d.image01, full["cs"].image01, w), std01=std01,
                                 nfe=fit["diffusion"].nfe + d.nfe,
                                 seconds=time.perf_counter() - start)
    return Check(result, w, scores, warning(w, scores, hold.units), full,
                 f"{hold.n_held} of {hold.n_measured} {hold.units}", fraction)


def report(check: Check) -> dict:
    """The JSON-ready summary of a check: ``held_out_fraction``, ``held_out``, ``weights``
    (per slice), ``held_out_error`` {diffusion, cs, blend: per slice} and ``warning``."""
    return {"held_out_fraction": check.fraction, "held_out": check.held_out,
            "weights": [round(float(w), 3) for w in check.weights],
            "held_out_error": {k: [round(float(v), 5) for v in s]
                               for k, s in check.scores.items()},
            "warning": check.warning}


def checked_run(run: Runner, model, op: LinearOperator, y: torch.Tensor, method: str,
                **kw) -> tuple[Result, dict]:
    """:func:`self_check` for :func:`meddiff.tasks.reconstruction.reconstruct_file`:
    ``(blended result, report)``; when nothing can be held out (e.g. fully sampled k-space)
    the plain ``run`` and ``{"skipped": reason}``. ``**kw``: :func:`self_check`'s."""
    try:
        hold = split_measurement(op, y, FRACTION, kw.get("seed", 0))
    except InputError as err:
        return run(model, op, y, method, **kw), {"skipped": str(err)}
    check = self_check(run, model, op, y, method, hold=hold, **kw)
    return check.result, report(check)
