"""Text similarity between a candidate and the query's history, from the catalogue's text vectors.

A profile is the L2-normalised mean of history item vectors (repeats count once per event); the cosine of a
candidate to a profile is the dot product of unit vectors. Pairs are processed in blocks of
:data:`~recsys.features._common.PAIR_BLOCK` so that memory stays bounded for millions of candidates.

Up to :data:`~recsys.features._common.LOOKUP_MAX_ITEMS` items, every cosine is a lookup instead: the block keeps
the catalogue's item-item cosine matrix (its Gram matrix, computed on first use) and sums or takes the maximum of
the looked-up cosines of a pair's history items, so no candidate vector is gathered (the same values to float32
rounding).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import DataError, check_is_fitted
from recsys.features import _common
from recsys.features._common import (
    PAIR_BLOCK,
    check_history_items,
    check_positive_int,
    derived,
    event_positions,
    events_by_age,
    float32_columns,
    history_counts,
    pair_arrays,
)
from recsys.features.base import FeatureBlock, FitContext
from recsys.retrieval import FaissIndex, IndexConfig

__all__ = ["LearnedSimilarity", "SimilarityConfig", "TextSimilarity"]


@dataclass(frozen=True)
class SimilarityConfig:
    """Settings of :class:`TextSimilarity`.

    Parameters
    ----------
    short_term:
        How many of the query's newest events form its short-term profile (``sim_recent_*``).
    """

    short_term: int = 5

    def __post_init__(self) -> None:
        check_positive_int("short_term", self.short_term, 5)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """float32 copy of ``matrix`` ``(n, d)`` with rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)  # (n, 1)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0).astype(np.float32)


class TextSimilarity(FeatureBlock):
    """Cosine similarities of the candidate's text vector to the query's history.

    Columns (Float32, NaN for empty histories):

    - ``sim_last``: to the newest history item.
    - ``sim_recent_mean``: to the normalised mean of the last ``short_term`` history items.
    - ``sim_recent_max``: the largest cosine to one of the last ``short_term`` history items.
    - ``sim_history``: to the normalised mean of the whole history.

    Attributes
    ----------
    vectors_:
        float32 array of shape ``(n_items, d)``: the catalogue's text vectors, L2-normalised.
    """

    group = "similarity"
    prefix = "sim"  # of the column names
    source = "item_vectors"  # the FitContext attribute holding the vectors compared
    state_attributes = ("vectors_",)

    vectors_: np.ndarray

    def __init__(self, config: SimilarityConfig | None = None) -> None:
        self.config = config if config is not None else SimilarityConfig()

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}_{name}" for name in ("last", "recent_mean", "recent_max", "history")]

    def fit(self, context: FitContext) -> TextSimilarity:
        """Keep a float32, row-normalised copy of the context's catalogue vectors. Returns ``self``."""
        vectors = getattr(context, self.source)
        if vectors is None:
            raise DataError(f"the {self.group!r} feature group needs FitContext.{self.source}; it is None.")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != context.n_items:
            raise DataError(
                f"{self.source} must have shape (n_items={context.n_items}, d), got {vectors.shape}; "
                "encode every catalogue item in item_idx order."
            )
        self.vectors_ = _unit_rows(vectors)
        return self

    def with_vectors(self, vectors: np.ndarray) -> TextSimilarity:
        """A copy comparing ``vectors`` ``(n_items, d)`` instead (row-normalised here)."""
        check_is_fitted(self, self.state_attributes)
        if vectors.ndim != 2 or vectors.shape[0] != self.vectors_.shape[0]:
            raise DataError(f"vectors must have shape ({self.vectors_.shape[0]}, d), got {vectors.shape}.")
        twin = copy.copy(self)
        twin.vectors_ = _unit_rows(np.asarray(vectors, dtype=np.float32))
        return twin

    def extend_items(self, items: pl.DataFrame, item_vectors: np.ndarray, n_old: int) -> TextSimilarity:
        """A copy that also knows the text vectors of the appended items (``item_vectors``: the whole catalogue)."""
        twin = copy.copy(self)
        twin.vectors_ = np.concatenate([self.vectors_, _unit_rows(np.asarray(item_vectors[n_old:], np.float32))])
        return twin

    def top_items(self, histories: Histories, k: int, exclude: Histories | None = None) -> np.ndarray:
        """int64 ``(n_queries, k)``: each query's ``k`` items of highest ``sim_recent_mean`` (``lex_recent_mean``
        in the lexical block): the cosine to the normalised mean of its last ``short_term`` items, best first,
        ``-1`` where the catalogue runs out and for empty histories (the pipeline's similar-items candidate
        sources). ``exclude``: histories of the same queries whose items are never chosen. Inner-product search
        over a FAISS index of the vectors (exact up to :attr:`~recsys.retrieval.IndexConfig.auto_min_items`
        items, IVF above), built on first use and never saved."""
        check_is_fitted(self, self.state_attributes)
        check_history_items(histories, self.vectors_.shape[0])
        index = derived(self, self.vectors_, _search_index, slot="_search_index")
        recent = history_counts(histories, self.vectors_.shape[0], self.config.short_term)  # (n_queries, n_items)
        profiles = _unit_rows(np.asarray(recent @ self.vectors_, dtype=np.float32))  # (n_queries, d)
        idx, _ = index.search(profiles, k, exclude=exclude)
        idx[histories.lengths == 0] = -1  # no history, no profile: nothing is similar
        return cast(np.ndarray, idx)

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, items = pair_arrays(candidates, histories, self.vectors_.shape[0])  # (n_pairs,) each
        if histories.item_idx.size == 0:  # every history is empty
            return float32_columns(candidates, {name: np.full(query.size, np.nan) for name in self.names})
        n_items, short = self.vectors_.shape[0], self.config.short_term
        bags = (history_counts(histories, n_items, short), history_counts(histories, n_items))  # (n_queries, n_items)
        if n_items <= _common.LOOKUP_MAX_ITEMS:
            columns = self._looked_up(query, items, histories, bags)
            return self._named(candidates, histories, query, columns)
        order = np.argsort(query, kind="stable")  # pairs grouped by query
        segments = _Segments(query[order])
        dots = np.empty((query.size, short + 2), np.float32)  # per pair: recent items (newest first), 2 profiles
        for first, stop in segments.blocks(context_rows=short + 2):
            pairs = slice(segments.start[first], segments.start[stop])
            sel, seg, col = order[pairs], segments.of_pair[pairs] - first, segments.column[pairs]
            index = np.zeros((stop - first, segments.width), np.int64)  # padding slots: row 0, never read back
            index[seg, col] = items[sel]
            cand = self.vectors_[index]  # (s, w, d): one gather, no zero-filled array to scatter into
            rows, inverse = np.unique(segments.query[first:stop], return_inverse=True)
            context = self._contexts(histories, rows, bags)[inverse]  # (s, d, short + 2)
            dots[sel] = np.matmul(cand, context)[seg, col]  # (b, short + 2)
        ages = histories.lengths[query][:, None] > np.arange(short)  # (n_pairs, short): the event exists
        columns = [  # in the order of `names`
            dots[:, 0],
            dots[:, short],
            np.where(ages, dots[:, :short], -np.inf).max(axis=1),
            dots[:, short + 1],
        ]
        return self._named(candidates, histories, query, columns)

    def _named(
        self, candidates: pl.DataFrame, histories: Histories, query: np.ndarray, columns: list[np.ndarray]
    ) -> pl.DataFrame:
        """The four columns (in the order of ``names``) as Float32, NaN for queries without history."""
        empty = histories.lengths[query] == 0
        named = zip(self.names, columns, strict=True)
        return float32_columns(candidates, {name: np.where(empty, np.nan, column) for name, column in named})

    def _looked_up(
        self, query: np.ndarray, items: np.ndarray, histories: Histories, bags: tuple[sp.csr_matrix, sp.csr_matrix]
    ) -> list[np.ndarray]:
        """The four columns from the item-item cosines (small catalogues). The recent cosines are looked up age by
        age (newest first) for the pairs whose history is that long; the whole-history sum reads the product of
        the history counts and the cosine matrix, a block of queries at a time; each sum is divided by its
        profile's norm (the norm of the summed unit vectors)."""
        gram = derived(self, self.vectors_, lambda v: v @ v.T)  # (n_items, n_items) float32 cosines, symmetric
        order, newest, n_at_age = events_by_age(histories, query, self.config.short_term)
        cand = items[order]
        last, recent_sum = np.zeros(query.size, np.float32), np.zeros(query.size, np.float32)
        recent_max = np.full(query.size, -np.inf, np.float32)
        for age, n in enumerate(n_at_age):  # the first n sorted pairs have more than `age` events
            cosine = gram[histories.item_idx[newest[:n] - age], cand[:n]]  # (n,)
            recent_sum[:n] += cosine
            np.maximum(recent_max[:n], cosine, out=recent_max[:n])
            if age == 0:
                last[:n] = cosine
        history_sum = np.zeros(query.size, np.float32)
        by_query = np.argsort(query, kind="stable")
        rows, starts = np.unique(query[by_query], return_index=True)
        per_block = max(1, _common.DENSE_CELLS // gram.shape[0])
        for first in range(0, rows.size, per_block):
            block = rows[first : first + per_block]
            sums = np.asarray(bags[1][block] @ gram, dtype=np.float32)  # (len(block), n_items)
            stop = starts[first + per_block] if first + per_block < rows.size else query.size
            pairs = by_query[starts[first] : stop]
            history_sum[pairs] = sums[np.searchsorted(block, query[pairs]), items[pairs]]
        norms = [np.linalg.norm(np.asarray(bag @ self.vectors_, dtype=np.float32), axis=1) for bag in bags]
        unsorted = np.empty_like(order)
        unsorted[order] = np.arange(order.size)
        recent_mean = _divided(recent_sum, norms[0][query[order]])[unsorted]
        return [last[unsorted], recent_mean, recent_max[unsorted], _divided(history_sum, norms[1][query])]

    def _contexts(
        self, histories: Histories, rows: np.ndarray, bags: tuple[sp.csr_matrix, sp.csr_matrix]
    ) -> np.ndarray:
        """float32 ``(len(rows), d, short_term + 2)``: for each query row, the vectors of its last ``short_term``
        items (newest first, zero where the history is shorter), then its recent and whole-history profiles."""
        recent = []
        for age in range(self.config.short_term):
            positions, valid = event_positions(histories, rows, age)
            recent.append(self.vectors_[histories.item_idx[positions]] * valid[:, None])  # (n_rows, d)
        profiles = [_unit_rows(np.asarray(bag[rows] @ self.vectors_, dtype=np.float32)) for bag in bags]
        return np.stack(recent + profiles, axis=2)


def _search_index(vectors: np.ndarray) -> FaissIndex:
    """An inner-product index over ``vectors`` (the catalogue's unit vectors), for :meth:`TextSimilarity.top_items`."""
    return FaissIndex(IndexConfig(kind="auto")).fit(vectors)


def _divided(sums: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``sums / norms``, 0 where a norm is 0 (a profile of zero vectors has cosine 0 with everything)."""
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)


class LearnedSimilarity(TextSimilarity):
    """:class:`TextSimilarity`'s four cosines in the user encoder's learned item space (``learned_last``,
    ``learned_recent_mean``, ``learned_recent_max``, ``learned_history``).

    The memory encoder's item tower is trained so that a history's items point to the next one, so two items
    close in that space are items that users take one after the other, not only items whose texts read alike.
    Fitted on ``context.learned_vectors``; a pipeline that cross-fits its encoders gives each fold's queries that
    fold's vectors (:meth:`with_vectors`), so no feature of a training query comes from an encoder trained on it.
    """

    group = "learned"
    prefix = "learned"
    source = "learned_vectors"


class _Segments:
    """Pairs sorted by query, cut into segments of at most ``width`` pairs of one query.

    A block of segments becomes one padded ``(segments, width, d)`` array of candidate vectors that a batched
    matrix product scores against each segment's query context, so every candidate vector is gathered once.
    ``width`` follows the mean number of pairs per query: at most 128, and split evenly so that a query of the
    mean size fills whole segments (273 pairs: three segments of 91, not 128 + 128 + 17), which bounds the padding.

    Attributes
    ----------
    of_pair, column: int64 ``(n_pairs,)``: each sorted pair's segment and its slot in that segment.
    start: int64 ``(n_segments + 1,)``: each segment's first sorted pair, then ``n_pairs``.
    query: ``(n_segments,)``: each segment's query.
    """

    def __init__(self, sorted_query: np.ndarray) -> None:
        n = sorted_query.size
        new_query = np.r_[True, sorted_query[1:] != sorted_query[:-1]] if n else np.zeros(0, bool)
        query_start = np.flatnonzero(new_query)  # (n_queries,)
        mean = max(math.ceil(n / max(query_start.size, 1)), 1)
        self.width = min(math.ceil(mean / math.ceil(mean / 128)), 128)  # a mean query fills whole segments
        slot = np.arange(n) - np.repeat(query_start, np.diff(np.r_[query_start, n]))  # position within its query
        self.column = slot % self.width
        self.of_pair = np.cumsum(new_query | (self.column == 0)) - 1
        self.start = np.r_[np.flatnonzero(new_query | (self.column == 0)), n].astype(np.int64)
        self.query = sorted_query[self.start[:-1]]

    def blocks(self, context_rows: int) -> Iterator[tuple[int, int]]:
        """``(first, stop)`` segment ranges whose padded candidate vectors plus ``context_rows`` context vectors
        per segment number at most :data:`PAIR_BLOCK` (so a block holds about as many vectors as a pair block)."""
        per_block = max(1, PAIR_BLOCK // (self.width + context_rows))
        for first in range(0, self.query.size, per_block):
            yield first, min(first + per_block, self.query.size)
