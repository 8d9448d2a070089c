"""Popularity at the query's time: how often each candidate was consumed just before the query's "now".

``ItemStats`` counts "recent" events against the end of the whole log, which is the right clock for a user whose
history ends there and the wrong one for a user whose history ended months earlier (leave-one-out splits hold
out each user's last event wherever it falls in time). This block counts the candidate's events in a window
that ends at the query's own "now" (its last history event).

``fit`` cuts the timeline of the past events into ``n_bins`` bins of (about) equal event counts and stores, for
every window position ``j``, each item's events in the ``window_bins`` bins before bin ``j``. A query whose
"now" falls in bin ``j`` reads window ``j``: whole bins that end at or before "now", so no event at or after
"now" (the label, or a later event of anyone) is ever counted. Up to one bin of the most recent past is left
out, the price of storing counts per bin rather than every event.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import check_is_fitted
from recsys.features._common import (
    check_history_items,
    check_positive_int,
    float32_columns,
    log_share_ratio,
    pair_arrays,
)
from recsys.features.base import FeatureBlock, FitContext, query_now

__all__ = ["TimelyConfig", "TimelyPopularity"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimelyConfig:
    """Settings of :class:`TimelyPopularity`.

    Parameters
    ----------
    n_bins:
        Bins of the past timeline (equal event counts; fewer where many events share a timestamp). More bins
        leave less of the latest past out of a query's window and store more counts.
    window_bins:
        Bins per window: the window holds about ``window_bins / n_bins`` of the past events.
    """

    n_bins: int = 200
    window_bins: int = 4

    def __post_init__(self) -> None:
        check_positive_int("TimelyConfig.n_bins", self.n_bins, 200)
        check_positive_int("TimelyConfig.window_bins", self.window_bins, 4)


class TimelyPopularity(FeatureBlock):
    """Each candidate's popularity in the window just before its query's "now", and against its all-time share.

    Columns (Float32; NaN for queries with an empty history, which have no "now"):

    - ``log_popularity_now``: ``log1p(count)``, the item's events in the query's window.
    - ``popularity_now_trend``: ``log((count + 1) / (n_window + n_items)) - log((total + 1) / (n_events +
      n_items))``, the log ratio of the item's smoothed share of the window to its smoothed all-time share.

    Attributes
    ----------
    edges_:
        int64 ``(n_edges,)``: bin edges; bin ``b`` holds the events with ``edges_[b] <= t < edges_[b + 1]``.
    window_keys_, window_counts_:
        int64 and int32 ``(n_pairs,)``: the nonzero counts of window ``j`` and item ``i``, keyed
        ``j * n_items_fit + i`` and sorted by key (windows ``j = 0 .. n_edges - 1``).
    window_totals_:
        int64 ``(n_edges,)``: events per window (one zero without past events).
    counts_:
        int64 ``(n_items,)``: all-time past events per item.
    n_items_fit_:
        int64 ``(1,)``: the catalogue size the keys were built with (items appended later have no counts).
    """

    group = "timely"
    state_attributes = ("edges_", "window_keys_", "window_counts_", "window_totals_", "counts_", "n_items_fit_")

    edges_: np.ndarray
    window_keys_: np.ndarray
    window_counts_: np.ndarray
    window_totals_: np.ndarray
    counts_: np.ndarray
    n_items_fit_: np.ndarray

    def __init__(self, config: TimelyConfig | None = None) -> None:
        self.config = config if config is not None else TimelyConfig()

    @property
    def names(self) -> list[str]:
        return ["log_popularity_now", "popularity_now_trend"]

    def fit(self, context: FitContext) -> TimelyPopularity:
        """Count the past events of every item per window. Returns ``self``."""
        events, n_items = context.events, context.n_items
        check_history_items(events, n_items)
        items, times = events.item_idx.astype(np.int64), events.timestamps.astype(np.int64)  # (n_events,) each
        self.counts_ = np.bincount(items, minlength=n_items).astype(np.int64)
        self.n_items_fit_ = np.array([n_items], np.int64)
        if times.size == 0:
            self.edges_ = np.zeros(0, np.int64)
            self.window_keys_, self.window_counts_ = np.zeros(0, np.int64), np.zeros(0, np.int32)
            self.window_totals_ = np.zeros(1, np.int64)  # no window holds an event
            return self
        ordered = np.sort(times)
        cuts = ordered[np.linspace(0, ordered.size - 1, self.config.n_bins + 1).round().astype(np.int64)]
        edges = np.unique(np.append(cuts[:-1], ordered[-1] + 1))  # the last edge past the last event
        n_bins = edges.size - 1
        bins = np.searchsorted(edges, times, side="right") - 1  # (n_events,) in 0 .. n_bins - 1
        per_bin = sp.csr_matrix((np.ones(times.size, np.int64), (bins, items)), shape=(n_bins, n_items))
        # window j = bins j - window_bins .. j - 1: a banded (n_edges, n_bins) 0/1 matrix times the bin counts
        j = np.repeat(np.arange(n_bins + 1), self.config.window_bins)
        b = j - np.tile(np.arange(1, self.config.window_bins + 1), n_bins + 1)
        keep = b >= 0
        band = sp.csr_matrix((np.ones(int(keep.sum()), np.int64), (j[keep], b[keep])), shape=(n_bins + 1, n_bins))
        windows = (band @ per_bin).tocoo()  # (n_edges, n_items)
        keys = windows.row.astype(np.int64) * n_items + windows.col.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.edges_ = edges
        self.window_keys_ = keys[order]
        self.window_counts_ = windows.data[order].astype(np.int32)
        self.window_totals_ = np.asarray(band @ per_bin.sum(axis=1)).ravel().astype(np.int64)
        logger.info("timely popularity: %d events in %d bins, %d window counts", times.size, n_bins, keys.size)
        return self

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, items = pair_arrays(candidates, histories, self.counts_.size)  # (n_pairs,) each
        stride = int(self.n_items_fit_[0])
        window = np.searchsorted(self.edges_, query_now(histories)[query], side="right") - 1  # (n_pairs,)
        # a "now" before the first edge has no past window; one past the last edge reads the final window
        valid = (window >= 0) & (items < stride)
        keys = np.where(valid, window, 0) * stride + items
        count = np.zeros(keys.size)
        if self.window_keys_.size:
            at = np.minimum(np.searchsorted(self.window_keys_, keys), self.window_keys_.size - 1)
            found = valid & (self.window_keys_[at] == keys)
            count = np.where(found, self.window_counts_[at], 0).astype(np.float64)
        total = np.where(window >= 0, self.window_totals_[np.maximum(window, 0)], 0)
        trend = log_share_ratio(count, total, self.counts_[items], float(self.counts_.sum()), self.counts_.size)
        defined = histories.lengths[query] > 0
        return float32_columns(
            candidates,
            {
                "log_popularity_now": np.where(defined, np.log1p(count), np.nan),
                "popularity_now_trend": np.where(defined, trend, np.nan),
            },
        )

    def extend_items(self, items: pl.DataFrame, item_vectors: np.ndarray, n_old: int) -> TimelyPopularity:
        """A copy that also scores appended items (no past events: zero counts). The window keys keep the
        catalogue size they were built with, so only ``counts_`` grows."""
        check_is_fitted(self, self.state_attributes)
        twin = copy.copy(self)
        twin.counts_ = np.concatenate([self.counts_, np.zeros(items.height - n_old, np.int64)])
        return twin
