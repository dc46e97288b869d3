"""CollabFilterDataset: (user, item, rating) triples with ids mapped to contiguous indices.

Ids are mapped to `0..n-1` in order of first appearance, as fastai v0.7 did (see `ids`).
Every input is checked up front: a bad file gives a `ValueError` naming the column, the rows
and the values at fault, never a traceback from inside torch later.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ..checks import check_batch_size, positive_int
from ..data import ColumnarModelData, ModelData
from ..optim.sparse import prefer_sparse, sparse_embeddings
from ..runtime.device import loader_device
from .ids import lookup_ids, map_ids
from .interactions import Interactions
from .itemset_model import ItemSetMF
from .learner import CollabFilterLearner
from .losses import LOSSES
from .models import MODELS, EmbeddingDot, embedding_l2
from .ranking_model import ImplicitMF
from .sampling import NegativeSamplingLoader, PositivesLoader

__all__ = ["CollabFilterDataset"]

_F32_MAX = float(np.finfo(np.float32).max)


class _Rows:
    """How to name rows in messages: positions in a frame, or lines of a CSV file."""

    def __init__(self, source: str, header_lines: int | None = None,
                 kept: np.ndarray | None = None):
        self.source, self.header_lines = source, header_lines
        self.kept = kept  # positions of the rows kept (positive_at) in the original rows

    def describe(self, positions: np.ndarray, limit: int = 5) -> str:
        if self.kept is not None:
            positions = self.kept[np.asarray(positions)]
        shown = [int(p) for p in positions[:limit]]
        more = ", ..." if len(positions) > limit else ""
        if self.header_lines is None:
            return f"rows {shown}{more} (0-based positions in {self.source})"
        lines = [p + self.header_lines + 1 for p in shown]
        return f"lines {lines}{more} of {self.source}"


def _find_column(df: pd.DataFrame, name, role: str, source: str) -> pd.Series:
    """Column `name` of `df`, or a ValueError suggesting the closest column names."""
    cols = list(df.columns)
    hits = [j for j, c in enumerate(cols) if _same_label(c, name)]
    if len(hits) > 1:
        raise ValueError(f"{role} column {name!r} appears {len(hits)} times in {source}")
    if not hits:
        labels = [str(c) for c in cols]
        close = difflib.get_close_matches(str(name), labels, n=3, cutoff=0.5)
        close += [c for c in labels if c.lower() == str(name).lower() and c not in close]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = labels[:20] + (["..."] if len(labels) > 20 else [])
        raise ValueError(f"{role} column {name!r} not found in {source}{hint} (columns: {shown})")
    return df.iloc[:, hits[0]]


def _separator_hint(df: pd.DataFrame, source: str, read_csv_kwargs: dict) -> str | None:
    """When a CSV was read into a single column whose name (or, without a header, whose
    first value) holds another separator, the advice to pass it; else None."""
    if df.shape[1] != 1:
        return None
    text = df.iloc[0, 0] if read_csv_kwargs.get("header", 0) is None and len(df) else df.columns[0]
    if not isinstance(text, str):
        return None
    used = read_csv_kwargs.get("sep", read_csv_kwargs.get("delimiter", ","))
    counts = {c: text.count(c) for c in (";", "\t", "|", ",") if c != used}
    sep = max(counts, key=counts.get)
    if not counts[sep]:
        return None
    return (f"{source} was read as one column {text!r}, so the user, item and rating columns "
            f"were not found: it looks separated by {sep!r}; pass sep={sep!r}")


def _same_label(a, b) -> bool:
    try:
        return isinstance(a, str) == isinstance(b, str) and bool(a == b)
    except (TypeError, ValueError):
        return False


def _ratings(col: pd.Series, rows: _Rows) -> np.ndarray:
    """Ratings as float64, or a ValueError counting the bad values and naming the first rows."""
    name = col.name
    if col.dtype.kind == "b" or str(col.dtype) == "boolean":
        raise ValueError(f"ratings column {name!r} holds booleans, not numbers")
    try:
        num = pd.to_numeric(col, errors="coerce")
        if num.dtype.kind not in "iuf":
            raise TypeError(num.dtype)
        values = num.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError, OverflowError):
        # Mixed objects that to_numeric cannot coerce as a column: go value by value.
        values = np.array([_to_float(v) for v in col.to_numpy(dtype=object)], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        examples = [col.iloc[p] for p in bad[:3]]
        raise ValueError(
            f"{bad.size} rating(s) in column {name!r} are missing, not numbers or infinite "
            f"(e.g. {examples!r}): {rows.describe(bad)}"
        )
    big = np.flatnonzero(np.abs(values) > _F32_MAX)
    if big.size:
        raise ValueError(
            f"{big.size} rating(s) in column {name!r} do not fit in float32 (|r| > {_F32_MAX:.3g}): "
            f"{rows.describe(big)}"
        )
    return values


def _positives(cols: list[pd.Series], rows: _Rows, positive_at) -> tuple[list, _Rows]:
    """The user and item columns of the rows rated >= `positive_at`, and how to name them."""
    if isinstance(positive_at, (bool, np.bool_)) or not isinstance(positive_at, (int, float,
                                                                                  np.number)):
        raise ValueError(f"positive_at must be a number (ratings >= it become interactions), "
                         f"got {positive_at!r}")
    if not np.isfinite(positive_at):
        raise ValueError(f"positive_at must be finite, got {positive_at!r}")
    values = _ratings(cols[2], rows)
    kept = np.flatnonzero(values >= positive_at)
    if kept.size == 0:
        raise ValueError(f"no rating in column {cols[2].name!r} of {rows.source} is >= "
                         f"positive_at={positive_at!r} (the highest is {values.max():g}): there "
                         f"would be no interactions")
    return ([c.iloc[kept].reset_index(drop=True) for c in cols],
            _Rows(rows.source, rows.header_lines, kept))


def _to_float(v) -> float:
    if isinstance(v, (bool, np.bool_)):
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return np.nan


class CollabFilterDataset:
    """Ratings of users on items, ids mapped to indices; builds the data, model and learner.

    Implicit feedback: built with `rating_name=None` (no rating column) or `positive_at=t`
    (only rows rated >= t kept), every row is an *interaction*: `implicit` is True, `ratings`
    are all 1 and `min_score == max_score == 1`; train it with a ranking loss,
    `get_learner(..., loss="bpr" | "softmax")` (docs/topn.md).

    Attributes (fastai v0.7 names): `path`, `n` (rows), `user_col`/`item_col` (int64 indices
    per row), `ratings` (float32 per row), `users`/`items` (the raw ids, index -> id, as a
    `pd.Index`), `user2idx`/`item2idx` (id -> index dicts), `idx2user`/`idx2item` (numpy
    arrays, index -> id), `n_users`, `n_items`, `min_score`, `max_score`, and the column names
    `user_name`, `item_name`, `rating_name` (None without a rating column), `implicit`,
    `positive_at`.
    """

    def __init__(self, path, user_col, item_col, ratings, user_name: Any = "userId",
                 item_name: Any = "movieId", rating_name: Any = "rating", *,
                 source: str = "the frame", rows: _Rows | None = None,
                 positive_at: float | None = None):
        rows = rows or _Rows(source)
        self.implicit, self.positive_at = ratings is None or positive_at is not None, positive_at
        if ratings is None:  # interactions only: every row counts once
            ratings = np.ones(len(user_col), dtype=np.float32)
        user_col, item_col, ratings = (
            pd.Series(c, name=n) if not isinstance(c, pd.Series) else c
            for c, n in ((user_col, user_name), (item_col, item_name), (ratings, rating_name))
        )
        lens = {len(user_col), len(item_col), len(ratings)}
        if len(lens) != 1:
            raise ValueError(f"user, item and rating columns have different lengths {sorted(lens)}")
        if len(ratings) == 0:
            raise ValueError(f"{source} has no rows: nothing to learn from")
        self.path = Path(path)
        self.user_name, self.item_name, self.rating_name = user_name, item_name, rating_name
        values = _ratings(ratings, rows)
        self.user_col, self.users = map_ids(user_col, "user", rows.describe)
        self.item_col, self.items = map_ids(item_col, "item", rows.describe)
        self.min_score, self.max_score = float(values.min()), float(values.max())
        if self.min_score == self.max_score and not self.implicit:
            raise ValueError(
                f"every rating in column {rating_name!r} of {source} is {self.min_score:g} "
                f"(min == max): the score range collapses and there is nothing to learn"
            )
        if self.max_score - self.min_score > _F32_MAX:
            raise ValueError(
                f"ratings in {rating_name!r} span [{self.min_score:g}, {self.max_score:g}], too "
                f"wide for float32 arithmetic"
            )
        self.ratings = values.astype(np.float32)
        self.n = len(self.ratings)
        self.n_users, self.n_items = len(self.users), len(self.items)

    # --- constructors ------------------------------------------------------------------
    @classmethod
    def from_data_frame(cls, path, df: pd.DataFrame, user_name, item_name, rating_name=None,
                        positive_at: float | None = None) -> CollabFilterDataset:
        """From the columns `user_name`, `item_name`, `rating_name` of `df` (fastai v0.7).

        Implicit feedback: `rating_name=None` makes every row an interaction; `positive_at=t`
        keeps the rows rated >= `t` as interactions and drops the others (see the class)."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"from_data_frame needs a pandas DataFrame, got {type(df).__name__}")
        return cls._from_frame(path, df, user_name, item_name, rating_name, _Rows("the frame"),
                               positive_at)

    @classmethod
    def from_csv(cls, path, csv: str | os.PathLike, user_name, item_name, rating_name=None,
                 positive_at: float | None = None, **read_csv_kwargs) -> CollabFilterDataset:
        """From the CSV file `path/csv` (fastai v0.7); extra keywords go to `pd.read_csv`.
        `rating_name=None` / `positive_at` as in `from_data_frame`."""
        file = Path(path) / csv
        if not file.is_file():
            raise FileNotFoundError(f"no such ratings file: {file}")
        try:
            df = pd.read_csv(file, **read_csv_kwargs)
        except pd.errors.EmptyDataError as e:
            raise ValueError(f"{file} is empty: expected a header and rating rows") from e
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ValueError(f"{file} could not be parsed as CSV: {e}") from e
        rows = _Rows(file.name, header_lines=0 if read_csv_kwargs.get("header", 0) is None else 1)
        try:
            return cls._from_frame(path, df, user_name, item_name, rating_name, rows, positive_at)
        except ValueError as e:
            hint = _separator_hint(df, file.name, read_csv_kwargs)
            if hint is None:
                raise
            raise ValueError(hint) from e

    @classmethod
    def _from_frame(cls, path, df, user_name, item_name, rating_name, rows: _Rows,
                    positive_at: float | None = None):
        names = [user_name, item_name, rating_name][:2 if rating_name is None else 3]
        for a, b in ((0, 1), (0, 2), (1, 2))[:1 if rating_name is None else 3]:
            if _same_label(names[a], names[b]):
                raise ValueError(f"user, item and rating columns must differ, got {names}")
        if positive_at is not None and rating_name is None:
            raise ValueError(f"positive_at={positive_at!r} keeps the rows rated >= it: name the "
                             f"rating column too (rating_name=...)")
        src = rows.source
        cols, errors = [], []
        for n, role in zip(names, ("user", "item", "rating"), strict=False):
            try:
                cols.append(_find_column(df, n, role, src))
            except ValueError as e:  # report every bad column at once, not one per run
                errors.append(str(e))
        if errors:
            raise ValueError("; ".join(errors))
        if rating_name is None:
            return cls(path, *cols, None, user_name, item_name, None, source=src, rows=rows)
        if positive_at is not None:
            cols, rows = _positives(cols, rows, positive_at)
            return cls(path, *cols[:2], None, user_name, item_name, rating_name, source=src,
                       rows=rows, positive_at=float(positive_at))
        return cls(path, *cols, user_name, item_name, rating_name, source=src, rows=rows)

    # --- id maps -----------------------------------------------------------------------
    @cached_property
    def user2idx(self) -> dict:
        """Raw user id -> index."""
        return dict(zip(self.users.tolist(), range(self.n_users), strict=True))

    @cached_property
    def item2idx(self) -> dict:
        """Raw item id -> index."""
        return dict(zip(self.items.tolist(), range(self.n_items), strict=True))

    @property
    def idx2user(self) -> np.ndarray:
        """Index -> raw user id."""
        return self.users.to_numpy()

    @property
    def idx2item(self) -> np.ndarray:
        """Index -> raw item id."""
        return self.items.to_numpy()

    def user_idxs(self, users, missing: str = "raise") -> np.ndarray:
        """Indices of raw user ids (vectorised); an unknown id raises naming it, or with
        `missing="ignore"` maps to -1."""
        return lookup_ids(self.users, users, "user", missing)

    def item_idxs(self, items, missing: str = "raise") -> np.ndarray:
        """Indices of raw item ids (vectorised); see `user_idxs`."""
        return lookup_ids(self.items, items, "item", missing)

    @property
    def item_counts(self) -> np.ndarray:
        """Number of ratings of each item, by index."""
        return np.bincount(self.item_col, minlength=self.n_items)

    # --- data, model, learner ----------------------------------------------------------
    def get_data(self, val_idxs, bs: int = 64, seed: int | None = None) -> ColumnarModelData:
        """`ColumnarModelData` over cats `[user index, item index]` and the ratings; rows at
        `val_idxs` (e.g. `get_cv_idxs(cf.n)`) are the validation set."""
        check_batch_size(bs, "bs (batch size)")
        cats = np.stack([self.user_col, self.item_col], axis=1)
        return ColumnarModelData.from_arrays(self.path, val_idxs, cats, self.ratings, bs, seed=seed)

    def get_sampled_data(self, val_idxs, bs: int = 64, n_neg: int = 1,
                         neg_sampling: str = "uniform", seed: int | None = None) -> ModelData:
        """`ModelData` for a ranking loss: the rows split as `get_data(val_idxs, bs, seed)`,
        each a positive, in `NegativeSamplingLoader`s that add `n_neg` negatives per row.

        Training negatives are never the user's training items; validation negatives (for
        the validation loss; `fixed`, the same every epoch) never any of the user's items.
        `neg_sampling="popularity"` draws in proportion to the items' training counts."""
        base = self.get_data(val_idxs, bs, seed=seed)
        (tc, tn, _), (vc, vn, _) = base.trn_dl.tensors, base.val_dl.tensors
        trn_seen = Interactions.from_pairs(tc[:, 0], tc[:, 1], self.n_users, self.n_items)
        all_seen = Interactions.from_pairs(self.user_col, self.item_col, self.n_users,
                                           self.n_items)
        counts = np.bincount(tc[:, 1].numpy(), minlength=self.n_items)
        common = {"n_neg": n_neg, "neg_sampling": neg_sampling, "item_counts": counts}
        trn = NegativeSamplingLoader(tc, tn, exclude=trn_seen, batch_size=base.trn_dl.batch_size,
                                     shuffle=True, seed=base.trn_dl.seed, **common)
        val = NegativeSamplingLoader(vc, vn, exclude=all_seen, fixed=True, seed=0,
                                     batch_size=base.val_dl.batch_size, **common)
        return ModelData(self.path, trn, val)

    def get_positives_data(self, val_idxs, bs: int = 64, seed: int | None = None) -> ModelData:
        """`ModelData` for a loss over every item (`loss="full_softmax"`): the rows split as
        `get_data(val_idxs, bs, seed)`, each a positive, in `PositivesLoader`s (batches of
        users, with each row's positive item as the target; nothing sampled)."""
        base = self.get_data(val_idxs, bs, seed=seed)
        (tc, tn, _), (vc, vn, _) = base.trn_dl.tensors, base.val_dl.tensors
        trn = PositivesLoader(tc, tn, batch_size=base.trn_dl.batch_size, shuffle=True,
                              seed=base.trn_dl.seed)
        val = PositivesLoader(vc, vn, batch_size=base.val_dl.batch_size, seed=0)
        return ModelData(self.path, trn, val)

    def get_model(self, n_factors: int, model: str | Callable[..., nn.Module] = "dotbias",
                  y_range: Sequence[float] | None = None, **model_kwargs) -> nn.Module:
        """A model for this data: `model` is `"dotbias"` (`EmbeddingDotBias`, the default, as
        fastai v0.7), `"dot"` (`EmbeddingDot`), `"net"` (`EmbeddingNet`), `"features"`
        (`EmbeddingDotBiasFeatures`: pass `item_features=` in `model_kwargs`), or a class/callable
        taking `(n_factors, n_users, n_items, min_score, max_score, **model_kwargs)`.
        `y_range=(lo, hi)` overrides the output range (default: the ratings' min and max)."""
        positive_int(n_factors, "n_factors")
        lo, hi = (self.min_score, self.max_score) if y_range is None else _y_range(y_range)
        if isinstance(model, str):
            if model not in MODELS:
                raise ValueError(f"unknown model {model!r}: choose one of {sorted(MODELS)} or pass "
                                 f"a model class")
            model = MODELS[model]
        if model is EmbeddingDot:
            return EmbeddingDot(self.n_users, self.n_items, n_factors, **model_kwargs)
        if not callable(model):
            raise TypeError(f"model must be a name or a class/callable, got {model!r}")
        return model(n_factors, self.n_users, self.n_items, lo, hi, **model_kwargs)

    def get_learner(self, n_factors: int, val_idxs, bs: int, model="dotbias",
                    y_range: Sequence[float] | None = None, model_kwargs: dict | None = None,
                    seed: int | None = None, sparse: bool | str = "auto", emb_l2: float | None = None,
                    emb_l2_bias: float | None = None, emb_l2_alpha: float = 0.0,
                    loss: str = "mse", n_neg: int = 1, neg_sampling: str = "uniform",
                    **kwargs) -> CollabFilterLearner:
        """A `CollabFilterLearner` with MSE loss on `get_data(val_idxs, bs)` and
        `get_model(n_factors, model, y_range, **model_kwargs)`; `kwargs` go to the Learner
        (e.g. `opt_fn=optim.Adam`, `metrics=[...]`, `fused=False`).

        `loss="bpr"` or `"softmax"` learns to rank from implicit feedback instead: every
        training row is a positive, and each batch gets `n_neg` sampled negatives per row
        (`neg_sampling="uniform"` or `"popularity"`; seeded by `seed` and resumable, see
        `get_sampled_data`), scored by an `ImplicitMF` (`model` must then stay "dotbias", the
        default, be "itemset" for an `ItemSetMF` over the training interactions (its
        `alpha`/`dropout` in `model_kwargs`), or a class/callable taking `(n_factors, n_users,
        n_items, **model_kwargs)` whose forward scores `[bs, 1 + m]` cats as `ImplicitMF`'s). The loss
        is `bpr_loss` or `sampled_softmax_loss` (with the log-q correction); docs/topn.md.
        `loss="full_softmax"` samples nothing: each positive's cross-entropy against every
        item (`full_softmax_loss` on `get_positives_data`); regularise it with `wds`.

        `sparse=True`: the embeddings produce sparse gradients and each step updates only
        the rows in its batch, with `minifast.LazyAdam` unless `opt_fn` is given (SparseAdam
        or SGD also work; Adam is refused). `wds` then regularise the rows in each batch only;
        see `minifast.optim.sparse` for the trade-offs and docs/performance.md for the figures.
        `sparse="auto"` (the default) chooses sparse for `loss="mse"` where it is faster:
        on the CPU, with large tables for the batch size (`minifast.prefer_sparse`), the
        default optimiser and no `clip`; lesson-sized data stay dense. `learn.sparse` says
        which was chosen; `sparse=False` always trains dense.

        `emb_l2=lam` adds `embedding_l2(model, lam)` as the learner's `reg_fn`: the classic
        matrix-factorisation penalty on the embedding rows each batch uses (an alternative to
        `fit(..., wds=...)`). `emb_l2_bias` is its `bias_lam` (default: `emb_l2`), and
        `emb_l2_alpha` scales each row's penalty by `n ** -alpha`, `n` its number of training
        ratings (counted from the rows not in `val_idxs`). docs/collab.md ("Regularising the
        embeddings") has the settings that did best on MovieLens and their figures."""
        if emb_l2 is None and (emb_l2_bias is not None or emb_l2_alpha):
            raise ValueError("emb_l2_bias and emb_l2_alpha modify emb_l2: pass emb_l2 too")
        if emb_l2 is not None and kwargs.get("reg_fn") is not None:
            raise ValueError("pass emb_l2 or reg_fn, not both")
        if sparse not in (True, False, "auto"):
            raise ValueError(f"sparse must be True, False or 'auto', got {sparse!r}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: choose one of {sorted(LOSSES)}")
        if loss == "mse" and self.implicit:
            raise ValueError("this data set holds interactions, not ratings (built with "
                             "rating_name=None or positive_at): train it with loss='bpr' or "
                             "loss='softmax'")
        if loss == "mse":
            m = self.get_model(n_factors, model, y_range, **(model_kwargs or {}))
            data = self.get_data(val_idxs, bs, seed=seed)
        else:
            m, data = self._ranking_parts(n_factors, val_idxs, bs, model, y_range,
                                          model_kwargs or {}, seed, loss, n_neg, neg_sampling,
                                          emb_l2)
        if sparse == "auto":
            sparse = (loss == "mse" and kwargs.get("opt_fn") is None and not kwargs.get("clip")
                      and prefer_sparse(m, bs, loader_device(data.trn_dl)))
        if sparse:
            sparse_embeddings(m)
        if emb_l2 is not None:
            counts = None
            if emb_l2_alpha:  # rows' training counts: the data's training rows, not val_idxs
                cats = data.trn_dl.tensors[0].cpu().numpy()
                counts = (np.bincount(cats[:, 0], minlength=self.n_users),
                          np.bincount(cats[:, 1], minlength=self.n_items))
            kwargs["reg_fn"] = embedding_l2(m, emb_l2, emb_l2_bias, counts, emb_l2_alpha)
        kwargs.setdefault("crit", LOSSES[loss])
        return CollabFilterLearner(data, m, cf=self, ranking=loss != "mse", **kwargs)

    def _ranking_parts(self, n_factors, val_idxs, bs, model, y_range, model_kwargs: dict, seed,
                       loss: str, n_neg, neg_sampling, emb_l2) -> tuple[nn.Module, ModelData]:
        """`(model, data)` of a ranking learner for `loss` ("bpr", "softmax", "full_softmax")."""
        if loss == "full_softmax" and (n_neg != 1 or neg_sampling != "uniform"):
            raise ValueError(f"loss='full_softmax' scores every item and samples nothing: drop "
                             f"n_neg={n_neg!r} and neg_sampling={neg_sampling!r}")
        if loss == "full_softmax" and emb_l2 is not None:
            raise ValueError("emb_l2 penalises the rows of each batch's users and positives; "
                             "loss='full_softmax' gives every item row a gradient every batch: "
                             "regularise it with fit(..., wds=...) instead")

        def ranking_data() -> ModelData:
            if loss == "full_softmax":
                return self.get_positives_data(val_idxs, bs, seed=seed)
            return self.get_sampled_data(val_idxs, bs, n_neg, neg_sampling, seed=seed)
        # the model first, as it always was (same draws, same runs), unless it reads the
        # training interactions from the data
        data = ranking_data() if model == "itemset" else None
        m = self._ranking_model(n_factors, model, y_range, model_kwargs, data)
        return m, ranking_data() if data is None else data

    def _ranking_model(self, n_factors, model, y_range, model_kwargs: dict, data) -> nn.Module:
        """The model a ranking loss trains: `ImplicitMF` for the default, `ItemSetMF` for
        "itemset" (reading the training interactions of `data`), or the class/callable given."""
        positive_int(n_factors, "n_factors")
        if y_range is not None:
            raise ValueError("y_range bounds predicted ratings; a ranking loss trains "
                             "unbounded scores: leave y_range=None")
        if model == "dotbias":
            model = ImplicitMF
        elif model == "itemset":
            cats = data.trn_dl.tensors[0]
            seen = Interactions.from_pairs(cats[:, 0], cats[:, 1], self.n_users, self.n_items)
            return ItemSetMF(n_factors, self.n_users, self.n_items, seen=seen, **model_kwargs)
        elif isinstance(model, str) or not callable(model):
            raise ValueError(f"model={model!r} predicts ratings; with a ranking loss pass the "
                             f"default or a class/callable scoring [bs, 1 + m] cats like "
                             f"ImplicitMF")
        return model(n_factors, self.n_users, self.n_items, **model_kwargs)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"CollabFilterDataset(n={self.n}, n_users={self.n_users}, n_items={self.n_items}, "
                f"scores=[{self.min_score:g}, {self.max_score:g}])")


def _y_range(y_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in y_range)
    except (TypeError, ValueError) as e:
        raise ValueError(f"y_range must be a pair (lo, hi), got {y_range!r}") from e
    if not lo < hi:
        raise ValueError(f"y_range must have lo < hi, got {y_range!r}")
    return lo, hi
