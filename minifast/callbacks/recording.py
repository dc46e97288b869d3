"""Recording callbacks: the `Recorder` every run has (`learn.sched`'s losses and LRs), the
epoch table (`Printer`, HTML in a notebook), progress bars and the CSV log."""

from __future__ import annotations

import csv
import html
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import plots
from ..core.events import Callback
from ..runtime.notebook import has_widgets, in_notebook
from ..runtime.ranks import is_main_process

__all__ = ["Recorder", "Printer", "HTMLTable", "ProgressBar", "CSVLogger", "format_time", "write_line"]


def format_time(seconds: float) -> str:
    """Seconds as `m:ss` (or `h:mm:ss`), like fastai's tables."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Recorder(Callback):
    """Records per iteration: `iterations`, `lrs` and `moms` (first parameter group),
    `losses` (raw) and `smooth_losses` (what `on_batch_end` received); per epoch: `epochs`
    (the history rows).

    Always installed by `fit`; the Learner's `learn.recorder` is the last one, and
    `learn.sched` reads it under fastai v0.7's names.
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
        self.losses.append(s.loss)
        self.smooth_losses.append(loss)

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
        """Raw and smoothed training loss vs iteration; returns the matplotlib `Axes`."""
        return plots.plot_loss(self, n_skip)

    def plot_lr(self):
        """Learning rate (and momentum, when cycled) vs iteration; returns the LR `Axes`."""
        return plots.plot_lr(self)


def write_line(line: str) -> None:
    """Print `line` to stdout without breaking the progress bars (tqdm's `write`)."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stdout)


class Printer(Callback):
    """The epoch table: a header, then one row per epoch, `epoch trn_loss val_loss <metrics>
    time`.

    `write=None` (the default) draws it as an HTML table that grows row by row in a notebook
    and prints text lines elsewhere (through tqdm, so the bars stay intact); a `write`
    function (e.g. `print`) receives the text lines everywhere. Both show the same columns
    and the same numbers.
    """

    order = 50

    def __init__(self, write: Callable[[str], None] | None = None):
        self.write = write
        self._table = None

    def on_train_begin(self) -> None:
        names = ["epoch", "trn_loss", *self.state.metric_names, "time"]
        if self.write is None and in_notebook():
            self._table = HTMLTable(names)
        else:
            self._table = None
            (self.write or write_line)("  ".join(_pad(n, i) for i, n in enumerate(names)))

    def on_epoch_end(self, vals: list[float]) -> None:
        row = self.state.history[-1]
        cells = [str(row["epoch"]), f"{row['trn_loss']:.5f}", *(f"{v:.5f}" for v in vals),
                 format_time(row["time"])]
        if self._table is not None:
            self._table.add_row(cells)
        else:
            (self.write or write_line)("  ".join(_pad(c, i) for i, c in enumerate(cells)))


def _pad(cell: str, i: int) -> str:
    return f"{cell:>8}" if i else f"{cell:>5}"


class HTMLTable:
    """A table displayed once in a notebook and updated in place as rows are added (the
    display handle of `IPython.display.display(..., display_id=True)`)."""

    def __init__(self, names: Sequence[str]):
        from IPython.display import HTML, display

        self._html, self.names, self.rows = HTML, list(names), []
        self.handle = display(HTML(self.to_html()), display_id=True)

    def add_row(self, cells: Sequence[str]) -> None:
        """Append a row (already formatted cells) and redraw the table in place."""
        self.rows.append(list(cells))
        if self.handle is not None:  # None outside a kernel: nothing to redraw
            self.handle.update(self._html(self.to_html()))

    def to_html(self) -> str:
        """The table as HTML, every cell escaped."""
        head = "".join(f"<th>{html.escape(n)}</th>" for n in self.names)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        return (f'<table border="1" class="dataframe minifast-epochs"><thead>'
                f'<tr style="text-align: right;">{head}</tr></thead><tbody>{body}</tbody></table>')


class ProgressBar(Callback):
    """tqdm bars: one over epochs, one over the batches of the epoch showing the smoothed loss;
    widgets in a notebook (when ipywidgets is installed), text on stderr elsewhere.

    The batch bar refreshes at most every `mininterval` seconds (tqdm's own throttling), so
    it adds next to nothing per batch.
    """

    order = 40

    def __init__(self, leave: bool = False, mininterval: float = 0.2):
        self.leave, self.mininterval = leave, mininterval
        self.epoch_bar = self.batch_bar = None

    def on_train_begin(self) -> None:
        tqdm = _tqdm_class()
        s = self.state
        self.epoch_bar = tqdm(total=s.n_epochs, initial=s.epoch, desc="epoch", leave=self.leave,
                              dynamic_ncols=True)

    def on_epoch_begin(self) -> None:
        tqdm = _tqdm_class()
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


def _tqdm_class():
    """tqdm's widget bars in a notebook with ipywidgets, its text bars everywhere else."""
    if in_notebook() and has_widgets():
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


class CSVLogger(Callback):
    """Appends one CSV row per epoch to `path` (header written once), flushed each epoch."""

    order = 60

    def __init__(self, path, append: bool = False):
        self.path, self.append = Path(path), append

    def on_train_begin(self) -> None:
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
