"""LazyAdam's row-wise step: against a reference, duplicates, weight decay, resume, fallback."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from resume_worker import assert_resumes_exactly, result
from torch import nn

import minifast as mf
from minifast.collab import CollabFilterDataset
from minifast.collab.synthetic import synthetic_ratings
from minifast.optim import sparse as sparse_mod
from minifast.optim.sparse import LazyAdam


def reference_step(p: torch.Tensor, state: dict, lr, b1, b2, eps, wd) -> None:
    """Lazy Adam as defined before the row-wise path: coalesce, then Adam on those rows."""
    state["step"] = state.get("step", 0) + 1
    t = state["step"]
    m = state.setdefault("exp_avg", torch.zeros_like(p))
    v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
    if p.grad.is_sparse:
        g = p.grad.coalesce()
        rows, vals = g.indices()[0], g.values()
    else:
        rows, vals = torch.arange(len(p)), p.grad
    vals = vals + wd * p[rows]
    m[rows] = b1 * m[rows] + (1 - b1) * vals
    v[rows] = b2 * v[rows] + (1 - b2) * vals * vals
    denom = v[rows].sqrt() / math.sqrt(1 - b2**t) + eps
    p[rows] -= lr / (1 - b1**t) * m[rows] / denom


class TwoTables(nn.Module):
    """Users and items of the same length (4 embeddings, two sharing each index) and a
    dense layer: the index cache must not mix the tables up."""

    def __init__(self):
        super().__init__()
        self.u, self.i = nn.Embedding(30, 4, sparse=True), nn.Embedding(30, 4, sparse=True)
        self.ub, self.ib = nn.Embedding(30, 1, sparse=True), nn.Embedding(30, 1, sparse=True)
        self.lin = nn.Linear(4, 1)

    def forward(self, users, items):
        dot = self.lin(self.u(users) * self.i(items))[:, 0]
        return dot + self.ub(users)[:, 0] + self.ib(items)[:, 0]


def batches(n=6, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):  # a handful of popular rows: duplicates in every batch
        yield (torch.randint(0, 8, (bs,), generator=g), torch.randint(0, 30, (bs,), generator=g),
               torch.randn(bs, generator=g))


def train_lazy(model, opt, n=6):
    for users, items, y in batches(n):
        F.mse_loss(model(users, items), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_row_wise_step_equals_reference(fused, wd):
    torch.manual_seed(0)
    model = TwoTables()
    ref = TwoTables()
    ref.load_state_dict(model.state_dict())
    opt = LazyAdam(model.parameters(), 1e-2, betas=(0.8, 0.95), weight_decay=wd, fused=fused)
    states = {id(p): {} for p in ref.parameters()}
    for users, items, y in batches():
        for m in (model, ref):
            F.mse_loss(m(users, items), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p in ref.parameters():
                reference_step(p, states[id(p)], 1e-2, 0.8, 0.95, 1e-8, wd)
                p.grad = None
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=name)
        torch.testing.assert_close(opt.state[p]["exp_avg"], states[id(q)]["exp_avg"],
                                   atol=1e-6, rtol=1e-6)


def test_duplicate_rows_accumulate_and_absent_rows_keep_weights_and_moments():
    emb = nn.Embedding(6, 2, sparse=True)
    opt = LazyAdam(emb.parameters(), 0.1, weight_decay=0.1)
    emb(torch.tensor([0, 1])).sum().backward()
    opt.step()
    opt.zero_grad()
    w, m = emb.weight.detach().clone(), opt.state[emb.weight]["exp_avg"].clone()
    emb(torch.tensor([2, 2, 2, 4])).sum().backward()  # row 2 three times: gradient 3
    opt.step()
    changed = (emb.weight != w).any(1)
    assert changed.tolist() == [False, False, True, False, True, False]
    assert torch.equal(opt.state[emb.weight]["exp_avg"][[0, 1, 3, 5]], m[[0, 1, 3, 5]])
    # exp_avg of a fresh row after one step: (1 - b1) * (g + wd * w)
    expect = 0.1 * (torch.tensor([3.0, 1.0])[:, None] + 0.1 * w[[2, 4]])
    torch.testing.assert_close(opt.state[emb.weight]["exp_avg"][[2, 4]], expect)


def test_decoupled_decay_then_step_shrinks_only_the_batch_rows():
    """Stepper coalesces the gradient for the decoupled decay; the step takes it as is."""
    torch.manual_seed(0)
    emb, ref = nn.Embedding(5, 3, sparse=True), nn.Embedding(5, 3, sparse=True)
    ref.load_state_dict(emb.state_dict())
    opt = LazyAdam(emb.parameters(), 0.1)
    mf.set_wds(opt, 0.5, decoupled=True)
    idx = torch.tensor([1, 3, 3])
    for m in (emb, ref):
        m(idx).sum().backward()
    mf.Stepper(emb, opt, F.mse_loss).decay_weights()
    assert emb.weight.grad.is_coalesced()
    opt.step()
    with torch.no_grad():
        ref.weight[[1, 3]] *= 1 - 0.1 * 0.5
        reference_step(ref.weight, {}, 0.1, 0.9, 0.999, 1e-8, 0.0)
    torch.testing.assert_close(emb.weight, ref.weight, atol=1e-6, rtol=1e-6)
    assert torch.equal(emb.weight[[0, 2, 4]], ref.weight[[0, 2, 4]])


def test_state_dict_round_trip_resumes_bit_identically():
    torch.manual_seed(0)
    model = TwoTables()
    opt = LazyAdam(model.parameters(), 1e-2, weight_decay=0.01)
    train_lazy(model, opt, 3)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    train_lazy(model, opt)
    again = TwoTables()
    again.load_state_dict(saved[0])
    opt2 = LazyAdam(again.parameters(), 1e-2, weight_decay=0.01)
    opt2.load_state_dict(saved[1])
    assert opt2.state_dict()["state"][0]["step"] == 3
    train_lazy(again, opt2)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_sparse_learner_resumes_bit_identically(tmp_path):
    df, _ = synthetic_ratings(60, 80, 2000, seed=0)
    cf = CollabFilterDataset.from_data_frame(".", df, "userId", "movieId", "rating")
    val = mf.get_cv_idxs(cf.n)

    def run(callbacks, resume=None):
        torch.manual_seed(0)
        learn = cf.get_learner(8, val, 64, sparse=True, seed=0)
        res = learn.fit(1e-2, 2, wds=1e-4, callbacks=callbacks, resume=resume, verbose=False,
                        progress=False)
        out = result(learn.model, learn.opt, res.recorder, res.history)
        for st in out["opt"]["state"].values():  # LazyAdam counts steps in an int
            st["step"] = torch.tensor(st["step"])
        return out

    assert_resumes_exactly(run, tmp_path / "ckpt", 5, 23)


def test_plain_ops_fallback_and_fused_choice(monkeypatch):
    torch.manual_seed(0)
    a, b = TwoTables(), TwoTables()
    b.load_state_dict(a.state_dict())
    fused, plain = LazyAdam(a.parameters(), 1e-2), LazyAdam(b.parameters(), 1e-2, fused=False)
    assert fused.fused and not plain.fused  # CPU: torch has a fused Adam kernel
    train_lazy(a, fused)
    train_lazy(b, plain)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    monkeypatch.setattr(sparse_mod, "fused_supported", lambda params: False)
    assert not LazyAdam(a.parameters()).fused  # falls back where there is no kernel
    with pytest.raises(ValueError, match="no fused Adam kernel"):
        LazyAdam(a.parameters(), fused=True)
    with pytest.raises(ValueError, match="fused must be"):
        LazyAdam(a.parameters(), fused="yes")


def test_sparse_gradient_that_does_not_index_rows_is_refused():
    p = nn.Parameter(torch.zeros(3, 3))
    p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 2]]), torch.ones(2), (3, 3))
    with pytest.raises(ValueError, match="sparse_dim 1"):
        LazyAdam([p]).step()


def test_no_rows_in_the_batch_leaves_the_weights():
    emb = nn.Embedding(4, 2, sparse=True)
    w = emb.weight.detach().clone()
    emb.weight.grad = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long),
                                              torch.zeros(0, 2), (4, 2))
    opt = LazyAdam(emb.parameters(), 0.1)
    opt.step()
    assert torch.equal(emb.weight, w) and opt.state[emb.weight]["step"] == 1


def test_prefer_sparse_follows_table_size_batch_size_and_device():
    small = nn.Embedding(10_000, 50)  # 0.5M parameters: below AUTO_SPARSE_MIN_PARAMS
    big = nn.ModuleList([nn.Embedding(40_000, 50), nn.Embedding(1_000, 1)])  # 2.0M
    assert not mf.prefer_sparse(small, 64, "cpu")
    assert mf.prefer_sparse(big, 64, "cpu")
    assert mf.prefer_sparse(big, 2_001_000 // sparse_mod.AUTO_SPARSE_PARAMS_PER_ROW, "cpu")
    assert not mf.prefer_sparse(big, 2_001_000 // sparse_mod.AUTO_SPARSE_PARAMS_PER_ROW + 1, "cpu")
    assert not mf.prefer_sparse(big, 64, torch.device("meta"))  # unmeasured devices stay dense


def _frame(n_users: int, n_items: int, n: int = 3000) -> pd.DataFrame:
    g = torch.Generator().manual_seed(0)
    return pd.DataFrame({"userId": torch.randint(n_users, (n,), generator=g).numpy(),
                         "movieId": torch.randint(n_items, (n,), generator=g).numpy(),
                         "rating": (torch.randint(1, 11, (n,), generator=g) / 2).numpy()})


def test_get_learner_auto_sparse_only_for_large_tables_and_the_default_optimiser(tmp_path):
    small = CollabFilterDataset.from_data_frame(tmp_path, _frame(300, 200), "userId", "movieId", "rating")
    assert not small.get_learner(8, mf.get_cv_idxs(small.n), 64).sparse
    # 25,000 ratings over ~17k users and ~17k items: large tables for the batch
    big = CollabFilterDataset.from_data_frame(tmp_path, _frame(40_000, 40_000, 25_000), "userId", "movieId", "rating")
    n_params = (big.n_users + big.n_items) * 51
    assert n_params >= sparse_mod.AUTO_SPARSE_MIN_PARAMS
    val = mf.get_cv_idxs(big.n)
    learn = big.get_learner(50, val, 64)
    assert learn.sparse and isinstance(learn.opt, LazyAdam)
    assert not big.get_learner(50, val, 64, sparse=False).sparse
    assert not big.get_learner(50, val, 64, opt_fn=torch.optim.Adam).sparse
    assert not big.get_learner(50, val, 64, clip=1.0).sparse
    assert not big.get_learner(50, val, n_params // sparse_mod.AUTO_SPARSE_PARAMS_PER_ROW + 1).sparse
    with pytest.raises(ValueError, match="sparse must be True, False or 'auto'"):
        big.get_learner(50, val, 64, sparse="yes")
