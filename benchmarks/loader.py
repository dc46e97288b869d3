"""Cost of iterating one epoch of batches: minifast's ArrayLoader vs torch's DataLoader.

    python benchmarks/loader.py [--reps 5]

80,004 rows (cats [n, 2] int64, conts [n, 0], y [n, 1]) at bs=64, shuffled: minifast's
ArrayLoader against `torch.utils.data.DataLoader(TensorDataset(...), shuffle=True)` with the
default collate, and against one training epoch of lesson 5's EmbeddingDotBias (Adam,
fused + flush-denormal, the fast setting) over the same batches. Targets: ArrayLoader >= 20x
cheaper than DataLoader, and well under 10% of a training epoch.
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

from minifast import ArrayLoader, get_cv_idxs, split_by_idx  # noqa: E402


def epoch_time(dl) -> float:
    t0 = time.perf_counter()
    for _ in dl:
        pass
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    cats, y, src = load_ratings()
    (_, cats), (_, y) = split_by_idx(get_cv_idxs(len(y)), cats, y)
    c, conts, yy = torch.from_numpy(cats), torch.zeros(len(y), 0), torch.from_numpy(y)[:, None]
    ours = ArrayLoader(c, conts, yy, batch_size=64, shuffle=True, seed=0, device="cpu")
    theirs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(c, conts, yy),
                                         batch_size=64, shuffle=True)
    a, b = [], []
    for _ in range(args.reps):
        a.append(epoch_time(ours))
        b.append(epoch_time(theirs))
    torch.set_flush_denormal(True)
    model = DotBias(int(cats[:, 0].max()) + 1, int(cats[:, 1].max()) + 1)
    opt = make_opt(model, fast=True)
    t0 = time.perf_counter()
    for xc, _, yb in ours:
        loss = F.mse_loss(model(xc), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    train = time.perf_counter() - t0
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"data: {src}; {len(y)} training rows, bs 64, {len(ours)} batches; torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}")
    print(f"ArrayLoader epoch:           {ma * 1e3:8.1f} ms")
    print(f"torch DataLoader epoch:      {mb * 1e3:8.1f} ms   ({mb / ma:.1f}x ArrayLoader)")
    print(f"training epoch (fast Adam):  {train * 1e3:8.1f} ms   (ArrayLoader = "
          f"{100 * ma / train:.1f}% of it)")


if __name__ == "__main__":
    main()
