"""Tracking callbacks: watch one value of the epoch row; stop early, save the best model, or
lower the learning rate when it stops improving."""

from __future__ import annotations

import math
from pathlib import Path

from ..checks import positive_int
from ..core.events import Callback
from ..core.state import FitState
from ..optim.hypers import get_lrs, listify_hp, set_lrs
from ..runtime.modules import unwrap
from ..runtime.ranks import is_main_process
from ..saving import atomic_save
from .recording import write_line

__all__ = ["EarlyStopping", "SaveBestModel", "ReduceLROnPlateau"]


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


class ReduceLROnPlateau(_Monitor):
    """Multiplies every parameter group's LR by `factor` (never below `min_lr`, a number or
    one per parameter group) when `monitor` has not improved by `min_delta` for `patience`
    epochs, then waits `patience` epochs again (Keras's and PyTorch's callback).

    It works under `fit`, `Learner.fit` and every schedule: a schedule keeps the lowered LR
    and scales its curve by it from then on (see `LR_Updater`). A resumed run replays the
    epochs before the checkpoint, so it waits and lowers exactly as the uninterrupted run.
    `verbose` prints a line at each reduction. `reductions` lists `(epoch, old_lrs,
    new_lrs)` of this run.
    """

    order = 60

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_lr=0.0, mode: str = "min", min_delta: float = 0.0, verbose: bool = True):
        super().__init__(monitor, mode, min_delta)
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        self.factor, self.min_lr, self.verbose = float(factor), min_lr, verbose
        self.patience = positive_int(patience, "patience")
        self.wait = 0
        self.reductions: list[tuple[int, list[float], list[float]]] = []

    def on_train_begin(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.reductions = 0, []
        listify_hp(self.min_lr, len(self.state.opt.param_groups), "min_lr")  # fail early
        for row in self.state.history:  # a resumed run replays its epochs (the LRs it set
            self._count(float(row.get(self.monitor, math.nan)))  # are in the checkpoint)

    def _count(self, value: float) -> bool:
        """Count one epoch's value; True when the LR is due to go down."""
        self.wait = 0 if self._improved(value) else self.wait + 1
        if self.wait < self.patience:
            return False
        self.wait = 0
        return True

    def on_epoch_end(self, vals: list[float]) -> None:
        if not self._count(_monitor_value(self.state, self.monitor)):
            return
        opt = self.state.opt
        old = get_lrs(opt)
        floor = listify_hp(self.min_lr, len(old), "min_lr")
        new = [max(lr * self.factor, m) for lr, m in zip(old, floor)]
        set_lrs(opt, new)
        self.reductions.append((self.state.epoch, old, new))
        if self.verbose and is_main_process():
            write_line(f"ReduceLROnPlateau: {self.monitor} has not improved for "
                       f"{self.patience} epoch(s); lr {old[0]:.3g} -> {new[0]:.3g}")
