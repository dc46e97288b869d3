"""`fit`: the training loop, driven by callbacks; `validate` and `predict`."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from . import denormal, malloc
from .callbacks import Callback, CallbackHandler, Printer, ProgressBar, Recorder, StopTraining
from .checkpoint import Checkpoint, restore_checkpoint
from .distributed import DistributedFit, all_reduce_sums, is_main_process, is_sharded
from .state import FitState
from .stepper import NonFiniteLossError, Stepper

__all__ = ["fit", "validate", "predict", "FitResult", "check_metrics"]


class FitResult(list):
    """What `fit` returns: the final `[val_loss, *metrics]` (a list, as fastai v0.7 returned),
    plus `.history` (one dict per epoch), `.recorder` and `.state` of the run."""

    def __init__(self, state: FitState, recorder: Recorder):
        super().__init__(state.vals)
        self.state, self.recorder, self.history = state, recorder, state.history


def check_metrics(metrics) -> list[Callable]:
    """Metrics as a list of callables `metric(preds, y)`; a clear error for anything else."""
    metrics = [] if metrics is None else list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    for m in metrics:
        if not callable(m):
            raise TypeError(f"metrics must be callables metric(preds, y); got {m!r} ({type(m).__name__})")
    return metrics


def fit(
    model: torch.nn.Module,
    data,
    n_epochs: int,
    opt: torch.optim.Optimizer,
    crit: Callable,
    metrics: Sequence[Callable] | None = None,
    callbacks: Iterable[Callback] | None = None,
    stepper=Stepper,
    *,
    progress: bool | None = None,
    verbose: bool = True,
    avg_mom: float = 0.98,
    resume=None,
    distributed: bool | None = None,
    flush_denormal: bool | None = None,
    keep_freed_memory: bool | None = None,
    **kwargs,
) -> FitResult:
    """Train `model` on `data.trn_dl` for `n_epochs`, validating on `data.val_dl` each epoch.

    Per batch the raw loss feeds `avg_loss = avg_loss*avg_mom + loss*(1-avg_mom)`, reported
    debiased as `avg_loss / (1 - avg_mom**iteration)`. Extra `kwargs` (`clip`, `reg_fn`,
    `stop_on_nan`) go to the `stepper`. `progress` (default: when stderr is a terminal) shows
    tqdm bars; `verbose` prints a row per epoch. `resume` continues a run exactly from a
    checkpoint file, a folder of them (the newest good one), or True (the `Checkpoint`
    callback's own folder); see `minifast.checkpoint`. `distributed` (default: when launched by torchrun) trains with
    DistributedDataParallel, sharding the loaders across ranks (see minifast.distributed);
    False never does. `flush_denormal` (default: when the model is on the CPU) flushes
    denormal floats to zero on every intra-op thread during the run and restores each
    thread's mode after (see minifast.denormal; False leaves the CPU as it is).
    `keep_freed_memory` (default: when the model is on the CPU) sets glibc's malloc, for the
    rest of the process, to keep each step's freed buffers for the next step instead of
    returning them to the kernel, which can cost thousands of page faults a step (see
    minifast.malloc; False leaves malloc as it is).
    Returns a `FitResult`: the final `[val_loss, *metrics]` with the history.
    """
    if not isinstance(n_epochs, (int, np.integer)) or n_epochs < 0:
        raise ValueError(f"n_epochs must be a non-negative integer, got {n_epochs!r}")
    metrics = check_metrics(metrics)
    ddp = DistributedFit(distributed, data)  # joins torchrun's group first: rank 0 reports
    recorder = Recorder()
    state = FitState(model, opt, data, None, crit, metrics, int(n_epochs), avg_mom)
    cbs = CallbackHandler([recorder, *_reporting(progress, verbose), *ddp.callbacks,
                           *(callbacks or [])], state)
    state.stepper = stepper(model, opt, crit, cbs=cbs, **kwargs) if isinstance(stepper, type) else stepper
    state.stepper.cbs = cbs
    state.n_batches = len(data.trn_dl)
    _place_model(model, data)
    cpu = _on_cpu(model)
    flush = cpu if flush_denormal is None else flush_denormal
    malloc.keep_freed_memory(cpu if keep_freed_memory is None else keep_freed_memory)
    # DDP (sharded loaders, wrapped model), deferred Ctrl-C and denormal flushing last for the
    # call and are undone on the way out, whatever happens
    with ddp.session(state), _sigint_at_batch_boundary() as interrupted, \
            denormal.flush_denormal(flush):
        if resume is not None:
            restore_checkpoint(resume, state, cbs)
        try:
            cbs("on_train_begin")
            for epoch in range(state.epoch, state.n_epochs):
                state.epoch = epoch
                model.train()
                state.epoch_start = time.perf_counter()
                cbs("on_epoch_begin")
                for batch in _epoch_batches(data.trn_dl, state):
                    *state.xs, state.y = batch
                    cbs("on_batch_begin")
                    state.loss = loss = state.stepper.step(state.xs, state.y, epoch)
                    state.iteration += 1
                    state.batch_idx += 1
                    state.avg_loss = state.avg_loss * avg_mom + loss * (1 - avg_mom)
                    state.smooth_loss = state.avg_loss / (1 - avg_mom**state.iteration)
                    if cbs("on_batch_end", loss):
                        raise StopTraining("a callback's on_batch_end returned True")
                    if interrupted():
                        raise KeyboardInterrupt
                cbs("on_validate_begin")
                state.vals = validate(state.stepper, data.val_dl, metrics)
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
            if cbs.find(Checkpoint) is None and is_main_process():  # Checkpoint says its own
                print(_interrupt_message(state), file=sys.stderr, flush=True)
            raise
        except NonFiniteLossError as e:
            state.error = NonFiniteLossError(_nan_message(state, e))
            raise state.error from None
        except BaseException as e:
            state.error = e
            raise
        finally:
            try:
                cbs("on_train_end")
            finally:
                # state -> stepper -> cbs -> callbacks -> state is a reference cycle: cut it so
                # that refcounting frees a dropped learner's model and optimiser state at once
                # (a cycle waits for the next full collection, holding their memory)
                state.stepper.cbs = CallbackHandler()
    return FitResult(state, recorder)


def _reporting(progress: bool | None, verbose: bool) -> list[Callback]:
    if not is_main_process():
        return []
    if progress is None:
        progress = sys.stderr.isatty()
    return ([Printer()] if verbose else []) + ([ProgressBar()] if progress else [])


def _place_model(model: torch.nn.Module, data) -> None:
    """Move the model to the device the data loader yields batches on, if it is elsewhere."""
    dev = getattr(data.trn_dl, "device", None)
    p = next(model.parameters(), None)
    if dev is not None and p is not None and p.device.type != dev.type:
        model.to(dev)


def _on_cpu(model: torch.nn.Module) -> bool:
    p = next(model.parameters(), None)
    return p is not None and p.device.type == "cpu"


def _epoch_batches(dl, state: FitState):
    """The batches of `state.epoch`, skipping the `state.batch_idx` already done (resume)."""
    if hasattr(dl, "set_epoch"):
        dl.set_epoch(state.epoch)
    if hasattr(dl, "batches"):
        return dl.batches(state.batch_idx)
    it = iter(dl)
    for _ in range(state.batch_idx):
        next(it)
    return it


def _epoch_row(state: FitState) -> dict:
    row = {"epoch": state.epoch, "iteration": state.iteration, "trn_loss": state.smooth_loss}
    row.update(zip(state.metric_names, state.vals))
    row["time"] = time.perf_counter() - state.epoch_start
    return row


def _interrupt_message(state: FitState) -> str:
    """What Ctrl-C without a `Checkpoint` leaves: the weights in memory, nothing to resume."""
    return (f"minifast: training interrupted at epoch {state.epoch}, batch {state.batch_idx}/"
            f"{state.n_batches} (iteration {state.iteration}); the model keeps the weights it "
            "had then (learn.save(name) writes them), but there is no checkpoint to resume "
            "from: train with callbacks=[Checkpoint(folder)] to resume exactly after a Ctrl-C "
            "or a crash")


def _nan_message(state: FitState, e: NonFiniteLossError) -> str:
    good = (f"last good smoothed loss {state.smooth_loss:.5f}" if state.iteration
            else "no good step in this run yet")
    return (
        f"{e} at epoch {state.epoch}, iteration {state.iteration} (batch {state.batch_idx} of "
        f"{state.n_batches}), lr {state.lr:.3g}; {good}. The step was not taken, so the model "
        f"holds its last good weights. Try a lower learning rate or gradient clipping "
        f"(clip=...), or pass stop_on_nan=False."
    )


@contextmanager
def _sigint_at_batch_boundary():
    """Defer the first Ctrl-C to the next batch boundary (a second one interrupts at once).

    A KeyboardInterrupt in the middle of `opt.step()` could leave a half-updated model; here
    the loop raises it itself between batches, so the weights are those of a whole step.
    """
    hit = []
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: False
        return

    def handler(signum, frame):
        if hit:
            raise KeyboardInterrupt
        hit.append(True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def validate(stepper: Stepper, dl, metrics: Sequence[Callable] = ()) -> list[float]:
    """`[loss, *metrics]` over `dl`, each averaged with batch-size weights, in eval mode."""
    if dl is None:
        return []
    model = stepper.model
    was_training = model.training
    model.eval()
    total, n, sums = 0.0, 0, [0.0] * len(metrics)
    try:
        with torch.no_grad():
            for *xs, y in dl:
                bs = len(y)
                if bs == 0:  # a rank's shard of a tiny validation set
                    continue
                preds, loss = stepper.evaluate(xs, y)
                total = total + loss.detach() * bs
                n += bs
                for i, m in enumerate(metrics):
                    sums[i] = sums[i] + m(preds, y) * bs
    finally:
        model.train(was_training)
    if is_sharded(dl):  # each rank saw its share: sum over ranks for the global value
        total, n, sums = all_reduce_sums(total, n, sums)
    if n == 0:
        return [float("nan")] * (1 + len(metrics))
    return [float(total) / n] + [float(s) / n for s in sums]


def predict(model: torch.nn.Module, dl) -> np.ndarray:
    """The model's predictions over every batch of `dl`, in order, as one numpy array."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for *xs, _y in dl:
                outs.append(model(*xs).detach().float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.zeros((0,), np.float32)
