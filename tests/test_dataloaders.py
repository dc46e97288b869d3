"""Plain torch DataLoaders over any Dataset, first-class in ModelData, fit and Learner (issue
14): the loss inferred from any loader's targets, batches moved to the model's device (and
pinned for CUDA), inputs-only test loaders, predict_with_targs / val_y / probabilities for any
loader, lr_find over more iterations than an epoch has."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    SubsetRandomSampler,
    TensorDataset,
)

import minifast as mf
import minifast.data as mfdata
from minifast.core.loop import predict
from minifast.runtime.device import batch_mover, gather_rows

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def digits(path, bs=64, seed=0, test_targets=None):
    """sklearn's digits (1797 8x8 images, 10 classes) through plain torch DataLoaders."""
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    n_val = 360
    g = torch.Generator().manual_seed(seed)
    trn = DataLoader(TensorDataset(x[n_val:], y[n_val:]), batch_size=bs, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(x[:n_val], y[:n_val]), batch_size=2 * bs)
    test = None
    if test_targets is not None:  # the first 100 rows again, with or without targets
        ds = TensorDataset(x[:100], y[:100]) if test_targets else TensorDataset(x[:100])
        test = DataLoader(ds, batch_size=32)
    return mf.ModelData(path, trn, val, test), y[:n_val].numpy()


def digits_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def test_digits_through_a_torch_dataloader(tmp_path):
    data, val_y = digits(tmp_path)
    learn = mf.Learner(data, digits_model())
    assert learn.crit is F.cross_entropy  # inferred from the DataLoader's integer targets
    learn.fit(1e-2, 4, verbose=False)
    preds = learn.predict()
    assert preds.shape == (360, 10)
    np.testing.assert_array_equal(data.val_y, val_y)
    assert (preds.argmax(1) == data.val_y).mean() > 0.9
    p, t = learn.predict_with_targs()
    np.testing.assert_array_equal(p, preds)
    np.testing.assert_array_equal(t, val_y)
    assert t.dtype == np.int64
    probs = learn.predict(probs=True)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert (probs >= 0).all() and (probs.argmax(1) == preds.argmax(1)).all()
    np.testing.assert_array_equal(learn.predict_proba(), probs)


def test_tabular_regression_through_a_torch_dataloader(tmp_path):
    x, y = sklearn_datasets.load_diabetes(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)[:, None]
    trn = DataLoader(TensorDataset(x[100:], y[100:]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(x[:100], y[:100]), batch_size=64)
    torch.manual_seed(0)
    learn = mf.Learner(mf.ModelData(tmp_path, trn, val),
                       nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1)))
    assert learn.crit is F.mse_loss
    first = learn.fit(1e-3, 1, verbose=False)[0]
    last = learn.fit(1e-2, 5, verbose=False)[0]
    assert last < first and last < 0.7  # the variance of y is 1: the model explains some of it
    preds, targs = learn.predict_with_targs()
    np.testing.assert_array_equal(targs, y[:100].numpy())
    np.testing.assert_allclose(np.mean((preds - targs) ** 2), last, rtol=1e-5)
    with pytest.raises(ValueError, match="'mse_loss' implies no probabilities"):
        learn.predict(probs=True)


def test_probabilities_follow_the_loss(tmp_path):
    data, _ = digits(tmp_path)
    out = mf.Learner(data, digits_model(), crit=F.cross_entropy).predict()
    bce = mf.Learner(data, digits_model(), crit=nn.BCEWithLogitsLoss()).predict(probs=True)
    np.testing.assert_allclose(bce, torch.sigmoid(torch.from_numpy(out)).numpy(), rtol=1e-6)
    nll = mf.Learner(data, digits_model(), crit=F.nll_loss).predict(probs=True)
    np.testing.assert_allclose(nll, np.exp(out), rtol=1e-6)


# ---------------------------------------------------------------------- loss inference


class Squares(Dataset):
    """A map-style Dataset of (x, y) pairs, not a TensorDataset; `draws` uses the RNG."""

    def __init__(self, n=40, int_y=False, draws=False):
        self.n, self.int_y, self.draws = n, int_y, draws

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = torch.tensor([float(i)]) + (torch.rand(1) if self.draws else 0)
        return x, (torch.tensor(i % 3) if self.int_y else x**2)


class Stream(IterableDataset):
    """An IterableDataset (no item 0 to peek at) whose order draws from torch's RNG."""

    def __init__(self, y_dtype=torch.int64):
        self.y_dtype = y_dtype

    def __iter__(self):
        for i in torch.randperm(20).tolist():
            yield torch.tensor([float(i)]), torch.tensor(i % 2, dtype=self.y_dtype)


@pytest.mark.parametrize("int_y", [False, True])
def test_loss_inferred_from_any_dataset_without_disturbing_rng(tmp_path, int_y):
    trn = DataLoader(Squares(int_y=int_y, draws=True), batch_size=8, shuffle=True)
    state = torch.get_rng_state()
    crit = mf.default_crit(mf.ModelData(tmp_path, trn, None))
    assert crit is (F.cross_entropy if int_y else F.mse_loss)
    assert torch.equal(torch.get_rng_state(), state)


def test_loss_inferred_from_an_iterable_training_loader_restores_the_rng(tmp_path):
    g = torch.Generator().manual_seed(3)
    trn = DataLoader(Stream(), batch_size=4, generator=g)
    state, g_state = torch.get_rng_state(), g.get_state()
    assert mf.default_crit(mf.ModelData(tmp_path, trn, None)) is F.cross_entropy
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(g.get_state(), g_state)
    # the validation loader's first batch comes first when nothing can be peeked at
    val = DataLoader(Stream(torch.float32), batch_size=4)
    assert mf.default_crit(mf.ModelData(tmp_path, trn, val)) is F.mse_loss


def test_loss_error_says_what_was_seen(tmp_path):
    x = torch.randn(8, 2)
    flags = DataLoader(TensorDataset(x, torch.ones(8, dtype=torch.bool)), batch_size=4)
    with pytest.raises(ValueError, match=r"dtype torch.bool and shape \(1,\).*pass crit="):
        mf.default_crit(mf.ModelData(tmp_path, flags, None))
    inputs_only = DataLoader(TensorDataset(x), batch_size=4)
    with pytest.raises(ValueError, match=r"of 1 element\(s\), with no target.*pass crit="):
        mf.Learner(mf.ModelData(tmp_path, inputs_only, None), nn.Linear(2, 1))


# ---------------------------------------------------------------------- devices


class MetaProbe(nn.Module):
    """A model 'on' the meta device that records where its inputs are."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.empty(1, device="meta"))
        self.seen: list[torch.device] = []

    def forward(self, x):
        self.seen.append(x.device)
        return torch.zeros(len(x), 1)


class RecordingStepper:
    """Stands in for the Stepper: records the devices of each training batch."""

    def __init__(self, model):
        self.model, self.cbs, self.seen = model, None, []

    def step(self, xs, y, epoch=None):
        self.seen.append((xs[0].device, y.device))
        return 0.0


def test_fit_and_predict_move_loader_batches_to_the_model_device(tmp_path):
    x = torch.randn(12, 1)
    dl = DataLoader(TensorDataset(x, x), batch_size=4)
    model = MetaProbe()
    stepper = RecordingStepper(model)
    mf.fit(model, mf.ModelData(tmp_path, dl, None), 1, torch.optim.SGD([nn.Parameter(x)], 0.1),
           F.mse_loss, stepper=stepper, verbose=False)
    assert stepper.seen == [(torch.device("meta"), torch.device("meta"))] * 3
    predict(model, DataLoader(TensorDataset(x), batch_size=5))
    assert model.seen == [torch.device("meta")] * 3


def test_batches_already_on_the_device_are_not_touched():
    al = mf.ArrayLoader(torch.randn(8, 2), torch.randn(8, 1), batch_size=4, device="cpu")
    move = batch_mover(al, torch.device("cpu"))  # decided once: the loader says where it is
    batch = next(iter(al))
    assert move(batch) is batch
    dl = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    b = next(iter(dl))
    moved = batch_mover(dl, torch.device("cpu"))(b)
    assert moved[0] is b[0]  # a tensor already there is not copied
    assert batch_mover(dl, torch.device("meta"))(b)[0].device.type == "meta"
    assert mf.to_device(b, "meta")[0].device.type == "meta"


def test_arrayloader_pins_batches_bound_for_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    x, y = torch.randn(10, 3), torch.arange(10)
    al = mf.ArrayLoader(x, y, batch_size=4)  # the default device is now CUDA
    assert al.device.type == "cuda" and al.pin_memory
    assert not mf.ArrayLoader(x, y, device="cpu").pin_memory
    asked, moved = [], []
    real_empty = torch.empty

    def fake_empty(*shape, pin_memory=False, **kw):
        asked.append(pin_memory)
        return real_empty(*shape, **kw)

    monkeypatch.setattr(torch, "empty", fake_empty)
    monkeypatch.setattr(mfdata, "to_device", lambda b, d: moved.append(d) or b)
    batches = list(al)
    assert asked == [True] * 6 and moved == [al.device] * 3  # 2 columns x 3 batches, pinned
    torch.testing.assert_close(batches[0][0], x[:4])
    torch.testing.assert_close(gather_rows(x, torch.tensor([2, 0]), pin=True), x[[2, 0]])


def test_unpinned_dataloader_for_a_cuda_model_warns_once():
    ds = TensorDataset(torch.randn(8, 2))
    dl = DataLoader(ds, batch_size=4)
    with pytest.warns(UserWarning, match="pass pin_memory=True"):
        batch_mover(dl, torch.device("cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch_mover(dl, torch.device("cuda"))  # once per loader
        batch_mover(DataLoader(ds, batch_size=4, pin_memory=True), torch.device("cuda"))
        batch_mover(DataLoader(ds, batch_size=4), torch.device("cpu"))


# ---------------------------------------------------------------------- predict, targets


@pytest.mark.parametrize("test_targets", [False, True])
def test_predict_on_a_test_loader_with_or_without_targets(tmp_path, test_targets):
    data, _ = digits(tmp_path, test_targets=test_targets)
    learn = mf.Learner(data, digits_model(), crit=F.cross_entropy)
    got = learn.predict(is_test=True)
    np.testing.assert_array_equal(got, learn.predict()[:100])
    if test_targets:
        np.testing.assert_array_equal(learn.predict_with_targs(is_test=True)[1], data.val_y[:100])
    else:
        with pytest.raises(ValueError, match="yields inputs only"):
            learn.predict_with_targs(is_test=True)


def test_columnar_test_loader_yields_inputs_only(tmp_path):
    df = pd.DataFrame({"a": np.arange(30) % 4, "b": np.linspace(0, 1, 30)})
    md = mf.ColumnarModelData.from_data_frame(tmp_path, [0, 1, 2, 3, 4, 5], df,
                                              np.linspace(0, 1, 30), ["a"], bs=8, test_df=df[:7])
    assert len(next(iter(md.test_dl))) == 2  # (cats, conts): no dummy targets

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lin = nn.Embedding(4, 2), nn.Linear(3, 1)

        def forward(self, cats, conts):
            return self.lin(torch.cat([self.emb(cats[:, 0]), conts], 1))

    learn = mf.Learner(md, Model())
    assert learn.predict(is_test=True).shape == (7, 1)
    with pytest.raises(ValueError, match=r"a batch has 4 element\(s\), but the model takes 2"):
        predict(learn.model, [(torch.zeros(2, 1, dtype=torch.long),) * 4], n_inputs=2)


def test_val_y_and_trn_y_for_any_loader(tmp_path):
    ds = Squares(n=30)
    ys = torch.stack([ds[i][1] for i in range(30)]).numpy()
    g = torch.Generator().manual_seed(1)
    trn = DataLoader(ds, batch_size=7, shuffle=True, generator=g)
    val = DataLoader(ds, batch_size=8)
    md = mf.ModelData(tmp_path, trn, val)
    state, g_state = torch.get_rng_state(), g.get_state()
    np.testing.assert_array_equal(md.val_y, ys)
    np.testing.assert_array_equal(md.trn_y, ys)  # the training set in its own order
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(g.get_state(), g_state)
    assert md.val_y is md.val_y  # read once, then cached
    md.val_dl = DataLoader(ds, sampler=SubsetRandomSampler([5, 2, 9]), batch_size=2)
    np.testing.assert_array_equal(md.val_y, ys[[5, 2, 9]])  # a new loader is read again
    al = mf.ModelData(tmp_path, mf.ArrayLoader(ds, batch_size=4, shuffle=True), None)
    np.testing.assert_array_equal(al.trn_y, ys)


# ---------------------------------------------------------------------- lr_find


def test_lr_find_over_a_short_epoch_runs_num_it_iterations_and_restores(tmp_path):
    data, _ = digits(tmp_path, bs=256)
    nb = len(data.trn_dl)
    learn = mf.Learner(data, digits_model(), crit=F.cross_entropy)
    learn.fit(1e-3, 1, verbose=False)
    weights = copy.deepcopy(learn.model.state_dict())
    opt_state = copy.deepcopy(learn.opt.state_dict())
    state, g_state = torch.get_rng_state(), data.trn_dl.generator.get_state()
    learn.lr_find(num_it=5 * nb + 3, verbose=False)
    n = len(learn.recorder.lrs)
    assert n == 5 * nb + 3 or (learn.sched.diverged and n > nb), (n, nb)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for i, s in opt_state["state"].items():
        for k, v in s.items():
            assert torch.equal(learn.opt.state_dict()["state"][i][k], v), (i, k)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(data.trn_dl.generator.get_state(), g_state)
    learn.lr_find(verbose=False, end_lr=1e-1)  # the default: 100 iterations, as fastai 2
    assert len(learn.recorder.lrs) == 100


# ---------------------------------------------------------------------- small cuts


def test_raw_categorical_codes_error_says_how_to_map_them(tmp_path):
    df = pd.DataFrame({"city": ["a", "b", "a", "c"] * 5, "n": np.arange(20.0)})
    with pytest.raises(ValueError, match=r"\['city'\].*astype\('category'\)\.cat\.codes") as e:
        mf.ColumnarModelData.from_data_frame(tmp_path, [0, 1], df, np.zeros(20), ["city"])
    assert "CollabFilterDataset" not in str(e.value)


def test_star_import_gives_path():
    ns: dict = {}
    exec("from minifast.all import *", ns)
    assert ns["Path"] is __import__("pathlib").Path


def test_loader_device_is_the_loaders_own_else_the_default():
    from minifast.runtime.device import default_device, loader_device

    arr = mf.ArrayLoader(torch.zeros(4, 1), torch.zeros(4, 0), torch.zeros(4, 1), batch_size=2,
                         device="meta")
    assert loader_device(arr) == torch.device("meta")
    plain = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2)
    assert loader_device(plain) == default_device()
