"""Diffusion models, unconditional or conditional, in image or latent space.

Loss: the simple loss of Ho et al. 2020 (arXiv:2006.11239, eq. 14) for any parametrisation
(:func:`meddiff.core.losses.diffusion_loss`). The state ``x_0`` is the batch item
``options.target`` in model space (:func:`meddiff.data.intensity.model_space`), or, for a latent
model (``model.autoencoder`` set), the scaled posterior mean ``s * mu_E(x)`` of that
autoencoder (Rombach et al. 2022, arXiv:2112.10752, sec. 4.3.2; Pinaya et al. 2022,
arXiv:2206.03461). The conditioning mode is the spec's ``condition`` (as MONAI Generative's
``DiffusionModelUNet``, Pinaya et al. 2023, arXiv:2307.15208) and its value the batch item
``options.condition``:

* ``concat``: an image-space image (B, Cc, *spatial) in [0, 1], concatenated to ``x_t`` in
  model space (e.g. the image of the conditional mask DDPM, Wolleb et al. 2022, MIDL,
  arXiv:2112.03145: ``X_t = b (+) x_t``); a list of items (e.g. ``[lowcount, mr]``, the PET +
  MR condition of P1) is concatenated in that order;
* ``class``: integer labels (B,) into the network's class embedding;
* ``context``: a cross-attention context (B, L, D), or integer labels (B,) given as one-hot
  contexts (B, 1, D).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meddiff.core.losses import diffusion_loss
from meddiff.core.model import Condition, Denoiser
from meddiff.core.noise import get_noise
from meddiff.core.samplers import generate
from meddiff.core.schedule import NoiseSchedule
from meddiff.data.intensity import from_model, model_space, to_model
from meddiff.data.lesion_bench import lesion_bench
from meddiff.errors import ConfigError
from meddiff.eval.metrics import dice
from meddiff.nets.unet import count_parameters
from meddiff.train.data import make_dataset
from meddiff.train.objectives.base import Objective
from meddiff.zoo.store import Stored, as_denoiser, load


@dataclass(frozen=True)
class DiffusionOptions:
    """``target``: the batch item diffused; ``condition``: the batch item conditioning it, or
    (``concat`` only) a list of items stacked as channels in that order (exactly when
    ``model.condition`` is not ``none``); ``autoencoder``: where to load the
    spec's autoencoder from (default: its name, a bundled model); ``val_items``: held-out items
    of the validation metrics."""

    target: str = "image"
    condition: str | tuple[str, ...] | None = None
    autoencoder: str | None = None
    val_items: int = 48


class Diffusion(Objective):
    """Diffusion model of any conditioning (see the module docstring)."""

    name = "diffusion"
    kind = "diffusion"
    Options = DiffusionOptions

    def check(self) -> None:
        spec, o = self.spec, self.options
        if (spec.condition == "none") != (o.condition is None):
            raise ConfigError("objective.options.condition (the batch item of the condition) is "
                              "needed exactly when model.condition is not 'none'")
        if isinstance(o.condition, tuple) and spec.condition != "concat":
            raise ConfigError("a list of condition items needs model.condition: concat")
        if self.data.spatial_dims != spec.net.spatial_dims:
            raise ConfigError(f"data.dataset {self.data.dataset!r} needs "
                              f"model.net.spatial_dims={self.data.spatial_dims}")
        if self.data.complex_images != (spec.intensity == "complex"):
            raise ConfigError("complex data (complex_brain_slices, or files with channels: "
                              "complex) goes with model.intensity: complex (and only it)")
        if spec.autoencoder is not None:
            latent = self.codec.spec.net.latent_channels
            if spec.net.out_channels != latent:
                raise ConfigError(f"model.net.out_channels must be the autoencoder's "
                                  f"{latent} latent channels")

    # ------------------------------------------------------------------ state and condition
    @cached_property
    def codec(self) -> Stored:
        """The frozen autoencoder of a latent model (eval mode, CPU until first use)."""
        return load(self.options.autoencoder or self.spec.autoencoder, kind="autoencoder")

    @property
    def image_size(self) -> int:
        factor = self.codec.spec.net.factor if self.spec.autoencoder is not None else 1
        return self.spec.image_size * factor

    @cached_property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.spec.schedule, self.spec.num_steps)

    def state(self, batch: dict) -> torch.Tensor:
        """``x_0`` in model space: (B, C, *spatial) (latents for a latent model)."""
        x = batch[self.options.target].float()
        if self.spec.autoencoder is None:
            return model_space(x, self.spec.intensity)
        ae = self.codec.net.to(x.device)
        with torch.no_grad():
            return ae.encode(to_model(x))[0].float() * self.codec.spec.latent_scale

    def condition(self, batch: dict) -> Condition | None:
        """The :class:`~meddiff.core.model.Condition` of ``batch`` (None if unconditional)."""
        mode = self.spec.condition
        if mode == "none":
            return None
        keys = self.options.condition
        if mode == "concat":
            keys = (keys,) if isinstance(keys, str) else keys
            return Condition(concat=to_model(torch.cat([batch[k].float() for k in keys], 1)))
        value = batch[keys]
        if mode == "class":
            return Condition(class_labels=value.long())
        if value.ndim == 1:  # labels -> one-hot contexts (B, 1, D)
            value = F.one_hot(value.long(), self.spec.net.cross_attention_dim)[:, None]
        return Condition(context=value.float())

    def loss(self, nets: Mapping[str, nn.Module], batch: dict, generator: torch.Generator,
             step: int) -> torch.Tensor:
        den = Denoiser(nets["model"], self.schedule, parametrization=self.spec.parametrization)
        return diffusion_loss(den, self.state(batch), generator, cond=self.condition(batch),
                              noise=get_noise(self.spec.noise))

    # ------------------------------------------------------------------ card
    def validate(self, nets: Mapping[str, nn.Module], spec) -> dict:
        """``val_loss``: the loss on the first ``val_items`` held-out items (8 noise draws,
        fixed seed), 2D data only; for a mask DDPM (target ``lesion`` given the image), the
        Dice of the mean of a 4-sample, 20-step DDIM ensemble >= 0.5 on the lesion
        benchmark's validation split."""
        if self.data.spatial_dims != 2 or self.data.dataset == "lesion_pairs":
            return {}
        val = make_dataset(self.data, self.image_size, split="val")
        items = [val[i] for i in range(min(self.options.val_items, len(val)))]
        if not items:  # e.g. a files dataset without validation files
            return {}
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            losses = [float(self.loss(nets, batch, gen, 0)) for _ in range(8)]
        out = {"val_loss": round(float(np.mean(losses)), 5)}
        if spec.condition == "concat" and self.options.target == "lesion":
            out |= self._mask_dice(as_denoiser(nets["model"], spec))
        return out

    @torch.no_grad()
    def _mask_dice(self, den: Denoiser, samples: int = 4, steps: int = 20) -> dict:
        bench = lesion_bench("val", contrasts=self.data.contrasts, size=self.image_size)
        x, gt = bench.images[:self.options.val_items], bench.lesions[:self.options.val_items]
        gen = torch.Generator().manual_seed(0)
        reps = x.repeat_interleave(samples, 0)
        masks = generate(den, tuple(reps.shape), sampler="ddim", steps=steps, generator=gen,
                         cond=Condition(concat=to_model(reps)))
        mean = from_model(masks).clamp(0, 1).reshape(len(x), samples, *x.shape[1:]).mean(1)
        per = [dice(m[0].numpy() >= 0.5, g[0].numpy()) for m, g in zip(mean, gt)]
        return {"val_dice_mean": round(float(np.mean(per)), 4),
                "val_dice_std": round(float(np.std(per)), 4), "val_slices": len(per),
                "ensemble": f"{samples} samples x {steps} DDIM steps"}

    def network_text(self, spec, net: nn.Module) -> str:
        c = spec.net
        attention = [w for w, a in zip(c.channels, c.attention_levels) if a]
        return (f"MONAI DiffusionModelUNet ({c.spatial_dims}D), channels {list(c.channels)}, "
                f"attention at widths {attention}, {c.in_channels} -> {c.out_channels} channels, "
                f"{count_parameters(net) / 1e6:.2f} M parameters; {spec.parametrization}-"
                f"prediction, {spec.schedule} schedule, {spec.num_steps} steps, {spec.noise} "
                f"noise, condition {spec.condition}"
                + (f", on the latents of {spec.autoencoder}" if spec.autoencoder else ""))

    def loss_text(self) -> str:
        return ("denoising loss E ||net(x_t, t) - target||^2, t uniform (Ho et al. 2020, "
                f"eq. 14) on `{self.options.target}`"
                + (f" given `{self._condition_text}`" if self.options.condition else ""))

    @property
    def _condition_text(self) -> str:
        keys = self.options.condition
        return keys if isinstance(keys, str) else " + ".join(keys)
