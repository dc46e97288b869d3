"""Item-based autoencoders for rating prediction (I-AutoRec with GLocal-K's local kernel).

Each item is a row of the training rating matrix: its ratings by every user, 0 where the
user did not rate it. The network reconstructs the row, and the loss is the squared error on
the observed entries only; the reconstruction at an unobserved entry is the prediction.
The weight matrices are "local kernels" (GLocal-K, Han et al., CIKM 2021): each weight is
multiplied by `max(0, 1 - |u_i - v_j|^2)` for learned low-dimensional points `u_i` (inputs)
and `v_j` (outputs), so the network can learn to switch connections off, and a penalty on
those factors pushes towards sparse weights.

It trains with the ordinary `Learner.fit` (schedules, callbacks, checkpoints): the data are
`ArrayLoader`s over item indices and NaN-marked target rows (`autorec_data`), the loss is
`masked_mse`, and the weight and sparsity penalties are the learner's `reg_fn`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from attrs import define, field
from torch import nn

from ..checks import check_dropout, check_non_negative_number, positive_int
from ..core.events import Callback
from ..data import ArrayLoader, ModelData, check_val_idxs
from ..learner import Learner
from ..runtime.modules import eval_mode, unwrap
from .ids import UnknownIdError

__all__ = ["masked_mse", "DistillMSE", "KernelLayer", "AutoRec", "AutoRecData", "AutoRecLearner",
           "InputDropout", "autorec_data", "autorec_learner"]

_SHRINK = 10.0  # damping of the fallback baseline's biases, as CollabFilterLearner's


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the observed entries of `target`; NaN marks an unobserved
    entry, which contributes nothing (0 when a batch has no observed entry at all)."""
    seen = ~torch.isnan(target)
    diff = torch.where(seen, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff * diff).sum() / seen.sum().clamp(min=1)


class DistillMSE:
    """The loss of an AutoRec distilled from a *teacher* (a model, or a blend of models, that
    predicted every pair; `autorec_data(..., teacher=...)`): on training targets
    `[n, 2, n_users]` (the training ratings, NaN where unrated, and the teacher's
    predictions) it is `(sum over rated entries of (pred - rating)^2 + weight * sum over
    unrated ones of (pred - teacher)^2) / number of rated entries`, so the student learns the
    teacher's predictions where it has no rating. Dividing by the rated entries only keeps
    the ratings' part on `masked_mse`'s scale (and `KernelPenalty`'s per-rating penalty in
    proportion to it); the teacher's part adds to it, so the training loss reads higher than
    a `masked_mse`. Validation targets (`[n, n_users]`, NaN-marked) get `masked_mse`."""

    def __init__(self, weight: float = 1.0):
        self.weight = check_non_negative_number(weight, "teacher_weight")

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == pred.ndim:
            return masked_mse(pred, target)
        ratings, teacher = target[:, 0], target[:, 1]
        seen = ~torch.isnan(ratings)
        goal = torch.where(seen, torch.nan_to_num(ratings), teacher)
        w = torch.where(seen, 1.0, self.weight)
        diff = pred - goal
        return (w * diff * diff).sum() / seen.sum().clamp(min=1)


def autorec_loss(teacher, teacher_weight: float) -> Callable:
    """The AutoRec learners' loss: `masked_mse`, or with a `teacher`, `DistillMSE`."""
    weight = check_non_negative_number(teacher_weight, "teacher_weight")
    return masked_mse if teacher is None else DistillMSE(weight)


class KernelLayer(nn.Module):
    """A dense layer `activation(x @ (W * K) + b)` whose weights are gated by GLocal-K's local
    kernel `K[i, j] = max(0, 1 - |u_i - v_j|^2)` of learned `n_dim`-dimensional points.

    The points start near 0 (every gate open); `penalty()` returns `(|W|^2, |K|^2)`.
    """

    def __init__(self, n_in: int, n_out: int, n_dim: int = 5,
                 activation: Callable[[torch.Tensor], torch.Tensor] | None = torch.sigmoid):
        super().__init__()
        self.W = nn.Parameter(torch.empty(n_in, n_out))
        nn.init.xavier_uniform_(self.W)
        self.u = nn.Parameter(torch.randn(n_in, 1, n_dim) * 1e-3)
        self.v = nn.Parameter(torch.randn(1, n_out, n_dim) * 1e-3)
        self.b = nn.Parameter(torch.zeros(n_out))
        self.activation = activation

    def kernel(self) -> torch.Tensor:
        """The `[n_in, n_out]` gates."""
        return (1 - ((self.u - self.v) ** 2).sum(2)).clamp(min=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ (self.W * self.kernel()) + self.b
        return y if self.activation is None else self.activation(y)

    def penalty(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(sum of squared weights, sum of squared gates)`."""
        return (self.W ** 2).sum(), (self.kernel() ** 2).sum()


class AutoRec(nn.Module):
    """I-AutoRec with local-kernel layers: `forward(items)` reconstructs those items' rows
    `[len(items), n_users]` of the training matrix it holds (`inputs`, a buffer, 0 where
    unrated), through `n_layers` sigmoid `KernelLayer`s of `n_hid` units and a linear one.

    In eval mode the outputs are clamped to `y_range` and entries whose user or item has no
    training rating get the fallback baseline (`baseline`), since the network has nothing to
    reconstruct them from. `dropout` applies to the hidden layers in training.

    `input_dropout` `p` hides a random fraction `p` of the training ratings from the input in
    training (the rest scaled by `1 / (1 - p)`; the loss still covers all of them), so the
    network learns to predict ratings it does not see, as it must for validation. The hidden
    set is one per epoch (`set_input_epoch`, called by the `InputDropout` callback that
    `AutoRecLearner.fit` adds), a function of the epoch and the model's `input_seed` only:
    a full-batch L-BFGS step sees one objective, and a resumed run the same masks.
    """

    def __init__(self, ratings: torch.Tensor, n_hid: int = 500, n_dim: int = 5,
                 n_layers: int = 2, dropout: float = 0.0,
                 y_range: tuple[float, float] | None = None, input_dropout: float = 0.0):
        super().__init__()
        if ratings.ndim != 2:
            raise ValueError(f"ratings must be a [n_items, n_users] matrix, got shape "
                             f"{tuple(ratings.shape)}")
        n_hid, n_layers = positive_int(n_hid, "n_hid"), positive_int(n_layers, "n_layers")
        dropout = check_dropout(dropout, "dropout")
        input_dropout = check_dropout(input_dropout, "input_dropout")
        ratings = ratings.float()
        seen = ~torch.isnan(ratings)
        if not seen.any():
            raise ValueError("ratings has no observed entry (all NaN)")
        self.register_buffer("inputs", torch.nan_to_num(ratings))
        sizes = [ratings.shape[1]] + [n_hid] * n_layers
        self.layers = nn.ModuleList(
            [KernelLayer(a, b, n_dim) for a, b in zip(sizes, sizes[1:], strict=False)]
            + [KernelLayer(n_hid, ratings.shape[1], n_dim, activation=None)])
        self.dropout = nn.Dropout(dropout)
        self.y_range = y_range
        self.input_dropout = input_dropout
        if self.input_dropout:  # from the global RNG, so a seeded model has seeded masks
            self.register_buffer("input_seed", torch.randint(0, 2 ** 62, ()))
        self.input_mask: torch.Tensor | None = None
        self._init_baseline(self.inputs.double(), seen)

    def _init_baseline(self, r: torch.Tensor, seen: torch.Tensor) -> None:
        n_i, n_u = seen.sum(1), seen.sum(0)
        mu = r.sum() / seen.sum()
        b_i = torch.where(seen, r - mu, 0).sum(1) / (n_i + _SHRINK)
        b_u = torch.where(seen, r - mu - b_i[:, None], 0).sum(0) / (n_u + _SHRINK)
        for name, t in (("mu", mu), ("b_item", b_i), ("b_user", b_u)):
            self.register_buffer(name, t.float())
        self.register_buffer("item_known", n_i > 0)
        self.register_buffer("user_known", n_u > 0)

    def set_input_epoch(self, epoch: int | None) -> None:
        """Draw the input dropout mask of `epoch` (0-indexed), or drop the mask (None): a
        function of `input_seed` and `epoch` only. Nothing to do without `input_dropout`."""
        if not self.input_dropout or epoch is None:
            self.input_mask = None
            return
        g = torch.Generator().manual_seed(int(self.input_seed) + int(epoch))
        keep = torch.rand(self.inputs.shape, generator=g) >= self.input_dropout
        self.input_mask = (keep / (1 - self.input_dropout)).to(self.inputs.device)

    def input_rows(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The network's input rows `items` (all rows when None): the training matrix, with
        the epoch's input dropout mask applied in training."""
        x = self.inputs if items is None else self.inputs[items]
        if self.training and self.input_mask is not None:
            x = x * (self.input_mask if items is None else self.input_mask[items])
        return x

    def reconstruct(self, items: torch.Tensor) -> torch.Tensor:
        """The network's raw reconstruction of the rows `items` (no clamping, no fallback)."""
        return self.network(self.input_rows(items))

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel layers (with dropout between them) on input rows `x` `[n, n_users]`."""
        for layer in self.layers[:-1]:
            x = self.dropout(layer(x))
        return self.layers[-1](x)

    def baseline(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The fallback for (user, item) index pairs: the training mean plus the damped bias
        of whichever side has training ratings (an index of -1 counts as having none)."""
        def bias(b, known, idx):
            ok = (idx >= 0) & known[idx.clamp(min=0)]
            return torch.where(ok, b[idx.clamp(min=0)], torch.zeros((), device=b.device))
        return self.mu + bias(self.b_user, self.user_known, users) + bias(
            self.b_item, self.item_known, items)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        out = self.reconstruct(items)
        if self.training:
            return out
        if self.y_range is not None:
            out = out.clamp(*self.y_range)
        users = torch.arange(out.shape[1], device=out.device)
        known = self.item_known[items][:, None] & self.user_known[None, :]
        return torch.where(known, out, self.baseline(users[None, :], items[:, None]))

    def penalty(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(sum of squared weights, sum of squared kernel gates)` over all layers."""
        w2, k2 = zip(*(layer.penalty() for layer in self.layers), strict=True)
        return sum(w2), sum(k2)


class KernelPenalty:
    """The learner's `reg_fn`: `loss + (lambda_2 |W|^2 + lambda_s |K|^2) / n_ratings`, i.e.
    GLocal-K's penalties on the scale of a per-rating mean squared error."""

    def __init__(self, model: AutoRec, lambda_2: float, lambda_s: float, n_ratings: int):
        self.model = model
        self.lambda_2 = check_non_negative_number(lambda_2, "lambda_2")
        self.lambda_s = check_non_negative_number(lambda_s, "lambda_s")
        self.n_ratings = int(n_ratings)

    def __call__(self, out, xs, loss: torch.Tensor) -> torch.Tensor:
        w2, k2 = self.model.penalty()
        return loss + (self.lambda_2 * w2 + self.lambda_s * k2) / self.n_ratings


def _matrix(cf, rows: np.ndarray) -> torch.Tensor:
    """`[n_items, n_users]` float32 matrix of the ratings at `rows` of `cf`, NaN elsewhere."""
    m = torch.full((cf.n_items, cf.n_users), float("nan"))
    m[torch.from_numpy(cf.item_col[rows]), torch.from_numpy(cf.user_col[rows])] = torch.from_numpy(
        cf.ratings[rows])
    return m


@define
class AutoRecData(ModelData):
    """`ModelData` of item rows, with the `[n_items, n_users]` training matrix (`ratings`,
    NaN where unrated) the model's inputs are made of."""

    ratings: torch.Tensor | None = field(default=None, kw_only=True)


def _teacher_matrix(cf, teacher) -> torch.Tensor:
    """`teacher` checked: a finite `[n_items, n_users]` matrix in `cf`'s index order."""
    t = torch.as_tensor(np.asarray(teacher, dtype=np.float32))
    if tuple(t.shape) != (cf.n_items, cf.n_users):
        raise ValueError(f"teacher must be a [n_items, n_users] = [{cf.n_items}, {cf.n_users}] "
                         f"matrix of predictions (rows in cf.idx2item order, columns in "
                         f"cf.idx2user order, e.g. RatingBlend.predict_matrix), got shape "
                         f"{tuple(t.shape)}")
    if not torch.isfinite(t).all():
        i, u = (int(v) for v in torch.nonzero(~torch.isfinite(t))[0])
        item, user = (np.asarray(ids[k]).tolist() for ids, k in ((cf.idx2item, i), (cf.idx2user, u)))
        raise ValueError(f"teacher is not finite at item {item!r}, user {user!r}: "
                         f"{float(t[i, u])}")
    return t


def autorec_data(cf, val_idxs, bs: int = 64, seed: int | None = None, device=None,
                 teacher=None) -> AutoRecData:
    """The item-row data of `cf` (a `CollabFilterDataset`) for an `AutoRec`: training batches
    are `(item indices, target rows)` of `bs` items, shuffled, the target rows holding the
    training ratings and NaN elsewhere; the validation loader is one batch of every item with
    a rating at `val_idxs`, its targets the validation ratings (so its `masked_mse` is the
    exact validation MSE). The training matrix is `data.ratings`.

    `teacher` (a `[n_items, n_users]` matrix of another model's predictions for every pair,
    in `cf`'s index order, e.g. `RatingBlend.predict_matrix`) makes the training targets
    `[bs, 2, n_users]`: the ratings and the teacher's row, for `DistillMSE`."""
    val = check_val_idxs(val_idxs, cf.n)
    trn = np.setdiff1d(np.arange(cf.n), val)
    if len(trn) == 0:
        raise ValueError("val_idxs leave no training rating")
    trn_m, val_m = _matrix(cf, trn), _matrix(cf, val)
    items = torch.arange(cf.n_items)
    has_val = (~torch.isnan(val_m)).any(1)
    targets = trn_m if teacher is None else torch.stack([trn_m, _teacher_matrix(cf, teacher)], 1)
    trn_dl = ArrayLoader(items, targets, batch_size=bs, shuffle=True, seed=seed, device=device)
    val_dl = ArrayLoader(items[has_val], val_m[has_val], batch_size=max(int(has_val.sum()), 1),
                         device=device)
    return AutoRecData(cf.path, trn_dl, val_dl, ratings=trn_m)


class InputDropout(Callback):
    """Draws an `AutoRec`'s input dropout mask at each epoch's start
    (`model.set_input_epoch(epoch)`) and drops it when training ends. `AutoRecLearner`
    adds it to every run of a model with `input_dropout`."""

    def on_epoch_begin(self) -> None:
        unwrap(self.state.model).set_input_epoch(self.state.epoch)

    def on_train_end(self) -> None:
        unwrap(self.state.model).set_input_epoch(None)


class AutoRecLearner(Learner):
    """A `Learner` for an `AutoRec`, with `predict_ratings` by raw user and item ids.

    An id is *known* when it has at least one training rating. Without `fallback`, an
    unknown id raises `UnknownIdError`; with it, a pair with an unknown side gets the model's
    `baseline` (training mean plus the known side's damped bias).
    """

    def __init__(self, data, model: AutoRec, cf, **kwargs):
        super().__init__(data, model, **kwargs)
        self.cf = cf

    def _run(self, n_epochs: int, metrics, callbacks, data=None, **kwargs):
        if unwrap(self.model).input_dropout:
            callbacks = [*callbacks, InputDropout()]
        return super()._run(n_epochs, metrics, callbacks, data, **kwargs)

    def _indices(self, ids, role: str, fallback: bool) -> np.ndarray:
        lookup = self.cf.user_idxs if role == "user" else self.cf.item_idxs
        idx = lookup(np.asarray(ids).reshape(-1), missing="ignore")
        known = getattr(self.model, f"{role}_known").cpu().numpy()
        ok = idx >= 0
        ok[ok] = known[idx[ok]]
        if not fallback and not ok.all():
            bad = np.asarray(ids).reshape(-1)[~ok]
            raise UnknownIdError(f"{role} id {bad[0]!r} has no training rating ({len(bad)} such "
                                 f"id(s)); pass fallback=True to predict the baseline for them")
        return np.where(ok, idx, -1)

    def predict_ratings(self, users, items, fallback: bool = False) -> np.ndarray:
        """Predicted ratings for raw `users` and `items` (scalars or arrays, broadcast against
        each other), float32, in their broadcast shape."""
        users, items = np.broadcast_arrays(np.asarray(users), np.asarray(items))
        u = self._indices(users, "user", fallback)
        i = self._indices(items, "item", fallback)
        dev = self.model.inputs.device
        out = self.model.baseline(torch.from_numpy(u).to(dev), torch.from_numpy(i).to(dev))
        both = (u >= 0) & (i >= 0)
        if both.any():
            rows, inv = np.unique(i[both], return_inverse=True)
            with eval_mode(self.model) as model, torch.no_grad():
                rec = model(torch.from_numpy(rows).to(dev))
            out[torch.from_numpy(both).to(dev)] = rec[torch.from_numpy(inv).to(dev),
                                                      torch.from_numpy(u[both]).to(dev)]
        return out.detach().float().cpu().numpy().reshape(users.shape)


def autorec_learner(cf, val_idxs, bs: int = 64, n_hid: int = 500, n_dim: int = 5,
                    n_layers: int = 2, lambda_2: float = 20.0, lambda_s: float = 0.006,
                    dropout: float = 0.0, y_range: tuple[float, float] | None = None,
                    seed: int | None = None, input_dropout: float = 0.0, teacher=None,
                    teacher_weight: float = 1.0, **kwargs) -> AutoRecLearner:
    """An `AutoRecLearner` for `cf` (a `CollabFilterDataset`): `autorec_data(cf, val_idxs,
    bs, seed)`, an `AutoRec(n_hid, n_dim, n_layers, dropout, input_dropout=...)` seeded by
    `seed`, `masked_mse` and the `KernelPenalty(lambda_2, lambda_s)`. `y_range` (default: the
    data's lowest and highest rating) clamps predictions. `teacher` distils another model's
    predictions of every pair into this one (`autorec_data`, `DistillMSE(teacher_weight)`).
    Other keyword arguments go to `Learner` (`opt_fn`, `clip`, ...). Train with `fit`, e.g.
    `learn.fit(3e-3, 1, cycle_len=60, use_clr_beta=(10, 10, 0.95, 0.85))`."""
    loss = autorec_loss(teacher, teacher_weight)
    data = autorec_data(cf, val_idxs, bs, seed, teacher=teacher)
    if y_range is None:
        y_range = (cf.min_score, cf.max_score)
    # a seeded model leaves the global RNG as it was
    with contextlib.nullcontext() if seed is None else torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        model = AutoRec(data.ratings, n_hid, n_dim, n_layers, dropout, y_range, input_dropout)
    n_ratings = int((~torch.isnan(data.ratings)).sum())
    return AutoRecLearner(data, model, cf, crit=loss,
                          reg_fn=KernelPenalty(model, lambda_2, lambda_s, n_ratings), **kwargs)

