"""Shared test helpers: small synthetic ratings problems and a tiny dot-product model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from minifast import ColumnarModelData, get_cv_idxs
from minifast.collab import CollabFilterDataset

SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared"


class TinyDot(nn.Module):
    """Users x items dot product with biases; forward(cats, conts) -> [bs, 1]."""

    def __init__(self, n_users: int = 30, n_items: int = 20, n_factors: int = 4):
        super().__init__()
        self.u, self.i = nn.Embedding(n_users, n_factors), nn.Embedding(n_items, n_factors)
        self.ub, self.ib = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
        for e in (self.u, self.i, self.ub, self.ib):
            nn.init.uniform_(e.weight, -0.05, 0.05)

    def forward(self, cats, conts):
        u, i = cats[:, 0], cats[:, 1]
        return (self.u(u) * self.i(i)).sum(1, keepdim=True) + self.ub(u) + self.ib(i) + 3.0


def make_ratings(n: int = 600, n_users: int = 30, n_items: int = 20, seed: int = 0):
    """Low-rank synthetic ratings: (cats [n,2] int64, y [n] float32)."""
    rng = np.random.RandomState(seed)
    cats = np.stack([rng.randint(0, n_users, n), rng.randint(0, n_items, n)], 1)
    uf, if_ = rng.randn(n_users, 2), rng.randn(n_items, 2)
    y = 3 + (uf[cats[:, 0]] * if_[cats[:, 1]]).sum(1) * 0.5 + rng.randn(n) * 0.1
    return cats.astype(np.int64), y.astype(np.float32)


def grid_cf(tmp_path, seed: int = 0):
    """70% of a 20-user x 12-item grid rated 1-5 (low rank, raw ids 100+u / 500+i), as
    `(CollabFilterDataset, its DataFrame u, i, r)`."""
    rng = np.random.RandomState(seed)
    u, i = (a.ravel() for a in np.meshgrid(np.arange(20), np.arange(12)))
    keep = rng.rand(u.size) < 0.7
    r = np.clip(np.round(3 + rng.randn(20)[u[keep]] * rng.randn(12)[i[keep]]), 1, 5)
    df = pd.DataFrame({"u": u[keep] + 100, "i": i[keep] + 500, "r": r})
    return CollabFilterDataset.from_data_frame(tmp_path, df, "u", "i", "r"), df


@pytest.fixture
def tiny_data(tmp_path):
    """ColumnarModelData over 600 synthetic ratings, bs=32, seeded."""
    cats, y = make_ratings()
    return ColumnarModelData.from_arrays(tmp_path, get_cv_idxs(len(y)), cats, y, bs=32, seed=1)


@pytest.fixture
def tiny_model():
    """A seeded TinyDot model."""
    torch.manual_seed(0)
    return TinyDot()
