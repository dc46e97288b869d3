"""The examples in examples/ run, and what they claim holds (reduced sizes)."""

from __future__ import annotations

import copy
import importlib.util
import math
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def scratch():
    return load_example("training_loop_from_scratch")


@pytest.fixture(scope="module")
def scratch_run(scratch):
    return scratch.main(quick=True, verbose=False)


@pytest.fixture(scope="module")
def cbx():
    return load_example("custom_callback")


@pytest.fixture(scope="module")
def cb_run(cbx):
    return cbx.main(quick=True, verbose=False)


# ---------------------------------------------------------------- training_loop_from_scratch


def test_three_gradients_agree(scratch, scratch_run):
    g = scratch_run["grads"]
    assert g["fd_gap"] < 1e-6 and g["autograd_gap"] < 1e-12 and g["path_gap"] < 1e-5
    ends = list(g["ends"].values())
    assert len(ends) == 3 and all(math.isclose(e[0], ends[0][0], rel_tol=1e-6) for e in ends)


def test_analytic_gradient_is_the_chain_rule(scratch):
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    y = torch.tensor([3.0, 5.0], dtype=torch.float64)
    # e = a*x + b - y at a=1, b=0: [-2, -3]; dL/da = mean(2*e*x) = -8, dL/db = mean(2*e) = -5
    assert scratch.grad_analytic(1.0, 0.0, x, y) == pytest.approx((-8.0, -5.0))
    assert scratch.grad_autograd(1.0, 0.0, x, y) == pytest.approx((-8.0, -5.0))
    assert scratch.grad_finite_diff(1.0, 0.0, x, y) == pytest.approx((-8.0, -5.0), rel=1e-6)


@pytest.mark.parametrize("name", ["SGD", "SGD+momentum", "Adam", "AdamW"])
def test_hand_written_optimisers_follow_torch_optim(scratch_run, name):
    r = scratch_run["optimisers"]["results"][name]
    assert len(r["ours"]["path"]) == len(r["torch"]["path"]) == 2 * 1000 // 20
    assert r["gap"] < 1e-9
    assert r["ours"]["losses"][-1] < 0.1 * r["ours"]["losses"][0], "training should work"


def test_cross_check_catches_a_wrong_optimiser(scratch):
    """Adam without bias correction is a different algorithm: the check must see it."""

    class NoBiasCorrection(scratch.Adam):
        @torch.no_grad()
        def step(self):
            for i, p in enumerate(self.params):
                self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * p.grad
                self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * p.grad**2
                p -= self.lr * self.m[i] / (self.v[i].sqrt() + self.eps)

    x, y = scratch.make_data(200)
    ours = scratch.train(lambda ps: NoBiasCorrection(ps, 0.1), x, y, epochs=1)
    ref = scratch.train(lambda ps: torch.optim.Adam(ps, lr=0.1), x, y, epochs=1)
    assert scratch.max_gap(ours["path"], ref["path"]) > 1e-3


def test_momentum_beats_sgd_in_the_narrow_valley(scratch_run):
    res = scratch_run["optimisers"]["results"]
    mom, sgd = (res[k]["ours"]["iters_to_target"] for k in ("SGD+momentum", "SGD"))
    assert mom is not None and (sgd is None or mom < sgd)


def test_minifast_decoupled_wd_is_adamw(scratch_run):
    assert scratch_run["minifast_adamw_gap"] < 1e-9


def run_script(name: str, args: list[str], monkeypatch, capsys) -> str:
    """Run examples/<name>.py as `python examples/<name>.py *args` would (in this process)."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    return capsys.readouterr().out


def test_scratch_script_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = run_script("training_loop_from_scratch", ["--quick"], monkeypatch, capsys)
    assert "all checks passed (quick run)" in out
    assert "iterations to reach loss" in out


# ---------------------------------------------------------------- custom_callback

BATCH = ["on_batch_begin", "on_backward_begin", "on_backward_end", "on_step_begin",
         "on_step_end", "on_batch_end"]


def test_tracer_sees_every_event_in_order(cb_run):
    names = [e[0] for e in cb_run["tracer"].events]
    epoch = ["on_epoch_begin", *BATCH * 3, "on_validate_begin", "on_validate_end", "on_epoch_end"]
    assert names == ["on_train_begin", *epoch * 2, "on_train_end"]
    assert [e[1] for e in cb_run["tracer"].events if e[0] == "on_epoch_end"] == [0, 1]
    summary = cb_run["tracer"].summary()
    assert sum("3 batches, each:" in line for line in summary) == 2


def test_plateau_callback_stopped_early(cb_run):
    res, plateau = cb_run["result"], cb_run["plateau"]
    assert res.state.stopped and not res.state.interrupted
    assert 2 < len(res.history) < cb_run["n_epochs"]
    assert plateau.stopped_epoch == res.history[-1]["epoch"]


def test_grad_norms_recorded_per_batch(cb_run):
    norms, res = cb_run["grads"].norms, cb_run["result"]
    assert len(norms) == len(res.history) * cb_run["n_batches"] == res.state.iteration
    assert all(math.isfinite(n) and n > 0 for n in norms)
    assert len(cb_run["grads"].epoch_max) == len(res.history)
    assert cb_run["grads"].epoch_max[0] == max(norms[: cb_run["n_batches"]])


def test_grad_norm_is_the_pre_clipping_norm(cbx):
    """One batch holding the whole training set: the logged norm is the full gradient's norm,
    computed before the Stepper clips it."""
    from minifast import fit

    data = cbx.make_data(n=200, bs=1000)
    torch.manual_seed(0)
    model = cbx.TabularNet(20, 3)
    ref = copy.deepcopy(model)
    cats, conts, y = data.trn_dl.tensors
    F.mse_loss(ref(cats, conts), y).backward()
    expected = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in ref.parameters()])).item()
    grads = cbx.GradNormLogger()
    fit(model, data, 1, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss,
        callbacks=[grads], verbose=False, progress=False, clip=1e-3)
    assert len(grads.norms) == 1
    assert grads.norms[0] == pytest.approx(expected, rel=1e-5)
    assert expected > 1e-2  # so clipping at 1e-3 did change the step


def test_plateau_stopper_logic(cbx):
    cb = cbx.PlateauStopper(patience=2, rel_delta=1e-2)
    cb.state = SimpleNamespace(epoch=0)
    cb.on_train_begin()
    stops = []
    for e, v in enumerate([1.0, 0.5, 0.499, 0.4, 0.399, 0.398]):
        cb.state.epoch = e
        stops.append(cb.on_epoch_end([v]))
    # 0.499 and 0.399 are within 1% of the best: one epoch of waiting each; 0.398 is the second
    assert stops == [False, False, False, False, False, True]
    assert cb.stopped_epoch == 5


def test_custom_callback_script_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = run_script("custom_callback", ["--quick"], monkeypatch, capsys)
    assert "on_train_begin" in out and "stopped: True" in out
