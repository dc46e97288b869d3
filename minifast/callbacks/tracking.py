"""Tracking callbacks: watch one value of the epoch row, stop early or save the best model."""

from __future__ import annotations

import math
from pathlib import Path

from ..core.events import Callback
from ..core.state import FitState
from ..runtime.modules import unwrap
from ..runtime.ranks import is_main_process
from ..saving import atomic_save

__all__ = ["EarlyStopping", "SaveBestModel"]


def _monitor_value(state: FitState, monitor: str) -> float:
    row = state.history[-1]
    if monitor not in row:
        raise ValueError(f"cannot monitor {monitor!r}: the epoch row has {sorted(row)}")
    return float(row[monitor])


class _Monitor(Callback):
    """Shared logic of callbacks that watch one value of the epoch row for improvement."""

    def __init__(self, monitor: str = "val_loss", mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.best = math.inf if mode == "min" else -math.inf

    def on_train_begin(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        for row in self.state.history:  # after a resume, the best so far counts
            self._improved(float(row.get(self.monitor, math.nan)))

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        better = (value < self.best - self.min_delta) if self.mode == "min" else (
            value > self.best + self.min_delta)
        if better:
            self.best = value
        return better


class EarlyStopping(_Monitor):
    """Stops when `monitor` has not improved by `min_delta` for `patience` epochs."""

    order = 60

    def __init__(self, monitor: str = "val_loss", patience: int = 3, mode: str = "min",
                 min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.wait = patience, 0

    def on_train_begin(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        for row in self.state.history:  # a resumed run replays its epochs: best and patience
            improved = self._improved(float(row.get(self.monitor, math.nan)))
            self.wait = 0 if improved else self.wait + 1

    def on_epoch_end(self, vals: list[float]) -> bool:
        if self._improved(_monitor_value(self.state, self.monitor)):
            self.wait = 0
            return False
        self.wait += 1
        return self.wait >= self.patience


class SaveBestModel(_Monitor):
    """Saves the model's weights (atomically) to `path` whenever `monitor` improves."""

    order = 60

    def __init__(self, path, monitor: str = "val_loss", mode: str = "min"):
        super().__init__(monitor, mode)
        self.path = Path(path)

    def on_epoch_end(self, vals: list[float]) -> None:
        if self._improved(_monitor_value(self.state, self.monitor)):
            if is_main_process():
                atomic_save(unwrap(self.state.model).state_dict(), self.path)
