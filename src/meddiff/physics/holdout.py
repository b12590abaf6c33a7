"""Hold-out splits of a measurement, for checking a reconstruction without ground truth.

A fraction of the measured samples is set aside, the image is reconstructed from the rest, and
the reconstruction is scored by how well it predicts the samples it never saw: cross-validation
of the data fit ("held-out k-space validation"). Self-supervised SSDU (Yaman et al., 2020,
Magn. Reson. Med. 84:3172, arXiv 1910.09116) splits the measured k-space lines into two
disjoint sets in the same way, one to enforce data consistency and one to score the result.

What is held out:

- Cartesian MRI (:class:`~meddiff.physics.mri.SingleCoilMRI`,
  :class:`~meddiff.physics.mri.MultiCoilMRI`, or a
  :class:`~meddiff.physics.mri.PhaseModulated` wrapping one): with a 1D mask (every column
  fully sampled or empty) whole sampled columns (phase-encoding lines), with a 2D mask sampled
  points; never the calibration region (the fully sampled block around the k-space centre,
  :func:`~meddiff.physics.masks.calibration_region`), which the phase and coil estimates need.
- Parallel-beam CT (:class:`~meddiff.physics.ct.ParallelBeamCT` and subclasses): views.

``round(fraction * n)`` of the ``n`` measured lines / points / views are held out (at least
one), one drawn at random from each of as many equal strata of the candidates sorted by
position, so that they spread over k-space / the angles; reproducible from ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from meddiff.errors import InputError
from meddiff.physics.base import LinearOperator
from meddiff.physics.ct import ParallelBeamCT
from meddiff.physics.masks import as_binary_mask, calibration_region
from meddiff.physics.mri import MultiCoilMRI, PhaseModulated, SingleCoilMRI


@dataclass
class Holdout:
    """A measurement split into two disjoint parts.

    ``fit_op`` / ``fit_y``: the operator and measurement to reconstruct from; ``held_op`` /
    ``held_y``: the held-out samples to score against. Operators are of the input's family
    with the same geometry. Shapes: MRI ``y`` (B, C, H, W) complex for both parts (the same
    shape as the input, zero outside each part's mask); CT (B, C, n_fit, D) and
    (B, C, n_held, D). ``units``: what was held out, e.g. ``"k-space lines"``; ``n_held`` of
    ``n_measured``.
    """

    fit_op: LinearOperator
    fit_y: torch.Tensor
    held_op: LinearOperator
    held_y: torch.Tensor
    units: str
    n_held: int
    n_measured: int


def spread_pick(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``range(n)``, one uniformly at random from each of ``k`` near-equal contiguous
    strata (stratified sampling: spread out, never two neighbours from the same stratum)."""
    edges = np.floor(np.linspace(0, n, k + 1)).astype(int)
    return edges[:-1] + np.floor(rng.random(k) * np.diff(edges)).astype(int)


def _count(fraction: float, n_measured: int, n_candidates: int, keep_one: bool) -> int:
    """How many of the candidates to hold out; InputError when none can be."""
    n = min(max(1, round(fraction * n_measured)), n_candidates - keep_one)
    if n < 1:
        raise InputError("the self-check found nothing to hold out: every measured sample is "
                         "in the fully sampled centre (or only one is measured)")
    return n


def _protected(mask: torch.Tensor) -> torch.Tensor:
    """The calibration region of a (H, W) bool mask as a bool (H, W) tensor (empty when the
    k-space centre is not sampled)."""
    keep = torch.zeros_like(mask)
    if mask[mask.shape[0] // 2, mask.shape[1] // 2]:
        keep[calibration_region(mask)] = True
    return keep


def split_mask(mask: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                        str, int, int]:
    """``(fit_mask, held_mask, units, n_held, n_measured)`` of a binary (H, W) sampling mask:
    two disjoint bool (H, W) masks whose union is ``mask``; the calibration region stays in
    ``fit_mask`` (module docstring)."""
    mask = as_binary_mask(mask).cpu()
    protected = _protected(mask)
    lines = bool((mask.all(0) | ~mask.any(0)).all())
    sampled, free = (mask[0], mask[0] & ~protected[0]) if lines else \
        (mask.flatten(), (mask & ~protected).flatten())
    candidates = torch.nonzero(free).flatten().numpy()
    n_measured = int(sampled.sum())
    n_held = _count(fraction, n_measured, candidates.size, not bool(protected.any()))
    picks = candidates[spread_pick(candidates.size, n_held, np.random.default_rng(seed))]
    held = torch.zeros(sampled.shape, dtype=torch.bool)
    held[torch.from_numpy(picks)] = True
    held = held.expand(mask.shape) if lines else held.reshape(mask.shape)
    units = "k-space lines" if lines else "k-space samples"
    return mask & ~held, held.clone(), units, n_held, n_measured


def _mri_op(op: LinearOperator, mask: torch.Tensor) -> LinearOperator:
    """``op`` (SingleCoilMRI, MultiCoilMRI or PhaseModulated of one) with another mask."""
    if isinstance(op, PhaseModulated):
        return PhaseModulated(_mri_op(op.operator, mask), torch.angle(op.carrier))
    if isinstance(op, MultiCoilMRI):
        return MultiCoilMRI(mask, op.coil_maps, op.noise)
    return SingleCoilMRI(mask, op.noise)


def _cartesian(op: LinearOperator) -> LinearOperator | None:
    """The Cartesian MRI operator under ``op`` (itself, or the one a PhaseModulated wraps)."""
    inner = op.operator if isinstance(op, PhaseModulated) else op
    return inner if isinstance(inner, (SingleCoilMRI, MultiCoilMRI)) else None


def _masked(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return y * mask.to(device=y.device, dtype=y.real.dtype)


def _split_mri(op: LinearOperator, y: torch.Tensor, fraction: float, seed: int) -> Holdout:
    fit, held, units, n_held, n = split_mask(_cartesian(op).mask, fraction, seed)
    return Holdout(_mri_op(op, fit), _masked(y, fit), _mri_op(op, held), _masked(y, held), units,
                   n_held, n)


def _ct_op(op: ParallelBeamCT, views: np.ndarray) -> ParallelBeamCT:
    """A :class:`ParallelBeamCT` with ``op``'s image size, detectors, noise, backend and chunking
    and only the given views."""
    return ParallelBeamCT(op.img_shape, op.angles[torch.from_numpy(views)], op.n_detectors,
                          op.noise, op.backend, op.projector.chunk_views)


def _views(y: torch.Tensor, views: np.ndarray) -> torch.Tensor:
    return y[:, :, torch.from_numpy(views).to(y.device)]


def _split_ct(op: ParallelBeamCT, y: torch.Tensor, fraction: float, seed: int) -> Holdout:
    order = torch.argsort(op.angles).numpy()  # strata over the angles, not the view order
    n_held = _count(fraction, op.n_views, op.n_views, True)
    held = np.sort(order[spread_pick(op.n_views, n_held, np.random.default_rng(seed))])
    fit = np.setdiff1d(np.arange(op.n_views), held)
    return Holdout(_ct_op(op, fit), _views(y, fit), _ct_op(op, held), _views(y, held),
                   "projection views", n_held, op.n_views)


def split_measurement(op: LinearOperator, y: torch.Tensor, fraction: float = 0.1,
                      seed: int = 0) -> Holdout:
    """Split ``(op, y)`` into a part to reconstruct from and a held-out part to score on.

    Args:
        op: Cartesian MRI or parallel-beam CT operator (module docstring).
        y: its measurement: MRI (B, C, H, W) complex k-space, CT (B, C, n_views, D) sinogram.
        fraction: share of the measured lines / points / views to hold out, in (0, 1); at
            least one is held out and at least one kept.
        seed: the random choice within each stratum.
    Returns:
        :class:`Holdout`; for MRI ``fit_y + held_y == y`` on the sampled entries.
    """
    if not 0 < fraction < 1:
        raise InputError(f"the held-out fraction must be in (0, 1), got {fraction}")
    if isinstance(op, ParallelBeamCT):
        return _split_ct(op, y, fraction, seed)
    if _cartesian(op) is not None:
        return _split_mri(op, y, fraction, seed)
    raise InputError("self-check supports MRI and CT operators")
