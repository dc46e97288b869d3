"""Ranking metrics: hand-computed values, exactness through the core's per-batch validate,
binding errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minifast import ColumnarModelData, fit, get_cv_idxs, predict
from minifast.collab import (
    EmbeddingDotBias,
    RankingMetric,
    ndcg_at_k,
    precision_at_k,
    ranking_scores,
    recall_at_k,
    rmse,
)


def test_ranking_scores_by_hand():
    # user 0: items ranked by pred: r=5 (rel), r=2, r=4 (rel); user 1: r=1, r=4.5 (rel)
    users = [0, 0, 0, 1, 1]
    preds = [4.0, 3.0, 1.0, 4.0, 2.0]
    y = [5.0, 2.0, 4.0, 1.0, 4.5]
    s = ranking_scores(users, preds, y, k=2, threshold=4.0)
    # precision: u0 1/2, u1 1/2; recall: u0 1/2, u1 1/1
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.75)
    # ndcg: u0 dcg=1, idcg=1+1/log2(3); u1 dcg=1/log2(3), idcg=1
    ndcg0, ndcg1 = 1 / (1 + 1 / math.log2(3)), 1 / math.log2(3)
    assert s["ndcg"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert s["n_users"] == 2


def test_perfect_ranking_and_users_without_relevant_items():
    users = np.repeat(np.arange(3), 4)
    y = np.tile([5.0, 4.0, 3.0, 1.0], 3)
    y[8:] = 2.0  # user 2 has nothing relevant: left out
    s = ranking_scores(users, y, y, k=2)
    assert s == {"precision": 1.0, "recall": 1.0, "ndcg": 1.0, "n_users": 2}
    s = ranking_scores(users, -y, y, k=2)  # worst ordering: relevant items last
    assert s["precision"] == 0.0 and s["ndcg"] == 0.0
    assert math.isnan(ranking_scores([0, 0], [1, 2], [1, 2], k=1)["ndcg"])


def test_precision_denominator_is_min_k_and_user_items():
    s = ranking_scores([0, 0], [2.0, 1.0], [5.0, 5.0], k=10)
    assert s["precision"] == 1.0 and s["recall"] == 1.0


def test_ranking_scores_errors():
    with pytest.raises(ValueError, match="k must be"):
        ranking_scores([0], [1.0], [1.0], k=0)
    with pytest.raises(ValueError, match="different lengths"):
        ranking_scores([0, 1], [1.0], [1.0])


@pytest.fixture
def setup(tmp_path):
    rng = np.random.RandomState(0)
    n = 700
    cats = np.stack([rng.randint(0, 25, n), rng.randint(0, 40, n)], 1)
    y = rng.randint(1, 11, n) / 2
    md = ColumnarModelData.from_arrays(tmp_path, get_cv_idxs(n), cats, y, bs=23, seed=0)
    torch.manual_seed(0)
    return md, EmbeddingDotBias(4, 25, 40, 0.5, 5.0)


def test_metric_through_core_fit_is_exact_despite_uneven_batches(setup):
    md, model = setup
    assert md.val_dl.n % md.val_dl.batch_size != 0  # last validation batch is smaller
    ms = [precision_at_k(5, data=md), recall_at_k(5, data=md), ndcg_at_k(5, 3.5, data=md)]
    res = fit(model, md, 2, torch.optim.Adam(model.parameters(), 1e-2), F.mse_loss, ms,
              verbose=False)
    cats, _, y = md.val_dl.tensors
    p = predict(model, md.val_dl)
    assert res[1] == pytest.approx(ranking_scores(cats[:, 0], p, y, 5)["precision"], abs=1e-9)
    assert res[2] == pytest.approx(ranking_scores(cats[:, 0], p, y, 5)["recall"], abs=1e-9)
    assert res[3] == pytest.approx(ranking_scores(cats[:, 0], p, y, 5, 3.5)["ndcg"], abs=1e-9)
    assert ms[2].__name__ == "ndcg@5" and "ndcg@5" in res.history[0]
    assert ms[0].last == pytest.approx(res[1])


def test_unbound_or_wrongly_bound_metric_fails_loudly(setup, tmp_path):
    md, model = setup
    m = precision_at_k(5)
    with pytest.raises(ValueError, match="not bound"):
        m(torch.zeros(3, 1), torch.zeros(3, 1))
    # Bound to a smaller set: too many rows.
    m = RankingMetric("recall", 5).bind((np.zeros(10), np.ones(10)))
    with pytest.raises(ValueError, match="bound to a validation set of 10 rows"):
        m(torch.zeros(23, 1), torch.zeros(23, 1))
    # Bound to a set of the same size with other targets.
    cats, _, y = md.val_dl.tensors
    m = RankingMetric("ndcg", 5).bind((cats[:, 0], y.flip(0)))
    with pytest.raises(ValueError, match="targets seen differ"):
        m(predict(model, md.val_dl), y)  # validate calls a metric once, on the whole set
    with pytest.raises(ValueError, match="takes the whole set at once"):
        m(torch.zeros(23, 1), y[:23])
    with pytest.raises(ValueError, match="kind"):
        RankingMetric("map", 5)
    with pytest.raises(ValueError, match="cannot bind"):
        RankingMetric("ndcg").bind(object())


def test_rmse():
    p, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [5.0]])
    assert rmse(p, y).item() == pytest.approx(math.sqrt(2.5))
