"""The DDP session of one `fit` call: what `fit` does differently under
DistributedDataParallel.

A script runs unchanged under `torchrun --nproc_per_node N script.py`: `fit` sees torchrun's
environment, joins the process group (`minifast.runtime.ranks`), and for the duration of
the call wraps the model in DDP and shards the loaders across ranks. `fit(...,
distributed=False)` opts out. See docs/distributed.md for what is synchronised and why.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from .checks import is_stateful_metric
from .core.events import Callback
from .core.state import FitState
from .runtime.modules import unwrap
from .runtime.ranks import (
    destroy_distributed,
    init_distributed,
    is_launched,
    process_device,
    rank,
    world_size,
)

__all__ = ["DistributedFit"]


def _shard_validation(metrics) -> bool:
    """Whether the validation loader may be sharded across ranks: yes unless a metric is
    stateful (`reset/accumulate/value`), whose batch-by-batch state cannot be combined across
    ranks. Whole-set metrics `metric(preds, y)` are exact when sharded: `validate` all-gathers
    the ranks' predictions and targets back into the unsharded order before calling them."""
    return not any(is_stateful_metric(m) for m in metrics)


def _auto_init(distributed: bool | None) -> bool:
    """Whether `fit` trains with DDP; joins torchrun's group first when needed."""
    if distributed is False:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        if not is_launched():
            if distributed:
                raise RuntimeError(
                    "fit(distributed=True) needs a process group: start the script with torchrun "
                    "(e.g. `torchrun --nproc_per_node 2 train.py`) or call init_distributed()."
                )
            return False
        if int(os.environ["WORLD_SIZE"]) <= 1:
            return False
        if init_distributed():
            atexit.register(destroy_distributed)
    return world_size() > 1


def _loader_info(dl) -> tuple | None:
    if dl is None or not hasattr(dl, "bounds"):
        return None
    return (type(dl).__name__, dl.n, dl.batch_size, bool(dl.shuffle), bool(dl.drop_last))


class _ShardSync(Callback):
    """Exact global semantics of a sharded step and of the reported training loss.

    A step's gradient is DDP's average of the ranks' gradients. Every step but the last of an
    epoch has equal shards, so that average is the gradient of the mean loss over the global
    batch. The last step's shards may differ by a row: each rank's loss is weighted by
    `world_size * rows_here / rows_in_step`, which makes the average exact again (for a
    mean-reduced criterion, the default of torch's losses). At each epoch's end the ranks'
    loss averages are averaged (one all-reduce per epoch): the reported `trn_loss` is then
    the same on every rank, the smoothed loss of the global batches.
    """

    order = -30  # before the Recorder, so it records the corrected smoothed loss

    def __init__(self, dl):
        self.dl = dl
        self.weight = 1.0

    def _step_weight(self, i: int) -> float:
        dl, w = self.dl, self.dl.world_size
        start, stop = dl.bounds(i)
        rows = dl.bounds(i, w - 1)[1] - dl.bounds(i, 0)[0]
        return w * (stop - start) / rows

    def on_batch_begin(self) -> None:
        self.weight = self.state.loss_weight = self._step_weight(self.state.batch_idx)

    def on_backward_begin(self) -> None:
        if self.weight != 1.0:
            self.state.loss_tensor = self.state.loss_tensor * self.weight

    def on_validate_begin(self) -> None:
        s = self.state
        buf = torch.tensor([s.avg_loss], dtype=torch.float64, device=process_device())
        dist.all_reduce(buf)
        s.avg_loss = buf.item() / world_size()


class DistributedFit:
    """What `fit` does under DDP, for the duration of one call (used by `fit`).

    `start` checks that every rank holds the same data, gives every rank rank 0's shuffling
    seed, shards the training `ArrayLoader` across ranks (and the validation one, unless a metric
    is stateful: see `_shard_validation`), and wraps the model
    in DistributedDataParallel for the stepper (`state.model` stays the user's module, whose
    Parameters the optimiser holds). `stop` undoes all of it. `distributed=None` means: when
    launched by torchrun or a process group of more than one rank exists; False: never.
    """

    def __init__(self, distributed: bool | None = None, data=None):
        self.active = _auto_init(distributed)
        self.callbacks: list[Callback] = []
        self._undo: list = []
        if self.active:
            dl = data.trn_dl
            if not hasattr(dl, "bounds"):
                raise TypeError(
                    f"distributed fit needs the training loader to be an ArrayLoader (which also "
                    f"wraps any map-style Dataset), got {type(dl).__name__}"
                )
            self.callbacks = [_ShardSync(dl)]

    def start(self, state: FitState) -> None:
        """Agree on the data, shard the loaders, wrap the model (no-op when not active)."""
        if not self.active:
            return
        try:
            self._start(state)
        except BaseException:
            self.stop()
            raise

    def _start(self, state: FitState) -> None:
        W, data = world_size(), state.data
        # Validation is sharded too (validate gathers the shards for the metrics) unless a
        # metric is stateful; then every rank validates all of it, exact without any sync.
        val = data.val_dl if _shard_validation(state.metrics) else None
        loaders = [dl for dl in (data.trn_dl, val) if _loader_info(dl) is not None]
        mine = ([_loader_info(dl) for dl in loaders], [dl.seed for dl in loaders])
        everyone: list = [None] * W
        dist.all_gather_object(everyone, mine)
        for r, (info, _) in enumerate(everyone):
            if info != mine[0]:
                raise ValueError(
                    f"ranks hold different data: rank {rank()} has loaders (type, rows, batch_size, "
                    f"shuffle, drop_last) {mine[0]}, rank {r} has {info}. Every rank must load the "
                    f"same data set and split."
                )
        if data.trn_dl.n < W:
            raise ValueError(f"the training set has {data.trn_dl.n} rows, fewer than the {W} ranks")
        for dl, seed in zip(loaders, everyone[0][1], strict=True):
            # rank 0's seed is kept after the run too: a seed drawn at random differs by rank
            self._undo.append((dl, "rank", dl.rank))
            self._undo.append((dl, "world_size", dl.world_size))
            dl.seed, dl.rank, dl.world_size = seed, rank(), W
        state.n_batches = len(data.trn_dl)
        model = unwrap(state.model)
        dev = process_device()
        p = next(model.parameters(), None)
        if p is not None and p.device != dev and dev.type == "cuda":
            model.to(dev)
        ids = [dev.index] if dev.type == "cuda" else None
        stepper = state.stepper
        self._undo.append((stepper, "model", stepper.model))
        stepper.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @contextmanager
    def session(self, state: FitState) -> Iterator[None]:
        """`start` on entry, `stop` on exit (also on error)."""
        self.start(state)
        try:
            yield
        finally:
            self.stop()

    def stop(self) -> None:
        """Restore the loaders' sharding and the stepper's model."""
        for obj, name, value in reversed(self._undo):
            setattr(obj, name, value)
        self._undo = []
