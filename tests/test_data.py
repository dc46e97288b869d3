import numpy as np
import pandas as pd
import pytest
import torch

from minifast import ArrayLoader, ColumnarModelData, ModelData, get_cv_idxs, split_by_idx


def v07_cv_idxs(n, cv_idx=0, val_pct=0.2, seed=42):
    np.random.seed(seed)
    n_val = int(val_pct * n)
    idxs = np.random.permutation(n)
    return idxs[cv_idx * n_val : (cv_idx + 1) * n_val]


@pytest.mark.parametrize("n,cv_idx,val_pct,seed", [(100004, 0, 0.2, 42), (1000, 2, 0.1, 7), (57, 1, 0.3, 0)])
def test_get_cv_idxs_matches_fastai_v07(n, cv_idx, val_pct, seed):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ours = get_cv_idxs(n, cv_idx, val_pct, seed)
    assert np.array_equal(np.random.get_state()[1], before), "global numpy RNG was touched"
    assert np.array_equal(ours, v07_cv_idxs(n, cv_idx, val_pct, seed))
    assert len(ours) == int(val_pct * n)


def test_get_cv_idxs_rejects_bad_input():
    with pytest.raises(ValueError, match="n must be positive"):
        get_cv_idxs(0)
    with pytest.raises(ValueError, match="val_pct"):
        get_cv_idxs(10, val_pct=1.5)


def test_split_by_idx_frames_and_arrays():
    df = pd.DataFrame({"a": np.arange(10)})
    y = np.arange(10) * 10
    (val_df, trn_df), (val_y, trn_y) = split_by_idx([1, 3], df, y)
    assert list(val_df.a) == [1, 3] and len(trn_df) == 8
    assert list(val_y) == [10, 30] and 20 not in trn_y[:1]
    with pytest.raises(ValueError, match="out of range"):
        split_by_idx([10], df)
    with pytest.raises(ValueError, match="duplicate"):
        split_by_idx([1, 1], df)
    with pytest.raises(ValueError, match="covers all"):
        split_by_idx(np.arange(10), df)


@pytest.mark.parametrize("n,bs,drop_last", [(100, 7, False), (100, 7, True), (64, 8, False), (5, 10, False)])
def test_loader_covers_every_row_exactly_once(n, bs, drop_last):
    dl = ArrayLoader(np.arange(n), batch_size=bs, shuffle=True, drop_last=drop_last, seed=3, device="cpu")
    seen = torch.cat([b[0] for b in dl])
    assert len(dl) == (n // bs if drop_last else -(-n // bs))
    if drop_last:
        assert len(seen) == (n // bs) * bs and len(set(seen.tolist())) == len(seen)
    else:
        assert sorted(seen.tolist()) == list(range(n))
    assert all(len(b[0]) == bs for b in list(dl)[: n // bs])


def test_loader_seeded_determinism_and_reshuffle():
    a = ArrayLoader(np.arange(50), batch_size=10, shuffle=True, seed=5, device="cpu")
    b = ArrayLoader(np.arange(50), batch_size=10, shuffle=True, seed=5, device="cpu")
    e0a, e0b = torch.cat([x[0] for x in a]), torch.cat([x[0] for x in b])
    assert torch.equal(e0a, e0b)
    e1a = torch.cat([x[0] for x in a])
    assert not torch.equal(e0a, e1a), "each epoch should reshuffle"
    a.set_epoch(0)
    assert torch.equal(torch.cat([x[0] for x in a]), e0a), "set_epoch(0) repeats epoch 0's order"
    c = ArrayLoader(np.arange(50), batch_size=10, shuffle=True, seed=6, device="cpu")
    assert not torch.equal(torch.cat([x[0] for x in c]), e0a)


def test_loader_unseeded_follows_torch_manual_seed():
    torch.manual_seed(0)
    a = ArrayLoader(np.arange(50), batch_size=10, shuffle=True, device="cpu")
    torch.manual_seed(0)
    b = ArrayLoader(np.arange(50), batch_size=10, shuffle=True, device="cpu")
    assert a.seed == b.seed


def test_loader_accepts_tensors_arrays_pandas_and_datasets():
    x = np.arange(12).reshape(6, 2)
    s = pd.Series(np.linspace(0, 1, 6))
    dl = ArrayLoader(torch.from_numpy(x), x, s, pd.DataFrame(x), batch_size=4, device="cpu")
    b = next(iter(dl))
    assert b[0].dtype == torch.int64 and b[1].dtype == torch.int64 and b[2].dtype == torch.float32
    assert torch.equal(b[0], b[1]) and torch.equal(b[0], b[3]) and b[2].shape == (4,)
    ds = torch.utils.data.TensorDataset(torch.arange(6), torch.arange(6) * 2)
    assert torch.equal(next(iter(ArrayLoader(ds, batch_size=6, device="cpu")))[1], torch.arange(6) * 2)

    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 9

        def __getitem__(self, i):
            return torch.tensor([i]), torch.tensor(float(i * i))

    batches = list(ArrayLoader(Squares(), batch_size=4, shuffle=True, seed=0, device="cpu"))
    xs = torch.cat([b[0] for b in batches]).flatten()
    assert sorted(xs.tolist()) == list(range(9))
    assert torch.equal(torch.cat([b[1] for b in batches]), (xs**2).float())


def test_loader_rejects_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        ArrayLoader(np.arange(3), batch_size=0)
    with pytest.raises(ValueError, match="different lengths"):
        ArrayLoader(np.arange(3), np.arange(4))
    with pytest.raises(TypeError, match="dtype"):
        ArrayLoader(np.array(["a", "b"]))


def test_loader_sharding_splits_each_global_batch():
    n, bs, world = 20, 3, 2
    ranks = [ArrayLoader(np.arange(n), batch_size=bs, shuffle=True, seed=9, device="cpu",
                         rank=r, world_size=world) for r in range(world)]
    single = ArrayLoader(np.arange(n), batch_size=bs * world, shuffle=True, seed=9, device="cpu")
    assert len(ranks[0]) == len(single)
    for glob, *parts in zip(single, *ranks):
        assert torch.equal(glob[0], torch.cat([p[0] for p in parts]))


def test_loader_batches_resumes_mid_epoch():
    dl = ArrayLoader(np.arange(30), batch_size=4, shuffle=True, seed=2, device="cpu")
    dl.set_epoch(3)
    full = [b[0] for b in dl]
    dl.set_epoch(3)
    assert all(torch.equal(a, b[0]) for a, b in zip(full[5:], dl.batches(5)))


def test_columnar_model_data_shapes_and_split():
    n = 50
    df = pd.DataFrame({"u": np.arange(n) % 7, "i": np.arange(n) % 5, "age": np.linspace(0, 1, n)})
    y = np.arange(n, dtype=np.float64)
    val = get_cv_idxs(n)
    md = ColumnarModelData.from_data_frame(".", val, df, y, ["u", "i"], bs=4)
    assert isinstance(md, ModelData)
    cats, conts, yb = next(iter(md.trn_dl))
    assert cats.dtype == torch.int64 and cats.shape == (4, 2)
    assert conts.dtype == torch.float32 and conts.shape == (4, 1)
    assert yb.dtype == torch.float32 and yb.shape == (4, 1)
    assert md.val_dl.batch_size == 8 and not md.val_dl.shuffle and md.trn_dl.shuffle
    assert sorted(md.val_y.ravel().tolist()) == sorted(val.tolist())
    assert len(md.trn_y) == n - len(val)
    md2 = ColumnarModelData.from_data_frame(".", val, df[["u", "i"]], y, ["u", "i"], bs=4,
                                            test_df=df[["u", "i"]].iloc[:6])
    cats, conts, yb = next(iter(md2.trn_dl))
    assert conts.shape == (4, 0)
    assert next(iter(md2.test_dl))[0].shape == (6, 2)


def test_columnar_model_data_errors():
    df = pd.DataFrame({"u": [0, 1, 2, 3], "name": ["a", "b", "c", "d"]})
    with pytest.raises(ValueError, match="not in the frame"):
        ColumnarModelData.from_data_frame(".", [0], df, np.zeros(4), ["user"], bs=2)
    with pytest.raises(ValueError, match="integer codes"):
        ColumnarModelData.from_data_frame(".", [0], df, np.zeros(4), ["name"], bs=2)
    with pytest.raises(ValueError, match="bs must be"):
        ColumnarModelData.from_data_frame(".", [0], df[["u"]], np.zeros(4), ["u"], bs=0)
    with pytest.raises(ValueError, match="rows"):
        ColumnarModelData.from_data_frame(".", [0], df[["u"]], np.zeros(3), ["u"], bs=2)


def test_T_and_as_tensor_dtypes_and_device():
    from minifast import T, as_tensor, default_device

    t = T(np.array([1, 2], dtype=np.int32))
    assert t.dtype == torch.int64 and t.device.type == default_device().type
    assert T(pd.Series([0.5, 1.5])).dtype == torch.float32
    assert T([True, False]).dtype == torch.int64
    x = torch.arange(3)
    assert as_tensor(x) is x
    ro = np.arange(4.0)
    ro.flags.writeable = False
    assert as_tensor(ro).dtype == torch.float32
    with pytest.raises(TypeError, match="dtype <U1"):
        T(np.array(["a"]))


def test_check_batch_size_names_the_argument():
    from minifast import check_batch_size

    assert check_batch_size(np.int64(8)) == 8
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match=r"^batch_size must be a positive integer"):
            check_batch_size(bad, "batch_size")
