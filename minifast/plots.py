"""Plots of a training run: loss vs iteration, LR (and momentum) vs iteration, the LR finder.

matplotlib is optional (`pip install minifast[plot]`) and imported only when a plot is drawn.
Each function returns the matplotlib `Axes` it drew on, as pyplot's own functions do, the same
in scripts and notebooks: `ax.figure` is the figure (`ax.figure.savefig(path)` saves it). The
figures are made through pyplot, so `plt.show()` shows them in a script, and a notebook shows
each once (returning the `Figure` would show it twice: once by the inline backend, once more
as the cell's value).
"""

from __future__ import annotations

import numpy as np

from .curves import lr_suggestion

__all__ = ["plot_loss", "plot_lr", "plot_lr_find"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(
            "plotting needs matplotlib, which is not installed: pip install minifast[plot] "
            "(or pip install matplotlib)"
        ) from e
    return plt


def _as_recorder(obj):
    """A `Recorder`, or the recorder of a schedule's last run (clear error when none)."""
    return obj._need_recorder() if hasattr(obj, "_need_recorder") else obj


def _trim(n: int, n_skip: int, n_skip_end: int) -> slice:
    if n_skip < 0 or n_skip_end < 0:
        raise ValueError(f"n_skip and n_skip_end must be >= 0, got {n_skip}, {n_skip_end}")
    return slice(n_skip, max(n_skip, n - n_skip_end))


def plot_loss(recorder, n_skip: int = 0, n_skip_end: int = 0):
    """Raw (faint) and smoothed training loss vs iteration, skipping the first `n_skip` and
    last `n_skip_end` iterations. `recorder`: a `Recorder` (or a schedule after a fit).
    Returns the `Axes`."""
    recorder = _as_recorder(recorder)
    plt = _pyplot()
    sl = _trim(len(recorder.losses), n_skip, n_skip_end)
    its = np.asarray(recorder.iterations)[sl]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(its, np.asarray(recorder.losses)[sl], alpha=0.3, label="loss")
    ax.plot(its, np.asarray(recorder.smooth_losses)[sl], label="smoothed loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    return ax


def plot_lr(recorder):
    """LR vs iteration, with a second panel for momentum when the run changed it. Returns the
    LR panel's `Axes`; the momentum panel, when drawn, is `ax.figure.axes[1]`."""
    recorder = _as_recorder(recorder)
    plt = _pyplot()
    moms = [m for m in recorder.moms if m is not None]
    show_mom = len(moms) == len(recorder.moms) and len(set(moms)) > 1
    fig, axes = plt.subplots(1, 2 if show_mom else 1, figsize=(10 if show_mom else 6, 4))
    axes = np.atleast_1d(axes)
    axes[0].plot(recorder.iterations, recorder.lrs)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("learning rate")
    if show_mom:
        axes[1].plot(recorder.iterations, moms)
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("momentum")
    fig.tight_layout()
    return axes[0]


def plot_lr_find(finder, losses=None, n_skip: int = 10, n_skip_end: int = 5,
                 suggestion: bool = True):
    """Smoothed loss vs LR on a log axis, the suggested LR (steepest descent, see
    `lr_suggestion`) marked with a red dot and named in the legend.

    `finder`: an `LR_Finder` after `learn.lr_find()`, a `Recorder` of the search, or a
    sequence of LRs (then `losses` is the matching sequence of smoothed losses). Returns the
    `Axes`.
    """
    if losses is None:
        rec = _as_recorder(finder)
        lrs, losses = rec.lrs, rec.smooth_losses
    else:
        lrs = finder
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    if len(lrs) != len(losses):
        raise ValueError(f"got {len(lrs)} LRs but {len(losses)} losses")
    plt = _pyplot()
    sl = _trim(len(lrs), n_skip, n_skip_end)
    if sl.stop - sl.start < 2:  # too short a search to skip anything
        sl = slice(0, len(lrs))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs[sl], losses[sl])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("smoothed loss")
    if suggestion:
        best = lr_suggestion(lrs, losses, n_skip, n_skip_end)
        if best is not None:
            i = int(np.argmin(np.abs(lrs - best)))
            ax.plot([lrs[i]], [losses[i]], "o", color="red",
                    label=f"steepest descent: lr={best:.2e}")
            ax.legend()
    fig.tight_layout()
    return ax
