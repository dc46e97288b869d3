"""LR schedules: every iteration against fastai v0.7's own (stateful) code and the closed form,
lesson 5's SGDR numbers, purity (resume), momentum cycling, the LR finder's ramp and stop."""

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import minifast as mf
from minifast.callbacks.schedules import CircularLR, ConstantLR, CosAnneal, LR_Finder, OneCycle
from minifast.curves import cycle_position, lr_suggestion, one_cycle_mom, one_cycle_mult, sum_geom

# ------------------------------------------------------------------------------------------
# fastai v0.7's sgdr.py, ported verbatim (stateful counters; calc_lr is called once per batch,
# first in on_train_begin for batch 0, then after each batch for the next one).


class V07CosAnneal:
    def __init__(self, nb, cycle_mult=1):
        self.nb, self.cycle_mult, self.iteration, self.cycle_iter = nb, cycle_mult, 0, 0

    def calc_lr(self, init_lrs):
        if self.iteration < self.nb / 20:
            self.cycle_iter += 1
            return init_lrs / 100.0
        cos_out = np.cos(np.pi * (self.cycle_iter) / self.nb) + 1
        self.cycle_iter += 1
        if self.cycle_iter == self.nb:
            self.cycle_iter = 0
            self.nb *= self.cycle_mult
        return init_lrs / 2 * cos_out


class V07CircularLR:
    def __init__(self, nb, div=4, cut_div=8):
        self.nb, self.div, self.cut_div, self.iteration, self.cycle_iter = nb, div, cut_div, 0, 0

    def calc_lr(self, init_lrs):
        cut_pt = self.nb // self.cut_div
        if self.cycle_iter > cut_pt:
            pct = 1 - (self.cycle_iter - cut_pt) / (self.nb - cut_pt)
        else:
            pct = self.cycle_iter / cut_pt
        res = init_lrs * (1 + pct * (self.div - 1)) / self.div
        self.cycle_iter += 1
        if self.cycle_iter == self.nb:
            self.cycle_iter = 0
        return res


class V07CircularLR_beta:
    def __init__(self, nb, div=10, pct=10):
        self.nb, self.div, self.pct, self.iteration, self.cycle_iter = nb, div, pct, 0, 0
        self.cycle_nb = int(nb * (1 - pct / 100) / 2)

    def calc_lr(self, init_lrs):
        if self.cycle_iter > 2 * self.cycle_nb:
            pct = (self.cycle_iter - 2 * self.cycle_nb) / (self.nb - 2 * self.cycle_nb)
            res = init_lrs * (1 + (pct * (1 - 100) / 100)) / self.div
        elif self.cycle_iter > self.cycle_nb:
            pct = 1 - (self.cycle_iter - self.cycle_nb) / self.cycle_nb
            res = init_lrs * (1 + pct * (self.div - 1)) / self.div
        else:
            pct = self.cycle_iter / self.cycle_nb
            res = init_lrs * (1 + pct * (self.div - 1)) / self.div
        self.cycle_iter += 1
        if self.cycle_iter == self.nb:
            self.cycle_iter = 0
        return res


def v07_curve(ref, n_iters, lr=1.0):
    out = []
    for _ in range(n_iters):
        out.append(float(ref.calc_lr(np.array(lr))))
        ref.iteration += 1
    return out


@pytest.mark.parametrize("nb,cycle_mult,n_cycle", [(20, 1, 3), (37, 2, 3), (100, 3, 2), (41, 1, 1),
                                                   (1251, 2, 2)])
def test_cos_anneal_matches_fastai_v07_every_iteration(nb, cycle_mult, n_cycle):
    n = nb * sum_geom(1, cycle_mult, n_cycle)
    ref = v07_curve(V07CosAnneal(nb, cycle_mult), n, lr=0.3)
    sched = CosAnneal(nb, cycle_mult, lrs=0.3)
    ours = [sched.lr_at(t) for t in range(n)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("nb,cycle_mult,n_cycle", [(20, 1, 3), (37, 2, 3), (100, 3, 2)])
def test_cos_anneal_closed_form(nb, cycle_mult, n_cycle):
    lr, t, start, length = 0.1, 0, 0, nb
    for k in range(n_cycle):
        for t_c in range(length):
            expected = lr / 100 if t < nb / 20 else lr / 2 * (1 + math.cos(math.pi * t_c / length))
            assert CosAnneal(nb, cycle_mult, lrs=lr).lr_at(t) == pytest.approx(expected, rel=1e-12)
            assert cycle_position(t, nb, cycle_mult) == (k, t_c, length)
            t += 1
        start += length
        length *= cycle_mult


@pytest.mark.parametrize("nb,div,cut_div", [(40, 4, 8), (123, 10, 3), (16, 2, 4)])
def test_circular_lr_matches_fastai_v07(nb, div, cut_div):
    ref = v07_curve(V07CircularLR(nb, div, cut_div), 3 * nb, lr=0.5)
    sched = CircularLR(nb, div, cut_div, lrs=0.5)
    np.testing.assert_allclose([sched.lr_at(t) for t in range(3 * nb)], ref, rtol=1e-12)


@pytest.mark.parametrize("nb,div,pct", [(100, 10, 10), (257, 25, 13), (50, 5, 0)])
def test_one_cycle_matches_fastai_v07(nb, div, pct):
    ref = v07_curve(V07CircularLR_beta(nb, div, pct), 2 * nb, lr=0.02)
    sched = OneCycle(nb, div, pct, lrs=0.02)
    np.testing.assert_allclose([sched.lr_at(t) for t in range(2 * nb)], ref, rtol=1e-12)


def test_one_cycle_shape_and_momentum_opposite():
    nb, div, pct, moms = 200, 10, 10, (0.95, 0.85)
    c = int(nb * (1 - pct / 100) / 2)  # 90
    lrs = [one_cycle_mult(t, nb, div, pct) for t in range(nb)]
    mom = [one_cycle_mom(t, nb, moms, pct) for t in range(nb)]
    assert lrs[0] == pytest.approx(1 / div) and mom[0] == pytest.approx(0.95)
    assert lrs[c] == pytest.approx(1.0) and mom[c] == pytest.approx(0.85)  # LR peak, mom low
    assert lrs[2 * c] == pytest.approx(1 / div) and mom[2 * c] == pytest.approx(0.95)
    assert lrs[-1] == pytest.approx(1 / div * (1 - 99 / 100 * (nb - 1 - 2 * c) / (nb - 2 * c)))
    assert all(m == 0.95 for m in mom[2 * c + 1:])
    # opposite: wherever the LR rises the momentum falls, and vice versa
    dl, dm = np.diff(lrs[: 2 * c + 1]), np.diff(mom[: 2 * c + 1])
    assert np.all(dl * dm < 0)


def test_circular_lr_momentum_opposite():
    sched = CircularLR(80, 4, 8, moms=(0.95, 0.8), lrs=1.0)
    lr = np.array([sched.lr_at(t) for t in range(80)])
    mom = np.array([sched.mom_at(t) for t in range(80)])
    assert mom[0] == pytest.approx(0.95) and mom[10] == pytest.approx(0.8)
    assert np.argmax(lr) == np.argmin(mom) == 10
    assert np.all(np.diff(lr) * np.diff(mom) < 0)


def test_lesson5_sgdr_numbers():
    """fit(1e-2, 2, cycle_len=1, cycle_mult=2) on 80,004 rows at bs=64."""
    nb = math.ceil(80_004 / 64)
    assert nb == 1251
    assert sum_geom(1, 2, 2) == 3 and nb * 3 == 3753
    sched = CosAnneal(nb, 2, lrs=1e-2)
    lrs = [sched.lr_at(t) for t in range(3753)]
    assert sum(lr == pytest.approx(1e-4) for lr in lrs) == 63  # 0..62 < 1251/20 = 62.55
    assert lrs[62] == pytest.approx(1e-4) and lrs[63] > 9.9e-3
    assert lrs[63] == pytest.approx(1e-2 / 2 * (1 + math.cos(math.pi * 63 / 1251)))
    assert lrs[625] == pytest.approx(1e-2 / 2 * (1 + math.cos(math.pi * 625 / 1251)))
    assert lrs[1250] == pytest.approx(1e-2 / 2 * (1 + math.cos(math.pi * 1250 / 1251)))
    assert lrs[1251] == 1e-2  # the restart
    assert lrs[3752] == pytest.approx(1e-2 / 2 * (1 + math.cos(math.pi * 2501 / 2502)))
    assert lrs[3752] < 1e-8
    assert sched.cycle_ended(1251) == 0 and sched.cycle_ended(3753) == 1
    assert sched.cycle_ended(1250) is None and sched.cycle_ended(1252) is None


def test_schedules_are_pure_functions_of_the_iteration():
    scheds = [CosAnneal(30, 2, lrs=[0.1, 0.2]), CircularLR(30, moms=(0.9, 0.8), lrs=0.1),
              OneCycle(30, moms=(0.95, 0.85), lrs=0.1), LR_Finder(30, 10, lrs=1e-4), ConstantLR(3e-3)]
    order = list(range(90))
    shuffled = order[:]
    random.Random(0).shuffle(shuffled)
    for s in scheds:
        seq = {t: (s.lr_at(t), s.mom_at(t)) for t in order}
        assert {t: (s.lr_at(t), s.mom_at(t)) for t in shuffled} == seq


def test_callback_sets_lr_from_state_iteration_as_after_a_resume():
    """A resumed run's state.iteration is restored: the callback continues on the same curve."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5, momentum=0.9)
    sched = OneCycle(50, moms=(0.95, 0.85), lrs=0.5)
    sched.state = SimpleNamespace(opt=opt, iteration=37, stepper=None, n_batches=50)
    sched.on_train_begin()
    sched.on_batch_begin()
    assert opt.param_groups[0]["lr"] == sched.lr_at(37) != sched.lr_at(0)
    assert opt.param_groups[0]["momentum"] == sched.mom_at(37)


def test_lr_finder_ramp():
    f = LR_Finder(100, end_lr=10, lrs=1e-5)
    lrs = [f.lr_at(t) for t in range(100)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(10)
    np.testing.assert_allclose(lrs, 1e-5 * (1e6 ** (np.arange(100) / 99)), rtol=1e-12)
    lin = LR_Finder(11, end_lr=1.0, lrs=0.1, linear=True)
    np.testing.assert_allclose([lin.lr_at(t) for t in range(11)], np.linspace(0.1, 1.0, 11))
    groups = LR_Finder(10, end_lr=1.0, lrs=[1e-4, 1e-3])  # one multiplier, set by the last group
    assert groups.lr_at(9) == pytest.approx([1e-1, 1.0])


def test_lr_suggestion_is_steepest_descent_before_the_minimum():
    lrs = np.logspace(-5, 1, 200)
    x = np.log10(lrs)
    loss = 2 - np.tanh(2 * (x + 2)) + np.where(x > 0, 20 * x**2, 0)  # steepest fall at 1e-2
    assert lr_suggestion(lrs, loss) == pytest.approx(1e-2, rel=0.1)
    assert lr_suggestion([1e-3], [1.0]) is None
    assert lr_suggestion(lrs[:5], loss[:5]) is not None  # too short to skip: relaxed


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="cycle_mult must be >= 1"):
        CosAnneal(10, 0.5)
    with pytest.raises(ValueError, match="whole number"):
        CosAnneal(10, 1.5)
    with pytest.raises(ValueError, match="positive integer"):
        CosAnneal(0)
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        ConstantLR(-1e-3)
    with pytest.raises(ValueError, match="percentage"):
        OneCycle(10, pct=150)
    with pytest.raises(ValueError, match="max_mom, min_mom"):
        OneCycle(10, moms=(0.95,))


# ------------------------------------------------------------------------------------------
# The callbacks in real fits


def _data(n=320, bs=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x.sum(1, keepdim=True)
    return mf.ModelData("/tmp", mf.ArrayLoader(x, y, batch_size=bs, shuffle=True, seed=seed),
                        mf.ArrayLoader(x[:64], y[:64], batch_size=64))


@pytest.mark.parametrize("make", [
    lambda nb: CosAnneal(nb, 2, lrs=0.05),
    lambda nb: CircularLR(nb, 4, 8, moms=(0.95, 0.85), lrs=0.05),
    lambda nb: OneCycle(nb, 10, 10, moms=(0.95, 0.85), lrs=0.05),
])
@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_fit_applies_schedule_at_every_iteration(make, opt_cls):
    data = _data()
    nb = len(data.trn_dl)
    model = nn.Linear(3, 1)
    opt = opt_cls(model.parameters(), lr=1.0, **({"momentum": 0.9} if opt_cls is torch.optim.SGD else {}))
    sched = make(nb)
    res = mf.fit(model, data, 3, opt, nn.functional.mse_loss, callbacks=[sched], verbose=False)
    rec = res.recorder
    assert rec.iterations == list(range(1, 3 * nb + 1))
    assert rec.lrs == [sched.lr_at(t) for t in range(3 * nb)]
    if sched.mom_at(0) is not None:
        assert rec.moms == [sched.mom_at(t) for t in range(3 * nb)]
    assert sched.recorder is rec


def test_on_cycle_end_called_after_each_cycle():
    data = _data()
    nb = len(data.trn_dl)
    seen = []
    sched = CosAnneal(nb, 2, lrs=0.01, on_cycle_end=lambda s, k: seen.append((k, s.state.iteration)))
    mf.fit(nn.Linear(3, 1), data, 3, torch.optim.SGD(nn.Linear(3, 1).parameters(), 0.1),
           nn.functional.mse_loss, callbacks=[sched], verbose=False)
    assert seen == [(0, nb), (1, 3 * nb)]


def test_default_cycle_is_one_epoch_and_lrs_default_to_the_optimiser():
    data = _data()
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    sched = CosAnneal(None)
    res = mf.fit(model, data, 2, opt, nn.functional.mse_loss, callbacks=[sched], verbose=False)
    assert sched.nb == len(data.trn_dl) and sched.base_lrs == [0.02]
    assert res.recorder.lrs[len(data.trn_dl)] == pytest.approx(0.02)  # restart at epoch 2


def test_cyclic_schedules_lengthen_cycles_by_cycle_mult():
    nb = 24
    for make in (lambda n, m: CircularLR(n, 4, 8, cycle_mult=m, lrs=1.0),
                 lambda n, m: OneCycle(n, 10, 10, cycle_mult=m, lrs=1.0)):
        grown, single = make(nb, 2), make(2 * nb, 1)
        assert [grown.lr_at(t) for t in range(nb)] == [make(nb, 1).lr_at(t) for t in range(nb)]
        assert [grown.lr_at(nb + t) for t in range(2 * nb)] == [single.lr_at(t) for t in range(2 * nb)]
        assert grown.cycle_ended(nb) == 0 and grown.cycle_ended(3 * nb) == 1


def test_cycle_len_counts_the_batches_fit_actually_runs():
    """Under DDP fit shards the loader before on_train_begin: nb follows state.n_batches."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = CosAnneal(100, 2, lrs=0.5, cycle_len=2)  # 100: provisional, the unsharded count
    sched.state = SimpleNamespace(opt=opt, iteration=0, stepper=None, n_batches=7)
    sched.on_train_begin()
    assert sched.nb == 14 and sched.cycle_ended(14) == 0
