import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minifast import (
    ArrayLoader,
    Callback,
    ModelData,
    NonFiniteLossError,
    Stepper,
    StopTraining,
    fit,
    predict,
    set_lrs,
    validate,
)


def test_fit_returns_final_vals_and_history(tiny_model, tiny_data, capsys):
    opt = torch.optim.Adam(tiny_model.parameters(), 1e-2)
    before = validate(Stepper(tiny_model, opt, F.mse_loss), tiny_data.val_dl)
    res = fit(tiny_model, tiny_data, 3, opt, F.mse_loss, metrics=[F.l1_loss])
    assert isinstance(res, list) and len(res) == 2
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    assert res == [res.history[-1]["val_loss"], res.history[-1]["l1_loss"]]
    assert res[0] < before[0], "training should lower the validation loss"
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["epoch", "trn_loss", "val_loss", "l1_loss", "time"]
    assert len(out) == 4 and out[1].split()[0] == "0" and out[3].split()[0] == "2"
    assert res.history[0]["iteration"] == len(tiny_data.trn_dl)


def test_debiased_average_matches_recomputation(tiny_model, tiny_data):
    opt = torch.optim.SGD(tiny_model.parameters(), 0.05)
    res = fit(tiny_model, tiny_data, 2, opt, F.mse_loss, verbose=False)
    rec = res.recorder
    avg, mom = 0.0, 0.98
    for i, loss in enumerate(rec.losses, start=1):
        avg = avg * mom + loss * (1 - mom)
        assert math.isclose(rec.smooth_losses[i - 1], avg / (1 - mom**i), rel_tol=1e-12)
    assert rec.iterations == list(range(1, len(rec.losses) + 1))
    assert math.isclose(res.history[-1]["trn_loss"], rec.smooth_losses[-1])


class EventLog(Callback):
    def __init__(self, log, name="a", stop_at=None, order=0):
        self.log, self.name, self.stop_at, self.order = log, name, stop_at, order

    def on_train_begin(self):
        self.log.append((self.name, "train_begin"))

    def on_epoch_begin(self):
        self.log.append((self.name, "epoch_begin"))

    def on_batch_begin(self):
        self.log.append((self.name, "batch_begin"))

    def on_backward_begin(self):
        self.log.append((self.name, "backward_begin"))

    def on_backward_end(self):
        self.log.append((self.name, "backward_end"))

    def on_step_begin(self):
        self.log.append((self.name, "step_begin"))

    def on_step_end(self):
        self.log.append((self.name, "step_end"))

    def on_batch_end(self, loss):
        self.log.append((self.name, "batch_end"))
        return self.stop_at is not None and self.state.iteration == self.stop_at

    def on_validate_begin(self):
        self.log.append((self.name, "validate_begin"))

    def on_validate_end(self, vals):
        self.log.append((self.name, "validate_end"))

    def on_epoch_end(self, vals):
        self.log.append((self.name, "epoch_end"))

    def on_train_end(self):
        self.log.append((self.name, "train_end"))


def test_event_order_and_counts_with_stop(tiny_model, tiny_data):
    log = []
    n_b = len(tiny_data.trn_dl)
    stop_at = n_b + 4  # iteration counts finished batches: the 4th batch of epoch 1
    cbs = [EventLog(log, "b", order=5), EventLog(log, "a", stop_at=stop_at, order=1)]
    opt = torch.optim.SGD(tiny_model.parameters(), 0.01)
    res = fit(tiny_model, tiny_data, 5, opt, F.mse_loss, callbacks=cbs, verbose=False)
    assert res.state.stopped and len(res.history) == 1
    names = [n for n, _ in log]
    assert names[0::2] == ["a"] * (len(log) // 2) and names[1::2] == ["b"] * (len(log) // 2)
    ev = [e for n, e in log if n == "a"]
    per_batch = ["batch_begin", "backward_begin", "backward_end", "step_begin", "step_end", "batch_end"]
    expected = ["train_begin", "epoch_begin", *per_batch * n_b, "validate_begin", "validate_end",
                "epoch_end", "epoch_begin", *per_batch * 4, "train_end"]
    assert ev == expected
    # b saw the batch_end on which a asked to stop
    assert [e for n, e in log if n == "b"] == expected


def test_stop_from_epoch_end_and_stop_training_exception(tiny_model, tiny_data):
    class StopEpoch(Callback):
        def on_epoch_end(self, vals):
            return self.state.epoch == 1

    opt = torch.optim.SGD(tiny_model.parameters(), 0.01)
    res = fit(tiny_model, tiny_data, 5, opt, F.mse_loss, callbacks=[StopEpoch()], verbose=False)
    assert len(res.history) == 2 and res.state.stopped

    class Raise(Callback):
        def on_epoch_begin(self):
            if self.state.epoch == 2:
                raise StopTraining

    res = fit(tiny_model, tiny_data, 5, opt, F.mse_loss, callbacks=[Raise()], verbose=False)
    assert len(res.history) == 2 and res.state.stopped


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_on_train_end_runs_after_exception(tiny_model, tiny_data, exc):
    log = []

    class Boom(Callback):
        def on_batch_begin(self):
            if self.state.iteration == 5:
                raise exc

    opt = torch.optim.SGD(tiny_model.parameters(), 0.01)
    with pytest.raises(type(exc)):
        fit(tiny_model, tiny_data, 2, opt, F.mse_loss, callbacks=[Boom(), EventLog(log)], verbose=False)
    assert log[-1] == ("a", "train_end")
    assert sum(e == "batch_end" for _, e in log) == 5
    assert all(torch.isfinite(p).all() for p in tiny_model.parameters())
    # the model is usable afterwards
    fit(tiny_model, tiny_data, 1, opt, F.mse_loss, verbose=False)


def test_unused_events_are_not_called():
    from minifast import CallbackHandler

    class OnlyEpoch(Callback):
        def on_epoch_end(self, vals):
            pass

    h = CallbackHandler([OnlyEpoch()])
    assert h.has("on_epoch_end")
    assert not any(h.has(e) for e in ("on_batch_begin", "on_batch_end", "on_step_begin"))


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_broadcasting_guard(tiny_data):
    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Embedding(30, 1)

        def forward(self, cats, conts):
            return self.w(cats[:, 0]).squeeze(1)  # [bs] vs y [bs, 1]

    m = Flat()
    with pytest.raises(ValueError, match=r"broadcast.*\(32, 32\)"):
        fit(m, tiny_data, 1, torch.optim.SGD(m.parameters(), 0.1), F.mse_loss, verbose=False)

    class Wide(Flat):
        def forward(self, cats, conts):
            return torch.cat([self.w(cats[:, 0])] * 3, 1)  # [bs, 3] vs [bs, 1]

    m = Wide()
    with pytest.raises(ValueError, match=r"output\s+of shape \(32, 3\)"):
        fit(m, tiny_data, 1, torch.optim.SGD(m.parameters(), 0.1),
            lambda p, y: torch.nn.functional.mse_loss(p, y.expand(-1, 2)), verbose=False)


def test_set_lrs_several_groups():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    set_lrs(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    set_lrs(opt, [0.01, 0.02])
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02]
    set_lrs(opt, np.array([0.3, 0.4]))
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.4]
    with pytest.raises(ValueError, match="3 values .* 2 parameter group"):
        set_lrs(opt, [0.1, 0.2, 0.3])


def test_validate_weights_by_batch_size():
    torch.manual_seed(0)
    x = torch.randn(37, 3)
    y = torch.randn(37, 1)
    model = torch.nn.Linear(3, 1)
    dl = ArrayLoader(x, y, batch_size=10, device="cpu")
    st = Stepper(model, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss)
    loss, mae = validate(st, dl, [F.l1_loss])
    with torch.no_grad():
        assert loss == pytest.approx(F.mse_loss(model(x), y).item(), rel=1e-5)
        assert mae == pytest.approx(F.l1_loss(model(x), y).item(), rel=1e-5)
    assert model.training


def test_predict_in_order(tiny_model, tiny_data):
    p = predict(tiny_model, tiny_data.val_dl)
    assert p.shape == (len(tiny_data.val_y), 1)
    cats = tiny_data.val_dl.tensors[0]
    with torch.no_grad():
        np.testing.assert_allclose(p, tiny_model(cats, None).numpy(), rtol=1e-6)


def test_metrics_must_be_callable(tiny_model, tiny_data):
    with pytest.raises(ValueError, match="metrics must be callables"):
        fit(tiny_model, tiny_data, 1, torch.optim.SGD(tiny_model.parameters(), 0.1), F.mse_loss,
            metrics=["accuracy"])


def test_nan_loss_stops_with_context_and_keeps_weights(tiny_model, tiny_data):
    class Poison(Callback):
        def on_batch_begin(self):
            if self.state.iteration == 7:
                self.snapshot = {k: v.clone() for k, v in self.state.model.state_dict().items()}
                self.state.y = self.state.y * float("nan")

    poison = Poison()
    opt = torch.optim.Adam(tiny_model.parameters(), 1e-2)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, iteration 7 .*lr 0\.01.*smoothed loss"):
        fit(tiny_model, tiny_data, 2, opt, F.mse_loss, callbacks=[poison], verbose=False)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, poison.snapshot[k])


def test_clip_and_reg_fn(tiny_model, tiny_data):
    norms = []

    class GradNorm(Callback):
        def on_step_begin(self):
            g = [p.grad for p in self.state.model.parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([x.norm() for x in g])).item())

    calls = []

    def reg_fn(out, xs, loss):
        calls.append(1)
        return loss + 0.0 * out.sum()

    opt = torch.optim.SGD(tiny_model.parameters(), 10.0)
    fit(tiny_model, tiny_data, 1, opt, F.mse_loss, callbacks=[GradNorm()], clip=1e-3,
        reg_fn=reg_fn, verbose=False)
    assert max(norms) <= 1e-3 * (1 + 1e-4)
    assert len(calls) == len(tiny_data.trn_dl)


def test_stepper_returns_raw_loss_and_evaluate_is_eval_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Dropout(0.5))
    opt = torch.optim.SGD(model.parameters(), 0.0)
    st = Stepper(model, opt, F.mse_loss, reg_fn=lambda out, xs, loss: loss + 100.0)
    x, y = torch.ones(4, 2), torch.zeros(4, 1)
    raw = st.step([x], y)
    assert raw < 100
    preds, loss = st.evaluate([x], y)
    assert not preds.requires_grad and model.training
    torch.testing.assert_close(preds, model[0](x).detach())


def test_decoupled_weight_decay_follows_lr():
    from minifast import set_wds

    p = torch.nn.Parameter(torch.ones(3))
    model = torch.nn.Module()
    model.p = p
    opt = torch.optim.SGD([p], lr=0.1)
    set_wds(opt, 0.5, decoupled=True)
    st = Stepper(model, opt, lambda out, y: (out * 0).sum())
    model.forward = lambda x: p * x
    st.step([torch.ones(3)], None)
    torch.testing.assert_close(p.detach(), torch.full((3,), 1 - 0.1 * 0.5))
    assert opt.param_groups[0]["weight_decay"] == 0


def test_fit_over_plain_torch_dataloader(tiny_model):
    from conftest import make_ratings

    cats, y = make_ratings()
    ds = torch.utils.data.TensorDataset(torch.from_numpy(cats), torch.zeros(len(y), 0),
                                        torch.from_numpy(y)[:, None])
    data = ModelData(".", torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True),
                     torch.utils.data.DataLoader(ds, batch_size=64))
    res = fit(tiny_model, data, 1, torch.optim.Adam(tiny_model.parameters(), 1e-2), F.mse_loss,
              verbose=False)
    assert len(res.history) == 1
