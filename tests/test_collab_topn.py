"""Top-N from implicit feedback: negative sampling, ranking losses, ImplicitMF, recommend and
the all-items ranking metrics, and implicit data parsing (rating_name=None, positive_at)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from resume_worker import assert_resumes_exactly, result

from minifast.collab import (
    CollabFilterDataset,
    ImplicitMF,
    Interactions,
    NegativeSamplingLoader,
    RankingMetric,
    bpr_loss,
    item_scores,
    map_at_k,
    sampled_softmax_loss,
    topn_scores,
)
from minifast.collab.losses import full_softmax_loss
from minifast.collab.sampling import PositivesLoader


def implicit_frame(n_users=12, n_items=10, density=0.6, seed=0) -> pd.DataFrame:
    """A dense-ish interaction frame (collisions between draws and positives are frequent);
    every user keeps at least two items it did not interact with."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        k = int(round(density * n_items))
        for i in rng.choice(n_items, size=min(k, n_items - 2), replace=False):
            rows.append((f"u{u}", f"i{i}"))
    return pd.DataFrame(rows, columns=["user", "item"])


def dataset(df=None, **kw) -> CollabFilterDataset:
    return CollabFilterDataset.from_data_frame(".", implicit_frame(**kw) if df is None else df,
                                               "user", "item", None)


def val_idxs(n, frac=0.2, seed=0):
    return np.random.default_rng(seed).permutation(n)[: int(n * frac)]


def loader(cats, exclude, seed=0, n_neg=3, **kw):
    return NegativeSamplingLoader(cats, torch.zeros(len(cats), 0), exclude=exclude, n_neg=n_neg,
                                  batch_size=8, shuffle=True, seed=seed, **kw)


def epoch_negatives(dl, start=0) -> list[torch.Tensor]:
    return [cats[:, 2:].clone() for cats, _, _ in dl.batches(start)]


# --------------------------------------------------------------------- negative sampling


@pytest.mark.parametrize("neg_sampling", ["uniform", "popularity"])
def test_no_sampled_negative_is_a_training_positive(neg_sampling):
    cf = dataset(n_users=15, n_items=8, density=0.75)
    md = cf.get_sampled_data(val_idxs(cf.n), bs=8, n_neg=6, neg_sampling=neg_sampling, seed=3)
    trn = md.trn_dl.tensors[0].numpy()
    positives = {(int(u), int(i)) for u, i in trn}  # built here, independent of Interactions
    n_checked = 0
    for epoch in range(2):
        for cats, _, log_q in md.trn_dl:
            assert cats.shape[1] == 2 + 6 and log_q.shape == (len(cats), 7)
            for row in cats.tolist():
                u, pos, negs = row[0], row[1], row[2:]
                assert (u, pos) in positives
                bad = [i for i in negs if (u, i) in positives]
                assert not bad, f"epoch {epoch}: user {u} got training positives {bad}"
                n_checked += len(negs)
    assert n_checked == 2 * len(trn) * 6
    # the validation loader's negatives avoid every item of the user, validation ones too
    every = {(int(u), int(i)) for u, i in zip(cf.user_col, cf.item_col, strict=True)}
    for cats, _, _ in md.val_dl:
        for row in cats.tolist():
            assert not [i for i in row[2:] if (row[0], i) in every]


def test_rejection_really_removes_collisions():
    # the check above can fail: raw draws of this data hit positives often
    cf = dataset(n_users=15, n_items=8, density=0.75)
    ex = Interactions.from_pairs(cf.user_col, cf.item_col, cf.n_users, cf.n_items)
    users = torch.from_numpy(cf.user_col).reshape(-1, 1).expand(-1, 6)
    raw = torch.randint(cf.n_items, users.shape, generator=torch.Generator().manual_seed(0))
    assert ex.contains(users, raw).float().mean() > 0.3


def small_problem():
    cf = dataset(n_users=10, n_items=12, density=0.5)
    cats = torch.from_numpy(np.stack([cf.user_col, cf.item_col], 1))
    ex = Interactions.from_pairs(cf.user_col, cf.item_col, cf.n_users, cf.n_items)
    return cats, ex


def test_batches_carry_the_log_of_each_items_sampling_probability():
    cf = dataset(n_users=15, n_items=8, density=0.5)
    md = cf.get_sampled_data(val_idxs(cf.n), bs=8, n_neg=3, neg_sampling="popularity", seed=0)
    counts = np.bincount(md.trn_dl.tensors[0][:, 1].numpy(), minlength=cf.n_items)
    q = counts / counts.sum()
    for cats, _, log_q in md.trn_dl:
        np.testing.assert_allclose(log_q.numpy(), np.log(q[cats[:, 1:].numpy()]), rtol=1e-6)


def test_negatives_are_seeded():
    cats, ex = small_problem()
    a, b, c = (epoch_negatives(loader(cats, ex, seed=s)) for s in (5, 5, 6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    # and the next epoch draws other negatives
    dl = loader(cats, ex, seed=5)
    e0, e1 = epoch_negatives(dl), epoch_negatives(dl)
    assert not all(torch.equal(x, y) for x, y in zip(e0, e1, strict=True))


def test_negatives_depend_only_on_seed_epoch_and_batch():
    cats, ex = small_problem()
    dl = loader(cats, ex, seed=2)
    epoch_negatives(dl)
    full = epoch_negatives(dl)  # epoch 1
    fresh = loader(cats, ex, seed=2)
    fresh.set_epoch(1)
    tail = epoch_negatives(fresh, start=3)
    assert len(tail) == len(full) - 3
    assert all(torch.equal(x, y) for x, y in zip(full[3:], tail, strict=True))
    # the state_dict is all a resumed loader needs
    other = loader(cats, ex, seed=99)
    dl.set_epoch(1)
    other.load_state_dict(dl.state_dict())
    assert all(torch.equal(x, y) for x, y in
               zip(epoch_negatives(other), full, strict=True))
    # and the global RNGs are not touched
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    epoch_negatives(loader(cats, ex, seed=2))
    assert torch.equal(torch.rand(3), before)


def test_fixed_loader_draws_the_same_negatives_every_epoch():
    cats, ex = small_problem()
    dl = loader(cats, ex, fixed=True)
    dl.shuffle = False
    assert all(torch.equal(x, y) for x, y in
               zip(epoch_negatives(dl), epoch_negatives(dl), strict=True))


def test_popularity_sampling_draws_popular_items_more_often():
    n_items = 6
    ex = Interactions.from_pairs([0], [5], 2, n_items)
    counts = np.array([50, 20, 10, 5, 1, 0])
    cats = torch.tensor([[1, 5]])
    dl = loader(cats, ex, n_neg=4000, neg_sampling="popularity", item_counts=counts)
    freq = np.bincount(dl.negatives(torch.tensor([1]), 0, 0).reshape(-1).numpy(),
                       minlength=n_items)
    assert freq[5] == 0  # an item without training interactions is never drawn
    assert freq[0] > 10 * freq[4] and freq[0] > freq[1] > freq[2] > freq[3]
    np.testing.assert_allclose(dl.q.numpy(), counts / counts.sum())
    # uniform, for contrast: every item about equally often
    uni = loader(cats, ex, n_neg=4000)
    f = np.bincount(uni.negatives(torch.tensor([1]), 0, 0).reshape(-1).numpy(),
                    minlength=n_items)
    assert f.min() > 0.5 * f.max()


def test_a_user_without_a_possible_negative_is_refused():
    ex = Interactions.from_pairs([0, 0, 0, 1], [0, 1, 2, 0], 2, 3)
    cats = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0]])
    with pytest.raises(ValueError, match=r"user index 0 .*interacted with every item.*no "
                                         r"negative exists"):
        loader(cats, ex)
    # under popularity sampling, only the drawable items count
    ex2 = Interactions.from_pairs([0, 0, 1], [0, 1, 2], 2, 3)
    cats2 = torch.tensor([[0, 0], [0, 1], [1, 2]])
    loader(cats2, ex2)  # uniform: item 2 is a negative for user 0
    with pytest.raises(ValueError, match="popularity sampling can draw"):
        loader(cats2, ex2, neg_sampling="popularity", item_counts=[3, 1, 0])
    with pytest.raises(ValueError, match="neg_sampling must be one of"):
        loader(cats2, ex2, neg_sampling="pop")
    with pytest.raises(ValueError, match="needs item_counts"):
        loader(cats2, ex2, neg_sampling="popularity")


# --------------------------------------------------------------------- resume


@pytest.mark.parametrize("neg_sampling", ["uniform", "popularity"])
def test_bpr_learner_resumes_bit_identically(tmp_path, neg_sampling):
    cf = dataset(n_users=30, n_items=20, density=0.4)
    vi = val_idxs(cf.n)

    def run(callbacks, resume=None):
        torch.manual_seed(0)
        learn = cf.get_learner(8, vi, bs=16, loss="bpr", n_neg=2, neg_sampling=neg_sampling,
                               seed=1, opt_fn=torch.optim.Adam)
        res = learn.fit(1e-2, 3, callbacks=callbacks, resume=resume, verbose=False,
                        progress=False)
        return result(learn.model, learn.opt, res.recorder, res.history)

    n_batches = len(cf.get_sampled_data(vi, bs=16, seed=1).trn_dl)
    assert n_batches >= 8
    at = n_batches + n_batches // 2 + 1  # mid epoch 2, past a checkpoint inside it
    assert_resumes_exactly(run, tmp_path / "ckpt", 3, at)


# --------------------------------------------------------------------- losses


def test_bpr_loss_is_the_formula():
    s = torch.tensor([[2.0, 1.0, -0.5], [0.0, 3.0, 0.5]], dtype=torch.float64)
    want = np.mean([-math.log(1 / (1 + math.exp(-(r[0] - r[j]))))
                    for r in s.tolist() for j in (1, 2)])
    assert bpr_loss(s).item() == pytest.approx(want, rel=1e-12)
    assert bpr_loss(s, torch.zeros_like(s)).item() == pytest.approx(want, rel=1e-12)


def test_sampled_softmax_loss_has_the_log_q_correction():
    s = torch.tensor([[2.0, 1.0, -0.5], [0.0, 3.0, 0.5]])
    lq = torch.log(torch.tensor([[0.5, 0.1, 0.4], [0.2, 0.7, 0.1]]))
    want = 0.0
    for r, q in zip(s.tolist(), lq.tolist(), strict=True):
        logits = [a - b for a, b in zip(r, q, strict=True)]
        want += -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    assert sampled_softmax_loss(s, lq).item() == pytest.approx(want / 2, rel=1e-6)
    # the correction matters: without it the loss differs
    assert sampled_softmax_loss(s, torch.zeros_like(s)).item() != pytest.approx(want / 2,
                                                                                rel=1e-3)


def test_losses_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"bpr_loss needs scores \[bs, 1 \+ n_neg\]"):
        bpr_loss(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="sampled_softmax_loss: log_q has shape"):
        sampled_softmax_loss(torch.zeros(4, 3), torch.zeros(4, 2))


def block_frame(n_per_group=12, group_items=4, n_groups=2) -> pd.DataFrame:
    """Users in groups; every user of group g interacted with exactly group g's items."""
    rows = [(f"u{g}_{j}", f"i{g * group_items + i}") for g in range(n_groups)
            for j in range(n_per_group) for i in range(group_items)]
    return pd.DataFrame(rows, columns=["user", "item"])


def test_full_softmax_loss_is_cross_entropy_against_every_item():
    s = torch.tensor([[2.0, 1.0, -0.5, 0.3], [0.0, 3.0, 0.5, -1.0]])
    items = torch.tensor([2, 1])
    want = np.mean([-(r[i] - math.log(sum(math.exp(x) for x in r)))
                    for r, i in zip(s.tolist(), items.tolist(), strict=True)])
    assert full_softmax_loss(s, items).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match=r"full_softmax_loss needs scores \[bs, n_items\]"):
        full_softmax_loss(s, items[:1])


def test_positives_loader_yields_users_and_their_positive_items():
    cats = torch.tensor([[0, 3], [1, 2], [0, 1], [2, 0], [1, 4]])
    dl = PositivesLoader(cats, torch.zeros(5, 0), batch_size=2, shuffle=True, seed=3)
    got = [(u.clone(), i.clone()) for u, _, i in dl.batches()]
    assert [tuple(u.shape) for u, _ in got] == [(2, 1), (2, 1), (1, 1)]
    pairs = torch.cat([torch.cat([u, i[:, None]], 1) for u, i in got])
    assert sorted(map(tuple, pairs.tolist())) == sorted(map(tuple, cats.tolist()))
    assert dl.tensors[0] is not None and torch.equal(dl.tensors[0], cats)
    with pytest.raises(ValueError, match=r"cats must be \[n, 2\]"):
        PositivesLoader(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 0))


def test_a_model_given_users_alone_scores_every_item():
    m = ImplicitMF(4, 5, 7).eval()
    users = torch.tensor([0, 3, 4])
    with torch.no_grad():
        torch.testing.assert_close(m(users[:, None]), m.score_items(users))


def test_full_softmax_refuses_sampling_and_emb_l2():
    cf = dataset()
    with pytest.raises(ValueError, match="samples nothing: drop n_neg=4"):
        cf.get_learner(4, val_idxs(cf.n), bs=8, loss="full_softmax", n_neg=4)
    with pytest.raises(ValueError, match=r"regularise it with fit\(..., wds=...\)"):
        cf.get_learner(4, val_idxs(cf.n), bs=8, loss="full_softmax", emb_l2=0.1)


def test_full_softmax_learner_resumes_bit_identically(tmp_path):
    cf = dataset(n_users=30, n_items=20, density=0.4)
    vi = val_idxs(cf.n)

    def run(callbacks, resume=None):
        torch.manual_seed(0)
        learn = cf.get_learner(8, vi, bs=16, loss="full_softmax", seed=1,
                               opt_fn=torch.optim.Adam)
        res = learn.fit(1e-2, 3, wds=1e-4, callbacks=callbacks, resume=resume, verbose=False,
                        progress=False)
        return result(learn.model, learn.opt, res.recorder, res.history)

    n_batches = len(cf.get_positives_data(vi, bs=16, seed=1).trn_dl)
    assert n_batches >= 8
    assert_resumes_exactly(run, tmp_path / "ckpt", 3, n_batches + n_batches // 2 + 1)


@pytest.mark.parametrize("loss", ["bpr", "softmax", "full_softmax"])
def test_training_ranks_each_users_positives_on_top(loss):
    df = block_frame()
    cf = dataset(df)
    torch.manual_seed(0)
    learn = cf.get_learner(8, np.array([0, 1]), bs=16, loss=loss, seed=0,
                           n_neg=1 if loss == "full_softmax" else 3, opt_fn=torch.optim.Adam)
    assert isinstance(learn.model, ImplicitMF)
    users = sorted(df.user.unique())
    rec0 = learn.recommend(users, n=4, exclude_seen=False)
    learn.fit(5e-2, 8, verbose=False, progress=False)
    rec = learn.recommend(users, n=4, exclude_seen=False)
    want = {u: set(df.item[df.user == u]) for u in users}
    n_right = sum(set(g.item) == want[u] for u, g in rec.groupby("user"))
    assert n_right == len(users)
    assert sum(set(g.item) == want[u] for u, g in rec0.groupby("user")) < len(users)


# --------------------------------------------------------------------- recommend


def trained_ranker(seed=0):
    cf = dataset(n_users=15, n_items=12, density=0.4, seed=seed)
    torch.manual_seed(0)
    learn = cf.get_learner(6, val_idxs(cf.n, 0.3), bs=16, loss="bpr", seed=0,
                           opt_fn=torch.optim.Adam)
    learn.fit(1e-2, 1, verbose=False, progress=False)
    return cf, learn


def test_recommend_excludes_training_items_only():
    cf, learn = trained_ranker()
    seen = learn.seen_items()
    trn_items = set(learn.data.trn_dl.tensors[0][:, 1].tolist())
    vc = learn.data.val_dl.tensors[0]
    # a validation-only (user, item) pair whose item is a candidate (has training rows)
    u, i = next((u, i) for u, i in vc[:, :2].tolist()
                if i in trn_items and i not in seen.items_of(u))
    user, item = cf.idx2user[u], cf.idx2item[i]
    rec = learn.recommend(user, n=cf.n_items)
    got = set(rec.item)
    assert item in got
    assert not got & set(cf.idx2item[seen.items_of(u)])
    assert got == set(cf.idx2item[sorted(trn_items - set(seen.items_of(u)))])
    assert list(rec.score) == sorted(rec.score, reverse=True)
    off = learn.recommend(user, n=cf.n_items, exclude_seen=False)
    assert set(cf.idx2item[seen.items_of(u)]) <= set(off.item)
    assert set(off.item) == set(cf.idx2item[sorted(trn_items)])


def test_recommend_for_a_batch_equals_one_user_at_a_time():
    cf, learn = trained_ranker()
    users = list(cf.idx2user[[3, 0, 7, 11]])
    batch = learn.recommend(users, n=5)
    assert list(batch.columns) == ["user", "item", "score"]
    assert list(pd.unique(batch.user)) == users
    for u in users:
        one = learn.recommend(u, n=5)
        part = batch[batch.user == u].drop(columns="user").reset_index(drop=True)
        pd.testing.assert_frame_equal(part, one)
        assert list(one.score) == sorted(one.score, reverse=True)


def test_recommend_for_an_unseen_user_with_fallback_gives_the_most_popular_items():
    cf, learn = trained_ranker()
    counts = np.bincount(learn.data.trn_dl.tensors[0][:, 1].numpy(), minlength=cf.n_items)
    rec = learn.recommend("nobody", n=3, fallback=True)
    np.testing.assert_array_equal(rec.score, np.sort(counts)[::-1][:3])
    with pytest.raises(Exception, match="nobody"):
        learn.recommend("nobody", n=3)


# --------------------------------------------------------------------- all-items metrics


def brute_force(S, seen_pairs, held_pairs, n_users, k):
    """NDCG@k, recall@k, MAP@k, precision@k by plain Python over users with relevant items."""
    out = {"ndcg": [], "recall": [], "map": [], "precision": []}
    for u in range(n_users):
        seen = {i for uu, i in seen_pairs if uu == u}
        rel = {i for uu, i in held_pairs if uu == u} - seen
        if not rel:
            continue
        cand = [i for i in np.argsort(-S[u], kind="stable") if i not in seen][:k]
        hits = [int(i in rel) for i in cand]
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h)
        out["ndcg"].append(dcg / idcg)
        out["recall"].append(sum(hits) / len(rel))
        out["map"].append(ap / min(k, len(rel)))
        out["precision"].append(sum(hits) / k)
    return {m: float(np.mean(v)) for m, v in out.items()} | {"n_users": len(out["ndcg"])}


def random_pairs(rng, n_users, n_items, n):
    return list({(int(rng.integers(n_users)), int(rng.integers(n_items))) for _ in range(n)})


@pytest.mark.parametrize("k", [1, 5, 30])
def test_topn_scores_match_a_brute_force_computation(k):
    rng = np.random.default_rng(k)
    n_users, n_items = 25, 20
    S = rng.standard_normal((n_users, n_items)).astype(np.float32)
    seen_p = random_pairs(rng, n_users, n_items, 150)
    held_p = random_pairs(rng, n_users, n_items, 60)  # some overlap the seen ones
    seen = Interactions.from_pairs(*zip(*seen_p, strict=True), n_users, n_items)
    held = Interactions.from_pairs(*zip(*held_p, strict=True), n_users, n_items)
    want = brute_force(S, seen_p, held_p, n_users, k)
    for chunk in (None, 4):
        got = topn_scores(lambda u: torch.from_numpy(S[u]), seen, held, k, chunk=chunk)
        assert got["n_users"] == want["n_users"] > 0
        for m in ("ndcg", "recall", "map", "precision"):
            assert got[m] == pytest.approx(want[m], rel=1e-9, abs=1e-12), m


def test_all_items_ranking_metric_matches_a_brute_force_computation():
    cf = dataset(n_users=20, n_items=15, density=0.4, seed=1)
    torch.manual_seed(0)
    metrics = [RankingMetric(kind, k=5, protocol="all_items") for kind in ("ndcg", "recall")]
    metrics.append(map_at_k(5))
    learn = cf.get_learner(6, val_idxs(cf.n, 0.3), bs=16, loss="bpr", seed=0,
                           opt_fn=torch.optim.Adam, metrics=metrics)
    res = learn.fit(1e-2, 1, verbose=False, progress=False)
    trn, val = learn.data.trn_dl.tensors[0], learn.data.val_dl.tensors[0]
    learn.model.eval()
    S = item_scores(learn.model, np.arange(cf.n_users), cf.n_items).cpu().numpy()
    want = brute_force(S, [tuple(p) for p in trn[:, :2].tolist()],
                       [tuple(p) for p in val[:, :2].tolist()], cf.n_users, 5)
    n_val = len(val)
    for m, kind in zip(metrics, ("ndcg", "recall", "map"), strict=True):
        assert m.last == pytest.approx(want[kind], rel=1e-6), kind
        assert m(torch.zeros(n_val), torch.zeros(n_val)) == pytest.approx(want[kind], rel=1e-6)
    assert res.history is not None
    with pytest.raises(ValueError, match="bound to a validation set of"):
        metrics[0](torch.zeros(n_val + 1), torch.zeros(n_val + 1))


def test_all_items_metric_needs_the_model():
    with pytest.raises(ValueError, match=r'protocol="all_items"\) scores every item'):
        RankingMetric("ndcg", protocol="all_items").bind(object())
    with pytest.raises(ValueError, match='"map"'):
        RankingMetric("map")


# --------------------------------------------------------------------- implicit parsing


RATED = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [10, 11, 10, 12, 11, 12],
                      "rating": [5.0, 3.0, 4.0, 1.0, 4.5, 2.0]})


def test_rating_none_makes_every_row_an_interaction():
    cf = CollabFilterDataset.from_data_frame(".", RATED, "user", "item", None)
    assert cf.implicit and cf.rating_name is None and cf.positive_at is None
    assert cf.n == 6 and (cf.ratings == 1).all() and cf.min_score == cf.max_score == 1
    with pytest.raises(ValueError, match="loss='bpr' or loss='softmax'"):
        cf.get_learner(4, np.array([0]), 4)


def test_positive_at_keeps_the_rows_rated_at_least_it(tmp_path):
    cf = CollabFilterDataset.from_data_frame(".", RATED, "user", "item", "rating", positive_at=4)
    assert cf.implicit and cf.positive_at == 4.0 and cf.n == 3
    kept = {(cf.idx2user[u], cf.idx2item[i]) for u, i in zip(cf.user_col, cf.item_col,
                                                             strict=True)}
    assert kept == {(1, 10), (2, 10), (3, 11)}
    assert (cf.ratings == 1).all()
    RATED.to_csv(tmp_path / "r.csv", index=False)
    cf2 = CollabFilterDataset.from_csv(tmp_path, "r.csv", "user", "item", "rating",
                                       positive_at=4.5)
    assert cf2.n == 2 and cf2.implicit
    explicit = CollabFilterDataset.from_data_frame(".", RATED, "user", "item", "rating")
    assert not explicit.implicit and explicit.n == 6


@pytest.mark.parametrize("kw, message", [
    ({"rating_name": None, "positive_at": 4}, r"name the rating column too \(rating_name=...\)"),
    ({"positive_at": "4"}, r"positive_at must be a number .*got '4'"),
    ({"positive_at": True}, r"positive_at must be a number"),
    ({"positive_at": float("inf")}, r"positive_at must be finite, got inf"),
    ({"positive_at": float("nan")}, r"positive_at must be finite"),
    ({"positive_at": 6}, r"no rating in column 'rating' of the frame is >= positive_at=6 "
                         r"\(the highest is 5\)"),
])
def test_positive_at_errors(kw, message):
    kw = {"rating_name": "rating"} | kw
    with pytest.raises(ValueError, match=message):
        CollabFilterDataset.from_data_frame(".", RATED, "user", "item", **kw)


def test_positive_at_errors_name_the_original_csv_lines(tmp_path):
    bad = RATED.astype({"rating": object})
    bad.loc[4, "rating"] = "x"
    bad.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ValueError, match="r.csv"):
        CollabFilterDataset.from_csv(tmp_path, "r.csv", "user", "item", "rating", positive_at=4)
