"""Learner: epoch counts, schedules in fit, input checks, layer groups, weight decay, clipping,
lr_find (exact restore), predict, save/load, plots."""

import copy
import math
import sys

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minifast as mf
from minifast.curves import sgdr_mult

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_data(path, n=256, bs=32, n_in=3, seed=0, test=False, int_y=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    y = x @ torch.arange(1.0, n_in + 1)[:, None] + 0.1 * torch.randn(n, 1, generator=g)
    if int_y:
        y = (y[:, 0] > 0).long()
    n_val = n // 4
    trn = mf.ArrayLoader(x[n_val:], y[n_val:], batch_size=bs, shuffle=True, seed=seed)
    val = mf.ArrayLoader(x[:n_val], y[:n_val], batch_size=2 * bs)
    tst = mf.ArrayLoader(x[:10], y[:10], batch_size=4) if test else None
    return mf.ModelData(path, trn, val, tst)


def mlp(n_in=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, 1))


class TwoGroups(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def layer_groups(self):
        return [self.body, [self.head.weight, self.head.bias]]


class FakeStepper(mf.Stepper):
    """No forward/backward: only the loop, the callbacks and the schedule run."""

    def step(self, xs, y, epoch=None):
        return 0.5

    def evaluate(self, xs, y):
        return torch.zeros(len(y), 1), torch.tensor(0.5)


def state_of(learn):
    return ({k: v.clone() for k, v in learn.model.state_dict().items()},
            copy.deepcopy(learn.opt.state_dict()))


def assert_same_state(a, b):
    (ma, oa), (mb, ob) = a, b
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        assert oa["state"][i].keys() == ob["state"][i].keys()
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), (i, k)


# ------------------------------------------------------------------------------ fit


@pytest.mark.parametrize("n_cycle,cycle_len,cycle_mult,epochs", [
    (2, 1, 2, 3), (3, 1, 2, 7), (2, 2, 1, 4), (2, 1, 3, 4), (3, None, 1, 3), (1, 3, 1, 3)])
def test_epoch_count(tmp_path, n_cycle, cycle_len, cycle_mult, epochs):
    learn = mf.Learner(make_data(tmp_path), mlp())
    res = learn.fit(1e-2, n_cycle, cycle_len=cycle_len, cycle_mult=cycle_mult, verbose=False,
                    stepper=FakeStepper)
    assert len(res.history) == epochs
    assert len(learn.recorder.lrs) == epochs * len(learn.data.trn_dl)


def test_cycle_mult_without_cycle_len_is_ignored_with_a_warning(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    with pytest.warns(UserWarning, match="cycle_mult=2 is ignored without cycle_len"):
        res = learn.fit(1e-2, 2, cycle_mult=2, verbose=False)
    assert len(res.history) == 2
    assert set(learn.recorder.lrs) == {1e-2}
    assert isinstance(learn.sched, mf.ConstantLR)


def test_lesson5_sgdr_on_a_1251_batch_loader(tmp_path):
    """80,004 training rows at bs=64: fit(1e-2, 2, cycle_len=1, cycle_mult=2) through the
    Learner and the real loop (a no-op stepper keeps it fast)."""
    z = torch.zeros(80_004, 1)
    data = mf.ModelData(tmp_path, mf.ArrayLoader(z, z, batch_size=64, shuffle=True, seed=0),
                        mf.ArrayLoader(z[:64], z[:64], batch_size=64))
    assert len(data.trn_dl) == 1251
    learn = mf.Learner(data, nn.Linear(1, 1))
    res = learn.fit(1e-2, 2, cycle_len=1, cycle_mult=2, stepper=FakeStepper, verbose=False)
    lrs = learn.recorder.lrs
    assert len(res.history) == 3 and len(lrs) == 3753
    assert lrs[:63] == [1e-4] * 63 and lrs[63] > 9.9e-3
    expect = {625: 1e-2 / 2 * (1 + math.cos(math.pi * 625 / 1251)),
              1250: 1e-2 / 2 * (1 + math.cos(math.pi * 1250 / 1251)), 1251: 1e-2,
              3752: 1e-2 / 2 * (1 + math.cos(math.pi * 2501 / 2502))}
    for t, v in expect.items():
        assert lrs[t] == pytest.approx(v, rel=1e-12), t
    assert lrs == [learn.sched.lr_at(t)[0] for t in range(3753)]


def test_real_fit_sets_the_sgdr_lrs(tmp_path):
    learn = mf.Learner(make_data(tmp_path, n=1280, bs=24), mlp())
    nb = len(learn.data.trn_dl)
    assert nb == 40
    learn.fit(0.05, 2, cycle_len=1, cycle_mult=2, verbose=False)
    lrs = learn.recorder.lrs
    assert lrs == [0.05 * sgdr_mult(t, nb, 2) for t in range(3 * nb)]
    assert lrs.count(0.05 / 100) == 2  # iterations 0, 1 < 40/20
    assert lrs[nb] == 0.05 and learn.opt.param_groups[0]["lr"] == lrs[-1]


def test_one_cycle_cycles_momentum_and_gives_it_back(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    learn.fit(1e-2, 1, cycle_len=2, use_clr_beta=(10, 10, 0.95, 0.85), verbose=False)
    moms = learn.recorder.moms
    assert max(moms) == pytest.approx(0.95) and min(moms) == pytest.approx(0.85)
    assert moms == [learn.sched.mom_at(t) for t in range(len(moms))]
    assert learn.opt.param_groups[0]["betas"] == (0.9, 0.999)
    learn.fit(1e-2, 1, cycle_len=1, use_clr=(10, 4), verbose=False)
    assert isinstance(learn.sched, mf.CircularLR) and set(learn.recorder.moms) == {0.9}


@pytest.mark.parametrize("kwargs,match", [
    (dict(lrs=1e-2, n_cycle=2, cycle_len=1, cycle_mult=0.5), "cycle_mult must be >= 1"),
    (dict(lrs=-1e-2, n_cycle=1), "lrs must be finite and >= 0"),
    (dict(lrs=float("nan"), n_cycle=1), "lrs must be finite"),
    (dict(lrs=1e-2, n_cycle=1, wds=-1e-4), "wds must be finite and >= 0"),
    (dict(lrs=[1e-3, 1e-2], n_cycle=1), r"lrs has 2 values .* 1 layer group"),
    (dict(lrs=1e-2, n_cycle=1, wds=[1e-4, 1e-4]), r"wds has 2 values"),
    (dict(lrs=1e-2, n_cycle=0), "n_cycle must be a positive integer"),
    (dict(lrs=1e-2, n_cycle=1.5), "n_cycle must be a positive integer"),
    (dict(lrs=1e-2, n_cycle=1, cycle_len=0), "cycle_len must be a positive integer"),
    (dict(lrs=1e-2, n_cycle=1, metrics=["rmse"]), "metrics must be callables"),
    (dict(lrs=1e-2, n_cycle=1, use_clr=(10, 4)), "use_clr needs cycle_len"),
    (dict(lrs=1e-2, n_cycle=1, cycle_len=1, use_clr=(10,)), r"use_clr must be \(div, cut_div"),
    (dict(lrs=1e-2, n_cycle=1, cycle_len=1, use_clr_beta=(10, 10, 0.9)), "use_clr_beta must be"),
    (dict(lrs=1e-2, n_cycle=1, cycle_len=1, use_clr=(10, 4), use_clr_beta=(10, 10)), "not both"),
    (dict(lrs=1e-2, n_cycle=1, cycle_save_name="c"), "cycle_save_name needs cycle_len"),
])
def test_fit_rejects_bad_arguments_before_training(tmp_path, kwargs, match):
    learn = mf.Learner(make_data(tmp_path), mlp())
    before = state_of(learn)
    with pytest.raises(ValueError, match=match):
        learn.fit(**kwargs, verbose=False)
    assert_same_state(before, state_of(learn))


def test_learner_constructor_checks(tmp_path):
    data = make_data(tmp_path)
    with pytest.raises(ValueError, match="metrics must be callables"):
        mf.Learner(data, mlp(), metrics=[3])
    with pytest.raises(ValueError, match="clip must be"):
        mf.Learner(data, mlp(), clip=-1)
    with pytest.raises(ValueError, match="opt_fn must build the optimiser"):
        mf.Learner(data, mlp(), no_decay=True,  # two groups given, one built
                   opt_fn=lambda groups: torch.optim.SGD([p for g in groups for p in g["params"]], 0.1))


def test_default_crit_from_targets(tmp_path):
    assert mf.Learner(make_data(tmp_path), mlp()).crit is F.mse_loss
    torch.manual_seed(0)
    learn = mf.Learner(make_data(tmp_path, int_y=True), nn.Linear(3, 2))
    assert learn.crit is F.cross_entropy
    learn.fit(1e-2, 1, verbose=False)


def test_metrics_and_callbacks_pass_through(tmp_path):
    def mae(preds, y):
        return (preds - y).abs().mean()

    events = []

    class Probe(mf.Callback):
        def on_epoch_end(self, vals):
            events.append(list(vals))

    learn = mf.Learner(make_data(tmp_path), mlp(), metrics=[mae])
    res = learn.fit(1e-2, 2, callbacks=[Probe()], verbose=False)
    assert "mae" in res.history[0] and len(events) == 2 and len(events[0]) == 2
    res = learn.fit(1e-2, 1, metrics=[], verbose=False)
    assert "mae" not in res.history[0]


# ---------------------------------------------------------------------- layer groups


def test_layer_group_lrs(tmp_path):
    learn = mf.Learner(make_data(tmp_path), TwoGroups())
    assert learn.n_layer_groups == 2 and len(learn.opt.param_groups) == 2
    learn.fit([1e-3, 1e-2], 1, verbose=False)
    assert mf.get_lrs(learn.opt) == [1e-3, 1e-2]
    learn.fit([1e-3, 1e-2], 1, cycle_len=1, verbose=False)
    assert learn.sched.lr_at(100) == pytest.approx([1e-3 * sgdr_mult(100, 6), 1e-2 * sgdr_mult(100, 6)])
    with pytest.raises(ValueError, match="lrs has 3 values"):
        learn.fit([1e-3, 1e-2, 1e-1], 1, verbose=False)


def test_layer_groups_must_cover_each_parameter_once(tmp_path):
    class Missing(TwoGroups):
        def layer_groups(self):
            return [self.body]

    class Twice(TwoGroups):
        def layer_groups(self):
            return [self.body, [self.head, self.body.bias]]

    with pytest.raises(ValueError, match=r"leaves out trainable parameters \['head.weight', 'head.bias'\]"):
        mf.Learner(make_data(tmp_path), Missing())
    with pytest.raises(ValueError, match="'body.bias' is in layer groups 0 and 1"):
        mf.Learner(make_data(tmp_path), Twice())


# ---------------------------------------------------------------------- weight decay


class ZeroGradParam(nn.Module):
    """`b` takes part in the loss with gradient exactly 0: only weight decay moves it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 1)
        self.b = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.lin(x) + 0 * self.b.sum()


def one_batch_data(tmp_path):
    return make_data(tmp_path, n=40, bs=32)  # 30 training rows: one batch


def test_wds_default_is_l2_through_the_optimiser(tmp_path):
    learn = mf.Learner(one_batch_data(tmp_path), ZeroGradParam())
    learn.fit(0.01, 1, wds=0.1, verbose=False)
    g = learn.opt.param_groups[0]
    assert g["weight_decay"] == 0.1 and g["decoupled_wd"] == 0.0
    # Adam's first step on grad = wd*b moves b by lr (the gradient is normalised away)
    torch.testing.assert_close(learn.model.b.detach().cpu(), torch.full((2,), 0.99), rtol=0, atol=1e-6)


def test_use_wd_sched_is_decoupled(tmp_path):
    learn = mf.Learner(one_batch_data(tmp_path), ZeroGradParam())
    learn.fit(0.01, 1, wds=0.1, use_wd_sched=True, verbose=False)
    g = learn.opt.param_groups[0]
    assert g["weight_decay"] == 0.0 and g["decoupled_wd"] == 0.1
    assert torch.equal(learn.model.b.detach().cpu(), torch.full((2,), 1 - 0.01 * 0.1))
    learn.fit(0.01, 1, verbose=False)  # wds=None: back to the optimiser's own (none)
    assert learn.opt.param_groups[0]["weight_decay"] == 0.0
    assert learn.opt.param_groups[0]["decoupled_wd"] == 0.0


def test_wds_none_keeps_opt_fn_weight_decay(tmp_path):
    from functools import partial

    learn = mf.Learner(make_data(tmp_path), mlp(), opt_fn=partial(torch.optim.SGD, weight_decay=1e-3))
    learn.fit(1e-2, 1, verbose=False)
    assert learn.opt.param_groups[0]["weight_decay"] == 1e-3


@pytest.mark.parametrize("no_decay,excluded", [
    (True, {"lin.bias", "b"}),
    (["b"], {"b"}),
    ("lin.*", {"lin.weight", "lin.bias"}),
    (lambda name, p: name == "lin.weight", {"lin.weight"}),
])
def test_no_decay_excludes_parameters(tmp_path, no_decay, excluded):
    learn = mf.Learner(one_batch_data(tmp_path), ZeroGradParam(), no_decay=no_decay)
    names = {id(p): n for n, p in learn.model.named_parameters()}
    learn.fit(0.01, 1, wds=0.1, use_wd_sched=True, verbose=False)
    for g in learn.opt.param_groups:
        group_names = {names[id(p)] for p in g["params"]}
        assert g["decoupled_wd"] == (0.0 if group_names <= excluded else 0.1)
        assert group_names <= excluded or not group_names & excluded
    b = learn.model.b.detach().cpu()
    assert torch.equal(b, torch.ones(2)) if "b" in excluded else torch.equal(b, torch.full((2,), 0.999))
    learn.fit(0.01, 1, wds=0.1, verbose=False)  # L2 too
    assert all(g["weight_decay"] == (0.0 if {names[id(p)] for p in g["params"]} <= excluded else 0.1)
               for g in learn.opt.param_groups)


def test_no_decay_pattern_must_match(tmp_path):
    with pytest.raises(ValueError, match="no_decay pattern 'bais' matches no parameter"):
        mf.Learner(make_data(tmp_path), mlp(), no_decay=["bais"])


# --------------------------------------------------------------------------- clipping


class GradNorms(mf.Callback):
    def __init__(self):
        self.norms = []

    def on_step_begin(self):
        grads = [p.grad for p in self.state.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("clip", [None, 0.1])
def test_clip_clips_the_gradient_norm(tmp_path, clip):
    probe = GradNorms()
    learn = mf.Learner(make_data(tmp_path), mlp(), clip=clip)
    learn.fit(1e-3, 1, callbacks=[probe], verbose=False)
    if clip is None:
        assert max(probe.norms) > 1.0  # so the clipped run below has something to clip
    else:
        assert max(probe.norms) <= clip * (1 + 1e-5)


# ---------------------------------------------------------------------------- lr_find


class DropBN(nn.Module):
    """Dropout (uses the RNG) and batch norm (buffers) to make restoring non-trivial."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("opt_fn", [torch.optim.Adam,
                                    lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9)])
def test_lr_find_restores_model_and_optimiser_exactly(tmp_path, opt_fn):
    learn = mf.Learner(make_data(tmp_path, n=800), DropBN(), opt_fn=opt_fn)
    learn.fit(1e-2, 1, wds=1e-4, verbose=False)  # the optimiser has state to restore
    before = state_of(learn)
    sugg = learn.lr_find()
    assert_same_state(before, state_of(learn))
    assert learn.model.training
    assert isinstance(learn.sched, mf.LR_Finder) and len(learn.recorder.lrs) > 10
    assert sugg is not None and 1e-5 <= sugg <= 10


def test_lr_find_has_no_side_effect_on_the_next_fit(tmp_path):
    runs = []
    for find in (False, True):
        learn = mf.Learner(make_data(tmp_path, n=400), DropBN())
        if find:
            learn.lr_find(num_it=8)
        learn.fit(1e-2, 1, cycle_len=1, verbose=False)
        runs.append(state_of(learn))
    assert_same_state(*runs)


def test_lr_find_on_a_fresh_optimiser_leaves_it_fresh(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    before = state_of(learn)
    learn.lr_find()
    assert_same_state(before, state_of(learn))
    assert learn.opt.state_dict()["state"] == {}


def test_lr_find_ramp_length_and_early_stop(tmp_path):
    learn = mf.Learner(make_data(tmp_path, n=2000, bs=16), mlp(),
                       opt_fn=lambda g: torch.optim.SGD(g, lr=0.1))
    nb = len(learn.data.trn_dl)
    learn.lr_find(num_it=2 * nb + 5, end_lr=1e-1)  # wraps epochs: as many as num_it asks
    assert len(learn.recorder.lrs) == 2 * nb + 5 and learn.recorder.lrs[-1] == pytest.approx(0.1)
    learn.lr_find(num_it=20, end_lr=1e-1)
    lrs = learn.recorder.lrs
    assert len(lrs) == 20 and lrs[0] == pytest.approx(1e-5)
    np.testing.assert_allclose(lrs, 1e-5 * (1e4 ** (np.arange(20) / 19)), rtol=1e-12)
    before = state_of(learn)
    learn.lr_find(end_lr=1e6)  # SGD diverges (loss -> inf/NaN): stops early, still restores
    assert learn.sched.diverged and len(learn.recorder.lrs) < 100
    assert_same_state(before, state_of(learn))
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_lr_find_layer_groups_and_plot(tmp_path):
    learn = mf.Learner(make_data(tmp_path, n=1200, bs=16), TwoGroups())
    sugg = learn.lr_find(start_lr=[1e-6, 1e-5])
    assert isinstance(sugg, list) and len(sugg) == 2 and sugg[1] == pytest.approx(10 * sugg[0])
    assert learn.sched.suggestion() == pytest.approx(sugg[0])
    ax = learn.sched.plot()
    assert isinstance(ax, matplotlib.axes.Axes)  # issue 15: the Axes, so a notebook shows it once
    assert ax.get_xscale() == "log" and "steepest descent" in ax.get_legend().get_texts()[0].get_text()


def test_lr_find_refuses_under_distributed(tmp_path, monkeypatch):
    learn = mf.Learner(make_data(tmp_path), mlp())
    with monkeypatch.context() as m:
        m.setattr("minifast.runtime.ranks.world_size", lambda: 2)
        with pytest.raises(RuntimeError, match="lr_find does not run under torch.distributed"):
            learn.lr_find()
    monkeypatch.setenv("RANK", "1")  # launched by torchrun, process group not joined yet
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"world size 2\)"):
        learn.lr_find()


def test_lr_find_argument_checks(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    with pytest.raises(ValueError, match="start_lr must be finite and > 0"):
        learn.lr_find(start_lr=0)
    with pytest.raises(ValueError, match="end_lr must be a positive number"):
        learn.lr_find(end_lr=-1)
    with pytest.raises(ValueError, match="num_it must be a positive integer"):
        learn.lr_find(num_it=0)


# ---------------------------------------------------------------------------- predict


def test_predict_and_predict_array(tmp_path):
    data = make_data(tmp_path, test=True)
    learn = mf.Learner(data, mlp())
    learn.fit(1e-2, 1, verbose=False)
    preds = learn.predict()
    x_val, _ = data.val_dl.tensors
    assert preds.shape == (len(x_val), 1)
    np.testing.assert_allclose(learn.predict_array(x_val.numpy()), preds, rtol=1e-6)
    assert learn.predict(is_test=True).shape == (10, 1)
    assert learn.model.training
    learn.data.test_dl = None
    with pytest.raises(ValueError, match="no test loader"):
        learn.predict(is_test=True)


# ------------------------------------------------------------------------- save/load


def test_save_load_round_trip(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    learn.fit(1e-2, 1, verbose=False)
    saved = state_of(learn)
    path = learn.save("m")
    assert path == tmp_path / "models" / "m.pt" and path.is_file()
    assert not list(path.parent.glob("*.tmp"))
    assert set(torch.load(path, weights_only=True)) == set(learn.model.state_dict())  # plain
    learn.fit(1e-2, 1, verbose=False)
    learn.load("m")
    for k, v in saved[0].items():
        assert torch.equal(learn.model.state_dict()[k], v)


def test_save_to_unwritable_folder_names_the_fix(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    (tmp_path / "models").write_text("a file where the models folder should be")
    with pytest.raises(OSError, match=r"cannot write .*m\.pt.*set learn\.path") as e:
        learn.save("m")
    assert e.value.errno is not None
    learn.path = tmp_path / "elsewhere"  # the way out the message names
    assert learn.save("m") == tmp_path / "elsewhere" / "models" / "m.pt"


def test_save_load_with_optimiser_state(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    learn.fit(1e-2, 1, verbose=False)
    saved = state_of(learn)
    learn.save("m", with_opt=True)
    learn.fit(1e-3, 1, verbose=False)
    other = mf.Learner(make_data(tmp_path), mlp(seed=1))
    other.load("m")
    assert_same_state(saved, state_of(other))


def test_load_errors_are_clear_and_change_nothing(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    with pytest.raises(FileNotFoundError, match="no model file .*nope.pt"):
        learn.load("nope")
    path = learn.save("m")
    data = path.read_bytes()
    (path.parent / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(mf.CheckpointError, match="trunc.pt"):
        learn.load("trunc")
    torch.manual_seed(3)
    other = mf.Learner(make_data(tmp_path), nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 1)))
    before = state_of(other)
    with pytest.raises(mf.CheckpointError, match=r"missing keys \['3.weight', '3.bias'\].*shape mismatches 2.weight"):
        other.load("m")
    assert_same_state(before, state_of(other))
    learn.save("withopt", with_opt=True)
    twogroups = mf.Learner(make_data(tmp_path), mlp(), no_decay=True)  # 2 optimiser groups
    with pytest.raises(mf.CheckpointError, match="with_opt=False"):
        twogroups.load("withopt")
    twogroups.load("withopt", with_opt=False)


def test_save_unwraps_and_writes_only_on_the_main_process(tmp_path, monkeypatch):
    learn = mf.Learner(make_data(tmp_path), nn.DataParallel(mlp()))
    path = learn.save("dp")
    assert set(torch.load(path, weights_only=True)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    plain = mf.Learner(make_data(tmp_path), mlp(seed=5))
    plain.load("dp")
    monkeypatch.setattr("minifast.learner.is_main_process", lambda: False)
    assert not learn.save("rank1").exists()


def test_best_and_cycle_save_names(tmp_path):
    learn = mf.Learner(make_data(tmp_path), mlp())
    learn.fit(1e-2, 2, cycle_len=1, cycle_mult=2, best_save_name="best", cycle_save_name="c",
              verbose=False)
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["best.pt", "c_cyc_0.pt", "c_cyc_1.pt"]
    cyc1 = torch.load(tmp_path / "models" / "c_cyc_1.pt", weights_only=True)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(cyc1[k], v)  # the last cycle ends with the run


# ------------------------------------------------------------------------------ plots


def test_plots_return_axes(tmp_path):
    """Issue 15: each plot returns its Axes (a returned Figure shows twice in a notebook);
    `ax.figure` is the figure a script saves."""
    learn = mf.Learner(make_data(tmp_path), mlp())
    learn.fit(1e-2, 1, cycle_len=2, use_clr_beta=(10, 10, 0.95, 0.85), verbose=False)
    ax = learn.sched.plot_lr()
    assert isinstance(ax, matplotlib.axes.Axes) and ax.get_ylabel() == "learning rate"
    assert len(ax.figure.axes) == 2 and ax.figure.axes[1].get_ylabel() == "momentum"
    ax = learn.sched.plot_loss(n_skip=2)
    assert [len(line.get_xdata()) for line in ax.lines] == [len(learn.recorder.losses) - 2] * 2
    assert isinstance(learn.recorder.plot_lr(), matplotlib.axes.Axes)
    learn.fit(1e-2, 1, verbose=False)
    assert len(mf.plot_lr(learn.recorder).figure.axes) == 1
    ax = mf.plot_lr_find(np.logspace(-5, 0, 50), np.linspace(2, 1, 50))
    assert ax.get_xscale() == "log"
    ax.figure.savefig(tmp_path / "lr_find.png")
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not been used in a fit"):
        mf.CosAnneal(10).plot_lr()


def test_plots_need_matplotlib(tmp_path, monkeypatch):
    learn = mf.Learner(make_data(tmp_path), mlp())
    learn.fit(1e-2, 1, verbose=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install minifast\[plot\]"):
        learn.sched.plot_loss()


def test_resumed_fit_continues_on_the_same_lr_curve(tmp_path):
    """A run stopped after epoch 1 and resumed from its checkpoint ends bit-identical to the
    uninterrupted run: the schedule reads the restored state.iteration."""

    class StopAfterFirstEpoch(mf.Callback):
        def on_epoch_end(self, vals):
            return self.state.epoch == 0

    kw = dict(lrs=1e-2, n_cycle=2, cycle_len=1, cycle_mult=2, wds=1e-4, verbose=False)
    full = mf.Learner(make_data(tmp_path), DropBN())
    full.fit(**kw)
    part = mf.Learner(make_data(tmp_path), DropBN())
    part.fit(**kw, callbacks=[mf.Checkpoint(tmp_path / "ck"), StopAfterFirstEpoch()])
    assert len(part.recorder.lrs) == len(part.data.trn_dl)
    resumed = mf.Learner(make_data(tmp_path), DropBN())
    resumed.fit(**kw, resume=tmp_path / "ck")
    assert resumed.recorder.lrs == full.recorder.lrs
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


@pytest.mark.parametrize("how", ["plain", "sgdr", "one_cycle", "lr_find", "callbacks", "collab"])
def test_a_dropped_learner_is_freed_at_once(tmp_path, how):
    """No reference cycle survives `fit`: dropping the learner and the result frees the model
    and the optimiser state by refcounting, without waiting for a full garbage collection
    (which, for a large model, would hold gigabytes for an unpredictable time)."""
    import gc
    import weakref

    from conftest import TinyDot, make_ratings

    from minifast.callbacks.checkpoint import Checkpoint
    from minifast.collab import CollabFilterDataset

    cats, y = make_ratings()
    if how == "collab":
        import pandas as pd

        df = pd.DataFrame({"u": cats[:, 0], "i": cats[:, 1], "r": y})
        learn = CollabFilterDataset.from_data_frame(tmp_path, df, "u", "i", "r").get_learner(
            4, mf.get_cv_idxs(len(y)), 32)
    else:
        md = mf.ColumnarModelData.from_arrays(tmp_path, mf.get_cv_idxs(len(y)), cats, y, bs=32)
        learn = mf.Learner(md, TinyDot())
    refs = [weakref.ref(learn.model), weakref.ref(learn.opt), weakref.ref(learn)]
    gc.collect()
    gc.disable()
    try:
        kw = {"progress": False, "verbose": False}
        if how == "sgdr":
            res = learn.fit(1e-2, 2, cycle_len=1, cycle_mult=2, wds=1e-4, **kw)
        elif how == "one_cycle":
            res = learn.fit(1e-2, 1, cycle_len=2, use_clr_beta=(10, 10, 0.95, 0.85), **kw)
        elif how == "lr_find":
            res = learn.lr_find(**kw)
        elif how == "callbacks":
            res = learn.fit(1e-2, 2, callbacks=[
                Checkpoint(tmp_path / "ck"), mf.EarlyStopping(patience=1),
                mf.SaveBestModel(tmp_path / "best.pt"), mf.CSVLogger(tmp_path / "log.csv")], **kw)
        else:
            res = learn.fit(1e-2, 1, **kw)
        assert refs[0]() is not None
        del learn, res
        alive = [r() is not None for r in refs]
    finally:
        gc.enable()
    assert alive == [False, False, False]
