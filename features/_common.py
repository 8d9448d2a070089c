"""Helpers shared by the feature blocks: config checks, candidate pair arrays, pair blocks, output columns."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import ConfigError, DataError
from recsys.features.base import QUERY
from recsys.schema import ITEM_IDX

__all__ = [
    "DENSE_CELLS",
    "DENSE_MAX_ITEMS",
    "LOOKUP_MAX_ITEMS",
    "PAIR_BLOCK",
    "RowBuffer",
    "check_history_items",
    "check_positive_float",
    "check_positive_int",
    "derived",
    "event_positions",
    "events_by_age",
    "float32_columns",
    "history_counts",
    "log_share_ratio",
    "pair_arrays",
    "pair_blocks",
    "sparse_values",
]

PAIR_BLOCK = 8_192
"""Candidate pairs per block of pairwise vector or sparse operations (bounds temporary memory). Small on
purpose: a block of 8,192 gathered 384-d float32 vectors (12 MiB) is reused from the heap, whereas 65,536 (96 MiB)
went to fresh pages on every block; serving the saved unisrec model went from 1,404 to 1,712 users/s, same output."""
DENSE_MAX_ITEMS = 1 << 17
"""Up to this many items, the pairs of a chunk of queries read their values from a dense ``(queries, n_items)``
buffer into which the chunk's sparse score rows are written (then zeroed again); above it, by sorted-key lookups in the
sparse rows (:func:`sparse_values`), because the buffer would hold too few queries per chunk."""
DENSE_CELLS = 1 << 22
"""float32 cells of that buffer (16 MB)."""
LOOKUP_MAX_ITEMS = 5_000
"""Up to this many catalogue items, the similarity and co-occurrence blocks keep their item-item matrix dense (float32,
at most 95 MiB each, derived on first use and never saved) and read each pair's values by direct lookups, age by
age, instead of gathering vectors or sparse rows. Measured on the saved models, one chunk of 2,048 users, one
thread: unisrec (4,385 items, 560,537 pairs) similarity 0.33 -> 0.13 s and co-occurrence 0.14 -> 0.08 s; ml-100k
(1,682 items, 216,006 pairs) 0.14 -> 0.07 s and 0.10 -> 0.025 s."""


def derived(owner: object, source: object, make: Callable[[Any], Any], slot: str = "_derived") -> Any:
    """``make(source)``, kept on ``owner`` for as long as ``source`` is the same object: a block's dense copy of
    its fitted matrix, say. A copy of the block that gets a new ``source`` (``extend_items``, ``with_vectors``)
    derives its own on first use instead of reading a stale one; a block holds one derived value per ``slot``."""
    cached = owner.__dict__.get(slot)
    if cached is None or cached[0] is not source:
        cached = (source, make(source))
        owner.__dict__[slot] = cached
    return cached[1]


def check_positive_int(name: str, value: object, example: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an ``int`` (not ``bool``) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (for example {example}), got {value!r}.")


def check_positive_float(name: str, value: object, example: float) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a positive finite number (not ``bool``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number (for example {example}), got {value!r}.")


def check_history_items(histories: Histories, n_items: int) -> None:
    """Raise :class:`DataError` unless every history event is a row of a catalogue of ``n_items`` items."""
    if histories.item_idx.size and (histories.item_idx.min() < 0 or histories.item_idx.max() >= n_items):
        raise DataError(
            f"histories reference item rows outside 0..{n_items - 1}; build them with the same item_index "
            "as the fitted catalogue."
        )


def pair_arrays(
    candidates: pl.DataFrame, histories: Histories, n_items: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' ``query`` and ``item_idx`` as int64 arrays of shape ``(n_pairs,)``, range-checked.

    Raises
    ------
    DataError
        A ``query`` is not a row of ``histories`` or an ``item_idx`` is outside ``0..n_items - 1``.
    """
    query = candidates[QUERY].to_numpy().astype(np.int64)
    items = candidates[ITEM_IDX].to_numpy().astype(np.int64)
    if query.size and (query.min() < 0 or query.max() >= histories.n_users):
        raise DataError(
            f"candidate column {QUERY!r} must lie in 0..{histories.n_users - 1} (rows of the histories passed "
            f"beside it), got values in {query.min()}..{query.max()}."
        )
    if n_items is not None and items.size and (items.min() < 0 or items.max() >= n_items):
        raise DataError(
            f"candidate column {ITEM_IDX!r} must lie in 0..{n_items - 1} (rows of the fitted catalogue), got values "
            f"in {items.min()}..{items.max()}; fit the block on the same catalogue."
        )
    return query, items


def pair_blocks(n_pairs: int, size: int | None = None) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` (default :data:`PAIR_BLOCK`) pairs covering ``0..n_pairs``."""
    size = size if size is not None else PAIR_BLOCK
    for start in range(0, n_pairs, size):
        yield slice(start, min(start + size, n_pairs))


def event_positions(histories: Histories, query: np.ndarray, age: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR positions of the event ``age`` steps before each query's newest (``age=0``: the newest).

    Returns
    -------
    positions, valid:
        int64 and bool arrays of shape ``(n_pairs,)``; ``positions`` is only meaningful where ``valid``
        (the query has more than ``age`` events) and is clipped to a legal index elsewhere.
    """
    valid = histories.lengths[query] > age
    positions = np.where(valid, histories.indptr[query + 1] - 1 - age, 0)
    return positions, valid


def events_by_age(histories: Histories, query: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ordered so that, age by age, the pairs whose query has an event of that age form a prefix.

    Returns
    -------
    order:
        int64 ``(n_pairs,)``: the pairs by how many of their query's newest ``depth`` events exist, most first.
    newest:
        int64 ``(n_pairs,)``: the CSR position of each ordered pair's newest event (``newest - age`` is the event
        ``age`` steps before it, valid for the first ``n_at_age[age]`` ordered pairs).
    n_at_age:
        int64 ``(depth,)``: how many ordered pairs have an event of each age ``0 .. depth - 1``.
    """
    recent = np.minimum(histories.lengths[query], depth)  # (n_pairs,) events of each pair's query, at most depth
    order = np.argsort(-recent, kind="stable")
    newest = (histories.indptr[query + 1] - 1)[order]
    n_at_age = np.searchsorted(-recent[order], -np.arange(depth), side="left")
    return order, newest, n_at_age


def history_counts(histories: Histories, n_items: int, max_events: int | None = None) -> sp.csr_matrix:
    """float32 csr matrix of shape ``(n_queries, n_items)``: how often each item occurs in each history.

    ``max_events`` keeps only each history's last ``max_events`` events (``None``: all).
    """
    check_history_items(histories, n_items)
    users = histories.event_user()  # (n_events,)
    keep = np.ones(users.size, bool)
    if max_events is not None:
        keep = histories.event_age() < max_events
    ones = np.ones(int(keep.sum()), np.float32)
    shape = (histories.n_users, n_items)
    return sp.coo_matrix((ones, (users[keep], histories.item_idx[keep])), shape=shape).tocsr()


def log_share_ratio(
    part: np.ndarray, part_total: np.ndarray | float, whole: np.ndarray, whole_total: float, n_items: int
) -> np.ndarray:
    """float64: ``log((part + 1) / (part_total + n_items)) - log((whole + 1) / (whole_total + n_items))``, the log
    ratio of an item's add-one smoothed share of some events (``part`` of ``part_total``) to its smoothed share of
    all of them (``whole`` of ``whole_total``); 0 where the two shares are equal."""
    part, whole = np.asarray(part, np.float64), np.asarray(whole, np.float64)
    return np.log((part + 1.0) / (part_total + n_items)) - np.log((whole + 1.0) / (whole_total + n_items))


def float32_columns(candidates: pl.DataFrame, columns: dict[str, np.ndarray]) -> pl.DataFrame:
    """``candidates`` with each array of ``columns`` added as a Float32 column (NaN stays NaN, not null)."""
    return candidates.with_columns(
        [pl.Series(name, np.asarray(values, dtype=np.float32), dtype=pl.Float32) for name, values in columns.items()]
    )


def sparse_values(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows, cols]`` as a float32 array of shape ``(n,)`` (0 where the entry is not stored).

    The rows looked up are copied out once (only the distinct ones) and every entry of that copy gets the sorted
    key ``row * n_cols + col``, so one ``np.searchsorted`` finds all ``n`` lookups: the cost follows the entries
    of the rows looked up plus ``n log`` of them. A vectorised binary search inside each row (about ``log2(longest
    row)`` numpy passes, each a random gather from the whole matrix) took 1.5-1.8x longer on the co-occurrence
    rows of a 10^6-item catalogue (3 x 10^8 entries). ``matrix`` must not hold duplicates; its column indices
    are sorted in place if they are not.
    """
    if not matrix.has_sorted_indices:
        matrix.sort_indices()
    if matrix.nnz == 0 or rows.size == 0:
        return np.zeros(rows.size, np.float32)
    distinct, local = np.unique(rows, return_inverse=True)  # (m,), (n,): each lookup's row in the copy
    touched = matrix if distinct.size == matrix.shape[0] else matrix[distinct]  # csr (m, n_cols), sorted indices
    if touched.nnz == 0:
        return np.zeros(rows.size, np.float32)
    width = np.int64(matrix.shape[1])
    keys = np.repeat(np.arange(distinct.size, dtype=np.int64) * width, np.diff(touched.indptr))
    keys += touched.indices  # (entries,) ascending: by row, then column
    wanted = local.astype(np.int64).ravel() * width + cols
    at = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    return np.where(keys[at] == wanted, touched.data[at], 0).astype(np.float32)


class RowBuffer:
    """A dense float32 ``(rows, n_items)`` buffer of :data:`DENSE_CELLS` cells through which pairs read sparse rows.

    :meth:`read` writes a chunk's csr rows into it, reads the pairs' cells, and zeroes the written cells again,
    so the buffer is allocated once and never cleared whole. Used up to :data:`DENSE_MAX_ITEMS` items.

    Attributes
    ----------
    rows: how many sparse rows (queries) one chunk may hold.
    """

    def __init__(self, n_items: int, n_rows: int) -> None:
        self.rows = max(1, DENSE_CELLS // max(n_items, 1))
        self._cells = np.zeros((min(self.rows, max(n_rows, 1)), n_items), np.float32)

    def read(self, matrix: sp.csr_matrix, row_ids: np.ndarray, pair_rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 ``(n_pairs,)``: ``matrix`` row ``i`` placed at buffer row ``row_ids[i]``, read at
        ``(pair_rows, cols)``; 0 where nothing was written."""
        at = np.repeat(row_ids, np.diff(matrix.indptr)), matrix.indices
        self._cells[at] = matrix.data
        values = self._cells[pair_rows, cols]
        self._cells[at] = 0
        return values
