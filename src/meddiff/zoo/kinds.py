"""What kinds of network the store holds: one spec dataclass per kind (everything needed to
rebuild the network besides its weights, read with the strict codec of :mod:`meddiff.config`)
and one builder (spec -> randomly initialised ``nn.Module``).

Adding a kind is one :class:`Kind` entry in :data:`KINDS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from torch import nn

from meddiff.errors import ConfigError
from meddiff.nets.autoencoder import AEConfig, build_autoencoder
from meddiff.nets.basic_unet import FEATURES, ResidualUNet, build_seg_unet
from meddiff.nets.classifier import ClassifierConfig, NoisyClassifier
from meddiff.nets.discriminator import DiscriminatorSpec, PatchDiscriminator
from meddiff.nets.feature_encoder import FeatureEncoder
from meddiff.nets.unet import UNetConfig, build_unet


@dataclass(frozen=True)
class DiffusionSpec:
    """A diffusion model: its UNet and how it was trained.

    Attributes:
        net: the UNet architecture.
        schedule / num_steps: the training noise schedule.
        parametrization: what the network predicts (eps, x0 or v).
        image_size: the spatial size it was trained at (H = W [= D]); for a latent model the
            latents' size.
        noise: the training noise, ``gaussian`` or ``simplex`` (AnoDDPM).
        clip_x0: clip the predicted clean sample to the data range [-1, 1] while sampling.
            Needed with the linear schedule: at ``t ~ T`` a 1 % error in the noise prediction
            becomes a ``sqrt(1 - abar) / sqrt(abar) ~ 150``-fold error in ``x0``, which the
            deterministic DDIM ODE carries to the end (measured on ``brain-prior-64``: DDIM
            samples with std 2.4 instead of 0.6 without clipping). Ho et al. 2020 and MONAI's
            schedulers clip too.
        intensity: ``"unit"``: one image-space channel in [0, 1], model space ``2 x - 1``;
            ``"complex"``: two channels (real, imaginary) of a complex image of magnitude <= 1,
            used as the model-space tensor unchanged (:mod:`meddiff.data.modalities`).
        condition: how the network is conditioned: ``none``, ``concat`` (extra input channels,
            e.g. the image of a mask DDPM), ``class`` (class labels) or ``context``
            (cross-attention); see :class:`meddiff.core.model.Condition`.
        autoencoder: for a latent diffusion model, the name of the autoencoder (same folder)
            whose scaled latents it models; ``None`` for image-space models.
        data: free-form description of the training data (for the model card).
        slice_sizes: for a prior trained on random ``image_size`` windows of larger slices
            (``data.render_sizes`` of the run config), the sizes (px) of those slices: it runs
            without a pixel-size warning on inputs from ``min / 2`` to ``max * 2`` px (the
            same field of view); empty: trained on whole ``image_size`` slices.
    """

    net: UNetConfig = field(default_factory=UNetConfig)
    schedule: Literal["linear", "cosine"] = "linear"
    num_steps: int = 1000
    parametrization: Literal["eps", "x0", "v"] = "eps"
    image_size: int = 64
    noise: Literal["gaussian", "simplex"] = "gaussian"
    clip_x0: bool = True
    intensity: Literal["unit", "complex"] = "unit"
    condition: Literal["none", "concat", "class", "context"] = "none"
    autoencoder: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    slice_sizes: tuple[int, ...] = ()

    @property
    def trained_sizes(self) -> tuple[int, int]:
        """(smallest, largest) slice size in px the prior saw in training."""
        sizes = self.slice_sizes or (self.image_size,)
        return min(sizes), max(sizes)

    def __post_init__(self) -> None:
        if self.image_size % self.net.divisor:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of {self.net.divisor}")
        if self.intensity == "complex" and self.net.in_channels != 2:
            raise ConfigError("a complex-intensity model needs net.in_channels = 2 (real, imag)")
        if self.condition == "concat" and self.net.in_channels <= self.net.out_channels:
            raise ConfigError("a concat-conditioned model needs net.in_channels > out_channels "
                              "(the state plus the condition channels)")
        if (self.condition == "class") != (self.net.num_class_embeds is not None):
            raise ConfigError("condition 'class' goes with net.num_class_embeds (and only it)")
        if (self.condition == "context") != (self.net.cross_attention_dim is not None):
            raise ConfigError("condition 'context' goes with net.cross_attention_dim (and only it)")


@dataclass(frozen=True)
class ClassifierSpec:
    """A noise-aware classifier and the diffusion schedule whose ``x_t`` it classifies."""

    net: ClassifierConfig = field(default_factory=ClassifierConfig)
    schedule: Literal["linear", "cosine"] = "linear"
    num_steps: int = 1000
    labels: tuple[str, ...] = ("healthy", "lesion")

    def __post_init__(self) -> None:
        if len(self.labels) != self.net.num_classes:
            raise ConfigError(f"{len(self.labels)} labels for {self.net.num_classes} classes")


@dataclass(frozen=True)
class AutoencoderSpec:
    """A KL autoencoder for ``image_size`` px images; ``latent_scale`` multiplies its latent
    means so they have unit std over the training images (Rombach et al. 2022, sec. 4.3.2)."""

    net: AEConfig = field(default_factory=AEConfig)
    image_size: int = 64
    latent_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.image_size % self.net.factor:
            raise ConfigError(f"image_size {self.image_size} is not divisible by {self.net.factor}")
        if not self.latent_scale > 0:
            raise ConfigError(f"latent_scale must be > 0, got {self.latent_scale}")


@dataclass(frozen=True)
class ReconUNetSpec:
    """The supervised residual reconstruction UNet: ``mri`` (2 channels, real / imaginary of
    the zero-filled image) or ``ct`` (1 channel, the FBP image)."""

    modality: Literal["mri", "ct"] = "mri"
    features: tuple[int, ...] = FEATURES
    image_size: int = 64

    @property
    def channels(self) -> int:
        return 2 if self.modality == "mri" else 1


@dataclass(frozen=True)
class RegressionUNetSpec:
    """A supervised image-to-image residual UNet (the regression baseline of the denoising and
    translation benches): ``in_channels`` image-space inputs (the image to map first, then any
    guidance channels) -> ``out_channels`` (the residual is taken on the first input channels);
    ``data``: free-form description of the training pairs (for the card and the input
    contract)."""

    in_channels: int = 1
    out_channels: int = 1
    features: tuple[int, ...] = FEATURES
    image_size: int = 64
    data: dict[str, str] = field(default_factory=dict)

    @property
    def divisor(self) -> int:
        """What the image sides must be divisible by: MONAI's BasicUNet halves four times."""
        return 16

    def __post_init__(self) -> None:
        if not 1 <= self.out_channels <= self.in_channels:
            raise ConfigError("a regression-unet needs 1 <= out_channels <= in_channels, got "
                              f"{self.in_channels} -> {self.out_channels}")


@dataclass(frozen=True)
class SegUNetSpec:
    """The supervised segmentation UNet: image (B, 1, H, W) -> mask logits."""

    features: tuple[int, ...] = FEATURES
    image_size: int = 64


@dataclass(frozen=True)
class FeatureEncoderSpec:
    """The FD-MedEnc encoder (fixed architecture; images resized to ``size``)."""

    size: int = FeatureEncoder.SIZE
    features: int = FeatureEncoder.FEATURES

    def __post_init__(self) -> None:
        if (self.size, self.features) != (FeatureEncoder.SIZE, FeatureEncoder.FEATURES):
            raise ConfigError(f"the feature encoder is {FeatureEncoder.SIZE} px / "
                              f"{FeatureEncoder.FEATURES} features")


@dataclass(frozen=True)
class Kind:
    """A kind of stored network: its spec class, its builder and whether its weights are
    stored in float16 (measured per network: see the model cards)."""

    spec: type
    build: Callable[[Any], nn.Module]
    fp16: bool = True


KINDS: dict[str, Kind] = {
    "diffusion": Kind(DiffusionSpec, lambda s: build_unet(s.net)),
    "classifier": Kind(ClassifierSpec, lambda s: NoisyClassifier(s.net)),
    "autoencoder": Kind(AutoencoderSpec, lambda s: build_autoencoder(s.net)),
    "recon-unet": Kind(ReconUNetSpec, lambda s: ResidualUNet(s.channels, tuple(s.features))),
    "regression-unet": Kind(RegressionUNetSpec, lambda s: ResidualUNet(
        s.in_channels, tuple(s.features), s.out_channels)),
    "seg-unet": Kind(SegUNetSpec, lambda s: build_seg_unet(tuple(s.features))),
    "feature-encoder": Kind(FeatureEncoderSpec, lambda s: FeatureEncoder()),
    "discriminator": Kind(DiscriminatorSpec, PatchDiscriminator),
}


def get_kind(name: str) -> Kind:
    """The :class:`Kind` called ``name``; one-line ConfigError listing the kinds otherwise."""
    if name not in KINDS:
        raise ConfigError(f"unknown model kind {name!r}; choose from {', '.join(KINDS)}")
    return KINDS[name]


def kind_of(spec: Any) -> str:
    """The kind name of a spec instance."""
    for name, kind in KINDS.items():
        if type(spec) is kind.spec:
            return name
    raise ConfigError(f"{type(spec).__name__} is not the spec of a stored kind")
