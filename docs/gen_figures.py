"""Every figure of the documentation, drawn by minifast's own plots from real training runs.

    python docs/gen_figures.py                 # all figures into docs/img/ (~1-2 min, 2 cores)
    python docs/gen_figures.py --only sgdr     # the figures whose name contains "sgdr"

Two sources of data:

- The schedule figures (SGDR, one-cycle, cyclical LR, the LR finder on a small problem) train
  on synthetic ratings (`minifast.collab.synthetic.synthetic_ratings`): 10,000 ratings of
  300 users on 400 items, so the curves have the shapes of a real run in seconds.
- The lesson-5 figures (loss curve, LR finder, predictions vs actual, movies on principal
  components) train on the 2016 ml-latest-small that lesson 5 used, taken from `--data`
  (default `../shared/data/movielens/ml-latest-small-2016` beside the repository, or
  `$MINIFAST_MOVIELENS_DIR/ml-latest-small-2016`). Without it, they fall back to synthetic
  ratings and say so: the committed figures come from the real data.

Every run is seeded (`torch.manual_seed`, the loaders' `seed`), so rerunning on the same
machine redraws the same figures. The sections between `--8<--` markers are included in the
docs pages, so the code shown next to a figure is the code that drew it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import optim

from minifast import get_cv_idxs
from minifast.collab import (
    CollabFilterDataset,
    factor_pca,
    load_ratings,
    movie_titles,
    plot_items_pca,
    plot_pred_vs_actual,
)
from minifast.collab.synthetic import synthetic_ratings

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
LESSON_DATA = ROOT.parent / "shared" / "data" / "movielens" / "ml-latest-small-2016"
DPI = 80
SCALE = 1.0  # main(quick=True) shrinks every data set (the test suite's run)


def synthetic_learner(n_ratings: int = 10_000, n_factors: int = 20, seed: int = 0, **kwargs):
    """A `CollabFilterLearner` (EmbeddingDotBias) on synthetic ratings of 300 users on 400
    items, validation = `get_cv_idxs`, batch size 64; `kwargs` go to `get_learner`."""
    torch.manual_seed(seed)
    df, _ = synthetic_ratings(300, 400, max(1000, int(n_ratings * SCALE)), rank=5, seed=seed)
    cf = CollabFilterDataset.from_data_frame(".", df, "userId", "movieId", "rating")
    return cf.get_learner(n_factors, get_cv_idxs(len(df)), 64, seed=seed, **kwargs)


# --------------------------------------------------------------------------- schedules


def fig_sgdr(quick: bool) -> dict:
    """SGDR: three cycles of 1, 2 and 4 epochs (7 epochs), LR and loss per iteration."""
    # --8<-- [start:sgdr]
    learn = synthetic_learner(opt_fn=optim.Adam)
    learn.fit(1e-2, 3, wds=1e-4, cycle_len=1, cycle_mult=2, verbose=False)
    ax_lr = learn.sched.plot_lr()             # LR vs iteration (an Axes)
    ax_loss = learn.sched.plot_loss()         # raw and smoothed loss
    # --8<-- [end:sgdr]
    return {"sgdr_lr.png": ax_lr, "sgdr_loss.png": ax_loss}


def fig_one_cycle(quick: bool) -> dict:
    """One-cycle over 3 epochs with Adam's beta1 cycled opposite to the LR."""
    # --8<-- [start:one_cycle]
    learn = synthetic_learner(opt_fn=optim.Adam)
    learn.fit(1e-2, 1, cycle_len=3, use_clr_beta=(10, 10, 0.95, 0.85),
              verbose=False)
    ax = learn.sched.plot_lr()                # LR, and momentum beside it
    # --8<-- [end:one_cycle]
    return {"one_cycle.png": ax}


def fig_clr(quick: bool) -> dict:
    """Cyclical LR (triangular, skewed): two cycles of one epoch."""
    # --8<-- [start:clr]
    learn = synthetic_learner(opt_fn=optim.Adam)
    learn.fit(1e-2, 2, cycle_len=1, use_clr=(20, 8), verbose=False)
    ax = learn.sched.plot_lr()
    # --8<-- [end:clr]
    return {"clr.png": ax}


def fig_lr_find(quick: bool) -> dict:
    """The LR finder on the synthetic problem (30,000 ratings: 375 batches to ramp over)."""
    # --8<-- [start:lr_find]
    learn = synthetic_learner(n_ratings=30_000, opt_fn=optim.Adam)
    suggested = learn.lr_find()               # 1e-5 -> 10, one epoch at most
    ax = learn.sched.plot()                   # loss vs LR, suggestion marked
    # --8<-- [end:lr_find]
    print(f"  lr_find suggested {suggested:.2e} after {len(learn.sched.losses)} iterations")
    return {"lr_find.png": ax}


# --------------------------------------------------------------------------- lesson 5


def lesson_learner(data: Path | None, quick: bool):
    """Lesson 5's learner on the 2016 ml-latest-small (or synthetic ratings without it),
    seeded as `examples/movielens_lesson5.py` seeds it, so that its run is the one whose table
    the tutorial shows (`lr_find` restores the RNG and the loader, so it changes nothing)."""
    torch.manual_seed(0)
    path = data or Path(".")
    if data is None or quick:
        n = 6_000 if quick else 100_000
        ratings, _ = synthetic_ratings(600, 2000, n, seed=0)
        titles = None
        print("  lesson figures: synthetic ratings (no ml-latest-small-2016 given)")
    else:
        ratings, titles = load_ratings(data), movie_titles(data)
    val_idxs = get_cv_idxs(len(ratings))
    cf = CollabFilterDataset.from_data_frame(path, ratings, "userId", "movieId", "rating")
    learn = cf.get_learner(50, val_idxs, 64, opt_fn=optim.Adam, item_names=titles)
    return learn


def fig_lesson(quick: bool, data: Path | None) -> dict:
    """The lesson's LR finder, its SGDR run, predictions vs actual, movies on PCA."""
    learn = lesson_learner(data, quick)
    learn.lr_find()
    fig_find = learn.sched.plot()
    learn.fit(1e-2, 1 if quick else 2, wds=2e-4, cycle_len=1, cycle_mult=2)
    fig_loss = learn.sched.plot_loss()
    preds = learn.predict()                   # validation predictions, in order
    fig_hex = plot_pred_vs_actual(preds, learn.data.val_y, title="validation set")
    pca = factor_pca(learn, n_components=3, top=500)    # the 500 most-rated movies
    fig_pca = plot_items_pca(pca, n=30)                 # 30 of them labelled, at random
    return {"lesson5_lr_find.png": fig_find, "lesson5_loss.png": fig_loss,
            "pred_vs_actual.png": fig_hex, "movies_pca.png": fig_pca}


FIGURES = {
    "sgdr": fig_sgdr,
    "one_cycle": fig_one_cycle,
    "clr": fig_clr,
    "lr_find": fig_lr_find,
    "lesson": fig_lesson,
}


def find_lesson_data(data: str | None) -> Path | None:
    """The 2016 ml-latest-small folder: `data`, else beside the repo, else under
    `$MINIFAST_MOVIELENS_DIR`; None when there is none."""
    candidates = [Path(data)] if data else [LESSON_DATA]
    if not data and os.environ.get("MINIFAST_MOVIELENS_DIR"):
        candidates.append(Path(os.environ["MINIFAST_MOVIELENS_DIR"]) / "ml-latest-small-2016")
    for c in candidates:
        if (c / "ratings.csv").is_file():
            return c
    if data:
        raise FileNotFoundError(f"no ratings.csv in {data}")
    return None


def main(out: str | Path = IMG, only: str | None = None, quick: bool = False,
         data: str | None = None) -> list[Path]:
    """Draw the figures (all, or those whose name contains `only`) into `out`; returns the
    files written. `quick`: tiny runs, synthetic data only (what the test suite checks)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    global SCALE
    SCALE = 0.1 if quick else 1.0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lesson_data = None if quick else find_lesson_data(data)
    written = []
    for name, make in FIGURES.items():
        if only and only not in name:
            continue
        t = time.perf_counter()
        figs = make(quick, lesson_data) if name == "lesson" else make(quick)
        for fname, fig in figs.items():
            path = out / fname
            fig = fig.figure  # every plot returns its Axes
            fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
            plt.close(fig)
            written.append(path)
        print(f"{name}: {', '.join(figs)} ({time.perf_counter() - t:.1f} s)")
    return written


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(IMG), help="folder for the PNGs (default: docs/img)")
    ap.add_argument("--only", default=None, help="only the figures whose name contains this")
    ap.add_argument("--data", default=None, help="the ml-latest-small-2016 folder")
    a = ap.parse_args()
    main(a.out, a.only, data=a.data)
