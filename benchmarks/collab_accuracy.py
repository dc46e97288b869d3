"""Collaborative-filtering accuracy on the real MovieLens data (a measurement, not a test).

    python benchmarks/collab_accuracy.py lesson     # lesson 5 targets on ml-latest-small-2016
    python benchmarks/collab_accuracy.py ml100k     # ml-100k u1.base -> u1.test RMSE

`lesson` runs examples/movielens_lesson5.py in full (validation = `get_cv_idxs`) and checks
the issue's targets: learner (EmbeddingDotBias, 50 factors, bs 64, Adam,
`fit(1e-2, 2, wds=2e-4, cycle_len=1, cycle_mult=2)`) MSE <= 0.770, EmbeddingDotBias from
scratch <= 0.81, EmbeddingNet <= 0.79.

`ml100k` trains on u1.base and reports RMSE on u1.test (target <= 0.91 with one model;
Surprise's SVD is about 0.93-0.94): the lesson's recipe, then, for `--seeds` seeds each,
three configurations of 40 factors, y_range (0, 5.5), bs 64, one cycle of 8 epochs at 3e-3:
`l2` (EmbeddingDotBias, per-rating embedding L2 `emb_l2=0.1` instead of weight decay),
`freq` (the same with frequency scaling, `emb_l2=1.0, emb_l2_bias=0.1, emb_l2_alpha=0.5`:
each rating's penalty on a row divided by the square root of the row's training-rating
count) and `genres`, the best (`freq` with `model="features"`: EmbeddingDotBiasFeatures,
whose items also get factors and a bias from their genres, `genre_features`). All were
chosen on a held-out 10% of u1.base, never on u1.test; u1.test is only reported. The last
line averages the best configuration's seeds' predictions (an ensemble, for reference only:
the target is for one model). Data: `--data` (default: the shared folder next to the
repository, else downloaded).

`ml100k` also reports `autorec` (`minifast.collab.autorec_learner`: I-AutoRec with GLocal-K's
local-kernel layers, `AUTOREC` below), chosen by `autorec-search` among `AUTOREC_GRID` on the
same held-out 10% of u1.base (`get_cv_idxs(len(base), val_pct=0.1, seed=42)`), one seed each.

    python benchmarks/collab_accuracy.py autorec-search   # the selection, u1.base only
    python benchmarks/collab_accuracy.py kfold5           # Surprise's 5 folds: genres, autorec, glocal

`autorec-drop` (`AUTOREC_DROP`) is autorec with input dropout (`input_dropout=0.25`), in
`AUTOREC_GRID` beside `input_dropout=0.5`; `ml100k --only-autorec` and `kfold5` report both
autorec configurations, `--autorec NAME` only one (`kfold5 --skip-glocal` leaves glocal out).

`ml100k` also reports `glocal` (`minifast.collab.glocal.glocal_learner`: GLocal-K's recipe,
full-batch L-BFGS pre-training of the local-kernel AutoRec, then fine-tuning with the global
kernel, `GLOCAL` below). `glocal-search` chooses its epochs on the same held-out 10% of
u1.base: for each `GLOCAL_GRID` setting it pre-trains for `pre` epochs keeping the best
held-out epoch's weights (`best_save_name`), then fine-tunes from them for `fine` epochs;
the chosen counts are the best held-out epochs of each phase (0 fine-tuning epochs when no
fine-tuning epoch beats the pre-trained model). A setting with `swa_start` pre-trains with
stochastic weight averaging from that epoch on (`fit(..., use_swa=True)`), and its curve is
the average's: the chosen `pre` is then the epoch whose average is best held out
(`--grid 2 3` runs only those settings).

    python benchmarks/collab_accuracy.py glocal-search    # the selection, u1.base only
    python benchmarks/collab_accuracy.py ml100k --only-glocal

`glocal-drop` (`GLOCAL_DROP`) is glocal with input dropout (`input_dropout=0.4`: each epoch
hides 40% of the input ratings), trained 200 epochs and averaged from 101 (`glocal-search
--grid 4`); `ml100k --only-glocal` and `kfold5` report both, `--glocal NAME` only one.

`ml100k` ends with `blend` (`--skip-blend` leaves it out, `--only-blend` runs only it): a
`minifast.collab.RatingBlend` of the glocal-drop, autorec-drop and genres configurations
(`fit_blend`).
Its weights are least squares on a held-out 10% of u1.base (the same `get_cv_idxs` split)
predicted by the three fitted on the other 90%; the three are then refitted on all of
u1.base and their u1.test predictions blended with those weights. `kfold5 --blend` does the
same in each fold (the held-out 10% taken from the fold's training rows).

    python benchmarks/collab_accuracy.py ml100k --only-blend --seeds 3
    python benchmarks/collab_accuracy.py kfold5 --blend --folds 0 1 2   # a subset of folds

`--distil` (with `ml100k --only-blend` or `--blend`, and `kfold5 --blend`) adds `distil`
(`DISTIL`): one Adam AutoRec trained on the same training ratings, and, where it has none,
taught the refitted blend's prediction of every pair (`RatingBlend.predict_matrix`,
`autorec_learner(..., teacher=...)`). It is one network at prediction time; its training
needs the blend's three fits.

    python benchmarks/collab_accuracy.py ml100k --only-blend --distil --seeds 3
    python benchmarks/collab_accuracy.py distil-search    # the student's choice, u1.base only

`kfold5` is Surprise's `KFold(n_splits=5, random_state=0)` protocol on ml-100k's u.data,
reproduced without Surprise (`surprise_kfold`): the rows in file order, shuffled by
`np.random.RandomState(0).shuffle`, cut into 5 consecutive folds (the first `n % 5` one row
longer), each fold the test set of a model trained on the other four; mean RMSE over folds.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from minifast.collab import (
    CollabFilterDataset,
    autorec_learner,
    genre_features,
    load_ml100k_split,
    load_movies,
    load_ratings,
    movielens_path,
)
from minifast.collab.blend import RatingBlend, member_predictions
from minifast.collab.glocal import glocal_learner
from minifast.data import get_cv_idxs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "movielens"


def _data(name: str, given: str | None) -> Path:
    if given:
        return movielens_path(given)
    return SHARED / name if (SHARED / name).is_dir() else movielens_path(name)


def lesson(args) -> None:
    """The three lesson-5 targets, from the example run in full."""
    spec = importlib.util.spec_from_file_location("lesson5", ROOT / "examples" / "movielens_lesson5.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = time.perf_counter()
    out = mod.main(_data("ml-latest-small-2016", args.data), verbose=args.verbose, seed=args.seed)
    print(f"\nlesson 5 on ml-latest-small-2016 (seed {args.seed}, {time.perf_counter() - t:.0f}s):")
    for key, name, target in (("learner", "learner fit(1e-2, 2, wds=2e-4, cycle_len=1, cycle_mult=2)", 0.770),
                              ("dotbias", "EmbeddingDotBias from scratch", 0.81),
                              ("net", "EmbeddingNet from scratch", 0.79),
                              ("dot", "EmbeddingDot from scratch", None)):
        verdict = "" if target is None else f"  target <= {target}: {'ok' if out[key] <= target else 'MISSED'}"
        print(f"  {name:<62} val MSE {out[key]:.4f}{verdict}")


# the autorec configuration, as `autorec-search` chose it (one-cycle, 64 items a batch)
AUTOREC = {"lr": 3e-3, "epochs": 60, "n_hid": 500, "lambda_2": 20.0, "dropout": 0.0}
# the same with input dropout (`autorec_learner(..., input_dropout=0.25)`)
AUTOREC_DROP = {**AUTOREC, "input_dropout": 0.25}
AUTORECS = {"autorec": AUTOREC, "autorec-drop": AUTOREC_DROP}
AUTOREC_GRID = [
    AUTOREC,
    AUTOREC_DROP,
    {**AUTOREC, "input_dropout": 0.5},
    {**AUTOREC, "lr": 1e-2, "epochs": 40},
    {**AUTOREC, "epochs": 40, "lambda_2": 5.0},
    {**AUTOREC, "epochs": 40, "dropout": 0.3},
]


def fit_autorec(cf, val, cfg: dict, seed: int, verbose: bool = False, teacher=None):
    """One `autorec_learner` run of configuration `cfg` (distilling `teacher`, a matrix of
    predictions of every pair, when given): `(validation RMSE, the learner)`."""
    learn = autorec_learner(cf, val, 64, n_hid=cfg["n_hid"], lambda_2=cfg["lambda_2"],
                            dropout=cfg["dropout"], seed=seed,
                            input_dropout=cfg.get("input_dropout", 0.0), teacher=teacher,
                            teacher_weight=cfg.get("teacher_weight", 1.0))
    r = learn.fit(cfg["lr"], 1, cycle_len=cfg["epochs"], use_clr_beta=(25, 20, 0.95, 0.85),
                  verbose=verbose, progress=False)
    return float(np.sqrt(r[0])), learn


def autorec_search(args) -> None:
    """Each `AUTOREC_GRID` configuration on a held-out 10% of u1.base (u1.test unused)."""
    path = _data("ml-100k", args.data)
    base, _ = load_ml100k_split(path, "u1")
    cf = CollabFilterDataset.from_data_frame(path, base, "userId", "movieId", "rating")
    hold = get_cv_idxs(len(base), val_pct=0.1, seed=42)
    for cfg in AUTOREC_GRID:
        t = time.perf_counter()
        r, _ = fit_autorec(cf, hold, cfg, args.seed, args.verbose)
        print(f"u1.base held-out 10%: autorec {cfg}: RMSE {r:.4f} ({time.perf_counter() - t:.0f}s)")


# glocal's settings (GLocal-K's ml-100k ones: n_hid 500, n_dim 5, 2 layers, lambda_s 0.006,
# gk_size 3, a restarted L-BFGS of max_iter 5 a step); the epoch counts as `glocal-search`
# chose them (the weights averaged from epoch `swa_start` on, `fit(..., use_swa=True)`)
GLOCAL = {"pre": 120, "fine": 0, "lambda_2": 20.0, "dot_scale": 1.0, "swa_start": 41}
# the same with input dropout (`glocal_learner(..., input_dropout=0.4)`): it overfits later,
# so it trains longer and averages later
GLOCAL_DROP = {**GLOCAL, "pre": 200, "swa_start": 101, "input_dropout": 0.4}
GLOCALS = {"glocal": GLOCAL, "glocal-drop": GLOCAL_DROP}
# the blend (`fit_blend`): its members (the best of each family held out, by their names in
# AUTORECS and GLOCALS, and genres), and where its weights come from
BLEND_GLOCAL, BLEND_AUTOREC = "glocal-drop", "autorec-drop"
BLEND = {"members": f"{BLEND_GLOCAL}, {BLEND_AUTOREC}, genres",
         "weights": "least squares on a held-out 10%"}
# distillation (`fit_blend(..., distil=True)`): the blend's prediction of every pair
# (`RatingBlend.predict_matrix`) taught to one Adam AutoRec (`autorec_learner(...,
# teacher=...)`) trained on the same ratings; chosen on the held-out split (docs/collab.md)
DISTIL = {**AUTOREC, "epochs": 240, "teacher_weight": 1.0}
# the students `distil-search` compares (`kind`: trained as autorec or as glocal)
DISTIL_GRID = [
    {"kind": "glocal", **GLOCAL_DROP, "teacher_weight": 1.0},
    {"kind": "glocal", **GLOCAL_DROP, "input_dropout": 0.0, "teacher_weight": 1.0},
    {"kind": "glocal", **GLOCAL_DROP, "pre": 400, "swa_start": 201, "teacher_weight": 1.0},
    {"kind": "autorec", **DISTIL, "epochs": 60},
    {"kind": "autorec", **DISTIL, "epochs": 60, "input_dropout": 0.25},
    {"kind": "autorec", **DISTIL, "epochs": 60, "teacher_weight": 3.0},
    {"kind": "autorec", **DISTIL, "epochs": 120},
    {"kind": "autorec", **DISTIL},
]
GLOCAL_GRID = [
    {**GLOCAL, "pre": 70, "fine": 15, "swa_start": None},
    {**GLOCAL, "pre": 40, "fine": 20, "swa_start": None},
    {**GLOCAL, "pre": 150, "swa_start": 41},
    {**GLOCAL, "pre": 150, "swa_start": 71},
    GLOCAL_DROP,
]


def fit_glocal(cf, val, cfg: dict, seed: int, verbose: bool = False, keep_best_in=None,
               teacher=None):
    """One `glocal_learner` run of `cfg` (`pre` epochs, `fine_tune()`, `fine` epochs at the
    constant L-BFGS step 1): `(final validation RMSE, the pre-training's validation RMSE per
    epoch, the fine-tuning's, the learner)`. With `swa_start`, pre-training averages its
    weights from epoch `swa_start` on (`use_swa`), every RMSE is the average's (NaN before
    it), and the learner's model ends holding the average (for `predict_ratings`).
    `keep_best_in` (a folder; the search only) fine-tunes from the best pre-training epoch's
    weights, saved there, instead of the last. `teacher` (a matrix of predictions of every
    pair) is distilled into it (`glocal_learner(..., teacher=...)`)."""
    swa = cfg.get("swa_start")
    if swa is not None and cfg["fine"]:
        raise ValueError("collab_accuracy: fine-tuning after an averaged pre-training is not "
                         "set up (the fine-tuning would start from the last weights, not the "
                         "average)")
    learn = glocal_learner(cf, val, lambda_2=cfg["lambda_2"], dot_scale=cfg["dot_scale"],
                           seed=seed, path=keep_best_in or cf.path,
                           input_dropout=cfg.get("input_dropout", 0.0), teacher=teacher,
                           teacher_weight=cfg.get("teacher_weight", 1.0))
    r = learn.fit(1.0, cfg["pre"], verbose=verbose, progress=False,
                  best_save_name="glocal_pre" if keep_best_in else None,
                  use_swa=swa is not None, swa_start=swa or 1, swa_eval_freq=1)
    pre = [float(np.sqrt(h["swa_loss" if swa else "val_loss"])) for h in r.history]
    if swa:
        learn.model.load_state_dict(learn.swa_model.state_dict())
    if keep_best_in:
        learn.load("glocal_pre", with_opt=False)
    fine = []
    if cfg["fine"]:
        learn.fine_tune()
        r = learn.fit(1.0, cfg["fine"], verbose=verbose, progress=False)
        fine = [float(np.sqrt(h["val_loss"])) for h in r.history]
    return (fine or pre)[-1], pre, fine, learn


def glocal_search(args) -> None:
    """Each `GLOCAL_GRID` setting on a held-out 10% of u1.base (u1.test unused): the best
    held-out epoch of pre-training, then of fine-tuning from it."""
    path = _data("ml-100k", args.data)
    base, _ = load_ml100k_split(path, "u1")
    cf = CollabFilterDataset.from_data_frame(path, base, "userId", "movieId", "rating")
    hold = get_cv_idxs(len(base), val_pct=0.1, seed=42)
    for cfg in (GLOCAL_GRID[i] for i in args.grid or range(len(GLOCAL_GRID))):
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            _, pre, fine, _ = fit_glocal(cf, hold, cfg, args.seed, args.verbose, keep_best_in=tmp)
        p = int(np.nanargmin(pre)) + 1
        f = int(np.argmin(fine)) + 1 if fine and min(fine) < pre[p - 1] else 0
        best = fine[f - 1] if f else pre[p - 1]
        print(f"u1.base held-out 10%: glocal {cfg}: chosen pre {p}, fine {f}: RMSE {best:.4f} "
              f"({time.perf_counter() - t:.0f}s)")
        print(f"  pre-training RMSE by epoch: {' '.join(f'{v:.4f}' for v in pre)}")
        print(f"  fine-tuning RMSE by epoch:  {' '.join(f'{v:.4f}' for v in fine)}", flush=True)


# the "genres" configuration's penalty (see `ml100k`)
FREQ = {"emb_l2": 1.0, "emb_l2_bias": 0.1, "emb_l2_alpha": 0.5}


def fit_genres(cf, val, genres: np.ndarray, seed: int, verbose: bool = False):
    """One run of the "genres" configuration (EmbeddingDotBiasFeatures, 40 factors, one
    cycle of 8 epochs at 3e-3): `(validation RMSE, the learner)`."""
    torch.manual_seed(seed)
    learn = cf.get_learner(40, val, 64, y_range=(0, 5.5), seed=seed, model="features",
                           model_kwargs={"item_features": genres}, **FREQ)
    r = learn.fit(3e-3, 1, cycle_len=8, use_clr_beta=(25, 20, 0.95, 0.85), verbose=verbose)
    return float(np.sqrt(r[0])), learn


def blend_members(cf, val, movies: pd.DataFrame, seed: int) -> dict:
    """The blend's members (`BLEND`), each its configuration fitted on `cf` without `val`."""
    return {BLEND_GLOCAL: fit_glocal(cf, val, GLOCALS[BLEND_GLOCAL], seed)[3],
            BLEND_AUTOREC: fit_autorec(cf, val, AUTORECS[BLEND_AUTOREC], seed)[1],
            "genres": fit_genres(cf, val, genre_features(movies, cf.idx2item), seed)[1]}


def fit_blend(path, train: pd.DataFrame, test: pd.DataFrame, movies: pd.DataFrame,
              seed: int, distil: bool = False) -> tuple[dict[str, float], RatingBlend]:
    """The blend's protocol: the members fitted on `train` less a held-out 10%
    (`get_cv_idxs(len(train), val_pct=0.1, seed=42)`) give the held-out predictions its
    weights are fitted on (`RatingBlend.fit`, clipped to the rating range); the members
    refitted on all of `train` predict `test`. Returns `test`'s RMSE of each member and of
    the blend (`"blend"`), and the blend. `distil`: also the `DISTIL` student's
    (`"distil"`), one AutoRec trained on `train` and taught the refitted blend's
    prediction of every pair."""
    hold = get_cv_idxs(len(train), val_pct=0.1, seed=42)
    cf = CollabFilterDataset.from_data_frame(path, train, "userId", "movieId", "rating")
    held = train.iloc[hold]
    preds = member_predictions(blend_members(cf, hold, movies, seed), held.userId, held.movieId)
    blend = RatingBlend.fit(preds, held.rating, y_range=(cf.min_score, cf.max_score))
    df = pd.concat([train, test], ignore_index=True)
    cf = CollabFilterDataset.from_data_frame(path, df, "userId", "movieId", "rating")
    test_rows = np.arange(len(train), len(df))
    members = blend_members(cf, test_rows, movies, seed)
    preds = member_predictions(members, test.userId, test.movieId)
    y = test.rating.to_numpy(np.float64)
    scores = {k: float(np.sqrt(np.mean((v - y) ** 2))) for k, v in preds.items()}
    scores["blend"] = float(np.sqrt(np.mean((blend.predict(preds) - y) ** 2)))
    if distil:
        teacher = blend.predict_matrix(members, cf)
        scores["distil"] = fit_autorec(cf, test_rows, DISTIL, seed, teacher=teacher)[0]
    print(f"  blend: intercept {blend.intercept:.3f}, weights " + ", ".join(
        f"{n} {w:.3f}" for n, w in zip(blend.names, blend.weights, strict=True)), flush=True)
    return scores, blend


def distil_search(args) -> None:
    """The students of `DISTIL_GRID` on u1.base only: the blend's members fitted on 90% of
    it, the blend's weights on a random half (A) of the held-out 10%, every student trained on
    the 90% and that blend's prediction of every pair, and scored, like the members and the
    blend, on the other half (B), which none of them saw (`--grid`: only those students)."""
    path = _data("ml-100k", args.data)
    base, _ = load_ml100k_split(path, "u1")
    movies = load_movies(path)
    cf = CollabFilterDataset.from_data_frame(path, base, "userId", "movieId", "rating")
    hold = get_cv_idxs(len(base), val_pct=0.1, seed=42)
    order = np.random.RandomState(1).permutation(len(hold))
    half_a, half_b = base.iloc[hold[order[: len(hold) // 2]]], base.iloc[hold[order[len(hold) // 2:]]]
    members = blend_members(cf, hold, movies, args.seed)
    blend = RatingBlend.fit(member_predictions(members, half_a.userId, half_a.movieId),
                            half_a.rating, y_range=(cf.min_score, cf.max_score))
    on_b = member_predictions(members, half_b.userId, half_b.movieId)
    y = half_b.rating.to_numpy(np.float64)

    def rmse(pred) -> float:
        return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - y) ** 2)))

    print("u1.base held-out half B: " + ", ".join(f"{k} {rmse(v):.4f}" for k, v in on_b.items())
          + f", blend {rmse(blend.predict(on_b)):.4f}", flush=True)
    teacher = blend.predict_matrix(members, cf)
    for cfg in (DISTIL_GRID[i] for i in args.grid or range(len(DISTIL_GRID))):
        t = time.perf_counter()
        fit = fit_glocal if cfg["kind"] == "glocal" else fit_autorec
        student = fit(cf, hold, cfg, args.seed, args.verbose, teacher=teacher)[-1]
        pred = student.predict_ratings(half_b.userId, half_b.movieId, fallback=True)
        print(f"u1.base held-out half B: distil {cfg}: RMSE {rmse(pred):.4f} "
              f"({time.perf_counter() - t:.0f}s)", flush=True)


def chosen(configs: dict, only: str | None, skip: bool = False) -> dict:
    """`configs` (name -> settings), or only the one named `only`; none with `skip`."""
    return {} if skip else {k: v for k, v in configs.items() if only in (None, k)}


def surprise_kfold(n: int, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """The test rows of each fold of Surprise's `KFold(n_splits=k, random_state=seed)` over
    `n` ratings in file order (sorted within each fold)."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = [n // k + (i < n % k) for i in range(k)]
    return [np.sort(order[stop - size:stop]) for size, stop in zip(sizes, np.cumsum(sizes),
                                                                   strict=True)]


def kfold5(args) -> None:
    """Surprise's KFold(n_splits=5, random_state=0) on u.data: genres, autorec and glocal RMSE
    per fold (`--blend`: and the blend's, `fit_blend`, `--distil` with the distilled
    AutoRec's; `--folds`: only those folds)."""
    path = _data("ml-100k", args.data)
    df = load_ratings(path)
    cf = CollabFilterDataset.from_data_frame(path, df, "userId", "movieId", "rating")
    movies = load_movies(path)
    genres = genre_features(movies, cf.idx2item)
    out: dict[str, list[float]] = {k: [] for k in ("genres", *AUTORECS, *GLOCALS, "blend",
                                                   "distil")}
    folds = surprise_kfold(len(df))
    for f in args.folds or range(len(folds)):
        val = folds[f]
        if args.blend:
            trn = np.setdiff1d(np.arange(len(df)), val)
            scores, _ = fit_blend(path, df.iloc[trn], df.iloc[val], movies, args.seed,
                                  args.distil)
            for key, v in scores.items():
                out[key].append(v)
        else:
            out["genres"].append(fit_genres(cf, val, genres, args.seed)[0])
            for name, cfg in chosen(AUTORECS, args.autorec, args.skip_autorec).items():
                out[name].append(fit_autorec(cf, val, cfg, args.seed)[0])
            for name, cfg in chosen(GLOCALS, args.glocal, args.skip_glocal).items():
                out[name].append(fit_glocal(cf, val, cfg, args.seed)[0])
        print(f"ml-100k 5-fold, fold {f}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in out.items()
                                                      if v), flush=True)
    for key, v in ((k, v) for k, v in out.items() if v):
        print(f"ml-100k 5-fold (Surprise KFold(5, random_state=0)): {key} config: mean "
              f"{np.mean(v):.4f}, worst {max(v):.4f}")


def ml100k(args) -> None:
    """u1.base -> u1.test RMSE: the lesson recipe, the best configuration, an average of seeds."""
    path = _data("ml-100k", args.data)
    base, test = load_ml100k_split(path, "u1")
    df = pd.concat([base, test], ignore_index=True)
    val = np.arange(len(base), len(df))  # the test rows are the validation set
    cf = CollabFilterDataset.from_data_frame(path, df, "userId", "movieId", "rating")
    verbose = args.verbose
    if args.only_autorec:
        return ml100k_autorec(cf, val, args)
    if args.only_glocal:
        return ml100k_glocal(cf, val, args)
    if args.only_blend:
        return ml100k_blend(path, base, test, args)

    def rmse(res) -> float:
        return float(np.sqrt(res[0]))

    torch.manual_seed(args.seed)
    learn = cf.get_learner(50, val, 64, seed=args.seed)
    r = learn.fit(1e-2, 2, wds=2e-4, cycle_len=1, cycle_mult=2, verbose=verbose)
    print(f"ml-100k u1: lesson recipe (50 factors, wds 2e-4, SGDR 3 epochs): test RMSE {rmse(r):.4f}")

    genres = genre_features(load_movies(path), cf.idx2item)
    configs = {
        "l2": ("emb_l2 0.1", {"emb_l2": 0.1}),
        "freq": ("emb_l2 1.0, bias 0.1, alpha 0.5", FREQ),
        "genres": ('model="features" (genres), emb_l2 1.0, bias 0.1, alpha 0.5',
                   {**FREQ, "model": "features", "model_kwargs": {"item_features": genres}}),
    }
    for key, (label, reg) in configs.items():
        preds, scores = [], []
        for s in range(args.seeds):
            torch.manual_seed(args.seed + s)
            learn = cf.get_learner(40, val, 64, y_range=(0, 5.5), seed=args.seed + s, **reg)
            r = learn.fit(3e-3, 1, cycle_len=8, use_clr_beta=(25, 20, 0.95, 0.85), verbose=verbose)
            preds.append(learn.predict()[:, 0])
            scores.append(rmse(r))
            print(f"ml-100k u1: {key} config, seed {args.seed + s} (40 factors, y_range (0, 5.5), "
                  f"{label}, one cycle of 8 epochs at 3e-3): test RMSE {scores[-1]:.4f}")
        print(f"ml-100k u1: {key} config, {len(scores)} seeds: mean {np.mean(scores):.4f}, "
              f"worst {max(scores):.4f}")
    if len(preds) > 1:
        y = learn.data.val_y[:, 0]
        avg = float(np.sqrt(np.mean((np.mean(preds, 0) - y) ** 2)))
        print(f"ml-100k u1: ensemble of the best config's {len(preds)} seeds (reference only): "
              f"test RMSE {avg:.4f}")
    if not args.skip_autorec:
        ml100k_autorec(cf, val, args)
    ml100k_glocal(cf, val, args)
    if not args.skip_blend:
        ml100k_blend(path, base, test, args)


def ml100k_autorec(cf, val, args) -> None:
    """The autorec configurations (`--autorec`: only that one) on u1.test, `--seeds` seeds."""
    for name, cfg in chosen(AUTORECS, args.autorec).items():
        ml100k_seeds({name: cfg}, lambda seed, n=name, c=cfg: {
            n: fit_autorec(cf, val, c, seed, args.verbose)[0]}, args)


def ml100k_glocal(cf, val, args) -> None:
    """The glocal configurations (`--glocal`: only that one) on u1.test, `--seeds` seeds."""
    for name, cfg in chosen(GLOCALS, args.glocal).items():
        ml100k_seeds({name: cfg}, lambda seed, n=name, c=cfg: {
            n: fit_glocal(cf, val, c, seed, args.verbose)[0]}, args)


def ml100k_blend(path, base: pd.DataFrame, test: pd.DataFrame, args) -> None:
    """The blend (`fit_blend`, its members `BLEND`) on u1.test, `--seeds` seeds (`--distil`:
    and the distilled AutoRec, `DISTIL`, from the same runs)."""
    movies = load_movies(path)
    cfgs = {"blend": BLEND, **({"distil": DISTIL} if args.distil else {})}
    ml100k_seeds(cfgs, lambda seed: fit_blend(path, base, test, movies, seed, args.distil)[0],
                 args)


def ml100k_seeds(cfgs: dict[str, dict], fit: Callable[[int], dict[str, float]], args) -> None:
    """`fit(seed)`'s u1.test RMSE of each configuration in `cfgs` (name -> settings) for
    `--seeds` seeds from `--seed`: a line per seed, then the mean and the worst."""
    scores: dict[str, list[float]] = {name: [] for name in cfgs}
    for s in range(args.seeds):
        t = time.perf_counter()
        got = fit(args.seed + s)
        for name, cfg in cfgs.items():
            scores[name].append(got[name])
            print(f"ml-100k u1: {name} config, seed {args.seed + s} ({cfg}): test RMSE "
                  f"{got[name]:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
    for name, v in scores.items():
        print(f"ml-100k u1: {name} config, {len(v)} seeds: mean {np.mean(v):.4f}, "
              f"worst {max(v):.4f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["lesson", "ml100k", "autorec-search", "glocal-search",
                                     "distil-search", "kfold5"])
    ap.add_argument("--data", default=None, help="MovieLens folder or name (default: shared copy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="ml100k: seeds per configuration")
    ap.add_argument("--verbose", action="store_true", help="print every epoch's table")
    ap.add_argument("--grid", type=int, nargs="*",
                    help="glocal-search, distil-search: GLOCAL_GRID / DISTIL_GRID indices")
    ap.add_argument("--skip-autorec", action="store_true", help="ml100k, kfold5: leave autorec out")
    ap.add_argument("--only-autorec", action="store_true", help="ml100k: autorec only")
    ap.add_argument("--skip-glocal", action="store_true", help="kfold5: leave glocal out")
    ap.add_argument("--only-glocal", action="store_true", help="ml100k: glocal only")
    ap.add_argument("--only-blend", action="store_true", help="ml100k: the blend only")
    ap.add_argument("--autorec", choices=list(AUTORECS),
                    help="ml100k, kfold5: only this autorec configuration (default: both)")
    ap.add_argument("--glocal", choices=list(GLOCALS),
                    help="ml100k, kfold5: only this glocal configuration (default: both)")
    ap.add_argument("--skip-blend", action="store_true", help="ml100k: leave the blend out")
    ap.add_argument("--blend", action="store_true", help="kfold5: the blend and its members")
    ap.add_argument("--distil", action="store_true",
                    help="ml100k --only-blend, kfold5 --blend: also the distilled AutoRec")
    ap.add_argument("--folds", type=int, nargs="*", choices=range(5),
                    help="kfold5: only these folds (0-4)")
    a = ap.parse_args()
    {"lesson": lesson, "ml100k": ml100k, "autorec-search": autorec_search,
     "glocal-search": glocal_search, "distil-search": distil_search,
     "kfold5": kfold5}[a.what](a)
