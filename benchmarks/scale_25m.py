"""End to end at MovieLens-25M scale on synthetic ratings: time and peak memory per stage.

    python benchmarks/scale_25m.py [--scale 1.0] [--epochs 1] [--bs 8192] [--modes dense sparse]

A ratings frame shaped like MovieLens 25M (162,541 users, 59,047 items, 25,000,095 ratings;
`--scale` shrinks all three for a quick run) from `synthetic_ratings` (low rank + noise,
power-law popularity, with its exact noise floor), then: frame -> CollabFilterDataset
(vectorised id mapping) -> `get_cv_idxs` split -> `get_learner` (EmbeddingDotBias, 50
factors) -> `fit` at bs=8192 with constant LR 5e-3, for each mode (`dense`: fused Adam;
`sparse`: `get_learner(sparse=True)`, LazyAdam) -> `predict` on the validation rows. Each
stage prints its wall time, the process's resident memory after it and the peak so far
(VmHWM). Validation MSE is compared with the noise floor (the best any model can do).
Threads: 2.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = (162_541, 59_047, 25_000_095)


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--bs", type=int, default=8192)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--wds", type=float, default=0.0)
    ap.add_argument("--emb-l2", type=float, default=None,
                    help="per-rating L2 on the embeddings used (get_learner(emb_l2=...))")
    ap.add_argument("--one-cycle", action="store_true",
                    help="one cycle over all epochs (use_clr_beta=(10, 10)) instead of a constant LR")
    ap.add_argument("--modes", nargs="+", choices=("dense", "sparse"), default=["dense", "sparse"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from minifast import get_cv_idxs
    from minifast.collab import CollabFilterDataset
    from minifast.collab.synthetic import synthetic_ratings

    n_users, n_items, n = (max(2, int(round(v * args.scale))) for v in SHAPE)
    print(f"MovieLens-25M-shaped synthetic set x{args.scale}: {n_users:,} users, {n_items:,} "
          f"items, {n:,} ratings; bs {args.bs}; torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores; start RSS {vm_mb('VmRSS'):.0f} MB")
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

    results = {}
    for mode in args.modes:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        learn = cf.get_learner(50, val_idxs, args.bs, seed=0, sparse=mode == "sparse",
                               emb_l2=args.emb_l2)
        st(f"{mode}: get_learner (data + model + optimiser)", t0,
           f"{type(learn.opt).__name__}, {sum(p.numel() for p in learn.model.parameters()):,} params")
        t0 = time.perf_counter()
        sched = {"cycle_len": args.epochs, "use_clr_beta": (10, 10)} if args.one_cycle else {}
        res = learn.fit(args.lr, 1 if args.one_cycle else args.epochs, wds=args.wds or None,
                        verbose=False, progress=False, **sched)
        per_epoch = ", ".join(f"{h['time']:.1f}s ({h['val_loss']:.4f})" for h in res.history)
        st(f"{mode}: fit {args.epochs} epoch(s)", t0,
           f"val MSE {res[0]:.4f} (floor {floor:.4f}, +{res[0] - floor:.4f}); epochs {per_epoch}; "
           f"{res.state.iteration / sum(h['time'] for h in res.history):.0f} steps/s")
        t0 = time.perf_counter()
        preds = learn.predict()
        mse = float(np.mean((preds.reshape(-1) - learn.data.val_y.reshape(-1)) ** 2))
        st(f"{mode}: predict (validation)", t0, f"{len(preds):,} predictions, MSE {mse:.4f}")
        results[mode] = res[0]
        del learn, res, preds
        gc.collect()
    print(f"\npeak RSS {vm_mb('VmHWM'):,.0f} MB; noise floor {floor:.4f}; "
          + "; ".join(f"{m}: val MSE {v:.4f} ({v / floor:.3f}x floor)" for m, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
