"""minifast: a small, fast, fastai-style training loop for PyTorch, with callbacks.

The package is built in floors, each importing only the floors below it (the docs' API page
lists them): leaves (`checks`, `curves`, `saving`, `runtime`), the core (`core`, `optim`,
`data`, `plots`), `callbacks`, the DDP session (`distributed`), `fit`, the `Learner`, and the
collaborative-filtering application (`minifast.collab`).
"""

from .callbacks import (
    SWA,
    CircularLR,
    CircularLR_beta,
    ConstantLR,
    CosAnneal,
    CSVLogger,
    EarlyStopping,
    Logger,
    LR_Finder,
    LR_Updater,
    MemoryLogger,
    OneCycle,
    Printer,
    ProgressBar,
    Recorder,
    ReduceLROnPlateau,
    SaveBestModel,
    TensorBoardLogger,
    fix_batchnorm,
)
from .callbacks.checkpoint import Checkpoint, find_checkpoints, load_checkpoint, restore_checkpoint
from .core import (
    EVENTS,
    Callback,
    CallbackHandler,
    FitState,
    NonFiniteLossError,
    Stepper,
    StopTraining,
    predict,
    validate,
)
from .curves import lr_suggestion, sum_geom
from .data import (
    ArrayLoader,
    ColumnarModelData,
    ModelData,
    check_batch_size,
    check_val_idxs,
    get_cv_idxs,
    split_by_idx,
)
from .export import ExportedLearner, export_model, read_export
from .learner import Learner, default_crit
from .metrics import accuracy, f1, fbeta, mae, r2, rmse
from .optim import (
    LazyAdam,
    build_optimizer,
    fused_supported,
    get_lrs,
    get_moms,
    has_sparse_embeddings,
    load_opt_state,
    prefer_sparse,
    set_lrs,
    set_moms,
    set_wds,
    sparse_embeddings,
)
from .plots import plot_loss, plot_lr, plot_lr_find
from .runtime import (
    FlushState,
    T,
    as_tensor,
    default_device,
    denormals_flushed,
    destroy_distributed,
    distributed_session,
    flush_denormal,
    init_distributed,
    is_main_process,
    keep_freed_memory,
    release_freed_memory,
    set_flush_denormal,
    set_malloc_thresholds,
    set_seed,
    to_device,
    unwrap,
)
from .saving import CheckpointError, atomic_save, safe_load
from .serving import load_learner
from .training import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "EVENTS", "Callback", "CallbackHandler", "CSVLogger", "EarlyStopping", "Printer",
    "ProgressBar", "Recorder", "ReduceLROnPlateau", "SaveBestModel", "StopTraining",
    "SWA", "fix_batchnorm",
    "ArrayLoader", "ColumnarModelData", "ModelData", "check_batch_size", "check_val_idxs", "get_cv_idxs",
    "split_by_idx", "T", "as_tensor", "default_device", "to_device", "FitResult", "fit", "predict",
    "validate", "get_lrs", "get_moms", "set_lrs", "set_moms", "set_wds", "load_opt_state", "CheckpointError",
    "Checkpoint", "find_checkpoints", "load_checkpoint", "restore_checkpoint",
    "atomic_save", "safe_load", "FitState", "NonFiniteLossError", "Stepper",
    "Learner", "default_crit", "ExportedLearner", "export_model", "read_export", "load_learner", "plot_loss", "plot_lr", "plot_lr_find", "CircularLR",
    "CircularLR_beta", "ConstantLR", "CosAnneal", "LR_Finder", "LR_Updater", "OneCycle",
    "lr_suggestion", "sum_geom", "Logger", "MemoryLogger", "TensorBoardLogger",
    "distributed_session", "init_distributed", "destroy_distributed", "is_main_process", "unwrap",
    "FlushState", "denormals_flushed", "flush_denormal", "set_flush_denormal",
    "keep_freed_memory", "release_freed_memory", "set_malloc_thresholds", "set_seed",
    "build_optimizer", "fused_supported", "LazyAdam", "has_sparse_embeddings", "prefer_sparse",
    "sparse_embeddings",
    "accuracy", "f1", "fbeta", "mae", "r2", "rmse",
]
