"""A training loader's epoch order, replayable: what a mid-epoch resume needs from a loader
other than `ArrayLoader` (whose order is a pure function of its seed and the epoch).

A `torch.utils.data.DataLoader` draws its epoch's permutation (and its workers' seeds) from
torch's global RNG, or from its own `generator`/its sampler's `generator`, when `iter(dl)`
starts the epoch. `loader_rng_state` captures those states at the epoch's start; a resumed
run sets them again, calls `iter(dl)`, skips the batches already done, and puts back the
states it had (`replay_epoch`), so the epoch continues in the same order and dropout and the
rest continue from the checkpoint's own RNG states. `order_problem` says when a loader's order
cannot be replayed that way, so that mid-epoch checkpoints of it are refused, not resumed
into a different order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = ["order_problem", "loader_generators", "loader_rng_state", "set_loader_rng_state",
           "replay_epoch"]

#: torch's samplers whose only randomness is torch's global RNG or their `generator`.
_KNOWN_SAMPLERS = (SequentialSampler, RandomSampler, SubsetRandomSampler, WeightedRandomSampler)


def _replays_itself(dl) -> bool:
    """A loader whose order its own `state_dict` restores (ArrayLoader and its kind), or a
    fixed sequence of batches."""
    return (hasattr(dl, "batches") or callable(getattr(dl, "load_state_dict", None))
            or isinstance(dl, (list, tuple)))


def order_problem(dl) -> str | None:
    """Why a mid-epoch resume could not replay `dl`'s epoch order, or None when it can."""
    if _replays_itself(dl):
        return None
    if not isinstance(dl, DataLoader):
        return (f"a {type(dl).__name__} is neither a torch DataLoader nor an ArrayLoader, so "
                f"minifast cannot know what its order depends on")
    if isinstance(dl.dataset, IterableDataset):
        return ("its dataset is an IterableDataset, whose order the DataLoader neither draws "
                "nor can replay")
    bs = dl.batch_sampler
    if bs is not None and type(bs) is not BatchSampler:
        return (f"its batch_sampler is a {type(bs).__name__}, whose randomness minifast does "
                f"not know")
    sampler = dl.sampler if bs is None else bs.sampler
    if type(sampler) not in _KNOWN_SAMPLERS:
        return (f"its sampler is a {type(sampler).__name__}, whose randomness minifast does not "
                f"know (torch's own samplers draw only from torch's RNG or their generator)")
    return None


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


def replay_epoch(dl, epoch_start: dict[str, Any], done: int) -> Iterator:
    """An iterator over the rest of an epoch of `dl` whose first `done` batches were trained
    before a resume: the order is drawn from the epoch's starting RNG states
    (`epoch_start`, from `loader_rng_state`), then the RNG states of now are put back."""
    now = loader_rng_state(dl)
    set_loader_rng_state(dl, epoch_start)
    it = iter(dl)
    for _ in range(done):
        next(it)
    set_loader_rng_state(dl, now)
    return it
