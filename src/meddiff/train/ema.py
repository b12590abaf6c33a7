"""Exponential moving average (EMA) of model weights.

Polyak averaging (Polyak & Juditsky, 1992) in its exponential form, as used for diffusion models
by Ho, Jain & Abbeel (2020, arXiv:2006.11239, Sec. 4, decay 0.9999) and recommended by Song &
Ermon (2020, arXiv:2006.09011, Technique 5). After every optimiser step

    shadow <- decay * shadow + (1 - decay) * theta

with a constant ``decay`` (no warm-up schedule). Trainable floating-point parameters are
averaged; buffers (e.g. normalisation statistics), frozen parameters and integer tensors are
copied. The state uses the model's own ``state_dict`` keys, so a saved EMA loads straight into a
model with ``load_state_dict``.

Started at the initial weights ``theta_0``, after ``n`` updates the average still holds
``decay^n`` of them (59 % after 531 steps at 0.999): a short run's EMA is mostly its random
initialisation. :func:`without_start` removes that share exactly, which is the bias correction
of Adam (Kingma & Ba 2015, arXiv:1412.6980, sec. 3) for an average started at ``theta_0``
instead of zero; the export of a run applies it (:func:`meddiff.train.run.export`).
"""
from __future__ import annotations

import torch
from torch import nn


def _is_averaged(t: torch.Tensor) -> bool:
    return isinstance(t, nn.Parameter) and t.requires_grad and t.is_floating_point()


class EMA:
    """EMA of ``model``'s parameters; buffers are copied. Starts from the current weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        source = model.state_dict(keep_vars=True)
        self._averaged = [k for k, t in source.items() if _is_averaged(t)]
        self._copied = [k for k, t in source.items() if not _is_averaged(t)]
        self.shadow: dict[str, torch.Tensor] = {k: t.detach().clone() for k, t in source.items()}

    def _source(self, model: nn.Module) -> dict[str, torch.Tensor]:
        source = model.state_dict(keep_vars=True)
        if source.keys() != self.shadow.keys():
            raise ValueError("EMA.update/copy_to: model does not match the EMA's state keys")
        return source

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` into the average (call after each step)."""
        source = self._source(model)
        if self._averaged:
            torch._foreach_lerp_([self.shadow[k] for k in self._averaged],
                                 [source[k].detach() for k in self._averaged], 1.0 - self.decay)
        for k in self._copied:
            self.shadow[k].copy_(source[k].detach())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters and buffers with the averaged ones."""
        self._source(model)
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors, keyed like ``model.state_dict()`` (references, not copies)."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the average from :meth:`state_dict` output (same keys and shapes)."""
        if state.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - state.keys())[:3]
            extra = sorted(state.keys() - self.shadow.keys())[:3]
            raise ValueError(f"EMA state keys do not match (missing {missing}, unexpected {extra})")
        for k, t in state.items():
            if t.shape != self.shadow[k].shape:
                raise ValueError(f"EMA state {k!r}: shape {tuple(t.shape)} != "
                                 f"{tuple(self.shadow[k].shape)}")
            self.shadow[k].copy_(t)


@torch.no_grad()
def without_start(shadow: dict[str, torch.Tensor], start: dict[str, torch.Tensor],
                  decay: float, updates: int) -> dict[str, torch.Tensor]:
    """The EMA ``shadow`` of ``updates`` steps with the start weights' share removed.

    ``shadow = d^n theta_0 + (1 - d) sum_{k=1..n} d^(n-k) theta_k``, so
    ``(shadow - d^n theta_0) / (1 - d^n)`` is the normalised exponential average of the weights
    the training visited, ``theta_1 .. theta_n``. Floating-point entries present in ``start``
    with its shape are corrected; others (buffers, integer tensors) are returned as they are.
    ``updates == 0`` or ``decay == 0`` returns ``shadow`` unchanged (there is nothing to remove).
    """
    if updates < 0 or not 0.0 <= decay < 1.0:
        raise ValueError(f"need updates >= 0 and decay in [0, 1), got {updates}, {decay}")
    share = decay ** updates
    if updates == 0 or share == 0.0:
        return dict(shadow)
    out = {}
    for k, t in shadow.items():
        s0 = start.get(k)
        if t.is_floating_point() and s0 is not None and s0.shape == t.shape:
            out[k] = (t - share * s0.to(t)) / (1.0 - share)
        else:
            out[k] = t
    return out

