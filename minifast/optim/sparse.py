"""Sparse embedding gradients, and `LazyAdam`, an Adam that updates only the rows in a batch.

With dense gradients every optimiser step reads and writes every row of every embedding and
its moments, for a batch that uses a few of them. With `nn.Embedding(..., sparse=True)` the
gradient holds just the batch's rows, and an optimiser that takes sparse gradients updates
just those rows: a step costs O(batch), not O(table).

How a step works (`LazyAdam`, row-wise): for each sparse gradient, the batch's distinct rows
are found with a mask over the table (no sort; embeddings indexed by the same ids, such as a
user's factors and bias, share one pass), the gradient's duplicate rows are summed into one
compact `[rows, dim]` block, the rows of the weights and of both moments are gathered, one
fused Adam kernel (torch's, where it has one for the device) updates every gathered block and
every dense parameter of the group in a single call, and the rows are written back in place.
Gradients reach the optimiser as the usual sparse COO tensors, so DDP all-reduces them as
before. (On devices other than the CPU the duplicates are summed by `coalesce`, whose sum is
reproducible there, where `index_add_`'s atomics are not.)

The trade-offs (measured on the docs' Performance page, "Sparse embeddings"):

- Lazy moments. A row's Adam moments advance only when the row is in a batch (as
  `torch.optim.SparseAdam` and TensorFlow's LazyAdam do), with the bias correction of the
  parameter's global step count; dense Adam also decays the moments of absent rows and keeps
  moving them with their stale momentum. A row seen in every batch gets exactly dense
  Adam's update; a rarely seen row's moments are those of its own last appearances.
- Weight decay. `LazyAdam(weight_decay=wd)` adds the L2 gradient only to the rows in the
  batch, so a row is regularised each time it is seen (the classic per-rating
  regularisation of matrix factorisation). The decoupled decay (`use_wd_sched=True`) likewise
  shrinks only the batch's rows (see `Stepper`), before the step. `SparseAdam` has no weight
  decay, SGD and Adagrad refuse it with sparse gradients: the Learner refuses those
  combinations instead of ignoring `wds`.
- Gradient-norm clipping does not take sparse gradients (torch has no norm for them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import torch
from torch import nn

from .fused import fused_supported
from .hypers import optimizer_target

__all__ = [
    "LazyAdam",
    "sparse_embeddings",
    "has_sparse_embeddings",
    "prefer_sparse",
    "AUTO_SPARSE_MIN_PARAMS",
    "AUTO_SPARSE_PARAMS_PER_ROW",
    "check_sparse_optimizer",
    "check_weight_decay",
    "SPARSE_OPTIMIZERS",
]


def sparse_embeddings(model: nn.Module, sparse: bool = True) -> nn.Module:
    """Make every `nn.Embedding` (and `nn.EmbeddingBag`) of `model` produce sparse (or, with
    `sparse=False`, dense) gradients; returns the model. Weights are unchanged."""
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            if sparse and getattr(m, "max_norm", None) is not None:
                raise ValueError(f"{m}: an embedding with max_norm cannot use sparse gradients")
            m.sparse = bool(sparse)
    return model


def has_sparse_embeddings(model: nn.Module) -> bool:
    """Whether any embedding of `model` produces sparse gradients."""
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse for m in model.modules())


#: `prefer_sparse`: the fewest embedding parameters for which sparse gradients are chosen;
#: below it dense fused Adam over the whole tables is as fast, and its (non-lazy) moments
#: are what the lesson's recipes were tuned with.
AUTO_SPARSE_MIN_PARAMS = 1_000_000
#: `prefer_sparse`: the fewest embedding parameters per row of a batch; a large batch over
#: small tables touches most rows anyway, and the row-wise step then costs more than a dense
#: one.
AUTO_SPARSE_PARAMS_PER_ROW = 256


def prefer_sparse(model: nn.Module, bs: int, device: torch.device | str) -> bool:
    """Whether `model` should train with sparse embedding gradients (`LazyAdam`'s row-wise
    step) rather than dense fused Adam at batch size `bs` on `device`: what
    `get_learner(sparse="auto")` decides with.

    True on the CPU when the model's embeddings hold at least `AUTO_SPARSE_MIN_PARAMS`
    parameters and at least `AUTO_SPARSE_PARAMS_PER_ROW` of them per batch row: the region
    where `benchmarks/sparse_crossover.py` measured the sparse step faster (the figures are
    on the docs' Performance page, "Sparse embeddings"). False on other devices, where the
    crossover has not been measured and dense fused Adam is bandwidth-cheap.
    """
    if torch.device(device).type != "cpu":
        return False
    n = sum(m.weight.numel() for m in model.modules()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)))
    return n >= AUTO_SPARSE_MIN_PARAMS and n >= AUTO_SPARSE_PARAMS_PER_ROW * bs


def _sparse_param_ids(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse}


class LazyAdam(torch.optim.Optimizer):
    """Adam for models with sparse embedding gradients (and dense parameters beside them).

    Parameters with a sparse gradient get lazy Adam on the rows present in the gradient (see
    the module docs); parameters with a dense gradient get ordinary Adam. `weight_decay` is
    L2 (added to the gradient, as `torch.optim.Adam`'s), on the rows present only. Same
    hyper-parameters and defaults as `torch.optim.Adam`; `betas[0]` is the momentum that
    `set_moms` and one-cycle schedules change.

    Each step is row-wise (module docs, "How a step works"): its cost follows the rows the
    batch touches, not the size of the tables. `fused=None` runs the arithmetic in torch's
    fused Adam kernel where this torch has one for the parameters' device, else in plain
    tensor ops (`fused=False`; the same results to float32 rounding); `fused=True` insists.
    The state (`step`, `exp_avg`, `exp_avg_sq` per parameter) is the same whichever runs it.
    """

    #: `Learner` checks this before letting `wds` through with sparse gradients.
    supports_sparse_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, fused: bool | None = None):
        if not lr >= 0:
            raise ValueError(f"LazyAdam: lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"LazyAdam: betas must be in [0, 1), got {betas}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"LazyAdam: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        if fused not in (None, True, False):
            raise ValueError(f"LazyAdam: fused must be None, True or False, got {fused!r}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})
        params = [p for g in self.param_groups for p in g["params"]]
        if fused and not fused_supported(params):
            raise ValueError("LazyAdam(fused=True): this torch has no fused Adam kernel for "
                             "these parameters' device or dtype; pass fused=None")
        self.fused = fused_supported(params) if fused is None else fused

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """One Adam step; sparse gradients update only their rows."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rows = _RowIndex()  # embeddings indexed by the same ids share one unique-rows pass
        for group in self.param_groups:
            work = [self._gather(p, rows) for p in group["params"] if p.grad is not None]
            if not work:
                continue
            _adam_([w.cols for w in work], group, self.fused)
            for w in work:
                w.write_back()
        return loss

    def _gather(self, p: torch.Tensor, rows: _RowIndex) -> _Rows:
        """The parameter's rows the step updates, with their gradients and moments (all of
        them for a dense gradient); its step count advanced."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if not p.grad.is_sparse:
            return _Rows(p, m, v, None, (p, p.grad, m, v, state["step"]))
        idx, g = rows.compact(p.grad)
        return _Rows(p, m, v, idx, (p.index_select(0, idx), g, m.index_select(0, idx),
                                    v.index_select(0, idx), state["step"]))


@attrs.define
class _Rows:
    """One parameter's part of a step: `cols` = (weights, gradient, exp_avg, exp_avg_sq,
    step) at rows `idx` of `p` and its moments `m`, `v` (gathered copies, written back
    after the update); `idx` None: the whole tensors, updated in place."""

    p: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor
    idx: torch.Tensor | None
    cols: tuple

    def write_back(self) -> None:
        if self.idx is not None:
            p_r, _, m_r, v_r, _ = self.cols
            self.p.index_copy_(0, self.idx, p_r)
            self.m.index_copy_(0, self.idx, m_r)
            self.v.index_copy_(0, self.idx, v_r)


class _RowIndex:
    """The unique rows of sparse gradients, computed once per distinct index tensor."""

    def __init__(self):
        self.seen: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []

    def compact(self, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(rows, values)`: the sorted distinct rows of sparse `grad` and each one's
        gradient, duplicates summed."""
        if grad.sparse_dim() != 1:
            raise ValueError(f"LazyAdam: sparse gradients must index rows (sparse_dim 1), "
                             f"got sparse_dim {grad.sparse_dim()} for shape {tuple(grad.shape)}")
        if grad.is_coalesced():  # e.g. Stepper's decoupled decay coalesced it already
            return grad.indices()[0], grad.values()
        if grad.device.type != "cpu":  # index_add_ sums with atomics there: not reproducible
            grad = grad.coalesce()
            return grad.indices()[0], grad.values()
        idx, vals = grad._indices()[0], grad._values()
        rows, inverse = self._unique(idx, grad.shape[0])
        out = vals.new_zeros((len(rows), *vals.shape[1:]))
        return rows, out.index_add_(0, inverse, vals)

    def _unique(self, idx: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        for seen, seen_n, rows, inverse in self.seen:
            if seen_n == n and seen.shape == idx.shape and torch.equal(seen, idx):
                return rows, inverse
        # a mask over the table instead of a sort: O(batch + rows), rows come out sorted
        mask = torch.zeros(n, dtype=torch.bool, device=idx.device)
        mask[idx] = True
        rows = mask.nonzero().squeeze(1)
        pos = torch.empty(n, dtype=torch.long, device=idx.device)
        pos[rows] = torch.arange(len(rows), device=idx.device)
        inverse = pos[idx]
        self.seen.append((idx, n, rows, inverse))
        return rows, inverse


def _adam_(cols: list[tuple], group: dict, fused: bool) -> None:
    """Adam, in place, on each (weights, gradient, exp_avg, exp_avg_sq, step) of `cols`,
    with `group`'s hyper-parameters and L2 `weight_decay`; `step` is already advanced."""
    lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if fused:
        by_kind: dict[tuple, list[tuple]] = {}
        for c in cols:
            by_kind.setdefault((c[0].device, c[0].dtype), []).append(c)
        for (device, _), cs in by_kind.items():
            ps, gs, ms, vs, ts = zip(*cs)
            steps = [torch.full((), float(t), device=device) for t in ts]
            torch._fused_adam_(list(ps), list(gs), list(ms), list(vs), [], steps, amsgrad=False,
                               lr=float(lr), beta1=b1, beta2=b2, weight_decay=wd, eps=eps,
                               maximize=False)
        return
    for p, g, m, v, t in cols:
        if wd:
            g = g.add(p, alpha=wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = v.sqrt().div_(math.sqrt(1 - b2**t)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


#: Optimisers that take sparse gradients (without weight decay unless noted in the docs).
SPARSE_OPTIMIZERS: tuple[type, ...] = (LazyAdam, torch.optim.SparseAdam, torch.optim.SGD,
                                       torch.optim.Adagrad)


def check_sparse_optimizer(opt_fn, model: nn.Module) -> None:
    """Refuse, before training, an optimiser that cannot train `model`'s sparse gradients:
    one that takes no sparse gradients at all (Adam, AdamW, RMSprop, ...), or SparseAdam on a
    model that also has dense parameters. Unknown optimiser factories are let through."""
    cls = optimizer_target(opt_fn)[0]
    if cls is None or not has_sparse_embeddings(model):
        return
    if not issubclass(cls, SPARSE_OPTIMIZERS):
        raise ValueError(
            f"{cls.__name__} does not take sparse gradients: with sparse embeddings use the "
            f"default optimiser (minifast.LazyAdam), torch.optim.SparseAdam or torch.optim.SGD, "
            f"or sparse=False")
    if issubclass(cls, torch.optim.SparseAdam):
        sparse_ids = _sparse_param_ids(model)
        dense = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in sparse_ids]
        if dense:
            raise ValueError(
                f"SparseAdam only takes sparse gradients, but the model has dense parameters "
                f"{dense[:4]}{' ...' if len(dense) > 4 else ''}: use the default optimiser "
                f"(minifast.LazyAdam), which trains both")


def check_weight_decay(opt: torch.optim.Optimizer, model: nn.Module, wds, decoupled: bool) -> None:
    """Refuse L2 weight decay on sparse gradients with an optimiser that would ignore it
    (SparseAdam) or fail on it mid-step (SGD, Adagrad)."""
    if decoupled or not any(w > 0 for w in wds) or not has_sparse_embeddings(model):
        return
    if getattr(opt, "supports_sparse_weight_decay", False):
        return
    raise ValueError(
        f"{type(opt).__name__} cannot apply L2 weight decay (wds={max(wds):g}) to sparse "
        f"gradients: use the default optimiser with sparse embeddings (minifast.LazyAdam: L2 "
        f"on the rows in each batch), or use_wd_sched=True (decoupled decay of the rows in "
        f"each batch), or no wds")
