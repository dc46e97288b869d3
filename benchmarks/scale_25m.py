"""End to end at MovieLens-25M scale on synthetic ratings: time and peak memory per stage.

    python benchmarks/scale_25m.py [--scale 1.0|small] [--epochs 1] [--bs 8192] [--factors 50]
                                   [--lr 5e-3] [--emb-l2 L] [--one-cycle] [--reps 1]
                                   [--modes dense sparse coalesce] [--surprise]
                                   [--surprise-epochs E] [--target 1.10] [--threads 2]

A ratings frame shaped like MovieLens 25M (162,541 users, 59,047 items, 25,000,095 ratings;
`--scale` shrinks all three, 0.4 gives the issue's 10M-rating set, `small` a 250k-rating
smoke run) from `synthetic_ratings` (low rank + noise, power-law popularity, with its exact
noise floor), then: frame -> CollabFilterDataset (vectorised id mapping) -> `get_cv_idxs`
split -> `get_learner` (EmbeddingDotBias, `--factors` 50) -> `fit` at bs=8192 with constant LR
5e-3 (or `--lr`, `--one-cycle`), for each mode -> `predict` on the validation rows. Modes:

- `dense`: fused Adam (get_learner's default);
- `sparse`: `get_learner(sparse=True)`: sparse embedding gradients, `LazyAdam`'s row-wise step;
- `coalesce`: sparse gradients with the step LazyAdam took before the row-wise path (coalesce,
  then per-parameter row gathers), kept here as the baseline the row-wise step is measured
  against;
- `--surprise`: also Surprise's SVD (50 factors, its default SGD, `--surprise-epochs`) on
  the same split, where scikit-surprise is installed ("not installed" otherwise); it takes
  its turn in the rotation like the other modes.

Each stage prints its wall time, the process's resident memory after it and the peak so far
(VmHWM); the peak is reset before each mode (where /proc/self/clear_refs allows), so the
summary's peak RSS is that mode's (the data set's memory included). The summary: seconds
per epoch (each epoch), ratings/s, validation MSE against the noise floor (the best any
model can do), peak RSS; then the time to validation MSE within `--target` (1.10; several
values may be given) of the noise floor: the epochs' seconds summed until an epoch's
validation MSE reached it (Surprise reports only its final MSE, so its time is its whole
fit, or "not reached"). Modes run interleaved when `--reps` > 1 (A B C, B C A, ...).
Threads: `--threads` (default 2).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = (162_541, 59_047, 25_000_095)
#: `--scale small`: 250k ratings (1,625 users, 590 items), for a smoke run
SMALL = 0.01
MODES = ("dense", "sparse", "coalesce")


def vm_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Stages:
    """Prints one row per stage: seconds, RSS after, peak RSS so far."""

    def __init__(self):
        self.rows = []
        print("| stage | seconds | RSS after (MB) | peak RSS so far (MB) | note |")
        print("|---|---:|---:|---:|---|")

    def __call__(self, name: str, t0: float, note: str = "") -> None:
        dt = time.perf_counter() - t0
        row = (name, dt, vm_mb("VmRSS"), vm_mb("VmHWM"), note)
        self.rows.append(row)
        print(f"| {name} | {dt:.1f} | {row[2]:,.0f} | {row[3]:,.0f} | {note} |", flush=True)


def coalesce_lazy_adam():
    """LazyAdam with the step it had before the row-wise path (the `coalesce` baseline)."""
    import math

    from minifast import LazyAdam

    class CoalesceLazyAdam(LazyAdam):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                lr, (b1, b2), eps, wd = (group["lr"], group["betas"], group["eps"],
                                         group["weight_decay"])
                for p in (p for p in group["params"] if p.grad is not None):
                    state = self.state[p]
                    if not state:
                        state.update(step=0, exp_avg=torch.zeros_like(p),
                                     exp_avg_sq=torch.zeros_like(p))
                    state["step"] += 1
                    t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                    step_size, bc2 = lr / (1 - b1**t), math.sqrt(1 - b2**t)
                    if p.grad.is_sparse:
                        g = p.grad.coalesce()
                        rows, vals = g.indices()[0], g.values()
                        if wd:
                            vals = vals.add(p.index_select(0, rows), alpha=wd)
                        m_r = m.index_select(0, rows).lerp_(vals, 1 - b1)
                        v_r = v.index_select(0, rows).mul_(b2).addcmul_(vals, vals, value=1 - b2)
                        m.index_copy_(0, rows, m_r)
                        v.index_copy_(0, rows, v_r)
                        denom = v_r.sqrt_().div_(bc2).add_(eps)
                        p.index_add_(0, rows, m_r.div_(denom), alpha=-step_size)
                    else:
                        g = p.grad if not wd else p.grad.add(p, alpha=wd)
                        m.lerp_(g, 1 - b1)
                        v.mul_(b2).addcmul_(g, g, value=1 - b2)
                        p.addcdiv_(m, v.sqrt().div_(bc2).add_(eps), value=-step_size)

    return CoalesceLazyAdam


def reset_peak_rss() -> bool:
    """Start VmHWM again from the current RSS; whether it could (Linux, where allowed)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return vm_mb("VmHWM") <= vm_mb("VmRSS") + 1


def parse_scale(v: str) -> float:
    """`--scale`: a fraction of the ML-25M shape, or `small` (a 250k-rating smoke run)."""
    if v == "small":
        return SMALL
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale must be a number or 'small', got {v!r}") from None
    if not 0 < f <= 4:
        raise argparse.ArgumentTypeError(f"--scale must be in (0, 4], got {v}")
    return f


def run_mode(mode: str, cf, val_idxs, args, st: Stages, floor: float) -> dict:
    """Train and predict with one mode; its summary row."""
    reset_peak_rss()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    kw = {"opt_fn": coalesce_lazy_adam()} if mode == "coalesce" else {}
    learn = cf.get_learner(args.factors, val_idxs, args.bs, seed=0, sparse=mode != "dense",
                           emb_l2=args.emb_l2, **kw)
    st(f"{mode}: get_learner (data + model + optimiser)", t0,
       f"{type(learn.opt).__name__}, {sum(p.numel() for p in learn.model.parameters()):,} params")
    t0 = time.perf_counter()
    sched = {"cycle_len": args.epochs, "use_clr_beta": (10, 10)} if args.one_cycle else {}
    res = learn.fit(args.lr, 1 if args.one_cycle else args.epochs, wds=args.wds or None,
                    verbose=False, progress=False, **sched)
    times = [h["time"] for h in res.history]
    per_epoch = ", ".join(f"{h['time']:.1f}s ({h['val_loss']:.4f})" for h in res.history)
    st(f"{mode}: fit {args.epochs} epoch(s)", t0,
       f"val MSE {res[0]:.4f} (floor {floor:.4f}, +{res[0] - floor:.4f}); epochs {per_epoch}; "
       f"{res.state.iteration / sum(times):.0f} steps/s")
    t0 = time.perf_counter()
    preds = learn.predict()
    mse = float(np.mean((preds.reshape(-1) - learn.data.val_y.reshape(-1)) ** 2))
    st(f"{mode}: predict (validation)", t0, f"{len(preds):,} predictions, MSE {mse:.4f}")
    n_trn = len(learn.data.trn_y)
    curve = [(t, h["val_loss"]) for t, h in zip(itertools.accumulate(times), res.history)]
    del learn, res, preds
    gc.collect()
    return {"mode": mode, "epochs": times, "ratings_s": n_trn * len(times) / sum(times),
            "mse": mse, "peak_mb": vm_mb("VmHWM"),
            "curve": curve}


def run_surprise(cf, val_idxs, args, st: Stages) -> dict | None:
    """Surprise's SVD (50 factors, its default learning rate and regularisation) for
    `--surprise-epochs` epochs (default `--epochs`) on the same split, or None when
    scikit-surprise is not installed. Its trainset is built (and freed) in each run, so the
    other modes' memory figures do not include it."""
    try:
        import pandas as pd
        from surprise import SVD, Dataset, Reader
    except ImportError:
        return None
    reset_peak_rss()
    t0 = time.perf_counter()
    trn = np.ones(cf.n, dtype=bool)
    trn[val_idxs] = False
    users, items, y = np.asarray(cf.user_col), np.asarray(cf.item_col), cf.ratings
    frame = pd.DataFrame({"u": users[trn], "i": items[trn], "r": y[trn]})
    data = Dataset.load_from_df(frame, Reader(rating_scale=(cf.min_score, cf.max_score)))
    trainset = data.build_full_trainset()
    del frame
    st("surprise: trainset", t0)
    t0 = time.perf_counter()
    epochs = args.surprise_epochs or args.epochs
    algo = SVD(n_factors=50, n_epochs=epochs, random_state=0)
    algo.fit(trainset)
    fit_s = time.perf_counter() - t0
    st(f"surprise: SVD fit {epochs} epoch(s)", t0)
    preds = np.array([algo.predict(u, i).est for u, i in zip(users[~trn], items[~trn])])
    mse = float(np.mean((preds - y[~trn]) ** 2))
    peak = vm_mb("VmHWM")
    del algo, trainset, data
    gc.collect()
    return {"mode": "surprise SVD", "epochs": [fit_s / epochs] * epochs,
            "ratings_s": int(trn.sum()) * epochs / fit_s, "mse": mse, "peak_mb": peak,
            "curve": [(fit_s, mse)]}


def summary(rows: list[dict], floor: float, surprise: str) -> str:
    """The per-mode table: s/epoch (each epoch), ratings/s, val MSE (x floor), peak RSS."""
    lines = ["| mode | s/epoch (each) | median s/epoch | ratings/s | val MSE (x floor) | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        each = ", ".join(f"{t:.1f}" for t in r["epochs"])
        lines.append(f"| {r['mode']} | {each} | {statistics.median(r['epochs']):.2f} | "
                     f"{r['ratings_s'] / 1e6:.2f} M | {r['mse']:.4f} ({r['mse'] / floor:.3f}x) | "
                     f"{r['peak_mb']:,.0f} |")
    if surprise:
        lines.append(f"| surprise SVD | {surprise} | | | | |")
    by = {r["mode"]: statistics.median(r["epochs"]) for r in rows}
    ratios = [f"{a} / {b} = {by[a] / by[b]:.2f}" for a, b in
              (("sparse", "dense"), ("coalesce", "dense"), ("sparse", "coalesce"),
               ("sparse", "surprise SVD"), ("dense", "surprise SVD")) if a in by and b in by]
    return "\n".join(lines) + ("\n\nepoch-time ratios (medians): " + "; ".join(ratios)
                               if ratios else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=parse_scale, default=1.0,
                    help="fraction of the ML-25M shape (0.4: 10M ratings), or 'small'")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--bs", type=int, default=8192)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--wds", type=float, default=0.0)
    ap.add_argument("--emb-l2", type=float, default=None,
                    help="per-rating L2 on the embeddings used (get_learner(emb_l2=...))")
    ap.add_argument("--one-cycle", action="store_true",
                    help="one cycle over all epochs (use_clr_beta=(10, 10)) instead of a constant LR")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=["dense", "sparse"])
    ap.add_argument("--reps", type=int, default=1, help="runs of each mode, interleaved")
    ap.add_argument("--surprise", action="store_true", help="also Surprise's SVD, if installed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--factors", type=int, default=50, help="minifast's n_factors")
    ap.add_argument("--surprise-epochs", type=int, default=None,
                    help="Surprise SVD's n_epochs (default: --epochs)")
    ap.add_argument("--target", type=float, nargs="+", default=[1.10],
                    help="report the time to validation MSE <= each of these x the noise floor")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from minifast import get_cv_idxs
    from minifast.collab import CollabFilterDataset
    from minifast.collab.synthetic import synthetic_ratings

    n_users, n_items, n = (max(2, int(round(v * args.scale))) for v in SHAPE)
    print(f"MovieLens-25M-shaped synthetic set x{args.scale}: {n_users:,} users, {n_items:,} "
          f"items, {n:,} ratings; bs {args.bs}; torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; "
          f"start RSS {vm_mb('VmRSS'):.0f} MB")
    st = Stages()
    t0 = time.perf_counter()
    df, floor = synthetic_ratings(n_users, n_items, n, seed=0)
    st("synthetic_ratings (frame)", t0, f"noise floor {floor:.4f}")
    t0 = time.perf_counter()
    cf = CollabFilterDataset.from_data_frame(".", df, "userId", "movieId", "rating")
    st("CollabFilterDataset.from_data_frame", t0, f"{cf.n_users:,} users, {cf.n_items:,} items")
    del df
    gc.collect()
    t0 = time.perf_counter()
    val_idxs = get_cv_idxs(cf.n)
    st("get_cv_idxs", t0, f"{len(val_idxs):,} validation rows")

    rows, surprise = [], ""
    modes = list(args.modes) + (["surprise"] if args.surprise else [])
    for rep in range(args.reps):
        k = rep % len(modes)
        for mode in modes[k:] + modes[:k]:  # rotated: A B C, B C A, ...
            if mode != "surprise":
                rows.append(run_mode(mode, cf, val_idxs, args, st, floor))
            elif (res := run_surprise(cf, val_idxs, args, st)) is None:
                surprise = "not installed"
            else:
                rows.append(res)
    rows = merge_reps(rows)
    peak = ("peak RSS per mode (data set included)" if reset_peak_rss() else
            "peak RSS so far (this system does not let VmHWM be reset: cumulative)")
    print(f"\nnoise floor {floor:.4f}; load at the end {os.getloadavg()[0]:.2f}; "
          f"{args.reps} rep(s) per mode; {peak}")
    print(summary(rows, floor, surprise))
    print(time_to_target(rows, floor, args.target))
    return 0


def time_to_target(rows: list[dict], floor: float, targets: list[float]) -> str:
    """Per mode and target: the seconds of training (epochs summed) until validation MSE
    first reached `target` x the noise floor in each rep, or "not reached"; and the best
    MSE it got to."""
    head = " | ".join(f"s to <= {t:.2f}x ({t * floor:.4f})" for t in targets)
    lines = [f"\ntime to validation MSE within a factor of the noise floor ({floor:.4f}), each rep:",
             f"| mode | {head} | best val MSE (x floor) |",
             "|---|" + "---|" * len(targets) + "---:|"]
    for r in rows:
        cells = [", ".join(next((f"{t:.1f}" for t, mse in curve if mse <= goal * floor),
                                "not reached") for curve in r["curves"]) for goal in targets]
        best = min(mse for curve in r["curves"] for _, mse in curve)
        lines.append(f"| {r['mode']} | {' | '.join(cells)} | {best:.4f} ({best / floor:.3f}x) |")
    return "\n".join(lines)


def merge_reps(rows: list[dict]) -> list[dict]:
    """One row per mode: every rep's epochs, median ratings/s, the last MSE, the largest peak."""
    out = {}
    for r in rows:
        m = out.setdefault(r["mode"], {**r, "epochs": [], "rs": [], "curves": []})
        m["epochs"] += r["epochs"]
        m["curves"].append(r["curve"])
        m["rs"].append(r["ratings_s"])
        m["mse"], m["peak_mb"] = r["mse"], max(m["peak_mb"], r["peak_mb"])
    for m in out.values():
        m["ratings_s"] = statistics.median(m.pop("rs"))
    return list(out.values())


if __name__ == "__main__":
    sys.exit(main())
