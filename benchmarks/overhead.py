"""minifast `fit` vs a lean hand-written loop: same model, optimiser, batches; interleaved.

    python benchmarks/overhead.py [--reps 3] [--bs 64] [--epochs 1]

Each run trains a freshly initialised EmbeddingDotBias (50 factors) for one epoch on lesson 5's
80,004 training ratings and validates on the 20,000 others, with Adam (lr 1e-2, L2 1e-4). Runs
alternate A B A B ... so machine noise hits both alike. Two settings: default `torch.optim.Adam`,
and `Adam(fused=True)` with `torch.set_flush_denormal(True)`. Reports median ms/step and the
ratio minifast / lean (target: <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from problem import DotBias, load_ratings, make_opt  # noqa: E402

from minifast import ColumnarModelData, fit, get_cv_idxs  # noqa: E402


def lean_epoch(model, opt, trn, val, bs, seed):
    """The loop a careful user writes by hand: a shuffled permutation, index the tensors."""
    cats, y = trn
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    model.train()
    for i in range(0, len(y), bs):
        idx = perm[i : i + bs]
        loss = F.mse_loss(model(cats[idx]), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    model.eval()
    with torch.no_grad():
        tot = sum(F.mse_loss(model(val[0][j : j + 2 * bs]), val[1][j : j + 2 * bs]).item()
                  * len(val[1][j : j + 2 * bs]) for j in range(0, len(val[1]), 2 * bs))
    return -(-len(y) // bs), tot / len(val[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bs", type=int, default=64)
    args = ap.parse_args(argv)
    cats, y, src = load_ratings()
    n_users, n_items = int(cats[:, 0].max()) + 1, int(cats[:, 1].max()) + 1
    val_idxs = get_cv_idxs(len(y))
    md = ColumnarModelData.from_arrays(".", val_idxs, cats, y, bs=args.bs, seed=0, )
    trn = (md.trn_dl.tensors[0], md.trn_dl.tensors[2])
    val = (md.val_dl.tensors[0], md.val_dl.tensors[2])
    print(f"data: {src}; train {len(trn[1])}, valid {len(val[1])}, bs {args.bs}; "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for fast in (False, True):
        torch.set_flush_denormal(fast)
        times = {"lean": [], "minifast": []}
        mses = {"lean": [], "minifast": []}
        for rep in range(args.reps):
            for name in ("lean", "minifast") if rep % 2 == 0 else ("minifast", "lean"):
                torch.manual_seed(rep)
                model = DotBias(n_users, n_items)
                opt = make_opt(model, fast)
                t0 = time.perf_counter()
                if name == "lean":
                    steps, mse = lean_epoch(model, opt, trn, val, args.bs, rep)
                else:
                    res = fit(model, md, 1, opt, F.mse_loss, verbose=False, progress=False,
                              flush_denormal=fast)  # same numeric mode as the lean loop
                    steps, mse = res.state.iteration, res[0]
                times[name].append((time.perf_counter() - t0) / steps * 1e3)
                mses[name].append(mse)
        torch.set_flush_denormal(False)
        lean, mf = statistics.median(times["lean"]), statistics.median(times["minifast"])
        label = "fused Adam + flush-denormal" if fast else "default Adam"
        print(f"{label:>28}: lean {lean:6.3f} ms/step  minifast {mf:6.3f} ms/step  "
              f"ratio {mf / lean:5.3f}   (val MSE lean {statistics.mean(mses['lean']):.4f}, "
              f"minifast {statistics.mean(mses['minifast']):.4f})")


if __name__ == "__main__":
    main()
