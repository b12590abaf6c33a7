"""Metric logs of a training run: a CSV file, plus TensorBoard events when asked for.

``<out_dir>/log.csv`` has one row per logging interval with the columns of :data:`COLUMNS`
plus the run's extra columns (e.g. ``loss_discriminator``, the loss of a further network).
When a run resumes from step ``k``, rows after ``k`` (written by the killed run after its last
checkpoint) are dropped so the log has each step once.
"""
from __future__ import annotations

import csv
from pathlib import Path

from meddiff.errors import ConfigError

COLUMNS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed_s")


class CsvLogger:
    """Appends rows of :data:`COLUMNS` + ``extra`` to ``path``, keeping earlier rows up to
    ``start_step``."""

    def __init__(self, path: str | Path, start_step: int = 0, extra: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = COLUMNS + tuple(extra)
        kept = self._rows_until(start_step) if start_step > 0 else []
        self._file = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def _rows_until(self, step: int) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != self.columns:
                return []
            return [row for row in reader if int(row["step"]) <= step]

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._writer.writerow({"step": step, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("logger 'tensorboard' needs the tensorboard package "
                          "(pip install 'meddiff[tensorboard]')") from None
    return SummaryWriter


def require_logger(kind: str) -> None:
    """Raise :class:`ConfigError` now if the logger ``kind`` is unknown or not installed."""
    if kind not in ("csv", "tensorboard"):
        raise ConfigError(f"logger must be 'csv' or 'tensorboard', got {kind!r}")
    if kind == "tensorboard":
        _summary_writer()


class TensorBoardLogger:
    """Scalars under ``train/<name>`` in ``log_dir``; needs the optional ``tensorboard`` package."""

    def __init__(self, log_dir: str | Path, start_step: int = 0) -> None:
        self._writer = _summary_writer()(log_dir=str(log_dir), purge_step=start_step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._writer.add_scalar(f"train/{k}", v, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class RunLogger:
    """The CSV log, plus TensorBoard when ``kind == 'tensorboard'``."""

    def __init__(self, kind: str, out_dir: str | Path, start_step: int = 0,
                 extra: tuple[str, ...] = ()) -> None:
        require_logger(kind)
        out_dir = Path(out_dir)
        self._sinks: list[CsvLogger | TensorBoardLogger] = []
        if kind == "tensorboard":
            self._sinks.append(TensorBoardLogger(out_dir / "tb", start_step))
        self._sinks.append(CsvLogger(out_dir / "log.csv", start_step, extra))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Write one row; ``metrics`` keys are the non-step columns."""
        for sink in self._sinks:
            sink.log(step, metrics)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
