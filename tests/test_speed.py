"""Speed defaults: flush-to-zero on every intra-op thread, fused Adam, sparse embeddings."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minifast as mf
from minifast.collab import CollabFilterDataset
from minifast.collab.synthetic import synthetic_ratings
from minifast.optim.fused import build_optimizer
from minifast.optim.sparse import LazyAdam, sparse_embeddings
from minifast.runtime import denormal, malloc


@pytest.fixture
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.randn(1 << 20).exp_()  # start the OpenMP pool before any flag is set
    if omp_available():
        # Every thread starts unflushed: on a loaded machine an earlier test's fit has been
        # seen to leave worker 1 flushed (full suite only; see the session-5 note), and these
        # tests check their own restores, not that history.
        denormal.set_flush_denormal(False, workers=True)
    yield
    torch.set_num_threads(n)


def team_modes() -> dict:
    return denormal._on_every_thread(denormal.denormals_flushed)


def omp_available() -> bool:
    try:
        team_modes()
    except OSError:
        return False
    return True


needs_omp = pytest.mark.skipif(not omp_available(), reason="torch's OpenMP runtime not reachable")
needs_ftz = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="CPU without FTZ/DAZ")


def test_probe_sees_the_calling_threads_mode():
    torch.set_flush_denormal(True)
    try:
        assert denormal.denormals_flushed() == bool(torch.set_flush_denormal(True))
    finally:
        torch.set_flush_denormal(False)
    assert not denormal.denormals_flushed()


@needs_ftz
@needs_omp
def test_main_thread_flag_does_not_reach_started_workers(two_threads):
    # Why flush_denormal exists: torch.set_flush_denormal only changes the calling thread.
    torch.set_flush_denormal(True)
    try:
        modes = team_modes()
        assert modes[0] is True and modes[1] is False
    finally:
        torch.set_flush_denormal(False)


@needs_ftz
@needs_omp
@pytest.mark.parametrize("main_before", [False, True])
def test_flush_denormal_sets_every_thread_and_restores_each(two_threads, main_before):
    torch.set_flush_denormal(main_before)  # main thread only: workers stay False
    try:
        before = team_modes()
        with mf.flush_denormal() as st:
            assert st.workers and st.threads == 2 and st.reason == ""
            assert team_modes() == {0: True, 1: True}
            assert (torch.full((4,), 1e-40) * 1.0).eq(0).all()  # float32 denormals vanish
        assert team_modes() == before == {0: main_before, 1: False}
    finally:
        torch.set_flush_denormal(False)


@needs_ftz
def test_fallback_without_openmp_is_caller_only(monkeypatch, two_threads):
    monkeypatch.setattr(denormal, "_omp", "no OpenMP here")
    with mf.flush_denormal() as st:
        assert st.supported and not st.workers and "no OpenMP" in st.reason
        assert denormal.denormals_flushed()
    assert not denormal.denormals_flushed()
    with mf.flush_denormal(False) as st:
        assert not st.enabled and not denormal.denormals_flushed()


def tiny_problem(bs=32, n=600):
    g = torch.Generator().manual_seed(0)
    cats = torch.stack([torch.randint(0, 30, (n,), generator=g),
                        torch.randint(0, 40, (n,), generator=g)], 1)
    y = torch.rand(n, generator=g) * 4.5 + 0.5
    data = mf.ColumnarModelData.from_arrays(".", np.arange(n // 5), cats, y, bs=bs, seed=0)
    return data


class Dot(nn.Module):
    def __init__(self):
        super().__init__()
        self.u, self.i = nn.Embedding(30, 4), nn.Embedding(40, 4)

    def forward(self, cats, conts=None):
        return (self.u(cats[:, 0]) * self.i(cats[:, 1])).sum(1, keepdim=True)


class Probe(mf.Callback):
    def on_batch_end(self, loss):
        self.seen = (denormal.denormals_flushed(),
                     team_modes() if omp_available() else None)


@needs_ftz
@pytest.mark.parametrize("flag", [None, False])
def test_fit_flushes_on_cpu_by_default_and_restores(two_threads, flag):
    model = Dot()
    probe = Probe()
    mf.fit(model, tiny_problem(), 1, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss,
           callbacks=[probe], verbose=False, progress=False, flush_denormal=flag)
    on = flag is None and next(model.parameters()).device.type == "cpu"
    assert probe.seen[0] is on
    if probe.seen[1] is not None:
        assert probe.seen[1] == {0: on, 1: on}
        assert team_modes() == {0: False, 1: False}
    assert not denormal.denormals_flushed()


@needs_ftz
def test_fit_restores_after_an_exception(two_threads):
    class Boom(mf.Callback):
        def on_batch_end(self, loss):
            raise RuntimeError("boom")

    model = Dot()
    with pytest.raises(RuntimeError, match="boom"):
        mf.fit(model, tiny_problem(), 1, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss,
               callbacks=[Boom()], verbose=False, progress=False)
    assert not denormal.denormals_flushed()


# ------------------------------------------------------------------------------ fused


def test_learner_uses_fused_adam_where_supported():
    data = tiny_problem()
    learn = mf.Learner(data, Dot())
    expect = mf.fused_supported(learn.model.parameters())
    assert isinstance(learn.opt, torch.optim.Adam)
    assert bool(learn.opt.param_groups[0]["fused"]) == expect
    lesson = mf.Learner(data, Dot(), opt_fn=torch.optim.Adam)  # the lesson's explicit choice
    assert bool(lesson.opt.param_groups[0]["fused"]) == expect
    off = mf.Learner(data, Dot(), fused=False)
    assert not off.opt.param_groups[0]["fused"]


def test_fused_falls_back_where_unsupported(monkeypatch):
    import torch.optim.optimizer as topt

    monkeypatch.setattr(topt, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    params = [nn.Parameter(torch.zeros(3))]
    opt = build_optimizer(torch.optim.Adam, [{"params": params}])
    assert not opt.param_groups[0]["fused"]
    with pytest.raises(ValueError, match="fused=True"):
        build_optimizer(torch.optim.Adam, [{"params": params}], fused=True)


def test_fused_leaves_explicit_choices_and_other_optimisers_alone():
    p = [nn.Parameter(torch.zeros(3))]
    assert build_optimizer(functools.partial(torch.optim.Adam, foreach=True), [{"params": p}]
                           ).param_groups[0]["foreach"]
    assert not build_optimizer(functools.partial(torch.optim.Adam, fused=False), [{"params": p}]
                               ).param_groups[0]["fused"]
    sgd = build_optimizer(torch.optim.SGD, [{"params": p, "lr": 0.1}])
    assert not sgd.param_groups[0]["fused"]
    with pytest.raises(ValueError, match="fused=True needs opt_fn"):
        build_optimizer(torch.optim.SGD, [{"params": p, "lr": 0.1}], fused=True)
    with pytest.raises(ValueError, match="fused=True"):
        build_optimizer(torch.optim.Adam, [{"params": p}], fused=True, sparse=True)


def test_fused_and_default_adam_train_alike():
    data = tiny_problem()
    res = []
    for fused in (False, None):
        torch.manual_seed(0)
        learn = mf.Learner(data, Dot(), fused=fused)
        res.append(learn.fit(1e-2, 2, wds=1e-4, verbose=False, progress=False)[0])
    assert res[0] == pytest.approx(res[1], rel=1e-3)


def test_loaded_optimiser_state_keeps_the_implementation_chosen(tmp_path):
    data = tiny_problem()
    fused = mf.Learner(data, Dot(), path=tmp_path)
    if not mf.fused_supported(fused.model.parameters()):
        pytest.skip("no fused kernel for these parameters in this torch")
    fused.fit(1e-2, 1, verbose=False, progress=False)
    fused.save("m", with_opt=True)
    plain = mf.Learner(data, Dot(), fused=False, path=tmp_path)
    plain.load("m")  # a file from a fused Adam must not switch this one to fused
    assert not plain.opt.param_groups[0]["fused"]
    for p, q in zip(fused.opt.state.values(), plain.opt.state.values(), strict=True):
        assert torch.equal(p["exp_avg_sq"], q["exp_avg_sq"]) and float(p["step"]) == float(q["step"])
    plain.fit(1e-2, 1, verbose=False, progress=False)  # and it trains on from there
    fused.load("m")  # the other way round: stays fused
    plain.save("p", with_opt=True)
    fused.load("p")
    assert fused.opt.param_groups[0]["fused"]
    fused.fit(1e-2, 1, verbose=False, progress=False)
    ckpt = tmp_path / "ck"
    fused.fit(1e-2, 1, verbose=False, progress=False, callbacks=[mf.Checkpoint(ckpt)])
    resumed = mf.Learner(data, Dot(), fused=False, path=tmp_path)
    resumed.fit(1e-2, 1, verbose=False, progress=False, resume=mf.find_checkpoints(ckpt)[0])
    assert not resumed.opt.param_groups[0]["fused"]


# ------------------------------------------------------------------------------ sparse


def test_lazy_adam_equals_adam_when_every_row_is_in_every_batch():
    torch.manual_seed(0)
    dense, lazy = nn.Embedding(5, 3), nn.Embedding(5, 3, sparse=True)
    lazy.load_state_dict(dense.state_dict())
    lin_d, lin_l = nn.Linear(3, 1), nn.Linear(3, 1)
    lin_l.load_state_dict(lin_d.state_dict())
    o1 = torch.optim.Adam([*dense.parameters(), *lin_d.parameters()], 1e-2, weight_decay=1e-2)
    o2 = LazyAdam([*lazy.parameters(), *lin_l.parameters()], 1e-2, weight_decay=1e-2)
    idx = torch.tensor([0, 1, 2, 3, 4, 2])
    for _ in range(5):
        for emb, lin, opt in ((dense, lin_d, o1), (lazy, lin_l, o2)):
            lin(emb(idx)).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(lazy.weight, dense.weight)
    torch.testing.assert_close(lin_l.weight, lin_d.weight)


def test_lazy_adam_leaves_absent_rows_and_their_moments_alone():
    emb = nn.Embedding(6, 2, sparse=True)
    opt = LazyAdam(emb.parameters(), 0.1, weight_decay=0.1)
    emb(torch.tensor([0, 1])).sum().backward()
    opt.step()
    opt.zero_grad()
    w = emb.weight.detach().clone()
    m = opt.state[emb.weight]["exp_avg"].clone()
    emb(torch.tensor([2, 2])).sum().backward()
    opt.step()
    changed = (emb.weight != w).any(1)
    assert changed.tolist() == [False, False, True, False, False, False]
    assert torch.equal(opt.state[emb.weight]["exp_avg"][:2], m[:2])


def collab(n=3000):
    df, _ = synthetic_ratings(60, 80, n, seed=0)
    cf = CollabFilterDataset.from_data_frame(".", df, "userId", "movieId", "rating")
    return cf, mf.get_cv_idxs(cf.n)


@pytest.mark.parametrize("model", ["dotbias", "dot", "net"])
def test_sparse_learner_trains(model):
    cf, val = collab()
    torch.manual_seed(0)
    learn = cf.get_learner(8, val, 64, model=model, sparse=True, seed=0)
    assert isinstance(learn.opt, LazyAdam) and mf.has_sparse_embeddings(learn.model)
    before = mf.validate(mf.Stepper(learn.model, learn.opt, learn.crit), learn.data.val_dl)[0]
    after = learn.fit(1e-2, 3, wds=1e-4, verbose=False, progress=False)[0]
    assert np.isfinite(after) and after < before


class GradKinds(mf.Callback):
    """Records, after each backward pass, which parameters have sparse gradients."""

    def __init__(self):
        self.sparse: list[list[bool]] = []

    def on_backward_end(self):
        self.sparse.append([p.grad.is_sparse for p in self.state.model.parameters()])


def test_sparse_with_per_rating_penalty_keeps_gradients_sparse():
    cf, val = collab()
    res = {}
    for sparse in (False, True):
        torch.manual_seed(0)
        learn = cf.get_learner(8, val, 64, sparse=sparse, emb_l2=0.05, seed=0)
        probe = GradKinds()
        res[sparse] = learn.fit(1e-2, 3, verbose=False, progress=False, callbacks=[probe])[0]
        assert all(all(g) == sparse for g in probe.sparse)  # the penalty adds no dense gradient
    assert np.isfinite(res[True]) and res[True] == pytest.approx(res[False], rel=0.05)


def test_sparse_decoupled_decay_touches_batch_rows_only():
    emb = nn.Embedding(5, 2, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    mf.set_wds(opt, 0.5, decoupled=True)
    w = emb.weight.detach().clone()
    (emb(torch.tensor([1, 3, 3])) * 0).sum().backward()  # rows 1 and 3 present, values 0
    mf.Stepper(emb, opt, F.mse_loss).decay_weights()
    expect = w.clone()
    expect[[1, 3]] *= 1 - 0.1 * 0.5
    torch.testing.assert_close(emb.weight.detach(), expect)


def test_sparse_refuses_bad_combinations():
    cf, val = collab()
    with pytest.raises(ValueError, match="Adam does not take sparse gradients"):
        cf.get_learner(8, val, 64, sparse=True, opt_fn=torch.optim.Adam)
    with pytest.raises(ValueError, match="SparseAdam only takes sparse gradients"):
        cf.get_learner(8, val, 64, model="net", sparse=True, opt_fn=torch.optim.SparseAdam)
    with pytest.raises(ValueError, match="clip"):
        cf.get_learner(8, val, 64, sparse=True, clip=1.0)
    for opt_fn in (torch.optim.SparseAdam, functools.partial(torch.optim.SGD, momentum=0.9)):
        learn = cf.get_learner(8, val, 64, sparse=True, opt_fn=opt_fn)
        with pytest.raises(ValueError, match="cannot apply L2 weight decay"):
            learn.fit(1e-2, 1, wds=1e-4, verbose=False, progress=False)
        # decoupled decay of the batch rows, or none, is fine
        assert np.isfinite(learn.fit(1e-2, 1, wds=1e-2, use_wd_sched=True, verbose=False,
                                     progress=False)[0])


def test_sparse_embeddings_round_trip():
    m = Dot()
    assert not mf.has_sparse_embeddings(m)
    assert mf.has_sparse_embeddings(sparse_embeddings(m))
    assert not mf.has_sparse_embeddings(sparse_embeddings(m, False))
    with pytest.raises(ValueError, match="max_norm"):
        sparse_embeddings(nn.Embedding(3, 2, max_norm=1.0))


# --- malloc: freed step buffers stay in the heap (minifast.malloc) ---

needs_glibc = pytest.mark.skipif(malloc._glibc() is None, reason="C library is not glibc")

_CHURN = """
import resource, sys, torch
from minifast.runtime import malloc
if sys.argv[1] == "glibc-start":  # glibc's initial thresholds, fixed so the run is predictable
    assert malloc.set_malloc_thresholds(128 << 10, 128 << 10)
else:
    assert malloc.set_malloc_thresholds()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(20):  # ml-latest-small's item-table gradient: 9,724 x 50 floats, 1.9 MB
    f0 = faults()  # (under 2 MB: no transparent huge page fits in it)
    x = torch.ones(9724 * 50)
    del x
    counts.append(faults() - f0)
print(sorted(counts)[10])  # the median: the first allocations may grow the heap
"""


@needs_glibc
def test_kept_memory_turns_a_steps_page_faults_into_reuse():
    import subprocess
    import sys

    def per_alloc(mode):  # a process of its own: the thresholds are process-wide
        out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True,
                             text=True, check=True)
        return float(out.stdout.split()[-1])

    assert per_alloc("glibc-start") >= 400  # a fresh mmap: 475 pages faulted in, every time
    assert per_alloc("minifast") <= 2  # the freed block is reused from the heap


@pytest.mark.parametrize("flag", [None, False, True])
def test_fit_keeps_freed_memory_on_cpu_by_default(monkeypatch, flag):
    calls = []
    monkeypatch.setattr(malloc, "set_malloc_thresholds", lambda: calls.append("set") or True)
    monkeypatch.setattr(malloc, "release_freed_memory", lambda: calls.append("release") or True)

    class Seen(mf.Callback):
        def on_batch_end(self, loss):
            calls.append("batch")

    model = Dot()
    mf.fit(model, tiny_problem(), 1, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss,
           callbacks=[Seen()], verbose=False, progress=False, keep_freed_memory=flag)
    on = flag or (flag is None and next(model.parameters()).device.type == "cpu")
    batches = [c for c in calls if c == "batch"]
    assert batches and calls == (["set", *batches] if on else batches)  # set once, kept after


@needs_glibc
def test_malloc_threshold_checks():
    with pytest.raises(ValueError, match=r"mmap_threshold must be a number of bytes in \[0, "):
        mf.set_malloc_thresholds(-1)
    with pytest.raises(ValueError, match="trim_threshold"):
        mf.set_malloc_thresholds(trim_threshold=1.5)
    with pytest.raises(ValueError, match="trim_threshold"):
        mf.set_malloc_thresholds(trim_threshold=1 << 31)
    assert mf.set_malloc_thresholds() is True
    assert mf.set_malloc_thresholds() is True  # idempotent
    assert mf.keep_freed_memory() is True
    assert mf.keep_freed_memory(False) is False
    assert isinstance(mf.release_freed_memory(), bool)


def test_malloc_elsewhere_than_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(malloc, "_glibc", lambda: None)
    assert mf.set_malloc_thresholds() is False
    assert mf.release_freed_memory() is False
    assert mf.keep_freed_memory() is False
