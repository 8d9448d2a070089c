"""Text similarity between a candidate and the query's history, from the catalogue's text vectors.

A profile is the L2-normalised mean of history item vectors (repeats count once per event); the cosine of a
candidate to a profile is the dot product of unit vectors. Pairs are processed in blocks of
:data:`~recsys.features._common.PAIR_BLOCK` so that memory stays bounded for millions of candidates.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import DataError
from recsys.features._common import (
    check_positive_int,
    event_positions,
    float32_columns,
    history_counts,
    pair_arrays,
    pair_blocks,
)
from recsys.features.base import FeatureBlock, FitContext

__all__ = ["SimilarityConfig", "TextSimilarity"]


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


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 ``(n,)``: the dot product of each row of ``a`` ``(n, d)`` with the same row of ``b``."""
    return np.einsum("ij,ij->i", a, b)


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
    state_attributes = ("vectors_",)

    vectors_: np.ndarray

    def __init__(self, config: SimilarityConfig | None = None) -> None:
        self.config = config if config is not None else SimilarityConfig()

    @property
    def names(self) -> list[str]:
        return ["sim_last", "sim_recent_mean", "sim_recent_max", "sim_history"]

    def fit(self, context: FitContext) -> TextSimilarity:
        """Keep a float32, row-normalised copy of ``context.item_vectors``. Returns ``self``."""
        vectors = np.asarray(context.item_vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != context.n_items:
            raise DataError(
                f"item_vectors must have shape (n_items={context.n_items}, d), got {vectors.shape}; "
                "encode every catalogue item in item_idx order."
            )
        self.vectors_ = _unit_rows(vectors)
        return self

    def extend_items(self, items: pl.DataFrame, item_vectors: np.ndarray, n_old: int) -> TextSimilarity:
        """A copy that also knows the text vectors of the appended items (``item_vectors``: the whole catalogue)."""
        twin = copy.copy(self)
        twin.vectors_ = np.concatenate([self.vectors_, _unit_rows(np.asarray(item_vectors[n_old:], np.float32))])
        return twin

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        query, items = pair_arrays(candidates, histories, self.vectors_.shape[0])  # (n_pairs,) each
        n_items = self.vectors_.shape[0]
        recent_bag = history_counts(histories, n_items, self.config.short_term)  # (n_queries, n_items)
        whole_bag = history_counts(histories, n_items)  # (n_queries, n_items)
        out = {name: np.empty(query.size, np.float32) for name in self.names}
        order = np.argsort(query, kind="stable")  # blocks of pairs then share few queries
        for block in pair_blocks(query.size):
            sel = order[block]
            cand = self.vectors_[items[sel]]  # (b, d)
            out["sim_last"][sel] = self._last(histories, query[sel], cand)
            out["sim_recent_max"][sel] = self._recent_max(histories, query[sel], cand)
            out["sim_recent_mean"][sel] = self._profile_cosine(recent_bag, query[sel], cand)
            out["sim_history"][sel] = self._profile_cosine(whole_bag, query[sel], cand)
        empty = histories.lengths[query] == 0
        return float32_columns(candidates, {name: np.where(empty, np.nan, out[name]) for name in self.names})

    def _last(self, histories: Histories, query: np.ndarray, cand: np.ndarray) -> np.ndarray:
        positions, _ = event_positions(histories, query, 0)  # (b,)
        if histories.item_idx.size == 0:
            return np.zeros(query.size, np.float32)
        return _row_dots(self.vectors_[histories.item_idx[positions]], cand)

    def _recent_max(self, histories: Histories, query: np.ndarray, cand: np.ndarray) -> np.ndarray:
        best = np.full(query.size, -np.inf, np.float32)  # (b,)
        for age in range(min(self.config.short_term, int(histories.lengths.max(initial=0)))):
            positions, valid = event_positions(histories, query, age)
            dots = _row_dots(self.vectors_[histories.item_idx[positions]], cand)
            best = np.where(valid, np.maximum(best, dots), best)
        return best

    def _profile_cosine(self, bag: sp.csr_matrix, query: np.ndarray, cand: np.ndarray) -> np.ndarray:
        rows, inverse = np.unique(query, return_inverse=True)  # profiles of this block's queries only
        profiles = _unit_rows(np.asarray(bag[rows] @ self.vectors_, dtype=np.float32))  # (n_rows, d)
        return _row_dots(profiles[inverse], cand)
