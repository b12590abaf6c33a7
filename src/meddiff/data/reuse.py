"""Drawing an expensive simulated training set less often: the items of one draw are kept in
memory and served for several epochs.

Every built-in source draws a new training set each epoch (items are a function of (seed,
epoch, index), :mod:`meddiff.data.datasets`). Where rendering an item costs as much as a
training step (low-count PET: 25 MLEM iterations; low-dose CT: projection and FBP), serving
each draw for ``every`` epochs divides that cost by ``every`` at the price of fewer distinct
items; the order of the items still changes every epoch (the trainer's sampler) and resume
stays exact (items are a function of (seed, epoch // every, index)).
"""
from __future__ import annotations

from torch.utils.data import Dataset


class ReusedDraws(Dataset):
    """``dataset`` drawn at epoch ``epoch // every`` and kept in memory until that changes
    (memory: one epoch of items per data-loading process). ``every = 1`` is ``dataset``."""

    def __init__(self, dataset: Dataset, every: int):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.dataset, self.every = dataset, int(every)
        self.drawn: int | None = None
        self.items: dict[int, dict] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        drawn = int(epoch) // self.every
        if drawn != self.drawn:
            self.drawn, self.items = drawn, {}
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(drawn)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self.items:
            self.items[index] = self.dataset[index]
        return self.items[index]
