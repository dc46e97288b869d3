"""Distributed helpers: who is the main process, and the module inside a DDP wrapper."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_main_process", "unwrap", "rank", "world_size", "all_reduce_sums"]


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 or when not distributed: the process that prints and writes files."""
    return rank() == 0


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or `model` itself)."""
    return model.module if isinstance(
        model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model


def all_reduce_sums(total, n: int, sums: list):
    """Sum a validation pass's loss total, row count and metric sums over all ranks."""
    if world_size() == 1:
        return total, n, sums
    dev = total.device if isinstance(total, torch.Tensor) else torch.device("cpu")
    if dist.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
    buf = torch.tensor([float(total), float(n), *[float(s) for s in sums]], dtype=torch.float64,
                       device=dev)
    dist.all_reduce(buf)
    vals = buf.tolist()
    return vals[0], int(vals[1]), vals[2:]
