"""Time to accuracy on lesson 5's problem: validation MSE against seconds of `fit`.

    python benchmarks/time_to_accuracy.py [--reps 3] [--recipes fast accurate lesson]

ml-latest-small as GroupLens distributes it today (2018-09-26, 100,836 ratings: the data set
issue 6 and Surprise's 0.784 refer to; `--data ml-latest-small-2016` for lesson 5's 2016
release), validation = get_cv_idxs (20,167 ratings), EmbeddingDotBias. Each
recipe is a `get_learner(...)` call and a `fit(...)` call (see RECIPES); minifast runs it as
written, and a lean hand-written loop runs the same thing (same model class and initial
weights, the same batches in the same order, fused Adam with denormals flushed, the same LR
schedule computed with the same formulas, validation after each epoch). Every run is its own
process; reps are interleaved. The table gives, after each epoch, the median wall-clock
seconds since `fit` began (validation included) and the validation MSE, for both loops, and
the time at which each first reached the recipe's target. Threads: 2.
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

#: name -> (target MSE, time budget s, get_learner kwargs, fit args, fit kwargs)
RECIPES = {
    # <= 0.784 in <= 1.0 s: large batches (few, cheap steps), one cycle, a high peak LR
    "fast": (0.784, 1.0,
             {"n_factors": 50, "bs": 1024, "y_range": (0, 5.5)},
             (2e-2, 1), {"wds": 1e-4, "cycle_len": 3, "use_clr_beta": (10, 10)}),
    # <= 0.730: bs 128, one 4-epoch cycle at 5e-3 with L2 2e-4 (the search is in
    # docs/performance.md); ~0.716 after the 4 epochs, about 1.3 s on 2 cores
    "accurate": (0.730, 10.0,
                 {"n_factors": 50, "bs": 128, "y_range": (0, 5.5)},
                 (5e-3, 1), {"wds": 2e-4, "cycle_len": 4, "use_clr_beta": (10, 10)}),
    # lesson 5 as written: bs 64, SGDR 1 + 2 epochs
    "lesson": (0.784, 10.0,
               {"n_factors": 50, "bs": 64},
               (1e-2, 2), {"wds": 2e-4, "cycle_len": 1, "cycle_mult": 2}),
}


def schedule(fit_args, fit_kw, n_batches: int):
    """The recipe's LR at each iteration, from minifast's pure schedule functions (what the
    lean loop uses), and the number of epochs."""
    from minifast.curves import one_cycle_mult, sgdr_mult, sum_geom

    lr, n_cycle = fit_args
    cl, cm = fit_kw.get("cycle_len"), fit_kw.get("cycle_mult", 1)
    if cl is None:
        return (lambda t: lr), n_cycle
    nb = n_batches * cl
    if "use_clr_beta" in fit_kw:
        div, pct = fit_kw["use_clr_beta"][:2]
        return (lambda t: lr * one_cycle_mult(t, nb, div, pct, cm)), sum_geom(cl, cm, n_cycle)
    return (lambda t: lr * sgdr_mult(t, nb, cm)), sum_geom(cl, cm, n_cycle)


def run_one(loop: str, name: str, threads: int, data: str) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from collab_speed import setup, validate

    from minifast import Callback, flush_denormal, keep_freed_memory

    target, budget, lkw, fargs, fkw = RECIPES[name]
    lkw = dict(lkw)
    nf, bs = lkw.pop("n_factors"), lkw.pop("bs")
    cf, val_idxs, src = setup(bs, threads, data)
    torch.manual_seed(0)
    learn = cf.get_learner(nf, val_idxs, bs, seed=0, **lkw)
    curve = []
    if loop == "minifast":
        class Curve(Callback):
            def on_epoch_end(self, vals):
                curve.append((time.perf_counter() - t0, vals[0]))

        t0 = time.perf_counter()
        learn.fit(*fargs, callbacks=[Curve()], verbose=False, progress=False, **fkw)
    else:
        model, opt, md = learn.model, learn.opt, learn.data  # the very same start
        for g in opt.param_groups:
            g["weight_decay"] = fkw.get("wds") or 0.0
        cats, _, y = md.trn_dl.tensors
        vcats, _, vy = md.val_dl.tensors
        lr_at, n_epochs = schedule(fargs, fkw, len(md.trn_dl))
        t = 0
        keep_freed_memory()  # fit's CPU defaults
        with flush_denormal():
            t0 = time.perf_counter()
            for ep in range(n_epochs):
                for idx in md.trn_dl.order(ep).split(bs):
                    for g in opt.param_groups:
                        g["lr"] = lr_at(t)
                    loss = F.mse_loss(model(cats[idx]), y[idx])
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    loss.item()
                    t += 1
                curve.append((time.perf_counter() - t0, validate(model, vcats, vy, bs)))
    return {"loop": loop, "recipe": name, "curve": curve, "src": src,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def recipe_text(name: str) -> str:
    _, _, lkw, fargs, fkw = RECIPES[name]
    lkw = dict(lkw)
    nf, bs = lkw.pop("n_factors"), lkw.pop("bs")
    extra = "".join(f", {k}={v!r}" for k, v in lkw.items())
    fa = ", ".join(repr(a) for a in fargs) + "".join(f", {k}={v!r}" for k, v in fkw.items())
    return f"cf.get_learner({nf}, val_idxs, {bs}{extra}).fit({fa})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="ml-latest-small",
                    help="folder of ../shared/data/movielens (default ml-latest-small)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_one(*args.worker, args.threads, args.data)))
        return
    runs = []
    for rep in range(args.reps):
        for name in args.recipes:
            for loop in (("minifast", "lean") if rep % 2 == 0 else ("lean", "minifast")):
                cmd = [sys.executable, __file__, "--worker", loop, name, "--threads", str(args.threads),
                       "--data", args.data]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"rep {rep + 1}/{args.reps} (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    r0 = runs[0]
    print(f"data: {r0['src']}; torch {r0['torch']}, threads {r0['threads']}, {os.cpu_count()} "
          f"cores; medians of {args.reps} interleaved reps; load at the end {os.getloadavg()[0]:.2f}")
    for name in args.recipes:
        target, budget = RECIPES[name][:2]
        print(f"\n{name}: `{recipe_text(name)}` (target MSE <= {target} within {budget:g} s)\n")
        print("| epoch | minifast s | minifast MSE | lean s | lean MSE |")
        print("|---:|---:|---:|---:|---:|")
        med = {}
        for loop in ("minifast", "lean"):
            cs = [r["curve"] for r in runs if (r["loop"], r["recipe"]) == (loop, name)]
            med[loop] = [(statistics.median(c[e][0] for c in cs), statistics.median(c[e][1] for c in cs))
                         for e in range(len(cs[0]))]
        for e, ((ts, ms), (tl, ml)) in enumerate(zip(med["minifast"], med["lean"])):
            print(f"| {e + 1} | {ts:.2f} | {ms:.4f} | {tl:.2f} | {ml:.4f} |")
        for loop in ("minifast", "lean"):
            hit = next(((t, m) for t, m in med[loop] if m <= target), None)
            best_t, best = min(med[loop], key=lambda p: p[1])[0], min(m for _, m in med[loop])
            print(f"{loop}: " + (f"MSE {hit[1]:.4f} <= {target} at {hit[0]:.2f} s "
                                 f"({'within' if hit[0] <= budget else 'OVER'} {budget:g} s)"
                                 if hit else f"target {target} not reached (best {best:.4f} at "
                                 f"{best_t:.2f} s)") + f"; whole fit {med[loop][-1][0]:.2f} s")


if __name__ == "__main__":
    main()
