"""The events of a training run, in order, and the `Callback` base that receives them.

Events, in the order they fire (each is a method of `Callback`; only overridden ones are
called, so an event nobody uses costs nothing per batch):

    on_train_begin
      on_epoch_begin                      (per epoch)
        on_batch_begin                    (per batch: before the forward pass)
          on_backward_begin               (loss computed, before backward)
          on_backward_end                 (gradients computed, before clipping)
          on_step_begin                   (gradients clipped, before opt.step())
          on_step_end                     (after opt.step(), before zero_grad)
        on_batch_end(loss)                (the smoothed loss; raw: state.loss) -> True stops
        on_validate_begin
        on_validate_end(vals)             (callbacks append their extra columns' values)
      on_epoch_end(vals)                  ([val_loss, *metrics, *extra]) -> True stops
    on_train_end                          (always: normal end, stop, exception or Ctrl-C)

Every callback reads the run's state as `self.state` (a `FitState`). Returning True from
`on_batch_end`/`on_epoch_end` stops training after every callback has seen the event, as in
fastai v0.7; raising `StopTraining` from any event stops at once, cleanly.
"""

from __future__ import annotations

from typing import Any

from .state import FitState

__all__ = ["EVENTS", "Callback", "CallbackHandler", "StopTraining"]

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
        May change the optimiser's hyper-parameters, the model, or `state.n_epochs`, and may
        name extra epoch-row columns in `state.extra_names` (see `on_validate_end`)."""

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
        """After the step, with the debiased smoothed loss `state.smooth_loss` (fastai v0.7's
        `debias_loss`); the raw batch loss is `state.loss`. Return True to stop training."""

    def on_validate_begin(self) -> None:
        """Before the epoch's validation pass."""

    def on_validate_end(self, vals: list[float]) -> None:
        """After validation, with `[val_loss, *metrics]` (may be modified in place). A callback
        that named columns in `state.extra_names` appends their values here, every epoch (NaN
        for an epoch it has no value for), so every row has the same columns."""

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
