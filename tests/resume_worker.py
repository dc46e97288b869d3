"""A small, fully seeded training run for the checkpoint, resume and interrupt tests.

Imported by tests/test_checkpoint.py and tests/test_faults.py (in-process runs), and run as a
script so a test can kill or interrupt real training:

    python tests/resume_worker.py MODE OUT [RESUME]

MODE is one of
- `full`:   train 3 epochs uninterrupted; write OUT/result.pt.
- `crash`:  train with Checkpoint(OUT/ckpt, every_n_iters=5, keep=2); after the checkpoint at
            iteration 20 write OUT/ready, then hang in the middle of the 23rd step until killed.
- `sigint`: train with Checkpoint(OUT/ckpt) (epoch ends only); after iteration 20 write
            OUT/ready and wait for OUT/sent (the test writes it after sending SIGINT); on
            train end write OUT/train_end.json (what on_train_end saw).
- `resume`: train with Checkpoint(OUT/ckpt, every_n_iters=5, keep=2) and
            resume=RESUME (default True: the newest checkpoint in OUT/ckpt); write OUT/result.pt.

`MODE:torch` (e.g. `crash:torch`) trains from a shuffling `torch.utils.data.DataLoader`
instead of the ArrayLoader (`:torchgen`: one with its own seeded `generator`).

The model has dropout (torch RNG), the training loader shuffles with a seed drawn from torch's
RNG, and `Jitter` draws each batch's LR from numpy's and Python's global RNGs, so a resume is
only exact if every one of those states is restored.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from minifast import ArrayLoader, Callback, Checkpoint, ModelData, Recorder, fit

N_EPOCHS, N_BATCHES = 3, 15  # 240 training rows, batches of 16


class Jitter(Callback):
    """Per-batch LR noise from numpy's and Python's global RNGs."""

    def on_batch_begin(self):
        m = (0.5 + np.random.rand()) * (0.9 + 0.2 * random.random())
        for g in self.state.opt.param_groups:
            g["lr"] = 1e-2 * m


def start(mode: str, out, *extra) -> subprocess.Popen:
    """Run this file as a training process (`python resume_worker.py MODE OUT [RESUME]`), its
    output piped, for the tests that kill or interrupt real training."""
    here = Path(__file__).resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), *sys.path])}
    return subprocess.Popen([sys.executable, str(here), mode, str(out), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def build(out, opt: str = "adam", loader: str = "array"):
    """Seed every RNG, then make (model, optimiser, data) exactly as every run does.
    `loader`: "array" (ArrayLoader), "torch" (a shuffling torch DataLoader, which draws its
    order from torch's global RNG) or "torchgen" (one with its own generator)."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    g = np.random.RandomState(123)
    x = g.randn(300, 8).astype(np.float32)
    y = (x @ g.randn(8, 1) + 0.1 * g.randn(300, 1)).astype(np.float32)
    if loader == "array":
        trn = ArrayLoader(x[:240], y[:240], batch_size=16, shuffle=True)  # seed from torch's RNG
    else:
        gen = torch.Generator().manual_seed(7) if loader == "torchgen" else None
        ds = TensorDataset(torch.from_numpy(x[:240]), torch.from_numpy(y[:240]))
        trn = DataLoader(ds, batch_size=16, shuffle=True, generator=gen)
    data = ModelData(out, trn, ArrayLoader(x[240:], y[240:], batch_size=32))
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))
    if opt == "adam":
        o = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-4)
    else:
        o = torch.optim.SGD(model.parameters(), 1e-2, momentum=0.9, nesterov=True)
    return model, o, data


def train(out, callbacks=(), resume=None, opt: str = "adam", n_epochs: int = N_EPOCHS,
          jitter: bool = True, loader: str = "array", **kwargs):
    """One run (`kwargs` go to `fit`); returns (model, opt, FitResult)."""
    model, o, data = build(out, opt, loader)
    cbs = [Jitter()] if jitter else []
    res = fit(model, data, n_epochs, o, F.mse_loss, callbacks=[*cbs, *callbacks], resume=resume,
              verbose=False, progress=False, **kwargs)
    return model, o, res


def result(model, opt, recorder: Recorder, history) -> dict:
    """What two runs must agree on, bit for bit."""
    rec = recorder.state_dict()
    rec["epochs"] = _untimed(rec["epochs"])
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "opt": opt.state_dict(),
        "recorder": rec,
        "history": _untimed(history),
    }


def _untimed(rows) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def assert_same_run(a: dict, b: dict) -> None:
    """Every tensor of the model and optimiser equal (torch.equal), the same recorded losses,
    LRs and epoch rows (exact floats)."""
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"model tensor {k} differs"
    sa, sb = a["opt"]["state"], b["opt"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), f"optimiser state {i}.{k} differs"
    assert a["opt"]["param_groups"] == b["opt"]["param_groups"]
    for k in a["recorder"]:
        assert _same(a["recorder"][k], b["recorder"][k]), f"recorder {k} differs"
    assert _same(a["history"], b["history"])


def _same(x, y) -> bool:
    """Equality where NaN equals NaN (floats compared exactly)."""
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y, strict=True))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return x == y


class InterruptAfterBatch(Callback):
    """Raises KeyboardInterrupt (what Ctrl-C raises) after batch `it` (1-based)."""

    def __init__(self, it: int):
        self.it = it

    def on_batch_end(self, loss):
        if self.state.iteration == self.it:
            raise KeyboardInterrupt


def assert_resumes_exactly(run, ckpt_dir: Path, every_n_iters: int, stop_after: int) -> dict:
    """`run(callbacks, resume=None) -> result(...)` three times: uninterrupted; with a
    Checkpoint every `every_n_iters` into `ckpt_dir` and Ctrl-C after batch `stop_after`; then
    resumed from there. The resumed run must equal the uninterrupted one bit for bit (its
    result is returned)."""
    full = run([])
    try:
        run([Checkpoint(ckpt_dir, every_n_iters=every_n_iters), InterruptAfterBatch(stop_after)])
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError(f"the run was not interrupted after batch {stop_after}")
    assert_same_run(full, run([Checkpoint(ckpt_dir, every_n_iters=every_n_iters)], resume=True))
    return full


class HangMidStep(Callback):
    """Writes `ready` after the checkpoint at iteration `ready_at`, then hangs inside the step
    of batch `hang_at` (after backward, before opt.step) until the process is killed."""

    order = 100  # after Checkpoint's on_batch_end

    def __init__(self, out: Path, ready_at: int = 20, hang_at: int = 23):
        self.out, self.ready_at, self.hang_at = out, ready_at, hang_at

    def on_batch_end(self, loss):
        if self.state.iteration == self.ready_at:
            (self.out / "ready").write_text("ready")

    def on_step_begin(self):
        if self.state.iteration + 1 == self.hang_at:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # never outlive a test that forgot us
                time.sleep(0.01)
            sys.exit(3)


class WaitForSignal(Callback):
    """After iteration `at`, writes `ready` and waits until the test has sent SIGINT."""

    order = 100

    def __init__(self, out: Path, at: int = 20):
        self.out, self.at = out, at

    def on_batch_end(self, loss):
        if self.state.iteration == self.at:
            (self.out / "ready").write_text("ready")
            deadline = time.monotonic() + 60
            while not (self.out / "sent").exists() and time.monotonic() < deadline:
                time.sleep(0.01)

    def on_train_end(self):
        rec = self.state.recorder
        probe = {"interrupted": self.state.interrupted, "iteration": self.state.iteration,
                 "epoch": self.state.epoch, "recorder_iterations": rec.iterations}
        (self.out / "train_end.json").write_text(json.dumps(probe))


def main(argv: list[str]) -> None:
    """Run one MODE (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    torch.set_num_threads(1)
    mode, _, loader = argv[0].partition(":")
    loader = loader or "array"
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "ckpt"
    if mode == "full":
        model, opt, res = train(out, loader=loader)
    elif mode == "crash":
        train(out, [Checkpoint(ckpt, every_n_iters=5, keep=2), HangMidStep(out)], loader=loader)
        sys.exit(4)  # not reached: the test kills us mid-step
    elif mode == "sigint":
        train(out, [Checkpoint(ckpt), WaitForSignal(out)], loader=loader)
        sys.exit(5)  # not reached: KeyboardInterrupt propagates
    elif mode == "resume":
        resume = argv[2] if len(argv) > 2 else True
        model, opt, res = train(out, [Checkpoint(ckpt, every_n_iters=5, keep=2)], resume=resume,
                                loader=loader)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    torch.save(result(model, opt, res.recorder, res.history), out / "result.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
