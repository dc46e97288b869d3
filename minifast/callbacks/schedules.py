"""Learning-rate (and momentum) schedules as callbacks: SGDR, cyclical LR, one-cycle, LR finder.

Every schedule is a pure function of the iteration number `t` (batches trained since the
start of the `fit` call, `state.iteration`): `lr_at(t)` and `mom_at(t)` compute the values
from `t` alone, and the callback applies them with `set_lrs`/`set_moms` in `on_batch_begin`.
A run resumed from a checkpoint (which restores `state.iteration`) therefore continues on
exactly the same curve, and a test can check every iteration against the closed form.

The formulas are fastai v0.7's (`sgdr.py`), rewritten from its stateful counters into
functions of `t`:

- `CosAnneal` (SGDR): `lr/100` while `t < nb/20` in the first cycle (warm-up), then
  `lr/2 * (1 + cos(pi * t_c / nb_c))` with `t_c` the iteration within the cycle; each cycle
  restarts at `lr` and is `cycle_mult` times longer than the previous one.
- `CircularLR` (`use_clr=(div, cut_div)`): linear from `lr/div` up to `lr` over the first
  `nb // cut_div` iterations, then linearly back down towards `lr/div`.
- `OneCycle` (`use_clr_beta=(div, pct, max_mom, min_mom)`, v0.7's `CircularLR_beta`): `lr/div`
  up to `lr` and back to `lr/div` over `(100 - pct)`% of the cycle, then down to `lr/div/100`
  over the last `pct`%; momentum goes the opposite way (max -> min -> max, then stays max).
- `LR_Finder`: exponential (or linear) ramp from the start LR to `end_lr`; stops when the
  smoothed loss exceeds 4x its minimum or is not finite.
- `ConstantLR`: the base LR at every iteration (what `Learner.fit` uses without `cycle_len`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

from .. import plots
from ..checks import (
    check_cycle_mult,
    check_lrs,
    check_moms,
    optional_positive_int,
    positive_int,
)
from ..core.events import Callback
from ..curves import (
    clr_mom,
    clr_mult,
    cycle_position,
    lr_suggestion,
    one_cycle_mom,
    one_cycle_mult,
    sgdr_mult,
    sum_geom,
)
from ..optim.hypers import get_lrs, set_lrs, set_moms
from .recording import Recorder

__all__ = [
    "LR_Updater",
    "ConstantLR",
    "CosAnneal",
    "CircularLR",
    "OneCycle",
    "CircularLR_beta",
    "LR_Finder",
    "make_schedule",
]

LRs = float | Sequence[float]


def _scale(lrs: LRs, m: float):
    return lrs * m if isinstance(lrs, (int, float)) else [lr * m for lr in lrs]


# ----------------------------------------------------------------------------------------
# Callbacks


class LR_Updater(Callback):
    """Base of the schedules: sets `lr_at(t)` (and `mom_at(t)` when it cycles momentum) at
    every `on_batch_begin`, with `t = state.iteration`.

    `lrs`: the base LR, a scalar or one per parameter group (kept as `base_lrs`); None takes
    the optimiser's LRs when training begins. `on_cycle_end(sched, cycle)` is called after
    the last batch of each cycle.

    A change another callback makes to the optimiser's LR (`set_lrs` at an epoch's end,
    `ReduceLROnPlateau`) is kept: the schedule multiplies its curve by it from then on (per
    parameter group, in `scale`, which checkpoints save), instead of overwriting it at the
    next batch. Changes a callback makes in `on_batch_begin`, after the schedule, last for
    that batch only.

    After a run the schedule reads like fastai v0.7's `learn.sched` (a `LossRecorder`):
    `iterations`, `lrs` (the LR of the first parameter group at each iteration), `losses`
    (the smoothed loss `on_batch_end` received), `plot_loss()`, `plot_lr()`; the whole
    record (momenta included) is `recorder`.
    """

    order = -10  # before user callbacks (order 0), so they see this batch's LR

    def __init__(self, lrs: LRs | None = None, on_cycle_end: Callable | None = None):
        self.base_lrs = check_lrs(lrs)
        self.on_cycle_end = on_cycle_end
        self.recorder: Recorder | None = None
        self.scale: list[float] | None = None
        self.last_lrs: list[float] | None = None

    def lr_mult(self, t: int) -> float:
        """The LR at iteration `t` as a fraction of the base LR."""
        return 1.0

    def lr_at(self, t: int) -> LRs:
        """The LR(s) of the curve at iteration `t`: the base LR(s) times `lr_mult(t)`
        (before `scale`)."""
        if self.base_lrs is None:
            raise ValueError(f"{type(self).__name__} has no base LR yet: pass lrs=...")
        return _scale(self.base_lrs, self.lr_mult(t))

    def mom_at(self, t: int) -> float | None:
        """The momentum at iteration `t`, or None when this schedule leaves momentum alone."""
        return None

    def cycle_ended(self, n: int) -> int | None:
        """The index of the cycle that ends after `n` iterations, or None."""
        return None

    def state_dict(self) -> dict:
        """The base LRs, the scale other callbacks' changes put on them, and the LRs of the
        last step: a resumed run continues on exactly the same LRs."""
        return {"lrs": self.base_lrs, "scale": self.scale, "last_lrs": self.last_lrs}

    def load_state_dict(self, sd: dict) -> None:
        """Restore `state_dict()`."""
        self.base_lrs = sd["lrs"]
        self.scale, self.last_lrs = sd.get("scale"), sd.get("last_lrs")

    def on_train_begin(self) -> None:
        if self.base_lrs is None:
            self.base_lrs = get_lrs(self.state.opt)
        self.recorder = getattr(self.state, "recorder", None)
        if self.state.iteration == 0 or self.scale is None:  # a fresh run (not a resumed one)
            self.scale = [1.0] * len(self.state.opt.param_groups)
            self.last_lrs = None

    def on_batch_begin(self) -> None:
        opt, t = self.state.opt, self.state.iteration
        if self.last_lrs is not None:
            self._keep_changes(get_lrs(opt))
        curve = self.lr_at(t)
        curve = [curve] * len(self.scale) if isinstance(curve, (int, float)) else curve
        set_lrs(opt, [lr * k for lr, k in zip(curve, self.scale)])
        mom = self.mom_at(t)
        if mom is not None:
            set_moms(opt, mom)

    def _keep_changes(self, lrs: list[float]) -> None:
        """Fold into `scale` what another callback did to the LRs since the last step."""
        for i, (now, then) in enumerate(zip(lrs, self.last_lrs)):
            if then > 0 and not math.isclose(now, then, rel_tol=1e-6):
                self.scale[i] *= now / then

    def on_batch_end(self, loss: float) -> bool | None:
        self.last_lrs = get_lrs(self.state.opt)  # the LRs this step used
        if self.on_cycle_end is not None:
            k = self.cycle_ended(self.state.iteration)
            if k is not None:
                self.on_cycle_end(self, k)
        return None

    def _need_recorder(self) -> Recorder:
        if self.recorder is None:
            raise ValueError(f"{type(self).__name__} has not been used in a fit yet: nothing to plot")
        return self.recorder

    def _recorded(self, name: str) -> list:
        return [] if self.recorder is None else list(getattr(self.recorder, name))

    @property
    def iterations(self) -> list[int]:
        """The iteration number of each batch of the last run (v0.7's `sched.iterations`)."""
        return self._recorded("iterations")

    @property
    def lrs(self) -> list[float]:
        """The LR of the first parameter group at each iteration of the last run (v0.7's
        `sched.lrs`); the base LRs are `base_lrs`."""
        return self._recorded("lrs")

    @property
    def losses(self) -> list[float]:
        """The smoothed (debiased) loss at each iteration of the last run, the value
        `on_batch_end` received (v0.7's `sched.losses`); the raw losses are
        `recorder.losses`."""
        return self._recorded("smooth_losses")

    def plot_lr(self):
        """LR (and momentum, when cycled) vs iteration of the last run; returns the LR `Axes`."""
        return plots.plot_lr(self._need_recorder())

    def plot_loss(self, n_skip: int = 0, n_skip_end: int = 0):
        """Raw and smoothed training loss vs iteration of the last run; returns the `Axes`."""
        return plots.plot_loss(self._need_recorder(), n_skip, n_skip_end)


class ConstantLR(LR_Updater):
    """The base LR at every iteration (`Learner.fit` without `cycle_len`)."""


class _Cyclic(LR_Updater):
    """A schedule made of cycles of `nb`, `nb*cycle_mult`, ... iterations.

    With `cycle_len` (epochs per first cycle), `nb` is set when training begins to
    `cycle_len` x the batches this process trains per epoch (`state.n_batches`: under DDP a
    rank's share, known only once `fit` has sharded the loader). Without `nb` or `cycle_len`,
    a cycle is one epoch.
    """

    def __init__(self, nb: int | None, cycle_mult: int = 1, lrs: LRs | None = None,
                 on_cycle_end: Callable | None = None, cycle_len: int | None = None):
        super().__init__(lrs, on_cycle_end)
        self.nb = optional_positive_int(nb, "nb", "batches per cycle")
        self.cycle_mult = check_cycle_mult(cycle_mult)
        self.cycle_len = optional_positive_int(cycle_len, "cycle_len", "batches per cycle")

    def on_train_begin(self) -> None:
        if self.cycle_len is not None or self.nb is None:
            per_epoch = positive_int(self.state.n_batches, "batches per epoch", "batches per cycle")
            self.nb = per_epoch * (self.cycle_len or 1)
        super().on_train_begin()

    def cycle_ended(self, n: int) -> int | None:
        if n <= 0:
            return None
        k, t_c, _ = cycle_position(n, self.nb, self.cycle_mult)
        return k - 1 if t_c == 0 else None


class CosAnneal(_Cyclic):
    """SGDR: cosine annealing with warm restarts, exactly as fastai v0.7 (see `sgdr_mult`).

    `nb`: batches in the first cycle (batches per epoch x `cycle_len`; None: one epoch);
    each restart multiplies it by `cycle_mult`.
    """

    def lr_mult(self, t: int) -> float:
        return sgdr_mult(t, self.nb, self.cycle_mult)


class CircularLR(_Cyclic):
    """Cyclical LR (`use_clr=(div, cut_div[, max_mom, min_mom])`, see `clr_mult`); with
    `moms=(max_mom, min_mom)` the momentum is cycled opposite to the LR."""

    def __init__(self, nb: int | None, div: float = 4, cut_div: float = 8, moms=None,
                 cycle_mult: int = 1, lrs: LRs | None = None, on_cycle_end: Callable | None = None,
                 cycle_len: int | None = None):
        super().__init__(nb, cycle_mult, lrs, on_cycle_end, cycle_len)
        if not div >= 1 or not cut_div > 0:
            raise ValueError(f"CircularLR needs div >= 1 and cut_div > 0, got div={div}, cut_div={cut_div}")
        self.div, self.cut_div, self.moms = div, cut_div, check_moms(moms)

    def lr_mult(self, t: int) -> float:
        return clr_mult(t, self.nb, self.div, self.cut_div, self.cycle_mult)

    def mom_at(self, t: int) -> float | None:
        if self.moms is None:
            return None
        return clr_mom(t, self.nb, self.moms, self.cut_div, self.cycle_mult)


class OneCycle(_Cyclic):
    """One-cycle policy (`use_clr_beta=(div, pct[, max_mom, min_mom])`, v0.7's
    `CircularLR_beta`): see `one_cycle_mult`/`one_cycle_mom`. `pct` is a percentage (10 means
    the last 10% of the cycle anneals to `lr/div/100`)."""

    def __init__(self, nb: int | None, div: float = 10, pct: float = 10, moms=None,
                 cycle_mult: int = 1, lrs: LRs | None = None, on_cycle_end: Callable | None = None,
                 cycle_len: int | None = None):
        super().__init__(nb, cycle_mult, lrs, on_cycle_end, cycle_len)
        if not div >= 1:
            raise ValueError(f"OneCycle needs div >= 1, got {div}")
        if not 0 <= pct < 100:
            raise ValueError(f"OneCycle's pct is a percentage in [0, 100), got {pct}")
        self.div, self.pct, self.moms = div, pct, check_moms(moms)

    def lr_mult(self, t: int) -> float:
        return one_cycle_mult(t, self.nb, self.div, self.pct, self.cycle_mult)

    def mom_at(self, t: int) -> float | None:
        if self.moms is None:
            return None
        return one_cycle_mom(t, self.nb, self.moms, self.pct, self.cycle_mult)


CircularLR_beta = OneCycle


class LR_Finder(LR_Updater):
    """LR range test: ramps the LR from `lrs` (the start) to `end_lr` over `num_it` iterations
    (exponentially, or linearly with `linear=True`) and stops after `num_it` iterations, or
    earlier when the smoothed loss is not finite or exceeds 4x the best seen after the first
    10 iterations (`stop_div`).

    With several parameter groups all LRs are multiplied by the same factor, which ends at
    `end_lr / lrs[-1]` (v0.7). `plot()` shows smoothed loss vs LR; `suggestion()` is
    `lr_suggestion` of the recorded curve.
    """

    def __init__(self, num_it: int, end_lr: float = 10, lrs: LRs | None = None,
                 linear: bool = False, stop_div: bool = True):
        super().__init__(lrs)
        self.num_it = positive_int(num_it, "num_it", "batches per cycle")
        if not (isinstance(end_lr, (int, float)) and end_lr > 0 and math.isfinite(end_lr)):
            raise ValueError(f"end_lr must be a positive number, got {end_lr!r}")
        self.end_lr, self.linear, self.stop_div = float(end_lr), linear, stop_div
        self.best, self.diverged = math.inf, False

    def lr_mult(self, t: int) -> float:
        start = self.base_lrs if isinstance(self.base_lrs, float) else self.base_lrs[-1]
        ratio = self.end_lr / start
        frac = t / (self.num_it - 1) if self.num_it > 1 else 0.0
        return 1 + (ratio - 1) * frac if self.linear else ratio**frac

    def on_train_begin(self) -> None:
        super().on_train_begin()
        base = self.base_lrs
        if min([base] if isinstance(base, float) else base) <= 0:
            raise ValueError(f"LR_Finder needs start LRs > 0, got {base}")
        self.best, self.diverged = math.inf, False

    def on_batch_end(self, loss: float) -> bool | None:
        super().on_batch_end(loss)
        n, s = self.state.iteration, loss
        if self.stop_div and (not math.isfinite(s) or s > 4 * self.best):
            self.diverged = True
            return True
        if n > 10 and s < self.best:
            self.best = s
        return n >= self.num_it

    def suggestion(self, n_skip: int = 10, n_skip_end: int = 5) -> float | None:
        """Suggested LR (first parameter group): steepest descent, see `lr_suggestion`."""
        return lr_suggestion(self.lrs, self.losses, n_skip, n_skip_end)

    def plot(self, n_skip: int = 10, n_skip_end: int = 5, suggestion: bool = True):
        """Smoothed loss vs LR (log axis), the suggested LR marked; returns the `Axes`."""
        return plots.plot_lr_find(self, n_skip=n_skip, n_skip_end=n_skip_end, suggestion=suggestion)


def _clr_args(args, name: str, form: str, has_momentum: bool):
    args = list(args)
    if len(args) not in (2, 4) or not all(isinstance(a, (int, float)) for a in args):
        raise ValueError(f"{name} must be {form}, got {tuple(args)}")
    moms = tuple(args[2:]) or None
    if moms is not None and not has_momentum:
        warnings.warn(f"{name}: this optimiser has no momentum to cycle; momenta ignored",
                      UserWarning, stacklevel=4)
    return args[0], args[1], moms


def make_schedule(lrs: LRs, n_cycle: int, n_batches: int, cycle_len: int | None = None,
                  cycle_mult: int = 1, use_clr: Sequence[float] | None = None,
                  use_clr_beta: Sequence[float] | None = None,
                  on_cycle_end: Callable | None = None,
                  has_momentum: bool = True) -> tuple[int, LR_Updater]:
    """fastai v0.7's choice of schedule for `fit(lrs, n_cycle, cycle_len=..., ...)`:
    `(n_epochs, schedule)`.

    Without `cycle_len`: `n_cycle` epochs of `ConstantLR` (`cycle_mult` ignored, with a
    warning). With it: `sum_geom(cycle_len, cycle_mult, n_cycle)` epochs of `CosAnneal`
    (SGDR), or `CircularLR` with `use_clr=(div, cut_div[, max_mom, min_mom])`, or `OneCycle`
    with `use_clr_beta=(div, pct[, max_mom, min_mom])`; every cycle `cycle_mult` times longer
    than the last. `n_batches`: training batches per epoch. `has_momentum=False` warns that
    cycled momenta will be ignored.
    """
    n_cycle = positive_int(n_cycle, "n_cycle")
    cycle_mult = check_cycle_mult(cycle_mult)
    if use_clr is not None and use_clr_beta is not None:
        raise ValueError("pass use_clr or use_clr_beta, not both")
    if cycle_len is None:
        for arg, val in (("use_clr", use_clr), ("use_clr_beta", use_clr_beta)):
            if val is not None:
                raise ValueError(f"{arg} needs cycle_len (the epochs of one cycle)")
        if cycle_mult != 1:
            warnings.warn(
                f"cycle_mult={cycle_mult} is ignored without cycle_len: training "
                f"{n_cycle} epoch(s) at a constant learning rate", UserWarning, stacklevel=3)
        return n_cycle, ConstantLR(lrs)
    cycle_len = positive_int(cycle_len, "cycle_len")
    # nb is provisional: the schedule recounts it from cycle_len and the batches per epoch
    # fit actually runs (a rank's share under DDP, known once fit has sharded the loader)
    nb, kw = n_batches * cycle_len, {"cycle_len": cycle_len}
    n_epochs = sum_geom(cycle_len, cycle_mult, n_cycle)
    if use_clr is not None:
        div, cut_div, moms = _clr_args(use_clr, "use_clr", "(div, cut_div[, max_mom, min_mom])",
                                       has_momentum)
        return n_epochs, CircularLR(nb, div, cut_div, moms, cycle_mult, lrs, on_cycle_end, **kw)
    if use_clr_beta is not None:
        div, pct, moms = _clr_args(use_clr_beta, "use_clr_beta", "(div, pct[, max_mom, min_mom])",
                                   has_momentum)
        return n_epochs, OneCycle(nb, div, pct, moms, cycle_mult, lrs, on_cycle_end, **kw)
    return n_epochs, CosAnneal(nb, cycle_mult, lrs, on_cycle_end, **kw)
