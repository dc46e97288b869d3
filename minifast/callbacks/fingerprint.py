"""A run's fingerprint: what a checkpoint's run depended on, so that a resume into anything
different is refused (or, when asked, warned about) instead of silently diverging.

It records the training and validation data (loader kind, row count, batch size, a hash of
an `ArrayLoader`'s tensors, the number of a torch DataLoader's generators), `n_epochs`, the
LR schedules (class and settings given at construction) and the optimiser (class and the
names of its hyper-parameters). Every value is plain (strings, numbers, lists), so it saves
into a `weights_only` checkpoint.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import numpy as np
import torch

from ..runtime.rng import loader_generators
from .schedules import LR_Updater

__all__ = ["run_fingerprint", "fingerprint_differences"]

#: Parameter-group keys that choose an implementation, not the algorithm (may differ freely).
_IMPL_KEYS = {"params", "fused", "foreach", "capturable", "differentiable"}
#: Schedule settings fixed at construction (`nb` is left out: it may be derived at train begin).
_SCHEDULE_SETTINGS = ("cycle_len", "cycle_mult", "div", "cut_div", "pct", "moms")
_CHUNK = 1 << 26  # bytes hashed at a time (bounds the host copy of a GPU tensor)

# id(tensor) -> (weakref, version, data_ptr, digest): hashing a big data set once per run
_digests: dict[int, tuple] = {}


def _digest(t: torch.Tensor) -> str:
    """A hash of `t`'s shape, dtype and bytes, cached while the tensor is unchanged."""
    key = (t._version, t.data_ptr())
    hit = _digests.get(id(t))
    if hit is not None and hit[0]() is t and hit[1:3] == key:
        return hit[3]
    h = hashlib.blake2b(f"{tuple(t.shape)}{t.dtype}".encode(), digest_size=16)
    flat = t.detach().reshape(-1).contiguous().view(torch.uint8)
    for start in range(0, flat.numel(), _CHUNK):
        h.update(flat[start:start + _CHUNK].cpu().numpy().data)
    digest, i = h.hexdigest(), id(t)
    _digests[i] = (weakref.ref(t, lambda _: _digests.pop(i, None)), *key, digest)
    return digest


def _loader_print(dl) -> dict[str, Any] | None:
    """What a resume needs unchanged of a loader (None when there is no loader)."""
    if dl is None:
        return None
    out: dict[str, Any] = {"kind": type(dl).__name__}
    dataset = getattr(dl, "dataset", None)
    rows = getattr(dl, "n", None)
    if rows is None and dataset is not None:
        try:
            rows = len(dataset)
        except TypeError:  # an IterableDataset without __len__
            rows = None
    out["rows"] = rows
    out["batch size"] = getattr(dl, "batch_size", None)
    tensors = getattr(dl, "tensors", ())
    if tensors:
        out["hash"] = [_digest(t) for t in tensors]
    gens = loader_generators(dl)
    if gens:
        out["generators"] = len(gens)
    return out


def _schedules(cbs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cb in getattr(cbs, "callbacks", ()):
        if isinstance(cb, LR_Updater):
            name = type(cb).__name__
            key, i = name, 1
            while key in out:
                key, i = f"{name}#{i}", i + 1
            out[key] = {k: _plain(getattr(cb, k)) for k in _SCHEDULE_SETTINGS if hasattr(cb, k)}
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)


def run_fingerprint(state, cbs) -> dict[str, Any]:
    """The fingerprint of the run `state` describes, with its callbacks `cbs`."""
    data, opt = state.data, state.opt
    hypers = sorted(k for k in opt.param_groups[0] if k not in _IMPL_KEYS) if opt.param_groups else []
    fp = {
        "training data": _loader_print(getattr(data, "trn_dl", None)),
        "validation data": _loader_print(getattr(data, "val_dl", None)),
        "n_epochs": int(state.n_epochs),
        "schedules": _schedules(cbs),
        "optimiser": {"class": type(opt).__name__, "hyper-parameters": hypers},
        "steps": {"precision": str(getattr(state.stepper, "precision", None)),
                  "accumulate": int(getattr(state.stepper, "accumulate", 1))},
    }
    val_idxs = getattr(data, "val_idxs", None)
    if val_idxs is not None:
        fp["validation indices"] = _digest(torch.as_tensor(np.asarray(val_idxs)))
    return fp


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _length_key(key: str) -> bool:
    return key == "n_epochs" or key.endswith(".cycle_len")


def fingerprint_differences(saved: dict, now: dict) -> tuple[list[str], list[str]]:
    """What differs between two fingerprints, as `"<item>: <saved> in the checkpoint, <now>
    now"`: `(changes, lengths)`, where `lengths` are only the run's length (`n_epochs`, a
    schedule's `cycle_len`: training on for longer, or stopping sooner)."""
    changes, lengths = [], []
    sa, sb = dict(saved.get("schedules") or {}), dict(now.get("schedules") or {})
    for name in sorted(sa.keys() - sb.keys()):
        changes.append(f"schedules: {name} in the checkpoint, absent now")
    for name in sorted(sb.keys() - sa.keys()):
        changes.append(f"schedules: absent in the checkpoint, {name} now")
    both = sa.keys() & sb.keys()
    a = _flat({**saved, "schedules": {k: sa[k] for k in both}})
    b = _flat({**now, "schedules": {k: sb[k] for k in both}})
    for k in list(a) + [k for k in b if k not in a]:
        x, y = a.get(k, "absent"), b.get(k, "absent")
        if _norm(x) == _norm(y):
            continue
        if k.endswith("hash") or k == "validation indices":
            x, y = "one content", "another"  # hex strings say nothing to a reader
        (lengths if _length_key(k) and "absent" not in (x, y) else changes).append(
            f"{k}: {x} in the checkpoint, {y} now")
    return changes, lengths


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v
