"""Ranking losses for implicit feedback, on the batches of `NegativeSamplingLoader`.

Both take `(scores, log_q)`: `scores [bs, 1 + n_neg]` are the model's scores of each row's
positive item (column 0) and its sampled negatives, `log_q` the log of each item's sampling
probability (the loader's target), so they plug into `fit` as its `crit`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bpr_loss", "sampled_softmax_loss", "full_softmax_loss", "LOSSES"]


def bpr_loss(scores: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Bayesian personalised ranking (Rendle et al. 2009): `-log sigmoid(s_pos - s_neg)`,
    averaged over every (positive, negative) pair of the batch. `log_q` is not used (BPR
    needs no correction for how the negatives were drawn)."""
    _check(scores, log_q, "bpr_loss")
    return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()


def sampled_softmax_loss(scores: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Sampled softmax with the log-q correction: cross-entropy of the positive (column 0)
    against its sampled negatives, on the logits `scores - log_q` (Bengio & Senecal 2008;
    Yi et al. 2019), which makes the sampled loss an estimate of the full softmax over all
    items whatever the sampling distribution `q`."""
    _check(scores, log_q, "sampled_softmax_loss")
    logits = (scores - log_q).float()
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long,
                                               device=logits.device))


def full_softmax_loss(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Softmax over every item: cross-entropy of each row's positive `items [bs]` among the
    scores `[bs, n_items]` of all items (the user's other positives included, as in the
    multinomial likelihood of Mult-VAE, Liang et al. 2018). What sampled softmax estimates,
    computed exactly: affordable while `bs * n_items` scores fit a batch."""
    if scores.ndim != 2 or items.shape != (len(scores),):
        raise ValueError(f"full_softmax_loss needs scores [bs, n_items] and items [bs] (as "
                         f"PositivesLoader's batches give), got {tuple(scores.shape)} and "
                         f"{tuple(items.shape)}")
    return F.cross_entropy(scores.float(), items.long())


def _check(scores, log_q, name: str) -> None:
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"{name} needs scores [bs, 1 + n_neg] (a positive and at least one negative per row, "
            f"as NegativeSamplingLoader's batches give), got shape {tuple(scores.shape)}")
    if log_q is not None and log_q.shape != scores.shape:
        raise ValueError(f"{name}: log_q has shape {tuple(log_q.shape)}, the scores "
                         f"{tuple(scores.shape)}")


#: `get_learner(loss=...)`'s names; "mse" is the rating loss.
LOSSES = {"mse": F.mse_loss, "bpr": bpr_loss, "softmax": sampled_softmax_loss,
          "full_softmax": full_softmax_loss}
