"""A ranking model whose users are also described by the items they interacted with.

`ItemSetMF` (SVD++'s user representation, Koren 2008, for ranking; FISM, Kabbur et al. 2013)
scores item `j` for user `u` as

    (e_u + n_u ** -alpha * sum_{i in I_u, i != j} p_i) . q_j + b_j

where `I_u` are the user's training items, `n_u = |I_u|`. The item-set part lets users with
few interactions borrow from the items they did touch, and it is what an item-to-item model
learns ("people who liked i like j"). Leaving `j` itself out of the sum when `j in I_u` keeps
a training positive from predicting itself (its own `p_j . q_j` would otherwise be a free way
to score every training positive high that says nothing about unseen items). It trains on
`NegativeSamplingLoader` batches like `ImplicitMF` and is scored by `item_scores` through its
`score_items`, so the learner, its metrics and `topn_scores` treat it like any other model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_dropout, check_non_negative_number
from .interactions import Interactions
from .models import get_emb
from .ranking_model import ImplicitMF

__all__ = ["ItemSetMF"]


class ItemSetMF(ImplicitMF):
    """Matrix factorisation plus the user's item set: see the module docstring.

    `ItemSetMF(n_factors, n_users, n_items, seen=Interactions, alpha=0.5, dropout=0.0)`:
    `seen` are the training interactions the item-set sums read (kept as buffers, so they
    move with the model); `alpha` the normalisation exponent of the sum (0.5 as SVD++);
    `dropout`, in training, drops each item of a user's set with that probability (a
    denoising regulariser for the `p` rows; the sum is rescaled by `1 / (1 - dropout)`).
    `u`, `i` (the `q_j`) and `ib` are `ImplicitMF`'s (this is one, plus the item set), so
    `emb_l2` penalises them; `p` holds the item-set rows. Calling conventions as
    `ImplicitMF`'s.
    """

    def __init__(self, n_factors: int, n_users: int, n_items: int, *, seen: Interactions,
                 alpha: float = 0.5, dropout: float = 0.0):
        super().__init__(n_factors, n_users, n_items)  # u, i (the q_j), ib
        if not isinstance(seen, Interactions):
            raise TypeError(f"seen must be the training Interactions, got {type(seen).__name__}")
        if (seen.n_users, seen.n_items) != (n_users, n_items):
            raise ValueError(f"seen covers {seen.n_users} users x {seen.n_items} items, the model "
                             f"{n_users} x {n_items}: pass the interactions of this data set")
        self.alpha = check_non_negative_number(alpha, "alpha")
        self.dropout = check_dropout(dropout, "dropout")
        self.p = get_emb(n_items, self.u.embedding_dim, 0.0, 0.0)
        counts = torch.from_numpy(seen.counts.astype(np.int64))
        self.register_buffer("indptr", torch.from_numpy(seen.indptr.astype(np.int64)))
        self.register_buffer("indices", torch.from_numpy(seen.indices.astype(np.int64)))
        self.register_buffer("keys", seen.keys.clone())
        self.register_buffer("norm", counts.clamp(min=1).double().pow(-self.alpha).float())
        self.n_items = n_items

    def _set_items(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(lens, items)`: each user's number of training items, and all of them, user by
        user (the CSR rows of `users`, concatenated)."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lens = ends - starts
        offsets = torch.cumsum(lens, 0) - lens
        pos = torch.arange(int(lens.sum()), device=users.device)
        return lens, self.indices[pos + torch.repeat_interleave(starts - offsets, lens)]

    def _user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """`e_u + n_u ** -alpha * sum_{i in I_u} p_i`, `[len(users), n_factors]`."""
        lens, items = self._set_items(users)
        weights = None
        if self.training and self.dropout:
            keep = torch.rand(len(items), device=users.device) >= self.dropout
            weights = keep.float() / (1.0 - self.dropout)
        sums = F.embedding_bag(items, self.p.weight, torch.cumsum(lens, 0) - lens, mode="sum",
                               per_sample_weights=weights)
        return self.u(users) + self.norm[users, None] * sums

    def _members(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each `(users, items)` pair (broadcast) is a training interaction."""
        q = users * self.n_items + items
        if len(self.keys) == 0:
            return torch.zeros_like(q, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, q.reshape(-1)).clamp_(max=len(self.keys) - 1)
        return (self.keys[pos] == q.reshape(-1)).reshape(q.shape)

    def _scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`[bs, m]` scores of `items [bs, m]` for `users [bs]`, each item left out of its
        user's set."""
        vec, q = self._user_vectors(users), self.i(items)
        out = torch.einsum("bf,bmf->bm", vec, q) + self.ib(items)[..., 0]
        member = self._members(users[:, None], items)
        if member.any():
            r, c = member.nonzero(as_tuple=True)
            own = (self.p(items[r, c]) * q[r, c]).sum(1) * self.norm[users[r]]
            out = out.index_put((r, c), -own, accumulate=True)
        return out

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores `[n]` of the pairs `(users[j], items[j])`."""
        return self._scores(users, items[:, None])[:, 0]

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores `[len(users), n_items]` of every item for `users` (a training item's score
        leaves it out of the user's set, as in training)."""
        out = self._user_vectors(users) @ self.i.weight.T + self.ib.weight[:, 0]
        lens, cols = self._set_items(users)
        if len(cols):
            rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lens)
            own = (self.p.weight[cols] * self.i.weight[cols]).sum(1) * self.norm[users[rows]]
            out = out.index_put((rows, cols), -own, accumulate=True)
        return out
