"""Why dense Adam over embeddings is slow on CPU: implementation x flush-to-zero x threads.

    python benchmarks/adam_cpu.py [--reps 3] [--epochs 3] [--bs 64] [--threads 2]

A lean loop (the one in collab_speed.py) trains lesson 5's EmbeddingDotBias (50 factors,
ml-latest-small-2016, Adam lr 1e-2, L2 1e-4, bs 64) for `--epochs` epochs, timing each epoch,
for every combination of:

- the Adam implementation: `forloop` (torch's default on CPU: ~a dozen separate ops per
  parameter tensor), `foreach` (the same ops over the list of tensors), `fused` (one kernel);
  and `lazy`: sparse embedding gradients with minifast.LazyAdam (only the batch's rows);
- flush-to-zero: `off`; `main`: `torch.set_flush_denormal(True)` called once the OpenMP pool
  is running (what a user writes: the pool's worker threads keep computing with denormals);
  `all`: `minifast.flush_denormal()` (every intra-op thread, as `fit` does by default).

After each epoch (outside the timing) it counts the denormal floats among the weights and
Adam's moments. Every variant runs in its own process; reps are interleaved. The table gives
median milliseconds per step for each epoch and the validation MSE after the last.
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
IMPLS = ("forloop", "foreach", "fused", "lazy")
FTZ = ("off", "main", "all")


def denormal_fraction(model, opt) -> float:
    import torch

    tiny = torch.finfo(torch.float32).tiny
    sub = tot = 0
    for p in model.parameters():
        st = opt.state.get(p, {})
        for t in (p.detach(), st.get("exp_avg"), st.get("exp_avg_sq")):
            if t is not None:
                a = t.abs()
                sub += int(((a > 0) & (a < tiny)).sum())
                tot += t.numel()
    return sub / max(tot, 1)


def run_one(impl: str, ftz: str, epochs: int, bs: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from collab_speed import model_and_opt, setup, validate

    from minifast import LazyAdam, flush_denormal, sparse_embeddings

    cf, val_idxs, src = setup(bs, threads, "ml-latest-small-2016")
    md = cf.get_data(val_idxs, bs, seed=0)
    cats, _, y = md.trn_dl.tensors
    vcats, _, vy = md.val_dl.tensors
    model, _ = model_and_opt(cf, "default", 1e-2, 1e-4)  # also starts the OpenMP pool
    if impl == "lazy":
        sparse_embeddings(model)
        opt = LazyAdam(model.parameters(), 1e-2, weight_decay=1e-4)
    else:
        kw = {"foreach": {"forloop": False, "foreach": True}[impl]} if impl != "fused" else {"fused": True}
        opt = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-4, **kw)
    if ftz == "main":
        torch.set_flush_denormal(True)
    times, fracs = [], []
    with flush_denormal(ftz == "all"):
        for ep in range(epochs):
            perm = md.trn_dl.order(ep)
            t0 = time.perf_counter()
            n = 0
            for idx in perm.split(bs):
                loss = F.mse_loss(model(cats[idx]), y[idx])
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss.item()
                n += 1
            times.append((time.perf_counter() - t0) / n * 1e3)
            fracs.append(denormal_fraction(model, opt))
        mse = validate(model, vcats, vy, bs)
    return {"impl": impl, "ftz": ftz, "ms_per_step": times, "denormal": fracs, "mse": mse,
            "src": src, "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--ftz", nargs="+", choices=FTZ, default=list(FTZ))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_one(*args.worker, args.epochs, args.bs, args.threads)))
        return
    variants = [(i, f) for i in args.impls for f in args.ftz]
    runs = []
    for rep in range(args.reps):
        k = rep % len(variants)
        for impl, ftz in variants[k:] + variants[:k]:
            cmd = [sys.executable, __file__, "--worker", impl, ftz, "--epochs", str(args.epochs),
                   "--bs", str(args.bs), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"rep {rep + 1}/{args.reps} (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    r0 = runs[0]
    print(f"data: {r0['src']}; bs {args.bs}; torch {r0['torch']}, threads {r0['threads']}, "
          f"{os.cpu_count()} cores; median of {args.reps} interleaved reps; load at the end "
          f"{os.getloadavg()[0]:.2f}")
    head = " | ".join(f"ms/step ep{e + 1}" for e in range(args.epochs))
    print(f"| Adam | flush-to-zero | {head} | denormal share after each epoch | val MSE |")
    print("|---|---|" + "---:|" * args.epochs + "---|---:|")
    for impl, ftz in variants:
        rs = [r for r in runs if (r["impl"], r["ftz"]) == (impl, ftz)]
        eps = [statistics.median(r["ms_per_step"][e] for r in rs) for e in range(args.epochs)]
        fr = " / ".join(f"{100 * f:.1f}%" for f in rs[0]["denormal"])
        print(f"| {impl} | {ftz} | " + " | ".join(f"{t:.3f}" for t in eps)
              + f" | {fr} | {statistics.median(r['mse'] for r in rs):.4f} |")


if __name__ == "__main__":
    main()
