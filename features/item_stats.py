"""Item statistics from past events: all-time and recent popularity, its trend, and the item's age.

``ItemStats.fit`` counts, per catalogue item, its past events, its events among the most recent
``recent_fraction`` of all past events (timestamp at or above that quantile of the past timestamps), and
the timestamp of its first event. ``transform`` looks these up for each candidate; the age is measured
from the query's "now" (its last history event), in the data's own timestamp units.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data import Histories
from recsys.errors import ConfigError
from recsys.features._common import check_history_items, float32_columns, log_share_ratio, pair_arrays
from recsys.features.base import FeatureBlock, FitContext, query_now

__all__ = ["ItemStats", "ItemStatsConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemStatsConfig:
    """Settings of :class:`ItemStats`.

    Parameters
    ----------
    recent_fraction:
        Share of the most recent past events counted as "recent": events whose timestamp is at least the
        ``1 - recent_fraction`` quantile (linear interpolation) of all past timestamps. In ``(0, 1]``.
    """

    recent_fraction: float = 0.1

    def __post_init__(self) -> None:
        f = self.recent_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and 0.0 < f <= 1.0):
            raise ConfigError(f"recent_fraction must be a number in (0, 1] (for example 0.1), got {f!r}.")


class ItemStats(FeatureBlock):
    """Popularity, recent popularity, popularity trend and age of each candidate item.

    Columns (Float32):

    - ``log_popularity``: ``log1p(count)``, the item's past events.
    - ``log_popularity_recent``: ``log1p(recent)``, its events among the most recent ``recent_fraction``.
    - ``popularity_trend``: ``log((recent + 1) / (n_recent + n_items)) - log((count + 1) / (n_events + n_items))``,
      the log ratio of the item's smoothed recent share to its smoothed all-time share.
    - ``log_item_age``: ``log1p(max(now - first_seen, 0))`` in timestamp units; NaN for items without past
      events and for queries with an empty history (no "now").

    Attributes
    ----------
    counts_:
        int64 array of shape ``(n_items,)``: past events per item.
    recent_counts_:
        int64 array of shape ``(n_items,)``: recent past events per item.
    first_seen_:
        int64 array of shape ``(n_items,)``: timestamp of each item's first past event (0 if none).
    event_totals_:
        int64 array of shape ``(2,)``: ``[n_events, n_recent_events]``.
    """

    group = "item"
    state_attributes = ("counts_", "recent_counts_", "first_seen_", "event_totals_")

    counts_: np.ndarray
    recent_counts_: np.ndarray
    first_seen_: np.ndarray
    event_totals_: np.ndarray

    def __init__(self, config: ItemStatsConfig | None = None) -> None:
        self.config = config if config is not None else ItemStatsConfig()

    @property
    def names(self) -> list[str]:
        return ["log_popularity", "log_popularity_recent", "popularity_trend", "log_item_age"]

    def fit(self, context: FitContext) -> ItemStats:
        """Count the past events of every catalogue item in ``context.events``. Returns ``self``."""
        events, n_items = context.events, context.n_items
        check_history_items(events, n_items)
        items, times = events.item_idx, events.timestamps  # (n_events,) each
        recent = np.zeros(items.size, bool)
        if items.size:
            recent = times >= np.quantile(times, 1.0 - self.config.recent_fraction)
        self.counts_ = np.bincount(items, minlength=n_items).astype(np.int64)
        self.recent_counts_ = np.bincount(items[recent], minlength=n_items).astype(np.int64)
        first = np.full(n_items, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, items, times)
        self.first_seen_ = np.where(self.counts_ > 0, first, 0).astype(np.int64)
        self.event_totals_ = np.array([items.size, int(recent.sum())], dtype=np.int64)
        logger.info("item stats: %d events, %d recent, %d items", items.size, int(recent.sum()), n_items)
        return self

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, items = pair_arrays(candidates, histories, self.counts_.size)  # (n_pairs,) each
        counts = self.counts_[items].astype(np.float64)
        recent = self.recent_counts_[items].astype(np.float64)
        n_events, n_recent = (float(x) for x in self.event_totals_)
        trend = log_share_ratio(recent, n_recent, counts, n_events, self.counts_.size)
        age = np.maximum(query_now(histories)[query] - self.first_seen_[items], 0).astype(np.float64)
        defined = (counts > 0) & (histories.lengths[query] > 0)
        return float32_columns(
            candidates,
            {
                "log_popularity": np.log1p(counts),
                "log_popularity_recent": np.log1p(recent),
                "popularity_trend": trend,
                "log_item_age": np.where(defined, np.log1p(age), np.nan),
            },
        )
