"""Non-finite values in a step: gradients that overflow while the loss is finite, targets that
are not finite, and messages that say truthfully what happened to the weights."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minifast as mf


class OverflowOnce(mf.Callback):
    """Makes the gradients of batch `at` (1-based) infinite, with a finite loss."""

    def __init__(self, at):
        self.at = at

    def on_backward_end(self):
        if self.state.iteration + 1 == self.at:
            for p in self.state.model.parameters():
                p.grad.fill_(float("inf"))


def data(tmp_path, y_bad=None, n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.randn(4, 1, generator=g)
    if y_bad is not None:
        y[y_bad] = float("inf")
    return mf.ModelData(tmp_path, mf.ArrayLoader(x[:200], y[:200], batch_size=20, seed=0),
                        mf.ArrayLoader(x[200:], y[200:], batch_size=50))


def model_and_opt():
    torch.manual_seed(0)
    m = nn.Linear(4, 1)
    return m, torch.optim.Adam(m.parameters(), 1e-2)


def overflow_at_batch_4(tmp_path, check_grads):
    """Train until batch 4's gradients overflow; the model, optimiser and the error raised."""
    m, opt = model_and_opt()
    with pytest.raises(mf.NonFiniteLossError) as e:
        mf.fit(m, data(tmp_path), 1, opt, F.mse_loss, callbacks=[OverflowOnce(4)],
               check_grads=check_grads, verbose=False)
    return m, opt, e.value


def test_check_grads_stops_before_bad_gradients_reach_the_weights(tmp_path):
    m, opt, err = overflow_at_batch_4(tmp_path, check_grads=True)
    msg = str(err)
    assert "gradients are not finite (norm inf) while the loss is" in msg
    assert "iteration 3" in msg and "holds its last good weights" in msg
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert all(torch.isfinite(s["exp_avg"]).all() for s in opt.state.values())
    assert all(p.grad is None for p in m.parameters())  # no bad gradients left behind


def test_without_the_check_the_next_loss_says_the_weights_are_damaged(tmp_path):
    _, _, err = overflow_at_batch_4(tmp_path, check_grads=False)
    msg = str(err)
    assert "iteration 4" in msg and "weights are already not finite" in msg
    assert "check_grads=True" in msg and "last good weights" not in msg
    assert err.weights_finite is False


def test_clipping_checks_the_gradients_for_free_by_default(tmp_path):
    m, opt = model_and_opt()
    with pytest.raises(mf.NonFiniteLossError, match="gradients are not finite"):
        mf.fit(m, data(tmp_path), 1, opt, F.mse_loss, callbacks=[OverflowOnce(2)], clip=1.0,
               verbose=False)
    assert mf.Stepper(m, opt, F.mse_loss, clip=1.0).check_grads
    assert not mf.Stepper(m, opt, F.mse_loss).check_grads  # CPU, no clipping: off by default
    assert not mf.Stepper(m, opt, F.mse_loss, check_grads=True, stop_on_nan=False).check_grads


@pytest.mark.parametrize("check_grads", [False, True])
def test_inf_targets_point_at_the_data(tmp_path, check_grads):
    m, opt = model_and_opt()
    with pytest.raises(mf.NonFiniteLossError) as e:
        mf.fit(m, data(tmp_path, y_bad=[3, 7]), 1, opt, F.mse_loss, check_grads=check_grads,
               verbose=False)
    msg = str(e.value)
    assert "targets hold 2 NaN/inf value(s): the data is at fault" in msg and e.value.bad_targets == 2
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_check_grads_trains_exactly_like_the_unchecked_step(tmp_path):
    runs = []
    for check in (False, True):
        m, opt = model_and_opt()
        res = mf.fit(m, data(tmp_path), 2, opt, F.mse_loss, check_grads=check, verbose=False)
        runs.append(([p.detach().clone() for p in m.parameters()], res.recorder.losses))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert runs[0][1] == runs[1][1] and all(math.isfinite(v) for v in runs[0][1])
