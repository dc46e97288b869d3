"""Negative sampling for implicit feedback: a loader that adds sampled negatives to each batch,
and one for losses that score every item instead (`PositivesLoader`).

Each row of the data is a positive `(user, item)`. `NegativeSamplingLoader` is an
`ArrayLoader` over those rows whose batches also carry, per row, `n_neg` items the user did
not interact with, drawn uniformly or in proportion to the items' popularity, and the log of
each item's sampling probability (for the log-q correction of sampled softmax).

Resumability. The negatives of batch `b` of epoch `e` are drawn from a generator seeded by
`(seed, e, b, rank)` alone, so they are a pure function of the loader's `state_dict()` (seed
and epoch) and the batch index: a run resumed from a checkpoint, even mid-epoch, draws the
same negatives as the run it continues, and the global RNGs are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from ..checks import positive_int
from ..data import ArrayLoader
from .interactions import Interactions

__all__ = ["NegativeSamplingLoader", "PositivesLoader", "NEG_SAMPLING"]

#: The ways `NegativeSamplingLoader` draws negatives.
NEG_SAMPLING = ("uniform", "popularity")
_MAX_ROUNDS = 1000


class NegativeSamplingLoader(ArrayLoader):
    """An `ArrayLoader` over positive interactions whose batches are
    `(cats [bs, 2 + n_neg], conts, log_q [bs, 1 + n_neg])`.

    `cats` holds `user, positive item, n_neg negative items`; `log_q` the log of the
    sampling probability `q` of each of the `1 + n_neg` items (the positive's too), which
    `sampled_softmax_loss` subtracts from the scores. A negative is never one of the user's
    items in `exclude` (an `Interactions`; the training positives): draws that hit one are
    rejected and drawn again from the same generator, so the result is exact and seeded.

    `neg_sampling="uniform"`: every item with probability `1/n_items`; `"popularity"`: in
    proportion to `item_counts` (the training interactions of each item; items without any
    are never drawn). `fixed=True` draws the same negatives every epoch (a validation
    loader's, so its loss is comparable across epochs). `seed`, `shuffle`, `batch_size` and
    the rest are `ArrayLoader`'s.
    """

    def __init__(self, cats, conts, *, exclude: Interactions, n_neg: int = 1,
                 neg_sampling: str = "uniform", item_counts=None, fixed: bool = False,
                 **loader_kwargs):
        cats = torch.as_tensor(cats)
        if cats.ndim != 2 or cats.shape[1] != 2:
            raise ValueError(f"cats must be [n, 2] (user index, item index), got shape "
                             f"{tuple(cats.shape)}")
        super().__init__(cats, conts, torch.ones(len(cats), 1), **loader_kwargs)
        self.n_neg = positive_int(n_neg, "n_neg")
        if neg_sampling not in NEG_SAMPLING:
            raise ValueError(f"neg_sampling must be one of {NEG_SAMPLING}, got {neg_sampling!r}")
        self.neg_sampling, self.exclude, self.fixed = neg_sampling, exclude, bool(fixed)
        n_items = exclude.n_items
        if neg_sampling == "uniform":
            q = np.full(n_items, 1.0 / n_items)
        else:
            if item_counts is None:
                raise ValueError('neg_sampling="popularity" needs item_counts (training '
                                 'interactions per item)')
            c = np.asarray(item_counts, dtype=np.float64).reshape(-1)
            if len(c) != n_items or (c < 0).any() or c.sum() <= 0:
                raise ValueError(f"item_counts must be {n_items} non-negative counts, not all 0")
            q = c / c.sum()
        self.q = torch.from_numpy(q)
        self._cdf = torch.cumsum(self.q, 0)
        self._cdf[-1] = 1.0  # exactly, so that no draw can fall past the last item
        # floored: a validation positive may be an item no training row has (q = 0)
        self._log_q = torch.from_numpy(np.log(np.maximum(q, 1e-12))).float()
        self._check_every_user_has_a_negative(q > 0)

    def _check_every_user_has_a_negative(self, drawable: np.ndarray) -> None:
        ex = self.exclude
        users = np.repeat(np.arange(ex.n_users), ex.counts)
        hit = np.bincount(users, weights=drawable[ex.indices], minlength=ex.n_users)
        full = np.flatnonzero(hit >= drawable.sum())
        present = np.unique(self.tensors[0][:, 0].numpy())
        full = np.intersect1d(full, present)
        if full.size:
            raise ValueError(
                f"user index {int(full[0])} ({full.size} user(s) in all) interacted with every "
                f"item that {self.neg_sampling} sampling can draw: no negative exists for them; "
                f"drop those users or use neg_sampling='uniform'")

    def negatives(self, users: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """`[len(users), n_neg]` negatives for `users` in batch `batch` of `epoch`: a pure
        function of (seed, epoch, batch, rank) and the data."""
        e = 0 if self.fixed else int(epoch)
        s = ((self.seed * 1_000_003 + e) * 1_000_003 + int(batch)) * 1_009 + self.rank
        g = torch.Generator().manual_seed(s % 2**63)
        users = users.cpu().reshape(-1, 1).expand(-1, self.n_neg)
        negs = self._draw(users.shape, g)
        for _ in range(_MAX_ROUNDS):
            bad = self.exclude.contains(users, negs)
            n_bad = int(bad.sum())
            if not n_bad:
                return negs
            negs[bad] = self._draw((n_bad,), g)
        raise RuntimeError(f"negative sampling: {n_bad} draw(s) still hit a positive after "
                           f"{_MAX_ROUNDS} rounds; some users interact with almost every item")

    def _draw(self, shape, g: torch.Generator) -> torch.Tensor:
        n = math.prod(shape)
        if self.neg_sampling == "uniform":
            return torch.randint(len(self.q), (n,), generator=g).reshape(shape)
        u = torch.rand(n, generator=g, dtype=torch.float64)
        return torch.searchsorted(self._cdf, u, right=True).clamp_(max=len(self.q) - 1).reshape(shape)

    def batches(self, start: int = 0) -> Iterator[tuple]:
        """The current epoch's batches from batch `start`, each with its negatives."""
        epoch = self.epoch
        for b, (cats, conts, _) in enumerate(super().batches(start), start):
            negs = self.negatives(cats[:, 0], epoch, b).to(cats.device, non_blocking=True)
            items = torch.cat([cats[:, 1:2], negs], 1)
            log_q = self._log_q.to(cats.device)[items]
            yield torch.cat([cats[:, :1], items], 1), conts, log_q

    def __repr__(self) -> str:
        return (f"NegativeSamplingLoader(n={self.n}, batch_size={self.batch_size}, "
                f"n_neg={self.n_neg}, neg_sampling={self.neg_sampling!r}, fixed={self.fixed})")


class PositivesLoader(ArrayLoader):
    """An `ArrayLoader` over positive interactions for a loss over every item (no sampling):
    its batches are `(users [bs, 1], conts, items [bs])`, each row's user as the model's
    input and its positive item as the target.

    A model given `[bs, 1]` cats (users alone) scores every item, `[bs, n_items]`, and
    `full_softmax_loss` takes the positive's cross-entropy against all of them. Its
    `tensors` stay the `(user, item)` pairs, as `NegativeSamplingLoader`'s, so the learner's
    training interactions and validation metrics read them the same way. `seed`, `shuffle`,
    `batch_size` and the rest are `ArrayLoader`'s.
    """

    def __init__(self, cats, conts, **loader_kwargs):
        cats = torch.as_tensor(cats)
        if cats.ndim != 2 or cats.shape[1] != 2:
            raise ValueError(f"cats must be [n, 2] (user index, item index), got shape "
                             f"{tuple(cats.shape)}")
        super().__init__(cats, conts, torch.ones(len(cats), 1), **loader_kwargs)

    def batches(self, start: int = 0) -> Iterator[tuple]:
        """The current epoch's batches from batch `start`: users, conts and positive items."""
        for cats, conts, _ in super().batches(start):
            yield cats[:, :1], conts, cats[:, 1]

    def __repr__(self) -> str:
        return f"PositivesLoader(n={self.n}, batch_size={self.batch_size})"
