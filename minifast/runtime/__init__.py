"""The runtime floor: where tensors live, which process this is, and CPU modes (denormal
flushing, malloc thresholds). Leaves: nothing here knows about training."""

from .denormal import FlushState, denormals_flushed, flush_denormal, set_flush_denormal
from .device import T, as_tensor, default_device, to_device
from .malloc import keep_freed_memory, release_freed_memory, set_malloc_thresholds
from .modules import eval_mode, model_device, unwrap
from .ranks import (
    destroy_distributed,
    distributed_session,
    init_distributed,
    is_main_process,
    local_rank,
    rank,
    world_size,
)
from .seed import set_seed

__all__ = [
    "FlushState", "denormals_flushed", "flush_denormal", "set_flush_denormal",
    "T", "as_tensor", "default_device", "to_device",
    "keep_freed_memory", "release_freed_memory", "set_malloc_thresholds",
    "eval_mode", "model_device", "unwrap",
    "destroy_distributed", "distributed_session", "init_distributed", "is_main_process",
    "local_rank", "rank", "world_size", "set_seed",
]
