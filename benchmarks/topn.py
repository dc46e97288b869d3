"""Top-N recommendation from implicit feedback: minifast against popularity and `implicit`'s
ALS and BPR, side by side in one run (a measurement, not a test).

    python benchmarks/topn.py                    # ml-100k and ml-latest-small, every system
    python benchmarks/topn.py --data ml100k      # one data set
    python benchmarks/topn.py search             # choose the recipes on training rows only

Protocol, the same for every system: interactions are the ratings >= 4
(`positive_at=4`); validation is `get_cv_idxs(n)` of those interactions (20 %, seed 42);
each system trains on the other 80 %. NDCG@10 and recall@10 are `topn_scores`' (every item
the user has no training interaction with is a candidate; the user's validation items are
the relevant ones; users with validation items count). Fit seconds are wall time of the fit
alone, one thread (`--threads`), on this machine.

Systems: `popularity` (training counts); `implicit` 0.7's ALS with the issue's setting
(64 factors, regularization 0.05, 15 iterations) and BPR with its defaults (100 factors,
lr 0.01, reg 0.01, 100 iterations); ALS and BPR again with settings tuned the same way as
minifast's (`*-tuned`, chosen by `search`), so that no system is compared untuned against a
tuned one; and minifast (`get_learner(loss=...)`, `RECIPES`). `search` chooses every tuned
setting on the training interactions alone: they are split again by
`get_cv_idxs(n_train, seed=43)`, each candidate trained on the rest and scored on that part;
the validation set above is never seen. Each reported system runs `--seeds` seeds (mean and
worst; popularity has none).

`implicit` is optional (`pip install minifast[bench]`); without it the anchors are skipped.
A data-set name that does not exist (e.g. `--data no-such-data`) uses a synthetic problem.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from minifast.collab import (
    CollabFilterDataset,
    Interactions,
    item_scores,
    load_ratings,
    synthetic_ratings,
    topn_scores,
)
from minifast.data import get_cv_idxs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens"
DATASETS = {"ml100k": "ml-100k", "mls": "ml-latest-small"}
K = 10

#: minifast's recipe per data set, as `search` chose it (see docs/topn.md for its table).
RECIPES = {
    "ml100k": {"loss": "softmax", "model": "itemset", "model_kwargs": {"dropout": 0.7},
               "n_factors": 128, "n_neg": 64, "emb_l2": 0.1, "lr": 3e-3, "epochs": 8, "bs": 256},
    "mls": {"loss": "softmax", "n_factors": 64, "n_neg": 256, "emb_l2": 0.1, "lr": 1e-2,
            "epochs": 8, "bs": 256},
}
#: The candidates `search` tries for minifast.
MINIFAST_GRID = (
    [{"loss": "softmax", "n_factors": f, "n_neg": 64, "emb_l2": l2, "lr": lr, "epochs": ep,
      "bs": 256}
     for f, l2, lr, ep in itertools.product((64, 128), (0.003, 0.01, 0.03), (3e-3, 1e-2),
                                            (4, 8))]
    + [{"loss": "bpr", "n_factors": f, "n_neg": 1, "emb_l2": l2, "lr": lr, "epochs": 8,
        "bs": 256}
       for f, l2, lr in itertools.product((64, 128), (0.003, 0.01, 0.03), (1e-2, 3e-2))]
    # the second round, around the first round's best on ml-latest-small (at its edge)
    + [{"loss": "softmax", "n_factors": f, "n_neg": m, "emb_l2": l2, "lr": 1e-2, "epochs": ep,
        "bs": 256, "neg_sampling": ns}
       for f, m, l2, ep, ns in [(64, 64, 0.1, 4, "uniform"), (64, 64, 0.3, 4, "uniform"),
                                (64, 64, 0.1, 8, "uniform"), (64, 256, 0.03, 4, "uniform"),
                                (64, 256, 0.1, 8, "uniform"), (64, 256, 0.03, 4, "popularity"),
                                (128, 256, 0.1, 8, "popularity")]]
    # the third round: ItemSetMF (model="itemset", its item-set dropout) and full softmax
    # (no sampling, regularised by wds) beside more negatives for ImplicitMF. The twenty
    # before "(ml-latest-small from here)" were run on ml-100k; on ml-latest-small, the seven
    # after it and two of the twenty (full softmax, 16 epochs, wds 1e-4; ItemSetMF full
    # softmax, dropout 0.7, wds 1e-4). A fresh `search` runs them all on both.
    + [{"loss": "softmax", "n_factors": f, "n_neg": m, "emb_l2": l2, "lr": 3e-3, "epochs": ep,
        "bs": 256} for f, m, l2, ep in [(128, 256, 0.03, 8)]]
    + [{"loss": "softmax", "model": "itemset", "model_kwargs": {"dropout": d}, "n_factors": f,
        "n_neg": 64, "emb_l2": l2, "lr": 3e-3, "epochs": ep, "bs": 256}
       for f, l2, ep, d in [(128, 0.03, 8, 0.0), (128, 0.03, 8, 0.5), (128, 0.1, 8, 0.5),
                            (128, 0.3, 8, 0.5), (128, 0.1, 8, 0.7), (128, 0.1, 16, 0.5),
                            (256, 0.1, 8, 0.5), (128, 0.1, 8, 0.85), (128, 0.1, 6, 0.7),
                            (128, 0.05, 8, 0.7)]]
    + [{"loss": "full_softmax", "n_factors": 128, "lr": lr, "epochs": ep, "wds": wd, "bs": 256}
       for lr, ep, wd in [(3e-3, 8, 1e-4), (3e-3, 8, 1e-3), (3e-3, 8, 1e-2), (3e-3, 8, 3e-5),
                          (3e-3, 16, 1e-4), (1e-3, 16, 1e-4)]]
    + [{"loss": "full_softmax", "model": "itemset", "model_kwargs": {"dropout": d},
        "n_factors": 128, "lr": 3e-3, "epochs": 8, "wds": wd, "bs": 256}
       for d, wd in [(0.5, 1e-3), (0.7, 1e-4), (0.7, 3e-5)]]
    # (ml-latest-small from here)
    + [{"loss": "softmax", "model": "itemset", "model_kwargs": {"dropout": 0.7}, "n_factors": f,
        "n_neg": m, "emb_l2": 0.1, "lr": lr, "epochs": 8, "bs": 256}
       for f, m, lr in [(128, 64, 3e-3), (64, 256, 1e-2)]]
    + [{"loss": "full_softmax", "n_factors": f, "lr": lr, "epochs": ep, "wds": wd, "bs": 256}
       for f, lr, ep, wd in [(64, 3e-3, 16, 1e-4), (128, 3e-3, 16, 3e-4), (128, 1e-2, 8, 1e-4),
                             (256, 3e-3, 16, 1e-4), (128, 3e-3, 24, 1e-4)]]
)
#: The anchors' settings: as given in the issue / by default, and tuned by `search`.
ANCHORS = {
    "als": {"factors": 64, "regularization": 0.05, "iterations": 15},
    "bpr": {},
}
TUNED = {
    "ml100k": {"als": {"factors": 64, "regularization": 20.0, "alpha": 2.0, "iterations": 15},
               "bpr": {"factors": 128, "learning_rate": 0.01, "regularization": 0.01,
                       "iterations": 100}},
    "mls": {"als": {"factors": 128, "regularization": 100.0, "alpha": 20.0, "iterations": 15},
            "bpr": {"factors": 64, "learning_rate": 0.01, "regularization": 0.01,
                    "iterations": 100}},
}
ANCHOR_GRID = {
    "als": [{"factors": f, "regularization": r, "alpha": a, "iterations": 15}
            for f, r, a in itertools.product((16, 32, 64, 128), (0.05, 0.5, 5.0, 20.0, 50.0, 100.0),
                                             (1.0, 2.0, 5.0, 20.0))],
    "bpr": [{"factors": f, "learning_rate": lr, "regularization": r, "iterations": it}
            for f, lr, r, it in itertools.product((64, 128), (0.01, 0.05), (0.001, 0.01),
                                                  (100, 300))],
}


def interactions(name: str, positive_at: float = 4.0) -> tuple[CollabFilterDataset, str]:
    """The data set `name` ("ml100k", "mls" or any other name: synthetic) as interactions."""
    folder = SHARED / DATASETS.get(name, name)
    if folder.is_dir():
        df, desc = load_ratings(folder), str(folder)
    else:
        df, _ = synthetic_ratings(300, 400, 20_000, rank=5)
        desc = f"synthetic (300 users x 400 items, 20,000 ratings; {folder} not found)"
    cf = CollabFilterDataset.from_data_frame(folder, df, "userId", "movieId", "rating",
                                             positive_at=positive_at)
    return cf, desc


def subset(cf: CollabFilterDataset, rows: np.ndarray) -> CollabFilterDataset:
    """The interactions `rows` of `cf` as a data set of their own (for `search`)."""
    df = pd.DataFrame({"u": cf.user_col[rows], "i": cf.item_col[rows]})
    return CollabFilterDataset.from_data_frame(cf.path, df, "u", "i", rating_name=None)


class Split:
    """Training and validation interactions of `cf` split at `val` (indices into its rows)."""

    def __init__(self, cf: CollabFilterDataset, val: np.ndarray):
        self.cf, self.val = cf, val
        trn = np.ones(cf.n, bool)
        trn[val] = False
        self.trn = np.flatnonzero(trn)
        pairs = (cf.n_users, cf.n_items)
        self.seen = Interactions.from_pairs(cf.user_col[self.trn], cf.item_col[self.trn], *pairs)
        self.heldout = Interactions.from_pairs(cf.user_col[val], cf.item_col[val], *pairs)

    def score(self, scores_of: Callable[[np.ndarray], torch.Tensor]) -> dict[str, float]:
        """NDCG@10, recall@10 (and the rest of `topn_scores`) of a scorer on validation."""
        return topn_scores(scores_of, self.seen, self.heldout, K)


def popularity(sp: Split, seed: int) -> Callable:
    """Scores every item by its number of training interactions."""
    counts = torch.from_numpy(np.bincount(sp.seen.indices, minlength=sp.cf.n_items)).float()
    return lambda u: counts.expand(len(u), -1)


def anchor(kind: str, settings: dict) -> Callable[[Split, int], Callable]:
    """A fit of `implicit`'s ALS or BPR with `settings` on the training interactions."""
    def fit(sp: Split, seed: int) -> Callable:
        import scipy.sparse
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cls = AlternatingLeastSquares if kind == "als" else BayesianPersonalizedRanking
        s = sp.seen
        x = scipy.sparse.csr_matrix((np.ones(len(s.indices), np.float32), s.indices, s.indptr),
                                    shape=(s.n_users, s.n_items))
        model = cls(**settings, num_threads=torch.get_num_threads(), random_state=seed)
        model.fit(x, show_progress=False)
        u, v = (torch.from_numpy(np.ascontiguousarray(f)) for f in (model.user_factors,
                                                                    model.item_factors))
        return lambda users: u[users] @ v.T
    return fit


def minifast_fit(recipe: dict) -> Callable[[Split, int], Callable]:
    """A minifast ranking learner trained with `recipe` on the training interactions."""
    def fit(sp: Split, seed: int) -> Callable:
        learn = sp.cf.get_learner(recipe["n_factors"], sp.val, recipe["bs"], loss=recipe["loss"],
                                  n_neg=recipe.get("n_neg", 1), emb_l2=recipe.get("emb_l2"),
                                  seed=seed, neg_sampling=recipe.get("neg_sampling", "uniform"),
                                  model=recipe.get("model", "dotbias"),
                                  model_kwargs=recipe.get("model_kwargs"),
                                  opt_fn=torch.optim.Adam)
        learn.fit(recipe["lr"], 1, cycle_len=recipe["epochs"], wds=recipe.get("wds"),
                  progress=False, verbose=False)
        model = learn.model.eval()
        return lambda users: item_scores(model, users, sp.cf.n_items)
    return fit


def run(fit: Callable[[Split, int], Callable], sp: Split, seed: int) -> tuple[dict, float]:
    """`(topn scores, fit seconds)` of one system and seed on the split."""
    torch.manual_seed(seed)
    t = time.perf_counter()
    scorer = fit(sp, seed)
    secs = time.perf_counter() - t
    return sp.score(scorer), secs


def have_implicit() -> bool:
    """Whether the optional anchors can run."""
    try:
        import implicit  # noqa: F401
    except ImportError:
        return False
    return True


def systems(name: str, anchors: bool) -> dict[str, tuple[Callable, bool]]:
    """`{label: (fit, seeded)}` of the systems compared on data set `name`."""
    out = {"popularity": (popularity, False)}
    if anchors:
        tuned = TUNED.get(name, TUNED["ml100k"])
        out.update({"implicit ALS (issue's setting)": (anchor("als", ANCHORS["als"]), True),
                    "implicit BPR (defaults)": (anchor("bpr", ANCHORS["bpr"]), True),
                    "implicit ALS (tuned)": (anchor("als", tuned["als"]), True),
                    "implicit BPR (tuned)": (anchor("bpr", tuned["bpr"]), True)})
    recipe = RECIPES.get(name, RECIPES["ml100k"])
    model = " (ItemSetMF)" if recipe.get("model") == "itemset" else ""
    out[f"minifast {recipe['loss']}{model}"] = (minifast_fit(recipe), True)
    return out


def compare(name: str, seeds: int, anchors: bool) -> list[tuple[str, float, float]]:
    """Every system on data set `name`: prints the table, returns `(label, mean NDCG, mean
    recall)` per system."""
    cf, desc = interactions(name)
    sp = Split(cf, get_cv_idxs(cf.n))
    print(f"\n## {name}: {desc}\n{cf.n:,} interactions (ratings >= 4), {cf.n_users} users, "
          f"{cf.n_items} items; validation {len(sp.val):,} interactions of "
          f"{int((sp.heldout.counts > 0).sum())} users\n")
    print(f"| system | NDCG@{K} mean | worst | recall@{K} mean | worst | fit s |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for label, (fit, seeded) in systems(name, anchors).items():
        res = [run(fit, sp, seed) for seed in (range(seeds) if seeded else [0])]
        nd, rc = ([r[0][m] for r in res] for m in ("ndcg", "recall"))
        secs = float(np.median([r[1] for r in res]))
        print(f"| {label} | {np.mean(nd):.4f} | {min(nd):.4f} | {np.mean(rc):.4f} | "
              f"{min(rc):.4f} | {secs:.1f} |", flush=True)
        rows.append((label, float(np.mean(nd)), float(np.mean(rc))))
    return rows


def verdict(rows: list[tuple[str, float, float]]) -> tuple[bool, str]:
    """Whether minifast's NDCG and recall are >= the best other system's, and the line
    saying so."""
    mine = next(r for r in rows if r[0].startswith("minifast"))
    others = [r for r in rows if not r[0].startswith("minifast")]
    best_nd, best_rc = max(others, key=lambda r: r[1]), max(others, key=lambda r: r[2])
    ok = mine[1] >= best_nd[1] and mine[2] >= best_rc[2]
    return ok, (f"{'target met' if ok else 'TARGET NOT MET'}: minifast NDCG@{K} {mine[1]:.4f} vs "
            f"best other {best_nd[1]:.4f} ({best_nd[0]}), recall@{K} {mine[2]:.4f} vs "
            f"{best_rc[2]:.4f} ({best_rc[0]})")


def search(name: str, anchors: bool, only: str | None = None) -> dict:
    """Choose minifast's recipe (and the anchors' tuned settings) on the training
    interactions of data set `name` alone; prints every candidate, returns the winners."""
    cf, _ = interactions(name)
    trn = Split(cf, get_cv_idxs(cf.n)).trn
    inner = subset(cf, trn)
    sp = Split(inner, get_cv_idxs(inner.n, seed=43))
    grids = {"minifast": [(minifast_fit(r), r) for r in MINIFAST_GRID]}
    if anchors:
        grids.update({k: [(anchor(k, s), s) for s in g] for k, g in ANCHOR_GRID.items()})
    best = {}
    for system, grid in grids.items():
        if only and system != only:
            continue
        print(f"\n## search {name} {system}: {len(grid)} candidates, {inner.n:,} training "
              f"interactions, {len(sp.val):,} held out\n", flush=True)
        scored = []
        for fit, settings in grid:
            (res, secs) = run(fit, sp, 0)
            scored.append((res["ndcg"], settings))
            print(f"ndcg {res['ndcg']:.4f} recall {res['recall']:.4f} {secs:5.1f}s {settings}",
                  flush=True)
        best[system] = max(scored, key=lambda s: s[0])
        print(f"best {system}: ndcg {best[system][0]:.4f} {best[system][1]}")
    return best


def blas_threads(n: int):
    """A context limiting BLAS to `n` threads (implicit's ALS uses it), when threadpoolctl
    is there (implicit depends on it); else nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


def main(argv: list[str] | None = None) -> int:
    """Command line; returns 0 when the target is met on every data set run (compare), else 1."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", default="compare", choices=["compare", "search"])
    p.add_argument("--data", nargs="+", default=list(DATASETS),
                   help="ml100k, mls (ml-latest-small), or another name for a synthetic set")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["minifast", "als", "bpr"], help="search one system")
    p.add_argument("--no-anchors", action="store_true", help="skip implicit's ALS and BPR")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    anchors = not args.no_anchors and have_implicit()
    if not anchors and not args.no_anchors:
        print("implicit is not installed (pip install minifast[bench]): anchors skipped")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    with blas_threads(args.threads):
        if args.what == "search":
            for name in args.data:
                search(name, anchors, args.only)
            return 0
        ok = True
        for name in args.data:
            met, line = verdict(compare(name, args.seeds, anchors))
            ok &= met
            print(f"\n{name}: {line}")
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
