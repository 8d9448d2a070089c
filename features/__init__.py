"""Feature blocks for the ranker (installed as ``recsys.features``): polars frames and numpy in, columns out."""

from recsys.features.popularity import Popularity, PopularityConfig, item_popularity
from recsys.features.ranking import FeatureConfig, RankingFeatures
from recsys.features.transitions import TransitionConfig, Transitions

__all__ = [
    "FeatureConfig",
    "Popularity",
    "PopularityConfig",
    "RankingFeatures",
    "TransitionConfig",
    "Transitions",
    "item_popularity",
]
