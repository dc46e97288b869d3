"""Mixed precision: which autocast a `precision` setting means on a device, and the gradient
scaler float16 needs. The master weights stay float32 either way."""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "autocast_args", "grad_scaler_for"]

PRECISIONS = (None, "bf16", "fp16")


def autocast_args(precision: str | None, device: torch.device | str | None) -> tuple | None:
    """`(device_type, dtype)` for `torch.autocast` under `precision` on `device` (None: full
    float32, no autocast). float16 is refused on a CPU: use bf16 there."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be None, 'bf16' or 'fp16', got {precision!r}")
    if precision is None:
        return None
    kind = torch.device(device if device is not None else "cpu").type
    if precision == "fp16" and kind == "cpu":
        raise ValueError(
            "precision='fp16' needs a GPU: on a CPU float16 is slow and its narrow range needs "
            "loss scaling. Use precision='bf16' on the CPU (bfloat16 has float32's range)."
        )
    return kind, torch.bfloat16 if precision == "bf16" else torch.float16


def grad_scaler_for(precision: str | None, device: torch.device | str | None):
    """A `torch.amp.GradScaler` for float16 (which underflows without loss scaling); None for
    bf16 and float32, which need none."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
