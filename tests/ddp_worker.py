"""One rank of the distributed test, started by torchrun from tests/test_distributed.py.

Trains the collab model with `fit` exactly as a single-process script would (fit itself
detects torchrun and joins the group), recording which rating rows each rank used and the
whole-set metrics next to the values the final model's predictions give, then checks an error
mid-run leaves the model, stepper and loaders as they were. Each rank writes
`rank{r}.json` to the output folder; rank 0 also writes the model's initial and final weights.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT CONFIG_JSON
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from minifast import (
    SWA,
    ArrayLoader,
    Callback,
    CSVLogger,
    ModelData,
    SaveBestModel,
    Stepper,
    fit,
    get_cv_idxs,
    predict,
)
from minifast.runtime.modules import unwrap
from minifast.runtime.ranks import is_main_process, rank, world_size


def ratings_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` ratings with distinct (user, item) pairs, so a pair identifies its row."""
    rng = np.random.RandomState(seed)
    n_users, n_items = 60, 50
    pairs = rng.choice(n_users * n_items, n, replace=False)
    users, items = pairs // n_items, pairs % n_items
    uf, itf = rng.randn(n_users, 3), rng.randn(n_items, 3)
    r = np.clip(3 + (uf[users] * itf[items]).sum(1) * 0.6 + rng.randn(n) * 0.2, 0.5, 5)
    return pd.DataFrame({"userId": users + 1000, "movieId": items + 7, "rating": r})


def collab_parts(cfg: dict, bs: int, seed: int | None):
    """The collab data set, its ColumnarModelData (batch `bs`) and an EmbeddingDotBias model."""
    from minifast.collab import CollabFilterDataset

    df = ratings_frame(cfg["n"])
    cf = CollabFilterDataset.from_data_frame(".", df, "userId", "movieId", "rating")
    data = cf.get_data(get_cv_idxs(len(df)), bs, seed=seed)
    return cf, data, cf.get_model(cfg["n_factors"])


def mae(preds, y):
    """Mean absolute error (a whole-set metric: exact even when averaged per batch)."""
    return (preds - y).abs().mean()


def rmse(preds, y):
    """A user's RMSE: exact only when computed on the whole set at once."""
    return torch.sqrt(F.mse_loss(preds, y))


class StreamingRMSE:
    """A stateful metric (reset/accumulate/value): validation stays unsharded for it."""

    __name__ = "streaming_rmse"

    def reset(self):
        self.sse, self.n = 0.0, 0

    def accumulate(self, preds, y):
        self.sse += float(((preds.double() - y.double()) ** 2).sum())
        self.n += y.numel()

    def value(self):
        return (self.sse / self.n) ** 0.5


def predicted_rmse(model, data) -> float:
    """The RMSE of the model's predictions on the whole (unsharded) validation set."""
    p = predict(unwrap(model), data.val_dl).astype(np.float64)
    return float(np.sqrt(np.mean((p - data.val_dl.tensors[-1].numpy()) ** 2)))


class RowLog(Callback):
    """Records the (user, item) pairs of every batch, per epoch, and the step counters."""

    def __init__(self):
        self.pairs: list[list] = []
        self.iterations: list[int] = []
        self.n_batches: list[int] = []
        self.sizes: list[int] = []

    def on_epoch_begin(self):
        self.pairs.append([])
        self.n_batches.append(self.state.n_batches)

    def on_batch_begin(self):
        cats = self.state.xs[0]
        self.pairs[-1] += cats.tolist()
        self.sizes.append(len(cats))

    def on_batch_end(self, loss):
        self.iterations.append(self.state.iteration)


class ValProbe(Callback):
    """Records whether the validation loader was sharded during each validation."""

    def __init__(self):
        self.sharded: list[bool] = []

    def on_validate_begin(self):
        self.sharded.append(self.state.data.val_dl.world_size > 1)


class FailAt(Callback):
    """Raises at the start of epoch `epoch`, on every rank."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_begin(self):
        if self.state.epoch == self.epoch:
            raise RuntimeError("planned failure")


def main(out: Path, cfg: dict) -> None:
    r = int(os.environ["RANK"])  # fit has not joined the group yet: torchrun's variable
    torch.manual_seed(100 + r)  # ranks differ on purpose: DDP must take rank 0's weights...
    cf, data, model = collab_parts(cfg, cfg["bs"], seed=None)  # ...and rank 0's shuffle seed
    if r == 0:
        torch.save(model.state_dict(), out / "init.pt")
    opt = torch.optim.Adam(model.parameters(), cfg["lr"])
    log, probe = RowLog(), ValProbe()
    res = fit(model, data, cfg["epochs"], opt, F.mse_loss, metrics=[mae, rmse],
              callbacks=[log, probe, SaveBestModel(out / f"best{r}.pt"),
                         CSVLogger(out / f"log{r}.csv")])
    assert world_size() == 2 and rank() == r
    if is_main_process():
        torch.save(unwrap(model).state_dict(), out / "final.pt")
    result = {
        "seed": data.trn_dl.seed,
        "history": res.history,
        "vals": list(res),
        "pairs": log.pairs,
        "iterations": log.iterations,
        "n_batches": log.n_batches,
        "sizes": log.sizes,
        "val_sharded": probe.sharded,
        "predicted_rmse": predicted_rmse(model, data),
        "trn_pairs": data.trn_dl.tensors[0].tolist(),
        "after": {"world_size": data.trn_dl.world_size, "val_world_size": data.val_dl.world_size,
                  "model_type": type(res.state.stepper.model).__name__},
    }
    # An error mid-run: everything is restored and the group still works for the next fit.
    stepper = Stepper(model, opt, F.mse_loss)
    try:
        fit(model, data, 3, opt, F.mse_loss, stepper=stepper, callbacks=[FailAt(1)])
    except RuntimeError as e:
        result["error"] = str(e)
    result["after_error"] = {"world_size": data.trn_dl.world_size,
                             "model_type": type(stepper.model).__name__}
    again = fit(model, data, 1, opt, F.mse_loss, verbose=False)
    result["again"] = list(again)
    probe = ValProbe()
    stream = fit(model, data, 1, opt, F.mse_loss, metrics=[StreamingRMSE(), rmse],
                 callbacks=[probe], verbose=False)
    result["stateful"] = {"vals": list(stream), "val_sharded": probe.sharded,
                          "predicted_rmse": predicted_rmse(model, data)}
    result["learner"] = learner_part(out, cfg, cf)
    result["gather"] = gather_part()
    result["swa"] = swa_part()
    (out / f"rank{r}.json").write_text(json.dumps(result))


def gather_part() -> dict:
    """all_gather_rows when one rank has no rows (it passes None) and the dtype is bool."""
    from minifast.runtime.ranks import all_gather_rows

    mine = torch.tensor([[True, False]] * 3) if rank() == 0 else None
    got = all_gather_rows(mine)
    return {"rows": [g.tolist() for g in got], "dtypes": [str(g.dtype) for g in got]}


def learner_part(out: Path, cfg: dict, cf) -> dict:
    """The Learner under DDP: lr_find refuses, SGDR over global iterations, a stateful
    (whole-validation-set) metric, rank-0-only saving, and resuming from a checkpoint."""
    from minifast.callbacks.checkpoint import Checkpoint
    from minifast.collab import precision_at_k, ranking_scores

    res: dict = {}
    torch.manual_seed(0)
    learn = cf.get_learner(cfg["n_factors"], get_cv_idxs(cf.n), cfg["bs"], seed=3, path=out,
                           metrics=[precision_at_k(5)])
    try:
        learn.lr_find()
    except RuntimeError as e:
        res["lr_find"] = str(e)
    probe, probe2 = ValProbe(), ValProbe()
    fitted = learn.fit(cfg["lr"], 1, cycle_len=2, callbacks=[probe, Checkpoint(out / "ckpt")],
                       verbose=False)
    res.update(lrs=learn.recorder.lrs, iterations=learn.recorder.iterations,
               history=fitted.history, val_sharded=probe.sharded)
    cats, _, y = learn.data.val_dl.tensors
    res["predicted_precision"] = ranking_scores(cats[:, 0], learn.predict(), y, 5)["precision"]
    learn.save("ddp")
    resumed = learn.fit(cfg["lr"], 1, cycle_len=3, callbacks=[probe2], resume=out / "ckpt",
                        verbose=False)
    res.update(resumed=resumed.history, resumed_sharded=probe2.sharded)
    res["sparse"] = sparse_part(out, cfg, cf)
    return res


def sparse_learner(cfg: dict, cf, bs: int):
    """A learner with sparse embedding gradients (LazyAdam) and the per-rating penalty."""
    torch.manual_seed(0)
    return cf.get_learner(cfg["n_factors"], get_cv_idxs(cf.n), bs, seed=5, sparse=True,
                          emb_l2=0.01)


def sparse_part(out: Path, cfg: dict, cf) -> dict:
    """Sparse gradients under DDP (gloo all-reduces them as sparse tensors)."""
    learn = sparse_learner(cfg, cf, cfg["bs"])
    fitted = learn.fit(cfg["lr"], 2, verbose=False)
    sd = unwrap(learn.model).state_dict()
    torch.save(sd, out / f"sparse{rank()}.pt")
    return {"history": fitted.history, "opt": type(learn.opt).__name__}


def swa_part() -> dict:
    """SWA under DDP with a BatchNorm model: each rank's average and its statistics, recomputed
    over each rank's shard and averaged across the ranks."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 4, generator=g)
    y = x.sum(1, keepdim=True)
    data = ModelData(".", ArrayLoader(x[:128], y[:128], batch_size=16, shuffle=True, seed=0),
                     ArrayLoader(x[128:], y[128:], batch_size=16))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 1))
    swa = SWA(swa_start=2, swa_eval_freq=1)
    res = fit(model, data, 3, torch.optim.SGD(model.parameters(), lr=0.05), F.mse_loss,
              callbacks=[swa], verbose=False)
    with torch.no_grad():
        h = swa.swa_model[0](x[:128])
    return {"swa_loss": [row["swa_loss"] for row in res.history[1:]],
            "weights": {k: v.tolist() for k, v in swa.swa_model.state_dict().items()
                        if v.is_floating_point()},
            "whole_set_mean": h.mean(0).tolist()}


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
