"""The first feature set of the ranker: retrieval score and rank, item popularity, transition strength.

Each block is a small stage: ``fit`` learns statistics from past events, ``transform`` adds its columns to a
candidate frame ``query (u32), item_idx (u32), retrieval_score (f32), retrieval_rank (u32),
transition_rank (u32)`` whose ``query`` is a row of the :class:`~recsys.data.Histories` passed beside it.
A rank is the item's position in that source's candidate list, or the list length + 1 when the source did
not propose it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.data import Histories
from recsys.errors import SchemaError, check_is_fitted
from recsys.features.popularity import Popularity, PopularityConfig
from recsys.features.transitions import TransitionConfig, Transitions
from recsys.schema import ITEM_IDX

__all__ = [
    "CANDIDATE_COLUMNS",
    "QUERY",
    "RETRIEVAL_RANK",
    "RETRIEVAL_SCORE",
    "TRANSITION_RANK",
    "FeatureConfig",
    "RankingFeatures",
]

QUERY = "query"
RETRIEVAL_SCORE = "retrieval_score"
RETRIEVAL_RANK = "retrieval_rank"
TRANSITION_RANK = "transition_rank"
CANDIDATE_COLUMNS = (QUERY, ITEM_IDX, RETRIEVAL_SCORE, RETRIEVAL_RANK, TRANSITION_RANK)


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the feature blocks."""

    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    transitions: TransitionConfig = field(default_factory=TransitionConfig)


def _check_candidates(candidates: pl.DataFrame) -> None:
    missing = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
    if missing:
        raise SchemaError(f"candidate frame lacks {missing}; it has {candidates.columns}.")


class RankingFeatures:
    """Adds ``log_popularity`` and ``transition_score`` to candidates; keeps the source columns.

    Attributes
    ----------
    popularity_, transitions_:
        The fitted statistics (from the events passed to :meth:`fit` only, so no label leaks in).
    """

    popularity_: Popularity | None = None
    transitions_: Transitions | None = None

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()

    @property
    def feature_names(self) -> list[str]:
        return [RETRIEVAL_SCORE, RETRIEVAL_RANK, TRANSITION_RANK, "log_popularity", "transition_score"]

    def fit(self, interactions: pl.DataFrame, index: pl.DataFrame) -> RankingFeatures:
        """Learn popularity and transitions from ``interactions`` (catalogue rows from ``index``)."""
        self.popularity_ = Popularity(self.config.popularity).fit(interactions, index)
        histories = Histories.from_interactions(interactions, index)
        self.transitions_ = Transitions(self.config.transitions).fit(histories, index.height)
        return self

    def transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        """Add the feature columns to ``candidates`` (row order kept)."""
        check_is_fitted(self)
        _check_candidates(candidates)
        popularity = self.popularity_.counts_  # type: ignore[union-attr]
        item_idx = candidates[ITEM_IDX].to_numpy().astype(np.int64)
        transition = self.transitions_.score_pairs(  # type: ignore[union-attr]
            histories, candidates[QUERY].to_numpy().astype(np.int64), item_idx
        )
        return candidates.with_columns(
            log_popularity=pl.Series(np.log1p(popularity[item_idx]), dtype=pl.Float32),
            transition_score=pl.Series(transition, dtype=pl.Float32),
        )
