"""A linear blend of rating models, its weights fitted on held-out ratings.

Models that err differently cancel part of each other's errors: on ml-100k the L-BFGS
AutoRec (`glocal_learner`), the Adam one (`autorec_learner`) and the genre-aware
factorisation model blended beat each of them alone (docs/collab.md, "Blending"). The
weights must be fitted on ratings the members were not trained on; the same recipes are
then refitted on all the training ratings and blended with those weights:

    hold = get_cv_idxs(len(train), val_pct=0.1)       # ratings the members do not see
    cf = CollabFilterDataset.from_data_frame(path, train, "userId", "movieId", "rating")
    members = {"glocal": ..., "genres": ...}          # each fitted with val_idxs=hold
    held = train.iloc[hold]
    blend = RatingBlend.fit(member_predictions(members, held.userId, held.movieId),
                            held.rating, y_range=(1, 5))
    # the same recipes refitted on all of `train` (`final`), then, for any pairs:
    blend.predict(member_predictions(final, users, items))

`predict_matrix` gives the blend of every (item, user) pair, the teacher that distils the
blend into one network (`glocal_learner(..., teacher=...)`, docs/collab.md, "Distilling").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from attrs import field, frozen

from ..checks import positive_int

__all__ = ["RatingBlend", "member_predictions"]


def member_predictions(learners: Mapping[str, object], users, items,
                       fallback: bool = True) -> dict[str, np.ndarray]:
    """Each learner's `predict_ratings(users, items, fallback)` (raw ids), by the same name:
    the input of `RatingBlend.fit` and `RatingBlend.predict`. `fallback` (default on, since
    a blend must give every pair a value) lets an id without training ratings get the
    learner's baseline instead of raising."""
    if not isinstance(learners, Mapping) or not learners:
        raise ValueError("learners must be a non-empty mapping of name -> learner with "
                         f"predict_ratings, got {learners!r}")
    users, items = np.asarray(users), np.asarray(items)
    out = {}
    for name, learn in learners.items():
        if not callable(getattr(learn, "predict_ratings", None)):
            raise TypeError(f"learner {name!r} ({type(learn).__name__}) has no "
                            "predict_ratings(users, items, fallback)")
        out[name] = np.asarray(learn.predict_ratings(users, items, fallback=fallback),
                               dtype=np.float64).reshape(-1)
    return out


def _columns(preds: Mapping[str, object], names: tuple[str, ...] | None) -> np.ndarray:
    """`preds` as an `[n, len(names)]` float64 matrix in `names`' order (the mapping's own
    order when `names` is None), each member checked: 1-D, one length, finite."""
    if not isinstance(preds, Mapping) or not preds:
        raise ValueError(f"preds must be a non-empty mapping of name -> predictions, got "
                         f"{type(preds).__name__}")
    if names is not None and set(preds) != set(names):
        missing, extra = sorted(set(names) - set(preds)), sorted(set(preds) - set(names))
        raise ValueError(f"the blend was fitted on {list(names)}; predictions are missing "
                         f"{missing} and have extra {extra}")
    cols = []
    for name in names or tuple(preds):
        col = np.asarray(preds[name], dtype=np.float64)
        if col.ndim != 1:
            raise ValueError(f"predictions of {name!r} must be 1-D, got shape {col.shape}")
        if cols and len(col) != len(cols[0]):
            raise ValueError(f"predictions of {name!r} have {len(col)} values, the others "
                             f"{len(cols[0])}")
        if not np.isfinite(col).all():
            bad = int(np.flatnonzero(~np.isfinite(col))[0])
            raise ValueError(f"predictions of {name!r} are not finite (position {bad}: "
                             f"{col[bad]})")
        cols.append(col)
    return np.stack(cols, 1)


@frozen
class RatingBlend:
    """`intercept + sum(weights[k] * predictions of names[k])`, clipped to `y_range` when
    given: a least-squares blend of rating models. Make one with `RatingBlend.fit` on
    held-out ratings; `predict` applies it to the same models' predictions elsewhere."""

    names: tuple[str, ...] = field(converter=tuple)
    weights: tuple[float, ...] = field(converter=lambda w: tuple(
        float(v) for v in np.asarray(w, dtype=np.float64).reshape(-1)))
    intercept: float = field(converter=float)
    y_range: tuple[float, float] | None = None

    def __attrs_post_init__(self):
        if len(self.weights) != len(self.names):
            raise ValueError(f"weights must hold one number per member ({len(self.names)}: "
                             f"{list(self.names)}), got {len(self.weights)}")
        r = self.y_range
        if r is not None and not (len(r) == 2 and float(r[0]) < float(r[1])):
            raise ValueError(f"y_range must be (low, high) with low < high, got {r!r}")

    @classmethod
    def fit(cls, preds: Mapping[str, object], ratings,
            y_range: tuple[float, float] | None = None) -> RatingBlend:
        """The weights and intercept minimising the squared error of the blend of `preds`
        (`{name: predictions}`, e.g. `member_predictions`) against `ratings`, which the
        members must not have been trained on. Needs more ratings than members + 1."""
        x = _columns(preds, None)
        y = np.asarray(ratings, dtype=np.float64).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"ratings has {len(y)} values, the predictions {len(x)}")
        if not np.isfinite(y).all():
            raise ValueError("ratings must be finite (a NaN or inf is among them)")
        if len(y) <= x.shape[1] + 1:
            raise ValueError(f"fitting {x.shape[1]} weights and an intercept needs more than "
                             f"{x.shape[1] + 1} ratings, got {len(y)}")
        coef, *_ = np.linalg.lstsq(np.c_[np.ones(len(y)), x], y, rcond=None)
        return cls(tuple(preds), coef[1:], coef[0], y_range)

    def predict(self, preds: Mapping[str, object]) -> np.ndarray:
        """The blended ratings of `preds` (`{name: predictions}` for the names fitted, in any
        order), float32."""
        out = self.intercept + _columns(preds, self.names) @ np.array(self.weights)
        if self.y_range is not None:
            out = np.clip(out, *self.y_range)
        return out.astype(np.float32)

    def predict_matrix(self, learners: Mapping[str, object], cf,
                       items_per_chunk: int = 256) -> np.ndarray:
        """The blend of `learners` (`{name: learner}`, the names fitted) for every pair of
        `cf` (a `CollabFilterDataset`): a float32 `[n_items, n_users]` matrix, rows in
        `cf.idx2item` order and columns in `cf.idx2user` order, ids without training ratings
        getting each learner's fallback. It is made `items_per_chunk` items at a time, so
        its memory is the matrix's, not that of every member's predictions at once."""
        step = positive_int(items_per_chunk, "items_per_chunk")
        missing = [n for n in self.names if n not in learners]
        if missing:
            raise ValueError(f"learners lacks the blend's member(s) {missing} (it has "
                             f"{list(learners)})")
        members = {n: learners[n] for n in self.names}
        users, items = np.asarray(cf.idx2user), np.asarray(cf.idx2item)
        out = np.empty((len(items), len(users)), dtype=np.float32)
        for start in range(0, len(items), step):
            uu, ii = np.meshgrid(users, items[start:start + step])
            preds = member_predictions(members, uu.ravel(), ii.ravel())
            out[start:start + len(ii)] = self.predict(preds).reshape(ii.shape)
        return out
