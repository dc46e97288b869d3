"""GLocal-K (Han et al., CIKM 2021): a local-kernel AutoRec, pre-trained, then fine-tuned
with a *global kernel* that convolves the rating matrix before it enters the network.

The global kernel is made of the network's own reconstruction: the reconstructed
`[n_items, n_users]` matrix is average-pooled per item into an `n_items` vector, a learned
`[n_items, gk_size**2]` matrix turns that into a `gk_size x gk_size` kernel (scaled by
`dot_scale`), and the training matrix is convolved with it (zero padding, ReLU). The
network's input is then that convolved matrix instead of the raw one. The convolution runs
over the whole matrix (a rating's neighbours in item and user index), so each evaluation
reconstructs every item twice: once for the kernel, once for the output.

Both phases are ordinary `Learner.fit` runs, full batch (every item in one batch) with
L-BFGS as the paper trains (its closure step is the Stepper's `ClosureStepper`), the squared
error on observed ratings plus GLocal-K's penalties (`KernelPenalty`). The paper's code calls
SciPy's L-BFGS-B once an epoch, each call a new L-BFGS run of `max_iter` iterations, so the
optimiser is `minifast.optim.RestartingLBFGS`, which does that on torch:

    learn = glocal_learner(cf, val_idxs, seed=0)
    learn.fit(1.0, 69)        # pre-train: local kernels only
    learn.fine_tune()         # the global kernel on, a fresh optimiser
    learn.fit(1.0, 20)

On ml-100k the benchmark's recipe (docs/collab.md) skips the fine-tuning, which never beat
pre-training there, and averages the pre-training's weights instead:
`learn.fit(1.0, 120, use_swa=True, swa_start=41)`, then `learn.predict(use_swa=True)`;
with `glocal_learner(..., input_dropout=0.4)` (`AutoRec`'s input dropout) it trains longer
and averages later: `learn.fit(1.0, 200, use_swa=True, swa_start=101)`.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import positive_int
from ..optim import RestartingLBFGS
from .autorec import AutoRec, AutoRecLearner, KernelPenalty, autorec_data, autorec_loss

__all__ = ["GlobalKernel", "GLocalK", "GLocalKLearner", "glocal_learner"]


class GlobalKernel(nn.Module):
    """The global convolution kernel from a reconstructed rating matrix: `forward(recon)`
    with `recon` `[n_items, n_users]` returns the `[gk_size, gk_size]` kernel
    `dot_scale * (mean of each item's row) @ W`, `W` a learned `[n_items, gk_size**2]`
    matrix (initialised with a normal of std 0.1, truncated at 2 std, as GLocal-K does)."""

    def __init__(self, n_items: int, gk_size: int = 3, dot_scale: float = 1.0):
        super().__init__()
        n_items, self.gk_size = positive_int(n_items, "n_items"), positive_int(gk_size, "gk_size")
        if gk_size % 2 == 0:
            raise ValueError(f"gk_size must be odd (the convolution keeps the matrix's size), "
                             f"got {gk_size}")
        self.W = nn.Parameter(nn.init.trunc_normal_(torch.empty(n_items, gk_size ** 2),
                                                    std=0.1, a=-0.2, b=0.2))
        self.dot_scale = float(dot_scale)

    def forward(self, recon: torch.Tensor) -> torch.Tensor:
        pooled = recon.mean(1)
        return (pooled @ self.W * self.dot_scale).view(self.gk_size, self.gk_size)

    def convolve(self, ratings: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """`relu(ratings * kernel)`: the `[n_items, n_users]` matrix convolved with the
        kernel (zero padding, the same size out)."""
        out = F.conv2d(ratings[None, None], kernel[None, None], padding=self.gk_size // 2)
        return F.relu(out[0, 0])


class GLocalK(AutoRec):
    """An `AutoRec` with a `GlobalKernel` (`global_kernel`) that is used once
    `use_global_kernel` is True (`GLocalKLearner.fine_tune` sets it): the network's inputs
    are then the training matrix convolved with the kernel made of the network's own
    reconstruction of that matrix. Before, it is the plain local-kernel AutoRec (the
    pre-training phase), and the kernel's weights get no gradient."""

    def __init__(self, ratings: torch.Tensor, n_hid: int = 500, n_dim: int = 5,
                 n_layers: int = 2, dropout: float = 0.0,
                 y_range: tuple[float, float] | None = None, gk_size: int = 3,
                 dot_scale: float = 1.0, input_dropout: float = 0.0):
        super().__init__(ratings, n_hid, n_dim, n_layers, dropout, y_range, input_dropout)
        self.global_kernel = GlobalKernel(ratings.shape[0], gk_size, dot_scale)
        self.use_global_kernel = False

    def reconstruct(self, items: torch.Tensor) -> torch.Tensor:
        """The network's raw reconstruction of the rows `items`; with the global kernel, of
        the convolved matrix (the whole matrix is reconstructed once to make the kernel)."""
        if not self.use_global_kernel:
            return super().reconstruct(items)
        x = self.input_rows()
        kernel = self.global_kernel(self.network(x))
        return self.network(self.global_kernel.convolve(x, kernel)[items])


class GLocalKLearner(AutoRecLearner):
    """An `AutoRecLearner` for a `GLocalK`: `fit` pre-trains until `fine_tune()` switches the
    global kernel on."""

    def fine_tune(self) -> None:
        """Start the fine-tuning phase: the model's global kernel on, and a fresh optimiser
        (`opt_fn` again): an L-BFGS that keeps its curvature history must not carry the
        pre-training objective's into the new one."""
        self.model.use_global_kernel = True
        self.opt = self.param_groups.build(self.opt_fn, self.fused)

    def fit_glocal(self, pre_epochs: int, fine_epochs: int, lr: float = 1.0, **kwargs):
        """Both phases: `fit(lr, pre_epochs)`, `fine_tune()`, `fit(lr, fine_epochs)` (keyword
        arguments go to both `fit`s); returns the fine-tuning's `FitResult`. A learner already
        fine-tuning only continues that (`pre_epochs` is then unused)."""
        if not self.model.use_global_kernel:
            self.fit(lr, positive_int(pre_epochs, "pre_epochs"), **kwargs)
            self.fine_tune()
        return self.fit(lr, positive_int(fine_epochs, "fine_epochs"), **kwargs)


def glocal_learner(cf, val_idxs, n_hid: int = 500, n_dim: int = 5, n_layers: int = 2,
                   lambda_2: float = 20.0, lambda_s: float = 0.006, gk_size: int = 3,
                   dot_scale: float = 1.0, max_iter: int = 5, history_size: int = 10,
                   y_range: tuple[float, float] | None = None, seed: int | None = None,
                   input_dropout: float = 0.0, teacher=None, teacher_weight: float = 1.0,
                   **kwargs) -> GLocalKLearner:
    """A `GLocalKLearner` for `cf` (a `CollabFilterDataset`) with GLocal-K's ml-100k settings
    as defaults: a `GLocalK(n_hid, n_dim, n_layers, gk_size, dot_scale)` seeded by `seed`,
    every item in one batch (`autorec_data(cf, val_idxs, cf.n_items)`), `masked_mse` plus the
    `KernelPenalty(lambda_2, lambda_s)`, and `RestartingLBFGS`: each step (one an epoch) a new
    L-BFGS run of `max_iter` iterations with `history_size` curvature pairs and the
    strong-Wolfe line search, as GLocal-K's per-epoch SciPy call (`opt_fn=` another
    optimiser, e.g. `functools.partial(torch.optim.LBFGS, ...)`, whose memory lasts the whole
    fit). `y_range` (default: the data's rating range) clamps predictions; `input_dropout`
    hides that fraction of the input ratings each epoch (`AutoRec`); `teacher` distils
    another model's predictions of every pair into this one (`autorec_data`,
    `DistillMSE(teacher_weight)`). Other keyword arguments go to `Learner`. Train with
    `fit_glocal(pre_epochs, fine_epochs)`, or `fit(1.0, n)`, `fine_tune()`, `fit(1.0, m)`."""
    loss = autorec_loss(teacher, teacher_weight)
    data = autorec_data(cf, val_idxs, cf.n_items, seed, teacher=teacher)
    if y_range is None:
        y_range = (cf.min_score, cf.max_score)
    with contextlib.nullcontext() if seed is None else torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        model = GLocalK(data.ratings, n_hid, n_dim, n_layers, 0.0, y_range, gk_size, dot_scale,
                        input_dropout)
    n_ratings = int((~torch.isnan(data.ratings)).sum())
    opt_fn = kwargs.pop("opt_fn", None) or functools.partial(
        RestartingLBFGS, max_iter=max_iter, history_size=history_size)  # it checks both
    return GLocalKLearner(data, model, cf, opt_fn=opt_fn, crit=loss,
                          reg_fn=KernelPenalty(model, lambda_2, lambda_s, n_ratings), **kwargs)
