"""Rating and ranking metrics: RMSE (the core's `minifast.metrics.rmse`), and precision@k,
recall@k, NDCG@k per user.

`ranking_scores` computes the ranking metrics of a whole set at once; `RankingMetric` makes
them usable as `fit` metrics, which the core calls once on the whole validation set.
"""

from __future__ import annotations

import numpy as np
import torch

from ..checks import positive_int
from ..metrics import rmse

__all__ = [
    "rmse",
    "ranking_scores",
    "RankingMetric",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
]

_KINDS = ("precision", "recall", "ndcg")


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


class RankingMetric:
    """precision@k, recall@k or NDCG@k over a whole validation set, usable as a `fit` metric.

    `RankingMetric("ndcg", k=10, threshold=4.0, data=md)`; its column name is e.g.
    `ndcg@10`; the definitions are `ranking_scores`'.

    Ranking metrics need the whole validation set grouped by user. `fit`'s `validate` calls
    each metric once as `metric(preds, y)` on the whole set's predictions and targets, in
    the validation loader's order (fixed: validation is never shuffled; under DDP the ranks'
    shards are gathered back into it). The predictions do not say which user each row is
    for, so a `RankingMetric` is *bound* to the validation set: the user of every row, in
    that order. It checks that the targets it is given are those of the set it is bound to,
    so a metric bound to other data fails loudly instead of reporting a wrong number; `last`
    holds the latest value.

    `CollabFilterLearner` binds its ranking metrics to its data by itself; with the core
    `fit`, pass `data=` (or call `.bind(data)`).
    """

    def __init__(self, kind: str, k: int = 10, threshold: float = 4.0, data=None):
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        self.kind, self.k, self.threshold = kind, positive_int(k, "k"), float(threshold)
        self.__name__ = f"{kind}@{self.k}"
        self.users: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.last: float = float("nan")
        if data is not None:
            self.bind(data)

    @property
    def bound(self) -> bool:
        """Whether the metric knows its validation set."""
        return self.users is not None

    def bind(self, data) -> RankingMetric:
        """Bind to the validation set of `data` (a `ColumnarModelData` whose cats hold the user
        index in column 0), or to `(users, y)` arrays given directly."""
        if isinstance(data, tuple):
            users, y = data
        else:
            dl = getattr(data, "val_dl", None)
            tensors = getattr(dl, "tensors", None)
            if not tensors:
                raise ValueError(f"{self.__name__}: cannot bind to {type(data).__name__}: it "
                                 f"needs data.val_dl.tensors = (cats, conts, y)")
            users, y = tensors[0][:, 0], tensors[-1]
        self.users, self.y = _flat(users).astype(np.int64), _flat(y).astype(np.float32)
        if len(self.users) != len(self.y):
            raise ValueError(f"{self.__name__}: users and y have different lengths")
        return self

    def __call__(self, preds: torch.Tensor, y: torch.Tensor) -> float:
        """The metric of the whole bound validation set, from its predictions and targets."""
        if not self.bound:
            raise ValueError(
                f"{self.__name__} is not bound to a validation set: use it through "
                f"CollabFilterLearner (which binds it), or pass data= / call .bind(data)"
            )
        p, t = _flat(preds), _flat(y)
        n = len(self.users)
        if len(t) != n or len(p) != n:
            raise ValueError(
                f"{self.__name__} is bound to a validation set of {n} rows but was called on "
                f"{len(p)} predictions and {len(t)} targets: it takes the whole set at once; "
                f"bind it to the data it is evaluated on"
            )
        if not np.array_equal(t.astype(np.float32), self.y):
            raise ValueError(
                f"{self.__name__}: the targets seen differ from those of the bound validation "
                f"set (in order): bind it to the data it is evaluated on"
            )
        self.last = ranking_scores(self.users, p, t, self.k, self.threshold)[self.kind]
        return self.last

    def __repr__(self) -> str:
        return (f"RankingMetric({self.kind!r}, k={self.k}, threshold={self.threshold:g}, "
                f"{'bound to ' + str(len(self.users)) + ' rows' if self.bound else 'unbound'})")


def precision_at_k(k: int = 10, threshold: float = 4.0, data=None) -> RankingMetric:
    """Precision@k over the validation set (relevant: true rating >= `threshold`)."""
    return RankingMetric("precision", k, threshold, data)


def recall_at_k(k: int = 10, threshold: float = 4.0, data=None) -> RankingMetric:
    """Recall@k over the validation set (relevant: true rating >= `threshold`)."""
    return RankingMetric("recall", k, threshold, data)


def ndcg_at_k(k: int = 10, threshold: float = 4.0, data=None) -> RankingMetric:
    """NDCG@k (binary gains) over the validation set (relevant: true rating >= `threshold`)."""
    return RankingMetric("ndcg", k, threshold, data)
