"""Fused optimiser kernels by default: `build_optimizer(opt_fn, param_groups, fused=None)`.

`torch.optim.Adam` on CPU defaults to its per-tensor ("for-loop") implementation, a dozen
separate passes over every parameter per step; `fused=True` does the same arithmetic in one
pass per tensor. torch makes it the default only on some GPUs; the `Learner` makes it the
default wherever this torch supports it, for `torch.optim.Adam` and `AdamW`, whether given as
`opt_fn` or by default.

It is the same algorithm (same hyper-parameters, state and `state_dict`), not bit-identical
to the for-loop version: the order of floating-point operations differs, so results agree
to float32 rounding. `Learner(..., fused=False)` keeps torch's default implementation;
`fused=True` insists (an error where unsupported). An `opt_fn` that already chooses
(`partial(optim.Adam, fused=False)`, `foreach=...`) is left alone. Figures: the docs'
Performance page, "Fused Adam".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .hypers import optimizer_target

__all__ = ["FUSABLE", "build_optimizer", "fused_supported"]

#: Optimiser classes whose fused kernel `build_optimizer` chooses by default.
FUSABLE: tuple[type, ...] = (torch.optim.Adam, torch.optim.AdamW)


def _params(param_groups) -> list[torch.Tensor]:
    out = []
    for g in param_groups:
        if isinstance(g, dict):
            out.extend(g["params"] if not isinstance(g["params"], torch.Tensor) else [g["params"]])
        else:
            out.append(g)
    return out


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused optimiser kernels accept all of `params`: floating point,
    dense, on a device this torch build has fused kernels for."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # torch too old to have fused kernels outside CUDA
        devices = {"cuda"}
    params = list(params)
    return bool(params) and all(
        p.device.type in devices and torch.is_floating_point(p) and not p.is_sparse
        for p in params
    )


def build_optimizer(opt_fn: Callable, param_groups: list, fused: bool | None = None,
                    sparse: bool = False) -> torch.optim.Optimizer:
    """`opt_fn(param_groups)`, with `fused=True` added when `opt_fn` is (a partial of)
    torch's Adam or AdamW that does not choose an implementation itself, the parameters
    support it, and `fused` is not False. `fused=True` requires it: a clear error otherwise.
    `sparse`: the model produces sparse gradients, which no fused kernel takes."""
    cls, fixed = optimizer_target(opt_fn)
    chooses = "fused" in fixed or "foreach" in fixed or "differentiable" in fixed
    fusable = cls in FUSABLE and not chooses
    if fused is False or (fused is None and not fusable):
        return opt_fn(param_groups)
    if fused and not fusable:
        raise ValueError(
            f"fused=True needs opt_fn to be torch.optim.Adam or AdamW (or a partial of one "
            f"that leaves fused/foreach unset); got {opt_fn!r}")
    ok = not sparse and fused_supported(_params(param_groups))
    if not ok:
        if fused:
            raise ValueError(
                "fused=True: this torch has no fused kernel for these parameters (sparse "
                "gradients, a non-float dtype or an unsupported device); pass fused=None")
        return opt_fn(param_groups)
    try:
        return opt_fn(param_groups, fused=True)
    except (RuntimeError, ValueError, TypeError) as e:
        if fused:
            raise ValueError(f"fused=True: {cls.__name__}(fused=True) refused: {e}") from e
        return opt_fn(param_groups)
