"""Interpretation of a trained collab model: what lesson 5 does by hand, as functions.

Each takes a learner-like `learn` with `.model` (embeddings `i`/`ib`, as `EmbeddingDotBias`)
and `.cf` (a `CollabFilterDataset`); `titles=` names items (see `ids.item_titles`); `top=N`
keeps the N most-rated items (rarely rated items' factors are mostly noise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from attrs import define

from ..checks import positive_int
from ..runtime.modules import unwrap
from .ids import item_titles

__all__ = [
    "item_biases",
    "item_factors",
    "nearest_items",
    "factor_pca",
    "FactorPCA",
    "plot_pred_vs_actual",
    "plot_items_pca",
]


def _model(learn) -> torch.nn.Module:
    return unwrap(learn.model)


def _emb(learn, name: str, what: str) -> np.ndarray:
    m = _model(learn)
    emb = getattr(m, name, None)
    if not isinstance(emb, torch.nn.Embedding):
        raise ValueError(
            f"{type(m).__name__} has no {what} embedding `.{name}` (the collab models name "
            f"them u/i for factors and ub/ib for biases; EmbeddingDot and EmbeddingNet have no "
            f"biases)"
        )
    return emb.weight.detach().float().cpu().numpy()


def item_factors(learn) -> np.ndarray:
    """The item factor matrix `[n_items, n_factors]` (row = item index)."""
    return _emb(learn, "i", "item factor")


def _selection(learn, top: int | None) -> np.ndarray:
    """Item indices to consider: all, or the `top` most-rated (most-rated first)."""
    counts = learn.cf.item_counts
    if top is None:
        return np.arange(len(counts))
    top = positive_int(top, "top")
    return np.argsort(-counts, kind="stable")[:top]


def _frame(learn, idx: np.ndarray, titles, **cols) -> pd.DataFrame:
    ids = learn.cf.idx2item[idx]
    out = {"item": ids}
    names = item_titles(learn, titles, ids)
    if names is not None:
        out["title"] = names
    out.update(cols)
    out["n_ratings"] = learn.cf.item_counts[idx]
    return pd.DataFrame(out)


def item_biases(learn, titles=None, top: int | None = None) -> pd.DataFrame:
    """Items ranked by their learned bias, highest first: `item, [title,] bias, n_ratings`.

    The bias is what the model thinks of an item regardless of who watches it: the head of the
    table is the best-liked, the tail (`.tail()`) the worst.
    """
    b = _emb(learn, "ib", "item bias")[:, 0]
    idx = _selection(learn, top)
    df = _frame(learn, idx, titles, bias=b[idx])
    return df.sort_values("bias", ascending=False, kind="stable").reset_index(drop=True)


def nearest_items(learn, item, n: int = 10, titles=None, top: int | None = None) -> pd.DataFrame:
    """The `n` items whose factors are closest to raw item id `item`'s by cosine similarity:
    `item, [title,] similarity, n_ratings`, most similar first (the item itself excluded)."""
    f = item_factors(learn)
    q = int(learn.cf.item_idxs([item])[0])
    idx = _selection(learn, top)
    idx = idx[idx != q]
    norms = np.linalg.norm(f, axis=1)
    sim = f[idx] @ f[q] / np.maximum(norms[idx] * norms[q], 1e-12)
    best = np.argsort(-sim, kind="stable")[:n]
    return _frame(learn, idx[best], titles, similarity=sim[best]).reset_index(drop=True)


@define
class FactorPCA:
    """Principal components of item factors: `scores[j, c]` is item `items[j]` on component c.

    `components` `[n_components, n_factors]` are the directions, `explained_variance_ratio`
    their share of the variance; `ends(c, n)` names the items at each end of component c.
    """

    items: np.ndarray
    titles: np.ndarray | None
    scores: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    n_ratings: np.ndarray

    def frame(self) -> pd.DataFrame:
        """One row per item: `item, [title,] pc0, pc1, ..., n_ratings`."""
        out = {"item": self.items}
        if self.titles is not None:
            out["title"] = self.titles
        for c in range(self.scores.shape[1]):
            out[f"pc{c}"] = self.scores[:, c]
        out["n_ratings"] = self.n_ratings
        return pd.DataFrame(out)

    def ends(self, component: int = 0, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
        """`(highest, lowest)`: the `n` items at each end of `component`."""
        if not 0 <= component < self.scores.shape[1]:
            raise ValueError(f"component must be in 0..{self.scores.shape[1] - 1}, got {component}")
        df = self.frame().sort_values(f"pc{component}", ascending=False, kind="stable")
        return df.head(n).reset_index(drop=True), df.tail(n)[::-1].reset_index(drop=True)


def factor_pca(learn, n_components: int = 3, top: int | None = None, titles=None) -> FactorPCA:
    """PCA of the item factors (centred, by SVD) of all items or the `top` most-rated."""
    f = item_factors(learn)
    idx = _selection(learn, top)
    if not 1 <= n_components <= min(len(idx), f.shape[1]):
        raise ValueError(f"n_components must be in 1..{min(len(idx), f.shape[1])}, got {n_components}")
    x = f[idx].astype(np.float64)
    x -= x.mean(0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    # Sign convention: each component's largest loading is positive (stable across runs).
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    signs[signs == 0] = 1
    u, vt = u * signs, vt * signs[:, None]
    var = s**2
    ids = learn.cf.idx2item[idx]
    return FactorPCA(
        items=ids,
        titles=item_titles(learn, titles, ids),
        scores=(u * s)[:, :n_components],
        components=vt[:n_components],
        explained_variance_ratio=(var / var.sum())[:n_components] if var.sum() else var[:n_components],
        n_ratings=learn.cf.item_counts[idx],
    )


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install minifast[plot]") from e
    return plt


def plot_pred_vs_actual(preds, y, gridsize: int = 30, title: str | None = None):
    """Predictions against actual ratings as a hexbin joint plot with marginal histograms
    (the lesson's `sns.jointplot(preds, y, kind='hex')`). Returns the hexbin's `Axes`, as
    `minifast.plots` does, so a notebook shows the plot once; `ax.figure` is the whole figure
    (`ax.figure.savefig(path)`)."""
    plt = _plt()
    p = np.asarray(preds.detach().cpu() if isinstance(preds, torch.Tensor) else preds).reshape(-1)
    t = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if len(p) != len(t):
        raise ValueError(f"preds and y have different lengths ({len(p)} vs {len(t)})")
    fig = plt.figure(figsize=(6, 6))
    grid = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05,
                            hspace=0.05)
    ax = fig.add_subplot(grid[1, 0])
    ax_top = fig.add_subplot(grid[0, 0], sharex=ax)
    ax_right = fig.add_subplot(grid[1, 1], sharey=ax)
    ax.hexbin(p, t, gridsize=gridsize, mincnt=1, cmap="Blues")
    ax.set_xlabel("predicted rating")
    ax.set_ylabel("actual rating")
    ax_top.hist(p, bins=gridsize, color="steelblue")
    ax_right.hist(t, bins=gridsize, orientation="horizontal", color="steelblue")
    ax_top.tick_params(labelbottom=False)
    ax_right.tick_params(labelleft=False)
    if title:
        ax_top.set_title(title)
    return ax


def plot_items_pca(pca: FactorPCA, n: int = 50, components: tuple[int, int] = (0, 1),
                   seed: int = 0):
    """Items on two principal components, `n` of them labelled (a random sample, seeded).
    Returns the `Axes` (a notebook shows the plot once; `ax.figure.savefig(path)` saves it)."""
    plt = _plt()
    a, b = components
    if max(a, b) >= pca.scores.shape[1]:
        raise ValueError(f"components {components} not computed: the PCA has {pca.scores.shape[1]}")
    fig, ax = plt.subplots(figsize=(10, 10))
    ax.scatter(pca.scores[:, a], pca.scores[:, b], s=4, alpha=0.3, color="grey")
    pick = np.random.RandomState(seed).permutation(len(pca.items))[:n]
    labels = pca.titles if pca.titles is not None else pca.items.astype(str)
    for j in pick:
        ax.text(pca.scores[j, a], pca.scores[j, b], str(labels[j]), fontsize=8)
    ax.set_xlabel(f"pc{a} ({pca.explained_variance_ratio[a]:.1%})")
    ax.set_ylabel(f"pc{b} ({pca.explained_variance_ratio[b]:.1%})")
    return ax
