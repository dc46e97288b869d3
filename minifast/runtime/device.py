"""Where tensors live: the default device (CUDA when available) and `T`, array-like to tensor."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["default_device", "as_tensor", "T", "to_device"]


def default_device() -> torch.device:
    """The device minifast trains on unless told otherwise: CUDA when available, else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


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
    """Move a tensor, or a (nested) tuple/list of tensors, to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch
