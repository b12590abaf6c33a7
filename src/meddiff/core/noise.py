"""Noise for the forward process and the samplers: Gaussian and multi-octave simplex.

A noise function has the signature ``noise(like, generator) -> Tensor`` and returns a tensor of
``like``'s shape, dtype and device with (per sample) zero mean and unit variance.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

NoiseFn = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def gaussian(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` (drawn on the generator's device)."""
    dev = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=dev).to(like.device)


# -- 3-D simplex noise (Perlin 2001; Gustavson 2005, "Simplex noise demystified") ---------------
_GRAD3 = torch.tensor([[1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0], [1, 0, 1], [-1, 0, 1],
                       [1, 0, -1], [-1, 0, -1], [0, 1, 1], [0, -1, 1], [0, 1, -1], [0, -1, -1]],
                      dtype=torch.float32)
_PERM = torch.randperm(256, generator=torch.Generator().manual_seed(20220607)).repeat(3)


def simplex3d(p: torch.Tensor) -> torch.Tensor:
    """Simplex noise at points ``p`` (..., 3); values roughly in [-1, 1].

    Skews space so the simplex cell containing each point is found by flooring, sums the four
    corner contributions ``(0.6 - r^2)^4 <g, d>`` with hashed gradients ``g``.
    """
    f3, g3 = 1.0 / 3.0, 1.0 / 6.0
    s = p.sum(-1, keepdim=True) * f3
    ijk = torch.floor(p + s)
    d0 = p - (ijk - ijk.sum(-1, keepdim=True) * g3)
    # rank of each coordinate of d0 decides the two middle corners of the tetrahedron
    x, y, z = d0.unbind(-1)
    rank = torch.stack([(y > x).byte() + (z > x).byte(), (x >= y).byte() + (z > y).byte(),
                        (x >= z).byte() + (y >= z).byte()], -1)  # 0 for the largest coordinate
    o1, o2 = (rank < 1).to(p.dtype), (rank < 2).to(p.dtype)
    corners = [torch.zeros_like(d0), o1, o2, torch.ones_like(d0)]
    idx = ijk.long() & 255
    total = torch.zeros(p.shape[:-1], dtype=p.dtype, device=p.device)
    perm = _PERM.to(p.device)
    grad3 = _GRAD3.to(p.device, p.dtype)
    for k, c in enumerate(corners):
        d = d0 - c + k * g3
        ci = idx + c.long()
        h = perm[ci[..., 0] + perm[ci[..., 1] + perm[ci[..., 2]]]] % 12
        w = (0.6 - (d * d).sum(-1)).clamp(min=0)
        total = total + w ** 4 * (grad3[h] * d).sum(-1)
    return 32.0 * total


def simplex(like: torch.Tensor, generator: torch.Generator | None = None, *, octaves: int = 6,
            persistence: float = 0.8, base_scale: float | None = None) -> torch.Tensor:
    """Multi-octave simplex noise (Wyatt et al. 2022, AnoDDPM, CVPRW, sec. 3.2) shaped like
    ``like`` (B, C, *spatial) with 2 or 3 spatial dims.

    Octave ``o`` samples simplex noise at frequency ``2^o / base_scale`` (``base_scale`` in
    pixels, default a quarter of the largest spatial size) with amplitude ``persistence^o``;
    octaves whose features would be finer than 2 pixels are dropped (they would alias).
    2-D images take a random plane of the 3-D field (as AnoDDPM does with its time slice); each
    sample and channel gets its own random offset. The result is standardised per sample and
    channel to zero mean and unit variance, so it can replace Gaussian noise in the diffusion
    forward process.
    """
    spatial = like.shape[2:]
    if len(spatial) not in (2, 3):
        raise ValueError("simplex noise needs 2 or 3 spatial dims")
    base_scale = base_scale or max(spatial) / 4
    octaves = max(1, min(octaves, int(math.log2(base_scale / 2)) + 1))  # finest scale >= 2 px
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in spatial], indexing="ij")
    pts = torch.stack(grids + ((torch.zeros(spatial),) if len(spatial) == 2 else ()), -1)
    b, c = like.shape[:2]
    offsets = torch.rand((b, c, 1 + octaves, 3), generator=_cpu(generator)) * 1000.0
    out = torch.zeros((b, c, *spatial))
    for o in range(octaves):
        freq = 2.0 ** o / base_scale
        p = pts[None, None] * freq + offsets[:, :, o].reshape(b, c, *([1] * len(spatial)), 3)
        out += persistence ** o * simplex3d(p)
    flat = out.flatten(2)
    out = ((flat - flat.mean(-1, keepdim=True)) / flat.std(-1, keepdim=True).clamp(min=1e-8)).view_as(out)
    return out.to(like.device, like.dtype)


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """The offsets are drawn on the CPU; a CUDA generator is re-seeded into a CPU one."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator,
                                                           device=generator.device).item()))


NOISES: dict[str, NoiseFn] = {"gaussian": gaussian, "simplex": simplex}


def get_noise(name: str) -> NoiseFn:
    """Look up a noise by name (``gaussian`` or ``simplex``)."""
    if name not in NOISES:
        raise KeyError(f"unknown noise {name!r}; choose from {', '.join(NOISES)}")
    return NOISES[name]

