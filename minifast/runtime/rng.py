"""Every global random number generator's state, as tensors and plain values (so that it
saves into a `weights_only` file), and back: torch CPU and CUDA, numpy, Python `random`; and
the states a torch DataLoader draws its epoch's order from (torch's RNG and its generators)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

__all__ = ["get_rng_states", "set_rng_states", "loader_generators", "loader_rng_state",
           "set_loader_rng_state", "reading_state", "set_reading_state", "loader_untouched"]


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


def loader_generators(dl) -> list[torch.Generator]:
    """The `torch.Generator`s a DataLoader draws from besides torch's global RNG (its own and
    its sampler's, each once), in a fixed order."""
    if not isinstance(dl, DataLoader):
        return []
    samplers = [dl.sampler, getattr(dl.batch_sampler, "sampler", None)]
    found: list[torch.Generator] = []
    for g in [dl.generator, *(getattr(s, "generator", None) for s in samplers)]:
        if isinstance(g, torch.Generator) and not any(g is f for f in found):
            found.append(g)
    return found


def loader_rng_state(dl) -> dict[str, Any]:
    """The states `iter(dl)` draws an epoch's order from: torch's global RNG and the loader's
    generators (plain tensors, so they save into a `weights_only` checkpoint)."""
    return {"torch": torch.get_rng_state(),
            "generators": [g.get_state() for g in loader_generators(dl)]}


def set_loader_rng_state(dl, state: dict[str, Any]) -> None:
    """Restore what `loader_rng_state` returned (a state without "torch" sets only the
    loader's generators)."""
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    gens = loader_generators(dl)
    saved = state.get("generators") or []
    if len(saved) != len(gens):
        raise ValueError(f"the loader has {len(gens)} generator(s), but {len(saved)} state(s) "
                         f"were saved: resume with the loader set up as in the saved run")
    for g, s in zip(gens, saved, strict=True):
        g.set_state(s.to("cpu", torch.uint8))


def reading_state(dl) -> dict[str, Any]:
    """What reading batches of `dl` advances: every global RNG, the loader's generators and a
    copy of its `state_dict()` (an `ArrayLoader`'s epoch counter), for `set_reading_state`."""
    has_state = callable(getattr(dl, "state_dict", None))
    return {"rng": get_rng_states(), "dl_rng": loader_rng_state(dl),
            "dl_state": copy.deepcopy(dl.state_dict()) if has_state else None}


def set_reading_state(dl, state: dict[str, Any]) -> None:
    """Put back what `reading_state(dl)` returned."""
    set_rng_states(state["rng"])
    set_loader_rng_state(dl, state["dl_rng"])
    if state["dl_state"] is not None:
        dl.load_state_dict(state["dl_state"])


@contextmanager
def loader_untouched(dl) -> Iterator[None]:
    """`with loader_untouched(dl):` read batches of `dl` (a sample, or a pass that is not
    training) and afterwards put back its `reading_state` (every global RNG, the loader's
    generators and `state_dict()`), also on error, so the run draws what it would have drawn
    without the block."""
    state = reading_state(dl)
    try:
        yield
    finally:
        set_reading_state(dl, state)
