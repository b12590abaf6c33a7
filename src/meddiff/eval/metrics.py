"""Image-quality, segmentation and detection metrics with explicit contracts.

Conventions shared by every function here:

- Inputs may be numpy arrays or torch tensors (detached and moved to the CPU; computed in float64).
- **Complex rule**: if either input of a comparison is complex, *both* are replaced by their
  magnitude ``|.|`` before anything else, i.e. metrics are computed on magnitude images as in the
  fastMRI benchmark (Zbontar et al. 2018, arXiv:1811.08839, Sec. 5). Score maps given to the
  detection metrics follow the same rule.
- Shapes must match exactly (no broadcasting); anything the caller can get wrong raises
  :class:`meddiff.errors.InputError`.
- PSNR/SSIM take ``data_range`` explicitly (the dynamic range of the *reference*, e.g. 1.0 for
  image space [0, 1], or ``ref.max()`` of a magnitude image). There is deliberately no default:
  a silent default is the most common source of irreproducible PSNR/SSIM numbers.

Single-image functions take one image of shape (H, W) or (D, H, W); size-1 leading axes (e.g. the
channel of a (1, H, W) array) are dropped. ``*_batch`` variants take (B, C, H, W) or
(B, C, D, H, W) and return one value per image, shape (B,).

PSNR and SSIM are computed with scikit-image; AUROC/AUPRC with scikit-learn.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from meddiff.errors import InputError

ArrayLike = np.ndarray | torch.Tensor

SSIM_WIN = 7  # Wang et al. 2004 use 7x7 (uniform window in scikit-image's default)


def _as_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """numpy view of ``x`` (torch tensors are detached, cast from low precision, moved to CPU)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if not (t.is_complex() or t.dtype == torch.bool):
            t = t.to(torch.float64)
        return t.numpy()
    if isinstance(x, np.ndarray | np.generic | list | tuple | float | int):
        return np.asarray(x)
    raise InputError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _pair(x: ArrayLike, ref: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 pair; magnitude of both if either is complex (the complex rule)."""
    a, b = _as_numpy(x, "x"), _as_numpy(ref, "ref")
    if a.shape != b.shape:
        raise InputError(f"shape mismatch: x {a.shape} vs ref {b.shape}")
    if a.size == 0:
        raise InputError("empty input")
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        a, b = np.abs(a), np.abs(b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("inputs contain NaN or Inf")
    return a, b


def _check_range(data_range: float) -> float:
    dr = float(data_range)
    if not np.isfinite(dr) or dr <= 0:
        raise InputError(f"data_range must be a positive finite number, got {data_range!r}")
    return dr


def _squeeze_leading(a: np.ndarray) -> np.ndarray:
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


# ----------------------------------------------------------------------------- image quality


def psnr(x: ArrayLike, ref: ArrayLike, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range**2 / MSE(x, ref))``.

    x, ref: same shape, any number of dimensions, any intensity range (``data_range`` states it).
    Returns ``inf`` for identical inputs.
    """
    a, b = _pair(x, ref)
    return _psnr_one(a, b, _check_range(data_range))


def ssim(x: ArrayLike, ref: ArrayLike, data_range: float) -> float:
    """Mean structural similarity (Wang et al. 2004, IEEE TIP 13(4), Eq. 13) of one image.

    x, ref: one 2D (H, W) or 3D (D, H, W) image (size-1 leading axes dropped), every side
    >= 7. Uses scikit-image defaults: 7-wide uniform window, K1=0.01, K2=0.03, sample
    covariance, border of 3 excluded from the mean. Identical images give exactly 1.
    """
    a, b = _pair(x, ref)
    a, b = _squeeze_leading(a), _squeeze_leading(b)
    return _ssim_nd(a, b, _check_range(data_range), channel_axis=None)


def _ssim_nd(a: np.ndarray, b: np.ndarray, dr: float, channel_axis: int | None) -> float:
    spatial = a.shape if channel_axis is None else a.shape[1:]
    if len(spatial) not in (2, 3):
        raise InputError(f"SSIM needs a 2D or 3D image, got shape {a.shape}")
    if min(spatial) < SSIM_WIN:
        raise InputError(f"SSIM needs every spatial side >= {SSIM_WIN}, got shape {a.shape}")
    return float(structural_similarity(b, a, data_range=dr, win_size=SSIM_WIN,
                                       channel_axis=channel_axis))


def nmse(x: ArrayLike, ref: ArrayLike) -> float:
    """Normalised mean squared error ``||x - ref||^2 / ||ref||^2`` (any shape; ref must be non-zero)."""
    a, b = _pair(x, ref)
    den = float(np.sum(b * b))
    if den == 0.0:
        raise InputError("nmse is undefined for an all-zero reference")
    return float(np.sum((a - b) ** 2) / den)


def _per_image(fn: Callable[[np.ndarray, np.ndarray, float], float], x: ArrayLike,
               ref: ArrayLike, data_range: float | ArrayLike) -> np.ndarray:
    a, b = _pair(x, ref)
    if a.ndim not in (4, 5):
        raise InputError(f"batch metrics need (B, C, H, W) or (B, C, D, H, W), got {a.shape}")
    dr = _as_numpy(data_range, "data_range").astype(np.float64)
    if dr.ndim == 0:
        dr = np.full(a.shape[0], float(dr))
    if dr.shape != (a.shape[0],):
        raise InputError(f"data_range must be a scalar or have shape ({a.shape[0]},), got {dr.shape}")
    return np.array([fn(a[i], b[i], _check_range(dr[i])) for i in range(a.shape[0])])


def _psnr_one(a: np.ndarray, b: np.ndarray, dr: float) -> float:
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(b, a, data_range=dr))


def _ssim_one(a: np.ndarray, b: np.ndarray, dr: float) -> float:
    if a.shape[0] == 1:
        return _ssim_nd(a[0], b[0], dr, channel_axis=None)
    return _ssim_nd(a, b, dr, channel_axis=0)


def psnr_batch(x: ArrayLike, ref: ArrayLike, data_range: float | ArrayLike) -> np.ndarray:
    """Per-image PSNR (dB) of (B, C, H, W) / (B, C, D, H, W) batches; returns shape (B,).

    data_range: a scalar or one value per image, shape (B,). The MSE runs over all channels.
    """
    return _per_image(_psnr_one, x, ref, data_range)


def ssim_batch(x: ArrayLike, ref: ArrayLike, data_range: float | ArrayLike) -> np.ndarray:
    """Per-image SSIM of (B, C, H, W) / (B, C, D, H, W) batches; returns shape (B,).

    data_range: scalar or shape (B,). With C > 1 the SSIM is averaged over channels.
    """
    return _per_image(_ssim_one, x, ref, data_range)


def nmse_batch(x: ArrayLike, ref: ArrayLike) -> np.ndarray:
    """Per-image NMSE of (B, C, H, W) / (B, C, D, H, W) batches; returns shape (B,)."""
    return _per_image(lambda a, b, _dr: nmse(a, b), x, ref, 1.0)


# ----------------------------------------------------------------------------- segmentation


def _binary(m: ArrayLike, name: str) -> np.ndarray:
    a = _as_numpy(m, name)
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise InputError(f"{name} must be boolean or contain only 0/1")
        a = a.astype(bool)
    return a


def dice(pred: ArrayLike, gt: ArrayLike) -> float:
    """Dice overlap ``2|P & G| / (|P| + |G|)`` of two binary masks of the same shape.

    Masks are pooled over all elements (pass one image for a per-image Dice). Masks may be
    boolean or 0/1. Convention: when both masks are empty the prediction is perfect and the
    Dice is defined as 1.0 (not NaN).
    """
    p, g = _binary(pred, "pred"), _binary(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    den = int(p.sum()) + int(g.sum())
    return 1.0 if den == 0 else 2.0 * int(np.logical_and(p, g).sum()) / den


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _as_numpy(scores, "scores")
    if np.iscomplexobj(s):
        s = np.abs(s)
    g = _binary(labels, "labels")
    if s.shape != g.shape:
        raise InputError(f"shape mismatch: scores {s.shape} vs labels {g.shape}")
    s = s.astype(np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise InputError("scores must be non-empty and finite")
    return s, g.ravel()


def dice_at(score_map: ArrayLike, gt: ArrayLike, threshold: float) -> float:
    """Dice of the mask ``score_map >= threshold`` against binary ``gt`` (same shape, pooled)."""
    s, g = _scores_and_labels(score_map, gt)
    return dice(s >= threshold, g)


def best_dice(score_map: ArrayLike, gt: ArrayLike) -> float:
    """Best achievable Dice over all thresholds, the "[Dice]" of Baur et al. 2021 (arXiv:2004.03271).

    Pixels of all images are pooled and one threshold is searched for the whole set. The search is
    exact: every distinct score is tried as a threshold (mask ``score >= t``), plus the empty mask
    (which scores 1.0 only when ``gt`` is empty too). O(N log N).
    """
    s, g = _scores_and_labels(score_map, gt)
    order = np.argsort(-s, kind="stable")
    s, g = s[order], g[order]
    tp = np.cumsum(g)
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each tie group
    n_gt = int(g.sum())
    dices = 2.0 * tp[ends] / (ends + 1 + n_gt)
    return float(max(dices.max(), 1.0 if n_gt == 0 else 0.0))


# ----------------------------------------------------------------------------- detection


def _two_classes(g: np.ndarray) -> None:
    if g.all() or not g.any():
        raise InputError("labels must contain both classes (0 and 1)")


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (higher score = more likely positive); inputs pooled, same shape.

    Equals the probability that a random positive scores above a random negative (ties count 1/2).
    """
    from sklearn.metrics import roc_auc_score

    s, g = _scores_and_labels(scores, labels)
    _two_classes(g)
    return float(roc_auc_score(g, s))


def auprc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the precision-recall curve as average precision ``sum_n (R_n - R_{n-1}) P_n``.

    scikit-learn's ``average_precision_score`` (no interpolation); inputs pooled, same shape.
    """
    from sklearn.metrics import average_precision_score

    s, g = _scores_and_labels(scores, labels)
    _two_classes(g)
    return float(average_precision_score(g, s))
