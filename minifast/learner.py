"""The Learner: a model with its data, loss and optimiser, and fastai v0.7's training API.

```python
learn = Learner(data, model)                    # Adam, loss inferred from the targets
learn.lr_find(); learn.sched.plot()             # LR range test, then restores everything
learn.fit(1e-2, 2, wds=1e-4, cycle_len=1, cycle_mult=2)   # SGDR: 1 + 2 = 3 epochs
preds = learn.predict()
learn.save("m"); learn.load("m")                # path/models/m.pt
```

Weight decay (`wds`) comes in two flavours:

- default, as in fastai v0.7 and lesson 5: L2 regularisation through the optimiser's own
  `weight_decay` (`grad += wd * p`). With Adam the penalty's gradient is then divided by the
  running RMS of the gradients, so parameters with large gradients are barely decayed.
- `use_wd_sched=True`: decoupled weight decay (AdamW; Loshchilov & Hutter, 2019): the Stepper
  applies `p <- p - lr_t * wd * p` before `opt.step()`, so every parameter decays at the same
  relative rate, following the LR schedule. Prefer it with Adam-family optimisers; note that
  the decay is multiplied by the LR, so useful `wds` are larger (around 1e-2 to 1e-1) than L2
  values (1e-5 to 1e-3). With plain SGD (no momentum) the two are the same.

Every parameter decays, biases and embeddings included, unless excluded with
`Learner(..., no_decay=...)`: `True` excludes biases and all other 1-d parameters (norm layers'
weights); a pattern or list of `fnmatch` patterns on parameter names (e.g. `["ub.*", "ib.*"]`
for a collab model's bias embeddings) excludes those that match; a callable
`no_decay(name, param) -> bool` decides itself. Excluded parameters go into their own
optimiser parameter groups whose weight decay is always 0.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .callbacks import Callback, SaveBestModel
from .device import T, default_device
from .fit import FitResult, fit, predict
from .fused import build_optimizer
from .optim import get_moms, load_opt_state, set_lrs, set_moms, set_wds
from .saving import CheckpointError, atomic_save, load_model_state, safe_load
from .schedules import (
    CircularLR,
    ConstantLR,
    CosAnneal,
    LR_Finder,
    LR_Updater,
    OneCycle,
    _check_cycle_mult,
    sum_geom,
)
from .sparse import LazyAdam, check_sparse_optimizer, check_weight_decay, has_sparse_embeddings

__all__ = ["Learner", "default_crit"]


def default_crit(data) -> Callable:
    """The loss `Learner` uses when none is given, from the training targets' dtype:
    floating targets -> `F.mse_loss` (regression, e.g. ratings), integer targets ->
    `F.cross_entropy` (class indices)."""
    tensors = getattr(data.trn_dl, "tensors", None)
    if tensors:
        y = tensors[-1]
        if y.is_floating_point():
            return F.mse_loss
        if not y.is_complex() and y.dtype != torch.bool:
            return F.cross_entropy
    raise ValueError(
        "cannot infer the loss from this data's targets: pass crit=... "
        "(e.g. F.mse_loss for regression, F.cross_entropy for classes)"
    )


def _check_metrics(metrics) -> list[Callable]:
    if metrics is None:
        return []
    metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    for m in metrics:
        if not callable(m):
            raise ValueError(
                f"metrics must be callables metric(preds, y) returning a number; got {m!r} "
                f"({type(m).__name__})"
            )
    return metrics


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _params_of(group) -> list[torch.nn.Parameter]:
    """The parameters of one layer group: a module, a parameter, or an iterable of those."""
    if isinstance(group, torch.nn.Module):
        return list(group.parameters())
    if isinstance(group, torch.Tensor):
        return [group]
    if isinstance(group, Iterable):
        return [p for g in group for p in _params_of(g)]
    raise ValueError(
        f"layer_groups() must return modules, parameters, or lists of them; got "
        f"{type(group).__name__}"
    )


class Learner:
    """A model, its `ModelData`, loss and optimiser, with `fit`, `lr_find`, `predict`,
    `save`/`load` and the schedule of the last run (`sched`).

    Defaults, and why:

    - `opt_fn=torch.optim.Adam`: what lesson 5 used; adaptive step sizes train embeddings and
      dense layers together without tuning momentum, and one-cycle can cycle its beta1. For a
      model with sparse embedding gradients (`minifast.sparse_embeddings`) the default is
      `minifast.LazyAdam`, and an optimiser that takes no sparse gradients is refused. Any
      `opt_fn(param_groups)` works, e.g. `functools.partial(optim.SGD, momentum=0.9)`.
    - `crit=None`: inferred from the targets (`default_crit`): MSE for floats, cross-entropy
      for integer classes.
    - `clip=None`: no clipping; a number clips the global gradient norm to it every step.
    - `path=None`: the data's path; models are saved under `path/models/`.
    - `no_decay=None`: every parameter decays (v0.7); see the module docs for the options.
    - `fused=None`: torch's Adam/AdamW (the default or given as `opt_fn`) run their fused
      kernel wherever this torch has one for the parameters (several times faster on CPU,
      same algorithm; see `minifast.fused` and docs/performance.md); False: torch's default
      implementation; True: fused or an error.

    The optimiser is built once, here, and kept across `fit` calls (so its state, e.g. Adam's
    moments, carries over and can be saved). If the model defines `layer_groups()` returning a
    list of groups (each a module, a parameter, or a list of them, together covering every
    trainable parameter once), `lrs` and `wds` may give one value per group.
    """

    def __init__(
        self,
        data,
        model: torch.nn.Module,
        opt_fn: Callable | None = None,
        crit: Callable | None = None,
        metrics: Sequence[Callable] | None = None,
        clip: float | None = None,
        reg_fn: Callable | None = None,
        path=None,
        no_decay=None,
        fused: bool | None = None,
    ):
        if clip is not None and (not isinstance(clip, (int, float)) or not clip >= 0):
            raise ValueError(f"clip must be None or a number >= 0, got {clip!r}")
        self.data, self.model = data, model
        sparse = has_sparse_embeddings(distributed.unwrap(model))
        if opt_fn is None:  # LazyAdam: Adam that takes sparse embedding gradients
            opt_fn = LazyAdam if sparse else torch.optim.Adam
        check_sparse_optimizer(opt_fn, distributed.unwrap(model))
        if clip and sparse:
            raise ValueError("clip: gradient-norm clipping does not take sparse embedding "
                             "gradients (torch has no norm for them); use dense embeddings")
        self.opt_fn = opt_fn
        self.crit = crit if crit is not None else default_crit(data)
        self.metrics = _check_metrics(metrics)
        self.clip, self.reg_fn, self.no_decay = clip, reg_fn, no_decay
        self.fused = fused
        self.path = Path(path if path is not None else data.path)
        self.sched: LR_Updater | None = None
        self._place_model()
        self.opt = self._make_opt()

    # ---------------------------------------------------------------- model and optimiser

    @property
    def models_path(self) -> Path:
        """Where `save`/`load` keep model files: `path/models`."""
        return self.path / "models"

    @property
    def recorder(self):
        """The `Recorder` of the last `fit`/`lr_find` (losses, LRs, momenta, epochs), or None."""
        return None if self.sched is None else self.sched.recorder

    def _place_model(self) -> None:
        dev = getattr(self.data.trn_dl, "device", None) or default_device()
        p = next(self.model.parameters(), None)
        if p is not None and p.device.type != torch.device(dev).type:
            self.model.to(dev)

    def get_layer_groups(self) -> list[list[torch.nn.Parameter]]:
        """The parameters of each layer group: the model's `layer_groups()`, or one group."""
        m = distributed.unwrap(self.model)
        groups = m.layer_groups() if callable(getattr(m, "layer_groups", None)) else [m]
        groups = [_params_of(g) for g in groups]
        if not groups:
            raise ValueError("layer_groups() returned no groups")
        seen: dict[int, int] = {}
        names = {id(p): n for n, p in m.named_parameters()}
        for i, ps in enumerate(groups):
            for p in ps:
                if id(p) in seen and seen[id(p)] != i:
                    raise ValueError(
                        f"parameter {names.get(id(p), '?')!r} is in layer groups {seen[id(p)]} "
                        f"and {i}: each parameter must be in exactly one group"
                    )
                seen[id(p)] = i
        missing = [n for n, p in m.named_parameters() if p.requires_grad and id(p) not in seen]
        if missing:
            raise ValueError(f"layer_groups() leaves out trainable parameters {missing}")
        return [list({id(p): p for p in ps}.values()) for ps in groups]

    @property
    def n_layer_groups(self) -> int:
        """How many layer groups `lrs`/`wds` may give values for."""
        return max(self._pg_layer) + 1

    def _excluded(self) -> Callable[[str, torch.nn.Parameter], bool]:
        nd = self.no_decay
        if nd is None or nd is False:
            return lambda name, p: False
        if nd is True:
            return lambda name, p: name.endswith("bias") or p.ndim <= 1
        if callable(nd):
            return nd
        patterns = [nd] if isinstance(nd, str) else list(nd)
        names = [n for n, _ in distributed.unwrap(self.model).named_parameters()]
        for pat in patterns:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                raise ValueError(f"no_decay pattern {pat!r} matches no parameter; the model has {names}")
        return lambda name, p: any(fnmatch.fnmatchcase(name, pat) for pat in patterns)

    def _make_opt(self) -> torch.optim.Optimizer:
        """One or two optimiser parameter groups per layer group (decayed / not decayed)."""
        excluded = self._excluded()
        names = {id(p): n for n, p in distributed.unwrap(self.model).named_parameters()}
        pgs, self._pg_layer, self._pg_decay = [], [], []
        for i, params in enumerate(self.get_layer_groups()):
            out = [p for p in params if excluded(names.get(id(p), ""), p)]
            keep = [p for p in params if not excluded(names.get(id(p), ""), p)]
            for ps, decay in ((keep, True), (out, False)):
                if ps:
                    pgs.append({"params": ps})
                    self._pg_layer.append(i)
                    self._pg_decay.append(decay)
        if not pgs:
            raise ValueError("the model has no parameters to train")
        opt = build_optimizer(self.opt_fn, pgs, self.fused,
                              sparse=has_sparse_embeddings(distributed.unwrap(self.model)))
        if len(getattr(opt, "param_groups", ())) != len(pgs):
            raise ValueError(
                f"opt_fn must build the optimiser from the {len(pgs)} parameter groups it is "
                f"given (got {len(getattr(opt, 'param_groups', ()))}); e.g. pass "
                f"functools.partial(optim.SGD, momentum=0.9), not a built optimiser"
            )
        # wds=None means the weight decay opt_fn chose (0 for torch's defaults), never on
        # excluded parameters
        self._default_wds = [
            float(g.get("weight_decay", 0.0)) if d else 0.0
            for g, d in zip(opt.param_groups, self._pg_decay, strict=True)
        ]
        for g, d in zip(opt.param_groups, self._pg_decay, strict=True):
            if not d and "weight_decay" in g:
                g["weight_decay"] = 0.0
        return opt

    def _per_layer(self, values, name: str, positive: bool = False) -> list[float]:
        """A scalar or one value per layer group, checked, as one float per layer group."""
        n = self.n_layer_groups
        if isinstance(values, torch.Tensor):
            values = values.tolist()
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a list of numbers, got {values!r}") from None
        if arr.ndim > 1:
            raise ValueError(f"{name} must be a number or a flat list, got shape {arr.shape}")
        if arr.ndim == 1 and len(arr) != n:
            raise ValueError(
                f"{name} has {len(arr)} values {arr.tolist()} but the model has {n} layer "
                f"group(s); pass a single value or exactly {n}"
            )
        vals = [float(arr)] * n if arr.ndim == 0 else [float(v) for v in arr]
        bad = [v for v in vals if not math.isfinite(v) or v < 0 or (positive and v == 0)]
        if bad:
            need = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {need}, got {values!r}")
        return vals

    def _expand(self, per_layer: list[float]) -> list[float]:
        """Per-layer-group values as one value per optimiser parameter group."""
        return [per_layer[i] for i in self._pg_layer]

    def _apply_wds(self, wds, decoupled: bool) -> None:
        if wds is None:
            values = list(self._default_wds)
        else:
            per_layer = self._expand(self._per_layer(wds, "wds"))
            values = [w if d else 0.0 for w, d in zip(per_layer, self._pg_decay, strict=True)]
        check_weight_decay(self.opt, distributed.unwrap(self.model), values, decoupled)
        set_wds(self.opt, values, decoupled=decoupled)

    def model_file(self, name) -> Path:
        """The file `save(name)`/`load(name)` use: `path/models/name.pt`."""
        name = str(name)
        return self.models_path / (name if Path(name).suffix else f"{name}.pt")

    # ---------------------------------------------------------------------------- fit

    def fit(
        self,
        lrs,
        n_cycle: int,
        wds=None,
        cycle_len: int | None = None,
        cycle_mult: int = 1,
        use_clr: Sequence[float] | None = None,
        use_clr_beta: Sequence[float] | None = None,
        use_wd_sched: bool = False,
        callbacks: Iterable[Callback] | None = None,
        best_save_name: str | None = None,
        cycle_save_name: str | None = None,
        metrics: Sequence[Callable] | None = None,
        **kwargs,
    ) -> FitResult:
        """Train for `n_cycle` cycles (fastai v0.7 semantics).

        With `cycle_len` (epochs in the first cycle), cycles follow SGDR (`CosAnneal`), or
        `CircularLR` with `use_clr=(div, cut_div[, max_mom, min_mom])`, or one-cycle with
        `use_clr_beta=(div, pct[, max_mom, min_mom])`; each cycle is `cycle_mult` times longer
        than the last, `cycle_len * (cycle_mult**n_cycle - 1) / (cycle_mult - 1)` epochs in
        all (`cycle_len * n_cycle` when `cycle_mult == 1`). Without `cycle_len`: `n_cycle`
        epochs at the constant LR `lrs` (`cycle_mult` is then ignored, with a warning).
        Cyclical and one-cycle schedules also lengthen each cycle by `cycle_mult` (v0.7 kept
        them at the first cycle's length, out of step with its own epoch count).

        `lrs`, `wds`: a scalar or one value per layer group. `wds=None` keeps the weight
        decay `opt_fn` chose (none by default); `use_wd_sched` makes it decoupled (see the
        module docs). `best_save_name` saves the model whenever the validation loss improves;
        `cycle_save_name` saves it as `{name}_cyc_{i}` after each cycle. `metrics` replaces
        the learner's metrics for this run. Other keyword arguments go to `minifast.fit.fit`
        (`resume`, `progress`, `verbose`, `avg_mom`, `stop_on_nan`, ...). Returns the
        `FitResult`; `self.sched` holds the schedule and `self.recorder` what was recorded.
        """
        lrs_pg = self._expand(self._per_layer(lrs, "lrs"))
        n_cycle = _positive_int(n_cycle, "n_cycle")
        cycle_mult = _check_cycle_mult(cycle_mult)
        metrics = self.metrics if metrics is None else _check_metrics(metrics)
        if use_clr is not None and use_clr_beta is not None:
            raise ValueError("pass use_clr or use_clr_beta, not both")
        n_batches = len(self.data.trn_dl)
        if n_batches == 0:
            raise ValueError("the training loader has no batches")
        if cycle_len is None:
            for arg, val in (("use_clr", use_clr), ("use_clr_beta", use_clr_beta),
                             ("cycle_save_name", cycle_save_name)):
                if val is not None:
                    raise ValueError(f"{arg} needs cycle_len (the epochs of one cycle)")
            if cycle_mult != 1:
                warnings.warn(
                    f"cycle_mult={cycle_mult} is ignored without cycle_len: training "
                    f"{n_cycle} epoch(s) at a constant learning rate", UserWarning, stacklevel=2)
            n_epochs, sched = n_cycle, ConstantLR(lrs_pg)
        else:
            cycle_len = _positive_int(cycle_len, "cycle_len")
            n_epochs = sum_geom(cycle_len, cycle_mult, n_cycle)
            sched = self._cyclic_sched(lrs_pg, n_batches, cycle_len, cycle_mult, use_clr,
                                       use_clr_beta, cycle_save_name)
        self._apply_wds(wds, bool(use_wd_sched))
        set_lrs(self.opt, lrs_pg)
        cbs: list[Callback] = [sched]
        if best_save_name is not None:
            cbs.append(SaveBestModel(self.model_file(best_save_name)))
        cbs.extend(callbacks or [])
        self.sched = sched
        saved_moms = get_moms(self.opt)
        stepper_kwargs = {"clip": self.clip, "reg_fn": self.reg_fn, **kwargs}
        try:
            return fit(self.model, self.data, n_epochs, self.opt, self.crit, metrics, cbs,
                       **stepper_kwargs)
        finally:
            if sched.mom_at(0) is not None:  # a cycled momentum goes back to the optimiser's
                set_moms(self.opt, [0.0 if m is None else m for m in saved_moms])

    def _cyclic_sched(self, lrs_pg, n_batches, cycle_len, cycle_mult, use_clr, use_clr_beta,
                      cycle_save_name):
        # nb is provisional: the schedule recounts it from cycle_len and the batches per epoch
        # fit actually runs (a rank's share under DDP, known once fit has sharded the loader)
        nb, kw = n_batches * cycle_len, {"cycle_len": cycle_len}
        on_end = None
        if cycle_save_name is not None:
            def on_end(sched, cycle):
                self.save(f"{cycle_save_name}_cyc_{cycle}")
        if use_clr is not None:
            div, cut_div, moms = self._clr_args(use_clr, "use_clr", "(div, cut_div[, max_mom, min_mom])")
            return CircularLR(nb, div, cut_div, moms, cycle_mult, lrs_pg, on_end, **kw)
        if use_clr_beta is not None:
            div, pct, moms = self._clr_args(use_clr_beta, "use_clr_beta", "(div, pct[, max_mom, min_mom])")
            return OneCycle(nb, div, pct, moms, cycle_mult, lrs_pg, on_end, **kw)
        return CosAnneal(nb, cycle_mult, lrs_pg, on_end, **kw)

    def _clr_args(self, args, name: str, form: str):
        args = list(args)
        if len(args) not in (2, 4) or not all(isinstance(a, (int, float)) for a in args):
            raise ValueError(f"{name} must be {form}, got {tuple(args)}")
        moms = tuple(args[2:]) or None
        if moms is not None and all(m is None for m in get_moms(self.opt)):
            warnings.warn(f"{name}: this optimiser has no momentum to cycle; momenta ignored",
                          UserWarning, stacklevel=3)
        return args[0], args[1], moms

    # ------------------------------------------------------------------------- lr_find

    def lr_find(
        self,
        start_lr=1e-5,
        end_lr: float = 10,
        num_it: int | None = None,
        wds=None,
        linear: bool = False,
        stop_div: bool = True,
        use_wd_sched: bool = False,
        **kwargs,
    ) -> float | list[float] | None:
        """LR range test: train from `start_lr` to `end_lr` over `num_it` batches (default and
        maximum: one epoch), exponentially (`linear=False`), stopping early once the smoothed
        loss is not finite or exceeds 4x its minimum; then restore the model, the optimiser
        state, the torch RNG and the loader's epoch counter exactly as they were.

        Returns the suggested LR: the steepest descent of the smoothed loss against log(lr)
        (see `schedules.lr_suggestion`), one value per layer group when `start_lr` is a list.
        `self.sched.plot()` draws the curve with the suggestion marked. Refuses to run under
        torch.distributed (the ranks would each search and restore on their own).
        """
        n_procs = distributed.world_size()
        if n_procs == 1 and distributed.is_launched():  # torchrun, group not joined yet
            n_procs = int(os.environ.get("WORLD_SIZE", "1"))
        if n_procs > 1:
            raise RuntimeError(
                f"lr_find does not run under torch.distributed (world size {n_procs}): run it "
                "in a single process, then launch the distributed fit with the LR it suggests"
            )
        n_batches = len(self.data.trn_dl)
        if n_batches == 0:
            raise ValueError("the training loader has no batches")
        num_it = n_batches if num_it is None else min(_positive_int(num_it, "num_it"), n_batches)
        start = self._per_layer(start_lr, "start_lr", positive=True)
        finder = LR_Finder(num_it, end_lr, self._expand(start), linear, stop_div)
        snapshot = self._snapshot()
        self.sched = finder
        kwargs.setdefault("verbose", False)
        kwargs.setdefault("stop_on_nan", False)  # a NaN loss ends the search, not the program
        try:
            self._apply_wds(wds, bool(use_wd_sched))
            fit(self.model, self.data, 1, self.opt, self.crit, [], [finder],
                **{"clip": self.clip, "reg_fn": self.reg_fn, **kwargs})
        finally:
            self._restore(snapshot)
        best = finder.suggestion()
        if best is None:
            return None
        scale = best / start[self._pg_layer[0]]
        out = [s * scale for s in start]
        return out if isinstance(start_lr, (list, tuple, np.ndarray, torch.Tensor)) else out[0]

    def _snapshot(self) -> dict:
        m = distributed.unwrap(self.model)
        dl = self.data.trn_dl
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        return {
            "model": {k: v.detach().clone() for k, v in m.state_dict().items()},
            "opt": copy.deepcopy(self.opt.state_dict()),
            "training": m.training,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
            "dl": copy.deepcopy(dl.state_dict()) if hasattr(dl, "state_dict") else None,
        }

    def _restore(self, snap: dict) -> None:
        m = distributed.unwrap(self.model)
        m.load_state_dict(snap["model"])
        self.opt.load_state_dict(snap["opt"])
        m.train(snap["training"])
        torch.set_rng_state(snap["rng"])
        if snap["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(snap["cuda_rng"])
        if snap["dl"] is not None:
            self.data.trn_dl.load_state_dict(snap["dl"])

    # ------------------------------------------------------------------------- predict

    def predict(self, is_test: bool = False) -> np.ndarray:
        """Predictions on the validation set (or the test set), in order, as a numpy array."""
        dl = self.data.test_dl if is_test else self.data.val_dl
        if dl is None:
            which = "test" if is_test else "validation"
            raise ValueError(f"this learner's data has no {which} loader to predict on")
        return predict(self.model, dl)

    def predict_array(self, *arrays) -> np.ndarray:
        """The model's output for input array(s) (numpy/tensors, one per model input), in eval
        mode without gradients, as a numpy array."""
        p = next(self.model.parameters(), None)
        dev = p.device if p is not None else default_device()
        xs = [T(a, dev) for a in arrays]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(*xs)
        finally:
            self.model.train(was_training)
        return out.detach().float().cpu().numpy()

    # ------------------------------------------------------------------------ save/load

    def save(self, name, with_opt: bool = False) -> Path:
        """Save the model's weights (and, with `with_opt`, the optimiser state) atomically to
        `path/models/name.pt`; only the main process writes. Returns the file's path."""
        path = self.model_file(name)
        if distributed.is_main_process():
            sd = distributed.unwrap(self.model).state_dict()
            try:
                atomic_save({"model": sd, "opt": self.opt.state_dict()} if with_opt else sd, path)
            except OSError as e:  # typically a read-only data folder
                raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}. Models go to "
                              f"{self.models_path} (under the learner's path); set learn.path "
                              "to a writable folder, or pass path=... when creating the "
                              "learner") from e
        return path

    def load(self, name, with_opt: bool = True) -> Path:
        """Load weights saved by `save` (or any `state_dict` file) with `weights_only=True`;
        also the optimiser state when the file has one and `with_opt`. A missing, truncated
        or mismatched file raises a clear error (naming missing/unexpected keys) and changes
        nothing."""
        path = self.model_file(name)
        if not path.is_file():
            have = sorted(p.name for p in self.models_path.glob("*.pt")) if self.models_path.is_dir() else []
            raise FileNotFoundError(f"no model file {path}; {self.models_path} has {have or 'none'}")
        p = next(self.model.parameters(), None)
        obj = safe_load(path, map_location=p.device if p is not None else None)
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
        if isinstance(obj.get("model"), dict):
            model_sd, opt_sd = obj["model"], obj.get("opt")
        else:
            model_sd, opt_sd = obj, None
        m = distributed.unwrap(self.model)
        own = m.state_dict()
        if model_sd and all(k.startswith("module.") for k in model_sd) and not any(
                k.startswith("module.") for k in own):  # saved from a DDP-wrapped model
            model_sd = {k[len("module."):]: v for k, v in model_sd.items()}
        if with_opt and opt_sd is not None:
            self._check_opt_state(opt_sd, path)
        load_model_state(m, model_sd, path)
        if with_opt and opt_sd is not None:
            load_opt_state(self.opt, opt_sd)
        return path

    def _check_opt_state(self, opt_sd, path) -> None:
        groups = opt_sd.get("param_groups") if isinstance(opt_sd, dict) else None
        if not isinstance(groups, list):
            raise CheckpointError(f"{path}: the optimiser state is malformed")
        own = [len(g["params"]) for g in self.opt.param_groups]
        theirs = [len(g.get("params", ())) for g in groups]
        if own != theirs:
            raise CheckpointError(
                f"{path}: optimiser state has parameter groups of sizes {theirs}, this "
                f"learner's optimiser has {own}; load with with_opt=False to take the weights only"
            )

    def __repr__(self) -> str:
        return (f"Learner(model={type(distributed.unwrap(self.model)).__name__}, "
                f"opt={type(self.opt).__name__}, crit={getattr(self.crit, '__name__', self.crit)}, "
                f"layer_groups={self.n_layer_groups}, path={str(self.path)!r})")
