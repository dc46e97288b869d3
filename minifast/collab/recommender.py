"""A collab learner exported for serving: `recommend` and `predict_ratings` by raw id from one
file, on a machine that has neither the ratings nor the model's code.

`export_recommender` (what `CollabFilterLearner.export` calls) traces the model's pair score
`score(users, items)` with `minifast.export` and stores beside it, in the file's JSON header,
what raw-id serving needs: the id maps, the item names, the items each user saw in training,
which ids have training ratings and the baseline scores for unseen users. `minifast.load_learner`
returns an `ExportedRecommender` for such a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..checks import positive_int
from ..export import ExportedLearner, export_model
from .ids import UnknownIdError
from .interactions import Interactions

__all__ = ["APP", "ExportedRecommender", "export_recommender"]

#: The `info["app"]` of an export file written by `export_recommender`.
APP = "minifast.collab"


class PairScorer(nn.Module):
    """`forward(users, items) -> [n]`: the collab model's score of index pairs, the one
    function a recommender needs (what `export_recommender` traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores `[n]` of the pairs `(users[j], items[j])`."""
        score = getattr(self.model, "score", None)
        if score is not None:
            return score(users, items).reshape(-1)
        cats = torch.stack([users, items], 1)
        return self.model(cats, torch.zeros(len(cats), 0)).reshape(-1)


def _json_ids(ids: np.ndarray) -> list:
    """Raw ids as JSON values (numpy ints/floats/strings -> Python ones)."""
    return np.asarray(ids).tolist()


def export_recommender(model: nn.Module, path: str | os.PathLike, *, users: np.ndarray,
                       items: np.ndarray, seen: Interactions, user_known: np.ndarray,
                       item_known: np.ndarray, baseline: np.ndarray, titles=None,
                       ranking: bool = False) -> Path:
    """Write `model`'s pair score and the raw-id serving data to one export file: `users`,
    `items` the raw ids by index, `seen` each user's training items, `user_known`/`item_known`
    which indices have training ratings, `baseline` every item's score for an unseen user,
    `titles` the items' names by index (or None). Returns `path`."""
    info = {"app": APP, "model": type(model).__name__, "ranking": bool(ranking),
            "users": _json_ids(users), "items": _json_ids(items),
            "titles": None if titles is None else [str(t) for t in titles],
            "seen_indptr": seen.indptr.tolist(), "seen_indices": seen.indices.tolist(),
            "user_known": np.asarray(user_known, bool).tolist(),
            "item_known": np.asarray(item_known, bool).tolist(),
            "baseline": np.asarray(baseline, np.float64).tolist()}
    example = (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    return export_model(PairScorer(model), example, path, info)


class ExportedRecommender:
    """An exported collab learner (`minifast.load_learner` of a `CollabFilterLearner.export`
    file): `recommend(user, n)` and `predict_ratings(users, items)` by raw id, giving what the
    learner gave, and `predict(users, items)` on index arrays (`ExportedLearner.predict`)."""

    def __init__(self, exported: ExportedLearner):
        info = exported.info
        self.exported, self.info = exported, info
        self.idx2user, self.idx2item = np.array(info["users"]), np.array(info["items"])
        self._user_idx = {u: j for j, u in enumerate(info["users"])}
        self._item_idx = {i: j for j, i in enumerate(info["items"])}
        self.titles = None if info["titles"] is None else np.array(info["titles"], dtype=object)
        self.seen = Interactions(n_users=len(info["users"]), n_items=len(info["items"]),
                                 indptr=np.array(info["seen_indptr"], np.int64),
                                 indices=np.array(info["seen_indices"], np.int64))
        self.user_known = np.array(info["user_known"], bool)
        self.item_known = np.array(info["item_known"], bool)
        self.baseline = torch.tensor(info["baseline"], dtype=torch.float32)

    def predict(self, users, items) -> np.ndarray:
        """Scores of index pairs (0-based user and item indices), as float32."""
        return self.exported.predict(np.asarray(users, np.int64), np.asarray(items, np.int64))

    def _index(self, raw, role: str) -> int:
        """The index of a raw id with training ratings; -1 for one without (unseen)."""
        lookup, known = ((self._user_idx, self.user_known) if role == "user"
                         else (self._item_idx, self.item_known))
        key = raw.item() if isinstance(raw, np.generic) else raw
        j = lookup.get(key, -1)
        return j if j >= 0 and known[j] else -1

    def _unknown(self, raw, role: str, hint: str) -> UnknownIdError:
        raw = raw.item() if isinstance(raw, np.generic) else raw
        return UnknownIdError(f"{role} id {raw!r} has no training ratings in this export "
                              f"({self.exported.path}){hint}")

    def predict_ratings(self, users, items) -> np.ndarray:
        """The model's scores for raw user ids `users` and raw item ids `items` (arrays of one
        length), as float32; an id without training ratings raises `UnknownIdError`."""
        us, its = np.atleast_1d(np.asarray(users)), np.atleast_1d(np.asarray(items))
        if us.shape != its.shape:
            raise ValueError(f"predict_ratings: users and items must have one length, got "
                             f"{us.shape} and {its.shape}")
        ui = np.array([self._index(u, "user") for u in us], np.int64)
        ii = np.array([self._index(i, "item") for i in its], np.int64)
        for idx, raw, role in ((ui, us, "user"), (ii, its, "item")):
            if (idx < 0).any():
                raise self._unknown(raw[np.flatnonzero(idx < 0)[0]], role, "")
        return self.predict(ui, ii)

    def recommend(self, user, n: int = 10, exclude_seen: bool = True,
                  fallback: bool = False) -> pd.DataFrame:
        """The `n` best items for raw user id `user` as `item, [title,] score`, best first, as
        `CollabFilterLearner.recommend` gives them: candidates are the items with training
        ratings, less (with `exclude_seen`) the user's training items; an unseen user raises,
        or with `fallback` gets the baseline ranking."""
        positive_int(n, "n")
        u = self._index(user, "user")
        if u < 0 and not fallback:
            raise self._unknown(user, "user", "; pass fallback=True for the baseline ranking")
        n_items = len(self.idx2item)
        if u >= 0:
            scores = torch.from_numpy(self.predict(np.full(n_items, u), np.arange(n_items)))
        else:
            scores = self.baseline.clone()
        drop = torch.from_numpy(~self.item_known)
        if exclude_seen and u >= 0:
            drop = drop | self.seen.mask(np.array([u]), "cpu")[0]
        top = scores.masked_fill(drop, float("-inf")).topk(min(n, n_items))
        keep = torch.isfinite(top.values)
        idx = top.indices[keep].numpy()
        out = {"item": self.idx2item[idx]}
        if self.titles is not None:
            out["title"] = self.titles[idx]
        out["score"] = top.values[keep].numpy().astype(np.float32)
        return pd.DataFrame(out)

    def __repr__(self) -> str:
        return (f"ExportedRecommender(model={self.info['model']}, n_users={len(self.idx2user)}, "
                f"n_items={len(self.idx2item)}, path={str(self.exported.path)!r})")
