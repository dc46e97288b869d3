"""ItemSetMF: the user's training item set in the user representation, each item left out of
its own score; its three scoring paths agree; it trains through get_learner(model="itemset")
and the ordinary fit, and is scored by topn_scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from minifast.collab import CollabFilterDataset, Interactions, item_scores, topn_scores
from minifast.collab.itemset_model import ItemSetMF


def seen_set(n_users=6, n_items=9, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users - 1):  # the last user has no items
        for i in rng.choice(n_items, size=int(rng.integers(1, 6)), replace=False):
            users.append(u)
            items.append(i)
    return Interactions.from_pairs(users, items, n_users, n_items)


def randomised(seen: Interactions, f=4, **kw) -> ItemSetMF:
    torch.manual_seed(0)
    m = ItemSetMF(f, seen.n_users, seen.n_items, seen=seen, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m.eval()


@torch.no_grad()
def brute_force(m: ItemSetMF, seen: Interactions, u: int, j: int) -> float:
    others = [i for i in seen.items_of(u) if i != j]
    n = max(len(seen.items_of(u)), 1)
    vec = m.u.weight[u] + n ** -m.alpha * sum((m.p.weight[i] for i in others),
                                              torch.zeros(m.u.weight.shape[1]))
    return float(vec @ m.i.weight[j] + m.ib.weight[j, 0])


def test_scores_match_the_formula_with_each_item_left_out_of_its_own_set():
    seen = seen_set()
    m = randomised(seen, alpha=0.7)
    users = torch.arange(seen.n_users)
    with torch.no_grad():
        full = m.score_items(users)
    expect = torch.tensor([[brute_force(m, seen, u, j) for j in range(seen.n_items)]
                           for u in range(seen.n_users)])
    torch.testing.assert_close(full, expect, rtol=1e-5, atol=1e-5)


def test_forward_score_and_score_items_agree():
    seen = seen_set()
    m = randomised(seen)
    users = torch.arange(seen.n_users)
    items = torch.arange(seen.n_items).repeat(seen.n_users, 1)
    with torch.no_grad():
        full = m.score_items(users)
        fwd = m(torch.cat([users[:, None], items], 1))
        pairs = m.score(users.repeat_interleave(seen.n_items), items.reshape(-1))
        one = m(torch.stack([users, torch.full_like(users, 2)], 1))
    torch.testing.assert_close(fwd, full)
    torch.testing.assert_close(pairs.reshape(full.shape), full)
    torch.testing.assert_close(one[:, 0], full[:, 2])
    torch.testing.assert_close(item_scores(m, users, seen.n_items), full)


def test_a_training_item_does_not_score_itself():
    seen = seen_set()
    m = randomised(seen)
    u = 0
    j = int(seen.items_of(u)[0])
    other = next(v for v in range(seen.n_users) if j not in seen.items_of(v)
                 and len(seen.items_of(v)))
    with torch.no_grad():
        before = m.score_items(torch.tensor([u, other]))
        m.p.weight[j] += 10.0
        after = m.score_items(torch.tensor([u, other]))
    assert after[0, j] == pytest.approx(float(before[0, j]), abs=1e-5)  # p_j is not in its own
    assert not torch.allclose(after[0], before[0])  # but it moves u's other items
    torch.testing.assert_close(after[1], before[1])  # and nothing for a user without j


def test_dropout_only_in_training_and_rescaled():
    seen = seen_set()
    m = randomised(seen, dropout=0.5)
    users = torch.arange(seen.n_users)
    with torch.no_grad():
        ev = m.score_items(users)
        torch.testing.assert_close(m.score_items(users), ev)
        m.train()
        torch.manual_seed(1)
        draws = torch.stack([m.score_items(users) for _ in range(400)])
    assert not torch.allclose(draws[0], ev)
    torch.testing.assert_close(draws.mean(0), ev, atol=0.35, rtol=0.05)


def test_bad_arguments_are_named():
    seen = seen_set()
    with pytest.raises(ValueError, match="seen covers 6 users x 9 items"):
        ItemSetMF(4, 7, 9, seen=seen)
    with pytest.raises(TypeError, match="seen must be the training Interactions"):
        ItemSetMF(4, 6, 9, seen=np.zeros((6, 9)))
    with pytest.raises(ValueError, match="dropout must be in"):
        ItemSetMF(4, 6, 9, seen=seen, dropout=1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        ItemSetMF(4, 6, 9, seen=seen, alpha=-1.0)


def three_tastes(n_users=60) -> pd.DataFrame:
    """User u takes every item of group u % 3: items 0-5, 6-11 or 12-17."""
    rows = [(u, 6 * (u % 3) + i) for u in range(n_users) for i in range(6)]
    return pd.DataFrame(rows, columns=["user", "item"])


def test_trains_with_get_learner_and_ranks_held_out_items_of_the_users_taste():
    cf = CollabFilterDataset.from_data_frame(".", three_tastes(), "user", "item", None)
    val = np.random.default_rng(0).permutation(cf.n)[: cf.n // 6]
    torch.manual_seed(0)
    learn = cf.get_learner(8, val, bs=32, loss="softmax", n_neg=4, seed=0, model="itemset",
                           model_kwargs={"dropout": 0.2}, opt_fn=torch.optim.Adam, emb_l2=1e-3)
    assert isinstance(learn.model, ItemSetMF)
    cats = learn.data.trn_dl.tensors[0]
    trained_on = Interactions.from_pairs(cats[:, 0], cats[:, 1], cf.n_users, cf.n_items)
    np.testing.assert_array_equal(learn.model.indices.numpy(), trained_on.indices)
    learn.fit(3e-2, 1, cycle_len=10, progress=False, verbose=False)
    heldout = Interactions.from_pairs(cf.user_col[val], cf.item_col[val], cf.n_users,
                                      cf.n_items)
    model = learn.model.eval()
    scores = topn_scores(lambda u: item_scores(model, u, cf.n_items), learn.seen_items(),
                         heldout, k=3)
    # a user's held-out items are the only unseen items of its group; a taste-blind ranking
    # of its 13 or so unseen items would have a recall@3 near 3 / 13
    assert scores["recall"] > 0.9
