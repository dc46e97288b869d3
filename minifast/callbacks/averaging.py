"""Weight averaging: `SWA`, stochastic weight averaging (Izmailov et al. 2018,
arxiv.org/abs/1803.05407) as fastai v0.7's `fit(..., use_swa=True, swa_start=...,
swa_eval_freq=...)` had it, and `fix_batchnorm`, which recomputes BatchNorm statistics for
averaged weights."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..checks import positive_int
from ..core.events import Callback
from ..core.loop import validate
from ..runtime.device import batch_mover
from ..runtime.modules import model_device, unwrap
from ..runtime.ranks import average_across_ranks
from ..runtime.rng import loader_untouched

__all__ = ["SWA", "fix_batchnorm", "batchnorm_layers"]


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def fix_batchnorm(model: nn.Module, dl) -> None:
    """Recompute the running statistics of `model`'s BatchNorm layers for the weights it has
    now (fastai v0.7's `fix_batchnorm`, torch's `update_bn`): one pass over `dl` in train mode
    without gradients, each layer's statistics the plain average over the pass, not a moving
    one. Averaged weights need this: the statistics the training weights ran up do not fit
    them. Every RNG and the loader's generators and epoch counter are put back, so training
    after it draws what it would have drawn. Under DDP each rank passes over its shard and the
    statistics are averaged over the ranks. A model without BatchNorm is left alone."""
    bns = batchnorm_layers(model)
    if not bns:
        return
    momenta, was_training = [m.momentum for m in bns], model.training
    move = batch_mover(dl, model_device(model))
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # torch's cumulative average
        model.train()
        with loader_untouched(dl), torch.no_grad():
            for batch in dl:
                *xs, y = move(batch)
                if len(y):  # a rank's shard of a small last batch may be empty
                    model(*xs)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    average_across_ranks([t for m in bns for t in (m.running_mean, m.running_var)])


class SWA(Callback):
    """Stochastic weight averaging: `swa_model` is the equal-weight average of the model's
    weights at the end of every epoch from epoch `swa_start` on (1-indexed, as in the paper and
    fastai v0.7: `swa_start=1` averages every epoch), while the model itself trains on
    exactly as it would without it.

    The epoch row gets the columns `swa_loss` and `swa_<metric>`: the average's validation
    (with the run's loss, metrics and precision), at the first averaged epoch, every
    `swa_eval_freq` epochs after it and at the last epoch; NaN in the other rows. Before each
    of those, and at the end of the run, a model with BatchNorm gets its statistics for the
    average (`fix_batchnorm`: one pass over the training data). `swa_model` is a copy of the
    model, made when training begins unless one is given; `swa_n` counts the epochs in it.
    Its state (the average, `swa_n`, the settings) goes into checkpoints, so a resumed run
    ends with the uninterrupted run's average; a resume with other settings is refused.

    `Learner.fit(..., use_swa=True, swa_start=..., swa_eval_freq=...)` adds one and keeps
    its `swa_model` as `learn.swa_model`; `learn.predict(use_swa=True)` predicts with it. A
    constant or cyclical LR over the averaged epochs is what the method assumes.
    """

    order = -10  # before other callbacks see the row's values

    def __init__(self, swa_start: int = 1, swa_eval_freq: int = 5,
                 swa_model: nn.Module | None = None):
        self.swa_start = positive_int(swa_start, "swa_start", "SWA")
        self.swa_eval_freq = positive_int(swa_eval_freq, "swa_eval_freq", "SWA")
        self.swa_model, self.swa_n = swa_model, 0
        self._saved: dict | None = None
        self._bn_fresh = True  # whether swa_model's BatchNorm statistics fit its weights

    def on_train_begin(self) -> None:
        s = self.state
        if s.n_epochs < self.swa_start:
            raise ValueError(f"SWA(swa_start={self.swa_start}): this run has {s.n_epochs} "
                             f"epoch(s), so no epoch would be averaged; lower swa_start or "
                             f"train longer")
        if self.swa_model is None:
            self.swa_model = copy.deepcopy(unwrap(s.model))
        saved, self._saved, self.swa_n, self._bn_fresh = self._saved, None, 0, True
        if saved is not None:
            self._restore(saved)
        elif s.epoch >= self.swa_start:
            warnings.warn(f"SWA: this run resumes at epoch {s.epoch} from a checkpoint without "
                          f"an average, so the average holds epochs {s.epoch + 1} on only, not "
                          f"{self.swa_start} on", stacklevel=2)
        if s.data.val_dl is not None:
            s.extra_names.extend(self.columns())

    def columns(self) -> list[str]:
        """The epoch-row columns this adds: `swa_loss`, then `swa_<name>` per metric."""
        n_metrics = len(self.state.metrics)
        return ["swa_loss"] + [f"swa_{n}" for n in self.state.metric_names[1:1 + n_metrics]]

    def on_validate_end(self, vals: list[float]) -> None:
        s = self.state
        done = s.epoch + 1
        if done >= self.swa_start:
            self._add(unwrap(s.model))
        if s.data.val_dl is None:
            return
        due = self.swa_n > 0 and ((done - self.swa_start) % self.swa_eval_freq == 0
                                  or done == s.n_epochs)
        if not due:
            vals.extend([math.nan] * (1 + len(s.metrics)))
            return
        with self._average_in_model():
            vals.extend(validate(s.stepper, s.data.val_dl, s.metrics))

    def on_train_end(self) -> None:
        s = self.state
        if not (s.interrupted or s.error is not None) and self.swa_n:
            self._fix_batchnorm()

    def _add(self, model: nn.Module) -> None:
        """Count `model`'s weights into the average; buffers are the model's own until
        `fix_batchnorm` recomputes BatchNorm's."""
        live = model.state_dict()
        params = {name for name, _ in self.swa_model.named_parameters()}
        with torch.no_grad():
            for name, avg in self.swa_model.state_dict().items():
                if name in params and self.swa_n > 0:
                    avg.lerp_(live[name].to(avg.device, avg.dtype), 1.0 / (self.swa_n + 1))
                else:
                    avg.copy_(live[name])
        self.swa_n += 1
        self._bn_fresh = False

    def _fix_batchnorm(self) -> None:
        if not self._bn_fresh:
            fix_batchnorm(self.swa_model, self.state.data.trn_dl)
            self._bn_fresh = True

    @contextmanager
    def _average_in_model(self) -> Iterator[None]:
        """The run's model holds the average (BatchNorm statistics fixed) for the block, and
        its own weights again after it, also on error; the optimiser sees the same
        parameters throughout, as the weights are copied in place."""
        self._fix_batchnorm()
        model = unwrap(self.state.model)
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            model.load_state_dict(self.swa_model.state_dict())
            yield
        finally:
            model.load_state_dict(live)

    def state_dict(self) -> dict:
        """The average and its count, with the settings they were made under (checkpoints)."""
        weights = None if self.swa_model is None else {
            k: v.detach().clone() for k, v in self.swa_model.state_dict().items()}
        return {"swa_start": self.swa_start, "swa_eval_freq": self.swa_eval_freq,
                "swa_n": self.swa_n, "bn_fresh": self._bn_fresh, "weights": weights}

    def load_state_dict(self, sd: dict) -> None:
        """Take a checkpoint's average; it is put in `swa_model` when training begins."""
        self._saved = sd

    def _restore(self, sd: dict) -> None:
        ours, theirs = (self.swa_start, self.swa_eval_freq), (sd["swa_start"], sd["swa_eval_freq"])
        if ours != theirs:
            raise ValueError(f"resume: the checkpoint's run averaged with swa_start, "
                             f"swa_eval_freq = {theirs}, this one with {ours}; resume with the "
                             f"checkpoint's settings")
        if sd["weights"] is not None:
            self.swa_model.load_state_dict(sd["weights"])
        self.swa_n, self._bn_fresh = int(sd["swa_n"]), bool(sd["bn_fresh"])
