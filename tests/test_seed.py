"""set_seed: one call makes a run repeat exactly."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minifast as mf


def run(tmp_path, seed):
    mf.set_seed(seed)
    x = torch.randn(200, 5)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(200, 1)
    data = mf.ModelData(tmp_path, mf.ArrayLoader(x[:160], y[:160], batch_size=16, shuffle=True),
                        mf.ArrayLoader(x[160:], y[160:], batch_size=40))
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    res = mf.fit(model, data, 2, torch.optim.Adam(model.parameters(), 1e-2), F.mse_loss,
                 verbose=False)
    return [p.detach().clone() for p in model.parameters()], res.recorder.losses, (
        random.random(), float(np.random.rand()))


def test_set_seed_twice_gives_identical_runs(tmp_path):
    a, b, c = run(tmp_path, 7), run(tmp_path, 7), run(tmp_path, 8)
    assert all(torch.equal(p, q) for p, q in zip(a[0], b[0]))
    assert a[1] == b[1] and a[2] == b[2]
    assert not all(torch.equal(p, q) for p, q in zip(a[0], c[0])) and a[1] != c[1]


def test_set_seed_deterministic_sets_torchs_algorithms(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on: calls.append(on))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    mf.set_seed(3, deterministic=True)
    assert calls == [True] and torch.backends.cudnn.benchmark is False
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_set_seed_refuses_what_is_not_a_seed(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        mf.set_seed(bad)
