"""Faults during training: NaN/inf losses, Ctrl-C at a batch boundary, and resuming after both."""

import json
import math
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from resume_worker import (
    N_BATCHES,
    N_EPOCHS,
    InterruptAfterBatch,
    assert_same_run,
    result,
    start,
    train,
)

from minifast import (
    Callback,
    Checkpoint,
    NonFiniteLossError,
    find_checkpoints,
    load_checkpoint,
)


def snapshot(model, opt) -> dict:
    return {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "opt": {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}}


def assert_equal_state(a: dict, b: dict) -> None:
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["opt"].keys() == b["opt"].keys()
    for i in a["opt"]:
        for k in a["opt"][i]:
            assert torch.equal(a["opt"][i][k], b["opt"][i][k]), (i, k)


class Poison(Callback):
    """Makes the targets of batch `at` (0-based iteration) non-finite; snapshots the run first."""

    def __init__(self, at: int, value: float = float("nan")):
        self.at, self.value, self.before, self.end_seen = at, value, None, False

    def on_batch_begin(self):
        if self.state.iteration == self.at:
            self.before = snapshot(self.state.model, self.state.opt)
            self.lr = self.state.lr
            self.good = self.state.smooth_loss
            self.state.y = self.state.y * self.value

    def on_train_end(self):
        self.end_seen = True
        self.error = self.state.error


# --------------------------------------------------------------------------------------------
# NaN / inf


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_context_and_keeps_last_good_state(tmp_path, value):
    p = Poison(22, value)
    ck = tmp_path / "ckpt"
    with pytest.raises(NonFiniteLossError) as e:
        train(tmp_path, [p, Checkpoint(ck, every_n_iters=11, keep=1)])
    msg = str(e.value)
    assert f"loss is {value}" in msg and "epoch 1, iteration 22 (batch 7 of 15)" in msg
    assert f"lr {p.lr:.3g}" in msg and f"last good smoothed loss {p.good:.5f}" in msg
    assert "targets hold" in msg and "the data is at fault" in msg and math.isfinite(p.good)
    model, opt = p.state.model, p.state.opt
    assert_equal_state(p.before, snapshot(model, opt))  # no half step, no NaN weights
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert p.end_seen and p.error is e.value  # on_train_end saw the error
    # no checkpoint of the bad batch: the newest is the last good step, and it resumes
    assert [f.name for f in find_checkpoints(ck)] == ["ckpt-00000022.pt"]


def test_non_finite_loss_at_the_first_batch(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"iteration 0 .*no good step in this run yet") as e:
        train(tmp_path, [Poison(0)])
    assert "smoothed loss nan" not in str(e.value)


def test_non_finite_penalty_from_reg_fn_is_refused_too(tmp_path):
    calls = []

    def reg_fn(out, xs, loss):
        calls.append(1)
        return loss + (float("nan") if len(calls) == 6 else 0.0)

    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 0, iteration 5"):
        train(tmp_path, reg_fn=reg_fn)


def test_stop_on_nan_false_continues(tmp_path):
    p = Poison(4)
    model, opt, res = train(tmp_path, [p], n_epochs=1, stop_on_nan=False)
    rec = res.recorder
    assert len(rec.losses) == N_BATCHES and math.isnan(rec.losses[4])
    assert not any(math.isnan(x) for x in rec.losses[:4])


# --------------------------------------------------------------------------------------------
# Ctrl-C in-process


class RaiseInterrupt(Callback):
    """A KeyboardInterrupt raised by a callback after batch `at` (what Ctrl-C looks like)."""

    def __init__(self, at: int):
        self.at, self.seen = at, None

    def on_batch_end(self, loss):
        if self.state.iteration == self.at:
            raise KeyboardInterrupt

    def on_train_end(self):
        rec = self.state.recorder
        self.seen = (self.state.interrupted, list(rec.iterations))


def _message(err: str) -> tuple[str, Path]:
    lines = [ln for ln in err.splitlines() if "training interrupted" in ln]
    assert len(lines) == 1, err
    m = re.search(r'resume with fit\(\.\.\., resume="([^"]+)"\)$', lines[0])
    assert m, lines[0]
    return lines[0], Path(m[1])


def test_keyboard_interrupt_from_a_callback_checkpoints_and_resumes(tmp_path, capsys):
    full = train(tmp_path / "full")
    full = result(full[0], full[1], full[2].recorder, full[2].history)
    cb = RaiseInterrupt(19)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [Checkpoint(tmp_path / "ckpt"), cb])
    assert cb.seen == (True, list(range(1, 20)))  # on_train_end ran, the recorder kept it all
    line, path = _message(capsys.readouterr().err)
    assert "at epoch 1, batch 4/15 (iteration 19)" in line and path.name == "ckpt-00000019.pt"
    model, opt, res = train(tmp_path, resume=path)
    assert_same_run(full, result(model, opt, res.recorder, res.history))


needs_default_sigint = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="Ctrl-C deferral only applies with Python's default SIGINT handler",
)


class SigintInStep(Callback):
    """Sends itself SIGINT (`times` times) in the middle of the step of batch `at` (1-based)."""

    def __init__(self, at: int, times: int = 1):
        self.at, self.times, self.steps_taken, self.before = at, times, 0, None

    def on_step_begin(self):
        if self.state.iteration + 1 == self.at:
            self.before = snapshot(self.state.model, self.state.opt)
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # let the handler run here, mid-step

    def on_step_end(self):
        self.steps_taken += 1


@needs_default_sigint
def test_ctrl_c_is_deferred_to_the_batch_boundary(tmp_path, capsys):
    s = SigintInStep(9)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [s, Checkpoint(tmp_path / "ckpt")])
    assert s.state.iteration == 9 and s.steps_taken == 9  # the interrupted step completed
    assert s.state.interrupted and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _, path = _message(capsys.readouterr().err)
    assert path.name == "ckpt-00000009.pt"


@needs_default_sigint
def test_second_ctrl_c_interrupts_at_once_without_a_half_checkpoint(tmp_path, capsys):
    ck = tmp_path / "ckpt"
    s = SigintInStep(20, times=2)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [s, Checkpoint(ck)])
    assert s.steps_taken == 19 and s.state.iteration == 19  # step 20 never happened
    assert_equal_state(s.before, snapshot(s.state.model, s.state.opt))
    err = capsys.readouterr().err
    assert "interrupted mid-step" in err and 'resume="' + str(ck / "ckpt-00000015.pt") in err
    assert [p.name for p in find_checkpoints(ck)] == ["ckpt-00000015.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_at_an_epoch_end_resumes_at_the_next_epoch(tmp_path, capsys):
    class InterruptAtEpochEnd(Callback):
        def on_epoch_end(self, vals):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [InterruptAtEpochEnd(), Checkpoint(tmp_path / "ckpt", every_n_epochs=None)])
    line, path = _message(capsys.readouterr().err)
    assert "at epoch 1, batch 0/15 (iteration 15)" in line
    sd = load_checkpoint(path)
    assert (sd["state"]["epoch"], sd["state"]["batch_idx"], len(sd["state"]["history"])) == (1, 0, 1)


def test_interrupt_mid_step_before_any_checkpoint_says_so(tmp_path, capsys):
    class InterruptInStep(Callback):
        def on_step_begin(self):
            if self.state.iteration == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [InterruptInStep(), Checkpoint(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert "training interrupted mid-step at epoch 0, batch 3/15 (iteration 3)" in err
    assert "no checkpoint to resume from" in err and not find_checkpoints(tmp_path / "ckpt")
    assert not list((tmp_path / "ckpt").iterdir())  # the lock is gone too
    # a resumed run interrupted mid-step points back to the file it resumed from
    path = tmp_path / "elsewhere.pt"
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [Checkpoint(path, every_n_epochs=None), InterruptAfterBatch(2)])
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [InterruptInStep(), Checkpoint(tmp_path / "ckpt")],
              resume=tmp_path / "elsewhere-00000002.pt")
    assert f'no checkpoint there; resume from the last one with fit(..., resume="{tmp_path}/elsewhere-00000002.pt")' in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Ctrl-C for real: SIGINT to a training process, then resume from its checkpoint


def test_sigint_to_a_training_process_then_resume(tmp_path):
    full = start("full", tmp_path / "full")
    run = tmp_path / "run"
    proc = start("sigint", run)
    deadline = time.monotonic() + 60
    while not (run / "ready").exists():
        assert proc.poll() is None, f"worker exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, "worker never became ready"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    (run / "sent").write_text("sent")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err  # not swallowed
    line, path = _message(err)
    assert "at epoch 1, batch 5/15 (iteration 20)" in line and path == run / "ckpt" / "ckpt-00000020.pt"
    probe = json.loads((run / "train_end.json").read_text())
    assert probe == {"interrupted": True, "iteration": 20, "epoch": 1,
                     "recorder_iterations": list(range(1, 21))}
    resumed = start("resume", run, path)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    full.communicate(timeout=120)
    assert full.returncode == 0
    a, b = torch.load(tmp_path / "full" / "result.pt"), torch.load(run / "result.pt")
    assert_same_run(a, b)
    assert len(b["recorder"]["losses"]) == N_EPOCHS * N_BATCHES
