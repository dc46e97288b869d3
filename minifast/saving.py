"""Saving and loading: atomic writes, and loads that cannot run code and fail clearly."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_save", "atomic_write", "temp_name_pattern", "safe_load", "load_model_state", "check_opt_state",
           "strip_ddp_prefix", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, truncated, corrupt or does not match the model."""


#: The wrapper of a file written with `atomic_save(..., sealed=True)`.
SEALED = "minifast.sealed"


def temp_name_pattern(name: str) -> str:
    """The glob pattern of the temp files `atomic_save`/`atomic_write` write on the way to file `name`."""
    return f".{name}.*.tmp"


def _seal(obj: Any) -> dict:
    """`obj` serialized, with the sha256 of those bytes: `safe_load` checks it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = torch.frombuffer(buf.getbuffer(), dtype=torch.uint8)
    return {"format": SEALED, "checksum": "sha256:" + hashlib.sha256(buf.getbuffer()).hexdigest(),
            "payload": payload}


def atomic_save(obj: Any, path: str | os.PathLike, sealed: bool = False) -> Path:
    """`torch.save` to a temp file beside `path`, fsync, then rename over `path`
    (`atomic_write`).

    A crash mid-write leaves the previous file intact: readers see the old file or the new
    one, never half of one. `sealed` stores a checksum of the content with it, which
    `safe_load` verifies (a damaged file is refused, not loaded). A full disk raises an
    `OSError` (errno ENOSPC) naming the file and the free space, however torch reported it.
    """
    if sealed:
        obj = _seal(obj)
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temp file beside `path`, fsync, then rename it over `path`: any
    writer (`torch.save`, `torch.export.save`, ...) gets `atomic_save`'s guarantees (the old
    file intact on a crash, a clear ENOSPC error). Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(e):
            free = shutil.disk_usage(path.parent).free
            raise OSError(errno.ENOSPC, f"cannot write {path}: no space left on device "
                          f"({free / 2**20:.1f} MiB free in {path.parent}); the file it would "
                          f"replace and every other one are unchanged: free some space and "
                          f"try again") from e
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _disk_full(e: BaseException) -> bool:
    """Whether `e`, or an error it was raised from, is a full disk (torch wraps it in a
    RuntimeError that names it only in its cause, or in its text)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def safe_load(path: str | os.PathLike, map_location=None) -> Any:
    """`torch.load(weights_only=True)`, with a clear `CheckpointError` naming the file.

    `weights_only=True` means a file from a stranger cannot run code when loaded. A file
    written with `atomic_save(..., sealed=True)` is checked against its checksum first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint/model file: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about a raw pickle's protocol, then fails
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=map_location, weights_only=True)
        if isinstance(obj, dict) and obj.get("format") == SEALED:
            obj = _unseal(obj, path, map_location)
        return obj
    except CheckpointError:
        raise
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"cannot load {path} ({size} bytes): the file is truncated, corrupt, or holds "
            f"objects other than tensors and plain containers ({type(e).__name__}: "
            f"{_load_reason(e) or _file_kind(path)})"
        ) from e


def _file_kind(path: Path) -> str:
    """Why a file torch gave no reason for was refused: what kind of file it is."""
    if zipfile.is_zipfile(path):
        return "a torch.save archive that torch could not read"
    with path.open("rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":
        return ("a raw pickle (pickle.dump), not a torch.save file: a pickle can run code when "
                "loaded, so it is refused; save tensors and plain containers with torch.save or "
                "learn.save")
    return "not a torch.save file"


def _unseal(obj: dict, path: Path, map_location) -> Any:
    payload, checksum = obj.get("payload"), obj.get("checksum")
    if not isinstance(payload, torch.Tensor) or not isinstance(checksum, str):
        raise CheckpointError(f"cannot load {path}: its sealed wrapper is damaged")
    data = payload.cpu().numpy()
    if "sha256:" + hashlib.sha256(data).hexdigest() != checksum:
        raise CheckpointError(
            f"cannot load {path} ({path.stat().st_size} bytes): its content does not match the "
            f"checksum stored with it, so the file is damaged (bits changed on disk or in a "
            f"copy); it is not loaded")
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def _load_reason(e: BaseException) -> str:
    """The informative line of a torch.load error (weights_only errors put it mid-text)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:  # e.g. "Unsupported global: GLOBAL pkg.Class was not an allowed global"
        if "GLOBAL" in ln or "WeightsUnpickler error:" in ln:
            return ln.split("WeightsUnpickler error:", 1)[-1].split(". Please use")[0].strip()
    if not lines:
        return ""
    return lines[0].split(". ")[0] if len(lines[0]) > 120 else lines[0]  # torch's are wordy


def load_model_state(model: torch.nn.Module, state: dict, source: str | os.PathLike) -> None:
    """`model.load_state_dict(state)` with an error that names missing/unexpected/mismatched keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append("shape mismatches " + "; ".join(shapes))
        raise CheckpointError(f"{source} does not match the model: " + ", ".join(parts))
    model.load_state_dict(state)


def strip_ddp_prefix(state: dict, own: dict) -> dict:
    """`state` without the `module.` key prefix of a DistributedDataParallel model's
    `state_dict`, when the model it is loaded into (`own` keys) has none."""
    if state and all(k.startswith("module.") for k in state) and not any(
            k.startswith("module.") for k in own):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def check_opt_state(opt: torch.optim.Optimizer, sd, source: str | os.PathLike,
                    hint: str = "") -> None:
    """Refuse an optimiser `state_dict` whose parameter groups do not match `opt`'s, with a
    `CheckpointError` naming `source` and both groupings (and `hint`, what to do instead)."""
    groups = sd.get("param_groups") if isinstance(sd, dict) else None
    if not isinstance(groups, list):
        raise CheckpointError(f"{source}: the optimiser state is malformed")
    ours = [len(g["params"]) for g in opt.param_groups]
    theirs = [len(g.get("params", ())) for g in groups]
    if ours != theirs:
        raise CheckpointError(
            f"{source}: the optimiser state has {len(theirs)} parameter group(s) of sizes "
            f"{theirs}, but this optimiser has {len(ours)} of sizes {ours}{hint}"
        )
    if groups and isinstance(groups[0], dict):
        _check_hyper_names(opt, groups[0], source, hint)


def _check_hyper_names(opt: torch.optim.Optimizer, saved: dict, source, hint: str) -> None:
    """Refuse a parameter group saved by another kind of optimiser: it lacks hyper-parameters
    this one needs (torch would fail in its `step` with a KeyError) and has some this one
    does not know. Only one of the two is a version difference (a newer or older torch),
    which its `load_state_dict` handles."""
    own = {k for g in opt.param_groups for k in g} - {"params"}
    theirs = set(saved) - {"params"}
    missing, extra = sorted(own - theirs), sorted(theirs - own)
    if missing and extra:
        raise CheckpointError(
            f"{source}: the optimiser state was saved by another kind of optimiser than this "
            f"{type(opt).__name__}: it has hyper-parameters {extra} that this one does not "
            f"know, and lacks {missing} that this one needs{hint}"
        )
