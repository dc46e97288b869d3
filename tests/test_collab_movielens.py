"""MovieLens loaders: both releases to the same frame shape; ml-100k's latin-1 titles and split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from minifast.collab import (
    CollabFilterDataset,
    load_ml100k_split,
    load_movies,
    load_ratings,
    movie_titles,
)

ML = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens"
pytestmark = pytest.mark.skipif(not (ML / "ml-100k").is_dir(), reason="shared MovieLens data absent")


def test_ml100k_ratings_same_shape_as_ratings_csv():
    a, b = load_ratings(ML / "ml-100k"), load_ratings(ML / "ml-latest-small")
    assert list(a.columns) == list(b.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert list(a.dtypes) == list(b.dtypes)
    assert len(a) == 100_000 and len(b) == 100_836
    assert a.iloc[0].tolist() == [196, 242, 3.0, 881250949]
    assert (a["userId"].nunique(), a["movieId"].nunique()) == (943, 1682)
    assert a["rating"].mean() == pytest.approx(3.52986)


def test_ml100k_movies_latin1_titles_and_genres():
    m = load_movies(ML / "ml-100k")
    ref = load_movies(ML / "ml-latest-small")
    assert list(m.columns) == list(ref.columns) == ["movieId", "title", "genres"]
    assert len(m) == 1682
    assert m.iloc[0].tolist() == [1, "Toy Story (1995)", "Animation|Children's|Comedy"]
    assert "Misérables, Les (1995)" in set(m["title"])
    assert m["genres"].str.len().min() > 0


def test_movie_titles_and_2016_release():
    t = movie_titles(ML / "ml-latest-small-2016")
    assert t.loc[1] == "Toy Story (1995)" and len(t) == 9125
    r = load_ratings(ML / "ml-latest-small-2016")
    assert len(r) == 100_004 and r.iloc[0].tolist()[:3] == [1, 31, 2.5]


def test_u1_split():
    base, test = load_ml100k_split(ML / "ml-100k", "u1")
    assert (len(base), len(test)) == (80_000, 20_000)
    assert list(base.columns) == ["userId", "movieId", "rating", "timestamp"]
    full = load_ratings(ML / "ml-100k")
    both = pd.concat([base, test]).sort_values(["userId", "movieId"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(both, full.sort_values(["userId", "movieId"]).reset_index(drop=True))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such MovieLens folder"):
        load_ratings(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="neither ratings.csv nor u.data"):
        load_ratings(tmp_path)
    with pytest.raises(FileNotFoundError, match="u9.base"):
        load_ml100k_split(ML / "ml-100k", "u9")


def test_lesson_dataset_counts():
    cf = CollabFilterDataset.from_csv(ML / "ml-latest-small-2016", "ratings.csv", "userId",
                                      "movieId", "rating")
    assert (cf.n, cf.n_users, cf.n_items) == (100_004, 671, 9066)
    assert (cf.min_score, cf.max_score) == (0.5, 5.0)
