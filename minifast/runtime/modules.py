"""Helpers about a model as a module: the module inside a parallel wrapper, the device it
lives on, and evaluation mode for the length of a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["unwrap", "model_device", "place_model", "eval_mode"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or `model` itself)."""
    return model.module if isinstance(
        model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model


def model_device(model: torch.nn.Module) -> torch.device | None:
    """The device of the model's first parameter; None for a model without parameters."""
    p = next(model.parameters(), None)
    return None if p is None else p.device


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`with eval_mode(model):` the model in eval mode without gradients for the block, then
    back in the mode it had (also on error)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train()


def place_model(model: torch.nn.Module, device: torch.device | str) -> None:
    """Move `model` to `device` when its parameters are on another kind of device (a model
    already on some GPU stays on it when `device` is "cuda")."""
    p = next(model.parameters(), None)
    if p is not None and p.device.type != torch.device(device).type:
        model.to(device)
