"""fastai v0.7's callback contract (`on_batch_end` gets the debiased smoothed loss, `learn.sched`
reads like its LossRecorder) and LR changes made by callbacks, which schedules keep."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyDot, make_ratings
from resume_worker import N_BATCHES, InterruptAfterBatch, assert_same_run, result, train

import minifast as mf
from minifast.callbacks.schedules import CosAnneal


def learner(tmp_path, bs=32):
    cats, y = make_ratings()
    torch.manual_seed(0)
    md = mf.ColumnarModelData.from_arrays(tmp_path, mf.get_cv_idxs(len(y)), cats, y, bs=bs, seed=1)
    return mf.Learner(md, TinyDot())


class V07Recorder(mf.Callback):
    """A callback ported from fastai v0.7: it keeps what on_batch_end is given."""

    def __init__(self):
        self.got, self.raw = [], []

    def on_batch_end(self, loss):
        self.got.append(loss)
        self.raw.append(self.state.loss)


def test_on_batch_end_receives_the_debiased_smoothed_loss(tmp_path):
    learn, cb = learner(tmp_path), V07Recorder()
    learn.fit(1e-2, 2, callbacks=[cb], verbose=False)
    avg, mom = 0.0, 0.98
    for i, (got, raw) in enumerate(zip(cb.got, cb.raw, strict=True), start=1):
        avg = avg * mom + raw * (1 - mom)
        assert math.isclose(got, avg / (1 - mom**i), rel_tol=1e-12)
    assert cb.raw == learn.recorder.losses and cb.got == learn.recorder.smooth_losses
    assert cb.got[0] == cb.raw[0] and cb.got[5] != cb.raw[5]


def test_learn_sched_reads_like_v07s_loss_recorder(tmp_path):
    learn = learner(tmp_path)
    learn.fit(1e-2, 1, cycle_len=2, verbose=False)
    n = 2 * len(learn.data.trn_dl)
    sched = learn.sched
    assert sched.iterations == list(range(1, n + 1))
    assert len(sched.lrs) == len(sched.losses) == n and sched.base_lrs == [1e-2]
    assert sched.lrs == learn.recorder.lrs and sched.losses == learn.recorder.smooth_losses
    assert 0.9e-2 < max(sched.lrs) <= 1e-2 and min(sched.lrs) < 1e-3  # the SGDR curve
    assert mf.CosAnneal(10, lrs=1e-2).lrs == []  # before any fit: nothing recorded yet


class SetLRAtEpochEnd(mf.Callback):
    def __init__(self, epoch, lr=None, factor=None):
        self.epoch, self.lr, self.factor = epoch, lr, factor

    def on_epoch_end(self, vals):
        if self.state.epoch == self.epoch:
            old = mf.get_lrs(self.state.opt)
            mf.set_lrs(self.state.opt, self.lr if self.lr is not None else
                       [lr * self.factor for lr in old])


def test_a_callbacks_lr_change_is_kept_at_a_constant_lr(tmp_path):
    learn = learner(tmp_path)
    learn.fit(1e-2, 3, callbacks=[SetLRAtEpochEnd(0, lr=1e-3)], verbose=False)
    nb = len(learn.data.trn_dl)
    lrs = learn.sched.lrs
    assert lrs[:nb] == [1e-2] * nb
    assert lrs[nb:] == pytest.approx([1e-3] * 2 * nb)


def test_a_callbacks_lr_change_scales_the_schedule(tmp_path):
    plain, halved = learner(tmp_path), learner(tmp_path)
    plain.fit(1e-2, 1, cycle_len=3, verbose=False)
    halved.fit(1e-2, 1, cycle_len=3, callbacks=[SetLRAtEpochEnd(0, factor=0.5)], verbose=False)
    nb = len(plain.data.trn_dl)
    assert halved.sched.lrs[:nb] == plain.sched.lrs[:nb]
    assert halved.sched.lrs[nb:] == pytest.approx([lr / 2 for lr in plain.sched.lrs[nb:]])
    assert halved.sched.scale == pytest.approx([0.5])


class HalveThisBatch(mf.Callback):
    """Changes the LR in on_batch_begin, after the schedule: for that batch only."""

    def on_batch_begin(self):
        mf.set_lrs(self.state.opt, [lr / 2 for lr in mf.get_lrs(self.state.opt)])


def test_a_change_made_in_on_batch_begin_lasts_one_batch_and_does_not_compound(tmp_path):
    plain, halved = learner(tmp_path), learner(tmp_path)
    plain.fit(1e-2, 1, cycle_len=2, verbose=False)
    halved.fit(1e-2, 1, cycle_len=2, callbacks=[HalveThisBatch()], verbose=False)
    assert halved.sched.lrs == pytest.approx([lr / 2 for lr in plain.sched.lrs])
    assert halved.sched.scale == [1.0]


class ScriptedVals(mf.Callback):
    order = -5

    def __init__(self, seq):
        self.seq = seq

    def on_validate_end(self, vals):
        vals[0] = self.seq[self.state.epoch]


def test_reduce_lr_on_plateau_under_learner_fit_with_sgdr(tmp_path, capsys):
    plain, reduced = learner(tmp_path), learner(tmp_path)
    seq = [1.0, 0.9, 0.95, 0.96, 0.8, 0.81]
    plain.fit(1e-2, 3, cycle_len=2, callbacks=[ScriptedVals(seq)], verbose=False)
    plateau = mf.ReduceLROnPlateau(patience=2, factor=0.1)
    reduced.fit(1e-2, 3, cycle_len=2, callbacks=[ScriptedVals(seq), plateau], verbose=False)
    nb = len(plain.data.trn_dl)
    # epochs 2 and 3 do not improve on 0.9: the LR drops after epoch 3, for epochs 4 and 5
    assert [e for e, _, _ in plateau.reductions] == [3]
    assert reduced.sched.lrs[:4 * nb] == plain.sched.lrs[:4 * nb]
    assert reduced.sched.lrs[4 * nb:] == pytest.approx([lr / 10 for lr in plain.sched.lrs[4 * nb:]])
    assert "ReduceLROnPlateau: val_loss has not improved for 2 epoch(s); lr" in capsys.readouterr().out


def test_reduce_lr_on_plateau_respects_min_lr_and_works_in_plain_fit(tiny_model, tiny_data):
    opt = torch.optim.SGD(tiny_model.parameters(), 1e-2)
    plateau = mf.ReduceLROnPlateau(patience=1, factor=0.1, min_lr=5e-4, verbose=False)
    mf.fit(tiny_model, tiny_data, 4, opt, F.mse_loss, callbacks=[ScriptedVals([1, 2, 3, 4]), plateau],
           verbose=False)
    assert [new[0] for _, _, new in plateau.reductions] == pytest.approx([1e-3, 5e-4, 5e-4])
    assert mf.get_lrs(opt) == pytest.approx([5e-4])


@pytest.mark.parametrize("bad, match", [
    (dict(factor=1.5), "factor must be in"),
    (dict(patience=0), "patience must be a positive integer"),
    (dict(mode="up"), "mode must be"),
])
def test_reduce_lr_on_plateau_refuses_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        mf.ReduceLROnPlateau(**bad)


@pytest.mark.parametrize("at", [23, 38])
def test_reduce_lr_on_plateau_with_a_schedule_resumes_exactly(tmp_path, at):
    # min_delta=10: only the first epoch improves, so with patience 1 the LR drops at the end
    # of epochs 1 and 2; interrupted before the first drop (23) and after it (38)
    def cbs():
        return [CosAnneal(N_BATCHES, lrs=2e-2),
                mf.ReduceLROnPlateau(patience=1, min_delta=10, factor=0.5, verbose=False)]

    model, opt, res = train(tmp_path / "full", cbs(), n_epochs=4, jitter=False)
    full = result(model, opt, res.recorder, res.history)
    ck = tmp_path / "run" / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", [*cbs(), mf.Checkpoint(ck, every_n_iters=5), InterruptAfterBatch(at)],
              n_epochs=4, jitter=False)
    model, opt, res = train(tmp_path / "run", [*cbs(), mf.Checkpoint(ck, every_n_iters=5)],
                            resume=True, n_epochs=4, jitter=False)
    assert_same_run(full, result(model, opt, res.recorder, res.history))
    assert res.recorder.lrs[-1] == pytest.approx(full["recorder"]["lrs"][-1])
    assert min(res.recorder.lrs[3 * N_BATCHES:]) < 0.25 * 2e-2 * 0.5  # two drops composed
