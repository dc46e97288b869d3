"""Stochastic weight averaging (`SWA`, `Learner.fit(use_swa=True)`) and `fix_batchnorm`: the
average is the mean of the right epochs' weights, training is untouched by it, its columns are
the average's validation, BatchNorm statistics are recomputed for it, and it resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from minifast import (
    SWA,
    ArrayLoader,
    Callback,
    Checkpoint,
    CSVLogger,
    Learner,
    MemoryLogger,
    ModelData,
    Printer,
    fit,
    fix_batchnorm,
    rmse,
)
from minifast.core.loop import validate
from minifast.core.stepper import Stepper


def regression_data(path, n: int = 192, bs: int = 32, seed: int = 0) -> ModelData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.3 * torch.randn(n, 1, generator=g)
    trn = ArrayLoader(x[:160], y[:160], batch_size=bs, shuffle=True, seed=seed)
    return ModelData(path, trn, ArrayLoader(x[160:], y[160:], batch_size=bs))


def mlp(batchnorm: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), *([nn.BatchNorm1d(8)] if batchnorm else []),
                         nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 1))


class EpochWeights(Callback):
    """The model's weights at every epoch end (what SWA must average)."""

    order = -50

    def __init__(self):
        self.seen = []

    def on_validate_end(self, vals):  # before SWA (order -10) reads them
        self.seen.append({k: v.detach().clone() for k, v in self.state.model.state_dict().items()})


def run(tmp_path, n_epochs=6, callbacks=(), model=None, data=None, **kw):
    model = mlp() if model is None else model
    data = regression_data(tmp_path) if data is None else data
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    res = fit(model, data, n_epochs, opt, F.mse_loss, metrics=[rmse], callbacks=list(callbacks),
              verbose=False, progress=False, **kw)
    return model, res


def test_the_average_is_the_mean_of_the_epochs_from_swa_start(tmp_path):
    rec, swa = EpochWeights(), SWA(swa_start=3, swa_eval_freq=2)
    model, _ = run(tmp_path, 6, [rec, swa])
    assert swa.swa_n == 4
    for name, _ in model.named_parameters():  # epochs 3..6, 1-indexed
        want = torch.stack([w[name] for w in rec.seen[2:]]).mean(0)
        torch.testing.assert_close(swa.swa_model.state_dict()[name], want, rtol=1e-6, atol=1e-7)
    assert not torch.equal(swa.swa_model[0].weight, model[0].weight)


def test_training_is_exactly_what_it_is_without_averaging(tmp_path):
    plain, r0 = run(tmp_path / "a", 5)
    rng_after = torch.get_rng_state()
    averaged, r1 = run(tmp_path / "b", 5, [SWA(swa_start=2, swa_eval_freq=1)])
    for a, b in zip(plain.state_dict().values(), averaged.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(rng_after, torch.get_rng_state())
    for h0, h1 in zip(r0.history, r1.history, strict=True):
        assert (h0["trn_loss"], h0["val_loss"], h0["rmse"]) == (h1["trn_loss"], h1["val_loss"],
                                                                  h1["rmse"])


def test_columns_hold_the_averages_validation_when_due_and_nan_otherwise(tmp_path):
    swa = SWA(swa_start=2, swa_eval_freq=2)
    _, res = run(tmp_path, 6, [swa])
    due = [not math.isnan(h["swa_loss"]) for h in res.history]
    assert due == [False, True, False, True, False, True]  # epochs 2, 4 and the last
    assert all(math.isnan(h["swa_rmse"]) != d for h, d in zip(res.history, due, strict=True))
    data = regression_data(tmp_path)
    loss, r = validate(Stepper(swa.swa_model, None, F.mse_loss), data.val_dl, [rmse])
    assert res.history[-1]["swa_loss"] == pytest.approx(loss, rel=1e-6)
    assert res.history[-1]["swa_rmse"] == pytest.approx(r, rel=1e-6)
    assert list(res) == [res.history[-1][k] for k in ("val_loss", "rmse", "swa_loss", "swa_rmse")]
    assert res.history[-1]["val_loss"] != res.history[-1]["swa_loss"]


def test_the_epoch_table_and_csv_log_show_the_columns(tmp_path):
    lines = []
    run(tmp_path, 3, [SWA(swa_start=1, swa_eval_freq=1), Printer(write=lines.append),
                      CSVLogger(tmp_path / "log.csv")])
    assert lines[0].split() == ["epoch", "trn_loss", "val_loss", "rmse", "swa_loss", "swa_rmse",
                                "time"]
    assert len(lines) == 4 and all(len(line.split()) == 7 for line in lines[1:])
    head = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert head[3:7] == ["val_loss", "rmse", "swa_loss", "swa_rmse"]


def test_a_logger_gets_the_averages_values_only_in_the_epochs_that_have_them(tmp_path):
    log = MemoryLogger()
    _, res = run(tmp_path, 5, [SWA(swa_start=2, swa_eval_freq=2), log])
    assert [step for step, _ in log.scalars["valid/swa_loss"]] == [
        h["iteration"] for h in res.history if not math.isnan(h["swa_loss"])] == [10, 20, 25]
    assert len(log.scalars["valid/val_loss"]) == 5


def test_batchnorm_statistics_are_recomputed_for_the_average(tmp_path):
    data = regression_data(tmp_path)
    swa = SWA(swa_start=2, swa_eval_freq=10)
    model, res = run(tmp_path, 4, [swa], model=mlp(batchnorm=True), data=data)
    bn = swa.swa_model[1]
    with torch.no_grad():  # the first layer's outputs over the training data, equal batches
        h = swa.swa_model[0](data.trn_dl.tensors[0])
    torch.testing.assert_close(bn.running_mean, h.mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(bn.running_mean, model[1].running_mean)
    assert bn.momentum == model[1].momentum == 0.1


def test_fix_batchnorm_leaves_rngs_loader_and_a_model_without_batchnorm_alone(tmp_path):
    x, y = torch.randn(64, 4), torch.randn(64, 1)

    def loader():
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                          generator=torch.Generator().manual_seed(3))

    model, dl, untouched = mlp(batchnorm=True).eval(), loader(), loader()
    state = torch.get_rng_state()
    fix_batchnorm(model, dl)
    assert torch.equal(torch.get_rng_state(), state) and not model.training
    assert all(torch.equal(a[0], b[0]) for a, b in zip(dl, untouched, strict=True))
    plain = mlp()
    sd = {k: v.clone() for k, v in plain.state_dict().items()}
    fix_batchnorm(plain, dl)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in sd.items())


class Boom(Exception):
    pass


def test_an_error_while_the_average_is_validated_puts_the_weights_back(tmp_path):
    calls = []

    def flaky(preds, y):
        calls.append(1)
        if len(calls) == 4:  # epoch 2's SWA validation (epoch 1: model, swa; epoch 2: model)
            raise Boom
        return float(((preds - y) ** 2).mean().sqrt())

    model = mlp()
    rec = EpochWeights()
    data = regression_data(tmp_path)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(Boom):
        fit(model, data, 3, opt, F.mse_loss, metrics=[flaky], callbacks=[rec, SWA(1, 1)],
            verbose=False, progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, rec.seen[-1][k])


def test_resume_ends_with_the_uninterrupted_average(tmp_path):
    full = SWA(swa_start=2, swa_eval_freq=1)
    model, res = run(tmp_path / "full", 5, [full])
    ck = tmp_path / "ck"
    first = SWA(swa_start=2, swa_eval_freq=1)
    run(tmp_path / "a", 5, [first, Checkpoint(ck, keep=None), StopAt(3)])
    again = SWA(swa_start=2, swa_eval_freq=1)
    model2, res2 = run(tmp_path / "a", 5, [again, Checkpoint(ck, keep=None)],
                       resume=ck / "ckpt-00000015.pt")  # epoch 3 of 5, 5 batches an epoch
    assert again.swa_n == full.swa_n == 4
    for k, v in full.swa_model.state_dict().items():
        assert torch.equal(v, again.swa_model.state_dict()[k]), k
    assert [h["swa_loss"] for h in res2.history[1:]] == [h["swa_loss"] for h in res.history[1:]]
    with pytest.raises(ValueError, match="swa_start, swa_eval_freq = \\(2, 1\\).*\\(3, 1\\)"):
        run(tmp_path / "a", 5, [SWA(swa_start=3, swa_eval_freq=1)], resume=ck / "ckpt-00000015.pt")


class StopAt(Callback):
    """Ends the run after `n` epochs (as a crash between epochs would)."""

    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, vals):
        return self.state.epoch + 1 >= self.n


@pytest.mark.filterwarnings("ignore:resume.*holds no state for callback SWA")
def test_resuming_without_an_average_says_what_the_average_misses(tmp_path):
    ck = tmp_path / "ck"
    run(tmp_path, 5, [Checkpoint(ck, keep=None), StopAt(3)])
    with pytest.warns(UserWarning, match="holds epochs 4 on only, not 2 on"):
        run(tmp_path, 5, [SWA(swa_start=2)], resume=ck / "ckpt-00000015.pt")


def test_bad_settings_are_refused(tmp_path):
    for kw, msg in (({"swa_start": 0}, "swa_start"), ({"swa_eval_freq": 1.5}, "swa_eval_freq"),
                    ({"swa_start": True}, "swa_start")):
        with pytest.raises(ValueError, match=f"{msg} \\(SWA\\) must be a positive integer"):
            SWA(**kw)
    with pytest.raises(ValueError, match="SWA\\(swa_start=7\\): this run has 6 epoch"):
        run(tmp_path, 6, [SWA(swa_start=7)])


def test_a_callback_that_names_a_column_but_gives_no_value_is_named(tmp_path):
    class Forgetful(Callback):
        def on_train_begin(self):
            self.state.extra_names.append("mine")

    with pytest.raises(ValueError, match="3 columns .*'mine'.* 2 values"):
        run(tmp_path, 1, [Forgetful()])


def test_without_a_validation_loader_it_only_averages(tmp_path):
    data = regression_data(tmp_path)
    data = ModelData(tmp_path, data.trn_dl, None)
    swa = SWA(swa_start=2)
    _, res = run(tmp_path, 3, [swa], data=data)
    assert swa.swa_n == 2 and "swa_loss" not in res.history[-1]


def test_learner_use_swa_keeps_swa_model_and_predicts_with_it(tmp_path):
    data = regression_data(tmp_path)
    learn = Learner(data, mlp(), metrics=[rmse])
    with pytest.raises(ValueError, match="no swa_model yet"):
        learn.predict(use_swa=True)
    res = learn.fit(1e-2, 4, use_swa=True, swa_start=3, swa_eval_freq=1, verbose=False,
                    progress=False)
    assert isinstance(learn.swa_model, nn.Module) and learn.swa_model is not learn.model
    preds = learn.predict(use_swa=True)
    with torch.no_grad():
        want = learn.swa_model.eval()(data.val_dl.tensors[0]).numpy()
    np.testing.assert_allclose(preds, want, rtol=1e-6)
    p, t = learn.predict_with_targs(use_swa=True)
    np.testing.assert_allclose(p, want, rtol=1e-6)
    assert res.history[-1]["swa_rmse"] == pytest.approx(
        float(np.sqrt(((preds - t) ** 2).mean())), rel=1e-5)
    assert not np.allclose(learn.predict(), preds)
    assert [math.isnan(h["swa_loss"]) for h in res.history] == [True, True, False, False]
