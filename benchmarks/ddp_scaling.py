"""Scaling of distributed `fit`: 1 process vs 2 processes (gloo, CPU) at the same global batch.

    python benchmarks/ddp_scaling.py [--epochs 2] [--bs 64,512] [--lr 1e-2]

For each per-rank batch size b it trains lesson 5's EmbeddingDotBias (50 factors) on the 2016
ml-latest-small ratings (80,004 training, 20,000 validation) with Adam and a fixed seed:

  * 1 process, batch 2b, 1 thread     (`python benchmarks/ddp_scaling.py --worker-bs ...`)
  * with --threads2: 1 process, batch 2b, OMP_NUM_THREADS=2 (2 cores without DDP)
  * 2 processes, batch b each, 1 thread each (`torchrun --nproc_per_node 2 ...`, 127.0.0.1)

All make the same updates from the same initial weights (DDP averages the ranks' gradients),
so their validation MSE must agree to float precision; only the time differs. Reports seconds
per epoch (training + validation, mean over the epochs after the first), the speedup over
1 process x 1 thread, and the final val MSE.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from problem import DotBias, load_ratings  # noqa: E402

from minifast import ColumnarModelData, fit, get_cv_idxs  # noqa: E402
from minifast.runtime.ranks import is_main_process  # noqa: E402


def worker(args) -> None:
    """One training run (one rank of it under torchrun); rank 0 writes the result as JSON."""
    cats, y, src = load_ratings()
    n_users, n_items = int(cats[:, 0].max()) + 1, int(cats[:, 1].max()) + 1
    md = ColumnarModelData.from_arrays(".", get_cv_idxs(len(y)), cats, y, bs=args.worker_bs,
                                       seed=0)
    torch.manual_seed(0)
    model = DotBias(n_users, n_items, 50)
    opt = torch.optim.Adam(model.parameters(), args.lr, weight_decay=1e-4)
    res = fit(model, md, args.epochs, opt, F.mse_loss, verbose=False)
    if is_main_process():
        Path(args.out).write_text(json.dumps({
            "src": src, "times": [h["time"] for h in res.history], "val_mse": res[0],
            "steps": res.history[0]["iteration"], "n_trn": md.trn_dl.n,
        }))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(procs: int, bs: int, threads: int, args) -> dict:
    """Launch one configuration in fresh processes; return rank 0's JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "res.json"
        tail = [str(Path(__file__).resolve()), "--worker-bs", str(bs), "--out", str(out),
                "--epochs", str(args.epochs), "--lr", str(args.lr)]
        if procs == 1:
            cmd = [sys.executable, *tail]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                   "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *tail]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, env=env, check=True)
        return json.loads(out.read_text())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bs", default="64,512", help="per-rank batch sizes, comma-separated")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--threads2", action="store_true", help="also 1 process with 2 threads")
    ap.add_argument("--worker-bs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_bs:
        return worker(args)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.epochs} epochs, "
          f"Adam lr {args.lr}")
    print(f"{'procs':>5} {'threads':>7} {'bs/rank':>7} {'global':>6} {'steps':>5} "
          f"{'s/epoch':>8} {'speedup':>7} {'val MSE':>9}")
    for b in (int(s) for s in args.bs.split(",")):
        base = None
        configs = [(1, 2 * b, 1), *([(1, 2 * b, 2)] if args.threads2 else []), (2, b, 1)]
        for procs, bs, threads in configs:
            r = run(procs, bs, threads, args)
            later = r["times"][1:] or r["times"]
            t = statistics.mean(later)
            base = base or t
            print(f"{procs:>5} {threads:>7} {bs:>7} {2 * b:>6} {r['steps']:>5} {t:>8.2f} "
                  f"{base / t:>6.2f}x {r['val_mse']:>9.5f}", flush=True)
    print(f"data: {r['src']} ({r['n_trn']} training rows)")


if __name__ == "__main__":
    main()
