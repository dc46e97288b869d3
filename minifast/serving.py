"""`load_learner`: read any export file back as the object that serves it.

The top floor (beside `minifast.all`), because it knows the applications: a file written by
`CollabFilterLearner.export` comes back as a `minifast.collab.ExportedRecommender` (raw-id
`recommend`), any other as a `minifast.ExportedLearner` (`predict` on arrays).
"""

from __future__ import annotations

import os

from .collab.recommender import APP, ExportedRecommender
from .export import ExportedLearner, read_export

__all__ = ["load_learner"]


def load_learner(path: str | os.PathLike) -> ExportedLearner | ExportedRecommender:
    """Load an export file written by `learn.export(path)`: an `ExportedRecommender` for a
    collab learner's, an `ExportedLearner` otherwise. Either predicts what the learner did,
    without the training data, the model's code or any unpickling."""
    exported = read_export(path)
    return ExportedRecommender(exported) if exported.info.get("app") == APP else exported
