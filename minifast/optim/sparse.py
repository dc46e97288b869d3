"""Sparse embedding gradients, and `LazyAdam`, an Adam that updates only the rows in a batch.

With dense gradients every optimiser step reads and writes every row of every embedding and
its moments, for a batch that uses a few of them. With `nn.Embedding(..., sparse=True)` the
gradient holds just the batch's rows, and an optimiser that takes sparse gradients updates
just those rows: a step costs O(batch), not O(table).

The trade-offs (measured on the docs' Performance page, "Sparse embeddings"):

- Lazy moments. A row's Adam moments advance only when the row is in a batch (as
  `torch.optim.SparseAdam` and TensorFlow's LazyAdam do), with the bias correction of the
  global step; dense Adam also decays the moments of absent rows.
- Weight decay. `LazyAdam(weight_decay=wd)` adds the L2 gradient only to the rows in the
  batch, so a row is regularised each time it is seen (the classic per-rating
  regularisation of matrix factorisation). The decoupled decay (`use_wd_sched=True`) likewise
  shrinks only the batch's rows (see `Stepper`). `SparseAdam` has no weight decay, SGD and
  Adagrad refuse it with sparse gradients: the Learner refuses those combinations instead
  of ignoring `wds`.
- Gradient-norm clipping does not take sparse gradients (torch has no norm for them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .hypers import optimizer_target

__all__ = [
    "LazyAdam",
    "sparse_embeddings",
    "has_sparse_embeddings",
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
    """

    #: `Learner` checks this before letting `wds` through with sparse gradients.
    supports_sparse_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if not lr >= 0:
            raise ValueError(f"LazyAdam: lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"LazyAdam: betas must be in [0, 1), got {betas}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"LazyAdam: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """One Adam step; sparse gradients update only their rows."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                step_size = lr / (1 - b1**t)
                bc2_sqrt = math.sqrt(1 - b2**t)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if p.grad.is_sparse:
                    g = p.grad.coalesce()  # one entry per row, duplicates summed
                    rows, vals = g.indices()[0], g.values()
                    if wd:
                        vals = vals.add(p.index_select(0, rows), alpha=wd)
                    m_r = m.index_select(0, rows).lerp_(vals, 1 - b1)
                    v_r = v.index_select(0, rows).mul_(b2).addcmul_(vals, vals, value=1 - b2)
                    m.index_copy_(0, rows, m_r)
                    v.index_copy_(0, rows, v_r)
                    denom = v_r.sqrt_().div_(bc2_sqrt).add_(eps)
                    p.index_add_(0, rows, m_r.div_(denom), alpha=-step_size)
                else:
                    g = p.grad if not wd else p.grad.add(p, alpha=wd)
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)
        return loss


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
