"""Export for serving: one self-contained file that predicts without the training data, the
model's source code or any unpickling.

`export_model` traces the model's `forward` with `torch.export` (the batch dimension left
dynamic, everything else fixed by an example batch) and writes the program with a JSON header
(format, version, each input's dtype and per-row shape, and the caller's `info`) into one file,
atomically. `read_export` reads it back as an `ExportedLearner`, whose `predict` takes arrays
as `Learner.predict_array` does and gives the same numbers. `torch.export.load` rebuilds the
program from its serialised graph and tensors; it never unpickles Python objects.

`Learner.export(path)` is the usual way in, `minifast.load_learner(path)` the way out.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from attrs import define
from torch import nn

from .runtime.modules import eval_mode, unwrap
from .saving import CheckpointError, atomic_write

__all__ = ["EXPORT_FORMAT", "ExportedLearner", "export_model", "read_export"]

#: The `format` field of an export file's header (the JSON stored beside the program).
EXPORT_FORMAT = "minifast.export"
_VERSION = 1
_HEADER = "minifast.json"
_CHUNK = 1 << 16


def _example(x: torch.Tensor, i: int) -> torch.Tensor:
    """Input `i` of the example batch as a CPU batch of two rows (torch.export fixes a batch
    dimension of size 1 to 1, so one row would make the file accept only one row)."""
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or len(x) == 0:
        raise ValueError(f"export: input {i} of the example batch must be a tensor with a batch "
                         f"dimension, got {type(x).__name__}"
                         f"{'' if not isinstance(x, torch.Tensor) else f' of shape {tuple(x.shape)}'}")
    return x[:1].detach().cpu().repeat(2, *([1] * (x.ndim - 1)))


def export_model(model: nn.Module, example_inputs: Sequence[torch.Tensor], path: str | os.PathLike,
                 info: dict | None = None) -> Path:
    """Write `model` (its eval-mode `forward`, on the CPU) to `path` as one export file, traced
    on `example_inputs` (one batch, one tensor per `forward` argument: only their dtypes and
    per-row shapes matter). `info` is any JSON-able dict stored with it (`ExportedLearner.info`).
    A model `torch.export` cannot trace raises a ValueError saying why. Returns `path`."""
    xs = tuple(_example(x, i) for i, x in enumerate(example_inputs))
    try:
        header = json.dumps({"format": EXPORT_FORMAT, "version": _VERSION, "info": info or {},
                             "inputs": [{"dtype": str(x.dtype).removeprefix("torch."),
                                         "shape": list(x.shape[1:])} for x in xs]})
    except TypeError as e:
        raise ValueError(f"export: info must be JSON-able (str, numbers, lists, dicts): {e}") from e
    cpu = copy.deepcopy(unwrap(model)).cpu()
    batch = torch.export.Dim("batch")
    try:
        with eval_mode(cpu):
            program = torch.export.export(cpu, xs, dynamic_shapes=tuple({0: batch} for _ in xs))
    except Exception as e:  # torch.export raises many types; all mean the same to the user
        raise ValueError(
            f"export: torch.export could not trace {type(cpu).__name__}.forward on inputs of "
            f"shapes {[tuple(x.shape) for x in xs]}: {type(e).__name__}: {str(e).splitlines()[0]}"
            " (data-dependent Python control flow and non-tensor outputs cannot be exported; "
            "see torch.export's docs)") from e
    return atomic_write(path, lambda f: torch.export.save(program, f,
                                                          extra_files={_HEADER: header}))


@define
class ExportedLearner:
    """A model loaded from an export file (`minifast.load_learner`, `read_export`): `predict` like the learner's
    `predict_array`, with no training data and no model class needed. `info` is what the
    exporter stored (e.g. `Learner.export` stores the model's class name)."""

    program: torch.export.ExportedProgram
    inputs: list[dict]
    info: dict
    path: Path

    def predict(self, *arrays) -> np.ndarray:
        """The model's output for input array(s) (numpy arrays, tensors or lists; one per model
        input, rows first), as a float numpy array, computed in chunks of rows on the CPU."""
        if len(arrays) != len(self.inputs):
            raise ValueError(f"predict: the exported model takes {len(self.inputs)} input(s), "
                             f"got {len(arrays)}")
        xs = [self._tensor(a, i) for i, a in enumerate(arrays)]
        if len({len(x) for x in xs}) > 1:
            raise ValueError(f"predict: the inputs have different numbers of rows "
                             f"{[len(x) for x in xs]}")
        fn = self.program.module()
        with torch.no_grad():
            out = [fn(*(x[s:s + _CHUNK] for x in xs)) for s in range(0, len(xs[0]), _CHUNK)]
        return torch.cat(out).float().numpy() if out else np.zeros((0,), np.float32)

    def _tensor(self, a, i: int) -> torch.Tensor:
        spec = self.inputs[i]
        dtype = getattr(torch, spec["dtype"])
        x = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).to("cpu", dtype)
        if x.ndim == 0 or list(x.shape[1:]) != spec["shape"]:
            want = ", ".join(["n", *map(str, spec["shape"])])
            raise ValueError(f"predict: input {i} must have shape [{want}] (rows first), got "
                             f"{tuple(x.shape)}")
        return x


def read_export(path: str | os.PathLike) -> ExportedLearner:
    """Read an export file written by `Learner.export`/`export_model` as an `ExportedLearner`
    that predicts the same numbers (`minifast.load_learner` wraps it for the applications).
    A missing file, or one that is not an export file, raises a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_learner: no export file {path}")
    extra = {_HEADER: ""}
    try:
        with open(path, "rb") as f:  # a file object: torch reads its archive without guessing
            program = torch.export.load(f, extra_files=extra)
        header = json.loads(extra[_HEADER])
    except Exception as e:  # a zip of something else, truncated, or no header
        raise CheckpointError(f"load_learner: {path} is not a minifast export file (write one "
                              f"with learn.export(path)): {type(e).__name__}: {e}") from e
    if header.get("format") != EXPORT_FORMAT or header.get("version", 0) > _VERSION:
        raise CheckpointError(f"load_learner: {path} has format {header.get('format')!r} "
                              f"version {header.get('version')!r}; this minifast reads "
                              f"{EXPORT_FORMAT!r} up to version {_VERSION}")
    return ExportedLearner(program, header["inputs"], header["info"], path)
