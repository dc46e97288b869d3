"""Parameter groups: a model's layer groups, split into decayed and not-decayed parameters,
and per-layer-group values (`lrs`, `wds`) spread over the optimiser's groups.

Every layer group gives one or two optimiser parameter groups: its decayed parameters and
those excluded from weight decay by `no_decay` (see the docs' Schedules page, "Weight
decay"). `lrs` and `wds` are given per layer group, as in fastai v0.7, and expanded here.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from ..runtime.modules import unwrap
from .fused import build_optimizer
from .hypers import set_wds
from .sparse import check_weight_decay, has_sparse_embeddings

__all__ = ["layer_groups", "decay_filter", "ParamGroups", "set_trainable"]


def _params_of(group) -> list[torch.nn.Parameter]:
    """The parameters of one layer group: a module, a parameter, or an iterable of those."""
    if isinstance(group, torch.nn.Module):
        return list(group.parameters())
    if isinstance(group, torch.Tensor):
        return [group]
    if isinstance(group, Iterable):
        return [p for g in group for p in _params_of(g)]
    raise ValueError(
        f"layer_groups() must return modules, parameters, or lists of them; got "
        f"{type(group).__name__}"
    )


def layer_groups(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """The parameters of each layer group: the model's `layer_groups()`, or one group; each
    trainable parameter must be in exactly one group (a clear error otherwise)."""
    m = unwrap(model)
    groups = m.layer_groups() if callable(getattr(m, "layer_groups", None)) else [m]
    groups = [_params_of(g) for g in groups]
    if not groups:
        raise ValueError("layer_groups() returned no groups")
    seen: dict[int, int] = {}
    names = {id(p): n for n, p in m.named_parameters()}
    for i, ps in enumerate(groups):
        for p in ps:
            if id(p) in seen and seen[id(p)] != i:
                raise ValueError(
                    f"parameter {names.get(id(p), '?')!r} is in layer groups {seen[id(p)]} "
                    f"and {i}: each parameter must be in exactly one group"
                )
            seen[id(p)] = i
    missing = [n for n, p in m.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"layer_groups() leaves out trainable parameters {missing}")
    return [list({id(p): p for p in ps}.values()) for ps in groups]


def decay_filter(no_decay, model: torch.nn.Module) -> Callable[[str, torch.nn.Parameter], bool]:
    """`excluded(name, param)` for `Learner(no_decay=...)`: None/False excludes nothing, True
    biases and other 1-d parameters, a pattern or list of `fnmatch` patterns the names that
    match (each must match some parameter), a callable decides itself."""
    if no_decay is None or no_decay is False:
        return lambda name, p: False
    if no_decay is True:
        return lambda name, p: name.endswith("bias") or p.ndim <= 1
    if callable(no_decay):
        return no_decay
    patterns = [no_decay] if isinstance(no_decay, str) else list(no_decay)
    names = [n for n, _ in unwrap(model).named_parameters()]
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ValueError(f"no_decay pattern {pat!r} matches no parameter; the model has {names}")
    return lambda name, p: any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


class ParamGroups:
    """The optimiser parameter groups of `model`'s layer groups, decayed or not by
    `no_decay`; `build(opt_fn, fused)` makes the optimiser and `apply_wds` sets its decay.

    `layer[j]` is the layer group of optimiser group `j`, `decay[j]` whether it decays.
    """

    def __init__(self, model: torch.nn.Module, no_decay=None):
        self.model = unwrap(model)
        excluded = decay_filter(no_decay, self.model)
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.groups: list[dict] = []
        self.layer: list[int] = []
        self.decay: list[bool] = []
        for i, params in enumerate(layer_groups(self.model)):
            out = [p for p in params if excluded(names.get(id(p), ""), p)]
            keep = [p for p in params if not excluded(names.get(id(p), ""), p)]
            for ps, decay in ((keep, True), (out, False)):
                if ps:
                    self.groups.append({"params": ps})
                    self.layer.append(i)
                    self.decay.append(decay)
        if not self.groups:
            raise ValueError("the model has no parameters to train")
        self.default_wds: list[float] = [0.0] * len(self.groups)

    @property
    def n_layer_groups(self) -> int:
        """How many layer groups `lrs`/`wds` may give values for."""
        return max(self.layer) + 1

    def build(self, opt_fn: Callable, fused: bool | None = None) -> torch.optim.Optimizer:
        """`opt_fn(groups)` (fused where it can be, see `build_optimizer`), with the weight
        decay `opt_fn` chose kept as `default_wds` and zeroed on the excluded groups."""
        n = len(self.groups)
        opt = build_optimizer(opt_fn, self.groups, fused, sparse=has_sparse_embeddings(self.model))
        if len(getattr(opt, "param_groups", ())) != n:
            raise ValueError(
                f"opt_fn must build the optimiser from the {n} parameter groups it is given "
                f"(got {len(getattr(opt, 'param_groups', ()))}); e.g. pass "
                f"functools.partial(optim.SGD, momentum=0.9), not a built optimiser"
            )
        # wds=None means the weight decay opt_fn chose (0 for torch's defaults), never on
        # excluded parameters
        self.default_wds = [float(g.get("weight_decay", 0.0)) if d else 0.0
                            for g, d in zip(opt.param_groups, self.decay, strict=True)]
        for g, d in zip(opt.param_groups, self.decay, strict=True):
            if not d and "weight_decay" in g:
                g["weight_decay"] = 0.0
        return opt

    def per_layer(self, values, name: str, positive: bool = False) -> list[float]:
        """A scalar or one value per layer group, checked, as one float per layer group."""
        n = self.n_layer_groups
        if isinstance(values, torch.Tensor):
            values = values.tolist()
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a list of numbers, got {values!r}") from None
        if arr.ndim > 1:
            raise ValueError(f"{name} must be a number or a flat list, got shape {arr.shape}")
        if arr.ndim == 1 and len(arr) != n:
            raise ValueError(
                f"{name} has {len(arr)} values {arr.tolist()} but the model has {n} layer "
                f"group(s); pass a single value or exactly {n}"
            )
        vals = [float(arr)] * n if arr.ndim == 0 else [float(v) for v in arr]
        bad = [v for v in vals if not math.isfinite(v) or v < 0 or (positive and v == 0)]
        if bad:
            need = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {need}, got {values!r}")
        return vals

    def expand(self, per_layer: list[float]) -> list[float]:
        """Per-layer-group values as one value per optimiser parameter group."""
        return [per_layer[i] for i in self.layer]

    def per_group(self, values, name: str, positive: bool = False) -> list[float]:
        """`expand(per_layer(values, name, positive))`: one checked value per optimiser group."""
        return self.expand(self.per_layer(values, name, positive))

    def apply_wds(self, opt: torch.optim.Optimizer, wds, decoupled: bool) -> None:
        """Set `wds` (None: `default_wds`; a scalar or one per layer group) on `opt`, never on
        the excluded groups; `decoupled` as in `set_wds`."""
        if wds is None:
            values = list(self.default_wds)
        else:
            values = [w if d else 0.0
                      for w, d in zip(self.per_group(wds, "wds"), self.decay, strict=True)]
        check_weight_decay(opt, self.model, values, decoupled)
        set_wds(opt, values, decoupled=decoupled)


def set_trainable(params, trainable: bool) -> None:
    """Freeze (`trainable=False`) or unfreeze parameters: `requires_grad`, so a frozen one
    gets no gradient and the optimiser, weight decay and clipping leave it alone."""
    for p in params:
        p.requires_grad_(trainable)
