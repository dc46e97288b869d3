"""Loggers (issue 15): the `Logger` protocol, `MemoryLogger`, and `TensorBoardLogger`'s event
files read back with TensorBoard's own reader, matching the recorder."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import minifast as mf
from minifast import Callback, Logger, MemoryLogger


def mae(preds, y):
    return (preds.view(-1) - y.view(-1)).abs().mean()


def cycled_learner(data, model):
    """A learner whose LR and momentum both change every iteration (one-cycle with beta)."""
    return mf.Learner(data, model, opt_fn=functools.partial(torch.optim.SGD, momentum=0.9),
                      metrics=[mae])


def fit_cycled(learn, cbs, epochs=2):
    learn.fit(1e-2, 1, cycle_len=epochs, use_clr_beta=(10, 10, 0.95, 0.85), callbacks=cbs,
              verbose=False, progress=False)
    return learn.recorder


def test_a_custom_logger_is_one_method(tiny_data, tiny_model):
    class ListLogger(Logger):
        def __init__(self):
            super().__init__()
            self.calls = []

        def log_scalars(self, step, values):
            self.calls.append((step, values))

    log = ListLogger()
    rec = fit_cycled(cycled_learner(tiny_data, tiny_model), [log])
    nb = len(tiny_data.trn_dl)
    assert len(log.calls) == 2 * nb + 2  # every iteration, and each epoch's validation
    per_it = [v for _, v in log.calls if "train/loss" in v]
    assert [s for s, v in log.calls if "train/loss" in v] == rec.iterations
    assert [v["train/loss"] for v in per_it] == rec.losses
    assert [v["train/smooth_loss"] for v in per_it] == rec.smooth_losses
    assert [v["lr/0"] for v in per_it] == rec.lrs and [v["mom/0"] for v in per_it] == rec.moms
    epochs = [(s, v) for s, v in log.calls if "valid/val_loss" in v]
    assert [s for s, _ in epochs] == [nb, 2 * nb]
    assert [v["valid/val_loss"] for _, v in epochs] == [e["val_loss"] for e in rec.epochs]
    assert [v["valid/mae"] for _, v in epochs] == [e["mae"] for e in rec.epochs]


def test_memory_logger_every_n_iterations(tiny_data, tiny_model):
    log = MemoryLogger(every=5)
    rec = fit_cycled(cycled_learner(tiny_data, tiny_model), [log], epochs=1)
    steps = [s for s, _ in log.scalars["train/loss"]]
    assert steps == [i for i in rec.iterations if i % 5 == 0] and steps
    assert [v for _, v in log.scalars["lr/0"]] == [rec.lrs[i - 1] for i in steps]
    assert len(log.scalars["valid/val_loss"]) == 1
    with pytest.raises(ValueError, match="every"):
        MemoryLogger(every=0)


def test_logger_without_log_scalars_says_what_to_implement(tiny_data, tiny_model):
    with pytest.raises(NotImplementedError, match=r"Lazy must implement log_scalars\(step, values\)"):
        fit_cycled(cycled_learner(tiny_data, tiny_model), [type("Lazy", (Logger,), {})()], 1)


def test_loggers_log_on_the_main_process_only(tiny_data, tiny_model, monkeypatch):
    monkeypatch.setattr("minifast.callbacks.loggers.is_main_process", lambda: False)
    log = MemoryLogger()
    fit_cycled(cycled_learner(tiny_data, tiny_model), [log], epochs=1)
    assert not log.scalars


# ------------------------------------------------------------------------------ TensorBoard


def read_events(log_dir):
    """Every scalar in the event files under `log_dir`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep them all
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_event_files_match_the_recorder(tiny_data, tiny_model, tmp_path):
    pytest.importorskip("tensorboard")
    seen_after_epoch_0 = {}

    class ReadAfterFirstEpoch(Callback):
        order = 100  # after the logger flushed

        def on_epoch_end(self, vals):
            if self.state.epoch == 0:
                seen_after_epoch_0.update(read_events(tmp_path / "tb"))

    tb = mf.TensorBoardLogger(tmp_path / "tb")
    rec = fit_cycled(cycled_learner(tiny_data, tiny_model), [tb, ReadAfterFirstEpoch()])
    assert tb.writer is None  # closed at the end of training
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    ev = read_events(tmp_path / "tb")
    nb = len(tiny_data.trn_dl)
    assert set(ev) == {"train/loss", "train/smooth_loss", "lr/0", "mom/0", "valid/val_loss",
                       "valid/mae"}
    for tag, want in [("train/loss", rec.losses), ("train/smooth_loss", rec.smooth_losses),
                      ("lr/0", rec.lrs), ("mom/0", rec.moms)]:
        steps, values = zip(*ev[tag])
        assert list(steps) == rec.iterations
        np.testing.assert_allclose(values, want, rtol=1e-6)  # event files hold float32
    assert len(set(rec.lrs)) > 2 and len(set(rec.moms)) > 2  # the curves really vary
    assert [s for s, _ in ev["valid/val_loss"]] == [nb, 2 * nb]
    np.testing.assert_allclose([v for _, v in ev["valid/val_loss"]],
                               [e["val_loss"] for e in rec.epochs], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in ev["valid/mae"]], [e["mae"] for e in rec.epochs],
                               rtol=1e-6)
    # flushed at the end of each epoch: the first epoch was on disk before training ended
    assert [s for s, _ in seen_after_epoch_0["valid/val_loss"]] == [nb]
    assert len(seen_after_epoch_0["train/loss"]) == nb


def test_tensorboard_logger_closes_when_training_fails(tiny_data, tiny_model, tmp_path):
    pytest.importorskip("tensorboard")

    class Boom(Callback):
        def on_batch_end(self, loss):
            if self.state.iteration == 3:
                raise RuntimeError("boom")

    tb = mf.TensorBoardLogger(tmp_path / "tb")
    with pytest.raises(RuntimeError, match="boom"):
        mf.fit(tiny_model, tiny_data, 1, torch.optim.SGD(tiny_model.parameters(), 0.01),
               F.mse_loss, callbacks=[tb, Boom()], verbose=False, progress=False)
    assert tb.writer is None
    assert len(read_events(tmp_path / "tb")["train/loss"]) >= 2


def test_tensorboard_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install minifast\[tensorboard\]"):
        mf.TensorBoardLogger(tmp_path / "tb")
