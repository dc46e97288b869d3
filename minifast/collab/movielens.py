"""MovieLens loaders: ratings and movies of ml-latest-small and ml-100k as one frame shape.

Whatever the release, `load_ratings(path)` returns columns `userId, movieId, rating,
timestamp` (int64, int64, float64, int64) and `load_movies(path)` returns `movieId, title,
genres` (genres `|`-joined, `(no genres listed)` when none): the shape of ml-latest-small's
`ratings.csv` / `movies.csv`. ml-100k's `u.data`/`u.item` are converted to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .download import download_movielens

__all__ = [
    "load_ratings", "load_movies", "movie_titles", "load_ml100k_split", "movielens_path",
    "genre_features", "RATING_COLUMNS",
]

RATING_COLUMNS = ["userId", "movieId", "rating", "timestamp"]
_NO_GENRES = "(no genres listed)"


def _folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such MovieLens folder: {path}")
    return path


def _read_udata(file: Path) -> pd.DataFrame:
    """A tab-separated `user item rating timestamp` file (u.data, u1.base, ...)."""
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {file}")
    df = pd.read_csv(file, sep="\t", header=None, names=RATING_COLUMNS,
                     dtype={"userId": "int64", "movieId": "int64", "rating": "float64",
                            "timestamp": "int64"})
    return df


def load_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """The ratings of the MovieLens folder `path` (`ratings.csv`, or ml-100k's `u.data`)."""
    path = _folder(path)
    if (path / "ratings.csv").is_file():
        df = pd.read_csv(path / "ratings.csv")
        return df.astype({"userId": "int64", "movieId": "int64", "rating": "float64"})
    if (path / "u.data").is_file():
        return _read_udata(path / "u.data")
    raise FileNotFoundError(f"{path} holds neither ratings.csv nor u.data")


def load_movies(path: str | os.PathLike) -> pd.DataFrame:
    """The movies of the MovieLens folder `path` (`movies.csv`, or ml-100k's latin-1 `u.item`)."""
    path = _folder(path)
    if (path / "movies.csv").is_file():
        return pd.read_csv(path / "movies.csv")
    if (path / "u.item").is_file():
        genre_names = _ml100k_genres(path)
        items = pd.read_csv(path / "u.item", sep="|", header=None, encoding="latin-1")
        flags = items.iloc[:, -len(genre_names):].to_numpy(dtype=bool)
        names = np.array(genre_names, dtype=object)
        genres = ["|".join(names[row]) or _NO_GENRES for row in flags]
        return pd.DataFrame({"movieId": items[0].astype("int64"), "title": items[1],
                             "genres": genres})
    raise FileNotFoundError(f"{path} holds neither movies.csv nor u.item")


def _ml100k_genres(path: Path) -> list[str]:
    """Genre names in flag-column order (from u.genre when present)."""
    f = path / "u.genre"
    if f.is_file():
        g = pd.read_csv(f, sep="|", header=None, names=["name", "idx"]).dropna()
        return list(g.sort_values("idx")["name"])
    return ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
            "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
            "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def movie_titles(path: str | os.PathLike) -> pd.Series:
    """`movieId -> title` of the MovieLens folder `path` (for interpretation and recommendations)."""
    movies = load_movies(path)
    return pd.Series(movies["title"].to_numpy(), index=movies["movieId"].to_numpy(), name="title")


def genre_features(movies: pd.DataFrame, item_ids) -> np.ndarray:
    """Item side features for `EmbeddingDotBiasFeatures`: a float32 array `[len(item_ids),
    n_genres]`, row `j` the genres of movie `item_ids[j]` (e.g. `cf.idx2item`) from
    `load_movies`' `|`-joined `genres`, each row summing to 1. Movies without genres, or
    missing from `movies`, get a zero row."""
    for col in ("movieId", "genres"):
        if col not in movies.columns:
            raise ValueError(f"movies needs columns movieId and genres (load_movies), "
                             f"missing {col!r}")
    movies = movies.drop_duplicates("movieId")  # the first row of a repeated id counts
    flags = movies["genres"].fillna(_NO_GENRES).str.get_dummies(sep="|")
    flags = flags.drop(columns=[_NO_GENRES], errors="ignore")
    flags.index = movies["movieId"].to_numpy()
    f = flags.reindex(pd.Index(np.asarray(item_ids)), fill_value=0).to_numpy(np.float32)
    return f / np.maximum(f.sum(1, keepdims=True), 1)


def load_ml100k_split(path: str | os.PathLike, split: str = "u1") -> tuple[pd.DataFrame, pd.DataFrame]:
    """ml-100k's predefined split `split` (`u1`..`u5`, `ua`, `ub`): `(base, test)` rating frames."""
    path = _folder(path)
    return _read_udata(path / f"{split}.base"), _read_udata(path / f"{split}.test")


def movielens_path(data: str | os.PathLike) -> Path:
    """The folder for `data`: an existing folder as is, else a MovieLens data set name resolved
    (and downloaded if need be) by `download_movielens`."""
    p = Path(data).expanduser()
    if p.is_dir():
        return p
    if p.suffix or "/" in str(data) or "\\" in str(data):
        raise FileNotFoundError(f"no such file or MovieLens folder: {p}")
    return download_movielens(str(data))
