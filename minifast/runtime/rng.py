"""Every global random number generator's state, as tensors and plain values (so that it
saves into a `weights_only` file), and back: torch CPU and CUDA, numpy, Python `random`."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_states", "set_rng_states"]


def get_rng_states() -> dict[str, Any]:
    """The state of every global RNG, ready for `torch.save(..., weights_only=True)` files."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def set_rng_states(rng: dict[str, Any]) -> None:
    """Restore what `get_rng_states` returned (CUDA only where this process has the GPUs)."""
    torch.set_rng_state(rng["torch"].to("cpu", torch.uint8))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        for i, s in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.to("cpu", torch.uint8), i)
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
