"""How the candidate relates to what the query already consumed: its categories, and the item itself.

:class:`CategoryAffinity` compares the candidate's categories (a catalogue column such as ``genres``) with the
categories of the query's history events; :class:`RepeatSignals` says whether and how recently the query
consumed the candidate itself.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import ConfigError
from recsys.features._common import float32_columns, history_counts, pair_arrays, pair_blocks
from recsys.features.base import QUERY, FeatureBlock, FitContext
from recsys.schema import ITEM_IDX

__all__ = ["CATEGORY_COLUMNS", "CategoryAffinity", "CategoryConfig", "RepeatSignals"]

logger = logging.getLogger(__name__)

CATEGORY_COLUMNS = ("genres", "genre", "categories", "category", "class")
"""Catalogue columns tried, in this order, when :attr:`CategoryConfig.column` is ``None``."""

_UNIT_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class CategoryConfig:
    """Settings of :class:`CategoryAffinity`.

    Parameters
    ----------
    column:
        Catalogue column holding each item's categories (a string, or a list of strings); ``None`` takes the
        first of :data:`CATEGORY_COLUMNS` present.
    separator:
        Regular expression between the categories of a string column (default: a comma or a pipe).
    """

    column: str | None = None
    separator: str = r"\s*[,|]\s*"

    def __post_init__(self) -> None:
        if self.column is not None and (not isinstance(self.column, str) or not self.column):
            raise ConfigError(f"column must be a non-empty column name or None (auto-detect), got {self.column!r}.")
        if not isinstance(self.separator, str) or not self.separator:
            raise ConfigError(f"separator must be a non-empty regular expression, got {self.separator!r}.")
        try:
            re.compile(self.separator)
        except re.error as exc:
            raise ConfigError(f"separator {self.separator!r} is not a valid regular expression: {exc}.") from exc


def category_labels(values: pl.Series, separator: str) -> pl.DataFrame:
    """``item_idx (u32), category (str)``: the distinct, stripped, non-empty categories of each item.

    ``values`` holds one entry per catalogue item: a string split at ``separator``, or a list of strings.
    """
    if isinstance(values.dtype, pl.List):
        lists = values.cast(pl.List(pl.String))
    else:
        lists = values.cast(pl.String).str.replace_all(separator, _UNIT_SEPARATOR).str.split(_UNIT_SEPARATOR)
    frame = pl.DataFrame({"category": lists}).with_row_index(ITEM_IDX).explode("category")
    frame = frame.with_columns(pl.col("category").str.strip_chars())
    return frame.filter(pl.col("category").is_not_null() & (pl.col("category") != "")).unique(maintain_order=True)


class CategoryAffinity(FeatureBlock):
    """Share of the query's history events in the candidate's categories.

    Columns (Float32; NaN when the candidate has no category or the history is empty):

    - ``category_share_mean``: mean, over the candidate's categories, of the fraction of the query's history
      events that have that category.
    - ``category_share_max``: the largest such fraction.

    Attributes
    ----------
    item_categories_:
        scipy.sparse.csr_matrix, float32 of shape ``(n_items, n_categories)``: 1 where the item has the
        category (categories numbered in sorted label order).
    """

    group = "category"
    state_attributes = ("item_categories_",)

    item_categories_: sp.csr_matrix

    def __init__(self, config: CategoryConfig | None = None) -> None:
        self.config = config if config is not None else CategoryConfig()

    @property
    def names(self) -> list[str]:
        return ["category_share_mean", "category_share_max"]

    @staticmethod
    def detect_column(items: pl.DataFrame) -> str | None:
        """The first of :data:`CATEGORY_COLUMNS` that ``items`` has, or ``None``."""
        return next((c for c in CATEGORY_COLUMNS if c in items.columns), None)

    def fit(self, context: FitContext) -> CategoryAffinity:
        """Split the category column of ``context.items`` into an item-category matrix. Returns ``self``.

        Raises
        ------
        ConfigError
            The configured column is absent, or none of :data:`CATEGORY_COLUMNS` is present.
        """
        column = self.config.column or self.detect_column(context.items)
        if column is None or column not in context.items.columns:
            wanted = repr(column) if column is not None else f"any of {list(CATEGORY_COLUMNS)}"
            raise ConfigError(
                f"the catalogue has no category column {wanted} (it has {context.items.columns}); "
                "set CategoryConfig(column=...) or leave the category block out."
            )
        labels = category_labels(context.items[column], self.config.separator)
        codes = labels["category"].rank("dense").to_numpy().astype(np.int64) - 1  # (n_labels,)
        n_categories = int(codes.max()) + 1 if codes.size else 0
        ones = np.ones(codes.size, np.float32)
        rows = labels[ITEM_IDX].to_numpy().astype(np.int64)
        shape = (context.n_items, n_categories)
        self.item_categories_ = sp.csr_matrix((ones, (rows, codes)), shape=shape)
        logger.info("categories: %d labels over %d items from column %r", n_categories, context.n_items, column)
        return self

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        categories = self.item_categories_
        query, items = pair_arrays(candidates, histories, categories.shape[0])  # (n_pairs,) each
        lengths = np.maximum(histories.lengths, 1).astype(np.float32)
        counts = history_counts(histories, categories.shape[0]) @ categories  # (n_queries, n_categories)
        shares = (sp.diags(1.0 / lengths) @ counts).astype(np.float32).tocsr()
        n_labels = np.diff(categories.indptr)[items]  # (n_pairs,)
        total = np.zeros(query.size, np.float32)
        best = np.zeros(query.size, np.float32)
        for block in pair_blocks(query.size):
            both = shares[query[block]].multiply(categories[items[block]]).tocsr()  # (b, n_categories)
            total[block] = np.asarray(both.sum(axis=1)).ravel()
            best[block] = both.max(axis=1).toarray().ravel() if both.shape[1] else 0.0
        undefined = (n_labels == 0) | (histories.lengths[query] == 0)
        mean = total / np.maximum(n_labels, 1)
        return float32_columns(
            candidates,
            {
                "category_share_mean": np.where(undefined, np.nan, mean),
                "category_share_max": np.where(undefined, np.nan, best),
            },
        )


class RepeatSignals(FeatureBlock):
    """Whether, how often and how recently the query consumed the candidate (no fitted state).

    Columns (Float32):

    - ``times_consumed``: occurrences of the candidate in the query's history.
    - ``events_since_consumed``: events after the candidate's last occurrence (0 if it is the newest event);
      NaN if it never occurs.
    - ``user_repeat_ratio``: ``1 - n_unique / n`` over the query's history; NaN for empty histories.
    """

    group = "repeat"

    @property
    def names(self) -> list[str]:
        return ["times_consumed", "events_since_consumed", "user_repeat_ratio"]

    def fit(self, context: FitContext) -> RepeatSignals:
        """Nothing to learn; returns ``self``."""
        return self

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, items = pair_arrays(candidates, histories)  # (n_pairs,) each
        users = histories.event_user()  # (n_events,)
        events = pl.DataFrame(
            {
                QUERY: users,
                ITEM_IDX: histories.item_idx,
                "_age": histories.event_age(),  # 0 for the newest event
            },
            schema={QUERY: pl.Int64, ITEM_IDX: pl.Int64, "_age": pl.Int64},
        )
        per_item = events.group_by(QUERY, ITEM_IDX).agg(
            pl.len().alias("times_consumed"), pl.col("_age").min().alias("events_since_consumed")
        )
        pairs = pl.DataFrame({QUERY: query, ITEM_IDX: items}, schema={QUERY: pl.Int64, ITEM_IDX: pl.Int64})
        joined = pairs.join(per_item, on=[QUERY, ITEM_IDX], how="left", maintain_order="left")
        n = histories.lengths.astype(np.float64)  # (n_queries,)
        n_unique = np.bincount(per_item[QUERY].to_numpy(), minlength=histories.n_users)
        ratio = np.where(n > 0, 1.0 - n_unique / np.maximum(n, 1.0), np.nan)
        return float32_columns(
            candidates,
            {
                "times_consumed": joined["times_consumed"].fill_null(0).to_numpy(),
                "events_since_consumed": joined["events_since_consumed"].to_numpy().astype(np.float64),
                "user_repeat_ratio": ratio[query],
            },
        )
