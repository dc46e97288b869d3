"""Collab models: output formulas, ranges, init, calling conventions, argument checks."""

from __future__ import annotations

import pytest
import torch

from minifast.collab import EmbeddingDot, EmbeddingDotBias, EmbeddingNet

USERS, ITEMS = torch.tensor([0, 1, 2, 1]), torch.tensor([3, 0, 4, 4])
CATS = torch.stack([USERS, ITEMS], 1)


@pytest.fixture(params=["dot", "dotbias", "net"])
def model(request):
    torch.manual_seed(0)
    return {
        "dot": lambda: EmbeddingDot(3, 5, 4),
        "dotbias": lambda: EmbeddingDotBias(4, 3, 5, 0.5, 5.0),
        "net": lambda: EmbeddingNet(4, 3, 5, 0.5, 5.0, nh=6),
    }[request.param]()


def test_forward_cats_conts_shape_and_equivalent_calls(model):
    model.eval()
    out = model(CATS, torch.zeros(4, 0))
    assert out.shape == (4, 1)
    torch.testing.assert_close(model(CATS), out)
    torch.testing.assert_close(model(USERS, ITEMS), out)
    torch.testing.assert_close(model.score(USERS, ITEMS), out[:, 0])


def test_forward_rejects_bad_shapes(model):
    with pytest.raises(ValueError, match="shape"):
        model(torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="1-D integer tensor of items"):
        model(USERS)
    with pytest.raises(ValueError, match="1-D integer tensor of items"):
        model(USERS, torch.zeros(4))


def test_dotbias_formula_and_init():
    torch.manual_seed(1)
    m = EmbeddingDotBias(3, 4, 5, 1.0, 5.0)
    for e in (m.u, m.i, m.ub, m.ib):
        assert e.weight.min() >= -0.05 and e.weight.max() <= 0.05
        assert e.weight.std() > 0.01  # really uniform(-0.05, 0.05), not zeros
    u, i = torch.tensor([1, 3]), torch.tensor([0, 4])
    raw = (m.u.weight[u] * m.i.weight[i]).sum(1) + m.ub.weight[u, 0] + m.ib.weight[i, 0]
    torch.testing.assert_close(m.score(u, i), torch.sigmoid(raw) * 4.0 + 1.0)


def test_dotbias_output_within_range_for_extreme_weights():
    m = EmbeddingDotBias(2, 3, 3, 0.5, 5.0)
    with torch.no_grad():
        for e in (m.u, m.i, m.ub, m.ib):
            e.weight.mul_(1000)
    out = m(torch.tensor([[0, 0], [1, 2], [2, 1]]))
    assert (out >= 0.5).all() and (out <= 5.0).all()


def test_embeddingdot_is_plain_dot_product_with_lesson_init():
    torch.manual_seed(2)
    m = EmbeddingDot(4, 5, n_factors=3)
    assert m.u.weight.min() >= 0 and m.u.weight.max() <= 0.05
    u, i = torch.tensor([0, 3]), torch.tensor([4, 1])
    torch.testing.assert_close(m.score(u, i), (m.u.weight[u] * m.i.weight[i]).sum(1))


def test_embeddingnet_range_has_half_step_headroom():
    m = EmbeddingNet(2, 3, 3, 1.0, 5.0, nh=4, p1=0.0, p2=0.0)
    with torch.no_grad():
        m.lin2.bias.fill_(100.0)
    assert m(torch.tensor([[0, 0]])).item() == pytest.approx(5.5)
    with torch.no_grad():
        m.lin2.bias.fill_(-100.0)
    assert m(torch.tensor([[0, 0]])).item() == pytest.approx(0.5)


def test_embeddingnet_dropout_only_in_training():
    torch.manual_seed(3)
    m = EmbeddingNet(4, 3, 5, 0.5, 5.0, p1=0.5, p2=0.5)
    m.eval()
    torch.testing.assert_close(m(CATS), m(CATS))
    m.train()
    outs = torch.stack([m(CATS) for _ in range(20)])
    assert outs.std(0).max() > 0


def test_gradients_reach_all_embeddings(model):
    model.train()
    model(CATS).sum().backward()
    assert model.u.weight.grad[USERS].abs().sum() > 0
    assert model.i.weight.grad[ITEMS].abs().sum() > 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EmbeddingDotBias(0, 3, 5, 0, 5), "n_factors"),
        (lambda: EmbeddingDotBias(-2, 3, 5, 0, 5), "n_factors"),
        (lambda: EmbeddingDotBias(2.5, 3, 5, 0, 5), "n_factors"),
        (lambda: EmbeddingDotBias(2, 0, 5, 0, 5), "n_users"),
        (lambda: EmbeddingDotBias(2, 3, 5, 3, 3), "min_score < max_score"),
        (lambda: EmbeddingDotBias(2, 3, 5, 0, float("inf")), "finite"),
        (lambda: EmbeddingNet(2, 3, 5, 0, 5, p1=1.0), "p1"),
        (lambda: EmbeddingNet(2, 3, 5, 0, 5, nh=0), "nh"),
        (lambda: EmbeddingDot(3, 5, n_factors=0), "n_factors"),
        (lambda: EmbeddingDot(3, True), "n_items"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_embedding_l2_penalises_rows_of_the_batch():
    from minifast.collab import embedding_l2

    torch.manual_seed(0)
    m = EmbeddingDotBias(3, 4, 5, 0.5, 5.0)
    reg = embedding_l2(m, 0.1, bias_lam=0.5)
    loss = torch.tensor(1.0)
    u, i = CATS[:, 0], CATS[:, 1]
    pen = (0.1 * ((m.u.weight[u] ** 2).sum(1) + (m.i.weight[i] ** 2).sum(1))
           + 0.5 * (m.ub.weight[u, 0] ** 2 + m.ib.weight[i, 0] ** 2)).mean()
    torch.testing.assert_close(reg(None, [CATS, torch.zeros(4, 0)], loss), loss + pen)
    # Gradients only reach the rows in the batch.
    reg(None, [CATS], torch.tensor(0.0)).backward()
    assert m.u.weight.grad[3].abs().sum() == 0 and m.u.weight.grad[1].abs().sum() > 0
    assert m.i.weight.grad[[1, 2]].abs().sum() == 0
    # Models without biases (EmbeddingDot) get the factor penalty only.
    d = EmbeddingDot(4, 5, 3)
    assert embedding_l2(d, 0.1)(None, [CATS], torch.tensor(0.0)) > 0
    for kw, name in (({"lam": -1.0}, "lam"), ({"bias_lam": float("nan")}, "bias_lam"),
                     ({"feature_lam": float("inf")}, "feature_lam"), ({"lam": "0.1"}, "lam")):
        with pytest.raises(ValueError, match=f"^{name} must be a finite number >= 0"):
            embedding_l2(m, **{"lam": 0.1, **kw})
    with pytest.raises(ValueError, match="needs factor embeddings"):
        embedding_l2(torch.nn.Linear(2, 2), 0.1)


def test_embedding_l2_frequency_scaling():
    from minifast.collab import embedding_l2

    torch.manual_seed(0)
    m = EmbeddingDotBias(3, 4, 5, 0.5, 5.0)
    ucounts, icounts = [4, 1, 0, 9], [1, 0, 0, 16, 25]  # 0 counts clamp to 1
    reg = embedding_l2(m, 0.3, bias_lam=0.2, counts=(ucounts, icounts), alpha=0.5)
    u, i = CATS[:, 0], CATS[:, 1]
    wu = torch.tensor([4.0, 1, 1, 9])[u] ** -0.5
    wi = torch.tensor([1.0, 1, 1, 16, 25])[i] ** -0.5
    pen = (wu * (0.3 * (m.u.weight[u] ** 2).sum(1) + 0.2 * m.ub.weight[u, 0] ** 2)
           + wi * (0.3 * (m.i.weight[i] ** 2).sum(1) + 0.2 * m.ib.weight[i, 0] ** 2)).mean()
    torch.testing.assert_close(reg(None, [CATS], torch.tensor(0.0)), pen)
    # alpha=0 ignores the counts: the plain penalty.
    torch.testing.assert_close(
        embedding_l2(m, 0.3, 0.2, counts=(ucounts, icounts), alpha=0)(None, [CATS], torch.tensor(0.0)),
        embedding_l2(m, 0.3, 0.2)(None, [CATS], torch.tensor(0.0)))
    with pytest.raises(ValueError, match="pass counts"):
        embedding_l2(m, 0.3, alpha=0.5)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -1"):
        embedding_l2(m, 0.3, counts=(ucounts, icounts), alpha=-1)
    with pytest.raises(ValueError, match="user counts must be 4 integers"):
        embedding_l2(m, 0.3, counts=([1, 2], icounts), alpha=0.5)
    with pytest.raises(ValueError, match="item counts must be 5 integers"):
        embedding_l2(m, 0.3, counts=(ucounts, [0.5] * 5), alpha=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        embedding_l2(m, 0.3, counts=(ucounts, [1, 1, -1, 1, 1]), alpha=0.5)



def test_embedding_dot_bias_features():
    from minifast.collab import EmbeddingDotBiasFeatures, embedding_l2

    torch.manual_seed(0)
    feats = torch.tensor([[1.0, 0], [0, 1], [0.5, 0.5], [0, 0], [1, 0]])
    m = EmbeddingDotBiasFeatures(3, 4, 5, 0.5, 5.0, item_features=feats)
    # W starts at zero: the same output as EmbeddingDotBias with the same embeddings.
    torch.manual_seed(0)
    plain = EmbeddingDotBias(3, 4, 5, 0.5, 5.0)
    torch.testing.assert_close(m(CATS), plain(CATS))
    with torch.no_grad():
        m.item_feat.weight.normal_()
    u, i = CATS[:, 0], CATS[:, 1]
    off = feats[i] @ m.item_feat.weight.T
    res = ((m.u.weight[u] * (m.i.weight[i] + off[:, :3])).sum(1) + m.ub.weight[u, 0]
           + m.ib.weight[i, 0] + off[:, 3])
    torch.testing.assert_close(m.score(u, i), torch.sigmoid(res) * 4.5 + 0.5)
    # The feature penalty: feature_lam (default bias_lam) times the offsets' squared norms.
    base = embedding_l2(m, 0.1, bias_lam=0.2, feature_lam=0)(None, [CATS], torch.tensor(0.0))
    got = embedding_l2(m, 0.1, bias_lam=0.2)(None, [CATS], torch.tensor(0.0))
    torch.testing.assert_close(got, base + 0.2 * (off ** 2).sum(1).mean())
    # Gradients reach W (features are trained), and the buffer moves with the model.
    m.score(u, i).sum().backward()
    assert m.item_feat.weight.grad.abs().sum() > 0
    assert "item_features" in m.state_dict()
    for bad, match in ((None, "needs item_features"), (torch.ones(4, 2), "shape"),
                       (torch.ones(5, 0), "shape"), (torch.full((5, 2), float("nan")), "NaN")):
        with pytest.raises(ValueError, match=match):
            EmbeddingDotBiasFeatures(3, 4, 5, 0.5, 5.0, item_features=bad)
