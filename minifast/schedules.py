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
from collections.abc import Callable, Sequence

import numpy as np

from .callbacks import Callback, Recorder
from .optim import get_lrs, set_lrs, set_moms

__all__ = [
    "sum_geom",
    "cycle_position",
    "sgdr_mult",
    "clr_mult",
    "clr_mom",
    "one_cycle_mult",
    "one_cycle_mom",
    "lr_suggestion",
    "LR_Updater",
    "ConstantLR",
    "CosAnneal",
    "CircularLR",
    "OneCycle",
    "CircularLR_beta",
    "LR_Finder",
]

LRs = float | Sequence[float]


# ----------------------------------------------------------------------------------------
# Pure functions of the iteration


def sum_geom(a: int, r: int, n: int) -> int:
    """`a + a*r + ... + a*r**(n-1)`: the number of epochs of `n` cycles of `a` epochs, each
    `r` times longer than the last (fastai v0.7's `sum_geom`)."""
    return a * n if r == 1 else a * (r**n - 1) // (r - 1)


def cycle_position(t: int, nb: int, cycle_mult: int = 1) -> tuple[int, int, int]:
    """`(cycle, t_in_cycle, cycle_length)` of iteration `t` for cycles of `nb`, `nb*mult`, ..."""
    if nb <= 0:
        raise ValueError(f"a cycle must have at least one batch, got nb={nb}")
    if cycle_mult == 1:
        k, t_c = divmod(t, nb)
        return k, t_c, nb
    k, start = 0, 0
    while t >= start + nb:  # O(log t) cycles when cycle_mult >= 2
        start += nb
        nb *= cycle_mult
        k += 1
    return k, t - start, nb


def sgdr_mult(t: int, nb: int, cycle_mult: int = 1) -> float:
    """SGDR (cosine annealing with warm restarts) as a fraction of the base LR at iteration `t`.

    fastai v0.7's `CosAnneal.calc_lr`: `1/100` while `t < nb/20` (first cycle only), else
    `(1 + cos(pi * t_c / nb_c)) / 2`. (v0.7 compared the global iteration with the *current*
    cycle's `nb/20`, which only differs from this for `cycle_mult >= 20`.)
    """
    if t < nb / 20:
        return 0.01
    _, t_c, nb_c = cycle_position(t, nb, cycle_mult)
    return (math.cos(math.pi * t_c / nb_c) + 1) / 2


def clr_mult(t: int, nb: int, div: float = 4, cut_div: float = 8, cycle_mult: int = 1) -> float:
    """Cyclical (triangular, skewed) LR as a fraction of the base LR (v0.7 `CircularLR`)."""
    _, t_c, nb_c = cycle_position(t, nb, cycle_mult)
    cut = max(1, int(nb_c // cut_div))
    pct = 1 - (t_c - cut) / (nb_c - cut) if t_c > cut else t_c / cut
    return (1 + pct * (div - 1)) / div


def clr_mom(t: int, nb: int, moms: tuple[float, float], cut_div: float = 8,
            cycle_mult: int = 1) -> float:
    """Momentum of `CircularLR`, opposite to its LR: `moms[0]` -> `moms[1]` at the LR peak ->
    back towards `moms[0]`."""
    _, t_c, nb_c = cycle_position(t, nb, cycle_mult)
    cut = max(1, int(nb_c // cut_div))
    pct = (t_c - cut) / (nb_c - cut) if t_c > cut else 1 - t_c / cut
    return moms[1] + pct * (moms[0] - moms[1])


def _one_cycle_half(nb: int, pct: float) -> int:
    return max(1, int(nb * (1 - pct / 100) / 2))


def one_cycle_mult(t: int, nb: int, div: float = 10, pct: float = 10, cycle_mult: int = 1) -> float:
    """One-cycle LR as a fraction of the base LR (v0.7 `CircularLR_beta`; `pct` in percent)."""
    _, t_c, nb_c = cycle_position(t, nb, cycle_mult)
    c = _one_cycle_half(nb_c, pct)
    if t_c > 2 * c:
        p = (t_c - 2 * c) / (nb_c - 2 * c)
        return (1 + p * (1 - 100) / 100) / div
    p = 1 - (t_c - c) / c if t_c > c else t_c / c
    return (1 + p * (div - 1)) / div


def one_cycle_mom(t: int, nb: int, moms: tuple[float, float], pct: float = 10,
                  cycle_mult: int = 1) -> float:
    """One-cycle momentum, opposite to the LR: `moms[0]` (max) -> `moms[1]` (min) at the LR
    peak -> `moms[0]`, then `moms[0]` during the final annealing."""
    _, t_c, nb_c = cycle_position(t, nb, cycle_mult)
    c = _one_cycle_half(nb_c, pct)
    if t_c > 2 * c:
        return moms[0]
    p = 1 - (t_c - c) / c if t_c > c else t_c / c
    return moms[0] + p * (moms[1] - moms[0])


def lr_suggestion(lrs: Sequence[float], losses: Sequence[float], n_skip: int = 10,
                  n_skip_end: int = 5) -> float | None:
    """The LR where the smoothed loss falls fastest: the steepest descent of loss vs log(lr).

    The first `n_skip` and last `n_skip_end` points are dropped (the start is noisy, the end
    diverges), as is everything after the loss's minimum (past it the loss only rises). The
    slope at each point is taken over a window of +-`k` points (`k` = a tenth of the points
    left, at least 1): `(loss[i+k] - loss[i-k]) / (log lr[i+k] - log lr[i-k])`, which a
    batch's noise cannot dominate the way a point-to-point difference can; the LR at the most
    negative slope is returned. With too few points the skipping is relaxed; with fewer than
    two usable points, None.
    """
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    keep = np.isfinite(losses) & (lrs > 0)
    lrs, losses = lrs[keep], losses[keep]
    if len(lrs) - n_skip - n_skip_end >= 3:
        lrs, losses = lrs[n_skip: len(lrs) - n_skip_end], losses[n_skip: len(losses) - n_skip_end]
    if len(lrs) < 2:
        return None
    lo = int(np.argmin(losses))
    if lo >= 1:
        lrs, losses = lrs[: lo + 1], losses[: lo + 1]
    log_lrs = np.log(lrs)
    if np.ptp(log_lrs) == 0:
        return float(lrs[0])
    n = len(lrs)
    k = max(1, n // 10)
    i = np.arange(n)
    lo, hi = np.maximum(i - k, 0), np.minimum(i + k, n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = (losses[hi] - losses[lo]) / (log_lrs[hi] - log_lrs[lo])
    slopes = np.where(np.isfinite(slopes), slopes, np.inf)
    return float(lrs[int(np.argmin(slopes))])


def _scale(lrs: LRs, m: float):
    return lrs * m if isinstance(lrs, (int, float)) else [lr * m for lr in lrs]


# ----------------------------------------------------------------------------------------
# Callbacks


class LR_Updater(Callback):
    """Base of the schedules: sets `lr_at(t)` (and `mom_at(t)` when it cycles momentum) at
    every `on_batch_begin`, with `t = state.iteration`.

    `lrs`: the base LR, a scalar or one per parameter group; None takes the optimiser's LRs
    when training begins. `on_cycle_end(sched, cycle)` is called after the last batch of each
    cycle. After the run, `recorder` is the run's `Recorder`, so `plot_lr()`/`plot_loss()`
    work on the schedule as they did on v0.7's `learn.sched`.
    """

    order = -10  # before user callbacks (order 0), so they see this batch's LR

    def __init__(self, lrs: LRs | None = None, on_cycle_end: Callable | None = None):
        self.lrs = _check_lrs(lrs)
        self.on_cycle_end = on_cycle_end
        self.recorder: Recorder | None = None

    def lr_mult(self, t: int) -> float:
        """The LR at iteration `t` as a fraction of the base LR."""
        return 1.0

    def lr_at(self, t: int) -> LRs:
        """The LR(s) at iteration `t`: the base LR(s) times `lr_mult(t)`."""
        if self.lrs is None:
            raise ValueError(f"{type(self).__name__} has no base LR yet: pass lrs=...")
        return _scale(self.lrs, self.lr_mult(t))

    def mom_at(self, t: int) -> float | None:
        """The momentum at iteration `t`, or None when this schedule leaves momentum alone."""
        return None

    def cycle_ended(self, n: int) -> int | None:
        """The index of the cycle that ends after `n` iterations, or None."""
        return None

    def state_dict(self) -> dict:
        """The base LRs: a checkpoint keeps them, since after a resume the optimiser holds the
        scheduled LR, not the base one that `lrs=None` took from it."""
        return {"lrs": self.lrs}

    def load_state_dict(self, sd: dict) -> None:
        """Restore `state_dict()`."""
        self.lrs = sd["lrs"]

    def on_train_begin(self) -> None:
        if self.lrs is None:
            self.lrs = get_lrs(self.state.opt)
        cbs = getattr(self.state.stepper, "cbs", None)
        self.recorder = cbs.find(Recorder) if cbs is not None else None

    def on_batch_begin(self) -> None:
        t = self.state.iteration
        set_lrs(self.state.opt, self.lr_at(t))
        mom = self.mom_at(t)
        if mom is not None:
            set_moms(self.state.opt, mom)

    def on_batch_end(self, loss: float) -> bool | None:
        if self.on_cycle_end is not None:
            k = self.cycle_ended(self.state.iteration)
            if k is not None:
                self.on_cycle_end(self, k)
        return None

    def _need_recorder(self) -> Recorder:
        if self.recorder is None:
            raise ValueError(f"{type(self).__name__} has not been used in a fit yet: nothing to plot")
        return self.recorder

    def plot_lr(self):
        """LR (and momentum, when cycled) vs iteration of the last run; returns the figure."""
        from .plots import plot_lr

        return plot_lr(self._need_recorder())

    def plot_loss(self, n_skip: int = 0, n_skip_end: int = 0):
        """Raw and smoothed training loss vs iteration of the last run; returns the figure."""
        from .plots import plot_loss

        return plot_loss(self._need_recorder(), n_skip, n_skip_end)


def _check_lrs(lrs):
    if lrs is None:
        return None
    try:
        arr = np.asarray(lrs, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"learning rates must be finite numbers >= 0, got {lrs!r}")
    return float(arr) if arr.ndim == 0 else [float(v) for v in arr]


def _check_nb(nb, name: str = "nb") -> int | None:
    if nb is None:
        return None
    if isinstance(nb, bool) or not isinstance(nb, (int, np.integer)) or nb <= 0:
        raise ValueError(f"{name} (batches per cycle) must be a positive integer, got {nb!r}")
    return int(nb)


def _check_cycle_mult(cycle_mult) -> int:
    if isinstance(cycle_mult, bool) or not isinstance(cycle_mult, (int, float, np.integer)):
        raise ValueError(f"cycle_mult must be an integer >= 1, got {cycle_mult!r}")
    if cycle_mult < 1:
        raise ValueError(f"cycle_mult must be >= 1 (each cycle as long or longer than the last), got {cycle_mult}")
    if cycle_mult != int(cycle_mult):
        raise ValueError(f"cycle_mult must be a whole number so cycles end on batch boundaries, got {cycle_mult}")
    return int(cycle_mult)


def _check_moms(moms) -> tuple[float, float] | None:
    if moms is None:
        return None
    moms = tuple(float(m) for m in moms)
    if len(moms) != 2 or not all(0 <= m < 1 for m in moms):
        raise ValueError(f"moms must be (max_mom, min_mom), each in [0, 1), got {moms}")
    return moms


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
        self.nb = _check_nb(nb)
        self.cycle_mult = _check_cycle_mult(cycle_mult)
        self.cycle_len = _check_nb(cycle_len, "cycle_len")

    def on_train_begin(self) -> None:
        if self.cycle_len is not None or self.nb is None:
            per_epoch = _check_nb(self.state.n_batches, "batches per epoch")
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
        self.div, self.cut_div, self.moms = div, cut_div, _check_moms(moms)

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
        self.div, self.pct, self.moms = div, pct, _check_moms(moms)

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
        self.num_it = _check_nb(num_it, "num_it")
        if not (isinstance(end_lr, (int, float)) and end_lr > 0 and math.isfinite(end_lr)):
            raise ValueError(f"end_lr must be a positive number, got {end_lr!r}")
        self.end_lr, self.linear, self.stop_div = float(end_lr), linear, stop_div
        self.best, self.diverged = math.inf, False

    def lr_mult(self, t: int) -> float:
        start = self.lrs if isinstance(self.lrs, float) else self.lrs[-1]
        ratio = self.end_lr / start
        frac = t / (self.num_it - 1) if self.num_it > 1 else 0.0
        return 1 + (ratio - 1) * frac if self.linear else ratio**frac

    def on_train_begin(self) -> None:
        super().on_train_begin()
        if min([self.lrs] if isinstance(self.lrs, float) else self.lrs) <= 0:
            raise ValueError(f"LR_Finder needs start LRs > 0, got {self.lrs}")
        self.best, self.diverged = math.inf, False

    def on_batch_end(self, loss: float) -> bool | None:
        n, s = self.state.iteration, self.state.smooth_loss
        if self.stop_div and (not math.isfinite(s) or s > 4 * self.best):
            self.diverged = True
            return True
        if n > 10 and s < self.best:
            self.best = s
        return n >= self.num_it

    @property
    def lrs_tried(self) -> list[float]:
        """LR of the first parameter group at each iteration of the last search."""
        return list(self._need_recorder().lrs)

    @property
    def losses(self) -> list[float]:
        """Smoothed loss at each iteration of the last search."""
        return list(self._need_recorder().smooth_losses)

    def suggestion(self, n_skip: int = 10, n_skip_end: int = 5) -> float | None:
        """Suggested LR (first parameter group): steepest descent, see `lr_suggestion`."""
        return lr_suggestion(self.lrs_tried, self.losses, n_skip, n_skip_end)

    def plot(self, n_skip: int = 10, n_skip_end: int = 5, suggestion: bool = True):
        """Smoothed loss vs LR (log axis), the suggested LR marked; returns the figure."""
        from .plots import plot_lr_find

        return plot_lr_find(self, n_skip=n_skip, n_skip_end=n_skip_end, suggestion=suggestion)
