"""The core floor: a run's state, its events and callbacks' base, the Stepper and the loop.

It names no concrete callback and no process plumbing; `minifast.fit` assembles a run
around it.
"""

from .events import EVENTS, Callback, CallbackHandler, StopTraining
from .loop import epoch_batches, predict, run_loop, train_epoch, validate
from .state import FitState
from .stepper import ClosureStepper, NonFiniteLossError, Stepper, check_output_shape, needs_closure

__all__ = [
    "EVENTS", "Callback", "CallbackHandler", "StopTraining",
    "epoch_batches", "predict", "run_loop", "train_epoch", "validate",
    "FitState", "NonFiniteLossError", "Stepper", "ClosureStepper", "check_output_shape",
    "needs_closure",
]
