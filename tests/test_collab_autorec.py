"""The item-based autoencoder (AutoRec with local-kernel layers): shapes, the masked loss,
training, predictions by raw id, fallback for unseen ids, exact resume."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import grid_cf
from resume_worker import assert_resumes_exactly, result

import minifast as mf
from minifast.collab import (
    AutoRec,
    CollabFilterDataset,
    DistillMSE,
    KernelLayer,
    UnknownIdError,
    autorec_data,
    autorec_learner,
    masked_mse,
)


def _cf(tmp_path, n=800, n_users=25, n_items=15, seed=0):
    """Low-rank ratings 1-5 with raw ids 100+u / 500+i; every user and item rated."""
    rng = np.random.RandomState(seed)
    u = np.concatenate([np.arange(n_users), rng.randint(0, n_users, n - n_users)])
    i = np.concatenate([np.arange(n_items), np.arange(n_users - n_items) % n_items,
                        rng.randint(0, n_items, n - n_users)])
    uf, itf = rng.randn(n_users, 2), rng.randn(n_items, 2)
    r = np.clip(np.round(3 + (uf[u] * itf[i]).sum(1)), 1, 5)
    df = pd.DataFrame({"u": u + 100, "i": i + 500, "r": r}).drop_duplicates(["u", "i"])
    return CollabFilterDataset.from_data_frame(tmp_path, df.reset_index(drop=True), "u", "i", "r")


def test_masked_mse_ignores_unobserved_entries():
    t = torch.tensor([[1.0, float("nan")], [float("nan"), 3.0]])
    p = torch.tensor([[2.0, 100.0], [-50.0, 5.0]], requires_grad=True)
    loss = masked_mse(p, t)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert p.grad[0, 1] == 0 and p.grad[1, 0] == 0 and p.grad[0, 0] != 0
    assert masked_mse(p, torch.full((2, 2), float("nan"))).item() == 0


def test_kernel_layer_gates_start_open_and_can_close():
    torch.manual_seed(0)
    layer = KernelLayer(4, 3, n_dim=2)
    assert layer(torch.zeros(5, 4)).shape == (5, 3)
    assert torch.allclose(layer.kernel(), torch.ones(4, 3), atol=1e-4)
    with torch.no_grad():
        layer.u[0] = 2.0  # input 0 far from every output point: its gates are 0
    assert (layer.kernel()[0] == 0).all() and (layer.kernel()[1:] > 0.99).all()


def test_shapes_and_data_rows_are_items(tmp_path):
    cf = _cf(tmp_path)
    val = np.arange(0, cf.n, 10)
    data = autorec_data(cf, val, bs=4, seed=0)
    assert data.ratings.shape == (cf.n_items, cf.n_users)
    assert int((~torch.isnan(data.ratings)).sum()) == cf.n - len(val)
    items, y = next(iter(data.trn_dl))
    assert items.shape == (4,) and y.shape == (4, cf.n_users)
    (vi, vy), = list(data.val_dl)
    assert int((~torch.isnan(vy)).sum()) == len(val)  # one batch: every validation rating
    model = AutoRec(data.ratings, n_hid=7, n_dim=3, n_layers=2)
    assert model(items).shape == (4, cf.n_users)
    assert len(model.layers) == 3 and model.layers[1].W.shape == (7, 7)


def test_predictions_map_to_the_right_rows_and_columns(tmp_path):
    # a hand-made 3 users x 2 items matrix; the model's reconstruction replaced by a known one
    df = pd.DataFrame({"u": ["a", "b", "c", "a"], "i": ["x", "x", "y", "y"], "r": [1., 2., 3., 4.]})
    cf = CollabFilterDataset.from_data_frame(tmp_path, df, "u", "i", "r")
    learn = autorec_learner(cf, [3], bs=2, n_hid=3, seed=0, y_range=(0, 100))
    table = torch.tensor([[10., 11., 12.], [20., 21., 22.]])  # [item, user] in cf's indices
    learn.model.reconstruct = lambda items: table[items]
    ui, ii = cf.user_idxs(["a", "b", "c"]), cf.item_idxs(["x", "y"])
    got = learn.predict_ratings(["c", "a", "b"], [["x"], ["y"]])
    want = [[table[ii[0], ui[j]].item() for j in (2, 0, 1)], [table[ii[1], ui[j]].item() for j in (2, 0, 1)]]
    assert got.shape == (2, 3) and got.tolist() == want
    assert learn.predict_ratings("b", "y").shape == ()


def test_unseen_ids_raise_or_fall_back_to_the_baseline(tmp_path):
    df = pd.DataFrame({"u": [1, 1, 2, 3], "i": [7, 8, 7, 9], "r": [5., 3., 4., 2.]})
    cf = CollabFilterDataset.from_data_frame(tmp_path, df, "u", "i", "r")
    learn = autorec_learner(cf, [3], bs=2, n_hid=3, seed=0)  # user 3 and item 9: validation only
    with pytest.raises(UnknownIdError, match="fallback=True"):
        learn.predict_ratings(3, 7)
    with pytest.raises(UnknownIdError):
        learn.predict_ratings(1, 12345)
    m = learn.model
    mu = 4.0
    b_i7 = ((5 - mu) + (4 - mu)) / (2 + 10)
    got = learn.predict_ratings([3, 3, 1], [7, 9, 12345], fallback=True)
    b_u1 = ((5 - mu - b_i7) + (3 - mu - (3 - mu) / 11)) / (2 + 10)
    assert got == pytest.approx([mu + b_i7, mu, mu + b_u1], abs=1e-5)
    assert m.mu.item() == pytest.approx(mu)
    # validation targets use the same fallback: the item-9 row is the baseline for user 3
    with torch.no_grad():
        m.eval()
        row = m(torch.tensor(cf.item_idxs([9])))[0, cf.user_idxs([3])[0]]
    assert row.item() == pytest.approx(mu)


def test_eval_outputs_are_clamped_to_y_range(tmp_path):
    cf = _cf(tmp_path)
    learn = autorec_learner(cf, np.arange(0, cf.n, 10), bs=8, n_hid=5, seed=0)
    learn.model.reconstruct = lambda items: torch.full((len(items), cf.n_users), 9.0)
    assert (learn.predict_ratings(cf.idx2user[:3], cf.idx2item[0]) == 5.0).all()


def test_a_short_fit_reduces_the_validation_loss_and_is_seeded(tmp_path):
    cf = _cf(tmp_path)
    val = np.arange(0, cf.n, 5)

    def run():
        learn = autorec_learner(cf, val, bs=4, n_hid=20, n_dim=3, seed=1)
        before = learn.predict_ratings(cf.idx2user[cf.user_col[val]], cf.idx2item[cf.item_col[val]])
        res = learn.fit(3e-2, 1, cycle_len=15, use_clr_beta=(10, 10, 0.95, 0.85), progress=False)
        return learn, before, res

    learn, before, res = run()
    y = cf.ratings[val]
    assert res[0] < 0.8 * float(np.mean((before - y) ** 2))
    after = learn.predict_ratings(cf.idx2user[cf.user_col[val]], cf.idx2item[cf.item_col[val]])
    assert float(np.mean((after - y) ** 2)) == pytest.approx(res[0], rel=1e-4)
    assert run()[2][0] == res[0]


def test_the_penalty_is_the_learners_reg_fn(tmp_path):
    cf = _cf(tmp_path)
    learn = autorec_learner(cf, [0], bs=4, n_hid=5, seed=0, lambda_2=3.0, lambda_s=0.5)
    w2, k2 = learn.model.penalty()
    loss = torch.tensor(1.0)
    want = 1.0 + (3.0 * w2.item() + 0.5 * k2.item()) / (cf.n - 1)
    assert learn.reg_fn(None, (), loss).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="lambda_2"):
        autorec_learner(cf, [0], lambda_2=-1)
    with pytest.raises(ValueError, match="dropout"):
        autorec_learner(cf, [0], dropout=1.5)


@pytest.mark.parametrize("input_dropout", [0.0, 0.3])  # with it, a mask per epoch
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, input_dropout):
    cf = _cf(tmp_path)
    val = np.arange(0, cf.n, 10)

    def run(callbacks, resume=None):
        torch.manual_seed(0)
        learn = autorec_learner(cf, val, bs=4, n_hid=8, n_dim=3, dropout=0.2, seed=3,
                                input_dropout=input_dropout)
        res = learn.fit(3e-3, 1, cycle_len=3, use_clr_beta=(10, 10, 0.95, 0.85),
                        callbacks=callbacks, resume=resume, progress=False)
        return result(learn.model, learn.opt, res.recorder, res.history)

    full = assert_resumes_exactly(run, tmp_path / "ckpt", 3, 7)
    assert math.isfinite(full["history"][-1]["val_loss"])


def test_global_kernel_shapes_and_convolution():
    from minifast.collab.glocal import GlobalKernel

    torch.manual_seed(0)
    gk = GlobalKernel(6, gk_size=3, dot_scale=2.0)
    recon = torch.rand(6, 4)
    k = gk(recon)
    assert k.shape == (3, 3)
    assert torch.allclose(k.view(-1), 2.0 * recon.mean(1) @ gk.W)
    r = torch.rand(6, 4)
    out = gk.convolve(r, k)
    assert out.shape == (6, 4) and (out >= 0).all()
    # an interior entry is the ReLU of the 3x3 neighbourhood weighted by the kernel
    want = torch.relu((r[1:4, 0:3] * k).sum())
    assert out[2, 1].item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ValueError, match="odd"):
        GlobalKernel(6, gk_size=2)


def test_glocal_pretrain_then_fine_tune_with_lbfgs(tmp_path):
    from minifast.collab.glocal import GLocalK, glocal_learner
    from minifast.core.stepper import ClosureStepper

    cf = _cf(tmp_path)
    val = np.arange(0, cf.n, 5)
    learn = glocal_learner(cf, val, n_hid=16, n_dim=3, lambda_2=1.0, max_iter=5, seed=0)
    # GLocal-K's per-epoch SciPy call: a fresh L-BFGS run of max_iter iterations each epoch
    assert isinstance(learn.model, GLocalK) and isinstance(learn.opt, mf.optim.RestartingLBFGS)
    assert learn.opt.defaults["max_iter"] == 5 and learn.opt.defaults["history_size"] == 10
    assert len(learn.data.trn_dl) == 1  # full batch: every item at once
    items, y = next(iter(learn.data.trn_dl))
    assert learn.model(items).shape == (cf.n_items, cf.n_users)
    y_val = cf.ratings[val]
    users, its = cf.idx2user[cf.user_col[val]], cf.idx2item[cf.item_col[val]]
    before = float(np.mean((learn.predict_ratings(users, its) - y_val) ** 2))
    pre = learn.fit(1.0, 8, verbose=False, progress=False)
    assert isinstance(pre.state.stepper, ClosureStepper)
    assert learn.model.global_kernel.W.grad is None  # pre-training leaves the kernel alone
    assert pre[0] < 0.8 * before
    w_before = learn.model.global_kernel.W.detach().clone()
    learn.fine_tune()
    assert learn.model.use_global_kernel
    fine = learn.fit(1.0, 4, verbose=False, progress=False)
    assert not torch.equal(w_before, learn.model.global_kernel.W)  # the kernel is trained
    assert math.isfinite(fine[0]) and fine[0] < before
    after = float(np.mean((learn.predict_ratings(users, its) - y_val) ** 2))
    assert after == pytest.approx(fine[0], rel=1e-4)


def test_glocal_fit_glocal_is_seeded(tmp_path):
    from minifast.collab.glocal import glocal_learner

    cf = _cf(tmp_path)
    val = np.arange(0, cf.n, 5)

    def run():
        learn = glocal_learner(cf, val, n_hid=8, n_dim=3, max_iter=3, seed=4)
        return learn.fit_glocal(2, 2, verbose=False, progress=False)[0]

    assert run() == run()


def test_glocal_takes_another_optimiser(tmp_path):
    import functools

    from minifast.collab.glocal import glocal_learner

    cf = _cf(tmp_path)
    opt_fn = functools.partial(torch.optim.LBFGS, max_iter=2, max_eval=50, line_search_fn="strong_wolfe")
    learn = glocal_learner(cf, np.arange(0, cf.n, 5), n_hid=8, n_dim=3, seed=0, opt_fn=opt_fn)
    assert type(learn.opt) is torch.optim.LBFGS
    learn.fit(1.0, 2, verbose=False, progress=False)
    state = learn.opt.state[learn.opt.param_groups[0]["params"][0]]
    assert state["n_iter"] == 4  # torch's L-BFGS counts on across epochs: its memory is kept
    learn.fine_tune()
    assert type(learn.opt) is torch.optim.LBFGS and not learn.opt.state  # fresh for fine-tuning


def test_the_benchmarks_kfold5_folds_are_surprises(monkeypatch):
    """benchmarks/collab_accuracy.py's `surprise_kfold` gives Surprise's own KFold test rows."""
    surprise = pytest.importorskip("surprise")
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from collab_accuracy import surprise_kfold

    n = 103  # n % 5 != 0: the first folds are one row longer
    df = pd.DataFrame({"u": np.arange(n) % 7, "i": np.arange(n), "r": (np.arange(n) % 5) + 1.0})
    data = surprise.Dataset.load_from_df(df, surprise.Reader(rating_scale=(1, 5)))
    kf = surprise.model_selection.KFold(n_splits=5, random_state=0)
    theirs = [sorted(int(iid) for _, iid, _ in test) for _, test in kf.split(data)]
    ours = surprise_kfold(n, 5, 0)
    assert [f.tolist() for f in ours] == theirs  # item id == row number


def test_distill_mse_weighs_the_teacher_where_there_is_no_rating():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    ratings = torch.tensor([[2.0, float("nan"), float("nan")]])
    teacher = torch.tensor([[9.0, 4.0, 3.5]])  # its value at a rated entry is not used
    loss = DistillMSE(0.5)(pred, torch.stack([ratings, teacher], 1))
    assert loss.item() == pytest.approx((1.0 + 0.5 * (4.0 + 0.25)) / 1)
    assert DistillMSE(0.5)(pred, ratings).item() == pytest.approx(masked_mse(pred, ratings).item())
    for bad in (-1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="teacher_weight must be a finite number >= 0"):
            DistillMSE(bad)


def test_autorec_data_with_a_teacher_stacks_it_beside_the_ratings(tmp_path):
    cf, df = grid_cf(tmp_path)
    teacher = np.random.RandomState(0).uniform(1, 5, (cf.n_items, cf.n_users))
    data = autorec_data(cf, np.arange(0, len(df), 7), bs=cf.n_items, teacher=teacher)
    items, target = next(iter(data.trn_dl))
    assert target.shape == (cf.n_items, 2, cf.n_users)
    np.testing.assert_allclose(target[:, 1].numpy(), teacher[items.numpy()], rtol=1e-6)
    torch.testing.assert_close(target[:, 0], data.ratings[items], equal_nan=True)
    with pytest.raises(ValueError, match="teacher must be a \\[n_items, n_users\\] = \\[12, 20\\]"):
        autorec_data(cf, [0], teacher=teacher.T)
    teacher[3, 4] = np.nan
    with pytest.raises(ValueError, match=f"not finite at item {cf.idx2item[3]}, user "
                                         f"{cf.idx2user[4]}: nan"):
        autorec_data(cf, [0], teacher=teacher)


@pytest.mark.parametrize("make", ["autorec", "glocal"])
def test_a_student_learns_the_teacher_where_it_has_no_rating(tmp_path, make):
    cf, df = grid_cf(tmp_path)
    val = np.arange(0, len(df), 4)
    teacher = np.full((cf.n_items, cf.n_users), 4.5, dtype=np.float32)  # says 4.5 everywhere

    def held_out_mean(teacher):
        if make == "autorec":
            learn = autorec_learner(cf, val, 4, n_hid=8, seed=0, teacher=teacher,
                                    teacher_weight=5.0)
            learn.fit(3e-2, 20, verbose=False, progress=False)
        else:
            learn = mf.collab.glocal_learner(cf, val, n_hid=8, seed=0, teacher=teacher,
                                             teacher_weight=5.0)
            learn.fit(1.0, 10, verbose=False, progress=False)
        return learn.predict_ratings(df.u.to_numpy()[val], df.i.to_numpy()[val]).mean()

    plain, distilled = held_out_mean(None), held_out_mean(teacher)
    assert distilled > plain + 0.8 and distilled == pytest.approx(4.5, abs=0.6)


def test_one_non_negative_check_for_penalties_and_the_teacher_weight(tmp_path):
    from minifast.checks import check_non_negative_number
    from minifast.collab.autorec import KernelPenalty

    assert check_non_negative_number(0, "w") == 0.0 and check_non_negative_number(2.5, "w") == 2.5
    assert check_non_negative_number(np.float32(0.5), "w") == 0.5  # e.g. from a numpy grid
    assert type(check_non_negative_number(np.int64(3), "w")) is float
    for bad in (-1.0, float("nan"), float("inf"), "1", None, True, np.float64(-0.5)):
        with pytest.raises(ValueError, match="w must be a finite number >= 0"):
            check_non_negative_number(bad, "w")
    model = AutoRec(torch.tensor([[1.0, float("nan")], [4.0, 2.0]]), n_hid=2)
    for kw, name in (({"lambda_2": -1.0}, "lambda_2"), ({"lambda_s": float("nan")}, "lambda_s")):
        args = {"lambda_2": 1.0, "lambda_s": 1.0, **kw}
        with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
            KernelPenalty(model, args["lambda_2"], args["lambda_s"], 3)
    with pytest.raises(ValueError, match="teacher_weight must be a finite number >= 0, got -2"):
        autorec_learner(CollabFilterDataset.from_data_frame(
            tmp_path, pd.DataFrame({"u": [1, 2], "i": [3, 4], "r": [1.0, 5.0]}), "u", "i", "r"),
            [0], teacher_weight=-2)
