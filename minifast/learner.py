"""The Learner: a model with its data, loss and optimiser, and fastai v0.7's training API.

```python
learn = Learner(data, model)                    # Adam, loss inferred from the targets
learn.lr_find(); learn.sched.plot()             # LR range test, then restores everything
learn.fit(1e-2, 2, wds=1e-4, cycle_len=1, cycle_mult=2)   # SGDR: 1 + 2 = 3 epochs
preds = learn.predict()
learn.save("m"); learn.load("m")                # path/models/m.pt
```

It assembles the rooms below it: parameter groups and weight decay (`minifast.optim.groups`),
the schedule (`minifast.callbacks.schedules.make_schedule`) and the run (`minifast.fit`).
The weight-decay flavours and `no_decay` are explained on the docs' Schedules page.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .callbacks.averaging import SWA
from .callbacks.freezing import BnFreeze
from .callbacks.schedules import LR_Finder, LR_Updater, make_schedule
from .callbacks.tracking import SaveBestModel
from .checks import check_metrics, positive_int
from .core.events import Callback
from .core.loop import predict
from .core.snapshot import TrainingSnapshot
from .data import ModelData, peek_batch
from .export import export_model
from .optim.groups import ParamGroups, layer_groups, set_trainable
from .optim.hypers import get_moms, load_opt_state, set_lrs, set_moms
from .optim.sparse import LazyAdam, check_sparse_optimizer, has_sparse_embeddings
from .runtime.device import T, default_device, loader_device
from .runtime.modules import eval_mode, model_device, place_model, unwrap
from .runtime.ranks import is_main_process, launched_world_size
from .runtime.rng import loader_untouched
from .saving import (
    CheckpointError,
    atomic_save,
    check_opt_state,
    load_model_state,
    safe_load,
    strip_ddp_prefix,
)
from .training import FitResult, fit

__all__ = ["Learner", "default_crit", "sample_batch"]


def default_crit(data) -> Callable:
    """The loss `Learner` uses when none is given, from the dtype of the targets of any
    loader (one sample, see `sample_batch`): floating targets -> `F.mse_loss` (regression,
    e.g. ratings), integer targets -> `F.cross_entropy` (class indices)."""
    batch = sample_batch(data)
    y = batch[-1] if isinstance(batch, (list, tuple)) and len(batch) >= 2 else None
    if isinstance(y, torch.Tensor):
        if y.is_floating_point():
            return F.mse_loss
        if not y.is_complex() and y.dtype != torch.bool:
            return F.cross_entropy
        seen = f"the target is a tensor of dtype {y.dtype} and shape {tuple(y.shape)}"
    elif batch is None:
        seen = "no batch could be read: the training and validation loaders yield none"
    elif y is None:
        n = len(batch) if isinstance(batch, (list, tuple)) else None
        seen = (f"a batch is a {type(batch).__name__}{'' if n is None else f' of {n} element(s)'}"
                ", with no target after the inputs")
    else:
        seen = f"the target is a {type(y).__name__}, not a tensor"
    raise ValueError(
        f"cannot infer the loss from this data's targets ({seen}): pass crit=... "
        "(e.g. F.mse_loss for regression, F.cross_entropy for classes)"
    )


def sample_batch(data):
    """One batch-shaped sample of `data` (a `ModelData`), disturbing no RNG and no loader: a
    row peeked from the training or else the validation loader (`peek_batch`: an
    ArrayLoader's arrays, or item 0 of a map-style Dataset); failing that, the first batch of
    the validation loader (unshuffled, as a rule), else of the training loader, with every
    RNG, the loader's generators and its `state_dict` put back. None when all are empty."""
    loaders = [dl for dl in (data.trn_dl, getattr(data, "val_dl", None)) if dl is not None]
    for dl in loaders:
        if (batch := peek_batch(dl)) is not None:
            return batch
    for dl in reversed(loaders):
        with loader_untouched(dl):
            batch = next(iter(dl), None)
        if batch is not None:
            return batch
    return None


def _probabilities(crit) -> Callable[[torch.Tensor], torch.Tensor]:
    """What turns the model's outputs into probabilities, as `crit` implies."""
    fn = getattr(crit, "func", crit)  # a functools.partial of the loss
    if fn is F.cross_entropy or isinstance(fn, nn.CrossEntropyLoss):
        return lambda out: torch.softmax(out, dim=-1)
    if fn is F.binary_cross_entropy_with_logits or isinstance(fn, nn.BCEWithLogitsLoss):
        return torch.sigmoid
    if fn is F.nll_loss or isinstance(fn, nn.NLLLoss):  # outputs are log-probabilities
        return torch.exp
    raise ValueError(
        f"probs=True: the loss {getattr(fn, '__name__', type(fn).__name__)!r} implies no "
        "probabilities (they follow from F.cross_entropy: softmax, "
        "F.binary_cross_entropy_with_logits: sigmoid, F.nll_loss: exp); use predict() and "
        "transform the outputs yourself")


def _n_batches(data) -> int:
    n_batches = len(data.trn_dl)
    if n_batches == 0:
        raise ValueError("the training loader has no batches")
    return n_batches


def _loader(data, is_test: bool):
    dl = data.test_dl if is_test else data.val_dl
    if dl is None:
        which = "test" if is_test else "validation"
        raise ValueError(f"this learner's data has no {which} loader to predict on")
    return dl


def _n_inputs(data) -> int | None:
    """How many inputs the training batches have (None when unknown)."""
    batch = sample_batch(data)
    return len(batch) - 1 if isinstance(batch, (list, tuple)) and len(batch) >= 2 else None


def _predictor(learn, use_swa: bool) -> nn.Module:
    """The model `predict` uses: the learner's, or with `use_swa` its averaged `swa_model`."""
    if not use_swa:
        return learn.model
    if learn.swa_model is None:
        raise ValueError("use_swa=True: this learner has no swa_model yet; train with "
                         "fit(..., use_swa=True, swa_start=...) first")
    return learn.swa_model


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
    - `no_decay=None`: every parameter decays (v0.7); `True` excludes biases and other 1-d
      parameters, `fnmatch` patterns or a callable `no_decay(name, param)` choose others.
    - `fused=None`: torch's Adam/AdamW (the default or given as `opt_fn`) run their fused
      kernel wherever this torch has one for the parameters (same algorithm, faster on CPU;
      see `minifast.optim.fused`); False: torch's default implementation; True: fused or an
      error.

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
        sparse = has_sparse_embeddings(unwrap(model))
        if opt_fn is None:  # LazyAdam: Adam that takes sparse embedding gradients
            opt_fn = LazyAdam if sparse else torch.optim.Adam
        check_sparse_optimizer(opt_fn, unwrap(model))
        if clip and sparse:
            raise ValueError("clip: gradient-norm clipping does not take sparse embedding "
                             "gradients (torch has no norm for them); use dense embeddings")
        self.opt_fn = opt_fn
        self.crit = crit if crit is not None else default_crit(data)
        self.metrics = check_metrics(metrics)
        self.clip, self.reg_fn, self.no_decay = clip, reg_fn, no_decay
        self.fused = fused
        self.path = Path(path if path is not None else data.path)
        self.sched: LR_Updater | None = None
        self.swa_model: nn.Module | None = None  # the average of the last fit(use_swa=True)
        place_model(model, loader_device(data.trn_dl))
        self.param_groups = ParamGroups(model, no_decay)
        self.opt = self.param_groups.build(opt_fn, fused)

    @property
    def models_path(self) -> Path:
        """Where `save`/`load` keep model files: `path/models`."""
        return self.path / "models"

    @property
    def recorder(self):
        """The `Recorder` of the last `fit`/`lr_find` (losses, LRs, momenta, epochs), or None."""
        return None if self.sched is None else self.sched.recorder

    @property
    def sparse(self) -> bool:
        """Whether the model's embeddings produce sparse gradients (row-wise steps)."""
        return has_sparse_embeddings(unwrap(self.model))

    @property
    def n_layer_groups(self) -> int:
        """How many layer groups `lrs`/`wds` may give values for."""
        return self.param_groups.n_layer_groups

    def get_layer_groups(self) -> list[list[torch.nn.Parameter]]:
        """The parameters of each layer group: the model's `layer_groups()`, or one group."""
        return layer_groups(self.model)

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups `[:n]` and unfreeze `[n:]` (fastai v0.7): frozen groups get no
        gradients, so no updates, and `fit` keeps their BatchNorm layers in eval mode."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"freeze_to needs a layer-group index, got {n!r}")
        groups = self.get_layer_groups()
        for i, params in enumerate(groups):
            set_trainable(params, i >= (n if n >= 0 else len(groups) + n))

    def freeze(self) -> None:
        """Freeze every layer group but the last (`freeze_to(-1)`)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Make every layer group trainable again (`freeze_to(0)`)."""
        self.freeze_to(0)

    def model_file(self, name) -> Path:
        """The file `save(name)`/`load(name)` use: `path/models/name.pt`."""
        name = str(name)
        return self.models_path / (name if Path(name).suffix else f"{name}.pt")

    def _run(self, n_epochs: int, metrics, callbacks: list[Callback], data=None,
             **kwargs) -> FitResult:
        kwargs = {"clip": self.clip, "reg_fn": self.reg_fn, **kwargs}
        return fit(self.model, self.data if data is None else data, n_epochs, self.opt,
                   self.crit, metrics, callbacks, **kwargs)

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
        use_swa: bool = False,
        swa_start: int = 1,
        swa_eval_freq: int = 5,
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
        docs' Schedules page). `best_save_name` saves the model whenever the validation loss
        improves; `cycle_save_name` saves it as `{name}_cyc_{i}` after each cycle. `metrics`
        replaces the learner's metrics for this run. `use_swa` averages the weights of every
        epoch from `swa_start` (1-indexed) in `self.swa_model`, validated every `swa_eval_freq`
        epochs in the `swa_loss` columns (`minifast.SWA`). Other keyword arguments go to
        `minifast.fit` (`resume`, `progress`, `verbose`, `avg_mom`, `stop_on_nan`, ...).
        Returns the `FitResult`; `self.sched` holds the schedule and `self.recorder` what
        was recorded.
        """
        lrs_pg = self.param_groups.per_group(lrs, "lrs")
        metrics = self.metrics if metrics is None else check_metrics(metrics)
        n_batches = _n_batches(self.data)
        if cycle_save_name is not None and cycle_len is None:
            raise ValueError("cycle_save_name needs cycle_len (the epochs of one cycle)")
        on_cycle_end = None
        if cycle_save_name is not None:
            def on_cycle_end(sched, cycle):
                self.save(f"{cycle_save_name}_cyc_{cycle}")
        has_momentum = any(m is not None for m in get_moms(self.opt))
        n_epochs, sched = make_schedule(lrs_pg, n_cycle, n_batches, cycle_len, cycle_mult,
                                        use_clr, use_clr_beta, on_cycle_end, has_momentum)
        self.param_groups.apply_wds(self.opt, wds, bool(use_wd_sched))
        set_lrs(self.opt, lrs_pg)
        cbs: list[Callback] = [sched]
        if not all(p.requires_grad for p in self.model.parameters()):
            cbs.append(BnFreeze())
        if best_save_name is not None:
            cbs.append(SaveBestModel(self.model_file(best_save_name)))
        if use_swa:  # fastai v0.7: a copy of the model keeps the average
            cbs.append(swa := SWA(swa_start, swa_eval_freq, copy.deepcopy(unwrap(self.model))))
            self.swa_model = swa.swa_model
        cbs.extend(callbacks or [])
        self.sched = sched
        saved_moms = get_moms(self.opt)
        try:
            return self._run(n_epochs, metrics, cbs, **kwargs)
        finally:
            if sched.mom_at(0) is not None:  # a cycled momentum goes back to the optimiser's
                set_moms(self.opt, [0.0 if m is None else m for m in saved_moms])

    def lr_find(
        self,
        start_lr=1e-5,
        end_lr: float = 10,
        num_it: int = 100,
        wds=None,
        linear: bool = False,
        stop_div: bool = True,
        use_wd_sched: bool = False,
        **kwargs,
    ) -> float | list[float] | None:
        """LR range test: train from `start_lr` to `end_lr` over `num_it` batches (fastai 2's
        default 100; as many epochs of the training loader as that takes, without validating),
        exponentially (`linear=False`), stopping early once the smoothed loss is not finite or
        exceeds 4x its minimum; then restore the model, the optimiser state, the RNGs, the
        loader's generators and its epoch counter exactly as they were.

        Returns the suggested LR: the steepest descent of the smoothed loss against log(lr)
        (see `minifast.lr_suggestion`), one value per layer group when `start_lr` is a list.
        `self.sched.plot()` draws the curve with the suggestion marked. Refuses to run under
        torch.distributed (the ranks would each search and restore on their own). Prints the
        suggestion in one line (`verbose=False`: prints nothing).
        """
        n_procs = launched_world_size()
        if n_procs > 1:
            raise RuntimeError(
                f"lr_find does not run under torch.distributed (world size {n_procs}): run it "
                "in a single process, then launch the distributed fit with the LR it suggests"
            )
        num_it = positive_int(num_it, "num_it")
        n_epochs = math.ceil(num_it / _n_batches(self.data))
        start = self.param_groups.per_layer(start_lr, "start_lr", positive=True)
        finder = LR_Finder(num_it, end_lr, self.param_groups.expand(start), linear, stop_div)
        trn_dl = self.data.trn_dl
        snapshot = TrainingSnapshot.take(self.model, self.opt, trn_dl)
        self.sched = finder
        say = kwargs.get("verbose", True) and is_main_process()  # the one line at the end
        kwargs.setdefault("verbose", False)
        kwargs.setdefault("stop_on_nan", False)  # a NaN loss ends the search, not the program
        try:
            self.param_groups.apply_wds(self.opt, wds, bool(use_wd_sched))
            self._run(n_epochs, [], [finder], data=ModelData(self.path, trn_dl, None), **kwargs)
        finally:
            snapshot.restore()
        best = finder.suggestion()
        out = None if best is None else [s * (best / start[self.param_groups.layer[0]]) for s in start]
        if say:
            print("lr_find: " + ("no suggestion (the smoothed loss never fell)" if out is None else
                  f"suggested lr {', '.join(f'{x:.2e}' for x in out)} (steepest descent of the "
                  "smoothed loss)") + "; learn.sched.plot() shows the curve", flush=True)
        if out is None:
            return None
        return out if isinstance(start_lr, (list, tuple, np.ndarray, torch.Tensor)) else out[0]

    def predict(self, is_test: bool = False, probs: bool = False,
                use_swa: bool = False) -> np.ndarray:
        """Predictions on the validation set (or the test set), in order, as a numpy array.

        Test batches may be the inputs only or carry targets: a batch with as many elements
        as the training batches have inputs is inputs only (`minifast.core.loop.predict`).
        `probs=True`: probabilities as the loss implies (softmax over the last dim for
        cross-entropy, sigmoid for BCE-with-logits, exp for NLL; any other loss is an error).
        `use_swa=True`: with `swa_model`, the weights averaged by `fit(..., use_swa=True)`."""
        to_probs = _probabilities(self.crit) if probs else None
        out = predict(_predictor(self, use_swa), _loader(self.data, is_test), _n_inputs(self.data))
        return out if to_probs is None else to_probs(torch.from_numpy(out)).numpy()

    def predict_proba(self, is_test: bool = False) -> np.ndarray:
        """`predict(is_test, probs=True)`: class probabilities as the loss implies."""
        return self.predict(is_test, probs=True)

    def predict_with_targs(self, is_test: bool = False,
                           use_swa: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`(predictions, targets)` on the validation set (or a test set with targets), in
        order, as numpy arrays, from one pass over the loader (fastai v0.7's name)."""
        return predict(_predictor(self, use_swa), _loader(self.data, is_test), _n_inputs(self.data),
                       with_targs=True)

    def predict_array(self, *arrays) -> np.ndarray:
        """The model's output for input array(s) (numpy/tensors, one per model input), in eval
        mode without gradients, as a numpy array."""
        xs = [T(a, model_device(self.model) or default_device()) for a in arrays]
        with eval_mode(self.model):
            out = self.model(*xs)
        return out.detach().float().cpu().numpy()

    def save(self, name, with_opt: bool = False) -> Path:
        """Save the model's weights (and, with `with_opt`, the optimiser state) atomically to
        `path/models/name.pt`; only the main process writes. Returns the file's path."""
        path = self.model_file(name)
        if is_main_process():
            sd = unwrap(self.model).state_dict()
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
        obj = safe_load(path, map_location=model_device(self.model))
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
        model_sd, opt_sd = (obj["model"], obj.get("opt")) if isinstance(obj.get("model"), dict) \
            else (obj, None)
        m = unwrap(self.model)
        model_sd = strip_ddp_prefix(model_sd, m.state_dict())
        if with_opt and opt_sd is not None:
            check_opt_state(self.opt, opt_sd, path, "; load with with_opt=False to take the "
                            "weights only")
        load_model_state(m, model_sd, path)
        if with_opt and opt_sd is not None:
            load_opt_state(self.opt, opt_sd)
        return path

    def export(self, path) -> Path:
        """Write the model for serving to the file `path`: `minifast.load_learner(path)`
        predicts as `predict_array` does, with no data or model code (`minifast.export`)."""
        x = sample_batch(self.data)[: _n_inputs(self.data)]
        info = {"model": type(unwrap(self.model)).__name__}
        return export_model(self.model, x, path, info) if is_main_process() else Path(path)

    def __repr__(self) -> str:
        return (f"Learner(model={type(unwrap(self.model)).__name__}, "
                f"opt={type(self.opt).__name__}, crit={getattr(self.crit, '__name__', self.crit)}, "
                f"layer_groups={self.n_layer_groups}, path={str(self.path)!r})")
