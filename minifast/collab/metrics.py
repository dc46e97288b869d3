"""Rating and ranking metrics: RMSE (the core's `minifast.metrics.rmse`), and precision@k,
recall@k, NDCG@k and MAP@k per user, under two protocols.

- `"rated"`: each user's validation rows are ranked among themselves by predicted rating
  (`ranking_scores`); a relevant row has a true rating >= `threshold`.
- `"all_items"` (top-N recommendation): each user with held-out interactions gets every item
  they did not interact with in training ranked by the model, and the held-out items are the
  relevant ones (`topn_scores`), computed in chunks of users, one scoring pass each.

`RankingMetric` makes either usable as a `fit` metric, which the core calls once on the whole
validation set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..checks import positive_int
from ..metrics import rmse
from .interactions import Interactions
from .ranking_model import item_scores

__all__ = [
    "rmse",
    "ranking_scores",
    "topn_scores",
    "RankingMetric",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "map_at_k",
    "PROTOCOLS",
]

_KINDS = ("precision", "recall", "ndcg", "map")
#: The ranking protocols of `RankingMetric` (see the module docs).
PROTOCOLS = ("rated", "all_items")
_CELLS = 1 << 22  # scores held at once by topn_scores: users per chunk = _CELLS // n_items


def _flat(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a).reshape(-1)


def ranking_scores(users, preds, y, k: int = 10, threshold: float = 4.0) -> dict[str, float]:
    """`{"precision": .., "recall": .., "ndcg": .., "n_users": ..}` at `k`, vectorised over
    all rows; NaN when no user has a relevant item.

    Definitions, for users with at least one relevant rating (relevant: true rating >=
    `threshold`); each user's items ranked by predicted rating, top `k` kept: precision@k =
    hits / min(k, n_items_of_user) (a user with 3 items is not penalised for k=10),
    recall@k = hits / n_relevant, NDCG@k = DCG / ideal DCG with binary gains and
    `1/log2(rank+2)` discounts. Each is the mean over those users.
    """
    k = positive_int(k, "k")
    users, preds, y = _flat(users), _flat(preds).astype(np.float64), _flat(y).astype(np.float64)
    if not len(users) == len(preds) == len(y):
        raise ValueError(f"users, preds and y have different lengths "
                         f"({len(users)}, {len(preds)}, {len(y)})")
    nan = {"precision": float("nan"), "recall": float("nan"), "ndcg": float("nan"), "n_users": 0}
    if len(users) == 0:
        return nan
    order = np.lexsort((-preds, users))  # by user, then by prediction, highest first
    u, rel = users[order], y[order] >= threshold
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[starts, len(u)])
    group = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(len(u)) - starts[group]
    top = rel & (rank < k)
    disc = 1.0 / np.log2(np.arange(sizes.max()) + 2.0)
    hits = np.bincount(group, weights=top)
    n_rel = np.bincount(group, weights=rel).astype(np.int64)
    dcg = np.bincount(group, weights=top * disc[rank])
    keep = n_rel > 0
    if not keep.any():
        return nan
    idcg = np.cumsum(disc)[np.minimum(k, n_rel[keep]) - 1]
    return {
        "precision": float(np.mean(hits[keep] / np.minimum(k, sizes[keep]))),
        "recall": float(np.mean(hits[keep] / n_rel[keep])),
        "ndcg": float(np.mean(dcg[keep] / idcg)),
        "n_users": int(keep.sum()),
    }


def topn_scores(scores_of: Callable[[np.ndarray], torch.Tensor], seen: Interactions,
                heldout: Interactions, k: int = 10, chunk: int | None = None
                ) -> dict[str, float]:
    """`{"precision", "recall", "ndcg", "map", "n_users"}` at `k` of top-N recommendation
    over all items: for every user with held-out items not seen in training.

    `scores_of(user_indices)` returns the `[n, n_items]` scores of every item for those users
    (e.g. `lambda u: item_scores(model, u, n_items)`); the items of the user in `seen` (the
    training interactions) are removed from the candidates, and the user's items in
    `heldout` (minus those seen) are the relevant ones. With the `k` best candidates:
    precision@k = hits / k, recall@k = hits / n_relevant, NDCG@k = DCG / ideal DCG (binary
    gains, `1/log2(rank + 2)` discounts, ideal over `min(k, n_relevant)` hits) and MAP@k =
    the sum of precision@r at each hit's rank r, over `min(k, n_relevant)`; each the mean
    over those users (NaN when there is none). Scored `chunk` users at a time (default: about
    four million scores per chunk), one pass each, vectorised within it.
    """
    k = positive_int(k, "k")
    if seen.n_items != heldout.n_items or seen.n_users != heldout.n_users:
        raise ValueError(f"seen ({seen.n_users} users x {seen.n_items} items) and heldout "
                         f"({heldout.n_users} x {heldout.n_items}) index different data")
    n_items = seen.n_items
    users = np.flatnonzero(heldout.counts > 0)
    per = positive_int(chunk, "chunk") if chunk is not None else max(1, _CELLS // n_items)
    kk = min(k, n_items)
    disc = 1.0 / torch.log2(torch.arange(kk, dtype=torch.float64) + 2.0)
    sums, n_users = torch.zeros(4, dtype=torch.float64), 0
    for s in range(0, len(users), per):
        u = users[s:s + per]
        sc = scores_of(u)
        dev = sc.device
        seen_m = seen.mask(u, dev)
        rel_m = heldout.mask(u, dev) & ~seen_m
        n_rel = rel_m.sum(1).cpu().double()
        top = sc.float().masked_fill(seen_m, float("-inf")).topk(kk, dim=1).indices
        hits = rel_m.gather(1, top).cpu().double()
        keep = n_rel > 0
        hits, n_rel = hits[keep], n_rel[keep]
        n_hits, cap = hits.sum(1), torch.clamp(n_rel, max=kk)
        ideal = torch.cumsum(disc, 0)[cap.long() - 1]
        prec_at_r = torch.cumsum(hits, 1) / torch.arange(1, kk + 1, dtype=torch.float64)
        sums += torch.stack([(n_hits / k).sum(), (n_hits / n_rel).sum(),
                             ((hits * disc).sum(1) / ideal).sum(),
                             ((hits * prec_at_r).sum(1) / cap).sum()])
        n_users += int(keep.sum())
    if n_users == 0:
        return {"precision": float("nan"), "recall": float("nan"), "ndcg": float("nan"),
                "map": float("nan"), "n_users": 0}
    vals = (sums / n_users).tolist()
    return {"precision": vals[0], "recall": vals[1], "ndcg": vals[2], "map": vals[3],
            "n_users": n_users}


class RankingMetric:
    """precision@k, recall@k, NDCG@k or MAP@k over a whole validation set, usable as a `fit`
    metric, under either protocol of the module docs.

    `RankingMetric("ndcg", k=10, threshold=4.0, data=md)`; its column name is e.g.
    `ndcg@10`. `protocol="rated"` (the default) ranks each user's validation rows by
    prediction, with `ranking_scores`' definitions (relevant: true rating >= `threshold`,
    default 4.0; MAP is not offered). `protocol="all_items"` ranks every item the user has
    not interacted with in training, with `topn_scores`' definitions (relevant: the user's
    validation rows, those with rating >= `threshold` when one is given): it needs the model
    and the training interactions as well, `bind(data, model=..., n_items=...)`.

    Ranking metrics need the whole validation set grouped by user. `fit`'s `validate` calls
    each metric once as `metric(preds, y)` on the whole set's predictions and targets, in
    the validation loader's order (fixed: validation is never shuffled; under DDP the ranks'
    shards are gathered back into it). The predictions do not say which user each row is
    for, so a `RankingMetric` is *bound* to the validation set: the user (and, for
    "all_items", the item) of every row, in that order. It checks that what it is called on
    is that set (the targets, in order, for "rated"; the number of rows for "all_items",
    whose loader's targets are sampling weights), so a metric bound to other data fails
    loudly instead of reporting a wrong number; `last` holds the latest value. Under
    "all_items" the predictions are not used: the bound model scores every item, in chunks of
    users, in the eval mode `validate` runs in.

    `CollabFilterLearner` binds its ranking metrics to its data (and model) by itself; with
    the core `fit`, pass `data=` (and `model=` for "all_items"), or call `.bind(...)`.
    """

    def __init__(self, kind: str, k: int = 10, threshold: float | None = None, data=None,
                 protocol: str = "rated", model: torch.nn.Module | None = None,
                 n_items: int | None = None):
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if kind == "map" and protocol == "rated":
            raise ValueError('kind "map" (MAP@k) is computed under protocol="all_items" only')
        if threshold is None and protocol == "rated":
            threshold = 4.0
        self.kind, self.k, self.protocol = kind, positive_int(k, "k"), protocol
        self.threshold = None if threshold is None else float(threshold)
        self.__name__ = f"{kind}@{self.k}"
        self.users: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.model, self.seen, self.heldout = None, None, None
        self.last: float = float("nan")
        if data is not None:
            self.bind(data, model=model, n_items=n_items)

    @property
    def bound(self) -> bool:
        """Whether the metric knows its validation set."""
        return self.users is not None

    def bind(self, data, model: torch.nn.Module | None = None, n_items: int | None = None,
             seen: Interactions | None = None) -> RankingMetric:
        """Bind to the validation set of `data` (a `ModelData` whose loaders have `tensors` =
        (cats, conts, y), cats holding the user index in column 0 and the item index in
        column 1), or, for "rated", to `(users, y)` arrays given directly.

        "all_items" also needs `model` (scores every item; see `item_scores`) and `n_items`,
        and takes the training interactions from `data.trn_dl` unless `seen` is given."""
        if self.protocol == "all_items":
            return self._bind_all_items(data, model, n_items, seen)
        if isinstance(data, tuple):
            users, y = data
        else:
            cats, y = _val_tensors(data, self.__name__)
            users = cats[:, 0]
        self.users, self.y = _flat(users).astype(np.int64), _flat(y).astype(np.float32)
        if len(self.users) != len(self.y):
            raise ValueError(f"{self.__name__}: users and y have different lengths")
        return self

    def _bind_all_items(self, data, model, n_items, seen) -> RankingMetric:
        if model is None or n_items is None:
            raise ValueError(f'{self.__name__} (protocol="all_items") scores every item with '
                             f'the model: bind(data, model=..., n_items=...)')
        n_items = positive_int(n_items, "n_items")
        cats, y = _val_tensors(data, self.__name__)
        users, items = _flat(cats[:, 0]).astype(np.int64), _flat(cats[:, 1]).astype(np.int64)
        n_users = int(users.max()) + 1
        if seen is None:
            trn = getattr(getattr(data, "trn_dl", None), "tensors", None)
            if not trn:
                raise ValueError(f"{self.__name__}: cannot find the training interactions: "
                                 f"pass seen= or data whose trn_dl has tensors")
            seen = Interactions.from_pairs(trn[0][:, 0], trn[0][:, 1],
                                           max(n_users, int(trn[0][:, 0].max()) + 1), n_items)
        n_users = seen.n_users
        rel = slice(None) if self.threshold is None else _flat(y)[:len(users)] >= self.threshold
        self.heldout = Interactions.from_pairs(users[rel], items[rel], n_users, n_items)
        self.users, self.y, self.model, self.seen = users, None, model, seen
        return self

    def __call__(self, preds: torch.Tensor, y: torch.Tensor) -> float:
        """The metric of the whole bound validation set, from its predictions and targets."""
        if not self.bound:
            raise ValueError(
                f"{self.__name__} is not bound to a validation set: use it through "
                f"CollabFilterLearner (which binds it), or pass data= / call .bind(data)"
            )
        n = len(self.users)
        n_p, n_t = len(preds), len(y)
        if n_t != n or n_p != n:
            raise ValueError(
                f"{self.__name__} is bound to a validation set of {n} rows but was called on "
                f"{n_p} predictions and {n_t} targets: it takes the whole set at once; "
                f"bind it to the data it is evaluated on"
            )
        if self.protocol == "all_items":
            n_items = self.seen.n_items
            scores = topn_scores(lambda u: item_scores(self.model, u, n_items), self.seen,
                                 self.heldout, self.k)
            self.last = scores[self.kind]
            return self.last
        p, t = _flat(preds), _flat(y)
        if not np.array_equal(t.astype(np.float32), self.y):
            raise ValueError(
                f"{self.__name__}: the targets seen differ from those of the bound validation "
                f"set (in order): bind it to the data it is evaluated on"
            )
        self.last = ranking_scores(self.users, p, t, self.k, self.threshold)[self.kind]
        return self.last

    def __repr__(self) -> str:
        th = "" if self.threshold is None else f", threshold={self.threshold:g}"
        pr = "" if self.protocol == "rated" else f", protocol={self.protocol!r}"
        return (f"RankingMetric({self.kind!r}, k={self.k}{th}{pr}, "
                f"{'bound to ' + str(len(self.users)) + ' rows' if self.bound else 'unbound'})")


def _val_tensors(data, name: str):
    """`(cats, y)` of `data.val_dl.tensors`, or a ValueError saying what is needed."""
    dl = getattr(data, "val_dl", None)
    tensors = getattr(dl, "tensors", None)
    if not tensors:
        raise ValueError(f"{name}: cannot bind to {type(data).__name__}: it needs "
                         f"data.val_dl.tensors = (cats, conts, y)")
    return tensors[0], tensors[-1]


def precision_at_k(k: int = 10, threshold: float | None = None, data=None,
                   protocol: str = "rated") -> RankingMetric:
    """Precision@k over the validation set (see `RankingMetric` for the protocols; relevant
    under "rated": true rating >= `threshold`, default 4.0)."""
    return RankingMetric("precision", k, threshold, data, protocol)


def recall_at_k(k: int = 10, threshold: float | None = None, data=None,
                protocol: str = "rated") -> RankingMetric:
    """Recall@k over the validation set (see `RankingMetric` for the protocols)."""
    return RankingMetric("recall", k, threshold, data, protocol)


def ndcg_at_k(k: int = 10, threshold: float | None = None, data=None,
              protocol: str = "rated") -> RankingMetric:
    """NDCG@k (binary gains) over the validation set (see `RankingMetric` for the protocols)."""
    return RankingMetric("ndcg", k, threshold, data, protocol)


def map_at_k(k: int = 10, threshold: float | None = None, data=None) -> RankingMetric:
    """MAP@k of top-N recommendation over all items not seen in training (protocol
    "all_items"; see `topn_scores`)."""
    return RankingMetric("map", k, threshold, data, "all_items")
