"""Interactions: which items each user interacted with, as a CSR structure (user -> items).

One structure serves every job that asks "has user u seen item i?": rejecting sampled
negatives that are positives (`contains`), excluding seen items from recommendations and
from the all-items ranking metrics (`mask`), and the held-out items of a user (`items_of`).
"""

from __future__ import annotations

import numpy as np
import torch
from attrs import define, field

__all__ = ["Interactions"]


def _int64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.int64).reshape(-1)


@define(eq=False)
class Interactions:
    """Users' item sets in CSR form: the items of user `u` are
    `indices[indptr[u]:indptr[u + 1]]`, sorted and without duplicates.

    `n_users`, `n_items`: the index ranges. Build one with `Interactions.from_pairs(users,
    items, n_users, n_items)`; `keys` (sorted `user * n_items + item`) answers membership
    queries for many pairs at once.
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_users: int
    n_items: int
    keys: torch.Tensor = field(init=False, repr=False)

    def __attrs_post_init__(self):
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))
        self.keys = torch.from_numpy(users * self.n_items + self.indices)

    @classmethod
    def from_pairs(cls, users, items, n_users: int, n_items: int) -> Interactions:
        """From parallel arrays of user and item indices (duplicates are kept once)."""
        u, i = _int64(users), _int64(items)
        if len(u) != len(i):
            raise ValueError(f"users and items have different lengths ({len(u)}, {len(i)})")
        for name, a, n in (("user", u, n_users), ("item", i, n_items)):
            if len(a) and (a.min() < 0 or a.max() >= n):
                raise ValueError(f"{name} indices must be in 0..{n - 1}, got {a.min()}..{a.max()}")
        keys = np.unique(u * n_items + i)
        counts = np.bincount(keys // n_items, minlength=n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, keys % n_items, int(n_users), int(n_items))

    @property
    def counts(self) -> np.ndarray:
        """Number of items of each user."""
        return np.diff(self.indptr)

    @property
    def nnz(self) -> int:
        """Number of (user, item) pairs."""
        return len(self.indices)

    def items_of(self, user: int) -> np.ndarray:
        """The sorted item indices of user index `user`."""
        return self.indices[self.indptr[user]:self.indptr[user + 1]]

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool tensor shaped like `items`: whether each `(users, items)` pair (broadcast) is
        an interaction. CPU tensors."""
        q = users.to(torch.int64) * self.n_items + items.to(torch.int64)
        if len(self.keys) == 0:
            return torch.zeros_like(q, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, q.reshape(-1)).clamp_(max=len(self.keys) - 1)
        return (self.keys[pos] == q.reshape(-1)).reshape(q.shape)

    def mask(self, users, device: torch.device | str | None = None) -> torch.Tensor:
        """Dense bool `[len(users), n_items]`: True where the user interacted with the item."""
        u = _int64(users)
        starts, ends = self.indptr[u], self.indptr[u + 1]
        rows = np.repeat(np.arange(len(u)), ends - starts)
        cols = self.indices[_ranges(starts, ends)]
        out = torch.zeros(len(u), self.n_items, dtype=torch.bool, device=device)
        out[torch.from_numpy(rows).to(out.device), torch.from_numpy(cols).to(out.device)] = True
        return out


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The concatenation of `arange(s, e)` for each pair, without a Python loop."""
    lens = ends - starts
    if lens.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return np.arange(lens.sum(), dtype=np.int64) + offsets
