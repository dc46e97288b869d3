"""An in-memory snapshot of what a trial run changes (the model's weights and mode, the
optimiser's state, every RNG and the training loader's own generators, the loader's epoch),
to put it all back after, as `lr_find` does."""

from __future__ import annotations

import copy
from typing import Any

import torch
from attrs import define

from ..runtime.modules import unwrap
from ..runtime.rng import reading_state, set_reading_state

__all__ = ["TrainingSnapshot"]


@define
class TrainingSnapshot:
    """`TrainingSnapshot.take(model, opt, dl)` copies the state; `.restore()` puts it back."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    dl: Any
    weights: dict
    opt_state: dict
    training: bool
    reads: dict

    @classmethod
    def take(cls, model: torch.nn.Module, opt: torch.optim.Optimizer, dl) -> TrainingSnapshot:
        """A copy of the model's weights and mode, the optimiser state, and `dl`'s
        `reading_state` (the RNGs, the loader's own generators, which it advances, and its
        `state_dict()` when it has one)."""
        m = unwrap(model)
        return cls(
            model=m, opt=opt, dl=dl,
            weights={k: v.detach().clone() for k, v in m.state_dict().items()},
            opt_state=copy.deepcopy(opt.state_dict()),
            training=m.training,
            reads=reading_state(dl),
        )

    def restore(self) -> None:
        """Put everything back as it was when the snapshot was taken."""
        self.model.load_state_dict(self.weights)
        self.opt.load_state_dict(self.opt_state)
        self.model.train(self.training)
        set_reading_state(self.dl, self.reads)
