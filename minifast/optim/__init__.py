"""The optimiser floor: hyper-parameters per parameter group (`set_lrs`, `set_moms`,
`set_wds`), layer and parameter groups, fused kernels, sparse embeddings and an L-BFGS restarted every step."""

from .fused import build_optimizer, fused_supported
from .groups import ParamGroups, decay_filter, layer_groups
from .hypers import (
    get_lrs,
    get_moms,
    listify_hp,
    load_opt_state,
    optimizer_target,
    set_lrs,
    set_moms,
    set_wds,
)
from .lbfgs import RestartingLBFGS
from .sparse import (
    LazyAdam,
    check_sparse_optimizer,
    has_sparse_embeddings,
    prefer_sparse,
    sparse_embeddings,
)

__all__ = [
    "build_optimizer", "fused_supported",
    "ParamGroups", "decay_filter", "layer_groups",
    "get_lrs", "get_moms", "listify_hp", "load_opt_state", "optimizer_target",
    "set_lrs", "set_moms", "set_wds",
    "RestartingLBFGS",
    "LazyAdam", "check_sparse_optimizer", "has_sparse_embeddings", "prefer_sparse",
    "sparse_embeddings",
]
