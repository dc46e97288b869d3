"""Synthetic ratings: low rank plus noise, with power-law popularity and a known noise floor.

The command line's offline default (no download needed) and the data of the benchmarks at
MovieLens-25M scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

__all__ = ["synthetic_ratings"]

_GRID = np.arange(0.5, 5.01, 0.5)


def _popularity(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like probabilities `rank**-alpha`, assigned to ids in random order."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    p /= p.sum()
    return p[rng.permutation(n)]


def _pairs(n_users, n_items, n, pu, pi, rng) -> tuple[np.ndarray, np.ndarray]:
    """`n` distinct (user, item) pairs drawn by popularity: i.i.d. draws in order, repeats
    dropped (redrawing the shortfall until there are `n`).

    Popular pairs collide often, so it takes several rounds; each round checks its new draws
    against a sorted array of the pairs kept so far (binary search) and merges them in,
    instead of re-sorting everything drawn so far.
    """
    if n > n_users * n_items:
        raise ValueError(f"n_ratings={n} exceeds the {n_users * n_items} possible pairs")

    def draw(m: int) -> np.ndarray:  # distinct keys user*n_items+item, in draw order
        keys = rng.choice(n_users, m, p=pu).astype(np.int64) * n_items + rng.choice(n_items, m, p=pi)
        _, first = np.unique(keys, return_index=True)
        return keys[np.sort(first)]

    keys = draw(int(n * 1.15) + 16)
    seen = np.sort(keys)
    while len(keys) < n:
        new = draw(int((n - len(keys)) * 1.15) + 16)
        pos = np.searchsorted(seen, new)
        new = new[(pos == len(seen)) | (seen[np.minimum(pos, len(seen) - 1)] != new)]
        keys = np.concatenate([keys, new])
        seen = np.sort(np.concatenate([seen, np.sort(new)]), kind="stable")  # a merge of 2 runs
    keys = keys[:n]
    return keys // n_items, keys % n_items


def _rating_moments(mean: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """E and Var of clip(round_half(mean + N(0, noise²)), 0.5, 5) for each mean (exact).

    One grid value at a time (vectors of len(mean), not a [len, 10] matrix), so the memory
    stays a few vectors of the chunk's length."""
    m = torch.from_numpy(mean.astype(np.float64))
    e, e2 = torch.zeros_like(m), torch.zeros_like(m)
    lo = torch.zeros_like(m)  # P(rating <= previous grid value): cdf at -inf
    for k, g in enumerate(_GRID):
        hi = (torch.special.ndtr((g + 0.25 - m) / noise) if k < len(_GRID) - 1
              else torch.ones_like(m))
        p = hi - lo
        e.add_(p, alpha=float(g))
        e2.add_(p, alpha=float(g) ** 2)
        lo = hi
    return e.numpy(), (e2 - e * e).numpy()


def synthetic_ratings(
    n_users: int = 1000,
    n_items: int = 2000,
    n_ratings: int = 100_000,
    rank: int = 10,
    noise: float = 0.8,
    seed: int = 0,
    alpha: float = 0.8,
    chunk: int = 500_000,
) -> tuple[pd.DataFrame, float]:
    """A ratings frame `userId, movieId, rating` shaped like MovieLens, and its noise floor.

    Each rating is `clip(round_to_half(3.5 + b_u + b_i + u·v + noise*N(0,1)), 0.5, 5)`, with
    rank-`rank` factors, user and item biases, and users/items drawn with Zipf-like popularity
    (`rank**-alpha`), no repeated (user, item) pair. The noise floor returned is the exact
    expected MSE of the best possible predictor (`E[rating | user, item]`) on these pairs:
    no model can beat it on fresh ratings, so it tells how close a trained model got.
    Ids are 1-based like MovieLens. Vectorised throughout, in chunks of `chunk` ratings, so
    it scales to MovieLens-25M sizes.
    """
    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_ratings", n_ratings),
                    ("rank", rank)):
        if int(v) <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if noise <= 0:
        raise ValueError(f"noise must be positive, got {noise}")
    rng = np.random.default_rng(seed)
    u, i = _pairs(n_users, n_items, n_ratings, _popularity(n_users, alpha, rng),
                  _popularity(n_items, alpha, rng), rng)
    scale = 0.7 / np.sqrt(rank)  # the dot product's std is ~0.7 stars
    U = (rng.standard_normal((n_users, rank)) * np.sqrt(scale)).astype(np.float32)
    V = (rng.standard_normal((n_items, rank)) * np.sqrt(scale)).astype(np.float32)
    bu = (rng.standard_normal(n_users) * 0.4).astype(np.float32)
    bi = (rng.standard_normal(n_items) * 0.5).astype(np.float32)
    ratings = np.empty(n_ratings, np.float32)
    var_sum = 0.0
    for s in range(0, n_ratings, chunk):
        uu, ii = u[s : s + chunk], i[s : s + chunk]
        mean = 3.5 + bu[uu] + bi[ii] + np.einsum("nk,nk->n", U[uu], V[ii])
        raw = mean + noise * rng.standard_normal(len(uu)).astype(np.float32)
        ratings[s : s + chunk] = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
        var_sum += float(_rating_moments(mean, noise)[1].sum())
    df = pd.DataFrame({"userId": u + 1, "movieId": i + 1, "rating": ratings})
    return df, var_sum / n_ratings
