"""`python -m minifast.collab` / `minifast-collab`: train a recommender, save it, recommend.

`--data` is a MovieLens name, folder or CSV file (default ml-latest-small; offline, synthetic
ratings dense enough to learn: see `SYNTHETIC`); `--help` lists the options and docs/collab.md ("From the command line") has
examples. Bad input gives a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import get_cv_idxs
from .dataset import CollabFilterDataset
from .download import ChecksumError
from .ids import UnknownIdError
from .metrics import ndcg_at_k
from .models import MODELS
from .movielens import genre_features, load_movies, load_ratings, movie_titles, movielens_path
from .synthetic import synthetic_ratings

# The offline data set: `synthetic_ratings(**SYNTHETIC)`. Not ml-latest-small's shape: with
# ~10 ratings per movie no model trained on those gets near their noise floor (the floor is the
# MSE of the true means), so a newcomer's first run would end far above the number printed
# beside it. 400 ratings per user and per item on average (still power-law popular), rank 5.
SYNTHETIC = {"n_users": 1000, "n_items": 1000, "n_ratings": 400_000, "rank": 5, "alpha": 0.5}

# The training recipe for the options a run leaves unset. Real data: the lesson's SGDR (3
# epochs). Synthetic ratings: a penalty on the rows each rating uses, scaled down for
# often-rated rows, few factors and a one-cycle schedule; chosen on a held-out part of the
# training split (not the validation set; docs/collab.md has the search).
# The penalty's three options go together: giving any of them leaves the other two unset.
RECIPES = {
    "real": {"factors": 50, "bs": 64, "lr": 1e-2, "wd": 2e-4, "emb_l2": None,
             "emb_l2_bias": None, "emb_l2_alpha": 0.0, "schedule": "sgdr", "cycles": 2,
             "cycle_len": 1, "cycle_mult": 2},
    "synthetic": {"factors": 10, "bs": 1024, "lr": 3e-2, "wd": 0.0, "emb_l2": 0.3,
                  "emb_l2_bias": 0.01, "emb_l2_alpha": 0.5, "schedule": "one-cycle",
                  "cycles": 1, "cycle_len": 6, "cycle_mult": 1},
}
_PENALTY = ("emb_l2", "emb_l2_bias", "emb_l2_alpha")


def apply_recipe(args: argparse.Namespace, recipe: dict) -> None:
    """Fill the training options left unset (None) in `args` from `recipe` (see RECIPES)."""
    own_penalty = any(getattr(args, k) is not None for k in _PENALTY)
    for key, value in recipe.items():
        if key in _PENALTY and own_penalty:
            value = 0.0 if key == "emb_l2_alpha" else None
        if getattr(args, key) is None:
            setattr(args, key, value)


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = argparse.ArgumentParser(
        prog="minifast-collab",
        description="Train a collaborative-filtering model, save it, print recommendations.")
    p.add_argument("--data", default=None,
                   help="MovieLens name, folder, or CSV file, or 'synthetic' (default: "
                        "ml-latest-small, downloaded; synthetic ratings when it cannot be)")
    p.add_argument("--user-col", default="userId", help="user id column of a CSV")
    p.add_argument("--item-col", default="movieId", help="item id column of a CSV")
    p.add_argument("--rating-col", default="rating", help="rating column of a CSV")
    p.add_argument("--sep", default=",", help="CSV separator (default: ',')")
    p.add_argument("--model", choices=sorted(MODELS), default="dotbias")
    real, syn = RECIPES["real"], RECIPES["synthetic"]

    def default(key):  # unset options take the data's recipe (see RECIPES)
        return f"default: {'none' if real[key] is None else real[key]}; synthetic: {syn[key]}"

    p.add_argument("--factors", type=int, default=None, help=default("factors"))

    p.add_argument("--bs", type=int, default=None, help=default("bs"))
    p.add_argument("--lr", type=float, default=None, help=default("lr"))
    p.add_argument("--wd", type=float, default=None, help="weight decay (L2; " + default("wd") + ")")
    p.add_argument("--emb-l2", type=float, default=None,
                   help="per-rating L2 on the embeddings used (embedding_l2), e.g. 0.1 with --wd "
                        "0 (" + default("emb_l2") + ")")
    p.add_argument("--emb-l2-bias", type=float, default=None,
                   help="with --emb-l2: its strength on the biases (default: --emb-l2; "
                        f"synthetic: {syn['emb_l2_bias']})")
    p.add_argument("--emb-l2-alpha", type=float, default=None,
                   help="with --emb-l2: divide each row's penalty by its rating count ** alpha "
                        f"(0.5: frequency regularisation; default 0; synthetic: "
                        f"{syn['emb_l2_alpha']})")
    p.add_argument("--schedule", choices=["sgdr", "one-cycle"], default=None,
                   help="SGDR (cosine annealing with restarts) or one-cycle (use_clr_beta) "
                        "cycles (" + default("schedule") + ")")
    p.add_argument("--cycles", type=int, default=None, help=default("cycles"))
    p.add_argument("--cycle-len", type=int, default=None, help=default("cycle_len"))
    p.add_argument("--cycle-mult", type=int, default=None, help=default("cycle_mult"))
    p.add_argument("--max-rows", type=int, default=None, help="use only the first N ratings")
    p.add_argument("--seed", type=int, default=42, help="validation split and init seed")
    p.add_argument("--out", default=".", help="model goes to OUT/models/NAME.pt")
    p.add_argument("--name", default=None, help="model file name (default: DATA-MODEL)")
    p.add_argument("--user", default=None, help="recommend for this user id (default: first)")
    p.add_argument("-n", type=int, default=10, help="how many recommendations")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def load_data(args) -> tuple[CollabFilterDataset, pd.Series | None, str, float | None]:
    """`(dataset, titles or None, short name, noise floor or None)` for `--data`. Without
    `--data`, ml-latest-small; when it cannot be had (offline), synthetic ratings (see
    `SYNTHETIC`), with a note. The noise floor (the best MSE any model can reach) is known only for
    synthetic ratings."""
    if args.data is None:
        try:
            args.data = str(movielens_path("ml-latest-small"))
        except (ConnectionError, ChecksumError, OSError) as e:
            print(f"minifast-collab: note: {e}\nminifast-collab: training on synthetic "
                  f"ratings instead (--data synthetic)", file=sys.stderr)
            args.data = "synthetic"
    if args.data == "synthetic":
        cf, floor = _synthetic(args)
        return cf, None, "synthetic", floor
    src = Path(args.data).expanduser()
    if src.is_file():
        cf = CollabFilterDataset.from_csv(src.parent, src.name, args.user_col, args.item_col,
                                          args.rating_col, sep=args.sep, nrows=args.max_rows)
        titles = _titles(src.parent)
        return cf, titles, src.stem, None
    folder = movielens_path(args.data)
    ratings = load_ratings(folder)
    if args.max_rows is not None:
        ratings = ratings.iloc[: args.max_rows]
    cf = CollabFilterDataset.from_data_frame(folder, ratings, "userId", "movieId", "rating")
    return cf, _titles(folder), folder.name, None


def _model_kwargs(args, cf: CollabFilterDataset) -> dict:
    """`--model features`: the items' genres from the movies file beside the data's ratings
    (`cf.path`: the folder, or the CSV file's folder), as side features."""
    if args.model != "features":
        return {}
    try:
        movies = None if args.data == "synthetic" else load_movies(cf.path)
    except FileNotFoundError:
        movies = None
    if movies is None or "genres" not in movies.columns:
        raise ValueError(f"--model features uses the movies' genres: {args.data} has no "
                         "movies.csv or u.item with genres beside its ratings")
    return {"item_features": genre_features(movies, cf.idx2item)}


def _synthetic(args) -> tuple[CollabFilterDataset, float]:
    """`synthetic_ratings(**SYNTHETIC)`; prints the noise floor, the best MSE any model can
    reach on them."""
    df, floor = synthetic_ratings(**SYNTHETIC, seed=args.seed)
    if args.max_rows is not None:
        df = df.iloc[: args.max_rows]
    call = ", ".join(f"{k}={v:_}" if isinstance(v, int) else f"{k}={v}" for k, v in SYNTHETIC.items())
    print(f"synthetic ratings (synthetic_ratings({call}, seed={args.seed})): noise "
          f"floor MSE {floor:.4f}")
    return CollabFilterDataset.from_data_frame(".", df, "userId", "movieId", "rating"), floor


def _titles(folder: Path) -> pd.Series | None:
    try:
        return movie_titles(folder)
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _raw_id(cf: CollabFilterDataset, user: str):
    """A command-line user id in the data's id type."""
    if cf.users.dtype.kind in "iu":
        try:
            return int(user)
        except ValueError:
            return user
    if cf.users.dtype.kind == "f":
        return float(user)
    return user


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        run(args)
    except (FileNotFoundError, ValueError, UnknownIdError, ConnectionError, ChecksumError) as e:
        print(f"minifast-collab: error: {e}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    """Load, train, save, recommend (bad input raises; `main` turns it into a message)."""
    if args.max_rows is not None and args.max_rows <= 0:
        raise ValueError(f"--max-rows must be positive, got {args.max_rows}")
    cf, titles, name, floor = load_data(args)
    print(f"{name}: {cf.n} ratings, {cf.n_users} users, {cf.n_items} items, "
          f"scores {cf.min_score:g}..{cf.max_score:g}")
    apply_recipe(args, RECIPES["real" if floor is None else "synthetic"])
    val = get_cv_idxs(cf.n, seed=args.seed)
    learn = cf.get_learner(args.factors, val, args.bs, model=args.model, seed=args.seed,
                           model_kwargs=_model_kwargs(args, cf), emb_l2=args.emb_l2,
                           emb_l2_bias=args.emb_l2_bias, emb_l2_alpha=args.emb_l2_alpha,
                           metrics=[ndcg_at_k(10)], item_names=titles,
                           path=Path(args.out))  # Adam (fused where supported): the default
    one_cycle = (10, 10) if args.schedule == "one-cycle" else None
    res = learn.fit(args.lr, args.cycles, wds=args.wd, cycle_len=args.cycle_len,
                    cycle_mult=args.cycle_mult, use_clr_beta=one_cycle,
                    progress=False if args.no_progress else None)
    known = "" if floor is None else f" (noise floor of this synthetic set: {floor:.4f})"
    print(f"validation MSE {res[0]:.4f}, RMSE {np.sqrt(res[0]):.4f}{known}")
    saved = learn.save(args.name or f"{name}-{args.model}")
    print(f"saved model weights to {saved}")
    user = cf.idx2user[0] if args.user is None else _raw_id(cf, args.user)
    rec = learn.recommend(user, n=args.n, fallback=True)
    how = ("" if learn.is_known(users=user) else
           " (unseen in training: by the baseline, mean + item bias)")
    print(f"\ntop {len(rec)} recommendations for user {user}{how}:")
    print(rec.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    sys.exit(main())
