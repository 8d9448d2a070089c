"""Vector indexes over item embeddings: :class:`FaissIndex` (the fast path) and :class:`ExactIndex` (numpy).

Both take queries of shape ``(n_users, dim)`` and return the top ``k`` catalogue rows by inner product,
optionally excluding each user's history items. :class:`ExactIndex` is the reference: the test double and
the yardstick for the recall of approximate FAISS indexes.

FAISS only ``assert``s on bad input and can crash on float64; everything is checked and converted here
first: dimension, dtype (C-contiguous float32), finite values, and ``-1`` labels are dropped.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from recsys._topk import check_k
from recsys.data import Histories
from recsys.errors import ConfigError, DataError, ModelFormatError, check_is_fitted

__all__ = ["ExactIndex", "FaissIndex", "IndexConfig"]


IndexKind = Literal["flat", "ivf", "hnsw", "auto"]
_KINDS = ("flat", "ivf", "hnsw", "auto")


def _check_int(name: str, value: object, minimum: int, fix: str, optional: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int >= ``minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ConfigError(f"IndexConfig.{name}={value!r} is invalid: expected {allowed}; {fix}.")


@dataclass(frozen=True)
class IndexConfig:
    """Settings of a vector index.

    Parameters
    ----------
    kind:
        ``"flat"``: exact inner-product search (``faiss.IndexFlatIP``), the default.
        ``"ivf"``: inverted file (``faiss.IndexIVFFlat``, inner product): k-means splits the items into
        ``nlist`` cells and a query scans the ``nprobe`` nearest cells; approximate, for 10^5-10^6+ items.
        ``"hnsw"``: graph search (``faiss.IndexHNSWFlat``, inner product); approximate, no training, slower
        to build and larger in memory than IVF.
        ``"auto"``: ``"flat"`` below ``auto_min_items`` items, ``"ivf"`` from there on (decided at ``fit``).
        An empty catalogue always gets a flat index (there is nothing to train on).
    batch_size:
        Queries searched per call (bounds memory).
    n_threads:
        FAISS OpenMP threads; 0 keeps FAISS's default.
    nlist:
        IVF cells. ``None``: ``round(4 * sqrt(n_items))``, at most ``n_items // 39`` (FAISS's minimum of 39
        training points per cell) and at least 1: 128 cells at 5,000 items, 1,265 at 10^5, 4,000 at 10^6.
        A given ``nlist`` above ``n_items`` is clamped to ``n_items`` with a warning (k-means needs at least
        one point per cell).
    nprobe:
        IVF cells scanned per query (clamped to ``nlist``); more is slower and closer to exact. ``nprobe =
        nlist`` scans everything and returns the exact answer.
    max_train_points:
        IVF k-means trains on a seeded random sample of at most this many items. ``None``: ``64 * nlist``
        (FAISS's k-means asks for 39 to 256 points per cell).
    hnsw_m:
        HNSW neighbours per node (graph degree); more is more accurate, slower to build and larger.
    ef_construction:
        HNSW candidate-list size while building.
    ef_search:
        HNSW candidate-list size while searching (FAISS uses at least the number of results asked for).
    auto_min_items:
        Catalogue size from which ``kind="auto"`` picks ``"ivf"``.
    seed:
        Seed of the IVF training sample and of k-means.

    ``nprobe`` and ``ef_search`` are search-time settings: :meth:`FaissIndex.load` applies the config's values
    to the loaded index, so they can be changed without rebuilding it.
    """

    kind: IndexKind = "flat"
    batch_size: int = 4096
    n_threads: int = 0
    nlist: int | None = None
    nprobe: int = 32
    max_train_points: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    auto_min_items: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"IndexConfig.kind={self.kind!r} is not supported; use one of {list(_KINDS)}.")
        _check_int("batch_size", self.batch_size, 1, "it is the number of queries searched per call")
        _check_int("n_threads", self.n_threads, 0, "use 0 for FAISS's default")
        _check_int("nlist", self.nlist, 1, "use None to derive it from the number of items", optional=True)
        _check_int("nprobe", self.nprobe, 1, "it is the number of IVF cells scanned per query")
        _check_int("max_train_points", self.max_train_points, 1, "use None for 64 * nlist", optional=True)
        _check_int("hnsw_m", self.hnsw_m, 2, "typical values are 16 to 64")
        _check_int("ef_construction", self.ef_construction, 1, "typical values are 40 to 500")
        _check_int("ef_search", self.ef_search, 1, "typical values are 16 to 512")
        _check_int("auto_min_items", self.auto_min_items, 1, "it is the catalogue size from which 'auto' uses IVF")
        _check_int("seed", self.seed, 0, "any non-negative integer")
        if self.nlist is not None and self.max_train_points is not None and self.max_train_points < self.nlist:
            raise ConfigError(
                f"IndexConfig.max_train_points={self.max_train_points} is below nlist={self.nlist}; k-means needs "
                "at least one training point per cell: raise max_train_points (39 * nlist or more) or use None."
            )

    def resolved_kind(self, n_items: int) -> Literal["flat", "ivf", "hnsw"]:
        """The index built for ``n_items`` items: ``kind``, with ``"auto"`` decided and an empty catalogue flat."""
        if n_items == 0 or self.kind == "flat":
            return "flat"
        if self.kind == "auto":
            return "ivf" if n_items >= self.auto_min_items else "flat"
        return self.kind

    def resolved_nlist(self, n_items: int) -> int:
        """IVF cells for ``n_items`` (>= 1) items; see ``nlist``."""
        if self.nlist is None:
            return int(min(max(1, n_items // 39), max(1, round(4 * math.sqrt(n_items)))))
        if self.nlist > n_items:
            warnings.warn(
                f"IndexConfig.nlist={self.nlist} exceeds the {n_items} items; using nlist={n_items} (k-means needs "
                "one item per cell). Use nlist=None to derive it from the number of items.",
                stacklevel=3,
            )
            return n_items
        return self.nlist


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
    seen_keys = np.sort(seen.event_user() * width + seen.item_idx)  # (n_seen,)
    if seen_keys.size == 0:
        return excluded
    cand_keys = np.arange(len(rows))[:, None] * width + idx  # (n, k')
    at = np.minimum(np.searchsorted(seen_keys, cand_keys), seen_keys.size - 1)  # faster than np.isin's sort
    return excluded | (seen_keys[at] == cand_keys)


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


def _fetch_batches(lengths: np.ndarray, k: int, batch_size: int, min_batch: int = 64) -> Iterator[np.ndarray]:
    """Query rows in batches of at most ``batch_size`` whose ``k + history length`` (the results a query must
    fetch so that ``k`` survive the exclusion of its history) lie within a factor of 2 of each other, since a
    batch fetches for its longest history: one batch of 2,048 users whose histories run from 2 to 1,694 events
    made every query fetch 1,894 results (10^5 items, k = 200: search 0.97 -> 0.36 s per 4,096 users). A group
    of fewer than ``min_batch`` queries joins the next (longer) one: many tiny FAISS calls cost more than they
    save, and FAISS computes the inner products of fewer than 20 queries without BLAS (other rounding)."""
    order = np.argsort(lengths, kind="stable")  # shortest history first
    bucket = np.floor(np.log2((k + lengths[order]) / k)).astype(np.int64)  # 0: k + length < 2k, 1: < 4k, ...
    pending = np.zeros(0, np.int64)
    groups = np.split(order, np.flatnonzero(np.diff(bucket)) + 1)
    for position, group in enumerate(groups):
        pending = np.concatenate([pending, group])
        if pending.size < min_batch and position < len(groups) - 1:
            continue
        for start in range(0, pending.size, batch_size):
            yield pending[start : start + batch_size]
        pending = np.zeros(0, np.int64)


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
        for rows in _fetch_batches(lengths, k, self.config.batch_size):
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
    """FAISS inner-product index over item vectors (exact or approximate, see :class:`IndexConfig`); saved with
    FAISS's own index file format."""

    index_: Any = None

    def fit(self, vectors: np.ndarray) -> FaissIndex:
        """Index ``vectors``: float array of shape ``(n_items, dim)``.

        An IVF index first trains k-means on a seeded sample of the vectors (see ``max_train_points``).
        """
        import faiss

        vectors = as_float32_matrix(vectors, "vectors")
        if self.config.n_threads:
            faiss.omp_set_num_threads(self.config.n_threads)
        n_items, dim = vectors.shape
        kind = self.config.resolved_kind(n_items)
        if kind == "ivf":
            index = self._train_ivf(vectors)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.config.ef_construction
        else:
            index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        self.index_ = _apply_search_settings(index, self.config)
        self.n_items_, self.dim_ = n_items, dim
        return self

    def _train_ivf(self, vectors: np.ndarray) -> Any:
        """An untrained-then-trained ``IndexIVFFlat`` (inner product) for ``vectors`` (n >= 1, dim)."""
        import faiss

        n_items, dim = vectors.shape
        nlist = self.config.resolved_nlist(n_items)
        n_train = min(n_items, self.config.max_train_points or 64 * nlist)
        rng = np.random.default_rng(self.config.seed)
        sample = vectors if n_train == n_items else vectors[np.sort(rng.choice(n_items, n_train, replace=False))]
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.config.seed
        index.cp.max_points_per_centroid = max(256, -(-n_train // nlist))  # we sampled already: no re-sampling
        index.train(sample)
        return index

    def _search_raw(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, idx = self.index_.search(queries, k)
        return idx.astype(np.int64), scores

    @property
    def kind_(self) -> Literal["flat", "ivf", "hnsw"]:
        """The kind of the fitted FAISS index (``"auto"`` resolved)."""
        check_is_fitted(self, ("index_",))
        return _kind_of(self.index_)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write FAISS's own index file."""
        import faiss

        check_is_fitted(self, ("index_",))
        faiss.write_index(self.index_, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], config: IndexConfig | None = None) -> FaissIndex:
        """Read an index written by :meth:`save` (FAISS's format; no pickle).

        The search-time settings of ``config`` (``nprobe``, ``ef_search``) are applied to the loaded index;
        the file decides its kind and build-time settings.

        Raises
        ------
        ModelFormatError
            The file is missing, not a FAISS index, or a FAISS index of a kind this class does not build.
        """
        import faiss

        self = cls(config)
        try:
            index = faiss.read_index(os.fspath(path))
        except (RuntimeError, MemoryError) as err:  # MemoryError: a corrupt header asks for exabytes
            raise ModelFormatError(f"{os.fspath(path)!r} is not a readable FAISS index file: {err}") from err
        if not isinstance(index, _supported_types()):
            raise ModelFormatError(
                f"{os.fspath(path)!r} holds a {type(index).__name__}; expected IndexFlatIP, IndexIVFFlat or "
                "IndexHNSWFlat as written by FaissIndex.save."
            )
        if self.config.n_threads:
            faiss.omp_set_num_threads(self.config.n_threads)
        self.index_ = _apply_search_settings(index, self.config)
        self.n_items_, self.dim_ = self.index_.ntotal, self.index_.d
        return self


def _supported_types() -> tuple[type, ...]:
    """The FAISS index classes :class:`FaissIndex` builds (and so loads)."""
    import faiss

    return (faiss.IndexFlatIP, faiss.IndexIVFFlat, faiss.IndexHNSWFlat)


def _kind_of(index: Any) -> Literal["flat", "ivf", "hnsw"]:
    import faiss

    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    return "flat"


def _apply_search_settings(index: Any, config: IndexConfig) -> Any:
    """Set ``nprobe`` (IVF, clamped to ``nlist``) or ``efSearch`` (HNSW) from ``config``; return ``index``."""
    kind = _kind_of(index)
    if kind == "ivf":
        index.nprobe = min(config.nprobe, index.nlist)
    elif kind == "hnsw":
        index.hnsw.efSearch = config.ef_search
    return index
