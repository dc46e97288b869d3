"""Raw ids and what they map to: id columns to contiguous indices, indices back, item titles.

The bottom of the collab floor: `dataset` builds its id maps with it, `learner` and
`interpret` raise `UnknownIdError` and name items with it. It imports nothing from minifast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

__all__ = ["UnknownIdError", "map_ids", "lookup_ids", "item_titles"]


class UnknownIdError(KeyError):
    """An id that the data set (or the model's training rows) never saw."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def map_ids(col: pd.Series, role: str, describe: Callable[[np.ndarray], str]
            ) -> tuple[np.ndarray, pd.Index]:
    """Codes `0..n-1` in order of first appearance (`pd.factorize`), and the raw ids in code
    order. Missing or unhashable ids raise a ValueError naming the `role` ("user", "item"),
    the column and, through `describe(positions)`, the rows at fault."""
    missing = np.flatnonzero(pd.isna(col).to_numpy())
    if missing.size:
        raise ValueError(
            f"{missing.size} {role} id(s) in column {col.name!r} are missing (NaN/empty): "
            f"{describe(missing)}"
        )
    try:
        codes, uniques = pd.factorize(col, sort=False)
    except TypeError as e:  # unhashable values (lists, dicts) in an object column
        raise ValueError(f"{role} ids in column {col.name!r} must be hashable values: {e}") from e
    return codes.astype(np.int64, copy=False), pd.Index(uniques)


def lookup_ids(index: pd.Index, ids, role: str, missing: str = "raise") -> np.ndarray:
    """Positions in `index` of the raw ids `ids` (a scalar or a sequence), as int64; an id not
    in `index` raises `UnknownIdError` naming it, or with `missing="ignore"` maps to -1."""
    if missing not in ("raise", "ignore"):
        raise ValueError(f"missing must be 'raise' or 'ignore', got {missing!r}")
    if np.ndim(ids) == 0:
        ids = [ids]
    ids = pd.Index(ids if isinstance(ids, (np.ndarray, pd.Index, pd.Series)) else list(ids))
    idx = index.get_indexer(ids).astype(np.int64)
    if missing == "raise" and (idx < 0).any():
        unknown = ids[idx < 0]
        raise UnknownIdError(
            f"{len(unknown)} {role} id(s) not in the data set: {unknown[:5].tolist()}"
            f"{' ...' if len(unknown) > 5 else ''}"
        )
    return idx


def item_titles(learn, titles, ids: np.ndarray) -> np.ndarray | None:
    """Names of the raw item ids `ids`, from `titles` (a mapping or `pd.Series` raw item id ->
    name, e.g. `movie_titles(path)`), else from `learn.item_names`; an id without a name is
    shown as the id itself. None when there are no names to use."""
    titles = getattr(learn, "item_names", None) if titles is None else titles
    if titles is None:
        return None
    if isinstance(titles, Mapping) and not isinstance(titles, pd.Series):
        titles = pd.Series(titles)
    found = pd.Series(titles).reindex(ids)
    return np.where(found.isna().to_numpy(), [str(i) for i in ids], found.to_numpy(dtype=object))
