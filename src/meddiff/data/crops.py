"""Windows of images and volumes at their native pixel size: the random crops that train a
fully convolutional prior at a small size for use at any size.

Contract: arrays are (C, *spatial) with 2 or 3 spatial axes; a window of ``size`` per spatial
axis that reaches outside the array is zero there (images smaller than ``size`` are padded).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def window_starts(shape: Sequence[int], size: int,
                  rng: np.random.Generator | None) -> list[int]:
    """Window starts per axis: uniformly random (``rng``) or centred; negative starts mean
    padding (the axis is shorter than ``size``)."""
    out = []
    for n in shape:
        span = n - size
        if rng is None:
            out.append(span // 2)
        else:
            out.append(int(rng.integers(0, span + 1)) if span >= 0
                       else -int(rng.integers(0, -span + 1)))
    return out


def window(arr: np.ndarray, starts: Sequence[int], size: int) -> np.ndarray:
    """The ``size``-wide window of ``arr`` (C, *spatial) at ``starts``, zero outside it."""
    src = arr[(slice(None),) + tuple(slice(max(s, 0), min(s + size, n))
                                     for s, n in zip(starts, arr.shape[1:]))]
    pad = [(0, 0)] + [(max(0, -s), max(0, s + size - n)) for s, n in zip(starts, arr.shape[1:])]
    return np.pad(np.asarray(src, dtype=np.float32), pad)


class RandomCrops(Dataset):
    """The items of ``dataset`` cut to one random ``size`` window each (2D items).

    Every tensor of the item whose last two axes equal those of ``image`` (``image``, masks,
    labels) is cut at the same window; other entries pass through. The window is a function of
    (``seed``, epoch, index), so the trainer's resume stays exact; ``set_epoch`` is forwarded.
    """

    def __init__(self, dataset: Dataset, size: int, seed: int = 0):
        self.dataset, self.size, self.seed, self.epoch = dataset, int(size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        spatial = tuple(item["image"].shape[-2:])
        rng = np.random.default_rng([self.seed, 0x63726F70, self.epoch, int(index)])
        (y, x) = window_starts(spatial, self.size, rng)
        return {k: _cut(v, spatial, y, x, self.size) for k, v in item.items()}


class MixedScales(Dataset):
    """Item ``i`` of one of ``datasets`` (the same source rendered at several pixel sizes), the
    one drawn from (``seed``, epoch, ``i``): a multi-scale training set for a prior that must
    hold at several pixel sizes. All have the length of the first; ``set_epoch`` is
    forwarded."""

    def __init__(self, datasets: Sequence[Dataset], seed: int = 0):
        self.datasets, self.seed, self.epoch = list(datasets), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.datasets[0])

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, 0x7363616C, self.epoch, int(index)])
        return self.datasets[int(rng.integers(len(self.datasets)))][index]


def _cut(value, spatial: tuple[int, int], y: int, x: int, size: int):
    if not (torch.is_tensor(value) and tuple(value.shape[-2:]) == spatial):
        return value
    flat = value.reshape(-1, *spatial).numpy()
    out = torch.from_numpy(window(flat, (y, x), size)).to(value.dtype)
    return out.reshape(*value.shape[:-2], size, size)
