"""fast.ai lesson 5 (2018), collaborative filtering on MovieLens, end to end with minifast.

1. The library way: `CollabFilterDataset` -> `get_learner` (EmbeddingDotBias, 50 factors,
   Adam) -> `fit(1e-2, 2, wds=2e-4, cycle_len=1, cycle_mult=2)` (SGDR, 1 + 2 = 3 epochs).
2. From scratch with the core `fit`: `EmbeddingDot` (SGD 0.1, momentum 0.9, wd 1e-5, then
   `set_lrs(opt, 0.01)`), `EmbeddingDotBias` (same recipe, wd 2e-4), `EmbeddingNet` (Adam
   1e-3, wd 1e-5), each printing its table.
3. Interpretation of the learner's model: movie biases (best and worst), the principal
   components of the movie factors with the movies at each end, nearest neighbours of a
   movie, and (with `--plots DIR`) the predictions-vs-actual hexbin and the movies on the
   first two components.

    python examples/movielens_lesson5.py                      # ml-latest-small, downloaded
    python examples/movielens_lesson5.py --data ../shared/data/movielens/ml-latest-small-2016
    python examples/movielens_lesson5.py --quick              # a small subset, seconds

`--data` is a MovieLens name or folder. The lesson used the 2016 ml-latest-small; its
notebook printed a validation MSE of 0.776 for the learner. The test suite calls
`main(data, quick=True)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import optim

from minifast import ColumnarModelData, fit, get_cv_idxs, set_lrs
from minifast.collab import (
    CollabFilterDataset,
    EmbeddingDot,
    EmbeddingDotBias,
    EmbeddingNet,
    factor_pca,
    item_biases,
    load_ratings,
    movie_titles,
    movielens_path,
    nearest_items,
    plot_items_pca,
    plot_pred_vs_actual,
)

N_FACTORS = 50


def run_learner(cf, val_idxs, titles, quick: bool, verbose: bool):
    """Part 1: the library's learner with the lesson's SGDR recipe."""
    learn = cf.get_learner(N_FACTORS, val_idxs, 64, item_names=titles)  # Adam, fused on CPU
    n_cycle = 1 if quick else 2  # quick: one cycle of one epoch
    res = learn.fit(1e-2, n_cycle, wds=2e-4, cycle_len=1, cycle_mult=2, verbose=verbose)
    return learn, res[0]


def run_scratch(name, model, data, opt, epochs: int, second_lr, verbose: bool) -> float:
    """Part 2: the lesson's own loop: `fit`, lower the LR with `set_lrs`, `fit` again."""
    if verbose:
        print(f"\n== {name} ==")
    fit(model, data, epochs, opt, F.mse_loss, verbose=verbose)
    set_lrs(opt, second_lr)
    return fit(model, data, epochs, opt, F.mse_loss, verbose=verbose)[0]


def interpret(learn, plots: Path | None, verbose: bool) -> dict:
    """Part 3: what the model learned about movies."""
    top = min(3000, learn.cf.n_items)  # the lesson: the 3000 most-rated movies
    biases = item_biases(learn, top=top)
    pca = factor_pca(learn, n_components=3, top=top)
    best = biases["item"].iloc[0]
    near = nearest_items(learn, best, n=5, top=top)
    if verbose:
        show = ["title", "bias"] if "title" in biases else ["item", "bias"]
        print("\nBest movies by bias:\n" + biases[show].head(10).to_string(index=False))
        print("\nWorst movies by bias:\n" + biases[show].tail(10)[::-1].to_string(index=False))
        for c in range(3):
            hi, lo = pca.ends(c, n=5)
            col = "title" if "title" in hi else "item"
            print(f"\nComponent {c} ({pca.explained_variance_ratio[c]:.1%} of variance)")
            print("  high: " + "; ".join(map(str, hi[col])))
            print("  low:  " + "; ".join(map(str, lo[col])))
        name = biases["title"].iloc[0] if "title" in biases else best
        print(f"\nNearest to {name} by cosine of the factors:\n"
              + near.drop(columns=["n_ratings"]).to_string(index=False))
    if plots is not None:
        import matplotlib

        matplotlib.use("Agg")
        plots.mkdir(parents=True, exist_ok=True)
        y = learn.data.val_y
        plot_pred_vs_actual(learn.predict(), y, title="validation").figure.savefig(
            plots / "pred_vs_actual.png")
        plot_items_pca(pca, n=50).figure.savefig(plots / "movies_pca.png")
        if verbose:
            print(f"\nplots saved in {plots}")
    return {"best": biases["item"].head(10).tolist(), "worst": biases["item"].tail(10).tolist(),
            "pca": pca, "near": near}


def main(data="ml-latest-small", quick: bool = False, verbose: bool = True,
         plots: str | Path | None = None, seed: int = 0) -> dict:
    """Run the lesson; returns the final validation MSE of each model and the interpretation."""
    torch.manual_seed(seed)
    path = movielens_path(data)
    ratings = load_ratings(path)
    if quick:
        ratings = ratings.iloc[:6000]
    try:
        titles = movie_titles(path)
    except FileNotFoundError:
        titles = None
    if verbose:
        print(f"{path.name}: {len(ratings)} ratings; the lesson's crosstab of the most active "
              f"users and most rated movies:")
        g_u = ratings.groupby("userId")["rating"].count().nlargest(15).index
        g_m = ratings.groupby("movieId")["rating"].count().nlargest(15).index
        sub = ratings[ratings.userId.isin(g_u) & ratings.movieId.isin(g_m)]
        print(pd.crosstab(sub.userId, sub.movieId, sub.rating, aggfunc="sum").iloc[:8, :8])
    val_idxs = get_cv_idxs(len(ratings))
    cf = CollabFilterDataset.from_data_frame(path, ratings, "userId", "movieId", "rating")
    epochs = 1 if quick else 3

    learn, out_learner = run_learner(cf, val_idxs, titles, quick, verbose)
    if verbose:
        print(f"learner: validation MSE {out_learner:.4f} (RMSE {np.sqrt(out_learner):.4f})")

    # From scratch: the mapped indices as a frame, ColumnarModelData, and the core's fit.
    x = pd.DataFrame({"userId": cf.user_col, "movieId": cf.item_col})
    data = ColumnarModelData.from_data_frame(path, val_idxs, x, cf.ratings, ["userId", "movieId"], 64,
                                             seed=seed)
    n_users, n_movies, lo, hi = cf.n_users, cf.n_items, cf.min_score, cf.max_score

    model = EmbeddingDot(n_users, n_movies, N_FACTORS)
    opt = optim.SGD(model.parameters(), 1e-1, weight_decay=1e-5, momentum=0.9)
    out_dot = run_scratch("EmbeddingDot", model, data, opt, epochs, 0.01, verbose)

    model = EmbeddingDotBias(N_FACTORS, n_users, n_movies, lo, hi)
    opt = optim.SGD(model.parameters(), 1e-1, weight_decay=2e-4, momentum=0.9)
    out_bias = run_scratch("EmbeddingDotBias", model, data, opt, epochs, 0.01, verbose)

    model = EmbeddingNet(N_FACTORS, n_users, n_movies, lo, hi)
    opt = optim.Adam(model.parameters(), 1e-3, weight_decay=1e-5)
    out_net = run_scratch("EmbeddingNet", model, data, opt, epochs, 1e-3, verbose)

    if verbose:
        print(f"\nvalidation MSE: learner {out_learner:.4f}, EmbeddingDot {out_dot:.4f}, "
              f"EmbeddingDotBias {out_bias:.4f}, EmbeddingNet {out_net:.4f}")
    info = interpret(learn, None if plots is None else Path(plots), verbose)
    return {"learner": out_learner, "dot": out_dot, "dotbias": out_bias, "net": out_net,
            "interpretation": info, "learn": learn}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="ml-latest-small", help="MovieLens name or folder")
    ap.add_argument("--quick", action="store_true", help="6000 ratings, 1 epoch per fit")
    ap.add_argument("--plots", default=None, help="save the plots in this folder")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(a.data, quick=a.quick, plots=a.plots, seed=a.seed)
