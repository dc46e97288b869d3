"""Collaborative filtering on the minifast core: data, models, learner, interpretation.

An application of the core the way a user would build one: nothing in `minifast`'s core
knows about it. `from minifast.collab import *` gives the public names below.
"""

from .autorec import (
    AutoRec,
    AutoRecData,
    AutoRecLearner,
    DistillMSE,
    InputDropout,
    KernelLayer,
    autorec_data,
    autorec_learner,
    masked_mse,
)
from .blend import RatingBlend, member_predictions
from .dataset import CollabFilterDataset
from .download import ChecksumError, download_movielens, movielens_cache_dir, safe_extract
from .glocal import GlobalKernel, GLocalK, GLocalKLearner, glocal_learner
from .ids import UnknownIdError
from .interactions import Interactions
from .interpret import (
    FactorPCA,
    factor_pca,
    item_biases,
    item_factors,
    nearest_items,
    plot_items_pca,
    plot_pred_vs_actual,
)
from .itemset_model import ItemSetMF
from .learner import CollabFilterLearner
from .losses import bpr_loss, full_softmax_loss, sampled_softmax_loss
from .metrics import (
    RankingMetric,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_scores,
    recall_at_k,
    rmse,
    topn_scores,
)
from .models import (
    EmbeddingDot,
    EmbeddingDotBias,
    EmbeddingDotBiasFeatures,
    EmbeddingNet,
    embedding_l2,
    get_emb,
)
from .movielens import (
    genre_features,
    load_ml100k_split,
    load_movies,
    load_ratings,
    movie_titles,
    movielens_path,
)
from .ranking_model import ImplicitMF, item_scores
from .recommender import ExportedRecommender, export_recommender
from .sampling import NegativeSamplingLoader, PositivesLoader
from .synthetic import synthetic_ratings

__all__ = [
    "CollabFilterDataset", "UnknownIdError",
    "ChecksumError", "download_movielens", "movielens_cache_dir", "safe_extract",
    "FactorPCA", "factor_pca", "item_biases", "item_factors", "nearest_items",
    "plot_items_pca", "plot_pred_vs_actual",
    "CollabFilterLearner",
    "RankingMetric", "ndcg_at_k", "precision_at_k", "ranking_scores", "recall_at_k", "rmse",
    "EmbeddingDot", "EmbeddingDotBias", "EmbeddingDotBiasFeatures", "EmbeddingNet",
    "embedding_l2", "get_emb",
    "genre_features", "load_ml100k_split", "load_movies", "load_ratings", "movie_titles", "movielens_path",
    "synthetic_ratings",
    "AutoRec", "AutoRecData", "AutoRecLearner", "InputDropout", "KernelLayer", "autorec_data", "autorec_learner",
    "masked_mse", "DistillMSE",
    "GlobalKernel", "GLocalK", "GLocalKLearner", "glocal_learner",
    "RatingBlend", "member_predictions",
    "Interactions", "NegativeSamplingLoader", "PositivesLoader", "bpr_loss", "full_softmax_loss",
    "sampled_softmax_loss",
    "ImplicitMF", "ItemSetMF", "item_scores", "map_at_k", "topn_scores",
    "ExportedRecommender", "export_recommender",
]
