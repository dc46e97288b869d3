"""Checkpoints of a whole training run, and exact resume from them.

A checkpoint holds everything the loop needs to continue as if it had never stopped: the
model and optimiser states, the loop's counters and smoothed-loss state, the recorder's
history, the state of any callback with `state_dict`/`load_state_dict` (schedules), every
global RNG (torch CPU and CUDA, numpy, Python `random`) and the training loader's shuffle
state (an `ArrayLoader`'s seed; a torch DataLoader's generators, and the RNG states its
epoch's order was drawn from, so that a mid-epoch resume replays that order). `fit(..., resume=path)` restores it all before `on_train_begin`, so with the same
seed the resumed run ends with bit-identical weights.

Files are written atomically (temp file, fsync, rename) and only by the main process, with
a checksum of their content that loading verifies (format 2; format-1 files still load,
unverified); they hold only tensors and plain containers, so they load with
`torch.load(weights_only=True)` and a file from a stranger cannot run code. While a run
writes to a folder it holds a lock file there (pid and host), so a second run cannot mix
its checkpoints with the first one's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.events import Callback, CallbackHandler
from ..core.order import order_problem
from ..core.state import FitState
from ..optim.hypers import load_opt_state
from ..runtime.modules import unwrap
from ..runtime.ranks import is_main_process, world_size
from ..runtime.rng import get_rng_states, loader_generators, set_loader_rng_state, set_rng_states
from ..saving import (
    CheckpointError,
    atomic_save,
    check_opt_state,
    load_model_state,
    safe_load,
    temp_name_pattern,
)
from .fingerprint import fingerprint_differences, run_fingerprint
from .recording import Printer, Recorder

__all__ = ["Checkpoint", "restore_checkpoint", "load_checkpoint", "find_checkpoints"]

FORMAT = "minifast.checkpoint"
VERSION = 2  # 2: sealed with a checksum, with the run's fingerprint and epoch_rng
_SUFFIXES = (".pt", ".pth", ".ckpt")
_NAME = re.compile(r"^(?P<prefix>.+)-(?P<iteration>\d+)\.pt$")


class Checkpoint(Callback):
    """Saves the whole run at every epoch end (and every `every_n_iters` batches), keeping
    the last `keep` files; on Ctrl-C, saves where training stopped and prints how to resume.

    `path` is a directory (files `ckpt-<iteration>.pt` in it) or a file name such as
    `"runs/model.pt"` (files `runs/model-<iteration>.pt`). Resume with
    `fit(..., resume=True)` (this callback's newest checkpoint), a directory or a file.
    `every_n_epochs=None` turns epoch-end saves off (the last epoch is always saved).

    Mid-epoch checkpoints (`every_n_iters`, or a Ctrl-C mid-epoch) need a training loader
    whose epoch order a resume can replay: an `ArrayLoader`, a torch `DataLoader` over a
    map-style dataset with torch's own samplers, or a loader with `state_dict`/
    `load_state_dict`; for any other (an IterableDataset, a custom sampler) they are refused,
    with the reason, rather than resumed into a different order.
    """

    order = 90  # after every other callback's on_batch_end/on_epoch_end (schedules, recorder)

    def __init__(
        self,
        path: str | os.PathLike,
        every_n_iters: int | None = None,
        keep: int | None = 3,
        every_n_epochs: int | None = 1,
    ):
        for name, v in (("every_n_iters", every_n_iters), ("keep", keep),
                        ("every_n_epochs", every_n_epochs)):
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)
                                  or v < 1):
                raise ValueError(f"Checkpoint: {name} must be None or an integer >= 1, got {v!r}")
        path = Path(path)
        if path.suffix in _SUFFIXES:
            self.dir, self.prefix = path.parent, path.stem
        else:
            self.dir, self.prefix = path, "ckpt"
        self.every_n_iters, self.keep, self.every_n_epochs = every_n_iters, keep, every_n_epochs
        self.last_path: Path | None = None
        self._last_pos: tuple | None = None
        self._in_batch, self._it0 = False, 0
        self._lock: Path | None = None

    def path_for(self, iteration: int) -> Path:
        """The file a checkpoint taken after `iteration` batches goes to."""
        return self.dir / f"{self.prefix}-{iteration:08d}.pt"

    def checkpoints(self) -> list[Path]:
        """This callback's checkpoint files, newest first."""
        return find_checkpoints(self.dir, self.prefix)

    # -- events --------------------------------------------------------------------------
    def on_train_begin(self) -> None:
        self._in_batch, self._last_pos = False, None
        problem = self._order_problem()
        if self.every_n_iters and problem:
            raise ValueError(f"Checkpoint(every_n_iters={self.every_n_iters}): {problem}")
        if is_main_process():
            self._prepare_folder()
        if self.state.iteration == 0:  # a fresh run (a resumed one knows the file it came from)
            self.last_path = None
        old = self.checkpoints() if is_main_process() else []
        if old and self.state.iteration == 0:
            warnings.warn(
                f"Checkpoint: {self.dir} already holds {len(old)} checkpoint(s) named "
                f"{self.prefix}-*.pt from an earlier run; this new run will replace them "
                f"(keep={self.keep}). To continue that run instead, pass resume=True.",
                stacklevel=2,
            )

    def on_batch_begin(self) -> None:
        self._in_batch, self._it0 = True, self.state.iteration

    def on_batch_end(self, loss: float) -> None:
        self._in_batch = False
        if self.every_n_iters and self.state.iteration % self.every_n_iters == 0:
            self.save()

    def on_epoch_end(self, vals: list[float]) -> None:
        s = self.state
        if (self.every_n_epochs and (s.epoch + 1) % self.every_n_epochs == 0) or (
                s.epoch + 1 >= s.n_epochs):
            self.save()

    def on_train_end(self) -> None:
        try:
            if self.state.interrupted and is_main_process():
                self._report_interrupt()
        finally:
            self._release_lock()

    def _report_interrupt(self) -> None:
        s = self.state
        pos = self.resume_position()
        epoch, batch = pos if pos is not None else (s.epoch, s.batch_idx)
        where = f"epoch {epoch}, batch {batch}/{s.n_batches} (iteration {s.iteration})"
        try:
            path = self.save()
        except Exception as e:  # never hide the KeyboardInterrupt behind a failed save
            path = None
            print(f"minifast: could not write a checkpoint on interrupt: {type(e).__name__}: {e}",
                  file=sys.stderr)
        head = f"minifast: training interrupted{' mid-step' if pos is None else ''} at {where}"
        if path is not None:
            msg = f'{head}; checkpoint saved to {path}; resume with fit(..., resume="{path}")'
        elif self.last_path is not None:
            msg = (f"{head}; no checkpoint there; resume from the last one with "
                   f'fit(..., resume="{self.last_path}")')
        else:
            msg = f"{head}; no checkpoint to resume from"
        print(msg, file=sys.stderr, flush=True)

    # -- the folder ------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        """The lock file a run holds in the folder while it writes there."""
        return self.dir / f".{self.prefix}.lock"

    def _prepare_folder(self) -> None:
        """Before any training: the folder is writable, this run holds its lock, and no
        temp file of an earlier, killed write is left."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.dir):
                pass
        except OSError as e:
            raise OSError(e.errno, f"Checkpoint: cannot write checkpoints to {self.dir} "
                          f"({e.strerror or e}); give Checkpoint a writable folder") from e
        self._take_lock()
        for p in self.dir.glob(temp_name_pattern(f"{self.prefix}-*.pt")):
            m = _NAME.match(p.name[1:].split(".pt.")[0] + ".pt")
            if m and m["prefix"] == self.prefix:
                p.unlink(missing_ok=True)

    def _take_lock(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.lock_path)
                if holder is not None and holder != me and not _stale(holder):
                    raise RuntimeError(
                        f"Checkpoint: {self.dir} is in use by another run (pid {holder['pid']} "
                        f"on host {holder['host']}, lock file {self.lock_path}); two runs "
                        f"writing one folder prune each other's checkpoints and resume from "
                        f"each other's. Give this run its own folder, or wait for that one to "
                        f"end (if no run uses the folder, delete the lock file)") from None
                self.lock_path.unlink(missing_ok=True)  # stale (or ours): take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._lock = self.lock_path
            return
        raise RuntimeError(f"Checkpoint: could not take the lock {self.lock_path}")

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None and _lock_holder(lock) == {"pid": os.getpid(),
                                                       "host": socket.gethostname()}:
            lock.unlink(missing_ok=True)

    # -- saving ----------------------------------------------------------------------------
    def _order_problem(self) -> str | None:
        """Why a mid-epoch checkpoint of this run could not be resumed exactly, or None."""
        problem = order_problem(getattr(self.state.data, "trn_dl", None))
        if problem is None:
            return None
        return (f"mid-epoch checkpoints need a training loader whose epoch order a resume can "
                f"replay, but {problem}; a resume would continue the epoch in another order. "
                f"Checkpoint at epoch ends only (every_n_iters=None), or train from an "
                f"ArrayLoader or a DataLoader with torch's own samplers")
    def resume_position(self) -> tuple[int, int] | None:
        """`(epoch, batch_idx)` to resume from if training stopped now, or None mid-step."""
        s = self.state
        if self._in_batch and s.iteration != self._it0 + 1:
            return None  # interrupted inside a step: weights/RNG are not those of a boundary
        if len(s.history) > s.epoch:  # this epoch is validated and recorded: the next one is due
            return s.epoch + 1, 0
        return s.epoch, s.batch_idx

    def save(self) -> Path | None:
        """Write a checkpoint of the run now (main process only); returns its path, or None
        when the run is mid-step (no consistent state to save) or this is not rank 0."""
        pos = self.resume_position()
        if pos is None or not is_main_process():
            return None
        if pos[1] > 0 and (problem := self._order_problem()):
            raise ValueError(problem)
        s = self.state
        key = (*pos, s.iteration)
        if key == self._last_pos and self.last_path is not None and self.last_path.is_file():
            return self.last_path  # already saved at exactly this point
        path = atomic_save(make_checkpoint(s, s.cbs, pos), self.path_for(s.iteration), sealed=True)
        self.last_path, self._last_pos = path, key
        self._prune(path)
        return path

    def _prune(self, newest: Path) -> None:
        if self.keep is None:
            return
        files = [newest] + [p for p in self.checkpoints() if p != newest]
        for p in files[self.keep:]:
            p.unlink(missing_ok=True)


def _lock_holder(lock: Path) -> dict | None:
    """The `{"pid", "host"}` in a lock file; None if it is unreadable and old (a run killed
    while writing it); a just-created, still empty one counts as held."""
    try:
        holder = json.loads(lock.read_text())
        return {"pid": int(holder["pid"]), "host": str(holder["host"])}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        try:
            young = time.time() - lock.stat().st_mtime < 5
        except OSError:
            return None
        return {"pid": -1, "host": "?"} if young else None


def _stale(holder: dict) -> bool:
    """Whether the run holding a lock is gone (known only for a process on this host)."""
    if holder["host"] != socket.gethostname() or holder["pid"] <= 0:
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def find_checkpoints(directory: str | os.PathLike, prefix: str | None = None) -> list[Path]:
    """Checkpoint files (`<prefix>-<iteration>.pt`) in `directory`, newest first (by
    modification time, then iteration)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and (prefix is None or m["prefix"] == prefix) and p.is_file():
            try:
                found.append((p.stat().st_mtime_ns, int(m["iteration"]), p))
            except OSError:  # removed meanwhile
                pass
    return [p for *_, p in sorted(found, reverse=True)]


# -- what a checkpoint holds --------------------------------------------------------------
def _callback_states(cbs: CallbackHandler | None) -> dict[str, Any]:
    """Callbacks with `state_dict`/`load_state_dict` (other than the recorder and
    checkpointers), keyed by class name (`Name#1` for a second instance)."""
    out: dict[str, Any] = {}
    for cb in cbs.callbacks if cbs is not None else ():
        if isinstance(cb, (Recorder, Checkpoint)):
            continue
        if callable(getattr(cb, "state_dict", None)) and callable(getattr(cb, "load_state_dict", None)):
            name = type(cb).__name__
            key, i = name, 1
            while key in out:
                key, i = f"{name}#{i}", i + 1
            out[key] = cb
    return out


def _plain(obj: Any, where: str) -> Any:
    """`obj` with numpy values turned into Python numbers/tensors; anything that
    `torch.load(weights_only=True)` would refuse raises a TypeError naming where it is."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    for t in (bool, int, float, str):  # subclasses (IntEnum, TorchVersion) are not loadable
        if isinstance(obj, t):
            return t(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(
        f"cannot checkpoint {where}: a {type(obj).__name__} is not a tensor, number, string "
        f"or plain list/dict, so torch.load(weights_only=True) could not read it back"
    )


def make_checkpoint(state: FitState, cbs: CallbackHandler | None,
                    position: tuple[int, int] | None = None) -> dict[str, Any]:
    """The checkpoint dict of a run: resuming from it continues at `position`
    (`(epoch, batch_idx)`, default the state's own counters)."""
    epoch, batch_idx = position if position is not None else (state.epoch, state.batch_idx)
    st = state.state_dict()
    st.update(epoch=epoch, batch_idx=batch_idx, vals=list(state.vals))
    rec = state.recorder
    dl = getattr(state.data, "trn_dl", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "torch_version": str(torch.__version__),
        "n_epochs": int(state.n_epochs),
        "n_batches": int(state.n_batches),
        "world_size": world_size(),
        "fingerprint": _plain(run_fingerprint(state, cbs), "fingerprint"),
        "model": unwrap(state.model).state_dict(),
        "opt": _plain(state.opt.state_dict(), "optimizer state"),
        "state": _plain(st, "fit state"),
        "recorder": None if rec is None else _plain(rec.state_dict(), "recorder"),
        "callbacks": {k: _plain(cb.state_dict(), f"callback {k}")
                      for k, cb in _callback_states(cbs).items()},
        "stepper": _plain(state.stepper.state_dict(), "stepper")
        if callable(getattr(state.stepper, "state_dict", None)) else None,
        "rng": get_rng_states(),
        "loader": _plain(dl.state_dict(), "loader") if callable(getattr(dl, "state_dict", None))
        else {"generators": [g.get_state() for g in loader_generators(dl)]},
    }


# -- loading and restoring ------------------------------------------------------------------
_REQUIRED = ("model", "opt", "state", "rng", "n_batches")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file safely (`weights_only=True`, on the CPU) and check its format;
    a missing, truncated, corrupt or foreign file raises an error naming it."""
    path = Path(path)
    ckpt = safe_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a minifast training checkpoint (no format={FORMAT!r}; a file saved "
            f"by learn.save/torch.save of a state_dict holds weights only: load it with "
            f"learn.load or load_model_state, not resume)"
        )
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:  # 1 loads as is
        raise CheckpointError(
            f"{path} has checkpoint format version {ckpt.get('version')!r}; this minifast reads "
            f"versions up to {VERSION}: upgrade minifast to resume from it"
        )
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: missing {missing}")
    return ckpt


def _load_newest(directory: Path, prefix: str | None) -> tuple[Path, dict]:
    files = find_checkpoints(directory, prefix)
    if not files:
        raise FileNotFoundError(f"no checkpoint files (<name>-<iteration>.pt) in {directory}")
    errors = []
    for p in files:
        try:
            ckpt = load_checkpoint(p)
        except (CheckpointError, OSError) as e:
            errors.append(f"{p.name}: {e}")
            continue
        if errors:
            warnings.warn(
                f"resume: skipped {len(errors)} unreadable checkpoint(s) in {directory} and "
                f"resumed from the newest good one, {p.name} ({'; '.join(errors)})",
                stacklevel=3,
            )
        return p, ckpt
    raise CheckpointError(f"no loadable checkpoint in {directory}: " + "; ".join(errors))


def restore_checkpoint(resume, state: FitState, cbs: CallbackHandler,
                       strict: bool = True) -> Path | None:
    """Restore a run from a checkpoint before training continues (called by `fit`).

    `resume` is a checkpoint file, a directory (its newest loadable checkpoint; an unreadable
    newer one is skipped with a warning), or True: the `Checkpoint` callback's own files
    (training starts from scratch, with a warning, when there are none yet). Restores the
    model, optimiser, loop counters and loss averages, recorder, callbacks' states, RNGs and
    the training loader's shuffle state. Returns the file used (None when nothing was).

    The checkpoint's fingerprint (the data, split, batch size, `n_epochs`, schedules and
    optimiser its run had) must match this run's: anything different is refused with a
    `CheckpointError` naming it, since the resumed run could not continue that one exactly;
    `strict=False` (`fit(..., resume_strict=False)`) resumes anyway, with a warning. Only
    the run's length may differ (`n_epochs`, a schedule's `cycle_len`: training on, or
    stopping sooner): that continues, with a warning naming both. A checkpoint already at
    or past this fit's last epoch (a finished run, or a shorter fit) restores the model and
    trains nothing, with a warning naming the epochs.
    """
    if resume is None or resume is False:
        return None
    own = cbs.find(Checkpoint)
    if resume is True:
        if own is None:
            raise ValueError("resume=True resumes from the Checkpoint callback's files, but "
                             "no Checkpoint callback was given: pass callbacks=[Checkpoint(dir)] "
                             "or resume=<checkpoint file or directory>")
        if not find_checkpoints(own.dir, own.prefix):
            warnings.warn(f"resume=True: no checkpoint in {own.dir} yet; training from the start",
                          stacklevel=3)
            return None
        path, ckpt = _load_newest(own.dir, own.prefix)
    elif isinstance(resume, (str, os.PathLike)):
        target = Path(resume)
        if target.is_dir():
            prefix = own.prefix if own is not None and own.dir.resolve() == target.resolve() else None
            path, ckpt = _load_newest(target, prefix)
        else:
            path, ckpt = target, load_checkpoint(target)
    else:
        raise TypeError(f"resume must be a checkpoint path, a directory or True; got {resume!r}")
    _apply(ckpt, state, cbs, path, strict)
    if state.epoch >= state.n_epochs:
        done = "finished" if state.epoch >= ckpt.get("n_epochs", state.epoch) else "not finished"
        warnings.warn(
            f"resume: {path} is at epoch {state.epoch} (iteration {state.iteration}) of a run of "
            f"{ckpt.get('n_epochs', '?')} epoch(s), which had {done}; this fit has "
            f"{state.n_epochs} epoch(s), so there is nothing left to train: the model holds "
            f"the checkpoint's weights. Pass a larger n_epochs to train on", stacklevel=3)
    if own is not None:
        own.last_path = path  # where a resumed run goes back to if interrupted mid-step
    if cbs.find(Printer) is not None and is_main_process():
        s = state
        print(f"resuming from {path}: epoch {s.epoch}, batch {s.batch_idx}/{s.n_batches} "
              f"(iteration {s.iteration})", flush=True)
    return path


def _check_fingerprint(ckpt: dict, state: FitState, cbs: CallbackHandler, path: Path,
                       strict: bool) -> None:
    """Refuse (or with `strict=False`, warn about) a checkpoint of a run set up differently."""
    saved = ckpt.get("fingerprint")
    if saved is None:
        warnings.warn(f"resume: {path} holds no fingerprint of its run (checkpoint format "
                      f"{ckpt.get('version')}), so this run's data and settings are not checked "
                      f"against it", stacklevel=5)
        return
    other, length = fingerprint_differences(saved, run_fingerprint(state, cbs))
    if length:
        warnings.warn(f"resume: {path} comes from a run of another length ({'; '.join(length)}); "
                      f"training continues from its position to this fit's end, on this fit's "
                      f"schedule", stacklevel=5)
    if not other:
        return
    what = "; ".join(other)
    if strict:
        raise CheckpointError(
            f"resume: {path} was saved by a run set up differently ({what}), so resuming "
            f"would not continue that run exactly. Resume with the same data and settings, or "
            f"pass fit(..., resume_strict=False) to resume anyway")
    warnings.warn(f"resume_strict=False: resuming from {path}, saved by a run set up "
                  f"differently ({what}); the result will not match that run's", stacklevel=5)


def _apply(ckpt: dict, state: FitState, cbs: CallbackHandler, path: Path,
           strict: bool = True) -> None:
    # Check everything that can mismatch before changing anything.
    saved_ws = ckpt.get("world_size", 1)
    if saved_ws != world_size():
        raise CheckpointError(
            f"{path} was saved by a run of {saved_ws} process(es), this one has {world_size()}: "
            f"resuming needs the same number, so that a step covers the same rows"
        )
    # Under DDP the loader is sharded (and n_batches recounted) only after the restore.
    if world_size() == 1 and ckpt["n_batches"] != state.n_batches:
        raise CheckpointError(
            f"{path} was saved with {ckpt['n_batches']} batches per epoch, but this data has "
            f"{state.n_batches}: resuming needs the same training data and batch size"
        )
    _check_fingerprint(ckpt, state, cbs, path, strict)
    check_opt_state(state.opt, ckpt["opt"], path)
    model = unwrap(state.model)
    load_model_state(model, ckpt["model"], path)  # checks keys and shapes before loading
    try:
        load_opt_state(state.opt, ckpt["opt"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the optimiser state does not fit this optimiser: {e}") from e
    state.load_state_dict(ckpt["state"])
    state.vals = list(ckpt["state"].get("vals", []))
    rec = cbs.find(Recorder)
    if rec is not None and ckpt.get("recorder") is not None:
        rec.load_state_dict(ckpt["recorder"])
    saved, current = ckpt.get("callbacks") or {}, _callback_states(cbs)
    for key, cb in current.items():
        if key in saved:
            cb.load_state_dict(saved[key])
        else:
            warnings.warn(f"resume: {path} holds no state for callback {key}; it starts afresh",
                          stacklevel=4)
    if ckpt.get("stepper") and callable(getattr(state.stepper, "load_state_dict", None)):
        state.stepper.load_state_dict(ckpt["stepper"])  # e.g. float16's gradient scale
    dl = getattr(state.data, "trn_dl", None)
    saved_loader = ckpt.get("loader")
    if saved_loader is not None and callable(getattr(dl, "load_state_dict", None)):
        dl.load_state_dict(saved_loader)
    elif isinstance(saved_loader, dict) and "generators" in saved_loader and (
            len(saved_loader["generators"]) == len(loader_generators(dl))):  # else warned above
        set_loader_rng_state(dl, saved_loader)
    set_rng_states(ckpt["rng"])
