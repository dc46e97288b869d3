"""Data: validation splits, a loader that batches whole tensors by index, and ModelData.

`ArrayLoader` never touches single rows from Python: an epoch is one permutation of the row
indices, and a batch is `tensor[perm[i:i+bs]]` for each column tensor, which is what makes
it much cheaper than `torch.utils.data.DataLoader`'s per-row collate on tabular data (see the
docs' Performance page).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attrs import define, field

from .checks import check_batch_size
from .runtime.device import as_tensor, default_device, gather_rows, to_device
from .runtime.rng import get_rng_states, loader_untouched, set_rng_states

__all__ = [
    "get_cv_idxs",
    "split_by_idx",
    "check_val_idxs",
    "check_batch_size",
    "ArrayLoader",
    "ModelData",
    "ColumnarModelData",
    "peek_batch",
    "loader_targets",
]


def get_cv_idxs(n: int, cv_idx: int = 0, val_pct: float = 0.2, seed: int = 42) -> np.ndarray:
    """Validation indices exactly as fastai v0.7 chose them, without touching numpy's global RNG.

    v0.7 ran `np.random.seed(seed); np.random.permutation(n)` and took the `cv_idx`-th slice of
    `int(val_pct*n)` indices; a private `RandomState(seed)` gives the same permutation.
    """
    if n <= 0:
        raise ValueError(f"get_cv_idxs: n must be positive, got {n}")
    if not 0 < val_pct < 1:
        raise ValueError(f"get_cv_idxs: val_pct must be in (0, 1), got {val_pct}")
    n_val = int(val_pct * n)
    idxs = np.random.RandomState(seed).permutation(n)
    return idxs[cv_idx * n_val : (cv_idx + 1) * n_val]


def check_val_idxs(val_idxs, n: int) -> np.ndarray:
    """Validate validation indices against a data set of `n` rows; return them as int64."""
    idxs = np.asarray(val_idxs)
    if idxs.ndim != 1:
        raise ValueError(f"val_idxs must be one-dimensional, got shape {idxs.shape}")
    if idxs.size and idxs.dtype.kind not in "iu":
        raise ValueError(f"val_idxs must be integers, got dtype {idxs.dtype}")
    idxs = idxs.astype(np.int64, copy=False)
    if idxs.size == 0:
        raise ValueError("val_idxs is empty: the validation set would have no rows")
    bad = idxs[(idxs < 0) | (idxs >= n)]
    if bad.size:
        raise ValueError(
            f"val_idxs has {bad.size} value(s) out of range for {n} rows (valid: 0..{n - 1}); "
            f"first: {bad[0]}"
        )
    uniq, counts = np.unique(idxs, return_counts=True)
    if uniq.size != idxs.size:
        raise ValueError(
            f"val_idxs has {idxs.size - uniq.size} duplicate(s); first duplicated index: "
            f"{uniq[counts > 1][0]}"
        )
    if uniq.size >= n:
        raise ValueError(f"val_idxs covers all {n} rows: nothing would be left to train on")
    return idxs


def split_by_idx(idxs, *a):
    """Split each array/DataFrame in `a` into `(rows at idxs, the other rows)`, as fastai v0.7."""
    if not a:
        return []
    n = len(a[0])
    idxs = check_val_idxs(idxs, n)
    mask = np.zeros(n, dtype=bool)
    mask[idxs] = True
    out = []
    for o in a:
        if len(o) != n:
            raise ValueError(f"split_by_idx: arrays have different lengths ({len(o)} vs {n})")
        if hasattr(o, "iloc"):
            out.append((o.iloc[mask], o.iloc[~mask]))
        else:
            out.append((o[mask], o[~mask]))
    return out


def _is_map_dataset(a) -> bool:
    return (
        isinstance(a, torch.utils.data.Dataset)
        and not isinstance(a, torch.utils.data.TensorDataset)
        and hasattr(a, "__getitem__")
    )


class ArrayLoader:
    """Batches whole tensors by indexing them with slices of a (shuffled) row permutation.

    `ArrayLoader(x1, x2, ..., y, batch_size=64, shuffle=True, seed=0)` yields tuples
    `(x1[idx], x2[idx], ..., y[idx])`. Inputs may be tensors, numpy arrays, pandas columns or
    frames, or a `TensorDataset`; any other map-style `Dataset` is supported through a slower
    fallback that collates single items. With `shuffle`, epoch `e` uses the permutation seeded
    by `(seed, e)`: a pure function of the epoch, so runs are reproducible and resumable.
    `world_size > 1` shards each global batch of `batch_size * world_size` rows across ranks.

    Batches are made on the host and yielded on `device` (default: `default_device()`). For a
    CUDA device each batch is gathered straight into pinned (page-locked) host memory
    (`pin_memory` is then True), so its `non_blocking` copy overlaps with the GPU's work.
    """

    def __init__(
        self,
        *arrays,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not arrays:
            raise ValueError("ArrayLoader needs at least one array")
        batch_size = check_batch_size(batch_size, "batch_size")
        if len(arrays) == 1 and isinstance(arrays[0], torch.utils.data.TensorDataset):
            arrays = tuple(arrays[0].tensors)
        self.dataset = arrays[0] if len(arrays) == 1 and _is_map_dataset(arrays[0]) else None
        self.tensors: tuple[torch.Tensor, ...] = ()
        if self.dataset is None:
            self.tensors = tuple(as_tensor(a) for a in arrays)
            lens = {len(t) for t in self.tensors}
            if len(lens) != 1:
                raise ValueError(f"ArrayLoader: arrays have different lengths {sorted(lens)}")
        self.n = len(self.dataset) if self.dataset is not None else len(self.tensors[0])
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        # Without a seed, draw one from torch's global RNG, so torch.manual_seed still governs.
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        self.device = default_device() if device is None else torch.device(device)
        self.pin_memory = self.device.type == "cuda"
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's permutation the next iteration uses."""
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """The row order of `epoch` (default: the current one): a permutation when shuffling."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(self.n, generator=g)

    @property
    def global_batch_size(self) -> int:
        """Rows consumed per step across all ranks."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.global_batch_size)
        # Sharded, a leftover of fewer rows than ranks joins the last full batch instead of
        # giving some rank an empty batch (see `bounds`).
        return full + int(rest > 0 and not self.drop_last and (rest >= self.world_size or full == 0))

    def bounds(self, i: int, rank: int | None = None) -> tuple[int, int]:
        """Positions `[start, stop)` in the epoch order of batch `i` of `rank` (default: ours).

        Global batch `i` holds rows `[i*B, (i+1)*B)` of the order, `B = batch_size*world_size`;
        rank `r` takes its `r`-th contiguous slice. The last global batch (the `rest` rows
        left over, plus a full batch when `rest < world_size`) is split as evenly as possible,
        shard sizes differing by at most one row: every rank takes the same number of steps,
        none gets an empty batch, and each row is used exactly once per epoch across ranks.
        """
        rank = self.rank if rank is None else rank
        gbs, last = self.global_batch_size, len(self) - 1
        lo = i * gbs
        size = self.n - lo if i == last and not self.drop_last else gbs
        return lo + rank * size // self.world_size, lo + (rank + 1) * size // self.world_size

    def __iter__(self) -> Iterator[tuple]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[tuple]:
        """Iterate the current epoch from batch `start` (a resumed run skips without work)."""
        perm = self.order()
        self.epoch += 1
        dev, n, pin = self.device, len(self), self.pin_memory
        if self.world_size == 1:  # all the index slices as views in one call
            parts = perm.split(self.batch_size)[start:n]
        else:
            parts = (perm[slice(*self.bounds(i))] for i in range(start, n))
        # index_select is cheaper per column than t[idx]; a zero-width column (e.g. conts
        # of a model with none) needs no gather at all: a [rows, 0] view of it is the batch.
        cols = [(t, t.ndim == 2 and t.shape[1] == 0) for t in self.tensors]
        for idx in parts:
            if self.dataset is not None:
                batch = self._collate(idx)
                if pin:
                    batch = tuple(b.pin_memory() if isinstance(b, torch.Tensor) else b for b in batch)
            else:
                m = idx.shape[0]
                if pin:  # gathered straight into page-locked memory, for a copy that overlaps
                    batch = tuple([t[:m] if e else gather_rows(t, idx, True) for t, e in cols])
                else:
                    batch = tuple([t[:m] if e else t.index_select(0, idx) for t, e in cols])
            yield batch if dev.type == "cpu" else to_device(batch, dev)

    def _collate(self, idx: torch.Tensor) -> tuple:
        ds = self.dataset
        items = ds.__getitems__(idx.tolist()) if hasattr(ds, "__getitems__") else [
            ds[i] for i in idx.tolist()
        ]
        batch = torch.utils.data.default_collate(items)
        return tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)

    def state_dict(self) -> dict[str, int]:
        """What resuming needs: the seed and the epoch counter."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore `state_dict()`."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def __repr__(self) -> str:
        return (
            f"ArrayLoader(n={self.n}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"batches={len(self)})"
        )


@define
class ModelData:
    """The loaders of one problem: training, validation and (optionally) test.

    Any loader works: an `ArrayLoader`, a `torch.utils.data.DataLoader` over any `Dataset`,
    or any iterable of batches. Training and validation batches are `(*inputs, target)`.
    Test batches may be the inputs only, `(*inputs,)` (or a bare tensor for one input), or
    carry a target like the others: `Learner.predict(is_test=True)` tells them apart by their
    length against the training batches' (see `minifast.core.loop.predict`).
    """

    path: Path = field(converter=Path)
    trn_dl: Any
    val_dl: Any
    test_dl: Any = None
    _y_cache: dict = field(factory=dict, init=False, repr=False, eq=False)

    @property
    def trn_ds(self):
        """The training loader's data (tensors or dataset)."""
        return getattr(self.trn_dl, "dataset", None) or getattr(self.trn_dl, "tensors", None)

    @property
    def trn_y(self) -> np.ndarray:
        """Training targets as a numpy array, in the order of the training set (see
        `loader_targets`; read once per loader, then cached)."""
        return self._targets("trn", self.trn_dl)

    @property
    def val_y(self) -> np.ndarray:
        """Validation targets as a numpy array, in the order `predict()` gives its rows (see
        `loader_targets`; read once per loader, then cached)."""
        return self._targets("val", self.val_dl)

    def _targets(self, which: str, dl) -> np.ndarray:
        if dl is None:
            raise ValueError(f"this ModelData has no {which}_dl to take targets from")
        cached = self._y_cache.get(which)
        if cached is None or cached[0] is not dl:  # a loader replaced since: read it again
            cached = self._y_cache[which] = (dl, loader_targets(dl))
        return cached[1]


def _is_target_batch(batch) -> bool:
    return isinstance(batch, (list, tuple)) and len(batch) >= 2


def _target_of(batch, where: str) -> torch.Tensor:
    if not _is_target_batch(batch):
        n = len(batch) if isinstance(batch, (list, tuple)) else None
        raise ValueError(
            f"{where}: a batch is a {type(batch).__name__}"
            f"{'' if n is None else f' of {n} element(s)'}, not (*inputs, target): there is no "
            "target to take; make the Dataset return (input, ..., target) tuples")
    y = batch[-1]
    return y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))


def _in_order(dl):
    """A loader over the same rows as `dl`, in a fixed order: a shuffling torch DataLoader's
    rows in the order of its data set (or of its `SubsetRandomSampler`'s indices), a
    shuffling `ArrayLoader`'s in the order of its arrays; any other loader as it is."""
    DL, sampler = torch.utils.data.DataLoader, getattr(dl, "sampler", None)
    if isinstance(dl, DL) and (dl.batch_sampler is None
                               or type(dl.batch_sampler) is torch.utils.data.BatchSampler):
        order = None
        if isinstance(sampler, torch.utils.data.RandomSampler) and not sampler.replacement \
                and sampler.num_samples == len(dl.dataset):
            order = range(len(dl.dataset))
        elif isinstance(sampler, torch.utils.data.SubsetRandomSampler):
            order = list(sampler.indices)
        if order is not None:  # its own generator, so the global RNG is not drawn from
            return DL(dl.dataset, batch_size=dl.batch_size, sampler=order, collate_fn=dl.collate_fn,
                      generator=torch.Generator().manual_seed(0))
    if isinstance(dl, ArrayLoader) and dl.shuffle:
        return ArrayLoader(dl.dataset, batch_size=dl.batch_size, seed=0, device="cpu")
    return dl


def loader_targets(dl) -> np.ndarray:
    """Every target `dl` yields (the last element of each `(*inputs, target)` batch), in
    order, as one numpy array: an `ArrayLoader`'s last array; any other loader is iterated
    once (a shuffling one in its data set's order, see `_in_order`), with every global RNG,
    the loader's generators and its `state_dict` put back after, so training is not disturbed."""
    tensors = getattr(dl, "tensors", None)
    if tensors:
        return tensors[-1].cpu().numpy()
    with loader_untouched(dl):  # around _in_order too: a new ArrayLoader may draw a seed
        ys = [_target_of(b, "loader_targets").detach().cpu() for b in _in_order(dl)]
    if not ys:
        return np.zeros((0,), np.float32)
    return (torch.stack(ys) if ys[0].ndim == 0 else torch.cat(ys)).numpy()


def peek_batch(dl) -> tuple | None:
    """A batch of one row of what `dl` yields, without iterating it: an `ArrayLoader`'s
    first row of each array, or item 0 of a map-style `Dataset` (`dl.dataset`) collated as
    the loader would (every global RNG put back after, in case the item draws from one). None
    when `dl` has neither (e.g. an `IterableDataset`, or a plain iterable of batches)."""
    tensors = getattr(dl, "tensors", None)
    if tensors:
        return tuple(t[:1] for t in tensors)
    ds = getattr(dl, "dataset", None)
    if ds is None or isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__getitem__"):
        return None
    try:
        if len(ds) == 0:
            return None
    except TypeError:  # a Dataset without __len__
        return None
    collate = getattr(dl, "collate_fn", None) or torch.utils.data.default_collate
    batched = not (isinstance(dl, torch.utils.data.DataLoader) and dl.batch_sampler is None)
    rng = get_rng_states()
    try:
        item = ds[0]
        batch = collate([item]) if batched else collate(item)
    finally:
        set_rng_states(rng)
    return tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)


def _cats_conts(df, cat_flds: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [c for c in cat_flds if c not in df.columns]
    if missing:
        raise ValueError(f"categorical column(s) {missing} not in the frame; it has {list(df.columns)}")
    cont_flds = [c for c in df.columns if c not in set(cat_flds)]
    raw = [c for c in cat_flds if df[c].dtype.kind not in "iu"]
    if raw:
        c = raw[0]
        raise ValueError(
            f"categorical column(s) {raw} must hold integer codes 0..n-1 (column {c!r} has "
            f"dtype {df[c].dtype}): map the values to codes first, e.g. "
            f"`df[{c!r}] = df[{c!r}].astype('category').cat.codes` (and for a test frame, the "
            f"training categories: `pd.Categorical(test_df[{c!r}], "
            f"categories=df[{c!r}].astype('category').cat.categories).codes`)"
        )
    cats = df[list(cat_flds)].to_numpy()
    conts = df[cont_flds].to_numpy(dtype=np.float32) if cont_flds else np.zeros((len(df), 0), np.float32)
    return as_tensor(cats.astype(np.int64)), as_tensor(conts)


def _targets(y) -> torch.Tensor:
    y = as_tensor(y).float()
    return y[:, None] if y.ndim == 1 else y


class ColumnarModelData(ModelData):
    """ModelData over columns, yielding `(cats, conts, y)` batches.

    cats: int64 `[bs, n_cat]`; conts: float32 `[bs, n_cont]` (width 0 when none); y: float32
    `[bs, 1]`. Training batches are shuffled; validation batches are `2*bs`, in order. Test
    batches, when there is a test set, are `(cats, conts)`: inputs only.
    """

    @classmethod
    def from_arrays(
        cls,
        path,
        val_idxs,
        cats,
        y,
        bs: int = 64,
        conts=None,
        test_cats=None,
        test_conts=None,
        seed: int | None = None,
    ) -> ColumnarModelData:
        """Build from a cats array `[n, n_cat]`, optional conts `[n, n_cont]` and targets `y`."""
        cats = as_tensor(cats)
        if cats.ndim == 1:
            cats = cats[:, None]
        conts = torch.zeros(len(cats), 0) if conts is None else as_tensor(conts).float()
        y = _targets(y)
        idxs = torch.from_numpy(check_val_idxs(val_idxs, len(cats)))
        mask = torch.zeros(len(cats), dtype=torch.bool)
        mask[idxs] = True
        trn = [t[~mask] for t in (cats, conts, y)]
        val = [t[mask] for t in (cats, conts, y)]
        test = None
        if test_cats is not None:
            tc = as_tensor(test_cats)
            tc = tc[:, None] if tc.ndim == 1 else tc
            tn = torch.zeros(len(tc), 0) if test_conts is None else as_tensor(test_conts).float()
            test = (tc, tn)  # inputs only: a test set has no targets
        return cls._from_tensors(path, trn, val, test, bs, seed)

    @classmethod
    def from_data_frame(
        cls, path, val_idxs, df, y, cat_flds: Sequence[str], bs: int = 64, test_df=None,
        seed: int | None = None,
    ) -> ColumnarModelData:
        """fastai v0.7's constructor: `df` holds the inputs, `cat_flds` names the integer-coded
        categorical columns (every other column is continuous), `y` the targets."""
        if len(y) != len(df):
            raise ValueError(f"y has {len(y)} rows but the frame has {len(df)}")
        cats, conts = _cats_conts(df, cat_flds)
        test = None
        if test_df is not None:
            tc, tn = _cats_conts(test_df, cat_flds)
            test = (tc, tn)
        return cls.from_arrays(
            path, val_idxs, cats, y, bs, conts=conts,
            test_cats=None if test is None else test[0],
            test_conts=None if test is None else test[1], seed=seed,
        )

    @classmethod
    def _from_tensors(cls, path, trn, val, test, bs, seed) -> ColumnarModelData:
        bs = check_batch_size(bs)
        trn_dl = ArrayLoader(*trn, batch_size=bs, shuffle=True, seed=seed)
        val_dl = ArrayLoader(*val, batch_size=bs * 2)
        test_dl = None if test is None else ArrayLoader(*test, batch_size=bs * 2)
        return cls(path, trn_dl, val_dl, test_dl)
