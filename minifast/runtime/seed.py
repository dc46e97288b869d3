"""One call to seed every random number generator a training run draws from."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["set_seed"]


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python's `random`, numpy's global RNG and torch's (CPU and every CUDA device), so
    that model initialisation, dropout and the loaders' shuffling (an `ArrayLoader` without
    a `seed`, or a torch `DataLoader` without a `generator`, draws its order from torch's
    RNG) repeat exactly from run to run.

    `deterministic=True` also makes torch choose deterministic algorithms (an error for an
    operation that has none), turns off cuDNN's benchmark mode and sets the cuBLAS workspace
    that deterministic CUDA matrix products need; it can be slower. `False` leaves those
    settings as they are.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
