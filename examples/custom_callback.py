"""Writing your own callbacks: gradient norms, stopping on a plateau, and the events themselves.

Three callbacks, each a subclass of `minifast.Callback` that overrides only the events it
needs (events nobody overrides cost nothing):

- `EventTracer` records the name of every event as it fires, to show their order;
- `GradNormLogger` records the global gradient norm of every batch (`on_backward_end`: after
  backward, before clipping, while the gradients exist);
- `PlateauStopper` stops training when the validation loss stops improving
  (`on_epoch_end` returning True, as in fastai v0.7).

They train a small model on synthetic tabular data with `minifast.fit` and
`ColumnarModelData`. Run `python examples/custom_callback.py` (a few seconds); the test suite
calls `main(quick=True)`.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minifast import Callback, ColumnarModelData, fit, get_cv_idxs

# --8<-- [start:tracer]
BATCH_EVENTS = ("on_batch_begin", "on_backward_begin", "on_backward_end",
                "on_step_begin", "on_step_end", "on_batch_end")


class EventTracer(Callback):
    """Records every event, in order, as `(event, epoch, batch_idx)`."""

    order = -100  # first, so the trace shows each event as it begins

    def __init__(self):
        self.events: list[tuple[str, int, int]] = []

    def _log(self, name: str) -> None:
        s = self.state
        self.events.append((name, s.epoch, s.batch_idx))

    def on_train_begin(self):
        self._log("on_train_begin")

    def on_epoch_begin(self):
        self._log("on_epoch_begin")

    def on_batch_begin(self):
        self._log("on_batch_begin")

    def on_backward_begin(self):
        self._log("on_backward_begin")

    def on_backward_end(self):
        self._log("on_backward_end")

    def on_step_begin(self):
        self._log("on_step_begin")

    def on_step_end(self):
        self._log("on_step_end")

    def on_batch_end(self, loss):
        self._log("on_batch_end")

    def on_validate_begin(self):
        self._log("on_validate_begin")

    def on_validate_end(self, vals):
        self._log("on_validate_end")

    def on_epoch_end(self, vals):
        self._log("on_epoch_end")

    def on_train_end(self):
        self._log("on_train_end")

    def summary(self) -> list[str]:
        """The trace, one event per line, indented by nesting. Each
        epoch's run of identical batches is shown once."""
        names = [e[0] for e in self.events]
        lines, i = [], 0
        while i < len(names):
            j = i
            while j < len(names) and names[j] in BATCH_EVENTS:
                j += 1
            n = names[i:j].count("on_batch_begin")
            if n and names[i:j] == list(BATCH_EVENTS) * n:
                lines.append(f"    {n} batches, each:")
                lines += [f"      {name}" for name in BATCH_EVENTS]
                i = j
                continue
            name, epoch, _ = self.events[i]
            depth = 0 if "train" in name else 1 if "epoch" in name else 2
            lines.append("  " * depth + f"{name}  (epoch {epoch})")
            i += 1
        return lines
# --8<-- [end:tracer]


# --8<-- [start:gradnorm]
class GradNormLogger(Callback):
    """Records the global L2 norm of the gradients of every batch, before
    any clipping. The norms stay on the device until the epoch ends:
    `.item()` every batch would force a host-device sync per step."""

    def __init__(self):
        self.norms: list[float] = []  # one per batch, for the whole run
        self.epoch_max: list[float] = []  # the largest norm of each epoch
        self._pending: list[torch.Tensor] = []

    def on_backward_end(self):
        params = self.state.model.parameters()
        norms = [p.grad.norm() for p in params if p.grad is not None]
        self._pending.append(torch.stack(norms).norm().detach())

    def on_epoch_end(self, vals):
        self._flush()

    def on_train_end(self):  # also after a stop or an error mid-epoch
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            new = torch.stack(self._pending).tolist()
            self.norms += new
            self.epoch_max.append(max(new))
            self._pending = []
# --8<-- [end:gradnorm]


# --8<-- [start:plateau]
class PlateauStopper(Callback):
    """Stops when the validation loss has not improved by `rel_delta`
    (relative) for `patience` epochs in a row.

    Returning True from `on_epoch_end` asks `fit` to stop once every
    callback has seen the event. (The built-in `EarlyStopping` does the
    same with an absolute `min_delta`, on any column of the epoch row.)
    """

    order = 60  # after the Printer: the last epoch is still printed

    def __init__(self, patience: int = 2, rel_delta: float = 1e-3):
        self.patience, self.rel_delta = patience, rel_delta
        self.stopped_epoch: int | None = None

    def on_train_begin(self):
        self.best, self.wait = math.inf, 0

    def on_epoch_end(self, vals):
        val_loss = vals[0]
        if val_loss < self.best * (1 - self.rel_delta):
            self.best, self.wait = val_loss, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = self.state.epoch
            return True
        return False
# --8<-- [end:plateau]


# --8<-- [start:data]
class TabularNet(nn.Module):
    """An embedding for the categorical column plus a linear layer for
    the continuous ones: `forward(cats, conts)`, as batches come."""

    def __init__(self, n_levels: int, n_conts: int):
        super().__init__()
        self.emb = nn.Embedding(n_levels, 1)
        self.lin = nn.Linear(n_conts, 1)

    def forward(self, cats, conts):
        return self.emb(cats[:, 0]) + self.lin(conts)


def make_data(n=4000, n_levels=20, n_conts=3, bs=64, seed=0):
    """Synthetic rows `y = effect[cat] + conts @ w + noise`, as
    `ColumnarModelData` yielding (cats, conts, y) batches."""
    rng = np.random.default_rng(seed)
    cats = rng.integers(0, n_levels, size=(n, 1))
    conts = rng.normal(size=(n, n_conts)).astype(np.float32)
    effect, w = rng.normal(size=n_levels), rng.normal(size=n_conts)
    y = effect[cats[:, 0]] + conts @ w + 0.3 * rng.normal(size=n)
    return ColumnarModelData.from_arrays(
        ".", get_cv_idxs(n), cats, y.astype(np.float32), bs,
        conts=conts, seed=seed)
# --8<-- [end:data]


def main(quick: bool = False, verbose: bool = True) -> dict:
    """Trace the events of a short run, then train with the gradient-norm logger and the
    plateau stopper. Returns the three callbacks and the `fit` results."""
    torch.manual_seed(0)

    # 1. The events of a short run: 2 epochs of 3 batches each.
    data = make_data(n=240, bs=64)
    model = TabularNet(20, 3)
    tracer = EventTracer()
    fit(model, data, 2, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss,
        callbacks=[tracer], verbose=False, progress=False)
    if verbose:
        print("Events of a 2-epoch run (3 training batches per epoch):")
        print("\n".join(tracer.summary()))

    # 2. Gradient norms and a plateau stop, on a longer run.
    n_epochs = 30
    data = make_data(n=2000 if quick else 8000)
    model = TabularNet(20, 3)
    opt = torch.optim.Adam(model.parameters(), 3e-2)
    grads, plateau = GradNormLogger(), PlateauStopper(patience=2, rel_delta=1e-2)
    if verbose:
        print(f"\nTraining for up to {n_epochs} epochs with GradNormLogger and PlateauStopper:")
    res = fit(model, data, n_epochs, opt, F.mse_loss, callbacks=[grads, plateau],
              verbose=verbose, progress=False)
    if verbose:
        print(f"stopped: {res.state.stopped} after {len(res.history)} of {n_epochs} epochs "
              f"(plateau at epoch {plateau.stopped_epoch}); final val_loss {res[0]:.4f}")
        print(f"gradient norms of {len(grads.norms)} batches; largest per epoch: "
              + ", ".join(f"{g:.3f}" for g in grads.epoch_max))
    return {"tracer": tracer, "grads": grads, "plateau": plateau, "result": res,
            "n_epochs": n_epochs, "n_batches": len(data.trn_dl)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="less data")
    main(quick=ap.parse_args().quick)
