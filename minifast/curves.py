"""Pure schedule maths: the learning rate and momentum of SGDR, cyclical LR and one-cycle at
iteration `t`, as functions of `t` alone, and the LR finder's suggestion.

The formulas are fastai v0.7's (`sgdr.py`), rewritten from its stateful counters into
functions of the step, so a schedule resumed at any iteration continues on the same curve.
The callbacks that apply them live in `minifast.callbacks.schedules`; the curves are drawn
on the docs' Schedules page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "sum_geom",
    "cycle_position",
    "sgdr_mult",
    "clr_mult",
    "clr_mom",
    "one_cycle_mult",
    "one_cycle_mom",
    "lr_suggestion",
]


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
