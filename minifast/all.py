"""The lesson's namespace: `from minifast.all import *` gives np, pd, torch, nn, F, optim,
`Path` (the lesson writes `path/'ratings.csv'`) and the whole minifast API, collaborative filtering included (as fastai v0.7's star imports did).
Library code should import what it needs explicitly instead.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn, optim

from . import *  # noqa: F403
from . import __all__ as _core
from .collab import *  # noqa: F403
from .collab import __all__ as _collab

__all__ = ["np", "pd", "torch", "nn", "F", "optim", "Path", *_core, *_collab]
