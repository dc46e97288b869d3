"""Where tensors live: the default device (CUDA when available), `T` (array-like to tensor),
and bringing batches to the model's device (`to_device`, `batch_mover`, `gather_rows`).

Host-to-GPU copies overlap with compute only from page-locked ("pinned") host memory: from
ordinary memory a `non_blocking=True` copy is synchronous. So batches bound for CUDA are
gathered straight into pinned memory (`gather_rows`), and a torch DataLoader feeding a CUDA
model should pin its own (`pin_memory=True`; `batch_mover` warns once when it does not).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["default_device", "loader_device", "as_tensor", "T", "to_device", "same_device",
           "batch_mover", "gather_rows"]


def default_device() -> torch.device:
    """The device minifast trains on unless told otherwise: CUDA when available, else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def loader_device(dl) -> torch.device:
    """Where a training run on loader `dl` trains: the loader's own `device` (an
    `ArrayLoader`'s), else `default_device()` (a torch `DataLoader` yields host batches)."""
    return getattr(dl, "device", None) or default_device()


def as_tensor(x) -> torch.Tensor:
    """Array-like to a CPU tensor without copying when it can: integers (and booleans) become
    int64, ready for embeddings, floats become float32; a tensor is returned as it is.
    pandas objects are converted through `.to_numpy()`."""
    if isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "to_numpy"):
        x = x.to_numpy()
    a = np.asarray(x)
    if a.dtype.kind in "iub":
        a = a.astype(np.int64, copy=False)
    elif a.dtype.kind == "f":
        a = a.astype(np.float32, copy=False)
    else:
        raise TypeError(f"cannot make a tensor from an array of dtype {a.dtype}")
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # pandas may hand out read-only views; torch wants writable memory
        a = a.copy()
    return torch.from_numpy(a)


def T(x, device: torch.device | str | None = None) -> torch.Tensor:
    """Array-like to tensor on `device` (default: `default_device()`), converted as by
    `as_tensor` (int64 for integers, float32 for floats; a tensor keeps its dtype)."""
    return as_tensor(x).to(default_device() if device is None else torch.device(device))


def to_device(batch, device: torch.device | str):
    """Move a tensor, or a (nested) tuple/list of tensors, to `device` (`non_blocking`: it
    overlaps with compute when the source is pinned); a tensor already there is kept as it is."""
    if not isinstance(device, torch.device):
        device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def same_device(a: torch.device | str | None, b: torch.device | str | None) -> bool:
    """Whether `a` and `b` name the same device ("cuda" is the current CUDA device)."""
    if a is None or b is None:
        return a is b
    a, b = _indexed(torch.device(a)), _indexed(torch.device(b))
    return a.type == b.type and (a.index == b.index or None in (a.index, b.index))


def _indexed(d: torch.device) -> torch.device:
    if d.type == "cuda" and d.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return d


_warned_unpinned: weakref.WeakSet = weakref.WeakSet()


def batch_mover(dl, device: torch.device | str | None) -> Callable[[Any], Any]:
    """How the loop brings `dl`'s batches to `device` (the model's), decided once per epoch:
    nothing to do when the loader says its batches are already there (an `ArrayLoader`'s
    `device`) or there is no device (a model without parameters), else `to_device`.

    For a CUDA `device`, a torch DataLoader that does not pin its batches (`pin_memory=False`,
    its default) gets one warning: its copies then block the host instead of overlapping."""
    if device is None or same_device(getattr(dl, "device", None), device):
        return _as_is
    device = _indexed(torch.device(device))
    if (device.type == "cuda" and isinstance(dl, torch.utils.data.DataLoader)
            and not dl.pin_memory and dl not in _warned_unpinned):
        _warned_unpinned.add(dl)
        warnings.warn(
            f"the model is on {device} but this DataLoader does not pin its batches in host "
            "memory, so each copy to the GPU blocks instead of overlapping with compute: pass "
            "pin_memory=True to the DataLoader", UserWarning, stacklevel=3)
    return lambda batch: to_device(batch, device)


def _as_is(batch):
    return batch


def gather_rows(t: torch.Tensor, idx: torch.Tensor, pin: bool = False) -> torch.Tensor:
    """`t.index_select(0, idx)`; with `pin`, for a CPU `t`, gathered straight into page-locked
    memory, so that the batch's `non_blocking` copy to the GPU overlaps with compute (one
    gather, no extra copy). A fresh buffer per batch is safe and cheap: torch's pinned-memory
    allocator caches blocks, and hands one out again only once the copies reading it are done."""
    if not pin or t.device.type != "cpu":
        return t.index_select(0, idx)
    out = torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
    return torch.index_select(t, 0, idx, out=out)
