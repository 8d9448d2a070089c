"""Item popularity: how many events each catalogue item has, optionally within a recent time window."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataError, check_is_fitted
from recsys.schema import ITEM_ID, ITEM_IDX, TIMESTAMP

__all__ = ["POPULARITY", "Popularity", "PopularityConfig", "item_popularity"]

logger = logging.getLogger(__name__)

POPULARITY = "popularity"
"""Column name of :meth:`Popularity.popularity_frame`."""


@dataclass(frozen=True)
class PopularityConfig:
    """Settings of :class:`Popularity`.

    Parameters
    ----------
    window_seconds:
        Count only events at most this many seconds (timestamp units) before the latest event;
        ``None`` counts every event.
    """

    window_seconds: int | None = None

    def __post_init__(self) -> None:
        w = self.window_seconds
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ConfigError(f"window_seconds must be a positive integer or None, got {w!r}.")


def item_popularity(interactions: pl.DataFrame, index: pl.DataFrame, window_seconds: int | None = None) -> np.ndarray:
    """Events per catalogue item.

    Parameters
    ----------
    interactions:
        ``user_id, item_id, timestamp`` events.
    index:
        :func:`recsys.data.item_index` of the catalogue (``item_id -> item_idx``).
    window_seconds:
        Count only events with ``timestamp >= max(timestamp) - window_seconds``; ``None``: all.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(len(index),)``; zero for items without events.

    Raises
    ------
    DataError
        An event references an item that is not in ``index``.
    """
    events = interactions.select(ITEM_ID, TIMESTAMP)
    if window_seconds is not None and events.height:
        events = events.filter(pl.col(TIMESTAMP) >= pl.col(TIMESTAMP).max() - window_seconds)
    joined = events.join(index, on=ITEM_ID, how="left")
    unknown = joined.filter(pl.col(ITEM_IDX).is_null())
    if unknown.height:
        examples = unknown[ITEM_ID].unique(maintain_order=True).head(5).to_list()
        raise DataError(
            f"{unknown.height} event(s) reference item_id values not in the catalogue "
            f"(for example {examples}). Fix: add these items to the items table or remove their events."
        )
    rows = joined[ITEM_IDX].to_numpy().astype(np.int64)
    return np.bincount(rows, minlength=index.height).astype(np.float32)


class Popularity:
    """Item popularity as a stage: ``fit`` counts events, ``score`` broadcasts the counts to users.

    Attributes
    ----------
    counts_:
        float32 array of shape ``(n_items,)``: events per item (within the window).
    """

    counts_: np.ndarray

    def __init__(self, config: PopularityConfig | None = None) -> None:
        self.config = config if config is not None else PopularityConfig()

    def fit(self, interactions: pl.DataFrame, index: pl.DataFrame) -> Popularity:
        """Count the events of each item of ``index`` (see :func:`item_popularity`). Returns ``self``."""
        self.counts_ = item_popularity(interactions, index, self.config.window_seconds)
        logger.info("popularity: %d events over %d items", int(self.counts_.sum()), self.counts_.size)
        return self

    @property
    def n_items(self) -> int:
        check_is_fitted(self)
        return int(self.counts_.size)

    def normalized(self) -> np.ndarray:
        """float32 array of shape ``(n_items,)``: counts divided by the largest count (all zero if none)."""
        check_is_fitted(self)
        top = float(self.counts_.max()) if self.counts_.size else 0.0
        return self.counts_ / np.float32(max(top, 1.0))

    def score(self, n_users: int) -> np.ndarray:
        """The counts repeated per user: writable float32 array of shape ``(n_users, n_items)``."""
        check_is_fitted(self)
        return np.repeat(self.counts_[None, :], n_users, axis=0)

    def popularity_frame(self) -> pl.DataFrame:
        """``item_idx (UInt32), popularity (Float32)``: one row per catalogue item, for joins."""
        check_is_fitted(self)
        return pl.DataFrame(
            {
                ITEM_IDX: pl.Series(np.arange(self.counts_.size, dtype=np.uint32), dtype=pl.UInt32),
                POPULARITY: pl.Series(self.counts_, dtype=pl.Float32),
            }
        )
