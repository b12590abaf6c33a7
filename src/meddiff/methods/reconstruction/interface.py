"""The reconstruction interface: a :class:`Problem` in, a :class:`Reconstruction` out.

Every registered reconstruction method (family ``reconstruction`` of
:mod:`meddiff.methods.registry`) is ``method(problem: Problem, **own_options) ->
Reconstruction``: operator + measurement + generator (+ the network it uses) -> result with
``x``, ``std``, ``nfe``. Two kinds of problem:

- **diffusion methods** (:func:`reconstruct` builds the problem): ``model`` is a
  :class:`~meddiff.core.model.Denoiser` (or guidance wrapper), ``op`` the operator seen through
  :func:`~meddiff.consistency.views.as_real` (real model-space tensors, [-1, 1]), ``y`` the
  measurement of the model-space image (see
  :meth:`meddiff.consistency.views.RealView.model_measurement`), ``ts`` the reverse times and
  ``start`` draws a start state at ``ts[0]`` (pure noise, or R8's warm start,
  :mod:`meddiff.methods.reconstruction.ccdf`), ``noise_var`` the per-entry variance of ``y``'s
  noise (None: exact data), which makes every projecting consistency step noise-aware
  (:func:`~meddiff.consistency.steps.consistency_update`). Results have the view's model-space shape,
  e.g. (2B, 1, H, W) for ``view="batch"``.
- **baselines** (``baseline=True``, :mod:`meddiff.methods.reconstruction.baselines`):
  ``op`` and ``y`` in the operator's own domain and units (complex (B, 1, H, W) images for
  MRI, real ones for CT), ``model`` the supervised network or None; ``ts`` / ``start`` unused.
  Results are in the operator's image domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from meddiff.consistency.views import ViewMode, as_real
from meddiff.core.samplers import get_sampler
from meddiff.errors import InputError
from meddiff.methods import registry
from meddiff.methods.reconstruction.ccdf import start_state
from meddiff.physics.base import LinearOperator
from meddiff.physics.noise import as_generator

Start = Callable[[], torch.Tensor]


@dataclass
class Reconstruction:
    """Result of a reconstruction method.

    Attributes:
        x: the reconstruction (B', C, H, W) (a sample, or a posterior-mean estimate for
            ``diffuserecon`` and ``langevin``); model space for diffusion methods, the
            operator's domain for baselines.
        std: per-pixel standard deviation over the samples the method averaged (``diffuserecon``:
            coarse samples; ``langevin``: the Markov chain), else ``None``.
        nfe: network evaluations used (a gradient-guided evaluation counts once).
    """

    x: torch.Tensor
    std: torch.Tensor | None = None
    nfe: int = 0


@dataclass
class Problem:
    """What every method gets (see the module docstring): the network, the operator, the
    measurement, the reverse times, a function drawing a fresh start state at ``ts[0]``, the
    generator and the per-entry variance of the measurement's noise (None: exact data)."""

    model: object
    op: LinearOperator
    y: torch.Tensor
    ts: torch.Tensor | None = None
    start: Start | None = None
    generator: torch.Generator | None = None
    noise_var: torch.Tensor | float | None = None


def run_sampler(p: Problem, sampler: str, callback, x=None, ts=None, **opts) -> torch.Tensor:
    """Run ``sampler`` of :mod:`meddiff.core.samplers` on the problem's model from ``x``
    (default a fresh start state) over ``ts`` (default the problem's times), with the
    data-consistency ``callback`` after every step."""
    x = p.start() if x is None else x
    ts = p.ts if ts is None else ts
    return get_sampler(sampler)(p.model, x, ts, generator=p.generator, callback=callback, **opts)


def reconstruct(model, operator: LinearOperator, y: torch.Tensor, method: str, steps: int = 100,
                t0: float | None = None, init: torch.Tensor | None = None,
                generator: torch.Generator | int | None = None, view: ViewMode = "batch",
                noise_var: torch.Tensor | float | None = None, **opts) -> Reconstruction:
    """Reconstruct model-space images from measurements ``y`` with a diffusion prior.

    Args:
        model: a :class:`~meddiff.core.model.Denoiser` (or wrapper) on real model-space images.
        operator: any linear operator; complex-domain ones are wrapped by
            :func:`~meddiff.consistency.views.as_real` with ``view``.
        y: measurement of the model-space image, the operator's measurement shape.
        method: a registered diffusion reconstruction method (``score-mri``, ``song``,
            ``mcg``, ``dps``, ``diffuserecon``, ``langevin``); baselines run on the problem
            in the operator's domain instead (:mod:`.baselines`).
        steps: number of reverse timesteps (uniform spacing; ``langevin``: unused except to
            place the start level).
        t0: R8 warm start time in ``[0, T-1]`` (:mod:`.ccdf`); ``None``: start from pure
            noise at ``T - 1``.
        init: the initial estimate for the warm start, model-space (B', C, H, W) real;
            default ``A^+ y`` when ``t0`` is set.
        generator: ``torch.Generator`` or int seed; required (reproducibility).
        view: how a complex operator maps to real model-space tensors.
        noise_var: the per-entry variance of the noise in ``y`` (model-space units; a scalar
            or a tensor of ``y``'s shape), or None for exact data.
        **opts: the method's own options (see each method function).

    Returns:
        :class:`Reconstruction` with ``x`` of the view's model-space shape, float32.
    """
    diffusion = [n for n, i in registry.methods("reconstruction").items() if not i.baseline]
    if method not in diffusion:
        raise InputError(f"unknown diffusion reconstruction method {method!r}; choose from "
                         f"{', '.join(diffusion)} (baselines run in the operator's domain)")
    fn = registry.get("reconstruction", method)
    last = model.schedule.num_steps - 1
    if t0 is not None and not 0 <= t0 <= last:
        raise InputError(f"warm-start time t0 must be in [0, {last}], got {t0}")
    op = as_real(operator, view)
    g = as_generator(generator, y.device)
    ref = op.A_adjoint(y)
    if t0 is not None and init is None:
        init = op.A_dagger(y)
    if init is not None:
        if tuple(init.shape) != tuple(ref.shape) or init.is_complex():
            raise InputError(f"init must be real model space of shape {tuple(ref.shape)}, "
                             f"got {tuple(init.shape)} {init.dtype}")
        if t0 is None:
            raise InputError("an init needs a warm-start time t0")
    ts = model.schedule.timesteps(steps, t_start=t0)
    nfe0 = getattr(model, "nfe", 0)
    start = start_state(model, ref.shape, ts, init, g, y.device)
    out = fn(Problem(model, op, y, ts, start, g, noise_var), **opts)
    out.nfe = getattr(model, "nfe", 0) - nfe0
    return out
