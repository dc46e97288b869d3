"""CollabFilterLearner: a Learner that knows its CollabFilterDataset, so it speaks raw ids.

Predictions and recommendations by raw id, with a baseline for ids never seen in training
(see `CollabFilterLearner`), and ranking metrics bound to the validation set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..checks import positive_int
from ..learner import Learner
from ..runtime.modules import eval_mode, unwrap
from .ids import UnknownIdError, item_titles
from .metrics import RankingMetric, ranking_scores

__all__ = ["CollabFilterLearner"]

_SHRINK = 10.0
_CHUNK = 1 << 16


class CollabFilterLearner(Learner):
    """`Learner` for collaborative filtering (MSE loss by default) with raw-id predictions
    (`predict_ratings`), recommendations (`recommend`) and ranking metrics bound to its
    validation set automatically.

    `cf` is the `CollabFilterDataset` the data came from (id maps); `item_names` an optional
    mapping raw item id -> name (e.g. `movie_titles(path)`) used by `recommend` and the
    interpretation functions. Other keyword arguments go to `Learner`.

    Unseen ids. An id is *known* when it has at least one training rating: an id that is not
    in the data set at all, or that appears only in validation rows (its embedding was never
    trained, only initialised), is *unseen*. By default predicting for an unseen id raises an
    `UnknownIdError` naming it. With `fallback=True` such pairs get a baseline instead of the
    model's output: the global mean `mu` of the training ratings plus the known side's bias,
    where the biases are the damped means of the training residuals (Koren's baseline
    predictor): `b_i = sum(r - mu) / (n_i + shrink)` over item i's training ratings, and
    `b_u = sum(r - mu - b_i) / (n_u + shrink)` over user u's, `shrink = 10`. So an unseen user
    with a known item gets `mu + b_i`, a known user with an unseen item `mu + b_u`, and a pair
    of two unseen ids `mu`; all clipped to `[min_score, max_score]`. These are computed from
    the training rows once, when first needed.
    """

    def __init__(self, data, model: torch.nn.Module, cf=None, item_names=None, **kwargs):
        kwargs.setdefault("crit", F.mse_loss)
        super().__init__(data, model, **kwargs)
        self.cf, self.item_names = cf, item_names
        self._baseline: dict | None = None
        self._bind_metrics(self.metrics)

    def _bind_metrics(self, metrics) -> None:
        """Ranking metrics evaluate on this learner's validation set, whatever they were given."""
        for m in metrics or []:
            if isinstance(m, RankingMetric):
                m.bind(self.data)

    def fit(self, lrs, n_cycle: int, *args, metrics: Sequence | None = None, **kwargs):
        """`Learner.fit`; ranking metrics are (re)bound to this learner's validation set."""
        self._bind_metrics(self.metrics if metrics is None else (
            metrics if isinstance(metrics, (list, tuple)) else [metrics]))
        return super().fit(lrs, n_cycle, *args, metrics=metrics, **kwargs)

    # ---------------------------------------------------------------- raw ids

    def _need_cf(self):
        """The `CollabFilterDataset`, or a ValueError when the learner was built without it."""
        if self.cf is None:
            raise ValueError("this learner was built without its CollabFilterDataset (cf=...): "
                             "raw ids cannot be mapped to indices")
        return self.cf

    def _train_stats(self) -> dict:
        """Which users/items have training ratings, and the damped baseline biases."""
        if self._baseline is None:
            cf = self._need_cf()
            cats, *_, y = self.data.trn_dl.tensors
            u, i = cats[:, 0].numpy(), cats[:, 1].numpy()
            r = y.reshape(-1).double().numpy()
            mu = float(r.mean())
            n_i = np.bincount(i, minlength=cf.n_items)
            n_u = np.bincount(u, minlength=cf.n_users)
            b_i = np.bincount(i, weights=r - mu, minlength=cf.n_items) / (n_i + _SHRINK)
            b_u = np.bincount(u, weights=r - mu - b_i[i], minlength=cf.n_users) / (n_u + _SHRINK)
            self._baseline = {"mu": mu, "b_u": b_u, "b_i": b_i, "user_known": n_u > 0,
                              "item_known": n_i > 0}
        return self._baseline

    def _lookup(self, ids, role: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(flat raw ids, their indices or -1 when not in the data set, trained mask)`."""
        cf, stats = self._need_cf(), self._train_stats()
        flat = np.asarray(ids).reshape(-1)
        idx = (cf.user_idxs if role == "user" else cf.item_idxs)(flat, missing="ignore")
        trained = np.zeros(len(idx), dtype=bool)
        trained[idx >= 0] = stats[f"{role}_known"][idx[idx >= 0]]
        return flat, idx, trained

    def is_known(self, users=None, items=None) -> np.ndarray:
        """Whether each raw id has training ratings (is *known*, in the class docs' sense:
        the model predicts for it without `fallback`), as a bool array shaped like the ids
        (0-d for a scalar). Pass exactly one of `users` or `items`."""
        if (users is None) == (items is None):
            raise ValueError("is_known: pass exactly one of users= or items=")
        ids, role = (users, "user") if items is None else (items, "item")
        return self._lookup(ids, role)[2].reshape(np.shape(ids))

    def _indices(self, ids, role: str, fallback: bool, other: str) -> np.ndarray:
        """Flat indices of raw ids; -1 for unseen ones (only with `fallback`)."""
        flat, idx, trained = self._lookup(ids, role)
        if not trained.all() and not fallback:
            j = int(np.flatnonzero(~trained)[0])
            why = ("is not in the data set" if idx[j] < 0 else
                   "appears only in validation rows, so its embedding was never trained")
            n_bad = int((~trained).sum())
            more = f" ({n_bad} unseen {role} ids in all)" if n_bad > 1 else ""
            raise UnknownIdError(
                f"{role} id {flat[j].item() if hasattr(flat[j], 'item') else flat[j]!r} {why}"
                f"{more}; pass fallback=True to predict the global mean plus the {other}'s "
                f"bias for unseen ids"
            )
        return np.where(trained, idx, -1)

    def _scores(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Model outputs for index pairs, in eval mode, in chunks."""
        p = next(self.model.parameters())
        out = np.empty(len(u), dtype=np.float32)
        with eval_mode(self.model) as model:
            for s in range(0, len(u), _CHUNK):
                cats = torch.from_numpy(np.stack([u[s:s + _CHUNK], i[s:s + _CHUNK]], 1)).to(p.device)
                conts = torch.zeros(len(cats), 0, device=p.device)
                out[s:s + _CHUNK] = model(cats, conts).reshape(-1).float().cpu().numpy()
        return out

    def predict_ratings(self, users, items, fallback: bool = False) -> np.ndarray:
        """Predicted ratings of raw user ids `users` for raw item ids `items` (scalars or
        arrays of one length, or any shapes that broadcast against each other), as float32;
        shapes that do not broadcast raise a ValueError naming both.

        An id without training ratings raises `UnknownIdError` naming it, unless `fallback`
        (then: global mean + the known side's bias; see the class docs).
        """
        shape = _pair_shape(users, items)
        ui = self._indices(users, "user", fallback, "item")
        ii = self._indices(items, "item", fallback, "user")
        ui, ii = (np.broadcast_to(a.reshape(np.shape(x)), shape).reshape(-1)
                  for a, x in ((ui, users), (ii, items)))
        both = (ui >= 0) & (ii >= 0)
        out = np.empty(len(ui), dtype=np.float32)
        out[both] = self._scores(ui[both], ii[both])
        if not both.all():
            st, cf = self._train_stats(), self._need_cf()
            base = np.full((~both).sum(), st["mu"])
            uu, iu = ui[~both], ii[~both]
            base[uu >= 0] += st["b_u"][uu[uu >= 0]]
            base[iu >= 0] += st["b_i"][iu[iu >= 0]]
            out[~both] = np.clip(base, cf.min_score, cf.max_score)
        return out.reshape(shape)

    def recommend(self, user, n: int = 10, exclude_seen: bool = True, titles=None,
                  fallback: bool = False) -> pd.DataFrame:
        """The `n` items with the highest predicted rating for raw user id `user`:
        `item, [title,] score`, best first.

        Candidates are the items with training ratings; `exclude_seen` drops those the user
        has already rated (anywhere in the data set). An unseen user raises, or with
        `fallback` is recommended the items with the highest baseline `mu + b_i`.
        """
        positive_int(n, "n")
        cf, st = self._need_cf(), self._train_stats()
        u = int(self._indices([user], "user", fallback, "item")[0])
        cand = np.flatnonzero(st["item_known"])
        in_data = cf.user_idxs([user], missing="ignore")[0]
        if exclude_seen and in_data >= 0:
            cand = cand[~np.isin(cand, cf.item_col[cf.user_col == in_data])]
        if u >= 0:
            scores = self._scores(np.full(len(cand), u), cand)
        else:
            scores = np.clip(st["mu"] + st["b_i"][cand], cf.min_score, cf.max_score)
        best = np.argsort(-scores, kind="stable")[:n]
        ids = cf.idx2item[cand[best]]
        out = {"item": ids}
        names = item_titles(self, titles, ids)
        if names is not None:
            out["title"] = names
        out["score"] = scores[best].astype(np.float32)
        return pd.DataFrame(out)

    def ranking_scores(self, k: int = 10, threshold: float = 4.0) -> dict[str, float]:
        """precision@k, recall@k and NDCG@k of the current model on the validation set."""
        cats, *_, y = self.data.val_dl.tensors
        return ranking_scores(cats[:, 0], self.predict(), y, k, threshold)

    def __repr__(self) -> str:
        cf = "" if self.cf is None else f", n_users={self.cf.n_users}, n_items={self.cf.n_items}"
        return f"CollabFilterLearner(model={type(unwrap(self.model)).__name__}{cf})"


def _pair_shape(users, items) -> tuple[int, ...]:
    """The shape `users` and `items` broadcast to, or a ValueError naming both shapes."""
    su, si = np.shape(users), np.shape(items)
    try:
        return np.broadcast_shapes(su, si)
    except ValueError:
        lens = (f"{su[0]} users and {si[0]} items, shapes {su} and {si}" if su and si
                else f"shapes {su} and {si}")
        raise ValueError(f"predict_ratings: users and items must have the same length (or "
                         f"broadcast against each other), or one be a scalar; got {lens}"
                         ) from None
