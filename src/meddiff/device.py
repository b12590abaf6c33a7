"""Where to run: the ``--device auto|cpu|cuda`` choice of every command, as a ``torch.device``."""
from __future__ import annotations

from typing import TYPE_CHECKING

from meddiff.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``'auto'`` -> CUDA (``cuda:<local_rank>``) if available else CPU; ``'cuda'`` must exist.
    A ``torch.device`` passes through unchanged. torch is imported here, not at module level,
    so that the CLI can offer :data:`DEVICE_CHOICES` without loading it."""
    import torch

    if isinstance(choice, torch.device):
        return choice
    if choice not in DEVICE_CHOICES:
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast speeds up ``device``: CUDA devices that support bfloat16, and
    CPUs with bfloat16 instructions (AVX512-BF16 or AMX). Elsewhere a CPU emulates bfloat16
    and autocast runs about 3x *slower* than float32 (measured on an AVX-512 Xeon without
    them), so callers fall back to float32."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = [getattr(torch.cpu, name, None) for name in
              ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(c is None for c in checks):  # an older torch without the probes: trust the caller
        return True
    return any(c() for c in checks if c is not None)
