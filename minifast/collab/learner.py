"""CollabFilterLearner: a Learner that knows its CollabFilterDataset, so it speaks raw ids.

Predictions and recommendations by raw id, with a baseline for ids never seen in training
(see `CollabFilterLearner`), and ranking metrics bound to the validation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..checks import positive_int
from ..learner import Learner
from ..runtime.modules import eval_mode, unwrap
from ..runtime.ranks import is_main_process
from .ids import UnknownIdError, item_titles
from .interactions import Interactions
from .metrics import RankingMetric, ranking_scores
from .ranking_model import item_scores
from .recommender import export_recommender

__all__ = ["CollabFilterLearner"]

_SHRINK = 10.0
_CHUNK = 1 << 16
_CELLS = 1 << 22  # scores recommend holds at once: users per pass = _CELLS // n_items


class CollabFilterLearner(Learner):
    """`Learner` for collaborative filtering (MSE loss by default) with raw-id predictions
    (`predict_ratings`), recommendations (`recommend`) and ranking metrics bound to its
    validation set automatically.

    `cf` is the `CollabFilterDataset` the data came from (id maps); `item_names` an optional
    mapping raw item id -> name (e.g. `movie_titles(path)`) used by `recommend` and the
    interpretation functions. `ranking=True` (set by `get_learner(loss="bpr"|"softmax")`)
    says the model's outputs are ranking scores learnt from implicit feedback, not ratings:
    the baseline for unseen users is then the items' popularity. Other keyword arguments go
    to `Learner`.

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

    def __init__(self, data, model: torch.nn.Module, cf=None, item_names=None,
                 ranking: bool = False, **kwargs):
        kwargs.setdefault("crit", F.mse_loss)
        super().__init__(data, model, **kwargs)
        self.cf, self.item_names, self.ranking = cf, item_names, bool(ranking)
        self._baseline: dict | None = None
        self._seen: tuple | None = None
        self._bind_metrics(self.metrics)

    def _bind_metrics(self, metrics) -> None:
        """Ranking metrics evaluate on this learner's validation set (and, under the
        "all_items" protocol, with its model and training interactions), whatever they were
        given."""
        for m in metrics or []:
            if isinstance(m, RankingMetric):
                if m.protocol == "all_items":
                    cf = self._need_cf()
                    m.bind(self.data, model=self.model, n_items=cf.n_items,
                           seen=self.seen_items())
                else:
                    m.bind(self.data)

    def seen_items(self) -> Interactions:
        """The items each user interacted with in training (the training rows of this
        learner's data), as `Interactions` (CSR: user index -> sorted item indices): what
        `recommend(exclude_seen=True)` and the "all_items" ranking metrics exclude."""
        dl = self.data.trn_dl
        if self._seen is None or self._seen[0] is not dl:
            cf = self._need_cf()
            cats = dl.tensors[0]
            self._seen = (dl, Interactions.from_pairs(cats[:, 0], cats[:, 1], cf.n_users,
                                                      cf.n_items))
        return self._seen[1]

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
        """The `n` items with the highest score for raw user id `user`: `item, [title,]
        score`, best first. For a batch of users (a list or array of raw ids): one DataFrame
        `user, item, [title,] score`, each user's `n` rows best first, the users in the order
        given (`df.groupby("user")` splits it).

        Candidates are the items with training interactions; `exclude_seen` (the default)
        drops those the user interacted with in training (`seen_items()`), so items held out
        for validation stay candidates and a recommendation can be checked against them.
        Fewer than `n` rows come back for a user with fewer candidates. All items are scored
        for many users at once (`item_scores`), then the best taken with one `topk`.

        The score is the model's output (the predicted rating, or a ranking score for a
        ranking learner). An unseen user raises, or with `fallback` gets the baseline: the
        items' `mu + b_i` (clipped to the score range) for a rating learner, their number of
        training interactions for a ranking one.
        """
        positive_int(n, "n")
        batch = np.ndim(user) > 0
        users = np.asarray(user if batch else [user]).reshape(-1)
        u = self._indices(users, "user", fallback, "item")
        items, scores = self._top_items(u, n, exclude_seen)
        cf = self._need_cf()
        valid = np.isfinite(scores)
        ids = cf.idx2item[items[valid]]
        out = {"user": np.repeat(users, valid.sum(1))} if batch else {}
        out["item"] = ids
        names = item_titles(self, titles, ids)
        if names is not None:
            out["title"] = names
        out["score"] = scores[valid].astype(np.float32)
        return pd.DataFrame(out)

    def _top_items(self, u: np.ndarray, n: int, exclude_seen: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
        """`(items [len(u), k], scores [len(u), k])`, k = min(n, n_items), best first, for
        user indices `u` (-1: unseen, the baseline); `-inf` where no candidate is left."""
        cf, st = self._need_cf(), self._train_stats()
        n_items = cf.n_items
        k, per = min(n, n_items), max(1, _CELLS // n_items)
        dev = next(self.model.parameters()).device
        no_cand = torch.from_numpy(~st["item_known"]).to(dev)
        base = self._baseline_scores().to(dev)
        seen = self.seen_items() if exclude_seen else None
        items, scores = [], []
        with eval_mode(self.model) as model:
            for s in range(0, len(u), per):
                uc = u[s:s + per]
                known = torch.from_numpy(uc >= 0).to(dev)
                sc = base.expand(len(uc), -1).clone()
                if known.any():
                    sc[known] = item_scores(model, uc[uc >= 0], n_items)
                drop = no_cand.expand(len(uc), -1)
                if seen is not None:
                    drop = drop | seen.mask(np.maximum(uc, 0), dev) & known[:, None]
                top = sc.masked_fill(drop, float("-inf")).topk(k, dim=1)
                items.append(top.indices.cpu().numpy())
                scores.append(top.values.cpu().numpy())
        return np.concatenate(items), np.concatenate(scores)

    def _baseline_scores(self) -> torch.Tensor:
        """Scores of every item for a user without training interactions (see `recommend`)."""
        cf, st = self._need_cf(), self._train_stats()
        if self.ranking:
            return torch.from_numpy(np.bincount(self.seen_items().indices,
                                                minlength=cf.n_items).astype(np.float32))
        return torch.from_numpy(np.clip(st["mu"] + st["b_i"], cf.min_score,
                                        cf.max_score).astype(np.float32))

    def ranking_scores(self, k: int = 10, threshold: float = 4.0) -> dict[str, float]:
        """precision@k, recall@k and NDCG@k of the current model on the validation set."""
        cats, *_, y = self.data.val_dl.tensors
        return ranking_scores(cats[:, 0], self.predict(), y, k, threshold)

    def export(self, path) -> Path:
        """Write this learner for serving to the file `path`: `minifast.load_learner(path)`
        then gives an `ExportedRecommender` whose `recommend` and `predict_ratings` by raw id
        match this learner's, with no ratings and no model code (`minifast.collab.recommender`)."""
        cf, st = self._need_cf(), self._train_stats()
        if not is_main_process():
            return Path(path)
        return export_recommender(
            unwrap(self.model), path, users=cf.idx2user, items=cf.idx2item,
            seen=self.seen_items(), user_known=st["user_known"], item_known=st["item_known"],
            baseline=self._baseline_scores().numpy(), titles=item_titles(self, None, cf.idx2item),
            ranking=self.ranking)

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
