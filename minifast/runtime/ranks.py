"""Process plumbing for torch.distributed: this process's rank, joining and leaving the
process group that `torchrun` describes, and the few collectives the loop and callbacks need.

A leaf: it knows nothing of training. `fit`'s DDP session is `minifast.distributed`; what is
synchronised and why is on the docs' Distributed page.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = [
    "rank",
    "world_size",
    "local_rank",
    "is_main_process",
    "is_launched",
    "launched_world_size",
    "process_device",
    "is_sharded",
    "all_reduce_sums",
    "all_gather_rows",
    "average_across_ranks",
    "init_distributed",
    "destroy_distributed",
    "distributed_session",
]

# Whether minifast initialised the default process group (and so may destroy it).
_owned = False


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK; 0 when not launched)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0 or when not distributed: the process that prints and writes files."""
    return rank() == 0


def is_launched() -> bool:
    """Whether this process was started by `torchrun` (or anything setting RANK/WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launched_world_size() -> int:
    """The number of processes of this run: the group's size once joined, else torchrun's
    WORLD_SIZE (a launched process that has not joined its group yet), else 1."""
    n = world_size()
    if n == 1 and is_launched():
        n = int(os.environ.get("WORLD_SIZE", "1"))
    return n


def process_device() -> torch.device:
    """The device this rank's collectives use: its GPU under nccl, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_sharded(dl) -> bool:
    """Whether `dl` yields only this rank's share of the data (so its sums need all-reducing)."""
    return getattr(dl, "world_size", 1) > 1


def all_reduce_sums(total, n: int, sums: list):
    """Sum a validation pass's loss total, row count and metric sums over all ranks."""
    if world_size() == 1:
        return total, n, sums
    buf = torch.tensor([float(total), float(n), *[float(s) for s in sums]], dtype=torch.float64,
                       device=process_device())
    dist.all_reduce(buf)
    vals = buf.tolist()
    return vals[0], int(vals[1]), vals[2:]


def all_gather_rows(t: torch.Tensor | None, device: torch.device | None = None) -> list[torch.Tensor]:
    """Every rank's `t`, in rank order, on `device` (default: `t`'s, else this rank's
    collective device): the number of rows (dim 0) may differ between ranks, the other dims and the
    dtype must agree. A rank with no rows passes None and still receives the others'."""
    if world_size() == 1:
        return [] if t is None else [t]
    meta = None if t is None else (len(t), tuple(t.shape[1:]), str(t.dtype).removeprefix("torch."))
    metas: list = [None] * world_size()
    dist.all_gather_object(metas, meta)
    kinds = {m[1:] for m in metas if m is not None}
    if not kinds:
        return []
    if len(kinds) > 1:
        raise ValueError(f"all_gather_rows: ranks hold tensors of different trailing shapes or "
                         f"dtypes (rows, shape[1:], dtype per rank): {metas}")
    (tail, dtype_name), = kinds
    dtype, dev = getattr(torch, dtype_name), process_device()
    wire = torch.uint8 if dtype == torch.bool else dtype  # gloo does not gather bools
    rows = [0 if m is None else m[0] for m in metas]
    buf = torch.zeros((max(rows), *tail), dtype=wire, device=dev)
    if t is not None:
        buf[: len(t)] = t.to(dev, wire)
    bufs = [torch.empty_like(buf) for _ in rows]
    dist.all_gather(bufs, buf)
    out_dev = device or (dev if t is None else t.device)
    return [b[:r].to(out_dev, dtype) for b, r in zip(bufs, rows, strict=True)]


def average_across_ranks(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor (floating point, on this rank's collective device) by its mean over
    the ranks, in place; nothing to do in a single process."""
    if world_size() == 1:
        return
    for t in tensors:
        dist.all_reduce(t)
        t.div_(world_size())


def init_distributed(backend: str | None = None, timeout: float | None = None) -> bool:
    """Join the process group described by torchrun's environment variables.

    `backend` defaults to nccl when CUDA is available (this process then uses GPU LOCAL_RANK)
    and gloo otherwise; `timeout` (seconds) bounds how long a collective waits for the other
    ranks. Returns True if this call initialised the group, False if it already was.
    """
    global _owned
    if not dist.is_available():
        raise RuntimeError("this build of PyTorch has no torch.distributed support")
    if dist.is_initialized():
        return False
    if not is_launched():
        raise RuntimeError(
            "init_distributed: RANK and WORLD_SIZE are not set. Start the script with torchrun, "
            "e.g. `torchrun --nproc_per_node 2 train.py` (see docs/distributed.md), or call "
            "torch.distributed.init_process_group yourself."
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    kw = {} if timeout is None else {"timeout": datetime.timedelta(seconds=timeout)}
    dist.init_process_group(backend, init_method="env://", **kw)
    _owned = True
    return True


def destroy_distributed() -> None:
    """Leave the process group, if minifast initialised it (a user's own group is left alone)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


@contextmanager
def distributed_session(backend: str | None = None, timeout: float | None = None) -> Iterator[bool]:
    """`with distributed_session():` joins torchrun's process group on entry and leaves it on
    exit, also on error. Outside torchrun it does nothing, so the script runs in one process.

    Yields whether the run is distributed. Entering it before building the model puts the
    model on this rank's GPU from the start.
    """
    owner = is_launched() and init_distributed(backend, timeout)
    try:
        yield world_size() > 1
    finally:
        if owner:
            destroy_distributed()
