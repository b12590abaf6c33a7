"""Guidance: denoisers whose noise prediction is steered towards a condition.

Each guide wraps a :class:`~meddiff.core.model.Denoiser` and exposes the same ``predict`` /
``schedule`` interface, so every sampler accepts a guided model unchanged.
"""
from __future__ import annotations

from typing import Callable

import torch

from .model import Condition, Denoiser, DenoiserWrapper, Prediction
from .schedule import _bcast

LogProb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``log_prob(x_t, t) -> (B,)``: a differentiable log-density (or negative loss) of the goal."""


class _Wrapped(DenoiserWrapper):
    """Guides return the base prediction with a modified noise estimate ``eps``; the clean
    estimate moves with it at the same ``x_t``:
    ``x0 = x0_base - sqrt((1 - abar_t) / abar_t) (eps - eps_base)``. As in Dhariwal & Nichol's
    reference sampler (``condition_score``), the shift starts from the base estimate *after*
    the base denoiser's clipping (``clip_x0``; a linear-schedule prior needs it for a stable
    DDIM) and is not clipped again. Written as a shift, an unchanged ``eps`` returns the base
    prediction exactly, also near ``t = T`` where ``1 / sqrt(abar_t)`` is huge (the
    v-parametrised cosine priors)."""

    def _shifted(self, x_t: torch.Tensor, t, base: Prediction, eps: torch.Tensor) -> Prediction:
        ab = _bcast(self.schedule.alpha_bar(torch.as_tensor(t)), x_t)
        return Prediction(eps=eps, x0=base.x0 - ((1 - ab) / ab).sqrt() * (eps - base.eps))


class GradientGuidance(_Wrapped):
    """Steer sampling by the gradient of a log-probability of the noisy sample.

    Dhariwal & Nichol 2021 (arXiv 2105.05233), Algorithm 2:
    ``eps_hat = eps - scale * sqrt(1 - abar_t) * grad_{x_t} log p(y | x_t)``.
    With ``log_prob`` a classifier's log-softmax this is classifier guidance; with a negative
    regression loss it is the regression guidance of Wolleb et al. 2022 (arXiv 2204.02641).
    """

    def __init__(self, model: Denoiser, log_prob: LogProb, scale: float):
        super().__init__(model)
        self.log_prob, self.scale = log_prob, float(scale)

    def gradient(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """``grad_{x_t} sum_b log_prob(x_t, t)_b`` (each sample's gradient is its own)."""
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            t_vec = torch.as_tensor(t, device=x.device).float().expand(x.shape[0])
            lp = self.log_prob(x, t_vec).sum()
            (g,) = torch.autograd.grad(lp, x)
        return g

    def predict(self, x_t: torch.Tensor, t, cond: Condition | None = None) -> Prediction:
        base = self.model.predict(x_t, t, cond)
        if self.scale == 0:
            return base
        s = _bcast(self.schedule.sigma_vp(torch.as_tensor(t)), x_t)
        return self._shifted(x_t, t, base, base.eps - self.scale * s * self.gradient(x_t, t))


def classifier_log_prob(classifier: Callable[..., torch.Tensor], target: torch.Tensor) -> LogProb:
    """``log p(target | x_t)`` from a noise-aware classifier ``classifier(x_t, t) -> logits``."""

    def log_prob(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(classifier(x_t, t).float(), dim=1)
        return logp.gather(1, target.view(-1, 1).to(logp.device)).squeeze(1)

    return log_prob


class ClassifierFreeGuidance(_Wrapped):
    """Classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598, eq. 6):
    ``eps_hat = (1 + w) eps(x_t, c) - w eps(x_t, null)``.

    ``null`` is the condition the model was trained with when the prompt was dropped (e.g. a
    reserved class label or a zero context). Both branches run in one batched network call.
    """

    def __init__(self, model: Denoiser, null: Condition, scale: float):
        super().__init__(model)
        self.null, self.scale = null, float(scale)

    def predict(self, x_t: torch.Tensor, t, cond: Condition | None = None) -> Prediction:
        cond = self.model.cond if cond is None else cond
        both = Condition(*[_cat(c, n) for c, n in ((cond.concat, self.null.concat),
                                                    (cond.class_labels, self.null.class_labels),
                                                    (cond.context, self.null.context))])
        t2 = torch.as_tensor(t)
        t2 = t2.repeat(2) if t2.ndim == 1 else t2
        pred = self.model.predict(torch.cat([x_t, x_t]), t2, both)
        (eps_c, eps_u), (x0_c, _) = pred.eps.chunk(2), pred.x0.chunk(2)
        return self._shifted(x_t, t, Prediction(eps=eps_c, x0=x0_c),
                             (1 + self.scale) * eps_c - self.scale * eps_u)


def _cat(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None and b is None:
        return None
    if a is None or b is None:
        raise ValueError("conditional and null conditions must set the same fields")
    return torch.cat([a, b.expand_as(a) if b.shape[0] == 1 else b])
