"""The benchmark problem shared by the scripts here: lesson 5's ratings and EmbeddingDotBias.

Uses the 2016 ml-latest-small (100,004 ratings) from ../shared when present, otherwise a
synthetic problem of the same shape, so every script runs anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens"


def load_ratings(name: str = "ml-latest-small-2016") -> tuple[np.ndarray, np.ndarray, str]:
    """(cats int64 [n, 2] with ids mapped to 0..k-1, ratings float32 [n], description)."""
    csv = SHARED / name / "ratings.csv"
    if csv.exists():
        df = pd.read_csv(csv)
        u, _ = pd.factorize(df.userId)
        i, _ = pd.factorize(df.movieId)
        return np.stack([u, i], 1).astype(np.int64), df.rating.to_numpy(np.float32), str(csv)
    rng = np.random.RandomState(0)
    n = 100_004
    cats = np.stack([rng.randint(0, 671, n), rng.randint(0, 9066, n)], 1).astype(np.int64)
    y = np.clip(np.round(rng.normal(3.5, 1, n) * 2) / 2, 0.5, 5).astype(np.float32)
    return cats, y, "synthetic (100,004 ratings; ../shared not found)"


class DotBias(nn.Module):
    """Lesson 5's EmbeddingDotBias: sigmoid(u.i + ub + ib) scaled to [min, max]."""

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50, lo: float = 0.5,
                 hi: float = 5.0):
        super().__init__()
        self.u, self.i = nn.Embedding(n_users, n_factors), nn.Embedding(n_items, n_factors)
        self.ub, self.ib = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
        for e in (self.u, self.i, self.ub, self.ib):
            e.weight.data.uniform_(-0.05, 0.05)
        self.lo, self.hi = lo, hi

    def forward(self, cats, conts=None):
        u, i = cats[:, 0], cats[:, 1]
        r = (self.u(u) * self.i(i)).sum(1, keepdim=True) + self.ub(u) + self.ib(i)
        return torch.sigmoid(r) * (self.hi - self.lo) + self.lo


def make_opt(model: nn.Module, fast: bool, lr: float = 1e-2, wd: float = 1e-4):
    """Adam with L2 weight decay; `fast` = fused kernels (flush-denormal is set by the caller)."""
    kw = {"fused": True} if fast else {}
    return torch.optim.Adam(model.parameters(), lr, weight_decay=wd, **kw)
