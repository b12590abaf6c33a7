"""The supervised reconstruction UNet (``meddiff reconstruct --method unet``).

A residual image-to-image network ``x = d + f(d)`` from the direct reconstruction ``d`` (the
zero-filled MRI image ``A^H y`` as real / imaginary channels, or the CT FBP image) to the image,
in image space: the fastMRI UNet baseline (Zbontar et al. 2018, arXiv:1811.08839, sec. 5) and
FBPConvNet for sparse-view CT (Jin, McCann, Froustey & Unser 2017, IEEE TIP 26:4509). Each
batch gets one acquisition drawn from ``options.acquisitions`` (default: the benchmark's
settings) and is simulated on the fly (:mod:`meddiff.physics.acquisition`); loss L1 between
the output and the image.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from meddiff.errors import ConfigError
from meddiff.eval.metrics import psnr_batch
from meddiff.nets.unet import count_parameters
from meddiff.physics.acquisition import simulate_ct, simulate_mri
from meddiff.physics.mri import channels_to_complex, complex_to_channels
from meddiff.train.data import make_dataset
from meddiff.train.objectives.base import L1PairObjective, Pair


@dataclass(frozen=True)
class Acquisition:
    """One simulated acquisition: MRI ``mask`` + ``acceleration`` (single coil), or CT ``views``
    (None: all) and ``dose`` (fraction of the full dose; None: noiseless)."""

    mask: str | None = None
    acceleration: float | None = None
    views: int | None = None
    dose: float | None = None

    def describe(self) -> str:
        if self.mask is not None:
            return f"{self.mask} {self.acceleration:g}x"
        return f"{self.views or 'all'} views, dose {self.dose if self.dose else 'full'}"


DEFAULT_ACQUISITIONS = {
    "mri": tuple(Acquisition(mask=m, acceleration=r) for m in ("random", "equispaced")
                 for r in (4.0, 8.0)),
    "ct": (Acquisition(views=30), Acquisition(views=60), Acquisition(dose=0.25)),
}


@dataclass(frozen=True)
class ReconOptions:
    """``acquisitions``: the settings one is drawn from per batch (empty: the defaults of the
    modality); ``val_items``: held-out images of the validation PSNR (all by default)."""

    acquisitions: tuple[Acquisition, ...] = ()
    val_items: int = 10 ** 6


class ReconUNet(L1PairObjective):
    """Supervised residual reconstruction (see the module docstring)."""

    name = "recon-unet"
    kind = "recon-unet"
    Options = ReconOptions

    def check(self) -> None:
        want = {"mri": "complex_brain_slices", "ct": "head_ct_slices"}[self.spec.modality]
        if self.data.dataset != want:
            raise ConfigError(f"a {self.spec.modality} recon-unet trains on data.dataset {want}")
        for acq in self.acquisitions:
            if (acq.mask is not None) != (self.spec.modality == "mri"):
                raise ConfigError(f"acquisition {acq} does not fit modality {self.spec.modality}")

    @property
    def acquisitions(self) -> tuple[Acquisition, ...]:
        return self.options.acquisitions or DEFAULT_ACQUISITIONS[self.spec.modality]

    def _simulate(self, clean: torch.Tensor, acq: Acquisition, seed: int) -> torch.Tensor:
        """Direct reconstruction (zero-filled / FBP) of ``clean`` (B, C, H, W) as network input."""
        if self.spec.modality == "mri":
            op, y = simulate_mri(channels_to_complex(clean), acq.mask, acq.acceleration, seed=seed)
            return complex_to_channels(op.A_adjoint(y))
        op, y = simulate_ct(clean, acq.views, acq.dose, seed=seed)
        return op.fbp(y)

    def pair(self, net: nn.Module, batch: dict, generator: torch.Generator) -> Pair:
        clean = batch["image"].float()
        acqs = self.acquisitions
        dev = generator.device
        index = int(torch.randint(len(acqs), (1,), generator=generator, device=dev))
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator, device=dev))
        with torch.autocast(clean.device.type, enabled=False):  # physics in float32
            direct = self._simulate(clean, acqs[index], seed)
        return Pair(direct, net(direct).float(), clean)

    def pair_channels(self) -> int:
        return 2 * self.spec.channels

    @torch.no_grad()
    def validate(self, nets: Mapping[str, nn.Module], spec) -> dict:
        """PSNR (magnitude clipped to [0, 1], data range 1) per acquisition on the held-out
        validation slab."""
        ds = make_dataset(self.data, self.image_size, split="val")
        clean = torch.stack([ds[i]["image"] for i in range(min(self.options.val_items, len(ds)))])
        magnitude = clean.norm(dim=1, keepdim=True)
        out = {}
        for k, acq in enumerate(self.acquisitions):
            rec = nets["model"](self._simulate(clean, acq, seed=1000 + k)).float()
            mag = rec.norm(dim=1, keepdim=True).clamp(0, 1)
            out[acq.describe()] = round(float(psnr_batch(mag, magnitude, 1.0).mean()), 3)
        return {"val_psnr": out}

    def network_text(self, spec, net: nn.Module) -> str:
        return (f"residual MONAI BasicUNet d + f(d), features {list(spec.features)}, "
                f"{spec.channels} channel(s) ({spec.modality}), "
                f"{count_parameters(net) / 1e6:.2f} M parameters")

    def loss_text(self) -> str:
        return ("L1 between d + f(d) and the image, one acquisition per batch drawn from: "
                + "; ".join(a.describe() for a in self.acquisitions))
