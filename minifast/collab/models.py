"""Collaborative-filtering models: dot product, dot product with biases, and a small net.

Calling convention. `fit` calls `model(*xs)` on `ColumnarModelData`'s `(cats, conts)`, so
every model's `forward(cats, conts=None)` reads users from `cats[:, 0]` and items from
`cats[:, 1]` (the lesson's signature; `conts` is ignored) and returns `[bs, 1]`, the shape
of the targets. To score index tensors directly, `model(users, items)` also works (two 1-D
integer tensors: the fastai v0.7 library's signature; the 1-D first argument is what tells
the two apart), and `model.score(users, items)` returns a flat `[n]` tensor.

Embeddings are named as in fastai v0.7's library: `u`/`i` (factors), `ub`/`ib` (biases), so
interpretation code (`model.ib.weight`, `model.i.weight`) works on any of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_dropout, check_non_negative_number, positive_int

__all__ = [
    "CollabModel", "EmbeddingDot", "EmbeddingDotBias", "EmbeddingDotBiasFeatures",
    "EmbeddingNet", "get_emb", "MODELS",
    "embedding_l2",
]


def get_emb(n: int, n_factors: int, lo: float = -0.05, hi: float = 0.05) -> nn.Embedding:
    """An embedding of `n` rows by `n_factors`, initialised uniform(lo, hi) as in fastai v0.7."""
    e = nn.Embedding(n, n_factors)
    with torch.no_grad():
        e.weight.uniform_(lo, hi)
    return e


def _check_range(min_score: float, max_score: float) -> tuple[float, float]:
    lo, hi = float(min_score), float(max_score)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"the score range must be finite with min_score < max_score, got ({min_score}, "
            f"{max_score}); with min == max the sigmoid output range collapses to a point"
        )
    return lo, hi


class CollabModel(nn.Module):
    """Base of the collab models: the `(cats, conts)` / `(users, items)` calling convention.

    Subclasses implement `score(users, items) -> [n]` on index tensors.
    """

    def forward(self, cats: torch.Tensor, conts: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions `[n, 1]` for `cats[:, 0]` (users) and `cats[:, 1]` (items); or, with two
        1-D integer tensors, for `model(users, items)`."""
        if cats.ndim == 1:
            if conts is None or conts.ndim != 1 or conts.dtype.is_floating_point:
                raise ValueError(
                    f"{type(self).__name__}: called with a 1-D first argument (users), so the "
                    f"second must be a 1-D integer tensor of items; got "
                    f"{None if conts is None else (tuple(conts.shape), conts.dtype)}"
                )
            users, items = cats, conts
        elif cats.ndim == 2 and cats.shape[1] >= 2:
            users, items = cats[:, 0], cats[:, 1]
        else:
            raise ValueError(
                f"{type(self).__name__}: expected cats of shape [bs, 2] (user index, item index) "
                f"or model(users, items) with 1-D tensors; got cats of shape {tuple(cats.shape)}"
            )
        return self.score(users, items)[:, None]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted scores `[n]` for the pairs `(users[j], items[j])` (0-based indices)."""
        raise NotImplementedError


class EmbeddingDot(CollabModel):
    """The lesson's first model: the dot product of a user and an item embedding, no biases.

    `EmbeddingDot(n_users, n_items, n_factors=50)`, factors initialised uniform(0, 0.05) as in
    the lesson. Output is unbounded.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50):
        super().__init__()
        n_users, n_items = positive_int(n_users, "n_users"), positive_int(n_items, "n_items")
        n_factors = positive_int(n_factors, "n_factors")
        self.u = get_emb(n_users, n_factors, 0.0, 0.05)
        self.i = get_emb(n_items, n_factors, 0.0, 0.05)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Dot product of the user and item factors."""
        return (self.u(users) * self.i(items)).sum(1)


class EmbeddingDotBias(CollabModel):
    """Dot product plus a bias per user and per item, squashed into the score range.

    `sigmoid(u·i + ub + ib) * (max_score - min_score) + min_score`; four embeddings
    initialised uniform(-0.05, 0.05) (fastai v0.7's `EmbeddingDotBias`).
    """

    def __init__(self, n_factors: int, n_users: int, n_items: int, min_score: float,
                 max_score: float):
        super().__init__()
        n_factors = positive_int(n_factors, "n_factors")
        n_users, n_items = positive_int(n_users, "n_users"), positive_int(n_items, "n_items")
        self.min_score, self.max_score = _check_range(min_score, max_score)
        self.u, self.i = get_emb(n_users, n_factors), get_emb(n_items, n_factors)
        self.ub, self.ib = get_emb(n_users, 1), get_emb(n_items, 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`sigmoid(dot + ub + ib)` scaled to `[min_score, max_score]`."""
        res = (self.u(users) * self.i(items)).sum(1) + self.ub(users)[:, 0] + self.ib(items)[:, 0]
        return torch.sigmoid(res) * (self.max_score - self.min_score) + self.min_score


class EmbeddingDotBiasFeatures(EmbeddingDotBias):
    """`EmbeddingDotBias` whose items also get factors and a bias from side features.

    `item_features` is a float array `[n_items, k]` (row `j` describes item index `j`, e.g.
    `genre_features(load_movies(path), cf.idx2item)`: each movie's genres, weights summing
    to 1). A linear map `W` (`item_feat`, `k -> n_factors + 1`, no bias) adds
    `(F @ W)[:, :n_factors]` to each item's factors and `(F @ W)[:, -1]` to its bias, so
    items with few ratings borrow from the others of their genres. `W` starts at zero: the
    untrained model equals `EmbeddingDotBias`. `embedding_l2` penalises the offsets each
    rating uses with its `feature_lam`. What genres gain on MovieLens: docs/collab.md ("Item
    side features").
    """

    def __init__(self, n_factors: int, n_users: int, n_items: int, min_score: float,
                 max_score: float, item_features=None):
        super().__init__(n_factors, n_users, n_items, min_score, max_score)
        if item_features is None:
            raise ValueError("EmbeddingDotBiasFeatures needs item_features, a float array "
                             "[n_items, k] (e.g. genre_features(load_movies(path), cf.idx2item))")
        f = torch.as_tensor(item_features, dtype=torch.float32)
        if f.ndim != 2 or f.shape[0] != n_items or f.shape[1] == 0:
            raise ValueError(f"item_features must be [n_items={n_items}, k >= 1], got shape "
                             f"{tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise ValueError("item_features has NaN or infinite values")
        self.register_buffer("item_features", f)
        self.item_feat = nn.Linear(f.shape[1], self.u.embedding_dim + 1, bias=False)
        nn.init.zeros_(self.item_feat.weight)

    def feature_offsets(self, items: torch.Tensor) -> torch.Tensor:
        """`[n, n_factors + 1]`: the feature part of each item's factors and (last) bias."""
        return self.item_feat(self.item_features[items])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`sigmoid(u·(i + fi) + ub + ib + fb)` scaled to `[min_score, max_score]`."""
        off = self.feature_offsets(items)
        res = ((self.u(users) * (self.i(items) + off[:, :-1])).sum(1) + self.ub(users)[:, 0]
               + self.ib(items)[:, 0] + off[:, -1])
        return torch.sigmoid(res) * (self.max_score - self.min_score) + self.min_score


class EmbeddingNet(CollabModel):
    """The lesson's neural net: concatenated embeddings, dropout, one hidden layer.

    `dropout(p1) -> Linear(2*n_factors, nh) -> ReLU -> dropout(p2) -> Linear(nh, 1) ->
    sigmoid * (max - min + 1) + min - 0.5` (half a step of head-room past each end, as in
    the lesson, so the extreme ratings are reachable). Embeddings uniform(-0.05, 0.05).
    """

    def __init__(self, n_factors: int, n_users: int, n_items: int, min_score: float,
                 max_score: float, nh: int = 10, p1: float = 0.05, p2: float = 0.5):
        super().__init__()
        n_factors = positive_int(n_factors, "n_factors")
        n_users, n_items = positive_int(n_users, "n_users"), positive_int(n_items, "n_items")
        nh = positive_int(nh, "nh")
        p1, p2 = check_dropout(p1, "p1"), check_dropout(p2, "p2")
        self.min_score, self.max_score = _check_range(min_score, max_score)
        self.u, self.i = get_emb(n_users, n_factors), get_emb(n_items, n_factors)
        self.lin1, self.lin2 = nn.Linear(2 * n_factors, nh), nn.Linear(nh, 1)
        self.drop1, self.drop2 = nn.Dropout(p1), nn.Dropout(p2)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The net's prediction, scaled to `[min_score - 0.5, max_score + 0.5]`."""
        x = self.drop1(torch.cat([self.u(users), self.i(items)], dim=1))
        x = self.drop2(F.relu(self.lin1(x)))
        span = self.max_score - self.min_score + 1
        return torch.sigmoid(self.lin2(x))[:, 0] * span + self.min_score - 0.5


def embedding_l2(model: nn.Module, lam: float, bias_lam: float | None = None,
                 counts=None, alpha: float = 0.0, feature_lam: float | None = None):
    """A `reg_fn(out, xs, loss)` adding the classic matrix-factorisation penalty: `lam` times
    the squared norms of the factor rows used by each rating (`u`, `i`), plus `bias_lam`
    (default `lam`) times their squared biases (`ub`, `ib`, when the model has them), averaged
    over the batch.

    Unlike weight decay, which shrinks every row at every step, this regularises each
    user/item in proportion to how often it is rated, and only through its own ratings (how
    the two compare on MovieLens: docs/collab.md, "Regularising the embeddings").

    Frequency scaling: with `counts=(user_counts, item_counts)` (each row's number of
    training ratings, e.g. `np.bincount` of the training users and items) and `alpha > 0`,
    each rating's penalty on a row is weighted by `max(n, 1) ** -alpha`, where `n` is that
    row's count, so a row's total penalty grows like `n ** (1 - alpha)` instead of `n`:
    `alpha=0` is the plain penalty above, `alpha=0.5` is MyMediaLite's "frequency
    regularisation" (`lam` then needs to be about sqrt(typical n) times larger), `alpha=1`
    gives every row the same total penalty.

    A model with item side features (`EmbeddingDotBiasFeatures`) also gets `feature_lam`
    (default `bias_lam`) times the squared norm of the feature offsets each rating uses
    (`model.feature_offsets(items)`), not frequency-scaled: its weights are shared by items.
    """
    lam = check_non_negative_number(lam, "lam")
    bias_lam = lam if bias_lam is None else check_non_negative_number(bias_lam, "bias_lam")
    feature_lam = (bias_lam if feature_lam is None
                   else check_non_negative_number(feature_lam, "feature_lam"))
    alpha = check_non_negative_number(alpha, "alpha")
    for name in ("u", "i"):
        if not isinstance(getattr(model, name, None), nn.Embedding):
            raise ValueError(f"embedding_l2 needs factor embeddings `.u` and `.i`; "
                             f"{type(model).__name__} has no `.{name}`")
    has_bias = isinstance(getattr(model, "ub", None), nn.Embedding)
    has_features = callable(getattr(model, "feature_offsets", None))
    wu = wi = None
    if alpha:
        if counts is None:
            raise ValueError("alpha > 0 weights each row by its number of training ratings: "
                             "pass counts=(user_counts, item_counts)")
        wu, wi = (_row_weights(c, e, alpha, role) for c, e, role in
                  ((counts[0], model.u, "user"), (counts[1], model.i, "item")))

    def reg_fn(out, xs, loss):
        users, items = xs[0][:, 0], xs[0][:, 1]
        pu, pi = lam * model.u(users).pow(2).sum(1), lam * model.i(items).pow(2).sum(1)
        if has_bias and bias_lam:
            pu = pu + bias_lam * model.ub(users)[:, 0] ** 2
            pi = pi + bias_lam * model.ib(items)[:, 0] ** 2
        if wu is not None:
            pu, pi = pu * wu[users], pi * wi[items]
        pen = pu + pi
        if has_features and feature_lam:
            pen = pen + feature_lam * model.feature_offsets(items).pow(2).sum(1)
        return loss + pen.mean()

    return reg_fn


def _row_weights(counts, emb: nn.Embedding, alpha: float, role: str) -> torch.Tensor:
    """`max(count, 1) ** -alpha` per row of `emb`, on its device."""
    c = torch.as_tensor(counts).reshape(-1)
    if c.dtype.is_floating_point or c.dtype == torch.bool or len(c) != emb.num_embeddings:
        raise ValueError(f"{role} counts must be {emb.num_embeddings} integers (one per row of "
                         f"the {role} embedding), got {len(c)} of {c.dtype}")
    if (c < 0).any():
        raise ValueError(f"{role} counts must be >= 0")
    return c.clamp(min=1).to(emb.weight.device, torch.float32).pow(-alpha)


#: Model names accepted by `CollabFilterDataset.get_model(model=...)`.
MODELS = {"dotbias": EmbeddingDotBias, "dot": EmbeddingDot, "net": EmbeddingNet,
          "features": EmbeddingDotBiasFeatures}
