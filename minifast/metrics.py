"""Built-in metrics with fastai v0.7's names: `accuracy`, `rmse`, `mae`, `r2`, `fbeta`, `f1`.

Each is a whole-set metric `metric(preds, targs)` returning a 0-d tensor on `preds`' device,
as fastai v0.7's did (`float()` or `.item()` gives the number). `fit` and `validate` call it
once on the whole validation set's predictions and targets (see `minifast.core.loop.validate`),
so RMSE, R² and F-scores are the set's values, not averages of per-batch values. `preds` are
the model's raw outputs (logits for classifiers, as minifast's losses expect), `targs` the
targets; tensors or numpy arrays, on any device. Shapes that do not fit together are refused
with a ValueError naming both, never broadcast.
"""

from __future__ import annotations

import torch

from .checks import check_positive_number

__all__ = ["accuracy", "rmse", "mae", "r2", "fbeta", "f1"]


def _pair(preds, targs) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as tensors on `preds`' device."""
    preds = torch.as_tensor(preds)
    targs = torch.as_tensor(targs, device=preds.device)
    return preds, targs


def _shapes(name: str, preds: torch.Tensor, targs: torch.Tensor, need: str) -> ValueError:
    return ValueError(f"{name}: preds have shape {tuple(preds.shape)} and targs have shape "
                      f"{tuple(targs.shape)}; {need}")


def _same_shape(name: str, preds, targs) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression operands as floating tensors of one shape (wide enough for exact sums)."""
    preds, targs = _pair(preds, targs)
    if preds.shape != targs.shape or preds.ndim == 0:
        raise _shapes(name, preds, targs, "they must have the same shape, with rows first "
                      "(e.g. reshape the targets with `.view(-1, 1)` for a [n, 1] output)")
    return preds.to(_wide(preds)), targs.to(_wide(preds))


def _wide(t: torch.Tensor) -> torch.dtype:
    """float64 for exact sums over a whole set, except on Apple's mps, which has no float64."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def _multiclass(preds: torch.Tensor, targs: torch.Tensor) -> bool:
    """Whether `preds` are class scores `[..., C]` (C > 1) for class-index targets `[...]`."""
    return preds.ndim == targs.ndim + 1 and preds.shape[:-1] == targs.shape and preds.shape[-1] > 1


def rmse(preds, targs) -> torch.Tensor:
    """Root mean squared error over all elements: `sqrt(mean((preds - targs)**2))`."""
    preds, targs = _same_shape("rmse", preds, targs)
    return torch.sqrt(torch.mean((preds - targs) ** 2))


def mae(preds, targs) -> torch.Tensor:
    """Mean absolute error over all elements: `mean(|preds - targs|)`."""
    preds, targs = _same_shape("mae", preds, targs)
    return torch.mean(torch.abs(preds - targs))


def r2(preds, targs) -> torch.Tensor:
    """Coefficient of determination `1 - SS_res / SS_tot`, rows first.

    Several output columns (`[n, k]`, k > 1) get one R² each, averaged with equal weights
    (scikit-learn's `uniform_average`). NaN when a column's targets are constant (R² is
    undefined there).
    """
    preds, targs = _same_shape("r2", preds, targs)
    p, t = preds.reshape(len(preds), -1), targs.reshape(len(targs), -1)
    ss_res = ((t - p) ** 2).sum(0)
    ss_tot = ((t - t.mean(0)) ** 2).sum(0)
    per_col = torch.where(ss_tot > 0, 1 - ss_res / ss_tot, torch.full_like(ss_tot, float("nan")))
    return torch.mean(per_col)


def accuracy(preds, targs) -> torch.Tensor:
    """The fraction of correct predictions (fastai v0.7's `accuracy`).

    Multi-class: `preds` are class scores `[..., C]` and `targs` class indices `[...]`; the
    prediction is the argmax over the last dim. Binary: `preds` of one column (`[n]` or
    `[n, 1]`, the shape of `targs`) are logits, thresholded at 0 (a probability of 0.5), and
    `targs` are 0/1.
    """
    preds, targs = _pair(preds, targs)
    if _multiclass(preds, targs):
        return (preds.argmax(-1) == targs).float().mean()
    if preds.shape == targs.shape and preds.ndim >= 1 and (preds.ndim == 1 or preds.shape[-1] == 1):
        return ((preds > 0) == (targs > 0.5)).float().mean()
    raise _shapes("accuracy", preds, targs, "they must be class scores [n, C] with class "
                  "indices [n], or one column of logits with 0/1 targets of the same shape")


def fbeta(preds, targs, beta: float = 2, thresh: float = 0.0) -> torch.Tensor:
    """F-beta score, the weighted harmonic mean of precision and recall (fastai v0.7's name).

    `beta` > 1 favours recall, < 1 precision. Binary and multi-label (`preds` the shape of 0/1
    `targs`): a prediction is positive when `preds > thresh`; the default 0 suits logits, as
    minifast's models output (pass `thresh=0.5` for probabilities, v0.7's default for models
    ending in a sigmoid); true positives, false positives and false negatives are counted over
    all labels together (micro-average, as v0.7). Multi-class (`preds` class scores `[..., C]`,
    `targs` class indices `[...]`): the prediction is the argmax, and the score is the
    unweighted mean of each class's F-beta over the classes present in the targets or the
    predictions (macro-average, as scikit-learn's `average="macro"`). A score whose precision
    and recall are both undefined (no positives at all) counts as 0.
    """
    return _fbeta("fbeta", preds, targs, beta, thresh)


def f1(preds, targs, thresh: float = 0.0) -> torch.Tensor:
    """F1 score: `fbeta` with `beta=1` (see `fbeta` for thresholds and averaging)."""
    return _fbeta("f1", preds, targs, 1, thresh)


def _fbeta(name: str, preds, targs, beta: float, thresh: float) -> torch.Tensor:
    b2 = check_positive_number(beta, "beta") ** 2
    preds, targs = _pair(preds, targs)
    if _multiclass(preds, targs):
        n_cls, pred, targ = preds.shape[-1], preds.argmax(-1).reshape(-1), targs.reshape(-1).long()
        if len(targ) and (int(targ.min()) < 0 or int(targ.max()) >= n_cls):
            raise ValueError(f"{name}: class-index targets must lie in [0, {n_cls}) for "
                             f"{n_cls} class scores, got values in [{int(targ.min())}, "
                             f"{int(targ.max())}]")
        tp, n_true, n_pred = (torch.bincount(c, minlength=n_cls).to(_wide(preds))
                              for c in (targ[pred == targ], targ, pred))
        present = (n_true + n_pred) > 0
        scores = (1 + b2) * tp[present] / (b2 * n_true[present] + n_pred[present])
        return scores.mean()
    if preds.shape != targs.shape or preds.ndim == 0:
        raise _shapes(name, preds, targs, "they must have the same shape (binary or "
                      "multi-label, 0/1 targets), or be class scores [n, C] with class indices [n]")
    pos, true = preds > thresh, targs > 0.5
    tp = (pos & true).sum().to(_wide(preds))
    denom = b2 * true.sum().to(_wide(preds)) + pos.sum().to(_wide(preds))
    return (1 + b2) * tp / torch.where(denom > 0, denom, torch.ones_like(denom))  # tp = 0 there
