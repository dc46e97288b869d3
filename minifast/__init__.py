"""minifast: a small, fast, fastai-style training loop for PyTorch, with callbacks."""

from .callbacks import (
    EVENTS,
    Callback,
    CallbackHandler,
    CSVLogger,
    EarlyStopping,
    Printer,
    ProgressBar,
    Recorder,
    SaveBestModel,
    StopTraining,
)
from .checkpoint import Checkpoint, find_checkpoints, load_checkpoint, restore_checkpoint
from .data import (
    ArrayLoader,
    ColumnarModelData,
    ModelData,
    check_batch_size,
    check_val_idxs,
    get_cv_idxs,
    split_by_idx,
)
from .denormal import FlushState, denormals_flushed, flush_denormal, set_flush_denormal
from .device import T, as_tensor, default_device, to_device
from .distributed import (
    destroy_distributed,
    distributed_session,
    init_distributed,
    is_main_process,
    unwrap,
)
from .fit import FitResult, fit, predict, validate
from .fused import build_optimizer, fused_supported
from .learner import Learner, default_crit
from .malloc import keep_freed_memory, release_freed_memory, set_malloc_thresholds
from .optim import get_lrs, get_moms, load_opt_state, set_lrs, set_moms, set_wds
from .plots import plot_loss, plot_lr, plot_lr_find
from .saving import CheckpointError, atomic_save, safe_load
from .schedules import (
    CircularLR,
    CircularLR_beta,
    ConstantLR,
    CosAnneal,
    LR_Finder,
    LR_Updater,
    OneCycle,
    lr_suggestion,
    sum_geom,
)
from .sparse import LazyAdam, has_sparse_embeddings, sparse_embeddings
from .state import FitState
from .stepper import NonFiniteLossError, Stepper

__version__ = "0.1.0"

__all__ = [
    "EVENTS", "Callback", "CallbackHandler", "CSVLogger", "EarlyStopping", "Printer",
    "ProgressBar", "Recorder", "SaveBestModel", "StopTraining",
    "ArrayLoader", "ColumnarModelData", "ModelData", "check_batch_size", "check_val_idxs", "get_cv_idxs",
    "split_by_idx", "T", "as_tensor", "default_device", "to_device", "FitResult", "fit", "predict",
    "validate", "get_lrs", "get_moms", "set_lrs", "set_moms", "set_wds", "load_opt_state", "CheckpointError",
    "Checkpoint", "find_checkpoints", "load_checkpoint", "restore_checkpoint",
    "atomic_save", "safe_load", "FitState", "NonFiniteLossError", "Stepper",
    "Learner", "default_crit", "plot_loss", "plot_lr", "plot_lr_find", "CircularLR",
    "CircularLR_beta", "ConstantLR", "CosAnneal", "LR_Finder", "LR_Updater", "OneCycle",
    "lr_suggestion", "sum_geom",
    "distributed_session", "init_distributed", "destroy_distributed", "is_main_process", "unwrap",
    "FlushState", "denormals_flushed", "flush_denormal", "set_flush_denormal",
    "keep_freed_memory", "release_freed_memory", "set_malloc_thresholds",
    "build_optimizer", "fused_supported", "LazyAdam", "has_sparse_embeddings", "sparse_embeddings",
]
