"""Metrics over the whole validation set, the stateful protocol, and the built-in metrics.

`validate` calls a metric once on the whole set's predictions and targets (not per batch,
averaged), or feeds a stateful metric batch by batch; the built-ins are checked against
hand/numpy computations (scikit-learn's definitions, written out).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import minifast
from minifast import ColumnarModelData, ModelData, Stepper, fit, get_cv_idxs, predict, validate
from minifast.metrics import accuracy, f1, fbeta, mae, r2, rmse


def my_rmse(preds, y):
    """A user's RMSE, as they would write it for one batch."""
    return torch.sqrt(F.mse_loss(preds, y))


class StreamingRMSE:
    """The stateful protocol: sums of squared errors and counts, batch by batch."""

    def __init__(self):
        self.resets = 0
        self.__name__ = "streaming_rmse"

    def reset(self):
        self.resets += 1
        self.sse, self.n = 0.0, 0

    def accumulate(self, preds, y):
        self.sse += float(((preds - y) ** 2).sum())
        self.n += y.numel()

    def value(self):
        return (self.sse / self.n) ** 0.5


@pytest.fixture
def uneven(tmp_path):
    """600 ratings; 120 validation rows in batches of 50, 50 and 20."""
    from conftest import make_ratings

    cats, y = make_ratings()
    md = ColumnarModelData.from_arrays(tmp_path, get_cv_idxs(len(y)), cats, y, bs=25, seed=1)
    assert [len(b[-1]) for b in md.val_dl] == [50, 50, 20]
    return md


def _true_rmse(model, md) -> float:
    p = predict(model, md.val_dl).astype(np.float64)
    return float(np.sqrt(np.mean((p - md.val_y.astype(np.float64)) ** 2)))


def test_custom_rmse_in_fit_equals_rmse_of_predict(uneven, tiny_model):
    opt = torch.optim.Adam(tiny_model.parameters(), 1e-2)
    res = fit(tiny_model, uneven, 2, opt, F.mse_loss, metrics=[my_rmse], verbose=False)
    # per-batch averaging (weighted by batch size) gives a different number here
    assert res[1] == pytest.approx(_true_rmse(tiny_model, uneven), rel=1e-6, abs=0)
    assert res[0] == pytest.approx(_true_rmse(tiny_model, uneven) ** 2, rel=1e-5)


def test_builtin_rmse_in_fit_equals_rmse_of_predict(uneven, tiny_model):
    opt = torch.optim.Adam(tiny_model.parameters(), 1e-2)
    res = fit(tiny_model, uneven, 1, opt, F.mse_loss, metrics=[rmse], verbose=False)
    assert res[1] == pytest.approx(_true_rmse(tiny_model, uneven), rel=1e-6, abs=0)
    assert "rmse" in res.history[0]


def test_stateful_protocol_equals_whole_set_metric_and_resets_each_validation(uneven, tiny_model):
    stream = StreamingRMSE()
    opt = torch.optim.Adam(tiny_model.parameters(), 1e-2)
    res = fit(tiny_model, uneven, 3, opt, F.mse_loss, metrics=[my_rmse, stream], verbose=False)
    assert stream.resets == 3
    for row in res.history:
        assert row["streaming_rmse"] == pytest.approx(row["my_rmse"], rel=1e-6)
    assert res[2] == pytest.approx(_true_rmse(tiny_model, uneven), rel=1e-6)


def test_a_stateful_metric_need_not_be_callable_and_refuses_a_sharded_loader(uneven, tiny_model):
    stepper = Stepper(tiny_model, torch.optim.SGD(tiny_model.parameters(), 0.1), F.mse_loss)
    loss, value = validate(stepper, uneven.val_dl, minifast.checks.check_metrics(StreamingRMSE()))
    assert value == pytest.approx(_true_rmse(tiny_model, uneven), rel=1e-6)
    shard = minifast.ArrayLoader(*uneven.val_dl.tensors, batch_size=10, rank=0, world_size=2)
    with pytest.raises(ValueError, match="stateful metric.*shard"):
        validate(stepper, shard, [StreamingRMSE()])


def test_whole_set_metrics_with_a_torch_dataloader(uneven, tiny_model):
    cats, conts, y = uneven.val_dl.tensors
    ds = torch.utils.data.TensorDataset(cats, conts, y)
    dl = torch.utils.data.DataLoader(ds, batch_size=7)  # 17 batches of 7 and one of 1
    stepper = Stepper(tiny_model, torch.optim.SGD(tiny_model.parameters(), 0.1), F.mse_loss)
    _, got, got_r2 = validate(stepper, dl, [my_rmse, r2])
    assert got == pytest.approx(_true_rmse(tiny_model, uneven), rel=1e-6)
    p = predict(tiny_model, uneven.val_dl).astype(np.float64).ravel()
    t = y.numpy().astype(np.float64).ravel()
    assert got_r2 == pytest.approx(1 - ((t - p) ** 2).sum() / ((t - t.mean()) ** 2).sum(), rel=1e-9)
    assert validate(stepper, ModelData(".", dl, None).val_dl) == []


def test_a_metric_returning_a_vector_is_refused_by_name(uneven, tiny_model):
    def per_row(preds, y):
        return (preds - y).abs()

    stepper = Stepper(tiny_model, torch.optim.SGD(tiny_model.parameters(), 0.1), F.mse_loss)
    with pytest.raises(ValueError, match=r"metric per_row returned Tensor\[120, 1\]"):
        validate(stepper, uneven.val_dl, [per_row])


# --- the built-ins, against hand and numpy computations ----------------------------------

def test_regression_metrics_match_numpy():
    rng = np.random.RandomState(0)
    t = rng.randn(200, 1).astype(np.float32)
    p = (t + rng.randn(200, 1) * 0.3).astype(np.float32)
    tt, pp = t.astype(np.float64), p.astype(np.float64)
    assert float(rmse(torch.tensor(p), torch.tensor(t))) == pytest.approx(
        np.sqrt(np.mean((pp - tt) ** 2)), rel=1e-12)
    assert float(mae(p, t)) == pytest.approx(np.mean(np.abs(pp - tt)), rel=1e-12)  # numpy in
    assert float(r2(p, t)) == pytest.approx(
        1 - ((tt - pp) ** 2).sum() / ((tt - tt.mean()) ** 2).sum(), rel=1e-12)
    # several outputs: one R² per column, averaged (scikit-learn's uniform_average)
    t2 = rng.randn(50, 3)
    p2 = t2 * [1.0, 0.5, -1.0] + rng.randn(50, 3) * 0.1
    per_col = 1 - ((t2 - p2) ** 2).sum(0) / ((t2 - t2.mean(0)) ** 2).sum(0)
    assert float(r2(p2, t2)) == pytest.approx(per_col.mean(), rel=1e-12)
    assert np.isnan(float(r2([1.0, 2.0], [3.0, 3.0]))), "R² is undefined for constant targets"
    # hand values
    assert float(rmse(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [5.0]]))) == pytest.approx(
        np.sqrt(2.5))
    assert float(mae(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 5.0]))) == 1.5


def test_metrics_return_0d_tensors():
    p, t = torch.randn(8, 1), torch.randn(8, 1)
    for m in (rmse, mae, r2, accuracy, f1):
        v = m(p, (t > 0).float() if m in (accuracy, f1) else t)
        assert isinstance(v, torch.Tensor) and v.ndim == 0, m.__name__


def test_accuracy_multiclass_argmax_and_binary_logits_at_zero():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.1, 0.2], [5.0, 0.0, 0.0]])
    assert float(accuracy(logits, torch.tensor([0, 1, 0, 0]))) == 0.75
    # one column of logits: positive when > 0, against 0/1 targets of the same shape
    one = torch.tensor([[2.0], [-1.0], [0.5], [-0.1]])
    assert float(accuracy(one, torch.tensor([[1.0], [0.0], [0.0], [0.0]]))) == 0.75
    assert float(accuracy(one.view(-1), torch.tensor([1, 0, 1, 0]))) == 1.0


def _f_beta(tp, fp, fn, beta):
    b2 = beta**2
    return (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp) if tp + fp + fn else 0.0


def test_fbeta_binary_and_multilabel_are_micro_averaged():
    logits = torch.tensor([[1.0, -1.0], [2.0, 0.5], [-0.5, 0.3], [-2.0, -1.0], [0.2, -0.2]])
    targs = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0]]).float()
    # positives: (0,0) (1,0) (1,1) (2,1) (4,0); tp = (0,0) (1,1) (2,1) (4,0); fp = (1,0);
    # fn = (2,0) (3,1)
    for beta in (0.5, 1, 2):
        assert float(fbeta(logits, targs, beta)) == pytest.approx(_f_beta(4, 1, 2, beta))
    assert float(f1(logits, targs)) == pytest.approx(_f_beta(4, 1, 2, 1))
    assert float(fbeta(logits, targs)) == pytest.approx(_f_beta(4, 1, 2, 2)), "beta=2 default"
    # probabilities: thresh=0.5
    assert float(f1(torch.sigmoid(logits), targs, thresh=0.5)) == pytest.approx(_f_beta(4, 1, 2, 1))
    # a single binary column against numpy counts
    rng = np.random.RandomState(1)
    p, t = rng.randn(300), (rng.rand(300) > 0.6).astype(np.float32)
    pos, tru = p > 0, t > 0.5
    tp, fp, fn = (pos & tru).sum(), (pos & ~tru).sum(), (~pos & tru).sum()
    assert float(fbeta(p, t, 2)) == pytest.approx(_f_beta(tp, fp, fn, 2), rel=1e-12)
    # no positive anywhere: precision and recall undefined, the score is 0
    assert float(f1(torch.full((4,), -1.0), torch.zeros(4))) == 0.0


def test_fbeta_multiclass_is_macro_averaged_over_present_classes():
    # 4 class scores; class 3 appears neither in targets nor predictions: not averaged
    pred_cls = np.array([0, 0, 1, 2, 2, 1, 0, 2])
    targs = np.array([0, 1, 1, 2, 0, 1, 0, 1])
    logits = np.eye(4)[pred_cls]
    for beta in (1, 2):
        per_class = [_f_beta(((pred_cls == c) & (targs == c)).sum(),
                             ((pred_cls == c) & (targs != c)).sum(),
                             ((pred_cls != c) & (targs == c)).sum(), beta) for c in range(3)]
        assert float(fbeta(logits, targs, beta)) == pytest.approx(np.mean(per_class), rel=1e-12)
    # hand values for f1: class 0: tp 2 fp 1 fn 1 -> 2/3; class 1: tp 2 fp 0 fn 2 -> 2/3;
    # class 2: tp 1 fp 2 fn 0 -> 1/2
    assert float(f1(logits, targs)) == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        f1(logits, np.array([0, 1, 1, 2, 0, 1, 0, 7]))
    with pytest.raises(ValueError, match="beta"):
        fbeta(logits, targs, beta=0)


@pytest.mark.parametrize("metric", [rmse, mae, r2, accuracy, fbeta, f1])
def test_mismatched_shapes_are_refused_naming_both(metric):
    with pytest.raises(ValueError, match=rf"{metric.__name__}: preds have shape \(6, 1\) and targs "
                                         rf"have shape \(5,\)"):
        metric(torch.zeros(6, 1), torch.zeros(5))


def test_regression_metrics_refuse_n1_against_n():
    # same numbers of elements, different shapes: the loss refuses it too (no broadcast)
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(4,\)"):
        rmse(torch.zeros(4, 1), torch.zeros(4))


def test_metrics_are_exported():
    import minifast.all as star

    for name in ("accuracy", "rmse", "mae", "r2", "fbeta", "f1"):
        assert name in minifast.__all__ and getattr(star, name) is getattr(minifast.metrics, name)
