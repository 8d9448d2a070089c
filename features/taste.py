"""Popularity taste: how a candidate's popularity compares with the popularity of what the user usually takes.

``ItemStats`` says how popular a candidate is and ``UserActivity`` how active its user is, but not whether this
user takes popular items: one user's history is blockbusters, another's is the long tail. A tree can only learn
that interaction by splitting on a history statistic and the candidate's popularity in turn; this block hands it
the comparison directly.

``fit`` counts each catalogue item's past events (like ``ItemStats``). ``transform`` reads, for each query, the
mean and spread of ``log1p(count)`` over its history events (every event, and the last ``recent`` alone) and
compares the candidate's ``log1p(count)`` with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data import Histories
from recsys.features._common import (
    check_history_items,
    check_positive_float,
    check_positive_int,
    float32_columns,
    pair_arrays,
)
from recsys.features.base import FeatureBlock, FitContext

__all__ = ["PopularityTaste", "TasteConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TasteConfig:
    """Settings of :class:`PopularityTaste`.

    Parameters
    ----------
    recent:
        The last this many history events make the "recent" taste.
    min_spread:
        Floor of the history's standard deviation of ``log1p(count)`` in ``popularity_taste_z`` (a history of
        one item, or of equally popular items, has no spread).
    """

    recent: int = 10
    min_spread: float = 0.25

    def __post_init__(self) -> None:
        check_positive_int("TasteConfig.recent", self.recent, 10)
        check_positive_float("TasteConfig.min_spread", self.min_spread, 0.25)


class PopularityTaste(FeatureBlock):
    """The candidate's popularity against its user's usual popularity (see module docs).

    Columns (Float32; NaN for queries with an empty history):

    - ``user_popularity_taste``: mean ``log1p(count)`` of the history's events (their items' past events).
    - ``popularity_taste_gap``: the candidate's ``log1p(count)`` minus that mean (> 0: more popular than usual).
    - ``popularity_taste_z``: that gap over ``max(std, min_spread)``, the history's standard deviation.
    - ``popularity_taste_gap_recent``: the gap to the mean over the last ``recent`` events only.

    Attributes
    ----------
    counts_:
        int64 array of shape ``(n_items,)``: past events per item.
    """

    group = "taste"
    state_attributes = ("counts_",)

    counts_: np.ndarray

    def __init__(self, config: TasteConfig | None = None) -> None:
        self.config = config if config is not None else TasteConfig()

    @property
    def names(self) -> list[str]:
        return ["user_popularity_taste", "popularity_taste_gap", "popularity_taste_z", "popularity_taste_gap_recent"]

    def fit(self, context: FitContext) -> PopularityTaste:
        """Count the past events of every catalogue item in ``context.events``. Returns ``self``."""
        check_history_items(context.events, context.n_items)
        self.counts_ = np.bincount(context.events.item_idx, minlength=context.n_items).astype(np.int64)
        logger.info("popularity taste: %d events, %d items", context.events.item_idx.size, context.n_items)
        return self

    def _taste(self, histories: Histories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float64 ``(n_queries,)`` each: mean and standard deviation of ``log1p(count)`` over every history
        event, and its mean over the last ``recent`` events (NaN for empty histories)."""
        check_history_items(histories, self.counts_.size)
        users = histories.event_user()  # (n_events,)
        pop = np.log1p(self.counts_[histories.item_idx].astype(np.float64))  # (n_events,)
        n = histories.lengths.astype(np.float64)  # (n_queries,)
        recent = histories.event_age() < self.config.recent  # (n_events,)
        n_recent = np.minimum(n, self.config.recent)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(users, pop, minlength=n.size) / n
            square = np.bincount(users, pop * pop, minlength=n.size) / n
            mean_recent = np.bincount(users[recent], pop[recent], minlength=n.size) / n_recent
        std = np.sqrt(np.maximum(square - mean * mean, 0.0))
        return mean, std, mean_recent

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, items = pair_arrays(candidates, histories, self.counts_.size)  # (n_pairs,) each
        mean, std, mean_recent = self._taste(histories)  # (n_queries,) each, NaN for empty histories
        pop = np.log1p(self.counts_[items].astype(np.float64))  # (n_pairs,)
        gap = pop - mean[query]
        return float32_columns(
            candidates,
            {
                "user_popularity_taste": mean[query],
                "popularity_taste_gap": gap,
                "popularity_taste_z": gap / np.maximum(std[query], self.config.min_spread),
                "popularity_taste_gap_recent": pop - mean_recent[query],
            },
        )
