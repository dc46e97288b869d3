"""Closure optimisers (torch.optim.LBFGS) through the ordinary Learner.fit: the Stepper calls
`opt.step(closure)`, the events stay meaningful, L-BFGS beats SGD on least squares, bad
settings are refused, a non-finite evaluation leaves the weights where the step began, and
a checkpointed run resumes bit for bit."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from resume_worker import assert_resumes_exactly, result
from torch import nn

from minifast import ArrayLoader, Callback, Learner, ModelData
from minifast.core.events import CallbackHandler
from minifast.core.stepper import ClosureStepper, NonFiniteLossError, Stepper, needs_closure
from minifast.optim.lbfgs import RestartingLBFGS


def _problem(tmp_path, bs=None, seed=0):
    """An ill-conditioned least-squares problem (column scales 0.1 to 10), its optimum's MSE."""
    g = np.random.RandomState(seed)
    x = (g.randn(200, 10) * np.logspace(-1, 1, 10)).astype(np.float32)
    y = (x @ g.randn(10, 1) + 0.1 * g.randn(200, 1)).astype(np.float32)
    trn = ArrayLoader(x[:160], y[:160], batch_size=bs or 160, shuffle=bs is not None, seed=1)
    data = ModelData(tmp_path, trn, ArrayLoader(x[160:], y[160:], batch_size=40))
    xt = np.hstack([x[:160], np.ones((160, 1), np.float32)]).astype(np.float64)
    w, *_ = np.linalg.lstsq(xt, y[:160].astype(np.float64), rcond=None)
    return data, float(np.mean((xt @ w - y[:160]) ** 2))


def _train_mse(learn) -> float:
    x, y = learn.data.trn_dl.tensors
    with torch.no_grad():
        return float(F.mse_loss(learn.model(x), y))


LBFGS = functools.partial(torch.optim.LBFGS, max_iter=10, line_search_fn="strong_wolfe")


def test_lbfgs_solves_least_squares_where_sgd_is_still_far(tmp_path):
    data, best = _problem(tmp_path)
    torch.manual_seed(0)
    lb = Learner(data, nn.Linear(10, 1), opt_fn=LBFGS, crit=F.mse_loss)
    lb.fit(1.0, 10, verbose=False, progress=False)  # 10 full-batch steps, <= 12 evaluations each
    evals = lb.opt.state[next(iter(lb.model.parameters()))]["func_evals"]
    torch.manual_seed(0)
    sgd = Learner(data, nn.Linear(10, 1), opt_fn=torch.optim.SGD, crit=F.mse_loss)
    start = _train_mse(sgd)
    # about the best step for this conditioning: 2e-2 diverges
    sgd.fit(1e-2, 2 * evals, verbose=False, progress=False)  # twice L-BFGS's gradients
    assert _train_mse(lb) - best < 1e-4 * best
    assert _train_mse(sgd) < 0.01 * start  # SGD does converge, only far more slowly
    assert _train_mse(sgd) - best > 5 * best


class Count(Callback):
    def __init__(self):
        self.n = {e: 0 for e in ("on_backward_begin", "on_backward_end", "on_step_begin",
                                 "on_step_end", "on_batch_end")}
        self.losses, self.grads_seen, self.starts, self.raw = [], [], [], []

    def on_backward_begin(self):
        self.n["on_backward_begin"] += 1
        self.losses.append(self.state.loss_tensor.item())

    def on_backward_end(self):
        self.n["on_backward_end"] += 1
        self.grads_seen.append(all(p.grad is not None for p in self.state.model.parameters()))

    def on_step_begin(self):
        self.n["on_step_begin"] += 1
        self.starts.append(len(self.losses))

    def on_step_end(self):
        self.n["on_step_end"] += 1

    def on_batch_end(self, loss):
        self.n["on_batch_end"] += 1
        self.raw.append(self.state.loss)


def test_events_fire_per_evaluation_and_per_step(tmp_path):
    data, _ = _problem(tmp_path)
    torch.manual_seed(0)
    learn = Learner(data, nn.Linear(10, 1), opt_fn=LBFGS, crit=F.mse_loss)
    count = Count()
    res = learn.fit(1.0, 2, callbacks=[count], verbose=False, progress=False)
    assert isinstance(res.state.stepper, ClosureStepper)
    evals = learn.opt.state[next(iter(learn.model.parameters()))]["func_evals"]
    assert count.n["on_backward_begin"] == count.n["on_backward_end"] == evals > 2
    assert count.n["on_step_begin"] == count.n["on_step_end"] == count.n["on_batch_end"] == 2
    assert all(count.grads_seen)
    # the loop records each step's first evaluation: the loss of the weights it began from
    assert count.raw == [pytest.approx(count.losses[i], rel=1e-6) for i in count.starts]
    assert count.starts[1] > 1 and count.raw[1] < count.raw[0]


def test_ordinary_optimisers_keep_the_plain_step():
    m = nn.Linear(2, 1)
    assert type(Stepper(m, torch.optim.SGD(m.parameters(), 0.1), F.mse_loss)) is Stepper
    assert type(Stepper(m, torch.optim.LBFGS(m.parameters()), F.mse_loss)) is ClosureStepper

    class Flagged(torch.optim.SGD):
        step_needs_closure = True

    assert needs_closure(Flagged(m.parameters(), 0.1))
    assert not needs_closure(torch.optim.Adam(m.parameters()))
    opt_out = torch.optim.LBFGS(m.parameters())
    opt_out.step_needs_closure = False
    assert not needs_closure(opt_out)


def test_a_flagged_optimiser_gets_a_closure():
    seen = []

    class Flagged(torch.optim.SGD):
        step_needs_closure = True

        def step(self, closure):
            seen.append(float(closure()))
            return super().step()

    m = nn.Linear(2, 1)
    stepper = Stepper(m, Flagged(m.parameters(), 0.1), F.mse_loss, cbs=CallbackHandler())
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    raw = stepper.step([x], y)
    assert seen == [pytest.approx(raw)]


@pytest.mark.parametrize("kwargs, match", [({"clip": 1.0}, "clip"),
                                           ({"accumulate": 2}, "accumulate")])
def test_settings_that_change_gradients_behind_its_back_are_refused(kwargs, match):
    m = nn.Linear(2, 1)
    with pytest.raises(ValueError, match=match):
        Stepper(m, torch.optim.LBFGS(m.parameters()), F.mse_loss, **kwargs)


def test_decoupled_weight_decay_is_refused(tmp_path):
    data, _ = _problem(tmp_path)
    learn = Learner(data, nn.Linear(10, 1), opt_fn=LBFGS, crit=F.mse_loss)
    with pytest.raises(ValueError, match="reg_fn"):
        learn.fit(1.0, 1, wds=1e-2, use_wd_sched=True, verbose=False, progress=False)


def test_a_non_finite_evaluation_restores_the_starting_weights(tmp_path):
    data, _ = _problem(tmp_path)
    torch.manual_seed(0)
    model = nn.Linear(10, 1)
    calls = []

    def crit(out, y):  # finite at the start of the step, NaN at the optimiser's next point
        calls.append(1)
        loss = F.mse_loss(out, y)
        return loss if len(calls) == 1 else loss * float("nan")

    learn = Learner(data, model, opt_fn=LBFGS, crit=crit)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="not taken"):
        learn.fit(1.0, 1, verbose=False, progress=False)
    assert len(calls) >= 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _tensors(state: dict) -> dict:
    """L-BFGS's state (numbers, lists of tensors, None) as tensors, for torch.equal."""
    def one(v):
        if isinstance(v, list):
            v = [t for t in v if t is not None]
            return torch.stack(v) if v else torch.zeros(0)
        return v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
    return {i: {k: one(v) for k, v in s.items()} for i, s in state.items()}


@pytest.mark.parametrize("opt_cls", [torch.optim.LBFGS, RestartingLBFGS])
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, opt_cls):
    data, _ = _problem(tmp_path, bs=32)  # 5 mini-batches an epoch, shuffled by seed

    def run(callbacks, resume=None):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1))
        learn = Learner(data, model, opt_fn=functools.partial(opt_cls, max_iter=3,
                                                              history_size=4), crit=F.mse_loss)
        assert needs_closure(learn.opt)
        res = learn.fit(0.5, 3, callbacks=callbacks, resume=resume, verbose=False,
                        progress=False)
        out = result(learn.model, learn.opt, res.recorder, res.history)
        out["opt"]["state"] = _tensors(out["opt"]["state"])
        return out

    full = assert_resumes_exactly(run, tmp_path / "ckpt", 3, 7)
    assert full["history"][-1]["val_loss"] < full["history"][0]["val_loss"]
    # torch's L-BFGS fills its history over the steps; the restarted one holds one step's
    # (3 iterations give 2 curvature pairs), and resumes exactly with it
    want = 4 if opt_cls is torch.optim.LBFGS else 2
    assert full["opt"]["state"][0]["old_dirs"].shape[0] == want


def _quadratic(seed=0):
    """An ill-conditioned quadratic in 6 weights (curvatures 0.01 to 100) and its closure."""
    w = nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(seed)))
    h = torch.logspace(-2, 2, 6)

    def closure():
        w.grad = None
        loss = (h * w ** 2).sum() + (w.sum() - 1) ** 2
        loss.backward()
        return loss
    return w, closure


def test_restarting_lbfgs_step_is_a_fresh_lbfgs_run_of_max_iter_iterations():
    w, closure = _quadratic()
    opt = RestartingLBFGS([w], max_iter=4, history_size=3)
    assert opt.defaults["max_eval"] == 4 * 25 and opt.defaults["line_search_fn"] == "strong_wolfe"
    for _ in range(3):
        start = w.detach().clone()
        opt.step(closure)
        assert opt.state[w]["n_iter"] == 4  # not accumulated over steps: the memory restarted
        fresh_w, fresh_closure = _quadratic()
        with torch.no_grad():
            fresh_w.copy_(start)
        torch.optim.LBFGS([fresh_w], max_iter=4, max_eval=100, history_size=3,
                          line_search_fn="strong_wolfe").step(fresh_closure)
        assert torch.equal(w, fresh_w)


def _rosenbrock():
    w = nn.Parameter(torch.tensor([-1.5, 2.0]))

    def closure():
        w.grad = None
        loss = 100 * (w[1] - w[0] ** 2) ** 2 + (1 - w[0]) ** 2
        loss.backward()
        return loss.detach()
    return w, closure


def test_torch_lbfgs_default_eval_cap_cuts_the_iterations_restarting_lbfgs_runs():
    w, closure = _rosenbrock()  # its line searches need more than one evaluation
    capped = torch.optim.LBFGS([w], max_iter=5, line_search_fn="strong_wolfe")  # max_eval 6
    capped.step(closure)
    w2, closure2 = _rosenbrock()
    full = RestartingLBFGS([w2], max_iter=5)
    full.step(closure2)
    assert capped.state[w]["n_iter"] < 5 == full.state[w2]["n_iter"]
    assert full.state[w2]["func_evals"] > 6


@pytest.mark.parametrize("kwargs,name", [({"max_iter": 0}, "max_iter"), ({"max_eval": -1}, "max_eval"),
                                         ({"history_size": 0}, "history_size")])
def test_restarting_lbfgs_refuses_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RestartingLBFGS([nn.Parameter(torch.zeros(2))], **kwargs)

