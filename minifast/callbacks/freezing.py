"""Freezing: BatchNorm layers whose parameters are frozen stay in eval mode while training
(fastai v0.7's `bn_freeze`), so their running statistics do not drift either."""

from __future__ import annotations

import torch

from ..core.events import Callback

__all__ = ["BnFreeze", "frozen_norm_layers"]

_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def frozen_norm_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The BatchNorm layers of `model` whose parameters are all frozen (`requires_grad`
    False). One without affine parameters has nothing to freeze and is left alone."""
    out = []
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, _NORMS) and params and not any(p.requires_grad for p in params):
            out.append(m)
    return out


class BnFreeze(Callback):
    """Puts the BatchNorm layers of frozen layer groups in eval mode at the start of every
    epoch (after the loop's `model.train()`), so a frozen group neither learns nor updates
    its running statistics. `Learner.fit` adds it while any group is frozen."""

    order = -5

    def on_epoch_begin(self) -> None:
        for m in frozen_norm_layers(self.state.model):
            m.eval()
