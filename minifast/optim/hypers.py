"""Optimiser helpers: learning rates, momenta and weight decay per parameter group."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

__all__ = ["set_lrs", "get_lrs", "set_moms", "get_moms", "set_wds", "listify_hp", "load_opt_state",
           "optimizer_target"]


def listify_hp(value, n: int, name: str) -> list[float]:
    """A scalar or one value per parameter group, as a list of `n` floats (clear error otherwise)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (int, float)):
        return [float(value)] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(
            f"{name}: got {len(values)} values {values} but the optimiser has {n} parameter "
            f"group(s); pass a scalar or exactly one value per group"
        )
    return [float(v) for v in values]


def set_lrs(opt: torch.optim.Optimizer, lrs: float | Sequence[float]) -> None:
    """Set the learning rate of every parameter group: a scalar, or one value per group."""
    for group, lr in zip(opt.param_groups, listify_hp(lrs, len(opt.param_groups), "set_lrs")):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # fused/capturable optimisers may keep lr as a tensor
        else:
            group["lr"] = lr


def get_lrs(opt: torch.optim.Optimizer) -> list[float]:
    """The learning rate of each parameter group."""
    return [float(g["lr"]) for g in opt.param_groups]


def _mom_key(group: dict) -> str | None:
    if "betas" in group:
        return "betas"
    if "momentum" in group:
        return "momentum"
    return None


def set_moms(opt: torch.optim.Optimizer, moms: float | Sequence[float]) -> None:
    """Set momentum (SGD/RMSprop `momentum`, or Adam's `beta1`) of every parameter group."""
    for group, m in zip(opt.param_groups, listify_hp(moms, len(opt.param_groups), "set_moms")):
        key = _mom_key(group)
        if key == "betas":
            group["betas"] = (m, group["betas"][1])
        elif key == "momentum":
            group["momentum"] = m


def get_moms(opt: torch.optim.Optimizer) -> list[float | None]:
    """Momentum (or Adam's beta1) of each parameter group; None where the optimiser has none."""
    out = []
    for g in opt.param_groups:
        key = _mom_key(g)
        out.append(None if key is None else float(g["betas"][0] if key == "betas" else g[key]))
    return out


def set_wds(
    opt: torch.optim.Optimizer, wds: float | Sequence[float], decoupled: bool = False
) -> None:
    """Set weight decay per parameter group.

    `decoupled=False` (fastai v0.7, lesson 5): L2 through the optimiser's own `weight_decay`.
    `decoupled=True` (AdamW-style, Loshchilov & Hutter): the optimiser's `weight_decay` is set
    to 0 and the Stepper applies `p <- p - lr_t * wd * p` before `opt.step()`, so the decay
    follows the learning-rate schedule and is not rescaled by Adam's second moments.
    """
    values = listify_hp(wds, len(opt.param_groups), "wds")
    if any(v < 0 for v in values):
        raise ValueError(f"weight decay must be >= 0, got {values}")
    for group, wd in zip(opt.param_groups, values):
        if decoupled:
            group["weight_decay"] = 0.0
            group["decoupled_wd"] = wd
        else:
            group["weight_decay"] = wd
            group["decoupled_wd"] = 0.0


#: Parameter-group keys that choose an optimiser's implementation, not its training state.
IMPL_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_opt_state(opt: torch.optim.Optimizer, sd: dict) -> None:
    """`opt.load_state_dict(sd)`, keeping `opt`'s own implementation choices (`fused`,
    `foreach`, ...): a state saved by a fused Adam loads into a `fused=False` one and stays
    unfused (and vice versa), with its tensors placed for the implementation that runs."""
    groups = [{**saved, **{k: own[k] for k in IMPL_KEYS if k in own}}
              for saved, own in zip(sd["param_groups"], opt.param_groups)]
    opt.load_state_dict({**sd, "param_groups": groups + sd["param_groups"][len(groups):]})


def optimizer_target(opt_fn) -> tuple[type | None, dict]:
    """The optimiser class behind `opt_fn` (a class, or a `functools.partial` of one, nested or
    not) and the keywords the partials fix; `(None, {})` for any other factory."""
    if isinstance(opt_fn, functools.partial):
        cls, kw = optimizer_target(opt_fn.func)
        return cls, {**kw, **opt_fn.keywords}
    return (opt_fn if isinstance(opt_fn, type) else None), {}
