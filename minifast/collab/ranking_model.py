"""A model for ranking from implicit feedback, and scoring every item for a batch of users.

`ImplicitMF` scores `u . i + b_i`, unbounded (a ranking loss needs raw scores, not ratings
squashed into a range; a user bias would not change any user's ranking, so there is none).
`item_scores(model, users, n_items)` is the one place that scores all items for many users:
`recommend` and the all-items ranking metrics both use it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import positive_int
from ..runtime.modules import model_device, unwrap
from .models import CollabModel, get_emb

__all__ = ["ImplicitMF", "item_scores"]

_PAIRS = 1 << 20  # pairs per forward pass when a model can only score pairs


class ImplicitMF(CollabModel):
    """Matrix factorisation for ranking: `score = u . i + ib`, unbounded.

    `ImplicitMF(n_factors, n_users, n_items)`; factors initialised uniform(-0.05, 0.05),
    item biases at 0. Besides the collab models' calling convention, `forward(cats)` with
    cats `[bs, 1 + m]` (a user, then `m` items: a `NegativeSamplingLoader` batch) returns the
    `[bs, m]` scores of those items, and `score_items(users)` the `[n, n_items]` scores of
    every item.
    """

    def __init__(self, n_factors: int, n_users: int, n_items: int):
        super().__init__()
        n_factors = positive_int(n_factors, "n_factors")
        n_users, n_items = positive_int(n_users, "n_users"), positive_int(n_items, "n_items")
        self.u, self.i = get_emb(n_users, n_factors), get_emb(n_items, n_factors)
        self.ib = get_emb(n_items, 1, 0.0, 0.0)

    def forward(self, cats: torch.Tensor, conts: torch.Tensor | None = None) -> torch.Tensor:
        """`[bs, m]` scores of `cats[:, 1:]` for the users `cats[:, 0]` (`[bs, 1]` for plain
        `(user, item)` pairs; `[bs, n_items]`, every item, for cats `[bs, 1]` of users alone:
        a `PositivesLoader` batch); the 1-D `model(users, items)` form as the other models."""
        if cats.ndim == 2 and cats.shape[1] == 1:
            return self.score_items(cats[:, 0])
        if cats.ndim != 2 or cats.shape[1] <= 2:
            return super().forward(cats, conts)
        return self._scores(cats[:, 0], cats[:, 1:])

    def _scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`[bs, m]` scores of `items [bs, m]` for `users [bs]`."""
        return torch.einsum("bf,bmf->bm", self.u(users), self.i(items)) + self.ib(items)[..., 0]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores `[n]` of the pairs `(users[j], items[j])`."""
        return (self.u(users) * self.i(items)).sum(1) + self.ib(items)[:, 0]

    def score_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores `[len(users), n_items]` of every item for `users`."""
        return self.u(users) @ self.i.weight.T + self.ib.weight[:, 0]


def item_scores(model: nn.Module, users, n_items: int) -> torch.Tensor:
    """Scores `[len(users), n_items]` of every item for the user indices `users`, on the
    model's device, without gradients (call it in eval mode).

    A model with `score_items(users)` (e.g. `ImplicitMF`) does it in one product; any other
    collab model is asked for the scores of every (user, item) pair, in chunks."""
    m = unwrap(model)
    dev = model_device(model)
    users = torch.as_tensor(users, dtype=torch.int64, device=dev).reshape(-1)
    with torch.no_grad():
        if callable(getattr(m, "score_items", None)):
            return m.score_items(users).float()
        per = max(1, _PAIRS // n_items)
        out = []
        items = torch.arange(n_items, device=dev)
        for s in range(0, len(users), per):
            u = users[s:s + per]
            uu, ii = u.repeat_interleave(n_items), items.repeat(len(u))
            if callable(getattr(m, "score", None)):
                sc = m.score(uu, ii)
            else:
                sc = model(torch.stack([uu, ii], 1), torch.zeros(len(uu), 0, device=dev))
            out.append(sc.reshape(len(u), n_items).float())
        return torch.cat(out) if out else torch.zeros(0, n_items, device=dev)
