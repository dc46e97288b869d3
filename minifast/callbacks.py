"""Callbacks: the events of a training run, their order, and the built-in callbacks.

Events, in the order they fire (each is a method of `Callback`; only overridden ones are
called, so an event nobody uses costs nothing per batch):

    on_train_begin
      on_epoch_begin                      (per epoch)
        on_batch_begin                    (per batch: before the forward pass)
          on_backward_begin               (loss computed, before backward)
          on_backward_end                 (gradients computed, before clipping)
          on_step_begin                   (gradients clipped, before opt.step())
          on_step_end                     (after opt.step(), before zero_grad)
        on_batch_end(loss)                (raw loss; state.smooth_loss updated) -> True stops
        on_validate_begin
        on_validate_end(vals)
      on_epoch_end(vals)                  ([val_loss, *metrics]) -> True stops
    on_train_end                          (always: normal end, stop, exception or Ctrl-C)

Every callback reads the run's state as `self.state` (a `FitState`). Returning True from
`on_batch_end`/`on_epoch_end` stops training after every callback has seen the event, as in
fastai v0.7; raising `StopTraining` from any event stops at once, cleanly.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .saving import atomic_save
from .state import FitState

__all__ = [
    "Callback",
    "CallbackHandler",
    "StopTraining",
    "EVENTS",
    "Recorder",
    "Printer",
    "ProgressBar",
    "EarlyStopping",
    "SaveBestModel",
    "CSVLogger",
    "format_time",
]

EVENTS = (
    "on_train_begin",
    "on_epoch_begin",
    "on_batch_begin",
    "on_backward_begin",
    "on_backward_end",
    "on_step_begin",
    "on_step_end",
    "on_batch_end",
    "on_validate_begin",
    "on_validate_end",
    "on_epoch_end",
    "on_train_end",
)


class StopTraining(Exception):
    """Raise from any callback event to end training cleanly (`on_train_end` still runs)."""


class Callback:
    """Base class: override the events you need. `order` sets the calling order (low first).

    During a run, `self.state` is the run's `FitState` (model, opt, epoch, iteration, loss,
    smooth_loss, vals, ...).
    """

    order: int = 0
    state: FitState

    def on_train_begin(self) -> None:
        """Once, before the first epoch (after a resume, before the first resumed epoch).
        May change the optimiser's hyper-parameters, the model, or `state.n_epochs`."""

    def on_epoch_begin(self) -> None:
        """At the start of each epoch, with the model in train mode."""

    def on_batch_begin(self) -> None:
        """Before the forward pass; may replace `state.xs` / `state.y` or set learning rates."""

    def on_backward_begin(self) -> None:
        """After the loss (`state.loss_tensor`, `state.preds`), before backward; may replace
        `state.loss_tensor` (e.g. add a penalty). The raw loss reported is the original."""

    def on_backward_end(self) -> None:
        """After backward, before gradient clipping; gradients may be read or changed."""

    def on_step_begin(self) -> None:
        """After clipping and decoupled weight decay, just before `opt.step()`."""

    def on_step_end(self) -> None:
        """After `opt.step()`, before the gradients are zeroed."""

    def on_batch_end(self, loss: float) -> bool | None:
        """After the step, with the raw batch loss; `state.smooth_loss` is up to date.
        Return True to stop training."""

    def on_validate_begin(self) -> None:
        """Before the epoch's validation pass."""

    def on_validate_end(self, vals: list[float]) -> None:
        """After validation, with `[val_loss, *metrics]` (may be modified in place)."""

    def on_epoch_end(self, vals: list[float]) -> bool | None:
        """After validation, with `[val_loss, *metrics]`; `state.history[-1]` holds the
        epoch's row. Return True to stop training."""

    def on_train_end(self) -> None:
        """Always, last: after a normal end, a stop, an exception (`state.error`) or Ctrl-C
        (`state.interrupted`)."""


class CallbackHandler:
    """Calls the callbacks that override each event, in `order`. Used by `fit` and `Stepper`."""

    def __init__(self, callbacks=(), state: FitState | None = None):
        self.callbacks = sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))
        self.state = state
        # Per event, the bound methods of callbacks that override it: empty means free.
        self.events: dict[str, tuple] = {
            ev: tuple(
                getattr(cb, ev)
                for cb in self.callbacks
                if getattr(type(cb), ev, None) is not getattr(Callback, ev)
            )
            for ev in EVENTS
        }
        if state is not None:
            for cb in self.callbacks:
                cb.state = state

    def __call__(self, event: str, *args) -> bool:
        """Fire `event` on every callback overriding it; True if any asked to stop."""
        stop = False
        for f in self.events[event]:
            stop = bool(f(*args)) or stop
        return stop

    def has(self, event: str) -> bool:
        """Whether any callback overrides `event`."""
        return bool(self.events[event])

    def find(self, cls: type) -> Any:
        """The first callback that is an instance of `cls`, or None."""
        return next((cb for cb in self.callbacks if isinstance(cb, cls)), None)


def format_time(seconds: float) -> str:
    """Seconds as `m:ss` (or `h:mm:ss`), like fastai's tables."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Recorder(Callback):
    """Records per iteration: lrs, raw and smoothed losses; per epoch: vals and times.

    Always installed by `fit`; the Learner exposes the last one as `learn.sched` / `recorder`.
    """

    order = -20

    def __init__(self):
        self.iterations: list[int] = []
        self.lrs: list[float] = []
        self.moms: list[float | None] = []
        self.losses: list[float] = []
        self.smooth_losses: list[float] = []
        self.epochs: list[dict] = []

    def on_batch_end(self, loss: float) -> None:
        s = self.state
        g = s.opt.param_groups[0]
        self.iterations.append(s.iteration)
        self.lrs.append(float(g["lr"]))
        self.moms.append(g["betas"][0] if "betas" in g else g.get("momentum"))
        self.losses.append(loss)
        self.smooth_losses.append(s.smooth_loss)

    def on_epoch_end(self, vals: list[float]) -> None:
        self.epochs.append(dict(self.state.history[-1]))

    def state_dict(self) -> dict:
        """The recorded history, as plain lists (for checkpoints)."""
        return {k: list(getattr(self, k)) for k in
                ("iterations", "lrs", "moms", "losses", "smooth_losses", "epochs")}

    def load_state_dict(self, sd: dict) -> None:
        """Restore `state_dict()`."""
        for k, v in sd.items():
            setattr(self, k, list(v))

    def plot_loss(self, n_skip: int = 0):
        """Raw and smoothed training loss vs iteration; returns the matplotlib figure."""
        from .plots import plot_loss

        return plot_loss(self, n_skip)

    def plot_lr(self):
        """Learning rate (and momentum, when cycled) vs iteration; returns the figure."""
        from .plots import plot_lr

        return plot_lr(self)


def _write(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stdout)


class Printer(Callback):
    """Prints a header, then one row per epoch: `epoch trn_loss val_loss <metrics> time`."""

    order = 50

    def __init__(self, write=_write):
        self.write = write

    def on_train_begin(self) -> None:
        names = ["epoch", "trn_loss", *self.state.metric_names, "time"]
        self.write("  ".join(f"{n:>8}" if i else f"{n:>5}" for i, n in enumerate(names)))

    def on_epoch_end(self, vals: list[float]) -> None:
        row = self.state.history[-1]
        cells = [f"{row['epoch']:>5}", f"{row['trn_loss']:>8.5f}"]
        cells += [f"{v:>8.5f}" for v in vals]
        cells.append(f"{format_time(row['time']):>8}")
        self.write("  ".join(cells))


class ProgressBar(Callback):
    """tqdm bars: one over epochs, one over the batches of the epoch showing the smoothed loss.

    The batch bar refreshes at most every `mininterval` seconds (tqdm's own throttling), so it
    costs ~1 µs per batch.
    """

    order = 40

    def __init__(self, leave: bool = False, mininterval: float = 0.2):
        self.leave, self.mininterval = leave, mininterval
        self.epoch_bar = self.batch_bar = None

    def on_train_begin(self) -> None:
        from tqdm.auto import tqdm

        s = self.state
        self.epoch_bar = tqdm(total=s.n_epochs, initial=s.epoch, desc="epoch", leave=self.leave,
                              dynamic_ncols=True)

    def on_epoch_begin(self) -> None:
        from tqdm.auto import tqdm

        self.batch_bar = tqdm(total=self.state.n_batches, initial=self.state.batch_idx,
                              leave=False, mininterval=self.mininterval, dynamic_ncols=True)

    def on_batch_end(self, loss: float) -> None:
        self.batch_bar.update()
        if self.state.batch_idx % 32 == 0:  # formatting the postfix every batch would cost more
            self.batch_bar.set_postfix_str(f"loss={self.state.smooth_loss:.4f}", refresh=False)

    def on_epoch_end(self, vals: list[float]) -> None:
        self._close_batch_bar()
        self.epoch_bar.update()

    def _close_batch_bar(self) -> None:
        if self.batch_bar is not None:
            self.batch_bar.close()
            self.batch_bar = None

    def on_train_end(self) -> None:
        self._close_batch_bar()
        if self.epoch_bar is not None:
            self.epoch_bar.close()
            self.epoch_bar = None


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
            from .distributed import is_main_process, unwrap

            if is_main_process():
                atomic_save(unwrap(self.state.model).state_dict(), self.path)


class CSVLogger(Callback):
    """Appends one CSV row per epoch to `path` (header written once), flushed each epoch."""

    order = 60

    def __init__(self, path, append: bool = False):
        self.path, self.append = Path(path), append

    def on_train_begin(self) -> None:
        from .distributed import is_main_process

        self.enabled = is_main_process()
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fresh = not (self.append and self.path.exists() and self.path.stat().st_size)
            if self.fresh:
                self.path.write_text("")
                for row in self.state.history:  # a resumed run: the epochs before the checkpoint
                    self._write(row)

    def on_epoch_end(self, vals: list[float]) -> None:
        if self.enabled:
            self._write(self.state.history[-1])

    def _write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if self.fresh:
                w.writeheader()
                self.fresh = False
            w.writerow({k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()})
