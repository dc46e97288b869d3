"""CollabFilterLearner: training through get_learner, raw-id predictions, unseen ids and the
fallback, recommendations, ranking metrics bound automatically, save/load."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import optim

from minifast import get_cv_idxs
from minifast.collab import (
    CollabFilterDataset,
    CollabFilterLearner,
    EmbeddingDotBias,
    EmbeddingNet,
    UnknownIdError,
    ndcg_at_k,
    precision_at_k,
    ranking_scores,
    recall_at_k,
)


def synthetic(n_users=50, n_items=40, n=2000, seed=0):
    """Low-rank ratings on a 1..5 half-star scale with raw ids that are not 0..n-1."""
    rng = np.random.RandomState(seed)
    u, i = rng.randint(0, n_users, n), rng.randint(0, n_items, n)
    uf, itf, ib = rng.randn(n_users, 2), rng.randn(n_items, 2), rng.randn(n_items)
    r = 3 + 0.6 * (uf[u] * itf[i]).sum(1) + 0.5 * ib[i] + 0.2 * rng.randn(n)
    r = np.clip(np.round(r * 2) / 2, 1, 5)
    df = pd.DataFrame({"user": 1000 + u, "item": [f"m{j}" for j in i], "rating": r})
    return df.drop_duplicates(["user", "item"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    df = synthetic()
    cf = CollabFilterDataset.from_data_frame(tmp_path_factory.mktemp("cf"), df, "user", "item", "rating")
    val = get_cv_idxs(cf.n)
    learn = cf.get_learner(8, val, 32, opt_fn=optim.Adam, seed=0,
                           metrics=[precision_at_k(5), ndcg_at_k(5)],
                           item_names={f"m{j}": f"Movie {j}" for j in range(25)})
    before = learn.fit(1e-3, 1, verbose=False)  # tiny LR: about the initial model
    res = learn.fit(1e-2, 3, wds=1e-5, cycle_len=1, cycle_mult=2, verbose=False)
    return cf, val, learn, before, res


def test_get_learner_builds_collab_learner(trained):
    cf, val, learn, before, res = trained
    assert isinstance(learn, CollabFilterLearner) and learn.cf is cf
    assert isinstance(learn.model, EmbeddingDotBias) and learn.crit is F.mse_loss
    assert isinstance(learn.opt, optim.Adam)
    assert res[0] < 0.5 * before[0]  # SGDR run learned the low-rank structure
    assert len(res.history) == 7


def test_ranking_metrics_in_fit_equal_whole_set_computation(trained):
    cf, val, learn, before, res = trained
    cats, _, y = learn.data.val_dl.tensors
    ref = ranking_scores(cats[:, 0], learn.predict(), y, k=5)
    assert res[1] == pytest.approx(ref["precision"], abs=1e-9)
    assert res[2] == pytest.approx(ref["ndcg"], abs=1e-9)
    assert learn.ranking_scores(5)["ndcg"] == pytest.approx(ref["ndcg"])
    assert [k for k in res.history[-1] if "@" in k] == ["precision@5", "ndcg@5"]


def test_metrics_given_to_fit_are_bound_too(trained):
    cf, val, learn, *_ = trained
    m = recall_at_k(3)
    res = learn.fit(1e-4, 1, metrics=[m], verbose=False)
    cats, _, y = learn.data.val_dl.tensors
    assert res[1] == pytest.approx(ranking_scores(cats[:, 0], learn.predict(), y, k=3)["recall"])


def test_predict_ratings_matches_model_on_validation_rows(trained):
    cf, val, learn, *_ = trained
    cats, _, _ = learn.data.val_dl.tensors
    st = learn._train_stats()
    ok = st["user_known"][cats[:, 0].numpy()] & st["item_known"][cats[:, 1].numpy()]
    users, items = cf.idx2user[cats[ok, 0].numpy()], cf.idx2item[cats[ok, 1].numpy()]
    got = learn.predict_ratings(users, items)
    np.testing.assert_allclose(got, learn.predict()[ok, 0], rtol=1e-6)
    assert got.dtype == np.float32 and got.shape == (ok.sum(),)


def test_predict_ratings_broadcasts(trained):
    cf, val, learn, *_ = trained
    u = int(cf.idx2user[0])
    grid = learn.predict_ratings(np.array([[u], [u]]), ["m0", "m1", "m2"])
    assert grid.shape == (2, 3)
    np.testing.assert_allclose(grid[0], learn.predict_ratings(u, ["m0", "m1", "m2"]), rtol=1e-6)
    assert learn.predict_ratings(u, "m0").shape == ()


def test_unseen_ids_error_names_them(trained):
    cf, val, learn, *_ = trained
    with pytest.raises(UnknownIdError, match=r"user id 5 is not in the data set.*fallback=True"):
        learn.predict_ratings([5], ["m0"])
    with pytest.raises(UnknownIdError, match=r"item id 'nope' is not in the data set"):
        learn.predict_ratings([1000], ["nope"])


@pytest.mark.parametrize("users, items, match", [
    ([1000, 1001, 1002], ["m0", "m1"], r"same length .*or one be a scalar; got 3 users and 2 items, "
                                       r"shapes \(3,\) and \(2,\)"),
    (np.full((2, 3), 1000), ["m0", "m1"], r"got 2 users and 2 items, shapes \(2, 3\) and \(2,\)"),
])
def test_predict_ratings_mismatched_lengths_name_both(trained, users, items, match):
    learn = trained[2]
    with pytest.raises(ValueError, match=match) as e:
        learn.predict_ratings(users, items)
    assert "broadcast together" not in str(e.value)  # not numpy's own message


def learner_with_a_validation_only_user(tmp_path):
    """A learner whose user 7777 has one rating, and that one in the validation rows."""
    df = synthetic()
    extra = pd.DataFrame({"user": [7777], "item": ["m0"], "rating": [4.0]})
    df = pd.concat([df, extra], ignore_index=True)
    cf = CollabFilterDataset.from_data_frame(tmp_path, df, "user", "item", "rating")
    val = np.r_[get_cv_idxs(cf.n - 1), cf.n - 1]  # the new user's only row is in validation
    learn = cf.get_learner(4, val, 32)
    return learn


def test_is_known_tells_trained_ids(tmp_path):
    learn = learner_with_a_validation_only_user(tmp_path)
    got = learn.is_known(users=[1000, 7777, 5])  # trained, validation only, not in the data
    assert got.dtype == bool and got.tolist() == [True, False, False]
    assert learn.is_known(users=1000).shape == () and bool(learn.is_known(users=1000))
    assert learn.is_known(items=np.array([["m0", "nope"]])).tolist() == [[True, False]]
    for bad in ({}, {"users": 1000, "items": "m0"}):
        with pytest.raises(ValueError, match="exactly one of users= or items="):
            learn.is_known(**bad)


def test_validation_only_id_counts_as_unseen(tmp_path):
    learn = learner_with_a_validation_only_user(tmp_path)
    with pytest.raises(UnknownIdError, match="7777 appears only in validation rows"):
        learn.predict_ratings(7777, "m0")


def test_fallback_is_global_mean_plus_known_side_bias(trained):
    cf, val, learn, *_ = trained
    cats, _, y = learn.data.trn_dl.tensors
    u, i, r = cats[:, 0].numpy(), cats[:, 1].numpy(), y[:, 0].double().numpy()
    mu = r.mean()
    j = cf.item2idx["m3"]
    b_i = (r[i == j] - mu).sum() / ((i == j).sum() + 10)
    got = learn.predict_ratings([5, 5], ["m3", "nope"], fallback=True)
    assert got[0] == pytest.approx(mu + b_i, rel=1e-6)
    assert got[1] == pytest.approx(mu, rel=1e-6)
    # A known user with an unknown item: mu + b_u (b_u from residuals after item biases).
    k = cf.user2idx[1000]
    bi_all = np.array([(r[i == q] - mu).sum() / ((i == q).sum() + 10) for q in range(cf.n_items)])
    b_u = (r[u == k] - mu - bi_all[i[u == k]]).sum() / ((u == k).sum() + 10)
    assert learn.predict_ratings(1000, "nope", fallback=True) == pytest.approx(mu + b_u, rel=1e-5)
    # Known pairs still come from the model.
    assert learn.predict_ratings(1000, "m3", fallback=True) == pytest.approx(
        learn.predict_ratings(1000, "m3"))


def test_recommend(trained):
    cf, val, learn, *_ = trained
    user = 1000
    rec = learn.recommend(user, n=5)
    assert list(rec.columns) == ["item", "title", "score"] and len(rec) == 5
    # exclude_seen drops the items rated in training (validation's stay candidates)
    rated = set(cf.idx2item[learn.seen_items().items_of(cf.user2idx[user])])
    assert not rated & set(rec["item"])
    assert rec["score"].is_monotonic_decreasing
    np.testing.assert_allclose(rec["score"], learn.predict_ratings(user, rec["item"].to_numpy()),
                               rtol=1e-6)
    # It really is the best of the unrated items.
    others = [it for it in cf.idx2item if it not in rated]
    assert rec["score"].iloc[0] == pytest.approx(learn.predict_ratings(user, others).max())
    assert learn.recommend(user, n=3, exclude_seen=False)["score"].iloc[0] >= rec["score"].iloc[0]
    assert rec["title"].iloc[0] in (f"Movie {rec['item'].iloc[0][1:]}", rec["item"].iloc[0])


def test_recommend_unknown_user(trained):
    cf, val, learn, *_ = trained
    with pytest.raises(UnknownIdError, match="user id 5"):
        learn.recommend(5)
    rec = learn.recommend(5, n=3, fallback=True, titles={})
    st = learn._train_stats()
    best = np.sort(st["mu"] + st["b_i"])[::-1][:3]
    np.testing.assert_allclose(rec["score"], best, rtol=1e-6)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        learn.recommend(1000, n=0)


def test_save_load_roundtrip(trained):
    cf, val, learn, *_ = trained
    before = learn.predict_ratings(1000, ["m0", "m1"])
    learn.save("cf_test")
    with torch.no_grad():
        learn.model.i.weight.add_(1.0)
    assert not np.allclose(learn.predict_ratings(1000, ["m0", "m1"]), before)
    learn.load("cf_test")
    np.testing.assert_array_equal(learn.predict_ratings(1000, ["m0", "m1"]), before)


def test_get_learner_other_model_and_kwargs(tmp_path):
    cf = CollabFilterDataset.from_data_frame(tmp_path, synthetic(), "user", "item", "rating")
    learn = cf.get_learner(4, get_cv_idxs(cf.n), 16, model="net", y_range=(0, 6),
                           model_kwargs={"nh": 5}, opt_fn=optim.SGD)
    assert isinstance(learn.model, EmbeddingNet) and learn.model.max_score == 6
    assert isinstance(learn.opt, optim.SGD)
    with pytest.raises(ValueError, match="n_factors"):
        cf.get_learner(0, get_cv_idxs(cf.n), 16)
    with pytest.raises(ValueError, match="bs"):
        cf.get_learner(4, get_cv_idxs(cf.n), 0)


def test_learner_without_dataset_explains(tmp_path):
    cf = CollabFilterDataset.from_data_frame(tmp_path, synthetic(), "user", "item", "rating")
    learn = CollabFilterLearner(cf.get_data(get_cv_idxs(cf.n), 16), cf.get_model(3))
    with pytest.raises(ValueError, match="without its CollabFilterDataset"):
        learn.predict_ratings(1000, "m0")


def test_get_learner_emb_l2(tmp_path):
    cf = CollabFilterDataset.from_data_frame(tmp_path, synthetic(), "user", "item", "rating")
    learn = cf.get_learner(4, get_cv_idxs(cf.n), 32, emb_l2=0.1, seed=0)
    assert learn.reg_fn is not None
    res = learn.fit(1e-2, 1, cycle_len=2, verbose=False)
    assert math.isfinite(res[0])
    with pytest.raises(ValueError, match="emb_l2 or reg_fn"):
        cf.get_learner(4, get_cv_idxs(cf.n), 32, emb_l2=0.1, reg_fn=lambda out, xs, loss: loss)


def test_get_learner_emb_l2_alpha_counts_training_rows_only(tmp_path):
    df = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3], "item": [10, 20, 30, 10, 20, 40],
                       "rating": [1.0, 2, 3, 4, 5, 3]})
    cf = CollabFilterDataset.from_data_frame(tmp_path, df, "user", "item", "rating")
    val = np.array([4, 5])  # user 3 and item 40 are rated in validation only
    learn = cf.get_learner(2, val, 2, emb_l2=1.0, emb_l2_bias=0.0, emb_l2_alpha=1.0, seed=0)
    m = learn.model
    cats = torch.tensor([[0, 0], [1, 1], [2, 3]])  # (user 1, item 10), (2, 20), (3, 40)
    # Training counts: users 1 -> 3, 2 -> 1, 3 -> 0; items 10 -> 2, 20 -> 1, 30 -> 1, 40 -> 0.
    wu, wi = torch.tensor([1 / 3, 1.0, 1.0]), torch.tensor([0.5, 1.0, 1.0])
    pen = (wu * (m.u.weight[cats[:, 0]] ** 2).sum(1)
           + wi * (m.i.weight[cats[:, 1]] ** 2).sum(1)).mean()
    torch.testing.assert_close(learn.reg_fn(None, [cats], torch.tensor(0.0)), pen)
    res = learn.fit(1e-2, 1, verbose=False)
    assert math.isfinite(res[0])
    with pytest.raises(ValueError, match="pass emb_l2 too"):
        cf.get_learner(2, val, 2, emb_l2_alpha=0.5)


def test_genre_features_aligned_to_items():
    from minifast.collab import genre_features

    movies = pd.DataFrame({"movieId": [7, 5, 9, 7], "title": ["a", "b", "c", "a again"],
                           "genres": ["Comedy|Drama", "(no genres listed)", "Drama", "Horror"]})
    f = genre_features(movies, [9, 7, 5, 42])  # 42 is not in movies; the 2nd row 7 is ignored
    np.testing.assert_allclose(f, [[0, 1], [0.5, 0.5], [0, 0], [0, 0]])  # Comedy, Drama
    assert f.dtype == np.float32
    with pytest.raises(ValueError, match="genres"):
        genre_features(movies.drop(columns="genres"), [7])


def test_get_learner_features_model(tmp_path):
    from minifast.collab import EmbeddingDotBiasFeatures, genre_features

    df = synthetic()
    cf = CollabFilterDataset.from_data_frame(tmp_path, df, "user", "item", "rating")
    names = ["A", "B", "C"]
    movies = pd.DataFrame({"movieId": cf.idx2item,
                           "genres": [names[k % 3] + ("|" + names[(k + 1) % 3] if k % 2 else "")
                                      for k in range(cf.n_items)]})
    feats = genre_features(movies, cf.idx2item)
    learn = cf.get_learner(4, get_cv_idxs(cf.n), 32, model="features", seed=0,
                           model_kwargs={"item_features": feats},
                           emb_l2=1.0, emb_l2_bias=0.1, emb_l2_alpha=0.5)
    assert isinstance(learn.model, EmbeddingDotBiasFeatures)
    res = learn.fit(1e-2, 1, cycle_len=2, verbose=False)
    assert math.isfinite(res[0])
    assert learn.model.item_feat.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="needs item_features"):
        cf.get_learner(4, get_cv_idxs(cf.n), 32, model="features")
