"""KL autoencoder (MONAI ``AutoencoderKL``; Rombach et al. 2022, arXiv 2112.10752, sec. 3.1)
behind one typed config: (B, 1, H, W) model-space images <-> (B, latent_channels, H / f, W / f)
latents."""
from __future__ import annotations

from dataclasses import dataclass

from monai.networks.nets import AutoencoderKL

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class AEConfig:
    """Architecture of the KL autoencoder: one level per entry of ``channels``, halving the
    image between levels, so the latent is (latent_channels, H / f, W / f), f = 2^(levels-1).
    Default: 64 x 64 x 1 -> 16 x 16 x 3, 0.45 M parameters, no attention."""

    channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 3
    num_res_blocks: int = 1
    norm_num_groups: int = 16

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


def build_autoencoder(cfg: AEConfig = AEConfig()) -> AutoencoderKL:
    """A randomly initialised MONAI ``AutoencoderKL`` for (B, 1, H, W) images (H, W divisible
    by ``cfg.factor``)."""
    bad = [c for c in cfg.channels if c % cfg.norm_num_groups]
    if bad:
        raise ConfigError(f"norm_num_groups={cfg.norm_num_groups} does not divide channels {bad}")
    return AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1,
                         channels=tuple(cfg.channels), num_res_blocks=cfg.num_res_blocks,
                         attention_levels=(False,) * len(cfg.channels),
                         latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups,
                         with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
