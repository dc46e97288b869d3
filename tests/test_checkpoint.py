"""Checkpoints and exact resume: bit-identical weights after a crash, safe and clear loading."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from resume_worker import (
    N_BATCHES,
    N_EPOCHS,
    InterruptAfterBatch,
    assert_resumes_exactly,
    assert_same_run,
    build,
    result,
    train,
)

from minifast import (
    ArrayLoader,
    Callback,
    Checkpoint,
    CheckpointError,
    CSVLogger,
    EarlyStopping,
    find_checkpoints,
    fit,
    load_checkpoint,
)
from minifast.callbacks.schedules import CosAnneal

WORKER = Path(__file__).with_name("resume_worker.py")


def full_run(tmp_path, **kw):
    model, opt, res = train(tmp_path / "full", **kw)
    return result(model, opt, res.recorder, res.history)


def interrupted_run(tmp_path, at, callbacks=(), **kw):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", [*callbacks, InterruptAfterBatch(at)], **kw)


def resumed_run(tmp_path, resume, callbacks=(), **kw):
    model, opt, res = train(tmp_path / "run", callbacks, resume=resume, **kw)
    return result(model, opt, res.recorder, res.history)


# --------------------------------------------------------------------------------------------
# Exact resume, in-process


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_resume_mid_epoch_is_bit_identical(tmp_path, opt):
    full = full_run(tmp_path, opt=opt)
    ck = tmp_path / "run" / "ckpt"
    interrupted_run(tmp_path, 23, [Checkpoint(ck, every_n_iters=5, keep=2)], opt=opt)
    assert [p.name for p in find_checkpoints(ck)] == ["ckpt-00000023.pt", "ckpt-00000020.pt"]
    resumed = resumed_run(tmp_path, True, [Checkpoint(ck, every_n_iters=5, keep=2)], opt=opt)
    assert_same_run(full, resumed)
    assert len(resumed["recorder"]["losses"]) == N_EPOCHS * N_BATCHES


def test_resume_from_older_and_epoch_end_checkpoints(tmp_path):
    full = full_run(tmp_path)
    ck = tmp_path / "run" / "ckpt"
    interrupted_run(tmp_path, 33, [Checkpoint(ck, every_n_iters=5, keep=None)])
    # iteration 15 is the end of epoch 0: its file is the epoch-end checkpoint (epoch 1, batch 0)
    sd = load_checkpoint(ck / "ckpt-00000015.pt")
    assert (sd["state"]["epoch"], sd["state"]["batch_idx"], sd["state"]["iteration"]) == (1, 0, 15)
    assert len(sd["state"]["history"]) == 1 and len(sd["recorder"]["epochs"]) == 1
    for name in ("ckpt-00000015.pt", "ckpt-00000020.pt", "ckpt-00000030.pt"):
        assert_same_run(full, resumed_run(tmp_path, ck / name))


def test_resume_twice_and_with_a_schedule(tmp_path):
    nb = 2 * N_BATCHES

    def sched():
        return CosAnneal(nb, cycle_mult=2, lrs=3e-2)

    full = full_run(tmp_path, callbacks=[sched()], jitter=False)
    ck = tmp_path / "run" / "ckpt"
    interrupted_run(tmp_path, 7, [sched(), Checkpoint(ck, every_n_iters=4)], jitter=False)
    # resumes from the interrupt at 7, then is interrupted at 26 and resumes again
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", [sched(), Checkpoint(ck), InterruptAfterBatch(26)], resume=True,
              jitter=False)
    resumed = resumed_run(tmp_path, True, [sched(), Checkpoint(ck)], jitter=False)
    assert_same_run(full, resumed)
    assert len(set(resumed["recorder"]["lrs"])) > 10  # the schedule really moved the LR


def test_resume_with_a_schedule_that_takes_its_lr_from_the_optimiser(tmp_path):
    # lrs=None: the base LR comes from the optimiser at train begin; after a restore the
    # optimiser holds the scheduled LR, so the schedule's own state must be checkpointed.
    def sched():
        return CosAnneal(2 * N_BATCHES, lrs=None)

    full = full_run(tmp_path, callbacks=[sched()], jitter=False)
    ck = tmp_path / "run" / "ckpt"
    interrupted_run(tmp_path, 9, [sched(), Checkpoint(ck, every_n_iters=4)], jitter=False)
    assert_same_run(full, resumed_run(tmp_path, True, [sched(), Checkpoint(ck)], jitter=False))


@pytest.mark.parametrize("clr", [None, (10, 10, 0.95, 0.85)])
def test_learner_fit_resumes_exactly(tmp_path, clr):
    from minifast.learner import Learner

    def run(callbacks, resume=None):
        model, _, data = build(tmp_path)
        learn = Learner(data, model)
        res = learn.fit(1e-2, 2, wds=1e-4, use_wd_sched=True, cycle_len=1, cycle_mult=2,
                        use_clr_beta=clr, callbacks=callbacks, resume=resume, verbose=False,
                        progress=False)
        return result(learn.model, learn.opt, res.recorder, res.history)

    assert_resumes_exactly(run, tmp_path / "ckpt", 5, 23)


def test_early_stopping_and_csv_log_continue_across_a_resume(tmp_path):
    def cbs(d):
        # min_delta=10: only the first epoch "improves", so patience 2 stops after epoch 2
        return [EarlyStopping(patience=2, min_delta=10), CSVLogger(d / "log.csv")]

    model, opt, res = train(tmp_path / "full", cbs(tmp_path / "full"), n_epochs=6)
    full = result(model, opt, res.recorder, res.history)
    assert res.state.stopped and len(res.history) == 3
    run, ck = tmp_path / "run", tmp_path / "run" / "ckpt"
    with pytest.raises(KeyboardInterrupt):  # after epoch 1's checkpoint (iteration 30)
        train(run, [*cbs(run), Checkpoint(ck), InterruptAfterBatch(33)], n_epochs=6)
    model, opt, res = train(run, cbs(run), resume=ck / "ckpt-00000030.pt", n_epochs=6)
    assert res.state.stopped
    assert_same_run(full, result(model, opt, res.recorder, res.history))
    full_log, run_log = (pd.read_csv(d / "log.csv") for d in (tmp_path / "full", run))
    assert list(run_log["epoch"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(full_log.drop(columns="time"), run_log.drop(columns="time"))


@pytest.mark.parametrize("which", ["torch", "numpy", "python"])
def test_every_rng_matters(tmp_path, which):
    """The proof above can fail: disturb one global RNG after the restore and the run differs."""

    class Disturb(Callback):
        def on_train_begin(self):
            {"torch": lambda: torch.rand(1), "numpy": np.random.rand, "python": random.random}[which]()

    full = full_run(tmp_path)
    ck = tmp_path / "run" / "ckpt"
    interrupted_run(tmp_path, 23, [Checkpoint(ck, every_n_iters=5)])
    resumed = resumed_run(tmp_path, ck, [Disturb()])
    with pytest.raises(AssertionError):
        assert_same_run(full, resumed)


def test_interrupt_says_what_is_kept_and_how_to_resume(tmp_path, capsys):
    interrupted_run(tmp_path, 7)  # no Checkpoint: the weights stay, nothing to resume from
    err = capsys.readouterr().err
    assert f"interrupted at epoch 0, batch 7/{N_BATCHES} (iteration 7)" in err
    assert "no checkpoint to resume from" in err and "callbacks=[Checkpoint(folder)]" in err
    interrupted_run(tmp_path, 9, [Checkpoint(tmp_path / "ck")])  # Checkpoint's own message only
    err = capsys.readouterr().err
    assert err.count("interrupted at") == 1 and "resume with fit(..., resume=" in err


def test_checkpoint_contents_load_weights_only(tmp_path):
    ck = tmp_path / "run" / "ckpt"
    model, opt, res = train(tmp_path / "run", [Checkpoint(ck / "net.pt", keep=None)], n_epochs=2)
    files = find_checkpoints(ck)
    assert [p.name for p in files] == ["net-00000030.pt", "net-00000015.pt"]
    assert torch.load(files[0], weights_only=True)["format"] == "minifast.sealed"
    sd = load_checkpoint(files[0])  # plain containers and tensors only, checksum verified
    assert sd["format"] == "minifast.checkpoint" and sd["version"] == 2
    assert sd["n_epochs"] == 2 and sd["n_batches"] == N_BATCHES
    assert sd["state"]["epoch"] == 2 and sd["state"]["batch_idx"] == 0
    assert sd["state"]["iteration"] == 30 and sd["state"]["vals"] == list(res)
    assert sd["state"]["smooth_loss"] == res.recorder.smooth_losses[-1]
    assert sd["recorder"]["losses"] == res.recorder.losses
    assert sd["loader"]["seed"] == res.state.data.trn_dl.seed
    assert set(sd["rng"]) == {"torch", "cuda", "numpy", "python"}
    for k, v in model.state_dict().items():
        assert torch.equal(sd["model"][k], v)
    assert not [p for p in ck.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_keeps_last_k_and_replaces_an_earlier_runs_files(tmp_path):
    ck = tmp_path / "ckpt"
    train(tmp_path, [Checkpoint(ck, every_n_iters=4, keep=3)])
    assert [p.name for p in find_checkpoints(ck)] == [
        "ckpt-00000045.pt", "ckpt-00000044.pt", "ckpt-00000040.pt"]
    # a fresh run into the same folder warns, and its newer files win over the old ones
    with pytest.warns(UserWarning, match="already holds 3 checkpoint"):
        train(tmp_path, [Checkpoint(ck, every_n_iters=None, keep=2)], n_epochs=1)
    assert [p.name for p in find_checkpoints(ck)] == ["ckpt-00000015.pt", "ckpt-00000045.pt"]


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    monkeypatch.setattr("minifast.callbacks.checkpoint.is_main_process", lambda: False)
    train(tmp_path, [Checkpoint(tmp_path / "ckpt", every_n_iters=2)], n_epochs=1)
    assert not (tmp_path / "ckpt").exists()


def test_crash_while_writing_leaves_previous_checkpoint(tmp_path, monkeypatch):
    ck = tmp_path / "ckpt"
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("state", {}).get("iteration") == 10:
            f.write(b"PK\x03\x04 half a zip")
            raise OSError("disk full")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr("minifast.saving.torch.save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        train(tmp_path, [Checkpoint(ck, every_n_iters=5)], n_epochs=1)
    assert [p.name for p in ck.iterdir()] == ["ckpt-00000005.pt"]  # no temp file, no half file
    assert load_checkpoint(ck / "ckpt-00000005.pt")["state"]["iteration"] == 5


def test_callback_state_is_saved_and_restored(tmp_path):
    class Counter(Callback):
        def __init__(self):
            self.n = 0

        def on_batch_end(self, loss):
            self.n += 1

        def state_dict(self):
            return {"n": np.int64(self.n)}  # numpy scalars are stored as plain numbers

        def load_state_dict(self, sd):
            self.n = sd["n"]

    ck = tmp_path / "ckpt"
    c = Counter()
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [c, Checkpoint(ck), InterruptAfterBatch(12)])
    assert load_checkpoint(ck / "ckpt-00000012.pt")["callbacks"] == {"Counter": {"n": 12}}
    c2 = Counter()
    train(tmp_path, [c2, Checkpoint(ck)], resume=True)
    assert c2.n == N_EPOCHS * N_BATCHES

    class Other(Counter):
        pass

    with pytest.warns(UserWarning, match="holds no state for callback Other"):
        train(tmp_path, [Other()], resume=ck)


def test_unplain_callback_state_is_refused_at_save_time(tmp_path):
    class Bad(Callback):
        def state_dict(self):
            return {"f": open}

        def load_state_dict(self, sd):
            pass

    with pytest.raises(TypeError, match=r"callback Bad\['f'\]: a builtin_function_or_method"):
        train(tmp_path, [Bad(), Checkpoint(tmp_path / "ckpt")], n_epochs=1)


# --------------------------------------------------------------------------------------------
# resume=... arguments and bad files


def test_resume_true_needs_the_callback_and_starts_fresh_without_files(tmp_path):
    with pytest.raises(ValueError, match="no Checkpoint callback"):
        train(tmp_path, resume=True)
    full = full_run(tmp_path)
    with pytest.warns(UserWarning, match="no checkpoint in .* yet; training from the start"):
        fresh = resumed_run(tmp_path, True, [Checkpoint(tmp_path / "ckpt")])
    assert_same_run(full, fresh)


def test_resume_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        train(tmp_path, resume=tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint files"):
        train(tmp_path, resume=tmp_path / "empty")
    with pytest.raises(TypeError, match="resume must be"):
        train(tmp_path, resume=3)
    for bad in ({"every_n_iters": 0}, {"keep": 0}, {"every_n_epochs": -1}, {"keep": 1.5}):
        with pytest.raises(ValueError, match="must be None or an integer >= 1"):
            Checkpoint(tmp_path, **bad)


def _two_checkpoints(tmp_path):
    ck = tmp_path / "run" / "ckpt"
    interrupted_run(tmp_path, 23, [Checkpoint(ck, every_n_iters=10, keep=2)])
    files = find_checkpoints(ck)
    assert [p.name for p in files] == ["ckpt-00000023.pt", "ckpt-00000020.pt"]
    return ck, files


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_newest_falls_back_to_previous_good_one(tmp_path, damage):
    full = full_run(tmp_path)
    ck, (newest, previous) = _two_checkpoints(tmp_path)
    data = newest.read_bytes()
    newest.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 100,
                        "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f"cannot load {newest}"):
        load_checkpoint(newest)
    with pytest.raises(CheckpointError, match=f"cannot load {newest}"):  # named: no fallback
        train(tmp_path / "run", resume=newest)
    with pytest.warns(UserWarning, match="skipped 1 unreadable.*ckpt-00000020.pt.*ckpt-00000023.pt"):
        resumed = resumed_run(tmp_path, ck)  # a folder: newest good one
    assert_same_run(full, resumed)


def test_all_checkpoints_corrupt(tmp_path):
    ck, files = _two_checkpoints(tmp_path)
    for p in files:
        p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="no loadable checkpoint in ") as e:
        train(tmp_path / "run", resume=ck)
    assert "ckpt-00000023.pt (100 bytes)" in str(e.value) and "ckpt-00000020.pt (100 bytes)" in str(e.value)


class Evil:
    """An object whose unpickling runs code: os.mkdir(marker)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class Plain:
    pass


def test_a_strangers_checkpoint_cannot_run_code(tmp_path):
    ck, (newest, _) = _two_checkpoints(tmp_path)
    sd = load_checkpoint(newest)
    marker = tmp_path / "pwned"
    sd["state"]["history"] = [Evil(marker)]
    torch.save(sd, newest)
    with pytest.raises(CheckpointError, match=rf"(?i)cannot load {newest}.*unsupported GLOBAL posix.mkdir"):
        train(tmp_path / "run", resume=newest)
    assert not marker.exists()
    sd["state"]["history"] = [Plain()]
    torch.save(sd, newest)
    with pytest.raises(CheckpointError, match=r"Unsupported global.*test_checkpoint\.Plain"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):  # previous one still good
        train(tmp_path / "run", resume=ck)


def test_foreign_or_mismatched_checkpoints(tmp_path):
    ck, (newest, _) = _two_checkpoints(tmp_path)
    weights = tmp_path / "weights.pt"
    model, _, _ = train(tmp_path, n_epochs=0)
    torch.save(model.state_dict(), weights)
    with pytest.raises(CheckpointError, match=r"weights\.pt is not a minifast training checkpoint"):
        train(tmp_path, resume=weights)

    sd = load_checkpoint(newest)
    sd["version"] = 99
    torch.save(sd, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        train(tmp_path, resume=tmp_path / "future.pt")

    sd = load_checkpoint(newest)
    sd["model"]["extra.weight"] = torch.zeros(1)
    sd["model"]["0.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "other_model.pt")
    model, opt, data = build(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"unexpected keys \['extra.weight'\].*0.weight: file"):
        fit(model, data, N_EPOCHS, opt, F.mse_loss, resume=tmp_path / "other_model.pt",
            verbose=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    sd = load_checkpoint(newest)
    sd["world_size"] = 2
    torch.save(sd, tmp_path / "ddp.pt")
    with pytest.raises(CheckpointError, match="saved by a run of 2 process"):
        fit(model, data, N_EPOCHS, opt, F.mse_loss, resume=tmp_path / "ddp.pt", verbose=False)

    data.trn_dl = ArrayLoader(*data.trn_dl.tensors, batch_size=8, shuffle=True)
    with pytest.raises(CheckpointError, match="saved with 15 batches per epoch, but this data has 30"):
        fit(model, data, N_EPOCHS, opt, F.mse_loss, resume=newest, verbose=False)


# --------------------------------------------------------------------------------------------
# The real thing: SIGKILL a training process mid-epoch, resume in another, compare every tensor


def _start(mode, out, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), *sys.path])}
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(out), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"worker never wrote {path}")
        time.sleep(0.02)


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out, err


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    full = _start("full", tmp_path / "full")
    crash = _start("crash", tmp_path / "run")
    _wait_for(tmp_path / "run" / "ready", crash)  # checkpoint 20 written, now in batch 21..23
    os.kill(crash.pid, signal.SIGKILL)
    crash.communicate(timeout=60)
    assert crash.returncode == -signal.SIGKILL
    ck = tmp_path / "run" / "ckpt"
    assert [p.name for p in find_checkpoints(ck)] == ["ckpt-00000020.pt", "ckpt-00000015.pt"]
    assert not (tmp_path / "run" / "result.pt").exists()
    sd = load_checkpoint(ck / "ckpt-00000020.pt")["state"]
    assert (sd["epoch"], sd["batch_idx"]) == (1, 5)  # mid-epoch
    _finish(_start("resume", tmp_path / "run"))
    _finish(full)
    assert_same_run(torch.load(tmp_path / "full" / "result.pt"),
                    torch.load(tmp_path / "run" / "result.pt"))
