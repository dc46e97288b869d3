"""Argument validators shared by every floor: one check per kind of argument, one message.

Each returns the value in the form the caller uses (an `int`, a `float`, a list) or raises a
`ValueError` that names the argument, what it got and what it needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "positive_int",
    "optional_positive_int",
    "non_negative_int",
    "check_batch_size",
    "check_metrics",
    "is_stateful_metric",
    "check_cycle_mult",
    "check_lrs",
    "check_moms",
    "check_positive_number",
    "check_non_negative_number",
    "check_dropout",
]


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def positive_int(value, name: str, what: str = "") -> int:
    """`value` as an `int` if it is a positive integer (booleans are not), else a ValueError
    naming `name` (with `what`, e.g. "batches per cycle", in brackets)."""
    if not _is_int(value) or value <= 0:
        label = f"{name} ({what})" if what else name
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


def optional_positive_int(value, name: str, what: str = "") -> int | None:
    """None, or `positive_int(value, name, what)`."""
    return None if value is None else positive_int(value, name, what)


def non_negative_int(value, name: str) -> int:
    """`value` as an `int` if it is an integer >= 0 (booleans are not), else a ValueError."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_batch_size(bs, name: str = "bs") -> int:
    """A batch size as an int; a clear ValueError naming `name` for anything but a positive
    integer (booleans included)."""
    return positive_int(bs, name)


def check_positive_number(value, name: str) -> float:
    """`value` as a float if it is a finite number > 0, else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_non_negative_number(value, name: str) -> float:
    """`value` as a float if it is a finite number >= 0 (a penalty, a loss weight or an
    exponent; Python or numpy scalar), else a ValueError naming `name`."""
    if not (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_dropout(value, name: str) -> float:
    """`value` as a float if it is a dropout probability, a number in [0, 1), else a
    ValueError naming `name`."""
    if not (isinstance(value, (int, float, np.number)) and 0 <= value < 1):
        raise ValueError(f"{name} must be in [0, 1) (a dropout probability), got {value!r}")
    return float(value)


def is_stateful_metric(metric) -> bool:
    """Whether `metric` follows the stateful protocol `reset()`, `accumulate(preds, y)`,
    `value()` (fed batch by batch, for sets too big to hold) rather than being a whole-set
    function `metric(preds, y)`."""
    return all(callable(getattr(metric, a, None)) for a in ("reset", "accumulate", "value"))


def check_metrics(metrics) -> list:
    """Metrics as a list: None gives `[]`, one metric a list of one. Each is a callable
    `metric(preds, y)` or a stateful metric (see `is_stateful_metric`); anything else raises a
    ValueError naming it."""
    if metrics is None:
        return []
    metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    for m in metrics:
        if not (callable(m) or is_stateful_metric(m)):
            raise ValueError(
                f"metrics must be callables metric(preds, y) returning a number, or objects "
                f"with reset(), accumulate(preds, y) and value(); got {m!r} ({type(m).__name__})"
            )
    return metrics


def check_cycle_mult(cycle_mult) -> int:
    """fastai v0.7's `cycle_mult`: a whole number >= 1, so that cycles end on batch boundaries."""
    if isinstance(cycle_mult, bool) or not isinstance(cycle_mult, (int, float, np.integer)):
        raise ValueError(f"cycle_mult must be an integer >= 1, got {cycle_mult!r}")
    if cycle_mult < 1:
        raise ValueError(f"cycle_mult must be >= 1 (each cycle as long or longer than the last), got {cycle_mult}")
    if cycle_mult != int(cycle_mult):
        raise ValueError(f"cycle_mult must be a whole number so cycles end on batch boundaries, got {cycle_mult}")
    return int(cycle_mult)


def check_lrs(lrs) -> float | list[float] | None:
    """Learning rates: None, a finite number >= 0, or a flat list of them (one per group)."""
    if lrs is None:
        return None
    try:
        arr = np.asarray(lrs, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"learning rates must be finite numbers >= 0, got {lrs!r}")
    return float(arr) if arr.ndim == 0 else [float(v) for v in arr]


def check_moms(moms: Sequence[float] | None) -> tuple[float, float] | None:
    """Cycled momenta `(max_mom, min_mom)`, each in [0, 1); None when momentum is not cycled."""
    if moms is None:
        return None
    moms = tuple(float(m) for m in moms)
    if len(moms) != 2 or not all(0 <= m < 1 for m in moms):
        raise ValueError(f"moms must be (max_mom, min_mom), each in [0, 1), got {moms}")
    return moms
