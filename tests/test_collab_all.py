"""`from minifast.all import *` gives the lesson's namespace."""

from __future__ import annotations


def test_star_import_gives_lesson_namespace():
    ns: dict = {}
    exec("from minifast.all import *", ns)
    for name in ("np", "pd", "torch", "nn", "F", "optim", "fit", "set_lrs", "get_cv_idxs",
                 "ColumnarModelData", "Learner", "CollabFilterDataset", "CollabFilterLearner",
                 "EmbeddingDot", "EmbeddingDotBias", "EmbeddingNet", "download_movielens",
                 "item_biases", "precision_at_k"):
        assert name in ns, name
    assert ns["F"].mse_loss is __import__("torch").nn.functional.mse_loss
    assert not any(k.startswith("_") and k not in ("__builtins__",) for k in ns)
