"""minifast's own cost per step: the loop with (almost) no model math.

    python benchmarks/hot_path.py [--reps 9] [--package minifast]

80,000 rows (cats [n, 2], conts [n, 0], y [n, 1]) at bs=64 (1,250 steps), a model that is one
bias (its forward, backward and SGD step cost a few microseconds), so what is left is the
loop itself: the lean loop (a permutation, `cats[idx]`, forward, loss, backward, step,
`loss.item()`), minifast's `fit` (ArrayLoader, Stepper, callbacks, recorder, avg loss) and
`Learner.fit` (plus its LR schedule callback). Reps are interleaved in one process after a
warm-up; medians. The difference to the lean loop is minifast's tax per step.

`--package NAME` imports another copy of the package under that name (to compare before
and after a change: e.g. `git archive <commit> minifast | tar -x -C /tmp/old` and rename
the folder to `minifast_old`, then `PYTHONPATH=/tmp/old python benchmarks/hot_path.py
--package minifast_old`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class Bias(nn.Module):
    """A model with no math to speak of: one learnable scalar, broadcast to the batch."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, cats, conts=None):
        return self.b.expand(len(cats), 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--package", default="minifast")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    mf = importlib.import_module(args.package)
    n = 80_000
    g = torch.Generator().manual_seed(0)
    cats = torch.stack([torch.randint(0, 600, (n,), generator=g),
                        torch.randint(0, 9000, (n,), generator=g)], 1)
    y = torch.rand(n, 1, generator=g) * 4.5 + 0.5
    data = mf.ColumnarModelData.from_arrays(".", [0], cats, y,  # one validation row
                                            bs=args.bs, seed=0)
    trn_cats, _, trn_y = data.trn_dl.tensors
    sgd = lambda params: torch.optim.SGD(params, 1e-3)  # noqa: E731

    def lean():
        model = Bias()
        opt = sgd(model.parameters())
        t = time.perf_counter()
        for idx in data.trn_dl.order(0).split(args.bs):
            loss = F.mse_loss(model(trn_cats[idx]), trn_y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
        return time.perf_counter() - t

    def fit():
        model = Bias()
        opt = sgd(model.parameters())
        t = time.perf_counter()
        mf.fit(model, data, 1, opt, F.mse_loss, verbose=False, progress=False)
        return time.perf_counter() - t

    def learner():
        learn = mf.Learner(data, Bias(), opt_fn=sgd, crit=F.mse_loss)
        t = time.perf_counter()
        learn.fit(1e-3, 1, verbose=False, progress=False)
        return time.perf_counter() - t

    loops = {"lean": lean, "fit": fit, "Learner.fit": learner}
    for f in loops.values():  # warm-up
        f()
    times = {k: [] for k in loops}
    names = list(loops)
    for rep in range(args.reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(loops[name]())
    steps = len(data.trn_dl)
    med = {k: statistics.median(v) / steps * 1e6 for k, v in times.items()}
    print(f"{args.package} ({mf.__file__}); {steps} steps of bs {args.bs}; torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}; {args.reps} interleaved reps, "
          f"medians; load {os.getloadavg()[0]:.2f}")
    for k, v in med.items():
        extra = "" if k == "lean" else f"   (+{v - med['lean']:.1f} µs/step over lean)"
        print(f"{k:>12}: {v:7.1f} µs/step{extra}")


if __name__ == "__main__":
    main()
