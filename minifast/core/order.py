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

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from ..runtime.rng import loader_rng_state, set_loader_rng_state

__all__ = ["order_problem", "replay_epoch"]

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
