"""minifast's get_learner().fit() against a lean hand-written loop and a torch DataLoader loop.

    python benchmarks/collab_speed.py [--reps 9] [--bs 64 4096] [--settings default fused sparse]

One epoch of issue 6's problem: ml-latest-small as GroupLens distributes it today (the
2018-09-26 release, 100,836 ratings; `--data ml-latest-small-2016` for the 100,004 ratings lesson
5 used), validation = get_cv_idxs (20%), EmbeddingDotBias with 50 factors, constant LR 1e-2, L2 weight decay
1e-4, then validation in batches of 2*bs. The same data, split, model class and initial
weights (seeded), optimiser and batch size for the three loops:

- minifast:   cf.get_learner(50, val_idxs, bs, ...).fit(1e-2, 1, wds=1e-4)
- lean:       a shuffled permutation (the very one minifast's loader uses, so the two compute
              the same thing), `cats[idx]`, forward, backward, step -- the fastest loop a
              careful user writes by hand
- dataloader: torch.utils.data.DataLoader(TensorDataset(cats, y), batch_size=bs, shuffle=True)

Settings (`--settings`):

- default: torch.optim.Adam as torch builds it on CPU (for-loop kernels), no flush-to-zero,
  malloc as glibc sets it; minifast with `opt_fn=optim.Adam, fused=False` and
  `fit(..., flush_denormal=False, keep_freed_memory=False)`
- fused:   Adam(fused=True), denormals flushed on every intra-op thread
  (minifast.flush_denormal) and freed buffers kept in the heap (minifast.keep_freed_memory)
  -- minifast's *defaults*, nothing passed; the lean and DataLoader loops get the same two
  settings, so the ratio is the loop's own cost
- sparse:  sparse embedding gradients with minifast.LazyAdam -- get_learner(sparse=True); CPU
  settings as in `fused`

Every run is a fresh subprocess (so its peak RSS, VmHWM, is its own) that first trains one
untimed warm-up epoch of the same loop on a fresh model (`--warmup`); with `--in-process` all
runs share this process instead (no per-loop RSS, but none of the process-to-process spread
of a fresh interpreter's first epochs, which on this 2-core VM is larger than the
differences measured; and malloc's thresholds, once a fused or sparse run has set them, stay
set for the default runs too). Runs are interleaved:
rep r runs the loops in a rotated order, every setting and batch size in turn. The table
gives medians over reps: microseconds per step (wall time of train + validation / steps),
their interquartile range and full range over the reps (on a shared 2-core VM the spread is
often as large as the differences between loops: read the ratios with it), ratings/s
(training ratings per second), epoch seconds, peak RSS and validation MSE, and each loop's
time as a ratio to the lean loop's (target for minifast: <= 1.10), twice: the ratio of the
medians, and the median (with IQR) of the paired ratios -- each rep's run over the lean run
of the same rep, which ran next to it, so that load drifting between reps cancels; that is
the figure to claim a cell with. Threads: 2
(torch.set_num_threads(2) in every run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the data set issue 6 measured on; each name is a folder of ../shared/data/movielens
DATA = "ml-latest-small"
#: the shape of each data set, for the synthetic stand-in when ../shared is absent
SHAPES = {"ml-latest-small": (610, 9724, 100_836), "ml-latest-small-2016": (671, 9066, 100_004)}
LOOPS = ("minifast", "lean", "dataloader")
SETTINGS = ("default", "fused", "sparse")


def vm_kb(key: str) -> int:
    """A `Vm*` line of /proc/self/status in kB (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def setup(bs: int, threads: int, data: str = DATA):
    """The shared problem: dataset and split (`data` names a folder of ../shared)."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    import pandas as pd
    from problem import SHARED

    from minifast import get_cv_idxs
    from minifast.collab import CollabFilterDataset

    csv = SHARED / data / "ratings.csv"
    if csv.exists():
        df, src = pd.read_csv(csv), str(csv)
    else:
        from minifast.collab.synthetic import synthetic_ratings

        shape = SHAPES.get(data, SHAPES[DATA])
        df, _ = synthetic_ratings(*shape, seed=0)
        src = f"synthetic_ratings{shape} ({csv} not found)"
    cf = CollabFilterDataset.from_data_frame(".", df, "userId", "movieId", "rating")
    val_idxs = get_cv_idxs(cf.n)
    return cf, val_idxs, src


def model_and_opt(cf, setting: str, lr: float, wd: float):
    """The lean and DataLoader loops' model (same class and init as minifast's) and optimiser."""
    import torch

    from minifast import LazyAdam, sparse_embeddings
    from minifast.collab import EmbeddingDotBias

    torch.manual_seed(0)
    model = EmbeddingDotBias(50, cf.n_users, cf.n_items, cf.min_score, cf.max_score)
    if setting == "sparse":
        sparse_embeddings(model)
        return model, LazyAdam(model.parameters(), lr, weight_decay=wd)
    kw = {"fused": True} if setting == "fused" else {}
    return model, torch.optim.Adam(model.parameters(), lr, weight_decay=wd, **kw)


def validate(model, cats, y, bs: int) -> float:
    import torch
    import torch.nn.functional as F

    model.eval()
    tot = 0.0
    with torch.no_grad():
        for j in range(0, len(y), 2 * bs):
            tot += F.mse_loss(model(cats[j : j + 2 * bs]), y[j : j + 2 * bs], reduction="sum").item()
    model.train()
    return tot / len(y)


def run_one(loop: str, setting: str, bs: int, threads: int, lr: float = 1e-2,
            wd: float = 1e-4, warmup: int = 1, data: str = DATA, keep: bool | None = None) -> dict:
    """One epoch of one loop in this process, after `warmup` untimed epochs of the same loop
    (on a fresh model each: the first run in a process pays one-off costs -- allocator,
    first kernels -- that would otherwise dominate an epoch of 20 steps at bs=4096).
    `keep` overrides whether malloc keeps freed memory (default: as `fit` would, except in
    the `default` setting); it also counts the minor page faults of the timed epoch."""
    import resource

    import torch
    import torch.nn.functional as F

    from minifast import flush_denormal, keep_freed_memory

    cf, val_idxs, src = setup(bs, threads, data)
    md = cf.get_data(val_idxs, bs, seed=0)
    trn_cats, _, trn_y = md.trn_dl.tensors
    val_cats, _, val_y = md.val_dl.tensors
    rss_before = vm_kb("VmRSS")
    fast = setting != "default"  # minifast's CPU defaults: flush-to-zero, malloc keeps memory
    keep = fast if keep is None else keep

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def once():
        if loop == "minifast":
            torch.manual_seed(0)
            kw = {"opt_fn": torch.optim.Adam, "fused": False} if setting == "default" else {}
            learn = cf.get_learner(50, val_idxs, bs, seed=0, sparse=setting == "sparse", **kw)
            f0, t0 = faults(), time.perf_counter()
            res = learn.fit(lr, 1, wds=wd, progress=False, verbose=False,
                            flush_denormal=fast, keep_freed_memory=keep)
            return time.perf_counter() - t0, faults() - f0, res.state.iteration, res[0]
        model, opt = model_and_opt(cf, setting, lr, wd)
        if loop == "lean":
            perm = md.trn_dl.order(0)  # the permutation minifast's loader uses for epoch 0
            batches = ((trn_cats[idx], trn_y[idx]) for idx in perm.split(bs))
        else:
            g = torch.Generator().manual_seed(0)
            ds = torch.utils.data.TensorDataset(trn_cats, trn_y)
            batches = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, generator=g)
        keep_freed_memory(keep)  # what fit does first
        with flush_denormal(fast):
            f0, t0 = faults(), time.perf_counter()
            steps = 0
            for xb, yb in batches:
                loss = F.mse_loss(model(xb), yb)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss.item()  # what every loop does to log its loss: one host sync per step
                steps += 1
            mse = validate(model, val_cats, val_y, bs)
            return time.perf_counter() - t0, faults() - f0, steps, mse

    for _ in range(warmup):
        once()
    dt, minflt, steps, mse = once()
    return {"loop": loop, "setting": setting, "bs": bs, "seconds": dt, "steps": steps,
            "minflt": minflt, "malloc": "kept" if keep else "glibc",
            "rows": len(trn_y), "mse": mse, "peak_rss_mb": vm_kb("VmHWM") / 1024,
            "rss_before_mb": rss_before / 1024, "src": src, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "warmup": warmup}


def spawn(loop: str, setting: str, bs: int, threads: int, warmup: int, data: str,
          keep: bool | None = None) -> dict:
    """`run_one` in a fresh process; returns its result."""
    cmd = [sys.executable, __file__, "--worker", loop, setting, str(bs), str(threads), str(warmup),
           "--data", data, "--keep", {None: "auto", True: "1", False: "0"}[keep]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile) of `xs` (inclusive method; all equal for one)."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def paired_ratios(rows: list[dict], lean: list[dict]) -> list[float]:
    """Each rep's time over the lean loop's time in the same rep (the two ran back to back,
    so load that drifts between reps cancels)."""
    by_rep = {r["rep"]: r["seconds"] for r in lean}
    return [r["seconds"] / by_rep[r["rep"]] for r in rows if r.get("rep") in by_rep]


def table(results: list[dict], settings, sizes) -> str:
    lines = [
        "| setting | bs | loop | µs/step | IQR | range | page faults/step | ratings/s | epoch s "
        "| peak RSS MB | val MSE | × lean | paired × lean (IQR) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setting in settings:
        for bs in sizes:
            rows = {lp: [r for r in results if (r["loop"], r["setting"], r["bs"]) == (lp, setting, bs)]
                    for lp in LOOPS}
            lean = statistics.median(r["seconds"] for r in rows["lean"])
            for lp in LOOPS:
                rs = rows[lp]
                sec = statistics.median(r["seconds"] for r in rs)
                per_step = [r["seconds"] / r["steps"] * 1e6 for r in rs]
                q1, _, q3 = quartiles(per_step)
                pr = paired_ratios(rs, rows["lean"])
                p1, p2, p3 = quartiles(pr) if pr else (float("nan"),) * 3
                lines.append(
                    f"| {setting} | {bs} | {lp} | {sec / rs[0]['steps'] * 1e6:,.0f} | "
                    f"{q1:,.0f}-{q3:,.0f} | {min(per_step):,.0f}-{max(per_step):,.0f} | "
                    f"{statistics.median(r['minflt'] / r['steps'] for r in rs):,.1f} | "
                    f"{rs[0]['rows'] / sec:,.0f} | {sec:.2f} | "
                    f"{_rss(rs)} | "
                    f"{statistics.median(r['mse'] for r in rs):.4f} | {sec / lean:.3f} | "
                    f"{p2:.3f} ({p1:.3f}-{p3:.3f}) |")
    return "\n".join(lines)


def _rss(rs: list[dict]) -> str:
    """Median peak RSS in MB, or a dash for in-process runs (one shared process's peak)."""
    if any(r.get("in_process") for r in rs):
        return "—"
    return f"{statistics.median(r['peak_rss_mb'] for r in rs):.0f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--bs", type=int, nargs="+", default=[64, 4096])
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=DATA, help=f"folder of ../shared/data/movielens (default {DATA})")
    ap.add_argument("--json", type=Path, default=None, help="also write every run here")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed epochs before the timed one, in each process (default 1)")
    ap.add_argument("--in-process", action="store_true",
                    help="run every loop in this one process, interleaved, instead of one "
                         "process per run: steadier ratios, no per-loop peak RSS")
    ap.add_argument("--worker", nargs=5, metavar=("LOOP", "SETTING", "BS", "THREADS", "WARMUP"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--keep", choices=("auto", "0", "1"), default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        loop, setting, bs, threads, warmup = args.worker
        keep = {"auto": None, "1": True, "0": False}[args.keep]
        print(json.dumps(run_one(loop, setting, int(bs), int(threads), warmup=int(warmup),
                                 data=args.data, keep=keep)))
        return
    results = []
    t0 = time.perf_counter()
    for rep in range(args.reps):
        order = LOOPS[rep % 3:] + LOOPS[: rep % 3]  # rotate: A B C, B C A, C A B, ...
        for setting in args.settings:
            for bs in args.bs:
                for loop in order:
                    if args.in_process:
                        r = run_one(loop, setting, bs, args.threads, warmup=args.warmup,
                                    data=args.data)
                        results.append({**r, "in_process": True, "rep": rep})
                    else:
                        results.append({**spawn(loop, setting, bs, args.threads, args.warmup,
                                                args.data), "rep": rep})
        print(f"rep {rep + 1}/{args.reps} done ({time.perf_counter() - t0:.0f} s; load "
              f"{os.getloadavg()[0]:.2f})", file=sys.stderr)
    r0 = results[0]
    print(f"data: {r0['src']}; torch {r0['torch']}, threads {r0['threads']}, "
          f"{os.cpu_count()} cores; {args.warmup} untimed warm-up epoch(s) per run; "
          f"{'all runs in one process' if args.in_process else 'one process per run'}; "
          f"{args.reps} interleaved reps, medians; "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    print(table(results, args.settings, args.bs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
