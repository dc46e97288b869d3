"""Checkpoint files on a hostile disk: bit rot, killed writes' temp files, two runs in one
folder, a full disk and a folder that cannot be written."""

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from resume_worker import InterruptAfterBatch, assert_same_run, result, train

from minifast import Callback, Checkpoint, CheckpointError, find_checkpoints, load_checkpoint

WORKER = Path(__file__).with_name("resume_worker.py")


def _full(tmp_path):
    model, opt, res = train(tmp_path / "full")
    return result(model, opt, res.recorder, res.history)


def _two_checkpoints(tmp_path):
    ck = tmp_path / "run" / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", [Checkpoint(ck, every_n_iters=10, keep=2), InterruptAfterBatch(23)])
    return ck, find_checkpoints(ck)


def test_a_flipped_byte_is_detected_and_resume_falls_back(tmp_path):
    full = _full(tmp_path)
    ck, (newest, previous) = _two_checkpoints(tmp_path)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit, in the middle (the tensors' bytes)
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"cannot load {newest} .*does not match the "
                       r"checksum stored with it"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*resumed from the newest good "
                      r"one, ckpt-00000020\.pt.*checksum"):
        model, opt, res = train(tmp_path / "run", resume=ck)
    assert_same_run(full, result(model, opt, res.recorder, res.history))


def test_stale_temp_files_of_this_prefix_are_removed_at_start(tmp_path):
    ck = tmp_path / "ckpt"
    ck.mkdir()
    mine = [ck / ".ckpt-00000020.pt.k3j2h1.tmp", ck / ".ckpt-00000025.pt.x.tmp"]
    others = [ck / ".net-00000020.pt.abc.tmp", ck / "notes.tmp"]
    for p in mine + others:
        p.write_bytes(b"half a checkpoint")
    train(tmp_path, [Checkpoint(ck)], n_epochs=1)
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others)


def _start(mode, out, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), *sys.path])}
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(out), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_second_live_run_in_the_folder_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    crash = _start("crash", run)  # holds run/ckpt, then hangs mid-step until killed
    deadline = time.monotonic() + 60
    while not (run / "ready").exists():
        assert crash.poll() is None, f"worker exited early: {crash.communicate()}"
        assert time.monotonic() < deadline, "worker never became ready"
        time.sleep(0.02)
    try:
        with pytest.raises(RuntimeError, match=rf"{run / 'ckpt'} is in use by another run "
                           rf"\(pid {crash.pid} on host .*own folder"):
            train(run, [Checkpoint(run / "ckpt")], resume=True)
        assert (run / "ckpt" / ".ckpt.lock").exists()  # the refused run left the lock alone
    finally:
        os.kill(crash.pid, signal.SIGKILL)
        crash.communicate(timeout=60)
    # the killed run's lock is stale (its pid is gone): a new run takes it over and resumes
    _, _, res = train(run, [Checkpoint(run / "ckpt", every_n_iters=5, keep=2)], resume=True)
    assert res.state.iteration == 45 and not (run / "ckpt" / ".ckpt.lock").exists()


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoints(tmp_path, monkeypatch):
    ck = tmp_path / "ckpt"
    real_save = torch.save
    calls = []

    def full_disk_save(obj, f, *a, **k):
        if not isinstance(f, io.BytesIO):  # the file write (the content is serialized first)
            calls.append(1)
            if len(calls) == 2:
                f.write(b"PK\x03\x04 part of it")
                try:
                    raise OSError(errno.ENOSPC, "No space left on device")
                except OSError as e:  # what torch raises: the errno only in the cause
                    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected "
                                       "pos 64 vs 0") from e
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr("minifast.saving.torch.save", full_disk_save)
    with pytest.raises(OSError, match=r"cannot write .*ckpt-00000010\.pt: no space left on device "
                       r"\(\d+\.\d MiB free in .*ckpt\)") as e:
        train(tmp_path, [Checkpoint(ck, every_n_iters=5)], n_epochs=1)
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in ck.iterdir()) == ["ckpt-00000005.pt"]  # no temp file, no lock
    assert load_checkpoint(ck / "ckpt-00000005.pt")["state"]["iteration"] == 5


def test_an_unwritable_folder_is_found_before_training(tmp_path):
    # Tests run as root here, for whom chmod does not stop a write: a folder under a regular
    # file cannot be created by anyone.
    (tmp_path / "afile").write_text("not a folder")

    class Count(Callback):
        n = 0

        def on_batch_end(self, loss):
            Count.n += 1

    with pytest.raises(OSError, match=r"Checkpoint: cannot write checkpoints to .*afile/ckpt.*"
                       r"writable folder"):
        train(tmp_path, [Count(), Checkpoint(tmp_path / "afile" / "ckpt")], n_epochs=1)
    assert Count.n == 0
