"""How well the candidate is rated: its shrunk mean interaction weight (the rating, where the data has one), and
that mean against the query's own.

``ItemRatings.fit`` sums, per catalogue item, the weights of its past events. ``transform`` gives each candidate
its mean pulled toward the mean of every past event by ``prior_events`` pseudo-events (a film rated 5 once is not
better known than one rated 4.2 by 300 people), and the difference to the mean weight of the query's history (a
user who rates everything 3 reads a 3.5 film differently from one who rates everything 4.5). Without weights
(implicit data) both columns are NaN, which LightGBM never splits on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data import Histories
from recsys.errors import ConfigError
from recsys.features._common import check_history_items, float32_columns, pair_arrays
from recsys.features.base import FeatureBlock, FitContext

__all__ = ["ItemRatings", "RatingConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RatingConfig:
    """Settings of :class:`ItemRatings`.

    Parameters
    ----------
    prior_events:
        Pseudo-events at the mean weight of all past events added to every item's mean (a Bayesian average); > 0.
    """

    prior_events: float = 10.0

    def __post_init__(self) -> None:
        m = self.prior_events
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (math.isfinite(m) and m > 0):
            raise ConfigError(f"prior_events must be a positive number (for example 10), got {m!r}.")


class ItemRatings(FeatureBlock):
    """The candidate's shrunk mean weight and its gap to the query's mean weight.

    Columns (Float32; both NaN when the past events carry no weights):

    - ``item_mean_weight``: ``(sum + m * mu) / (count + m)`` over the item's past events, ``mu`` the mean weight
      of every past event and ``m`` :attr:`RatingConfig.prior_events` (``mu`` for an item without events).
    - ``item_weight_gap``: ``item_mean_weight`` minus the mean weight of the query's history events; NaN for an
      empty history or a history without weights.

    Attributes
    ----------
    weight_sums_:
        float64 array of shape ``(n_items,)``: the summed weights of each item's past events.
    weight_counts_:
        int64 array of shape ``(n_items,)``: each item's past events.
    weight_stats_:
        float64 array of shape ``(2,)``: ``[mu, has_weights]`` (``has_weights`` 1.0 or 0.0).
    """

    group = "rating"
    state_attributes = ("weight_sums_", "weight_counts_", "weight_stats_")

    weight_sums_: np.ndarray
    weight_counts_: np.ndarray
    weight_stats_: np.ndarray

    def __init__(self, config: RatingConfig | None = None) -> None:
        self.config = config if config is not None else RatingConfig()

    @property
    def names(self) -> list[str]:
        return ["item_mean_weight", "item_weight_gap"]

    def fit(self, context: FitContext) -> ItemRatings:
        """Sum the weights of every catalogue item's past events in ``context.events``. Returns ``self``."""
        events, n_items = context.events, context.n_items
        check_history_items(events, n_items)
        weights = events.weights
        has = weights is not None and events.item_idx.size > 0
        w = np.asarray(weights, np.float64) if has else np.zeros(events.item_idx.size)  # (n_events,)
        self.weight_sums_ = np.bincount(events.item_idx, weights=w, minlength=n_items).astype(np.float64)
        self.weight_counts_ = np.bincount(events.item_idx, minlength=n_items).astype(np.int64)
        mu = float(w.mean()) if has else 0.0
        self.weight_stats_ = np.array([mu, 1.0 if has else 0.0])
        logger.info("ratings: %s over %d events (mean %.3f)", "weights" if has else "no weights", w.size, mu)
        return self

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, items = pair_arrays(candidates, histories, self.weight_sums_.size)  # (n_pairs,) each
        mu, has = self.weight_stats_
        if not has:
            nan = np.full(query.size, np.nan)
            return float32_columns(candidates, {"item_mean_weight": nan, "item_weight_gap": nan})
        m = self.config.prior_events
        mean = (self.weight_sums_[items] + m * mu) / (self.weight_counts_[items] + m)  # (n_pairs,)
        user_mean = np.full(histories.n_users, np.nan)  # (n_queries,)
        if histories.weights is not None:
            sums = np.bincount(histories.event_user(), weights=histories.weights, minlength=histories.n_users)
            lengths = histories.lengths
            user_mean = np.where(lengths > 0, sums / np.maximum(lengths, 1), np.nan)
        return float32_columns(candidates, {"item_mean_weight": mean, "item_weight_gap": mean - user_mean[query]})
