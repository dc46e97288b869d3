"""Interpretation: biases ranked, nearest items, factor PCA, plots (on planted weights)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minifast import get_cv_idxs  # noqa: E402
from minifast.collab import (  # noqa: E402
    CollabFilterDataset,
    factor_pca,
    item_biases,
    item_factors,
    nearest_items,
    plot_items_pca,
    plot_pred_vs_actual,
)


@pytest.fixture
def learn(tmp_path):
    """A learner over 6 items (ids 'a'..'f'; 'a' rated most) whose weights we then plant."""
    rows = [(u, it, 1.0 + (u + k) % 5) for u in range(12) for k, it in enumerate("abcdef")
            if not (it == "f" and u > 2) and not (it == "e" and u > 6)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating"])
    cf = CollabFilterDataset.from_data_frame(tmp_path, df, "user", "item", "rating")
    learn = cf.get_learner(3, get_cv_idxs(cf.n), 8,
                           item_names={"a": "Alpha", "b": "Beta", "c": "Gamma"})
    m = learn.model
    idx = [cf.item2idx[c] for c in "abcdef"]
    with torch.no_grad():
        m.ib.weight[idx, 0] = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, -0.5])
        m.i.weight[idx] = torch.tensor([
            [1.0, 0.0, 0.0],
            [0.9, 0.1, 0.0],   # b: nearly parallel to a
            [-1.0, 0.0, 0.0],  # c: opposite of a
            [0.0, 1.0, 0.0],
            [3.0, 0.05, 0.0],  # e: parallel to a, longer (cosine ignores length)
            [0.0, 0.0, 1.0],
        ])
    return learn


def test_item_biases_ranked_with_titles_and_counts(learn):
    df = item_biases(learn)
    assert df["item"].tolist() == ["c", "e", "a", "d", "f", "b"]
    assert df["title"].tolist()[:3] == ["Gamma", "e", "Alpha"]  # missing titles show the id
    assert df["bias"].tolist() == pytest.approx([2.0, 1.0, 0.5, 0.0, -0.5, -1.0])
    assert dict(zip(df["item"], df["n_ratings"], strict=True))["f"] == 3
    top = item_biases(learn, top=4)  # the 4 most-rated items: drops e (7) and f (3)
    assert set(top["item"]) == {"a", "b", "c", "d"}
    no_titles = item_biases(learn, titles=pd.Series(dtype=object))
    assert no_titles["title"].tolist()[0] == "c"


def test_item_biases_need_a_bias_embedding(learn):
    learn.model = learn.cf.get_model(3, "dot")
    with pytest.raises(ValueError, match="no item bias embedding `.ib`"):
        item_biases(learn)


def test_nearest_items_by_cosine(learn):
    near = nearest_items(learn, "a", n=3)
    assert near["item"].tolist() == ["e", "b", "d"]
    assert near["similarity"].iloc[0] == pytest.approx(3.0 / np.hypot(3.0, 0.05))
    assert nearest_items(learn, "a", n=10)["item"].tolist()[-1] == "c"  # the opposite is last
    assert "a" not in nearest_items(learn, "a", n=10)["item"].tolist()
    with pytest.raises(KeyError, match="zz"):
        nearest_items(learn, "zz")


def test_factor_pca_finds_dominant_direction(learn):
    pca = factor_pca(learn, n_components=2)
    assert pca.components.shape == (2, 3) and pca.scores.shape == (6, 2)
    assert abs(pca.components[0, 0]) > 0.95  # the first axis carries most variance
    assert pca.explained_variance_ratio[0] > 0.8
    assert pca.components[0, 0] > 0  # sign convention: largest loading positive
    hi, lo = pca.ends(0, n=2)
    assert hi["item"].tolist() == ["e", "a"] and lo["item"].iloc[0] == "c"
    full = factor_pca(learn, n_components=3)  # all components: scores @ components = data
    f = item_factors(learn)
    np.testing.assert_allclose(full.scores @ full.components, f - f.mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="component"):
        pca.ends(5)
    with pytest.raises(ValueError, match="n_components"):
        factor_pca(learn, n_components=4)


def test_plots_return_their_axes(learn):
    ax = plot_pred_vs_actual(np.array([1.0, 2.0, 3.0, 3.5]), torch.tensor([[1.0], [2.5], [3.0], [4.0]]),
                             title="val")
    assert ax.get_xlabel() == "predicted rating" and len(ax.figure.axes) == 3  # + the marginals
    pca = factor_pca(learn, n_components=2)
    ax2 = plot_items_pca(pca, n=3)
    labels = [t.get_text() for t in ax2.texts]
    assert len(labels) == 3 and set(labels) <= {"Alpha", "Beta", "Gamma", "d", "e", "f"}
    with pytest.raises(ValueError, match="different lengths"):
        plot_pred_vs_actual([1.0], [1.0, 2.0])
    import matplotlib.pyplot as plt

    plt.close("all")
