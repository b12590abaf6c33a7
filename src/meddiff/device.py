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
