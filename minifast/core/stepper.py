"""The Stepper: one optimisation step, and evaluation of one batch."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from ..checks import positive_int
from ..runtime.modules import eval_mode, model_device, unwrap
from ..runtime.precision import autocast_args, grad_scaler_for
from .events import CallbackHandler

__all__ = ["Stepper", "ClosureStepper", "NonFiniteLossError", "check_output_shape",
           "needs_closure"]


def needs_closure(opt) -> bool:
    """Whether `opt.step` must be given a closure that re-evaluates the loss (and so runs the
    forward and backward passes itself, as often as it likes): `torch.optim.LBFGS`, or any
    optimiser whose class or instance sets `step_needs_closure = True` (False opts out)."""
    flag = getattr(opt, "step_needs_closure", None)
    return isinstance(opt, torch.optim.LBFGS) if flag is None else bool(flag)


class NonFiniteLossError(FloatingPointError):
    """The loss (or, with `check_grads`, the gradients) was NaN or infinite, so the step was
    not taken. `weights_finite` says whether the weights are still good (they are not when an
    earlier step's gradients were non-finite while its loss was finite and nothing checked
    them); `bad_targets` counts the batch's non-finite targets (the data is at fault)."""

    def __init__(self, message: str, what: str = "loss", weights_finite: bool = True,
                 bad_targets: int = 0):
        super().__init__(message)
        self.what, self.weights_finite, self.bad_targets = what, weights_finite, bad_targets


def check_output_shape(out: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse model outputs that would silently broadcast against the target in the loss.

    `[bs]` against `[bs, 1]` broadcasts to `[bs, bs]` in `F.mse_loss`: the loss is then wrong
    but finite, and training quietly learns the mean. Cross-entropy's `[bs, C]` vs `[bs]` has
    different sizes and passes.
    """
    if not (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor)):
        return
    if out.shape == y.shape or out.numel() != y.numel() or out.ndim == 0:
        return
    raise ValueError(
        f"model output has shape {tuple(out.shape)} but the target has shape {tuple(y.shape)}: "
        f"the loss would broadcast them to {tuple(torch.broadcast_shapes(out.shape, y.shape))} "
        f"and compare every prediction with every target. Make the model return "
        f"{tuple(y.shape)} (e.g. `.view(-1, 1)` or `[:, None]` on its output) or reshape the target."
    )


class Stepper:
    """One optimisation step: forward, loss, `reg_fn`, backward, clipping, weight decay, step.

    `clip` > 0 clips the global gradient norm to `clip`. Decoupled weight decay is read from
    each parameter group's `decoupled_wd` (see `set_wds`), applied as `p -= lr * wd * p` before
    `opt.step()`. `stop_on_nan=False` lets a NaN/inf loss through (the default refuses it
    before the step, so the weights keep their last good values).

    `check_grads` also refuses a step whose gradients are not finite while the loss is (an
    overflow in backward), before it reaches the weights and the optimiser's state: the loss
    and the gradient norm then come to the host in one sync, after backward. It costs a pass
    over the gradients, so the default (None) checks when that is free or cheap: when
    clipping (the norm is computed anyway) or on a GPU; True always, False never. Without
    it, a later non-finite loss says that the weights are already damaged.

    `precision` ("bf16", "fp16" or None) runs the forward pass and the loss under
    `torch.autocast` (validation too); the weights and the optimiser stay float32. "fp16"
    (GPU only) also scales the loss with a `torch.amp.GradScaler` (or the one given as
    `grad_scaler`): a step whose scaled gradients overflow is skipped and the scale lowered,
    as torch's recipe does (`skipped_steps` counts them); its state is in `state_dict()`.

    `accumulate=n` splits each batch into `n` micro-batches and sums their gradients before
    the one optimiser step: the step is the same as for the whole batch (mean-reduced losses;
    BatchNorm sees micro-batches), but activations take the memory of one micro-batch. The
    loader's batch is the optimiser's batch, so schedules, the recorder and checkpoints count
    optimiser steps. `on_backward_begin` fires once per micro-batch.

    `Stepper(model, opt, ...)` with an optimiser that `needs_closure` (L-BFGS) builds a
    `ClosureStepper`, so ordinary optimisers keep this class's step as it is.
    """

    def __new__(cls, model=None, opt=None, *args, **kwargs):
        if cls is Stepper and opt is not None and needs_closure(opt):
            cls = ClosureStepper
        return super().__new__(cls)

    def __init__(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        crit: Callable,
        clip: float = 0.0,
        reg_fn: Callable | None = None,
        stop_on_nan: bool = True,
        cbs: CallbackHandler | None = None,
        check_grads: bool | None = None,
        precision: str | None = None,
        grad_scaler=None,
        accumulate: int = 1,
    ):
        if clip is None:
            clip = 0.0
        if clip < 0:
            raise ValueError(f"clip must be >= 0, got {clip}")
        self.model, self.opt, self.crit = model, opt, crit
        self.clip, self.reg_fn, self.stop_on_nan = float(clip), reg_fn, stop_on_nan
        self.cbs = cbs if cbs is not None else CallbackHandler()
        self._shape_checked = False
        device = model_device(model)
        self.precision, self.autocast = precision, autocast_args(precision, device)
        self.scaler = grad_scaler if grad_scaler is not None else grad_scaler_for(precision, device)
        self.skipped_steps = 0
        self.accumulate = positive_int(accumulate, "accumulate")
        if check_grads is None:
            check_grads = bool(self.clip) or getattr(device, "type", None) == "cuda"
        # a gradient scaler needs to know about overflows to skip those steps
        self.check_grads = (bool(check_grads) and stop_on_nan) or self.scaler is not None

    def loss(self, out, y) -> torch.Tensor:
        """The criterion, with a clear error when output and target cannot be compared."""
        if not self._shape_checked:
            check_output_shape(out, y)
            self._shape_checked = True
        try:
            return self.crit(out, y)
        except (RuntimeError, ValueError) as e:
            shapes = (getattr(out, "shape", None), getattr(y, "shape", None))
            raise ValueError(
                f"the loss {getattr(self.crit, '__name__', self.crit)!r} failed on model output "
                f"of shape {tuple(shapes[0]) if shapes[0] is not None else '?'} and target of "
                f"shape {tuple(shapes[1]) if shapes[1] is not None else '?'}: {e}"
            ) from e

    def forward(self, xs, y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(output, loss, loss with reg_fn's penalty)` for one batch, under `precision`'s
        autocast."""
        if self.autocast is None:
            return self._forward(xs, y)
        with torch.autocast(*self.autocast):
            return self._forward(xs, y)

    def _forward(self, xs, y):
        out = self.model(*xs)
        raw_loss = loss = self.loss(out, y)
        if self.reg_fn is not None:
            loss = self.reg_fn(out, xs, loss)
        return out, raw_loss, loss

    def step(self, xs, y, epoch: int | None = None) -> float:
        """Train on one batch; return the raw loss (before `reg_fn`) as a float."""
        cbs = self.cbs
        if self.accumulate == 1:
            raw, raw_loss, total = self._backward(xs, y)
        else:
            raw, raw_loss, total = self._accumulate(xs, y)
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)  # callbacks and clipping see the true gradients
        cbs("on_backward_end")
        norm = None
        if self.clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        if raw is None:  # loss (and gradient norm) in the step's one host sync
            raw, finite = self._check_loss_and_grads(raw_loss, total, norm, y)
            if not finite:  # a scaled step that overflowed: skip it, lower the scale
                self.scaler.update()
                self.skipped_steps += 1
                return raw
        self.decay_weights()
        cbs("on_step_begin")
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
        cbs("on_step_end")
        self.opt.zero_grad(set_to_none=True)
        return raw

    def _backward(self, xs, y, weight: float = 1.0, late: bool | None = None):
        """Forward and backward of one (micro-)batch, its loss weighted by `weight`;
        `(raw loss float or None, raw loss tensor, total loss tensor)`: the float is taken
        (and the loss checked) before backward unless the check comes after it (`late`)."""
        cbs, state = self.cbs, self.cbs.state
        late = self.check_grads if late is None else late
        out, raw_loss, loss = self.forward(xs, y)
        raw = None
        if not late:
            raw = raw_loss.item()  # the one host sync per step; also guards the weights below
            if self.stop_on_nan:
                self._check_loss(raw if loss is raw_loss else loss.item(), y)
        if weight != 1.0:
            raw_loss, loss = raw_loss * weight, loss * weight
        if cbs.events["on_backward_begin"]:
            state.preds, state.loss_tensor = out, loss
            cbs("on_backward_begin")
            loss = state.loss_tensor
        total = loss.detach() if late else None
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return raw, raw_loss.detach(), total

    def _accumulate(self, xs, y):
        """`accumulate` micro-batches of one batch, their gradients summed, each loss weighted
        by its share of the rows (so the step equals one over the whole batch, for mean-reduced
        losses); a DDP model syncs its gradients once, with the last micro-batch."""
        n_rows = len(y)
        parts = [torch.tensor_split(t, self.accumulate) for t in (*xs, y)]
        raws, totals = [], []
        for i in range(self.accumulate):
            *mxs, my = [p[i] for p in parts]
            if len(my) == 0:
                continue
            sync = i == self.accumulate - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                _, raw_loss, total = self._backward(mxs, my, len(my) / n_rows, late=True)
            raws.append(raw_loss)
            totals.append(total)
        return None, torch.stack(raws).sum(), torch.stack(totals).sum()

    def _check_loss(self, total: float, y) -> None:
        if not math.isfinite(total):
            bad = self._bad_targets(y)
            raise NonFiniteLossError(f"loss is {total}", "loss", self._weights_finite(), bad)

    def _loss_and_norm(self, raw_loss, total, norm=None) -> tuple[float, float, float]:
        """`(raw loss, total loss, gradient norm)` as floats from one host sync; the norm is
        `norm` when given (clipping computed it), else the gradients' with `check_grads`,
        else 0."""
        if norm is None:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            norm = (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                    if grads and self.check_grads else torch.zeros((), device=total.device))
        raw, total_f, norm_f = torch.stack([raw_loss.float(), total.float(),
                                            norm.float().to(total.device)]).tolist()
        return raw, total_f, norm_f

    def _check_loss_and_grads(self, raw_loss, total, norm, y) -> tuple[float, bool]:
        """`(raw loss, whether the step may be taken)`, from one host sync; raises when the
        loss or (with `check_grads`, without a gradient scaler) the gradients are not finite."""
        raw, total_f, norm_f = self._loss_and_norm(raw_loss, total, norm)
        if math.isfinite(total_f) and math.isfinite(norm_f):
            return raw, True
        if not self.stop_on_nan and self.scaler is None:
            return raw, True  # let it through, as asked
        self.opt.zero_grad(set_to_none=True)  # no step: leave no bad gradients behind
        if self.stop_on_nan and not math.isfinite(total_f):
            self._check_loss(total_f, y)
        if self.scaler is not None:
            return raw, False
        raise NonFiniteLossError(f"the gradients are not finite (norm {norm_f}) while the "
                                 f"loss is {total_f:.5g}", "gradients", True, 0)

    def _weights_finite(self) -> bool:
        """Whether every weight is finite (asked only once a step has failed)."""
        with torch.no_grad():
            return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    @staticmethod
    def _bad_targets(y) -> int:
        if isinstance(y, torch.Tensor) and y.is_floating_point():
            return int((~torch.isfinite(y)).sum())
        return 0

    def decay_weights(self) -> None:
        """Decoupled weight decay `p <- p * (1 - lr * wd)` for groups with `decoupled_wd`.

        A parameter with a sparse gradient (a sparse embedding) decays only in the rows the
        gradient holds, the rows of this batch: decaying the whole table would cost what
        sparse gradients save (see minifast.sparse)."""
        groups = [g for g in self.opt.param_groups if g.get("decoupled_wd")]
        if groups:  # entering no_grad has a cost per step: only when there is decay to do
            with torch.no_grad():
                self._decay(groups)

    @staticmethod
    def _decay(groups) -> None:
        for group in groups:
            wd = group["decoupled_wd"]
            if wd:
                f = 1.0 - float(group["lr"]) * wd
                params = [p for p in group["params"] if p.grad is not None]
                dense = [p for p in params if not p.grad.is_sparse]
                if dense:
                    torch._foreach_mul_(dense, f)
                for p in params:
                    if p.grad.is_sparse:
                        p.grad = p.grad.coalesce()  # the optimiser's coalesce is then free
                        rows = p.grad.indices()[0]
                        p.index_copy_(0, rows, p.index_select(0, rows).mul_(f))

    def evaluate(self, xs, y) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and loss for one batch, without gradients, in eval mode (under
        `precision`'s autocast)."""
        # the bare module: a DDP wrapper could sync buffers, and ranks' val shards differ
        with eval_mode(self.model):
            if self.autocast is None:
                out = unwrap(self.model)(*xs)
                return out, self.loss(out, y)
            with torch.autocast(*self.autocast):
                out = unwrap(self.model)(*xs)
                return out, self.loss(out, y)

    def state_dict(self) -> dict:
        """What resuming the steps exactly needs: the gradient scaler's state (float16)."""
        return {"scaler": None if self.scaler is None else self.scaler.state_dict(),
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, sd: dict) -> None:
        """Restore `state_dict()`."""
        if self.scaler is not None and sd.get("scaler"):
            self.scaler.load_state_dict(sd["scaler"])
        self.skipped_steps = int(sd.get("skipped_steps", 0))


class ClosureStepper(Stepper):
    """The step for an optimiser that re-evaluates the loss itself (`needs_closure`, e.g.
    `torch.optim.LBFGS`): `opt.step(closure)`, where the closure zeroes the gradients, runs
    the forward pass, the loss and `reg_fn`, and backward, and returns the total loss.

    Events: `on_step_begin` fires once, before `opt.step`; then each loss evaluation (one
    L-BFGS step evaluates several times, in its iterations and line search) fires
    `on_backward_begin` (the loss of those weights, before backward; a callback may replace
    `state.loss_tensor`) and `on_backward_end` (its gradients, which the optimiser then
    uses); `on_step_end` fires once, after the step. The raw loss the loop records is the
    first evaluation's: the loss of the weights the step started from, as for other
    optimisers.

    A non-finite total loss (with `stop_on_nan`) or, with `check_grads`, non-finite
    gradients in any evaluation raise `NonFiniteLossError` and put the weights back to
    where the step started. Gradient clipping, `accumulate` > 1, float16's gradient scaler
    and decoupled weight decay (`use_wd_sched`) are refused: they would change gradients or
    weights between the optimiser's evaluations behind its back (put a penalty into the
    loss with `reg_fn` instead).
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, crit: Callable,
                 clip: float = 0.0, *args, **kwargs):
        super().__init__(model, opt, crit, clip, *args, **kwargs)
        name = type(opt).__name__
        if self.clip:
            raise ValueError(f"clip={self.clip}: gradient clipping does not work with {name}, "
                             f"whose line search needs the true gradients; pass clip=None")
        if self.accumulate != 1:
            raise ValueError(f"accumulate={self.accumulate}: {name} evaluates the loss itself; "
                             f"give it whole batches (accumulate=1)")
        if self.scaler is not None:
            raise ValueError(f"precision={self.precision!r} scales the loss, which {name} "
                             f"cannot take; use precision=None or 'bf16'")
        if any(g.get("decoupled_wd") for g in opt.param_groups):
            raise ValueError(f"decoupled weight decay (use_wd_sched) changes the weights "
                             f"between {name}'s evaluations; put the penalty into the loss "
                             f"(reg_fn) instead")

    def step(self, xs, y, epoch: int | None = None) -> float:
        """Train on one batch with `opt.step(closure)`; return the raw loss (before `reg_fn`)
        of the weights the step started from."""
        cbs, state = self.cbs, self.cbs.state
        first: list[float] = []

        def closure() -> torch.Tensor:
            self.opt.zero_grad(set_to_none=True)
            out, raw_loss, loss = self.forward(xs, y)
            if cbs.events["on_backward_begin"]:
                state.preds, state.loss_tensor = out, loss
                cbs("on_backward_begin")
                loss = state.loss_tensor
            loss.backward()
            cbs("on_backward_end")
            raw, total, norm = self._loss_and_norm(raw_loss.detach(), loss.detach())
            if not first:
                first.append(raw)
            if self.stop_on_nan and not (math.isfinite(total) and math.isfinite(norm)):
                what = "loss" if not math.isfinite(total) else "gradients"
                raise NonFiniteLossError(f"the {what} in an evaluation of "
                                         f"{type(self.opt).__name__}'s step "
                                         f"{'is ' + str(total) if what == 'loss' else 'are not finite'}",
                                         what, True, self._bad_targets(y))
            return loss.detach()

        start = [p.detach().clone() for p in self.model.parameters()] if self.stop_on_nan else None
        cbs("on_step_begin")
        try:
            self.opt.step(closure)
        except NonFiniteLossError:
            with torch.no_grad():  # the step is not taken: the weights it started from
                for p, p0 in zip(self.model.parameters(), start, strict=True):
                    p.copy_(p0)
            self.opt.zero_grad(set_to_none=True)
            raise
        cbs("on_step_end")
        self.opt.zero_grad(set_to_none=True)
        return first[0] if first else float("nan")
