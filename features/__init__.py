"""Feature blocks for the ranker (installed as ``recsys.features``): polars frames and numpy in, columns out."""

from recsys.features.affinity import BrandAffinity, BrandConfig, CategoryAffinity, CategoryConfig, RepeatSignals
from recsys.features.base import QUERY, FeatureBlock, FitContext, query_now
from recsys.features.collaborative import Collaborative, CollaborativeConfig
from recsys.features.cooccurrence import CoOccurrence, CoOccurrenceConfig
from recsys.features.item_stats import ItemStats, ItemStatsConfig
from recsys.features.lexical import LexicalConfig, LexicalSimilarity
from recsys.features.popularity import Popularity, PopularityConfig, item_popularity
from recsys.features.ranking import FeatureConfig, RankingFeatures
from recsys.features.ratings import ItemRatings, RatingConfig
from recsys.features.relative import QueryRelative, RelativeConfig
from recsys.features.similarity import LearnedSimilarity, SimilarityConfig, TextSimilarity
from recsys.features.taste import PopularityTaste, TasteConfig
from recsys.features.timely import TimelyConfig, TimelyPopularity
from recsys.features.transitions import TransitionConfig, Transitions
from recsys.features.user_stats import UserActivity

__all__ = [
    "QUERY",
    "BrandAffinity",
    "BrandConfig",
    "CategoryAffinity",
    "CategoryConfig",
    "CoOccurrence",
    "CoOccurrenceConfig",
    "Collaborative",
    "CollaborativeConfig",
    "FeatureBlock",
    "FeatureConfig",
    "FitContext",
    "ItemRatings",
    "ItemStats",
    "ItemStatsConfig",
    "LearnedSimilarity",
    "LexicalConfig",
    "LexicalSimilarity",
    "Popularity",
    "PopularityConfig",
    "PopularityTaste",
    "QueryRelative",
    "RankingFeatures",
    "RatingConfig",
    "RelativeConfig",
    "RepeatSignals",
    "SimilarityConfig",
    "TasteConfig",
    "TextSimilarity",
    "TimelyConfig",
    "TimelyPopularity",
    "TransitionConfig",
    "Transitions",
    "UserActivity",
    "item_popularity",
    "query_now",
]
