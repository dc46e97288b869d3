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

from ..checks import is_stateful_metric
from ..runtime.device import batch_mover
from ..runtime.modules import eval_mode, model_device
from ..runtime.ranks import all_gather_rows, all_reduce_sums, is_sharded
from ..runtime.rng import loader_rng_state
from .events import StopTraining
from .order import replay_epoch
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
    """One epoch of training steps from batch `state.batch_idx` (0 unless resumed), each
    batch brought to the model's device."""
    cbs, stepper, dl = state.cbs, state.stepper, state.data.trn_dl
    state.model.train()
    state.epoch_start = time.perf_counter()
    cbs("on_epoch_begin")
    move = batch_mover(dl, model_device(state.model))
    for batch in epoch_batches(dl, state):
        *state.xs, state.y = move(batch)
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
    names = state.metric_names
    if state.vals and len(names) != len(state.vals):  # no vals: no validation loader
        raise ValueError(f"epoch {state.epoch}: the epoch row has {len(names)} columns {names} "
                         f"but vals holds {len(state.vals)} values: a callback that adds a name "
                         f"to state.extra_names must append its value to vals in "
                         f"on_validate_end every epoch")
    row = {"epoch": state.epoch, "iteration": state.iteration, "trn_loss": state.smooth_loss}
    row.update(zip(names, state.vals))
    row["time"] = time.perf_counter() - state.epoch_start
    return row


def _nan_message(state: FitState, e: NonFiniteLossError) -> str:
    """What a non-finite step means for the run: which step, whether the weights are still
    good, and what to try (the data first, when its targets are at fault)."""
    good = (f"last good smoothed loss {state.smooth_loss:.5f}" if state.iteration
            else "no good step in this run yet")
    where = (f"{e} at epoch {state.epoch}, iteration {state.iteration} (batch "
             f"{state.batch_idx} of {state.n_batches}), lr {state.lr:.3g}; {good}.")
    if e.bad_targets:
        return (f"{where} The batch's targets hold {e.bad_targets} NaN/inf value(s): the data "
                f"is at fault, not the training; clean the targets (e.g. drop or fill those "
                f"rows). The step was not taken.")
    if not e.weights_finite:
        return (f"{where} The step was not taken, but the weights are already not finite: an "
                f"earlier step's gradients overflowed while its loss was finite. Train with "
                f"check_grads=True (or clip=...) to stop at that step, before it reaches the "
                f"weights, and try a lower learning rate.")
    return (f"{where} The step was not taken, so the model holds its last good weights. Try "
            f"a lower learning rate or gradient clipping (clip=...), or pass stop_on_nan=False.")


def validate(stepper: Stepper, dl, metrics: Sequence = ()) -> list[float]:
    """`[loss, *metrics]` over the whole of `dl`, in eval mode.

    The loss is the batch-size-weighted mean of the criterion over the batches (exact for a
    mean-reduced criterion). A metric is one of two kinds:

    - a whole-set function `metric(preds, y)` returning a number (or a 0-d tensor): it is
      called once, on the predictions and targets of every batch concatenated in order (on
      the model's device), so RMSE, R², F1 or AUC are the set's values;
    - a stateful metric, for sets too big to hold: an object with `reset()`, `accumulate(preds,
      y)` and `value()` (see `minifast.checks.is_stateful_metric`). `reset()` is called
      before the first batch, `accumulate` on each batch, and `value()` gives the result.

    A loader sharded across DDP ranks (`world_size > 1`, whose step `i` is the ranks' shards
    of global batch `i` in rank order, as `ArrayLoader`'s) gives each rank its shard: the loss
    sums are all-reduced and the predictions and targets all-gathered back into the unsharded
    order before the metrics run, so every rank reports the unsharded values. A stateful metric
    cannot be combined across ranks, so it needs an unsharded loader (`fit` keeps validation
    unsharded when one is given).
    """
    if dl is None:
        return []
    stateful = [is_stateful_metric(m) for m in metrics]
    sharded = is_sharded(dl)
    if sharded and any(stateful):
        raise ValueError("validate: a stateful metric (reset/accumulate/value) sees only this "
                         "rank's shard of a sharded loader; validate on the unsharded loader")
    for m in (m for m, s in zip(metrics, stateful, strict=True) if s):
        m.reset()
    keep = not all(stateful)  # a whole-set metric needs every batch's preds and targets
    total, n, preds, ys, sizes = 0.0, 0, [], [], []
    move = batch_mover(dl, model_device(stepper.model))
    with eval_mode(stepper.model):
        for batch in dl:
            *xs, y = move(batch)
            sizes.append(bs := len(y))
            if bs == 0:  # a rank's shard of a tiny validation set
                continue
            out, loss = stepper.evaluate(xs, y)
            total = total + loss.detach() * bs
            n += bs
            for m in (m for m, s in zip(metrics, stateful, strict=True) if s):
                m.accumulate(out, y)
            if keep:
                preds.append(out.detach())
                ys.append(y)
    if sharded:  # each rank saw its share: sum over ranks for the global value
        total, n, _ = all_reduce_sums(total, n, [])
    if n == 0:
        return [float("nan")] * (1 + len(metrics))
    if keep and metrics:
        dev = model_device(stepper.model)
        preds, ys = _whole_set(preds, sizes, sharded, dev), _whole_set(ys, sizes, sharded, dev)
    vals = [m.value() if s else m(preds, ys) for m, s in zip(metrics, stateful, strict=True)]
    return [float(total) / n] + [_number(v, m) for v, m in zip(vals, metrics, strict=True)]


def _whole_set(parts: list[torch.Tensor], sizes: list[int], sharded: bool,
               device: torch.device) -> torch.Tensor:
    """The batches' tensors as one, in the unsharded order: under DDP, every rank's batches
    gathered, step by step, each step's shards in rank order (on `device` when this rank has
    no rows)."""
    if not sharded:
        return torch.cat(parts)
    mine = torch.cat(parts) if parts else None
    everyone = all_gather_rows(mine, device if mine is None else mine.device)
    counts = all_gather_rows(torch.tensor(sizes, dtype=torch.int64), torch.device("cpu"))
    shards = [t.split(c.tolist()) for t, c in zip(everyone, counts, strict=True)]
    return torch.cat([s[i] for i in range(len(sizes)) for s in shards])


def _number(value, metric) -> float:
    """A metric's result as a float, or a ValueError naming the metric and what it returned."""
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        name = getattr(metric, "__name__", type(metric).__name__)
        shape = tuple(getattr(value, "shape", ()))
        raise ValueError(f"metric {name} returned {type(value).__name__}{list(shape) or ''}: a "
                         f"metric must return a number (or a 0-d tensor) for the whole set"
                         ) from None


def predict(model: torch.nn.Module, dl, n_inputs: int | None = None,
            with_targs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The model's predictions over every batch of `dl`, in order, as one numpy array; with
    `with_targs`, `(preds, targets)`, both numpy arrays.

    A batch is `(*inputs, target)`, or the inputs only: a tuple/list of exactly `n_inputs`
    elements (the training batches' inputs; None: a 1-element tuple), or a bare tensor (one
    input). So a test loader may yield inputs only, or dummy targets as the others."""
    outs, ys = [], []
    move = batch_mover(dl, model_device(model))
    with eval_mode(model):
        for batch in dl:
            xs, y = _inputs_and_target(move(batch), n_inputs)
            if with_targs and y is None:
                raise ValueError(f"predict: with_targs needs (*inputs, target) batches, but "
                                 f"this loader yields inputs only ({len(xs)} tensor(s))")
            outs.append(model(*xs).detach().float().cpu())
            if with_targs:
                ys.append(torch.as_tensor(y).detach().cpu())
    preds = torch.cat(outs).numpy() if outs else np.zeros((0,), np.float32)
    if not with_targs:
        return preds
    return preds, torch.cat(ys).numpy() if ys else np.zeros((0,), np.float32)


def _inputs_and_target(batch, n_inputs: int | None) -> tuple[list, object]:
    """`(inputs, target)` of a batch by the rule of `predict` (target None: inputs only)."""
    if isinstance(batch, torch.Tensor):
        return [batch], None
    batch = list(batch)
    inputs_only = len(batch) == (1 if n_inputs is None else n_inputs)
    if not inputs_only and n_inputs is not None and len(batch) != n_inputs + 1:
        raise ValueError(f"predict: a batch has {len(batch)} element(s), but the model takes "
                         f"{n_inputs} input(s): expected (*inputs) or (*inputs, target)")
    return (batch, None) if inputs_only else (batch[:-1], batch[-1])
