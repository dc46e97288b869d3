"""`fit`: assembles a training run around the core loop (`minifast.core.loop.run_loop`).

It builds the run's state and callbacks (the `Recorder`, the epoch table, progress bars,
DDP's shard sync, the user's), and for the length of the call sets up what a run needs from
the process: the DDP session, Ctrl-C deferred to a batch boundary, denormal flushing and
malloc's thresholds on CPU; then resumes from a checkpoint if asked, and runs the loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence

import torch

from .callbacks.checkpoint import Checkpoint, restore_checkpoint
from .callbacks.recording import Printer, ProgressBar, Recorder
from .checks import check_metrics, non_negative_int
from .core.events import Callback, CallbackHandler
from .core.loop import run_loop
from .core.state import FitState
from .core.stepper import Stepper
from .distributed import DistributedFit
from .runtime import denormal, malloc
from .runtime.interrupt import sigint_at_batch_boundary
from .runtime.modules import model_device, place_model
from .runtime.notebook import default_progress
from .runtime.ranks import is_main_process

__all__ = ["fit", "FitResult"]


class FitResult(list):
    """What `fit` returns: the final `[val_loss, *metrics]` (a list, as fastai v0.7 returned;
    then the values of any columns callbacks add, e.g. `SWA`'s `swa_loss`), plus `.history`
    (one dict per epoch), `.recorder` and `.state` of the run."""

    def __init__(self, state: FitState, recorder: Recorder):
        super().__init__(state.vals)
        self.state, self.recorder, self.history = state, recorder, state.history


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
    resume_strict: bool = True,
    distributed: bool | None = None,
    flush_denormal: bool | None = None,
    keep_freed_memory: bool | None = None,
    **kwargs,
) -> FitResult:
    """Train `model` on `data.trn_dl` for `n_epochs`, validating on `data.val_dl` each epoch.

    Per batch the raw loss feeds `avg_loss = avg_loss*avg_mom + loss*(1-avg_mom)`, reported
    debiased as `avg_loss / (1 - avg_mom**iteration)`. Extra `kwargs` (`clip`, `reg_fn`,
    `stop_on_nan`) go to the `stepper` (a class, or a built `Stepper`). `progress` (default:
    in a notebook, or when stderr is a terminal and `CI` is not set) shows tqdm bars, widgets
    in a notebook; `verbose` prints a row per epoch (an HTML table in a notebook). `resume`
    continues a run exactly from a checkpoint file, a folder of them (the newest good one),
    or True (the `Checkpoint` callback's own folder); a checkpoint of a run set up
    differently (data, split, batch size, `n_epochs`, schedule, optimiser) is refused unless
    `resume_strict=False`, which resumes anyway with a warning.

    Process settings, each undone when `fit` returns (see the docs' Distributed and
    Performance pages): `distributed` (default: when launched by torchrun) trains with
    DistributedDataParallel, False never does; `flush_denormal` and `keep_freed_memory`
    (default: when the model is on the CPU) flush denormal floats to zero and keep glibc's
    malloc from returning each step's buffers to the kernel; False leaves them alone.
    Returns a `FitResult`: the final `[val_loss, *metrics]` with the history.
    """
    n_epochs = non_negative_int(n_epochs, "n_epochs")
    metrics = check_metrics(metrics)
    ddp = DistributedFit(distributed, data)  # joins torchrun's group first: rank 0 reports
    recorder = Recorder()
    state = FitState(model, opt, data, None, crit, metrics, n_epochs, avg_mom, recorder=recorder)
    state.cbs = cbs = CallbackHandler([recorder, *_reporting(progress, verbose), *ddp.callbacks,
                                       *(callbacks or [])], state)
    if getattr(data.trn_dl, "device", None) is not None:
        place_model(model, data.trn_dl.device)
    state.stepper = stepper(model, opt, crit, cbs=cbs, **kwargs) if isinstance(stepper, type) else stepper
    state.stepper.cbs = cbs
    state.n_batches = len(data.trn_dl)
    cpu = getattr(model_device(model), "type", None) == "cpu"
    malloc.keep_freed_memory(cpu if keep_freed_memory is None else keep_freed_memory)
    with ddp.session(state), sigint_at_batch_boundary() as interrupted, \
            denormal.flush_denormal(cpu if flush_denormal is None else flush_denormal):
        try:
            if resume is not None:
                restore_checkpoint(resume, state, cbs, resume_strict)
            run_loop(state, interrupted)
        except KeyboardInterrupt:
            if cbs.find(Checkpoint) is None and is_main_process():  # Checkpoint says its own
                print(_interrupt_message(state), file=sys.stderr, flush=True)
            raise
        finally:
            # the state and its callbacks refer to each other: cut the cycle so that
            # refcounting frees a dropped learner's model and optimiser state at once (a
            # cycle waits for the next full collection, holding their memory)
            state.cbs = state.stepper.cbs = CallbackHandler()
            state.recorder = None
    return FitResult(state, recorder)


def _reporting(progress: bool | None, verbose: bool) -> list[Callback]:
    if not is_main_process():
        return []
    if progress is None:
        progress = default_progress()
    return ([Printer()] if verbose else []) + ([ProgressBar()] if progress else [])


def _interrupt_message(state: FitState) -> str:
    """What Ctrl-C without a `Checkpoint` leaves: the weights in memory, nothing to resume."""
    return (f"minifast: training interrupted at epoch {state.epoch}, batch {state.batch_idx}/"
            f"{state.n_batches} (iteration {state.iteration}); the model keeps the weights it "
            "had then (learn.save(name) writes them), but there is no checkpoint to resume "
            "from: train with callbacks=[Checkpoint(folder)] to resume exactly after a Ctrl-C "
            "or a crash")
