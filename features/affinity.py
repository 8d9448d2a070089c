"""How the candidate relates to what the query already consumed: its categories, its brand, and the item itself.

:class:`CategoryAffinity` compares the candidate's categories (a catalogue column such as ``genres``) with the
categories of the query's history events; :class:`BrandAffinity` says how much and how recently the query
consumed the candidate's brand (any one-label catalogue column: maker, label, artist); :class:`RepeatSignals`
says whether and how recently the query consumed the candidate itself.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import ConfigError, check_is_fitted
from recsys.features._common import DENSE_CELLS, float32_columns, history_counts, pair_arrays, sparse_values
from recsys.features.base import QUERY, FeatureBlock, FitContext
from recsys.schema import ITEM_IDX

__all__ = [
    "CATEGORY_COLUMNS",
    "BrandAffinity",
    "BrandConfig",
    "CategoryAffinity",
    "CategoryConfig",
    "RepeatSignals",
    "label_codes",
]

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
        # One entry per (pair, candidate label), grouped by pair: the pair's share in that label. Items carry a
        # few labels, so this touches a few entries per pair. A sparse elementwise product per block of pairs
        # (the earlier way) took 0.054 s for the 216,000 candidate pairs of the 943 ml-100k users, this 0.024 s.
        n_labels = np.diff(categories.indptr)[items]  # (n_pairs,)
        first = np.cumsum(n_labels) - n_labels  # (n_pairs,) each pair's first entry
        pair = np.repeat(np.arange(query.size), n_labels)  # (n_entries,)
        label = categories.indices[np.repeat(categories.indptr[items] - first, n_labels) + np.arange(pair.size)]
        if shares.shape[0] * shares.shape[1] <= DENSE_CELLS:  # few queries x labels: read a dense copy
            values = shares.toarray()[query[pair], label]  # (n_entries,)
        else:
            values = sparse_values(shares, query[pair], label)
        # summed in float64 and rounded once, so that the mean does not depend on the order of the labels
        mean = np.bincount(pair, weights=values, minlength=query.size) / np.maximum(n_labels, 1)
        best = np.zeros(query.size, np.float32)
        labelled = n_labels > 0
        if values.size:  # the entries of the pairs with labels are contiguous runs, one per pair, in pair order
            best[labelled] = np.maximum.reduceat(values, first[labelled])
        undefined = ~labelled | (histories.lengths[query] == 0)
        return float32_columns(
            candidates,
            {
                "category_share_mean": np.where(undefined, np.nan, mean),
                "category_share_max": np.where(undefined, np.nan, best),
            },
        )


@dataclass(frozen=True)
class BrandConfig:
    """Settings of :class:`BrandAffinity`.

    Parameters
    ----------
    column: catalogue column holding each item's one brand (a string; null or empty: none).
    """

    column: str = "brand"

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise ConfigError(f"BrandConfig.column must be a non-empty column name, got {self.column!r}.")


def label_codes(values: pl.Series) -> np.ndarray:
    """int64 array of shape ``(len(values),)``: a stable 64-bit code of each stripped, case-folded label (the
    first 8 bytes of its BLAKE2b digest), 0 for a null or empty one. Stable across processes and catalogues, so an
    item added after fitting gets the code of its brand's fitted items."""
    labels = values.cast(pl.String).str.strip_chars().str.to_lowercase()
    distinct = labels.drop_nulls().unique()
    distinct = distinct.filter(distinct != "")
    digests = b"".join(hashlib.blake2b(v.encode(), digest_size=8).digest() for v in distinct.to_list())
    codes = np.frombuffer(digests, dtype="<i8").copy() if digests else np.zeros(0, np.int64)
    codes[codes == 0] = 1  # 0 means "no label"
    lookup = pl.DataFrame({"label": distinct, "code": codes}, schema={"label": pl.String, "code": pl.Int64})
    joined = pl.DataFrame({"label": labels}).join(lookup, on="label", how="left", maintain_order="left")
    return joined["code"].fill_null(0).to_numpy().astype(np.int64)


class BrandAffinity(FeatureBlock):
    """How much and how recently the query consumed the candidate's brand.

    Columns (Float32):

    - ``brand_share``: the fraction of the query's history events whose item has the candidate's brand (0 when
      none has); NaN when the candidate has no brand or the history is empty.
    - ``brand_events_since``: events after the query's last event of that brand (0: its newest event); NaN
      when it never consumed the brand (or the candidate has none).

    Attributes
    ----------
    item_brand_:
        int64 array of shape ``(n_items,)``: each item's brand code (:func:`label_codes`; 0: no brand). Items
        added later (:meth:`extend_items`) get their codes from their own column, so a new item of a known brand
        matches its brand's history events.
    """

    group = "brand"
    state_attributes = ("item_brand_",)

    item_brand_: np.ndarray

    def __init__(self, config: BrandConfig | None = None) -> None:
        self.config = config if config is not None else BrandConfig()

    @property
    def names(self) -> list[str]:
        return ["brand_share", "brand_events_since"]

    def _codes(self, items: pl.DataFrame) -> np.ndarray:
        column = self.config.column
        if column not in items.columns:
            raise ConfigError(
                f"the catalogue has no brand column {column!r} (it has {items.columns}); "
                "set BrandConfig(column=...) or leave the brand group out."
            )
        if isinstance(items[column].dtype, (pl.List, pl.Array, pl.Struct)):
            raise ConfigError(f"brand column {column!r} must hold one label per item, got {items[column].dtype}.")
        return label_codes(items[column])

    def fit(self, context: FitContext) -> BrandAffinity:
        """Code every catalogue item's brand. Returns ``self``.

        Raises
        ------
        ConfigError
            The catalogue has no column ``config.column``, or it holds lists.
        """
        self.item_brand_ = self._codes(context.items)
        logger.info(
            "brands: %d labels over %d items", np.unique(self.item_brand_[self.item_brand_ != 0]).size, context.n_items
        )
        return self

    def extend_items(self, items: pl.DataFrame, item_vectors: np.ndarray, n_old: int) -> BrandAffinity:
        """A copy whose new items (rows ``n_old`` on of ``items``) carry their own brand codes (0 where
        ``items`` has no brand column)."""
        check_is_fitted(self, self.state_attributes)
        twin = copy.copy(self)
        new = items.slice(n_old)
        codes = self._codes(new) if self.config.column in new.columns else np.zeros(new.height, np.int64)
        twin.item_brand_ = np.concatenate([self.item_brand_[:n_old], codes])
        return twin

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        codes = self.item_brand_
        query, items = pair_arrays(candidates, histories, codes.size)  # (n_pairs,) each
        brand = codes[histories.item_idx]  # (n_events,)
        known = brand != 0
        events = pl.DataFrame(
            {QUERY: histories.event_user()[known], "_brand": brand[known], "_age": histories.event_age()[known]},
            schema={QUERY: pl.Int64, "_brand": pl.Int64, "_age": pl.Int64},
        )
        per_brand = events.group_by(QUERY, "_brand").agg(pl.len().alias("_n"), pl.col("_age").min().alias("_since"))
        pairs = pl.DataFrame({QUERY: query, "_brand": codes[items]}, schema={QUERY: pl.Int64, "_brand": pl.Int64})
        joined = pairs.join(per_brand, on=[QUERY, "_brand"], how="left", maintain_order="left")
        n = histories.lengths[query].astype(np.float64)  # (n_pairs,)
        count = joined["_n"].fill_null(0).to_numpy().astype(np.float64)
        undefined = (codes[items] == 0) | (n == 0)
        return float32_columns(
            candidates,
            {
                "brand_share": np.where(undefined, np.nan, count / np.maximum(n, 1.0)),
                "brand_events_since": joined["_since"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
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
