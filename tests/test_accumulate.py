"""Gradient accumulation: a batch split into micro-batches gives the same step as the whole."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyDot, make_ratings
from torch import nn

import minifast as mf


def data(tmp_path, bs, n=650, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g, dtype=dtype)
    y = x @ torch.randn(8, 1, generator=g, dtype=dtype) + 0.1 * torch.randn(n, 1, generator=g, dtype=dtype)
    return mf.ModelData(tmp_path, mf.ArrayLoader(x[:500], y[:500], batch_size=bs, shuffle=True, seed=3),
                        mf.ArrayLoader(x[500:], y[500:], batch_size=50))


def run(tmp_path, bs, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)).to(dtype)
    opt = torch.optim.SGD(m.parameters(), 0.05, momentum=0.9)
    res = mf.fit(m, data(tmp_path, bs, dtype=dtype), 3, opt, F.mse_loss, verbose=False, **kw)
    return m, res


@pytest.mark.parametrize("n", [2, 3, 64])
def test_accumulated_micro_batches_give_the_whole_batchs_step(tmp_path, n):
    # 500 rows in batches of 64: the last batch has 52 rows, which 3 and 64 do not divide.
    # float64, so the comparison checks the weighting, not one CPU's float32 summation order
    # (in float32, 64 one-row micro-batches drift ~1e-6 from the whole batch after 24 steps).
    whole, r1 = run(tmp_path, 64, dtype=torch.float64)
    acc, r2 = run(tmp_path, 64, dtype=torch.float64, accumulate=n)
    for a, b in zip(whole.parameters(), acc.parameters()):
        assert torch.allclose(a, b, atol=1e-12, rtol=0), (a - b).abs().max()
    assert r2.recorder.iterations == r1.recorder.iterations  # optimiser steps, not micro-batches
    assert r2.recorder.losses == pytest.approx(r1.recorder.losses, rel=1e-5)
    assert r2[0] == pytest.approx(r1[0], rel=1e-5)


def test_learner_fit_takes_accumulate_and_schedules_count_steps(tmp_path):
    cats, y = make_ratings()
    runs = []
    for acc in (1, 2):
        torch.manual_seed(0)
        md = mf.ColumnarModelData.from_arrays(tmp_path, mf.get_cv_idxs(len(y)), cats, y, bs=64, seed=1)
        learn = mf.Learner(md, TinyDot(), opt_fn=torch.optim.SGD)
        learn.fit(0.1, 1, cycle_len=2, accumulate=acc, verbose=False)
        runs.append(learn)
    a, b = runs
    assert a.sched.lrs == b.sched.lrs and len(b.sched.lrs) == 2 * len(b.data.trn_dl)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=0)


def test_a_ddp_model_syncs_once_per_step(tmp_path):
    class FakeDDP(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module, self.no_sync_calls = m, 0

        def forward(self, *xs):
            return self.module(*xs)

        @contextlib.contextmanager
        def no_sync(self):
            self.no_sync_calls += 1
            yield

    m = FakeDDP(nn.Linear(8, 1))
    st = mf.Stepper(m, torch.optim.SGD(m.parameters(), 0.1), F.mse_loss, accumulate=4)
    xb, yb = next(iter(data(tmp_path, 64).trn_dl))
    st.step([xb], yb)
    assert m.no_sync_calls == 3  # every micro-batch but the last


def test_accumulate_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ValueError, match="accumulate must be a positive integer"):
        run(tmp_path, 64, accumulate=0)
