"""Where one epoch's time goes: torch.profiler over `learn.fit` (lesson 5's problem, bs=64).

    python benchmarks/profile_epoch.py [--bs 64] [--sparse] [--rows 14]

ml-latest-small-2016, EmbeddingDotBias (50 factors), minifast's defaults (fused Adam, denormals
flushed), constant LR 1e-2, L2 1e-4, one epoch, after one warm-up epoch. Prints the wall time
(with and without the profiler) and the operators sorted by their own CPU time: what is model
math (forward, backward, optimiser) and what is not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collab_speed import setup  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--sparse", action="store_true")
    ap.add_argument("--rows", type=int, default=14)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    cf, val_idxs, src = setup(args.bs, args.threads, "ml-latest-small-2016")

    def learner():
        torch.manual_seed(0)
        return cf.get_learner(50, val_idxs, args.bs, seed=0, sparse=args.sparse)

    learner().fit(1e-2, 1, wds=1e-4, verbose=False, progress=False)  # warm-up
    learn = learner()
    t = time.perf_counter()
    learn.fit(1e-2, 1, wds=1e-4, verbose=False, progress=False)
    plain = time.perf_counter() - t
    learn = learner()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        learn.fit(1e-2, 1, wds=1e-4, verbose=False, progress=False)
        profiled = time.perf_counter() - t
    print(f"data: {src}; bs {args.bs}; {'sparse, LazyAdam' if args.sparse else 'dense, fused Adam'}; "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"one epoch: {plain:.3f} s ({profiled:.3f} s under the profiler)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
