"""Distributed training: sharding arithmetic in-process, and a real 2-process gloo run.

The 2-process run (torchrun, 127.0.0.1, a free port) trains the collab model with per-rank
batch b; one process with batch 2b, the same seed and the same initial weights must then give
the same losses and weights, to float tolerance (DDP averages the ranks' gradients).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import minifast.distributed as mdist
import minifast.runtime.ranks as ranks
from minifast import ArrayLoader, ModelData, fit
from minifast.distributed import _ShardSync
from minifast.runtime.modules import unwrap
from minifast.runtime.ranks import (
    all_gather_rows,
    distributed_session,
    is_launched,
    is_sharded,
    world_size,
)

HERE = Path(__file__).resolve().parent
CFG = {"n": 1001, "bs": 24, "epochs": 3, "lr": 0.02, "n_factors": 5}
# 1001 ratings: 200 validation, 801 training = 16 global batches of 48 + 33 rows (16 + 17).

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- sharding arithmetic -----------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 120), bs=st.integers(1, 9), w=st.integers(1, 4), drop_last=st.booleans(),
       epoch=st.integers(0, 3))
def test_shards_cover_each_row_once_with_equal_step_counts(n, bs, w, drop_last, epoch):
    dls = [ArrayLoader(np.arange(n), batch_size=bs, shuffle=True, seed=5, drop_last=drop_last,
                       device="cpu", rank=r, world_size=w) for r in range(w)]
    for dl in dls:
        dl.set_epoch(epoch)
    per_rank = [[b[0] for b in dl] for dl in dls]
    assert len({len(p) for p in per_rank}) == 1, "every rank must take the same number of steps"
    assert all(len(p) == len(dls[0]) for p in per_rank)
    rows = torch.cat([b for p in per_rank for b in p]) if per_rank[0] else torch.zeros(0)
    assert len(set(rows.tolist())) == len(rows), "no row twice in an epoch"
    if drop_last:
        assert len(rows) == (n // (bs * w)) * bs * w
        assert all(len(b) == bs for p in per_rank for b in p)
        return
    assert sorted(rows.tolist()) == list(range(n)), "each row exactly once per epoch"
    for step in zip(*per_rank, strict=True):
        sizes = [len(b) for b in step]
        assert max(sizes) - min(sizes) <= 1
        assert n < w or min(sizes) > 0, "no rank gets an empty batch"
    assert all(len(b) == bs for p in per_rank for b in p[:-1])
    # the global batches are those of one process with batch bs*w (except a merged tail)
    single = ArrayLoader(np.arange(n), batch_size=bs * w, shuffle=True, seed=5, device="cpu")
    single.set_epoch(epoch)
    glob = [b[0] for b in single]
    if n % (bs * w) == 0 or n % (bs * w) >= w or n < w:
        assert all(torch.equal(g, torch.cat(s))
                   for g, s in zip(glob, zip(*per_rank, strict=True), strict=True))


def test_tail_smaller_than_world_joins_last_batch():
    # 13 rows, 2 ranks of 3: 2 full global batches + 1 row; that row joins the last batch.
    dls = [ArrayLoader(np.arange(13), batch_size=3, device="cpu", rank=r, world_size=2)
           for r in range(2)]
    assert [len(dl) for dl in dls] == [2, 2]
    assert [[len(b[0]) for b in dl] for dl in dls] == [[3, 3], [3, 4]]


def test_single_process_batches_unchanged():
    dl = ArrayLoader(np.arange(10), batch_size=4, device="cpu")
    assert [b[0].tolist() for b in dl] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("n,bs,w", [(801, 24, 2), (13, 3, 2), (100, 7, 3), (9, 2, 4)])
def test_last_step_loss_weights_average_to_one(n, bs, w):
    # DDP averages gradients: sum_k w_k * mean_k / W must be the mean over the step's rows.
    dls = [ArrayLoader(np.arange(n), batch_size=bs, device="cpu", rank=r, world_size=w)
           for r in range(w)]
    for i in range(len(dls[0])):
        ws = [_ShardSync(dl)._step_weight(i) for dl in dls]
        sizes = [dl.bounds(i)[1] - dl.bounds(i)[0] for dl in dls]
        # coefficient of rank k's mean loss in the averaged gradient = its share of the rows
        assert [wk / w for wk in ws] == pytest.approx([s / sum(sizes) for s in sizes])
        assert sum(ws) == pytest.approx(w)
        if i < len(dls[0]) - 1:
            assert ws == [1.0] * w


# --- process group lifetime (one rank, in this process) ---------------------------------

@pytest.fixture
def one_rank_env(monkeypatch):
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    yield
    if dist.is_initialized():  # a failed test must not leak a group into the others
        dist.destroy_process_group()


def test_session_outside_torchrun_does_nothing(monkeypatch):
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert not is_launched()
    with distributed_session() as on:
        assert on is False and not dist.is_initialized()


def test_session_joins_and_leaves_also_on_error(one_rank_env):
    with pytest.raises(ValueError, match="boom"):
        with distributed_session(timeout=30):
            assert dist.is_initialized() and dist.get_backend() == "gloo"
            assert world_size() == 1
            raise ValueError("boom")
    assert not dist.is_initialized()


def test_session_leaves_a_users_own_group_alone(one_rank_env):
    dist.init_process_group("gloo")
    with distributed_session():
        pass
    assert dist.is_initialized(), "minifast must not destroy a group it did not create"
    ranks.destroy_distributed()
    assert dist.is_initialized()


def test_fit_distributed_true_needs_a_launch(monkeypatch, tiny_model, tiny_data):
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    opt = torch.optim.SGD(tiny_model.parameters(), 0.1)
    with pytest.raises(RuntimeError, match="torchrun"):
        fit(tiny_model, tiny_data, 1, opt, F.mse_loss, distributed=True)


def test_distributed_fit_refuses_a_loader_it_cannot_shard(monkeypatch, tiny_data):
    monkeypatch.setattr(mdist, "_auto_init", lambda distributed: True)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)))
    with pytest.raises(TypeError, match="ArrayLoader"):
        mdist.DistributedFit(None, ModelData(".", dl, tiny_data.val_dl))


def test_is_sharded():
    assert not is_sharded(ArrayLoader(np.arange(4)))
    assert is_sharded(ArrayLoader(np.arange(4), rank=1, world_size=2))
    assert not is_sharded(None)


# --- the real thing: 2 processes under torchrun ----------------------------------------

@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run tests/ddp_worker.py on 2 CPU ranks; return (output folder, [rank0, rank1], stdout)."""
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(HERE / "ddp_worker.py"), str(out), json.dumps(CFG)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:  # a hang (e.g. ranks disagreeing on steps) fails, not hangs
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        pytest.fail(f"torchrun run timed out:\n{stdout[-3000:]}")
    assert proc.returncode == 0, stdout[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, ranks, stdout


@pytest.fixture(scope="module")
def single_run(ddp_run):
    """One process, batch 2b, rank 0's shuffle seed and initial weights."""
    from ddp_worker import collab_parts, mae, rmse

    out, ranks, _ = ddp_run
    torch.manual_seed(0)
    cf, data, model = collab_parts(CFG, 2 * CFG["bs"], seed=ranks[0]["seed"])
    model.load_state_dict(torch.load(out / "init.pt", weights_only=True))
    opt = torch.optim.Adam(model.parameters(), CFG["lr"])
    res = fit(model, data, CFG["epochs"], opt, F.mse_loss, metrics=[mae, rmse], verbose=False)
    return cf, model, res, data


def test_two_ranks_equal_one_process_with_double_batch(ddp_run, single_run):
    out, ranks, _ = ddp_run
    _, model, res, _ = single_run
    for rk in ranks:  # every rank reports the same global values...
        assert [h["val_loss"] for h in rk["history"]] == [h["val_loss"] for h in ranks[0]["history"]]
        assert [h["trn_loss"] for h in rk["history"]] == [h["trn_loss"] for h in ranks[0]["history"]]
    for key in ("val_loss", "mae", "rmse", "trn_loss"):  # ...those of one process with batch 2b
        two = [h[key] for h in ranks[0]["history"]]
        one = [h[key] for h in res.history]
        np.testing.assert_allclose(two, one, rtol=2e-5, err_msg=key)
    assert ranks[0]["history"][-1]["val_loss"] < ranks[0]["history"][0]["val_loss"]
    final = torch.load(out / "final.pt", weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(final[k], v, rtol=1e-4, atol=1e-5)


def test_each_row_used_once_per_epoch_across_ranks(ddp_run):
    _, ranks, _ = ddp_run
    trn = Counter(map(tuple, ranks[0]["trn_pairs"]))
    assert len(trn) == 801 and max(trn.values()) == 1, "pairs identify rows"
    for e in range(CFG["epochs"]):
        seen = Counter(tuple(p) for rk in ranks for p in rk["pairs"][e])
        assert seen == trn, f"epoch {e}: some row used twice or not at all"
    # reshuffled each epoch, and ranks see different rows
    assert ranks[0]["pairs"][0] != ranks[0]["pairs"][1]
    assert not set(map(tuple, ranks[0]["pairs"][0])) & set(map(tuple, ranks[1]["pairs"][0]))
    # 16 full steps of 24 rows per rank, then the 33 leftover rows as 16 + 17
    assert ranks[0]["sizes"][:17] == [24] * 16 + [16]
    assert ranks[1]["sizes"][:17] == [24] * 16 + [17]


def test_ranks_count_the_same_iterations(ddp_run):
    _, ranks, _ = ddp_run
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == list(range(1, 3 * 17 + 1))
    assert ranks[0]["n_batches"] == ranks[1]["n_batches"] == [17] * 3
    assert [h["iteration"] for h in ranks[0]["history"]] == [17, 34, 51]


def test_only_rank0_prints_and_writes(ddp_run):
    out, _, stdout = ddp_run
    assert (out / "best0.pt").exists() and (out / "log0.csv").exists()
    assert not (out / "best1.pt").exists() and not (out / "log1.csv").exists()
    headers = [ln for ln in stdout.splitlines() if ln.split()[:2] == ["epoch", "trn_loss"]]
    assert len(headers) == 2, stdout  # the run and the failing run, rank 0 only
    assert len((out / "log0.csv").read_text().splitlines()) == 1 + CFG["epochs"]


def test_rank0_model_loads_in_one_process(ddp_run, single_run):
    out, _, _ = ddp_run
    cf, model, _, data = single_run
    for name in ("final.pt", "best0.pt"):
        sd = torch.load(out / name, weights_only=True)
        assert not any(k.startswith("module.") for k in sd), "saved from the unwrapped module"
        fresh = cf.get_model(CFG["n_factors"])
        fresh.load_state_dict(sd)
        assert torch.isfinite(fresh(*next(iter(data.val_dl))[:2])).all()


def test_wrapping_is_undone_after_fit_and_after_an_error(ddp_run):
    _, ranks, _ = ddp_run
    for rk in ranks:
        assert rk["after"] == {"world_size": 1, "val_world_size": 1,
                               "model_type": "EmbeddingDotBias"}
        assert rk["error"] == "planned failure"
        assert rk["after_error"] == {"world_size": 1, "model_type": "EmbeddingDotBias"}
    assert ranks[0]["again"] == ranks[1]["again"], "the group still works after the error"


def test_unwrap_returns_inner_module():
    m = torch.nn.Linear(2, 1)
    assert unwrap(m) is m
    assert unwrap(torch.nn.DataParallel(m)) is m


def test_whole_set_metrics_under_ddp_equal_the_unsharded_predictions_value(ddp_run):
    # Validation is sharded; the shards' predictions and targets are gathered back into the
    # unsharded order before the metrics run (per-batch averaging would give another RMSE).
    _, ranks, _ = ddp_run
    for rk in ranks:
        assert rk["val_sharded"] == [True] * CFG["epochs"]
        assert rk["history"][-1]["rmse"] == ranks[0]["history"][-1]["rmse"]
        assert rk["history"][-1]["rmse"] == pytest.approx(rk["predicted_rmse"], rel=1e-6, abs=0)
        # precision@5 checks it gets the bound set's targets in order, so the gather's order
        # is the unsharded one, or the fit would have raised
        ln = rk["learner"]
        assert ln["val_sharded"] == [True, True]
        assert ln["history"][-1]["precision@5"] == pytest.approx(ln["predicted_precision"],
                                                                 abs=1e-12)
    a, b = (rk["learner"]["history"] for rk in ranks)
    assert [h["precision@5"] for h in a] == [h["precision@5"] for h in b]
    assert [h["val_loss"] for h in a] == [h["val_loss"] for h in b]


def test_all_gather_rows_with_a_rank_without_rows_and_bools(ddp_run):
    _, ranks, _ = ddp_run
    for rk in ranks:
        assert rk["gather"] == {"rows": [[[True, False]] * 3, []],
                                "dtypes": ["torch.bool", "torch.bool"]}
    t = torch.arange(3)  # one process: nothing to gather
    assert all_gather_rows(t)[0] is t and all_gather_rows(None) == []


def test_a_stateful_metric_keeps_validation_unsharded_and_exact(ddp_run):
    _, ranks, _ = ddp_run
    for rk in ranks:
        st = rk["stateful"]
        assert st["val_sharded"] == [False]
        _, streamed, whole = st["vals"]
        assert streamed == pytest.approx(st["predicted_rmse"], rel=1e-9)
        assert whole == pytest.approx(st["predicted_rmse"], rel=1e-6)
    assert ranks[0]["stateful"]["vals"] == ranks[1]["stateful"]["vals"]


def test_learner_under_ddp_refuses_lr_find_saves_once_and_resumes(ddp_run, single_run):
    out, ranks, _ = ddp_run
    for rk in ranks:
        ln = rk["learner"]
        assert "lr_find" in ln["lr_find"] and "torch.distributed" in ln["lr_find"]
        assert ln["iterations"] == list(range(1, 2 * 17 + 1))
        # resumed from the epoch-2 checkpoint written by rank 0: one more epoch on every rank
        assert [h["iteration"] for h in ln["resumed"]] == [17, 34, 51]
        assert ln["resumed"][:2] == ranks[0]["learner"]["history"]
        assert ln["resumed_sharded"] == [True]
    assert ranks[0]["learner"]["resumed"][2]["val_loss"] == ranks[1]["learner"]["resumed"][2]["val_loss"]
    sd = torch.load(out / "models" / "ddp.pt", weights_only=True)
    cf = single_run[0]
    cf.get_model(CFG["n_factors"]).load_state_dict(sd)


def test_learner_sgdr_cycle_counts_a_ranks_steps(ddp_run):
    # cycle_len=2 over 2 epochs of 17 steps per rank: the cosine ends at ~0 on the last step
    _, ranks, _ = ddp_run
    lrs = ranks[0]["learner"]["lrs"]
    assert ranks[1]["learner"]["lrs"] == lrs
    assert len(lrs) == 34 and max(lrs) > 0.9 * CFG["lr"]
    assert lrs[-1] < 0.01 * CFG["lr"], "the cosine should have annealed to ~0 by the cycle's end"


def test_sparse_gradients_under_ddp_equal_one_process(ddp_run):
    from ddp_worker import sparse_learner

    out, ranks, _ = ddp_run
    two = ranks[0]["learner"]["sparse"]
    losses = [[(h["trn_loss"], h["val_loss"]) for h in rk["learner"]["sparse"]["history"]]
              for rk in ranks]
    assert two["opt"] == "LazyAdam" and losses[0] == losses[1]
    w0, w1 = (torch.load(out / f"sparse{r}.pt", weights_only=True) for r in range(2))
    for k in w0:  # the ranks stay in step
        assert torch.equal(w0[k], w1[k]), k
    from ddp_worker import collab_parts

    cf, _, _ = collab_parts(CFG, 2 * CFG["bs"], seed=None)
    one = sparse_learner(CFG, cf, 2 * CFG["bs"]).fit(CFG["lr"], 2, verbose=False)
    np.testing.assert_allclose([h["val_loss"] for h in two["history"]],
                               [h["val_loss"] for h in one.history], rtol=2e-5)


def test_swa_under_ddp_gives_every_rank_the_same_average_and_whole_set_statistics(ddp_run):
    _, ranks, _ = ddp_run
    a, b = ranks[0]["swa"], ranks[1]["swa"]
    assert a["swa_loss"] == b["swa_loss"] and all(np.isfinite(a["swa_loss"]))
    for k, v in a["weights"].items():
        np.testing.assert_allclose(v, b["weights"][k], rtol=1e-6, atol=1e-7, err_msg=k)
    # each rank's statistics are of its shard; their mean is the whole training set's (equal
    # shards), so BatchNorm's running mean is the mean of the layer's inputs over all rows
    np.testing.assert_allclose(a["weights"]["1.running_mean"], a["whole_set_mean"], rtol=1e-5,
                               atol=1e-6)
