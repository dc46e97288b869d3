"""Mixed precision: bf16 autocast on the CPU, fp16 refused there, the gradient scaler's
skipped steps, float32 master weights."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyDot, make_ratings
from torch import nn

import minifast as mf


def regression(tmp_path, n=1200, scale=1.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    y = torch.tanh(x @ torch.randn(16, 1, generator=g)) + 0.05 * torch.randn(n, 1, generator=g)
    y = y * scale
    return mf.ModelData(tmp_path, mf.ArrayLoader(x[:1000], y[:1000], batch_size=50, seed=0),
                        mf.ArrayLoader(x[1000:], y[1000:], batch_size=100))


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))


def train(tmp_path, **kw):
    m = mlp()
    res = mf.fit(m, regression(tmp_path), 4, torch.optim.Adam(m.parameters(), 3e-3), F.mse_loss,
                 verbose=False, **kw)
    return m, res


def test_bf16_on_cpu_trains_close_to_fp32_with_fp32_master_weights(tmp_path):
    m32, r32 = train(tmp_path)
    m16, r16 = train(tmp_path, precision="bf16")
    assert r16[0] == pytest.approx(r32[0], rel=0.10) and r16[0] < 0.5 * r16.history[0]["val_loss"] * 2
    assert all(p.dtype == torch.float32 for p in m16.parameters())
    assert r16.recorder.losses != r32.recorder.losses  # autocast really ran


def test_validation_runs_under_the_same_autocast(tmp_path):
    m = mlp()
    st = mf.Stepper(m, torch.optim.SGD(m.parameters(), 0.1), F.mse_loss, precision="bf16")
    out, loss = st.evaluate([torch.randn(4, 16)], torch.randn(4, 1))
    assert out.dtype == torch.bfloat16 and m.training


def test_fp16_is_refused_on_the_cpu_with_advice(tmp_path):
    with pytest.raises(ValueError, match=r"precision='fp16' needs a GPU.*precision='bf16'"):
        train(tmp_path, precision="fp16")
    cats, y = make_ratings()
    md = mf.ColumnarModelData.from_arrays(tmp_path, mf.get_cv_idxs(len(y)), cats, y, bs=32)
    learn = mf.Learner(md, TinyDot())
    with pytest.raises(ValueError, match="needs a GPU"):
        learn.fit(1e-2, 1, precision="fp16", verbose=False)
    with pytest.raises(ValueError, match="needs a GPU"):
        learn.lr_find(precision="fp16")
    with pytest.raises(ValueError, match="precision must be None, 'bf16' or 'fp16'"):
        train(tmp_path, precision="half")


def test_a_gradient_scaler_skips_overflowing_steps_and_lowers_its_scale(tmp_path):
    # float16 itself needs a GPU; the scaler's logic is the same with a CPU scaler
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1000)
    m = mlp()
    before = [p.detach().clone() for p in m.parameters()]
    data = regression(tmp_path, scale=10.0)  # a loss above 2 overflows at scale 2**127
    st = mf.Stepper(m, torch.optim.SGD(m.parameters(), 1e-2), F.mse_loss, precision="bf16",
                    grad_scaler=scaler)
    xs, y = next(iter(data.trn_dl))[:-1], next(iter(data.trn_dl))[-1]
    st.step(xs, y)
    assert st.skipped_steps == 1 and scaler.get_scale() == 2.0**126
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert all(p.grad is None for p in m.parameters())
    res = mf.fit(m, data, 2, st.opt, F.mse_loss, stepper=st, verbose=False)
    assert 1 <= st.skipped_steps < 2 * len(data.trn_dl) and res[0] < res.history[0]["val_loss"]
    assert not all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    sd = st.state_dict()
    assert sd["scaler"]["scale"] == 2.0 ** (127 - st.skipped_steps) and sd["skipped_steps"] == st.skipped_steps


def test_the_gradient_scalers_state_resumes_from_a_checkpoint(tmp_path):
    def stepper(m):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1000)
        return mf.Stepper(m, torch.optim.SGD(m.parameters(), 1e-2), F.mse_loss, precision="bf16",
                          grad_scaler=scaler)

    m = mlp()
    st = stepper(m)
    data = regression(tmp_path, scale=10.0)
    mf.fit(m, data, 1, st.opt, F.mse_loss, stepper=st, verbose=False,
           callbacks=[mf.Checkpoint(tmp_path / "ck")])
    saved = mf.load_checkpoint(mf.find_checkpoints(tmp_path / "ck")[0])["stepper"]
    assert saved["skipped_steps"] == st.skipped_steps >= 1
    m2 = mlp()
    st2 = stepper(m2)
    with pytest.warns(UserWarning, match="nothing left to train"):  # only the state is wanted
        mf.fit(m2, data, 1, st2.opt, F.mse_loss, stepper=st2, verbose=False, resume=tmp_path / "ck")
    assert st2.scaler.get_scale() == st.scaler.get_scale() < 2.0**127
    assert st2.skipped_steps == st.skipped_steps


def test_resume_refuses_another_precision_or_accumulation(tmp_path):
    m = mlp()
    data = regression(tmp_path)
    mf.fit(m, data, 1, torch.optim.SGD(m.parameters(), 1e-2), F.mse_loss, verbose=False,
           callbacks=[mf.Checkpoint(tmp_path / "ck")])
    for kw, what in ((dict(precision="bf16"), "steps.precision: None in the checkpoint, bf16 now"),
                     (dict(accumulate=2), "steps.accumulate: 1 in the checkpoint, 2 now")):
        m2 = mlp()
        with pytest.raises(mf.CheckpointError, match=what):
            mf.fit(m2, data, 1, torch.optim.SGD(m2.parameters(), 1e-2), F.mse_loss, verbose=False,
                   resume=tmp_path / "ck", **kw)
