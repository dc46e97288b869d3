"""The callbacks floor, one file per family: recording (`Recorder`, `Printer`,
`ProgressBar`, `CSVLogger`), loggers (`Logger`, `TensorBoardLogger`, `MemoryLogger`),
tracking (`EarlyStopping`, `SaveBestModel`), averaging (`SWA`), schedules (`LR_Updater` ... `LR_Finder`) and
checkpoints (`Checkpoint`, exact resume).

The events and the `Callback` base are the core's (`minifast.core.events`) and are
re-exported here, so `from minifast.callbacks import Callback` works.
"""

from ..core.events import EVENTS, Callback, CallbackHandler, StopTraining
from .averaging import SWA, batchnorm_layers, fix_batchnorm
from .checkpoint import (
    Checkpoint,
    find_checkpoints,
    load_checkpoint,
    make_checkpoint,
    restore_checkpoint,
)
from .freezing import BnFreeze
from .loggers import Logger, MemoryLogger, TensorBoardLogger
from .recording import CSVLogger, Printer, ProgressBar, Recorder, format_time
from .schedules import (
    CircularLR,
    CircularLR_beta,
    ConstantLR,
    CosAnneal,
    LR_Finder,
    LR_Updater,
    OneCycle,
    make_schedule,
)
from .tracking import EarlyStopping, ReduceLROnPlateau, SaveBestModel

__all__ = [
    "BnFreeze", "SWA", "batchnorm_layers", "fix_batchnorm",
    "EVENTS", "Callback", "CallbackHandler", "StopTraining",
    "Checkpoint", "find_checkpoints", "load_checkpoint", "make_checkpoint", "restore_checkpoint",
    "CSVLogger", "Printer", "ProgressBar", "Recorder", "format_time",
    "Logger", "MemoryLogger", "TensorBoardLogger",
    "CircularLR", "CircularLR_beta", "ConstantLR", "CosAnneal", "LR_Finder", "LR_Updater",
    "OneCycle", "make_schedule",
    "EarlyStopping", "ReduceLROnPlateau", "SaveBestModel",
]
