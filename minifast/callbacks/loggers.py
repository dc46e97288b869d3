"""Loggers: callbacks that send a run's numbers somewhere (TensorBoard, memory, your own).

The protocol is one method. A `Logger` subclass implements `log_scalars(step, values)`, which
receives a dict of named floats at a step (the run's iteration count): per iteration the
losses, LRs and momenta, per epoch the validation loss and metrics. `flush()` (each epoch's
end) and `close()` (the run's end) are optional. A logger runs on the main process only, so
a distributed run logs once. A logger that prints:

    class PrintLogger(Logger):
        def log_scalars(self, step, values):
            print(step, values)

The names are TensorBoard's tags: `train/loss` (raw), `train/smooth_loss` (what
`on_batch_end` received), `lr/<i>` and `mom/<i>` per parameter group (`mom/<i>` only where
the optimiser has a momentum), and per epoch `valid/val_loss`, `valid/<metric>` and the
columns callbacks add (e.g. `valid/swa_loss`), each only in the epochs it has a value (NaN
marks one a callback did not compute, e.g. SWA between its validations).
`every=n` logs the per-iteration values every n iterations only.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..checks import positive_int
from ..core.events import Callback
from ..optim.hypers import get_lrs, get_moms
from ..runtime.ranks import is_main_process

__all__ = ["Logger", "MemoryLogger", "TensorBoardLogger"]


class Logger(Callback):
    """Base of the loggers: calls `log_scalars(step, values)` with each iteration's losses,
    LRs and momenta and each epoch's validation loss and metrics (see the module's doc for
    the names), on the main process only; `flush()` after each epoch, `close()` at the end."""

    order = 60  # after the Recorder and the epoch table: an epoch's numbers are final

    def __init__(self, every: int = 1):
        self.every = positive_int(every, "every")
        self.enabled = False

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Record `values` (name -> float) at `step`; what every logger implements."""
        raise NotImplementedError(f"{type(self).__name__} must implement log_scalars(step, values)")

    def open(self) -> None:
        """Called once when the run begins, on the main process (e.g. to open a file)."""

    def flush(self) -> None:
        """Called after each epoch's values: make what was logged visible."""

    def close(self) -> None:
        """Called once when the run ends (normally or not): release what `open` took."""

    def on_train_begin(self) -> None:
        self.enabled = is_main_process()
        if self.enabled:
            self.open()

    def on_batch_end(self, loss: float) -> None:
        s = self.state
        if not self.enabled or s.iteration % self.every:
            return
        values = {"train/loss": float(s.loss), "train/smooth_loss": float(loss)}
        values.update((f"lr/{i}", lr) for i, lr in enumerate(get_lrs(s.opt)))
        values.update((f"mom/{i}", m) for i, m in enumerate(get_moms(s.opt)) if m is not None)
        self.log_scalars(s.iteration, values)

    def on_epoch_end(self, vals: list[float]) -> None:
        if self.enabled:
            names = self.state.metric_names
            self.log_scalars(self.state.iteration, {f"valid/{n}": float(v)
                                                    for n, v in zip(names, vals) if v == v})
            self.flush()

    def on_train_end(self) -> None:
        if self.enabled:
            self.enabled = False
            self.close()


class MemoryLogger(Logger):
    """Keeps everything logged in memory: `scalars[name]` is a list of `(step, value)`.
    Handy in a notebook (e.g. a DataFrame of it) and as the smallest example of a logger."""

    def __init__(self, every: int = 1):
        super().__init__(every)
        self.scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Append each value to `scalars[name]`."""
        for name, v in values.items():
            self.scalars[name].append((step, v))


class TensorBoardLogger(Logger):
    """Writes the run to TensorBoard event files in `log_dir` (`tensorboard --logdir` shows
    them): losses, LRs and momenta per iteration, validation loss and metrics per epoch.
    Needs tensorboard (`pip install minifast[tensorboard]`); extra keyword arguments go to
    torch's `SummaryWriter`."""

    def __init__(self, log_dir, every: int = 1, **writer_kwargs):
        super().__init__(every)
        self._writer_cls = _summary_writer()  # a missing tensorboard fails here, not mid-run
        self.log_dir, self.writer_kwargs = Path(log_dir), writer_kwargs
        self.writer = None

    def open(self) -> None:
        """Open a `SummaryWriter` on `log_dir` (a new event file per run)."""
        self.writer = self._writer_cls(log_dir=str(self.log_dir), **self.writer_kwargs)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """One `add_scalar` per value, at `step`."""
        for name, v in values.items():
            self.writer.add_scalar(name, v, step)

    def flush(self) -> None:
        """Write the pending events to disk."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _summary_writer():
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it; its own error is vaguer)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "TensorBoardLogger needs tensorboard, which is not installed: "
            "pip install minifast[tensorboard] (or pip install tensorboard)"
        ) from e
    return SummaryWriter
