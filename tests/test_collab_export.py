"""A collab learner exported for serving (issue 15): `load_learner(path).recommend(raw_user, n)`
and `predict_ratings` by raw id in a fresh process that has only the file, equal to the
learner's; unseen ids and fallback as the learner does them."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import minifast as mf
from minifast.collab import CollabFilterDataset, UnknownIdError, synthetic_ratings
from minifast.collab.recommender import ExportedRecommender

SERVE = textwrap.dedent("""
    import sys
    import minifast
    rec = minifast.load_learner(sys.argv[1])
    print(type(rec).__name__)
    for user in (sys.argv[2], sys.argv[3]):
        print(rec.recommend(int(user), n=5, fallback=True).to_json(orient="split"))
    print(rec.recommend(int(sys.argv[2]), n=5, exclude_seen=False).to_json(orient="split"))
""")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dot-bias learner on synthetic ratings with string ids' names, users 1..60; user 999
    appears only in validation rows (so it is unseen)."""
    df, _ = synthetic_ratings(60, 40, 1500, seed=3)
    df = pd.concat([df, pd.DataFrame({"userId": [999], "movieId": [1], "rating": [4.0]})],
                   ignore_index=True)
    path = tmp_path_factory.mktemp("collab")
    cf = CollabFilterDataset.from_data_frame(path, df, "userId", "movieId", "rating")
    val = np.concatenate([mf.get_cv_idxs(len(df) - 1, seed=0), [len(df) - 1]])
    titles = {int(i): f"movie {i}" for i in df.movieId.unique()}
    learn = cf.get_learner(8, val, 64, seed=0, item_names=titles)
    learn.fit(1e-2, 2, verbose=False, progress=False)
    return learn, learn.export(path / "rec.mf")


def _frames(text: str) -> list[pd.DataFrame]:
    lines = text.strip().splitlines()
    return [pd.read_json(io.StringIO(line), orient="split") for line in lines[1:]]


def test_recommend_in_a_fresh_process_with_only_the_file(trained, tmp_path):
    learn, path = trained
    alone = tmp_path / "serving"
    alone.mkdir()
    (alone / "serve.py").write_text(SERVE)
    (alone / "rec.mf").write_bytes(path.read_bytes())  # nothing else: no ratings, no titles file
    out = subprocess.run([sys.executable, "serve.py", "rec.mf", "7", "999"], cwd=alone,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[0] == "ExportedRecommender"
    got = _frames(out.stdout)
    want = [learn.recommend(7, n=5, fallback=True), learn.recommend(999, n=5, fallback=True),
            learn.recommend(7, n=5, exclude_seen=False)]
    for g, w in zip(got, want):
        assert list(g.columns) == ["item", "title", "score"]
        assert g["item"].tolist() == w["item"].tolist()
        assert g["title"].tolist() == w["title"].tolist()
        np.testing.assert_allclose(g["score"], w["score"], atol=1e-5)


def test_predict_ratings_and_unseen_ids(trained):
    learn, path = trained
    rec = mf.load_learner(path)
    assert isinstance(rec, ExportedRecommender)
    users, items = np.array([1, 7, 30, 60]), np.array([2, 5, 40, 1])
    np.testing.assert_allclose(rec.predict_ratings(users, items), learn.predict_ratings(users, items),
                               atol=1e-6)
    with pytest.raises(UnknownIdError, match="user id 999 has no training ratings"):
        rec.recommend(999)
    with pytest.raises(UnknownIdError, match="item id 12345"):
        rec.predict_ratings([1], [12345])
    with pytest.raises(ValueError, match="one length"):
        rec.predict_ratings([1, 2], [3])
    assert "n_users=61" in repr(rec)


def test_exclude_seen_drops_the_users_training_items(trained):
    learn, path = trained
    rec = mf.load_learner(path)
    u = learn.cf.user_idxs([7])[0]
    seen = set(learn.cf.idx2item[learn.seen_items().items_of(u)].tolist())
    every = rec.recommend(7, n=40, exclude_seen=False)["item"].tolist()
    fresh = rec.recommend(7, n=40)["item"].tolist()
    assert seen and seen <= set(every) and not seen & set(fresh)
    assert fresh == [i for i in every if i not in seen]


def test_a_plain_learner_export_stays_an_exported_learner(tmp_path, tiny_model, tiny_data):
    got = mf.load_learner(mf.Learner(tiny_data, tiny_model).export(tmp_path / "m.mf"))
    assert type(got) is mf.ExportedLearner and "app" not in got.info
    assert torch.is_tensor(torch.as_tensor(got.predict(np.zeros((2, 2), np.int64),
                                                       np.zeros((2, 0), np.float32))))


def test_a_ranking_learner_exports_with_its_popularity_fallback(tmp_path):
    df, _ = synthetic_ratings(60, 40, 1500, seed=3)
    cf = CollabFilterDataset.from_data_frame(tmp_path, df, "userId", "movieId", "rating",
                                             positive_at=4)
    learn = cf.get_learner(8, mf.get_cv_idxs(cf.n, seed=0), 64, loss="bpr", seed=0)
    learn.fit(1e-2, 1, verbose=False, progress=False)
    rec = mf.load_learner(learn.export(tmp_path / "bpr.mf"))
    assert rec.info["ranking"]
    for user, kw in ((7, {}), (7, {"exclude_seen": False}), (12345, {"fallback": True})):
        got, want = rec.recommend(user, n=5, **kw), learn.recommend(user, n=5, **kw)
        assert got["item"].tolist() == want["item"].tolist()
        np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
