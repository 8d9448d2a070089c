"""Vector indexes over item embeddings: :class:`FaissIndex` (the fast path) and :class:`ExactIndex` (numpy).

Both take queries of shape ``(n_users, dim)`` and return the top ``k`` catalogue rows by inner product,
optionally excluding each user's history items. :class:`ExactIndex` is the reference: the test double and
the yardstick for the recall of approximate FAISS indexes.

FAISS only ``assert``s on bad input and can crash on float64; everything is checked and converted here
first: dimension, dtype (C-contiguous float32), finite values, and ``-1`` labels are dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from recsys._topk import check_k
from recsys.data import Histories
from recsys.errors import ConfigError, DataError, ModelFormatError, check_is_fitted

__all__ = ["ExactIndex", "FaissIndex", "IndexConfig"]


@dataclass(frozen=True)
class IndexConfig:
    """Settings of a vector index.

    Parameters
    ----------
    kind:
        ``"flat"``: exact inner-product search (``faiss.IndexFlatIP``). Approximate kinds come later.
    batch_size:
        Queries searched per call (bounds memory).
    n_threads:
        FAISS OpenMP threads; 0 keeps FAISS's default.
    """

    kind: Literal["flat"] = "flat"
    batch_size: int = 4096
    n_threads: int = 0

    def __post_init__(self) -> None:
        if self.kind != "flat":
            raise ConfigError(f"IndexConfig.kind={self.kind!r} is not supported; use 'flat'.")
        if self.batch_size < 1:
            raise ConfigError(f"IndexConfig.batch_size={self.batch_size} must be >= 1.")


def as_float32_matrix(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """Check ``x`` is a finite 2-D array (of width ``dim``) and return it C-contiguous float32."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (n, dim); got shape {x.shape}.")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{name} has dimension {x.shape[1]} but the index holds vectors of dimension {dim}.")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{name} has dtype {x.dtype}; expected a real numeric array (it is converted to float32).")
    if x.shape[1] == 0:
        raise DataError(f"{name} has shape {x.shape}; vectors need a dimension of at least 1.")
    with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes inf: refused just below
        x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(
            f"{name} has {bad} row(s) with NaN or infinite values (or beyond the float32 range); fix or drop them "
            "before searching."
        )
    return x


def _exclusion_mask(idx: np.ndarray, rows: np.ndarray, histories: Histories | None) -> np.ndarray:
    """Boolean (n, k'): True where the label is -1 or in that user's history."""
    excluded = idx < 0
    if histories is None:
        return excluded
    width = np.int64(max(int(histories.item_idx.max(initial=0)), int(idx.max(initial=0))) + 1)
    seen = histories.select(rows)
    seen_keys = seen.event_user() * width + seen.item_idx  # (n_seen,)
    cand_keys = np.arange(len(rows))[:, None] * width + idx
    return excluded | np.isin(cand_keys, seen_keys)


def _compact(idx: np.ndarray, scores: np.ndarray, excluded: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep, per row, the first ``k`` entries not excluded (order kept); pad with -1 / -inf."""
    order = np.argsort(excluded, axis=1, kind="stable")[:, :k]  # (n, k)
    idx = np.take_along_axis(idx, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    dropped = np.take_along_axis(excluded, order, axis=1)
    idx[dropped] = -1
    scores[dropped] = -np.inf
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx, scores


class _BaseIndex:
    """Batching, history exclusion and input checks shared by both indexes."""

    config: IndexConfig
    dim_: int | None = None
    n_items_: int | None = None

    def __init__(self, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()

    def _search_raw(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int, exclude: Histories | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items per query by inner product.

        Parameters
        ----------
        queries:
            Array of shape ``(n_queries, dim)``, any numeric dtype (converted to float32).
        k:
            Results per query.
        exclude:
            Histories aligned with ``queries`` (row ``u`` = query ``u``); their items are never returned.

        Returns
        -------
        (idx, scores):
            int64 array ``(n_queries, k)`` of catalogue rows (``-1`` where fewer than ``k`` remain) and
            float32 array ``(n_queries, k)`` of scores (``-inf`` for padding), best first.
        """
        check_is_fitted(self, ("dim_", "n_items_"))
        n_items = cast(int, self.n_items_)
        queries = as_float32_matrix(queries, "queries", self.dim_)
        k = check_k(k)
        if exclude is not None and exclude.n_users != len(queries):
            raise DataError(f"exclude has {exclude.n_users} users but there are {len(queries)} queries.")
        out_idx = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        lengths = exclude.lengths if exclude is not None else np.zeros(len(queries), np.int64)
        order = np.argsort(lengths, kind="stable")  # similar history lengths share a batch
        for start in range(0, len(queries), self.config.batch_size):
            rows = order[start : start + self.config.batch_size]
            fetch = int(min(n_items, k + lengths[rows].max(initial=0)))
            if fetch == 0:  # empty catalogue: nothing to find (FAISS asserts on k=0)
                continue
            idx, scores = self._search_raw(queries[rows], fetch)
            idx, scores = _compact(idx, scores, _exclusion_mask(idx, rows, exclude), k)
            out_idx[rows], out_scores[rows] = idx, scores
        return out_idx, out_scores


class ExactIndex(_BaseIndex):
    """Brute-force inner-product search in numpy: the reference for :class:`FaissIndex`."""

    vectors_: np.ndarray | None = None

    def fit(self, vectors: np.ndarray) -> ExactIndex:
        """Index ``vectors``: float array of shape ``(n_items, dim)``."""
        self.vectors_ = as_float32_matrix(vectors, "vectors")
        self.n_items_, self.dim_ = self.vectors_.shape
        return self

    def _search_raw(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ cast(np.ndarray, self.vectors_).T  # (n, n_items)
        n_items = scores.shape[1]
        # Sort by score descending, ties by lower item row (deterministic; FAISS orders ties its own way).
        order = np.lexsort((np.broadcast_to(np.arange(n_items), scores.shape), -scores), axis=1)[:, :k]
        return order.astype(np.int64), np.take_along_axis(scores, order, axis=1)


class FaissIndex(_BaseIndex):
    """FAISS inner-product index over item vectors; saved with FAISS's own index file format."""

    index_: Any = None

    def fit(self, vectors: np.ndarray) -> FaissIndex:
        """Index ``vectors``: float array of shape ``(n_items, dim)``."""
        import faiss

        vectors = as_float32_matrix(vectors, "vectors")
        if self.config.n_threads:
            faiss.omp_set_num_threads(self.config.n_threads)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        self.index_ = index
        self.n_items_, self.dim_ = vectors.shape
        return self

    def _search_raw(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, idx = self.index_.search(queries, k)
        return idx.astype(np.int64), scores

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write FAISS's own index file."""
        import faiss

        check_is_fitted(self, ("index_",))
        faiss.write_index(self.index_, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], config: IndexConfig | None = None) -> FaissIndex:
        """Read an index written by :meth:`save` (FAISS's format; no pickle).

        Raises
        ------
        ModelFormatError
            The file is missing or not a FAISS index.
        """
        import faiss

        self = cls(config)
        try:
            self.index_ = faiss.read_index(os.fspath(path))
        except (RuntimeError, MemoryError) as err:  # MemoryError: a corrupt header asks for exabytes
            raise ModelFormatError(f"{os.fspath(path)!r} is not a readable FAISS index file: {err}") from err
        self.n_items_, self.dim_ = self.index_.ntotal, self.index_.d
        return self
