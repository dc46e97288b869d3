"""L-BFGS whose memory lasts one step: each `step(closure)` is a fresh L-BFGS run.

`torch.optim.LBFGS` keeps its curvature pairs, step size and direction from one `step` to
the next, and caps each step's loss evaluations at `max_eval` (by default `max_iter * 5/4`),
so with a strong-Wolfe line search a step often stops before its `max_iter` iterations.
SciPy's `minimize(method="L-BFGS-B", options={"maxiter": n})`, called once per epoch as
GLocal-K's TensorFlow code does, is different on both counts: every call starts from the
gradient alone and runs its `n` iterations whatever its line searches cost.
`RestartingLBFGS` is that, on torch's implementation (so it runs wherever the model does,
CUDA included), and since no state carries from one step to the next a checkpointed run
resumes exactly with nothing but the weights.
"""

from __future__ import annotations

import torch

from ..checks import optional_positive_int, positive_int

__all__ = ["RestartingLBFGS"]

# torch's strong-Wolfe line search evaluates the loss at most this many times per iteration
_LINE_SEARCH_EVALS = 25


class RestartingLBFGS(torch.optim.LBFGS):
    """`torch.optim.LBFGS` with its memory (curvature pairs, direction, step size, counters)
    cleared at the start of every `step`: each step is `max_iter` iterations of a new L-BFGS
    run from the current weights, as one SciPy `minimize(method="L-BFGS-B")` call with
    `maxiter=max_iter`. `max_eval` (default `max_iter * 25`, what `max_iter` strong-Wolfe
    line searches can use) caps the loss evaluations per step; the other arguments are
    `torch.optim.LBFGS`'s, with the strong-Wolfe line search as the default."""

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 history_size: int = 100, line_search_fn: str | None = "strong_wolfe"):
        max_iter = positive_int(max_iter, "max_iter")
        max_eval = optional_positive_int(max_eval, "max_eval") or max_iter * _LINE_SEARCH_EVALS
        super().__init__(params, lr=lr, max_iter=max_iter, max_eval=max_eval,
                         tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                         history_size=positive_int(history_size, "history_size"),
                         line_search_fn=line_search_fn)

    def step(self, closure):
        """One fresh L-BFGS run of `max_iter` iterations from the current weights (`closure`
        re-evaluates the loss and its gradients); returns the loss at the start."""
        self.state.clear()
        return super().step(closure)
