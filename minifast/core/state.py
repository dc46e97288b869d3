"""The state of one training run, which every callback can read (and some may change)."""

from __future__ import annotations

from typing import Any

import torch
from attrs import define, field

__all__ = ["FitState"]


@define
class FitState:
    """Everything `fit` knows about the run in progress; callbacks see it as `self.state`.

    Counters: `epoch` (0-based, current), `iteration` (batches trained since the run began,
    carried across a resume), `batch_idx` (within the epoch), `n_batches` (per epoch).
    Per batch: `xs`, `y` (current batch, replaceable in `on_batch_begin`), `preds`,
    `loss_tensor` (replaceable in `on_backward_begin`), `loss` (raw loss, float),
    `avg_loss` (the exponential moving average, biased), `smooth_loss` (debiased: what
    `on_batch_end` receives) and `loss_weight` (this batch's weight in the average).
    Per epoch: `vals` (`[val_loss, *metrics, *extra]`), `history` (one dict per finished epoch),
    `epoch_rng` (the RNG states a loader other than `ArrayLoader` drew this epoch's order
    from; see `core.order`). `extra_names`: columns a callback adds to the epoch row (named in
    its `on_train_begin`, their values appended to `vals` in its `on_validate_end`, as `SWA`
    does with `swa_loss`).
    The run's parts: `model`, `opt`, `data`, `stepper`, `crit`, `metrics`, `cbs` (the
    `CallbackHandler` firing the events) and `recorder` (the run's `Recorder`); both are
    let go when the run ends (the result keeps the recorder), so no reference cycle outlives it.
    """

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    data: Any
    stepper: Any
    crit: Any
    metrics: list = field(factory=list)
    n_epochs: int = 1
    avg_mom: float = 0.98
    cbs: Any = None
    recorder: Any = None
    epoch: int = 0
    iteration: int = 0
    batch_idx: int = 0
    n_batches: int = 0
    xs: Any = None
    y: Any = None
    preds: Any = None
    loss_tensor: Any = None
    loss: float = float("nan")
    avg_loss: float = 0.0
    loss_weight: float = 1.0
    vals: list = field(factory=list)
    extra_names: list = field(factory=list)
    history: list = field(factory=list)
    epoch_start: float = 0.0
    epoch_rng: dict | None = None
    interrupted: bool = False
    stopped: bool = False
    error: BaseException | None = None

    def add_loss(self, loss: float) -> None:
        """Count one trained batch with raw loss `loss`: the iteration counters and
        `avg_loss = avg_loss*avg_mom + loss*loss_weight*(1-avg_mom)` (fastai v0.7's running
        average; `loss_weight` is 1 but for a batch that counts more or less than the others,
        e.g. a rank's uneven share of a sharded last batch)."""
        self.loss = loss
        self.iteration += 1
        self.batch_idx += 1
        self.avg_loss = self.avg_loss * self.avg_mom + loss * self.loss_weight * (1 - self.avg_mom)

    @property
    def smooth_loss(self) -> float:
        """The debiased running loss `avg_loss / (1 - avg_mom**iteration)` (NaN before the
        first batch): what the epoch table reports as `trn_loss`."""
        if self.iteration == 0:
            return float("nan")
        return self.avg_loss / (1 - self.avg_mom**self.iteration)

    @property
    def metric_names(self) -> list[str]:
        """Column names of `vals`: `val_loss`, each metric's `__name__`, then `extra_names`."""
        return (["val_loss"] + [getattr(m, "__name__", type(m).__name__) for m in self.metrics]
                + list(self.extra_names))

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group (what a schedule set last)."""
        return float(self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        """Counters and loss averages (what a checkpoint needs to resume the loop itself)."""
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "batch_idx": self.batch_idx,
            "avg_loss": self.avg_loss,
            "smooth_loss": self.smooth_loss,
            "history": [dict(h) for h in self.history],
            "epoch_rng": self.epoch_rng,
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore `state_dict()` (`smooth_loss` follows from the others)."""
        self.epoch, self.iteration, self.batch_idx = sd["epoch"], sd["iteration"], sd["batch_idx"]
        self.avg_loss = sd["avg_loss"]
        self.history = [dict(h) for h in sd["history"]]
        self.epoch_rng = sd.get("epoch_rng")  # absent from format-1 checkpoints
