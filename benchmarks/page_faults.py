"""Page faults per step: glibc's malloc as it comes against `minifast.keep_freed_memory`.

    python benchmarks/page_faults.py [--reps 5] [--bs 64] [--loops lean minifast]

One epoch of collab_speed.py's problem (ml-latest-small, EmbeddingDotBias with 50 factors,
Adam lr 1e-2, L2 1e-4), each run in a fresh process after one untimed warm-up epoch, for
every combination of:

- the loop: `lean` (the hand-written loop of collab_speed.py) and `minifast`
  (`get_learner(...).fit(...)`);
- Adam: `default` (torch's for-loop Adam, no flush-to-zero) and `fused` (Adam(fused=True)
  with denormals flushed on every thread);
- malloc: `glibc` (as the C library sets itself up: adaptive thresholds) and `kept`
  (`minifast.keep_freed_memory()`, what `fit` does by default on the CPU).

It prints, per combination, the median over the interleaved reps of µs per step, the minor
page faults per step (`getrusage` over the timed epoch: each is a 4 kB page the kernel had to
hand back), and the range of both over the reps. Threads: 2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from collab_speed import DATA, spawn  # noqa: E402

ADAM = ("default", "fused")
MALLOC = ("glibc", "kept")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--loops", nargs="+", choices=("lean", "minifast"), default=["lean", "minifast"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=DATA)
    args = ap.parse_args(argv)
    combos = list(itertools.product(args.loops, ADAM, MALLOC))
    results = {c: [] for c in combos}
    t0 = time.perf_counter()
    for rep in range(args.reps):
        k = rep % len(combos)  # rotate the order from rep to rep
        for loop, adam, mall in combos[k:] + combos[:k]:
            r = spawn(loop, adam, args.bs, args.threads, 1, args.data, keep=mall == "kept")
            results[loop, adam, mall].append(r)
        print(f"rep {rep + 1}/{args.reps} done ({time.perf_counter() - t0:.0f} s; load "
              f"{os.getloadavg()[0]:.2f})", file=sys.stderr)
    r0 = next(iter(results.values()))[0]
    print(f"data: {r0['src']}; torch {r0['torch']}, threads {r0['threads']}, {os.cpu_count()} "
          f"cores; bs {args.bs}; one process per run, 1 warm-up epoch; {args.reps} interleaved "
          f"reps, medians; load average at the end {os.getloadavg()[0]:.2f}")
    print("| loop | Adam | malloc | µs/step | range | page faults/step | range | val MSE |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (loop, adam, mall), rs in results.items():
        us = [r["seconds"] / r["steps"] * 1e6 for r in rs]
        pf = [r["minflt"] / r["steps"] for r in rs]
        print(f"| {loop} | {adam} | {mall} | {statistics.median(us):,.0f} | {min(us):,.0f}-"
              f"{max(us):,.0f} | {statistics.median(pf):,.1f} | {min(pf):,.1f}-{max(pf):,.1f} | "
              f"{statistics.median(r['mse'] for r in rs):.4f} |")


if __name__ == "__main__":
    main()
