"""Where sparse embedding gradients beat dense fused Adam: step time over table and batch sizes.

    python benchmarks/sparse_crossover.py [--reps 3] [--threads 1] [--steps 40] [--quick]

One training step (forward, backward, optimiser step) of `EmbeddingDotBias` (50 factors) on
user/item tables of five sizes, from lesson 5's (671 x 9,066: 0.5M parameters) to
MovieLens-25M's (162,541 x 59,047: 11.3M), at batch sizes 64, 1,024 and 8,192, with

- `dense`: dense gradients, torch's fused Adam over the whole tables (get_learner's choice
  for small tables);
- `sparse`: sparse gradients, `minifast.LazyAdam`'s row-wise step (only the batch's rows).

Batches are drawn with power-law popularity (rank ** -0.8), fresh rows every step, so the
tables' rows come from memory as they do in an epoch. Per cell: the median ms per step of
each rep (after 3 warm-up steps), dense and sparse interleaved, the median of the reps and
sparse / dense. `minifast.prefer_sparse` (what `get_learner(sparse="auto")` asks) is printed
beside each cell, so the rule can be checked against the measurement it was set from.
`--quick`: the smallest tables at bs 64 only (a smoke run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from minifast import LazyAdam, prefer_sparse, sparse_embeddings
from minifast.collab.models import EmbeddingDotBias

TABLES = ((671, 9_066), (6_040, 3_706), (20_000, 10_000), (65_016, 23_618), (162_541, 59_047))
BATCHES = (64, 1_024, 8_192)


def powerlaw(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """`size` ids in [0, n) with probability proportional to rank ** -0.8."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -0.8
    return torch.as_tensor(rng.choice(n, size=size, p=w / w.sum()))


def ms_per_step(mode: str, n_users: int, n_items: int, batches, bs: int) -> float:
    """Median ms of one step of `mode` over `batches` (the first 3 steps are warm-up)."""
    torch.manual_seed(0)
    model = sparse_embeddings(EmbeddingDotBias(50, n_users, n_items, 0.0, 5.5), mode == "sparse")
    opt = (LazyAdam(model.parameters(), 5e-3) if mode == "sparse"
           else torch.optim.Adam(model.parameters(), 5e-3, fused=True))
    users, items, y = batches
    times = []
    for k in range(len(y) // bs):
        s = slice(k * bs, (k + 1) * bs)
        t = time.perf_counter()
        loss = F.mse_loss(model.score(users[s], items[s]), y[s])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[3:]) * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40, help="steps per measurement (bs 64, 1024: twice)")
    ap.add_argument("--quick", action="store_true", help="smallest tables, bs 64 only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.2f}; {args.reps} reps interleaved, {args.steps} steps each")
    print("| users x items | params | bs | dense ms/step | sparse ms/step | sparse / dense | prefer_sparse |")
    print("|---|---:|---:|---:|---:|---:|---|")
    rng = np.random.default_rng(0)
    for n_users, n_items in TABLES[:1] if args.quick else TABLES:
        for bs in BATCHES[:1] if args.quick else BATCHES:
            n = bs * (args.steps if bs >= 8192 else 2 * args.steps)
            batches = (powerlaw(n_users, n, rng), powerlaw(n_items, n, rng), torch.rand(n) * 4 + 1)
            runs: dict[str, list[float]] = {"dense": [], "sparse": []}
            for rep in range(args.reps):
                for mode in (("dense", "sparse") if rep % 2 == 0 else ("sparse", "dense")):
                    runs[mode].append(ms_per_step(mode, n_users, n_items, batches, bs))
            d, s = statistics.median(runs["dense"]), statistics.median(runs["sparse"])
            model = EmbeddingDotBias(50, n_users, n_items, 0.0, 5.5)
            params = sum(p.numel() for p in model.parameters())
            print(f"| {n_users:,} x {n_items:,} | {params / 1e6:.2f}M | {bs:,} | {d:.3f} "
                  f"({min(runs['dense']):.3f}-{max(runs['dense']):.3f}) | {s:.3f} "
                  f"({min(runs['sparse']):.3f}-{max(runs['sparse']):.3f}) | {s / d:.2f} | "
                  f"{prefer_sparse(model, bs, 'cpu')} |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
