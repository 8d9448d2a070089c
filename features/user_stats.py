"""User activity from the query's own history: how many events, over how long, how often, how lately."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.data import Histories
from recsys.features._common import float32_columns, pair_arrays
from recsys.features.base import FeatureBlock, FitContext

__all__ = ["UserActivity", "activity_per_query"]


def activity_per_query(histories: Histories) -> dict[str, np.ndarray]:
    """Activity statistics of every history, in timestamp units.

    Returns
    -------
    dict
        float64 arrays of shape ``(n_queries,)``: ``user_log_events`` (``log1p(n)``), ``user_log_span``
        (``log1p(last - first)``, NaN if ``n == 0``), ``user_log_mean_gap`` (``log1p(span / (n - 1))``) and
        ``user_log_last_gap`` (``log1p`` of the time between the last two events), both NaN if ``n < 2``.
    """
    n = histories.lengths  # (n_queries,)
    times = histories.timestamps
    last = np.maximum(histories.indptr[1:] - 1, 0)  # (n_queries,) clipped for empty histories
    first = np.minimum(histories.indptr[:-1], max(times.size - 1, 0))
    before_last = np.maximum(histories.indptr[1:] - 2, 0)
    if times.size == 0:
        times = np.zeros(1, np.int64)
    span = np.maximum(times[last] - times[first], 0).astype(np.float64)
    last_gap = np.maximum(times[last] - times[before_last], 0).astype(np.float64)
    many = n >= 2
    return {
        "user_log_events": np.log1p(n.astype(np.float64)),
        "user_log_span": np.where(n > 0, np.log1p(span), np.nan),
        "user_log_mean_gap": np.where(many, np.log1p(span / np.maximum(n - 1, 1)), np.nan),
        "user_log_last_gap": np.where(many, np.log1p(last_gap), np.nan),
    }


class UserActivity(FeatureBlock):
    """Activity of the query's user, from its history alone (no fitted state).

    Columns (Float32, timestamp units, never assumed to be seconds): ``user_log_events``,
    ``user_log_span``, ``user_log_mean_gap``, ``user_log_last_gap`` (see :func:`activity_per_query`).
    """

    group = "user"

    @property
    def names(self) -> list[str]:
        return ["user_log_events", "user_log_span", "user_log_mean_gap", "user_log_last_gap"]

    def fit(self, context: FitContext) -> UserActivity:
        """Nothing to learn; returns ``self``."""
        return self

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, _ = pair_arrays(candidates, histories)  # (n_pairs,)
        per_query = activity_per_query(histories)
        return float32_columns(candidates, {name: per_query[name][query] for name in self.names})
