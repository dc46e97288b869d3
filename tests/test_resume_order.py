"""Mid-epoch resume with torch DataLoaders: the epoch's order is replayed exactly, and a
loader whose order cannot be replayed refuses mid-epoch checkpoints instead of diverging."""

import os
import signal
import time

import numpy as np
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
from torch.utils.data import DataLoader, IterableDataset, Sampler

from minifast import Callback, Checkpoint, find_checkpoints, load_checkpoint


def _full(tmp_path, loader):
    model, opt, res = train(tmp_path / "full", loader=loader)
    return result(model, opt, res.recorder, res.history)


def _resumed(tmp_path, resume, loader, callbacks=()):
    model, opt, res = train(tmp_path / "run", list(callbacks), resume=resume, loader=loader)
    return result(model, opt, res.recorder, res.history)


@pytest.mark.parametrize("loader", ["torch", "torchgen"])
def test_torch_dataloader_resumes_mid_epoch_bit_identically(tmp_path, loader):
    full = _full(tmp_path, loader)
    ck = tmp_path / "run" / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", [Checkpoint(ck, every_n_iters=5, keep=None),
                                 InterruptAfterBatch(38)], loader=loader)
    # mid-epoch (epoch 1 and 2), at the end of epoch 0, and where the interrupt struck
    for name in ("ckpt-00000020.pt", "ckpt-00000015.pt", "ckpt-00000035.pt", "ckpt-00000038.pt"):
        assert_same_run(full, _resumed(tmp_path, ck / name, loader))
    assert load_checkpoint(ck / "ckpt-00000020.pt")["state"]["epoch_rng"] is not None


def test_without_the_epochs_rng_state_the_order_differs(tmp_path):
    """The proof above can fail: a checkpoint without the epoch's starting RNG state (as
    format 1 wrote) resumes into another permutation, and says so."""
    full = _full(tmp_path, "torch")
    ck = tmp_path / "run" / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", [Checkpoint(ck, every_n_iters=5), InterruptAfterBatch(23)],
              loader="torch")
    sd = load_checkpoint(ck / "ckpt-00000020.pt")
    del sd["state"]["epoch_rng"]
    torch.save(sd, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="may come in another order"):
        resumed = _resumed(tmp_path, tmp_path / "old.pt", "torch")
    with pytest.raises(AssertionError):
        assert_same_run(full, resumed)


def test_a_loader_generator_is_checkpointed_for_epoch_end_resumes(tmp_path):
    """A DataLoader's own generator advances every epoch: an epoch-end resume needs its state."""
    full = _full(tmp_path, "torchgen")
    ck = tmp_path / "run" / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", [Checkpoint(ck), InterruptAfterBatch(20)], loader="torchgen")
    sd = load_checkpoint(ck / "ckpt-00000015.pt")
    assert len(sd["loader"]["generators"]) == 1
    assert_same_run(full, _resumed(tmp_path, ck / "ckpt-00000015.pt", "torchgen"))


def test_sigkill_mid_epoch_with_a_torch_dataloader_then_resume_is_bit_identical(tmp_path):
    full = start("full:torch", tmp_path / "full")
    crash = start("crash:torch", tmp_path / "run")
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / "ready").exists():
        assert crash.poll() is None, f"worker exited early: {crash.communicate()}"
        assert time.monotonic() < deadline, "worker never became ready"
        time.sleep(0.02)
    os.kill(crash.pid, signal.SIGKILL)
    crash.communicate(timeout=60)
    assert crash.returncode == -signal.SIGKILL
    ck = tmp_path / "run" / "ckpt"
    assert find_checkpoints(ck)[0].name == "ckpt-00000020.pt"
    resumed = start("resume:torch", tmp_path / "run")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    _, err = full.communicate(timeout=120)
    assert full.returncode == 0, err
    a, b = torch.load(tmp_path / "full" / "result.pt"), torch.load(tmp_path / "run" / "result.pt")
    assert_same_run(a, b)
    assert len(b["recorder"]["losses"]) == N_EPOCHS * N_BATCHES


# --------------------------------------------------------------------------------------------
# loaders whose order cannot be replayed


class Stream(IterableDataset):
    def __init__(self, ds):
        self.ds = ds

    def __iter__(self):
        for i in torch.randperm(len(self.ds)).tolist():
            yield self.ds[i]

    def __len__(self):
        return len(self.ds)


class OddSampler(Sampler):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(np.random.permutation(self.n).tolist())

    def __len__(self):
        return self.n


class SwapLoader(Callback):
    """Replaces the training loader by one whose order cannot be replayed."""

    order = -100  # before Checkpoint's on_train_begin

    def __init__(self, kind):
        self.kind = kind

    def on_train_begin(self):
        data = self.state.data
        ds = data.trn_dl.dataset
        data.trn_dl = (DataLoader(Stream(ds), batch_size=16) if self.kind == "iterable"
                       else DataLoader(ds, batch_size=16, sampler=OddSampler(len(ds))))


class Count(Callback):
    def __init__(self):
        self.n = 0

    def on_batch_end(self, loss):
        self.n += 1


@pytest.mark.parametrize("kind, why", [("iterable", "IterableDataset"),
                                       ("sampler", "sampler is a OddSampler")])
def test_unreplayable_loader_refuses_mid_epoch_checkpoints(tmp_path, kind, why):
    c = Count()
    with pytest.raises(ValueError, match=rf"every_n_iters=5.*{why}.*every_n_iters=None"):
        train(tmp_path, [SwapLoader(kind), c, Checkpoint(tmp_path / "ckpt", every_n_iters=5)],
              loader="torch", n_epochs=1)
    assert c.n == 0  # refused before training, not after
    # epoch-end checkpoints are fine
    train(tmp_path, [SwapLoader(kind), Checkpoint(tmp_path / "ckpt")], loader="torch", n_epochs=1)
    assert [p.name for p in find_checkpoints(tmp_path / "ckpt")] == ["ckpt-00000015.pt"]


def test_ctrl_c_mid_epoch_with_an_unreplayable_loader_says_why(tmp_path, capsys):
    ck = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, [SwapLoader("iterable"), Checkpoint(ck), InterruptAfterBatch(20)],
              loader="torch")
    err = capsys.readouterr().err
    assert "could not write a checkpoint on interrupt" in err and "IterableDataset" in err
    assert f'resume from the last one with fit(..., resume="{ck}/ckpt-00000015.pt")' in err
    assert [p.name for p in find_checkpoints(ck)] == ["ckpt-00000015.pt"]
