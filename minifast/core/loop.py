"""The training loop itself, `validate` and `predict`.

`run_loop(state)` trains `state.model` for `state.n_epochs` epochs, firing the events of
`minifast.core.events` through `state.cbs`; everything around it (default callbacks,
DDP, CPU modes, Ctrl-C, resume) is assembled by `minifast.fit`. See the docs' "The training
loop" page for a walk through it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ..runtime.modules import eval_mode
from ..runtime.ranks import all_reduce_sums, is_sharded
from .events import StopTraining
from .order import loader_rng_state, replay_epoch
from .state import FitState
from .stepper import NonFiniteLossError, Stepper

__all__ = ["run_loop", "train_epoch", "epoch_batches", "validate", "predict"]


def run_loop(state: FitState, interrupted: Callable[[], bool] = lambda: False) -> None:
    """Train from `state.epoch` to `state.n_epochs`: each epoch trains, validates and records
    its row. `on_train_end` always runs; a callback returning True from `on_epoch_end` (or
    raising `StopTraining`) ends the run cleanly; `interrupted()` is asked at every batch
    boundary and, when True, ends it with a KeyboardInterrupt."""
    cbs = state.cbs
    try:
        cbs("on_train_begin")
        for epoch in range(state.epoch, state.n_epochs):
            state.epoch = epoch
            train_epoch(state, interrupted)
            cbs("on_validate_begin")
            state.vals = validate(state.stepper, state.data.val_dl, state.metrics)
            cbs("on_validate_end", state.vals)
            state.history.append(_epoch_row(state))
            if cbs("on_epoch_end", state.vals):
                raise StopTraining("a callback's on_epoch_end returned True")
            state.batch_idx = 0
            if interrupted():
                raise KeyboardInterrupt
        state.epoch = state.n_epochs
    except StopTraining:
        state.stopped = True
    except KeyboardInterrupt:
        state.interrupted = True
        raise
    except NonFiniteLossError as e:
        state.error = NonFiniteLossError(_nan_message(state, e), e.what, e.weights_finite,
                                         e.bad_targets)
        raise state.error from None
    except BaseException as e:
        state.error = e
        raise
    finally:
        cbs("on_train_end")


def train_epoch(state: FitState, interrupted: Callable[[], bool] = lambda: False) -> None:
    """One epoch of training steps from batch `state.batch_idx` (0 unless resumed)."""
    cbs, stepper = state.cbs, state.stepper
    state.model.train()
    state.epoch_start = time.perf_counter()
    cbs("on_epoch_begin")
    for batch in epoch_batches(state.data.trn_dl, state):
        *state.xs, state.y = batch
        cbs("on_batch_begin")
        state.add_loss(stepper.step(state.xs, state.y, state.epoch))
        if cbs("on_batch_end", state.smooth_loss):  # fastai v0.7: the debiased running loss
            raise StopTraining("a callback's on_batch_end returned True")
        if interrupted():
            raise KeyboardInterrupt


def epoch_batches(dl, state: FitState) -> Iterator:
    """The batches of `state.epoch`, skipping the `state.batch_idx` already done (resume).

    An `ArrayLoader`'s order is a function of (seed, epoch). Any other loader's is drawn
    when `iter(dl)` starts the epoch: the RNG states it draws from are kept in
    `state.epoch_rng` (and so in checkpoints), and a mid-epoch resume draws the same order
    from them (`core.order.replay_epoch`)."""
    if hasattr(dl, "set_epoch"):
        dl.set_epoch(state.epoch)
    if hasattr(dl, "batches"):
        return dl.batches(state.batch_idx)
    if state.batch_idx == 0:
        state.epoch_rng = loader_rng_state(dl)
        return iter(dl)
    if state.epoch_rng is None:  # a checkpoint from before this was recorded (format 1)
        warnings.warn(f"resume: the checkpoint does not hold the RNG state epoch {state.epoch} "
                      f"drew its order from, so the rest of this epoch may come in another "
                      f"order than the interrupted run's", stacklevel=3)
        it = iter(dl)
        for _ in range(state.batch_idx):
            next(it)
        return it
    return replay_epoch(dl, state.epoch_rng, state.batch_idx)


def _epoch_row(state: FitState) -> dict:
    row = {"epoch": state.epoch, "iteration": state.iteration, "trn_loss": state.smooth_loss}
    row.update(zip(state.metric_names, state.vals))
    row["time"] = time.perf_counter() - state.epoch_start
    return row


def _nan_message(state: FitState, e: NonFiniteLossError) -> str:
    """What a non-finite step means for the run: which step, whether the weights are still
    good, and what to try (the data first, when its targets are at fault)."""
    good = (f"last good smoothed loss {state.smooth_loss:.5f}" if state.iteration
            else "no good step in this run yet")
    where = (f"{e} at epoch {state.epoch}, iteration {state.iteration} (batch "
             f"{state.batch_idx} of {state.n_batches}), lr {state.lr:.3g}; {good}.")
    if getattr(e, "bad_targets", 0):
        return (f"{where} The batch's targets hold {e.bad_targets} NaN/inf value(s): the data "
                f"is at fault, not the training; clean the targets (e.g. drop or fill those "
                f"rows). The step was not taken.")
    if not getattr(e, "weights_finite", True):
        return (f"{where} The step was not taken, but the weights are already not finite: an "
                f"earlier step's gradients overflowed while its loss was finite. Train with "
                f"check_grads=True (or clip=...) to stop at that step, before it reaches the "
                f"weights, and try a lower learning rate.")
    return (f"{where} The step was not taken, so the model holds its last good weights. Try "
            f"a lower learning rate or gradient clipping (clip=...), or pass stop_on_nan=False.")


def validate(stepper: Stepper, dl, metrics: Sequence[Callable] = ()) -> list[float]:
    """`[loss, *metrics]` over `dl`, each averaged with batch-size weights, in eval mode."""
    if dl is None:
        return []
    total, n, sums = 0.0, 0, [0.0] * len(metrics)
    with eval_mode(stepper.model):
        for *xs, y in dl:
            bs = len(y)
            if bs == 0:  # a rank's shard of a tiny validation set
                continue
            preds, loss = stepper.evaluate(xs, y)
            total = total + loss.detach() * bs
            n += bs
            for i, m in enumerate(metrics):
                sums[i] = sums[i] + m(preds, y) * bs
    if is_sharded(dl):  # each rank saw its share: sum over ranks for the global value
        total, n, sums = all_reduce_sums(total, n, sums)
    if n == 0:
        return [float("nan")] * (1 + len(metrics))
    return [float(total) / n] + [float(s) / n for s in sums]


def predict(model: torch.nn.Module, dl) -> np.ndarray:
    """The model's predictions over every batch of `dl`, in order, as one numpy array."""
    outs = []
    with eval_mode(model):
        for *xs, _y in dl:
            outs.append(model(*xs).detach().float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0,), np.float32)
