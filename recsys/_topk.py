"""Top-k selection over dense score matrices, and the long result table.

Ties are broken by the lower item index, so results are deterministic whatever the partition algorithm
does. Excluded items score ``-inf``; an ``-inf`` entry is never a recommendation and comes back with
index ``-1`` (it is dropped by :func:`to_recommendations`).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import ConfigError, DataError
from recsys.schema import ITEM_ID, RANK, SCORE, USER_ID, empty_recommendations

__all__ = [
    "MERGE_MAX_ITEMS",
    "check_k",
    "mask_seen",
    "merge_top_lists",
    "to_recommendations",
    "topk",
    "topk_positive",
    "topk_ranked",
]

MERGE_CELLS = 1 << 18
"""int64 cells of :func:`merge_top_lists`' table of (query, item) slots, queries per chunk times items: 2 MB stays
in the cache (unisrec, 8,442 users, 2.7 million list entries: 0.12 s; 0.24 s with a 32 MB table)."""
MERGE_MAX_ITEMS = 16_384
"""Catalogues up to this size merge candidate lists by :func:`merge_top_lists` (at least 16 queries per chunk);
larger ones by a polars ``group_by``, where a chunk would hold too few queries."""
_SOURCE_SHIFT = 40  # a slot id is (source << 40) | (its row among that source's new rows)


def check_k(k: object) -> int:
    """``k`` as an int; :class:`ConfigError` unless it is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer (for example 10), got k={k!r}.")
    return int(k)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_scores(scores: np.ndarray) -> np.ndarray:
    """``scores`` as a float array: integer and boolean scores become float32 (they must hold ``-inf``)."""
    if not isinstance(scores, np.ndarray) or scores.ndim != 2:
        shape = getattr(scores, "shape", None)
        raise DataError(f"scores must be a 2-D numpy array (n_users, n_items), got shape {shape}.")
    if scores.dtype == np.bool_ or np.issubdtype(scores.dtype, np.integer):
        return scores.astype(np.float32)
    if not np.issubdtype(scores.dtype, np.floating):
        raise DataError(f"scores have dtype {scores.dtype}; expected real numbers (float32).")
    if np.isnan(scores).any():
        raise DataError("scores hold NaN; fix the scoring stage or replace NaN with -inf before topk.")
    if scores.dtype.itemsize > 4 and scores.size:  # float64 values beyond float32 would come back as +-inf
        finite = np.abs(scores[np.isfinite(scores)])
        if finite.size and finite.max() > _FLOAT32_MAX:
            raise DataError(f"scores hold finite values beyond the float32 range (up to {finite.max():.3g}); rescale.")
    return scores


def mask_seen(scores: np.ndarray, histories: Histories) -> None:
    """Set ``scores[u, i] = -inf`` in place for every item ``i`` in user ``u``'s history.

    Parameters
    ----------
    scores:
        Writable float array of shape ``(histories.n_users, n_items)``.
    histories:
        Row ``u`` of ``scores`` belongs to user ``u`` of ``histories``.
    """
    if scores.shape[0] != histories.n_users:
        raise DataError(
            f"scores has {scores.shape[0]} rows but the exclusion histories have {histories.n_users} users; "
            "pass the histories of exactly the scored users, in the same order."
        )
    items = histories.item_idx
    if items.size and (items.min() < 0 or items.max() >= scores.shape[1]):
        raise DataError(
            f"the exclusion histories hold item rows {int(items.min())}..{int(items.max())} but scores has "
            f"{scores.shape[1]} items; pass histories built on the same catalogue."
        )
    scores[histories.event_user(), items] = -np.inf


def _kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k``-th largest value, shape ``(n_users, 1)``, the dtype of ``scores``.

    ``torch.topk`` rather than ``np.partition``: numpy's introselect slows down about 15x on rows that hold
    many equal values, which is what a sparse score matrix made dense is (3.2 s against 0.12 s for 2,000 rows
    of 20,000 items, 85% zeros, k=100, one thread).
    """
    n_items = scores.shape[1]
    if scores.dtype not in (np.float32, np.float64) or not scores.dtype.isnative:  # torch reads neither
        return np.partition(scores, n_items - k, axis=1)[:, n_items - k, None]
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only array: it is only read here
        tensor = torch.from_numpy(np.ascontiguousarray(scores))
    if k > n_items // 2:  # the same value from the smaller side (torch.topk returns (n_users, k) values + indices)
        smallest = torch.topk(tensor, n_items - k + 1, dim=1, largest=False, sorted=False).values
        return smallest.max(dim=1, keepdim=True).values.numpy()
    return torch.topk(tensor, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values.numpy()


def _select_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of shape ``scores.shape``, exactly ``k`` True per row: the best, lower index on ties."""
    threshold = _kth_largest(scores, k)  # (n_users, 1)
    chosen = scores > threshold
    at = scores == threshold
    need = k - np.count_nonzero(chosen, axis=1)  # (n_users,), >= 1
    crowded = np.nonzero(np.count_nonzero(at, axis=1) > need)[0]  # rows with more ties than places
    if crowded.size:
        first = np.cumsum(at[crowded], axis=1, dtype=np.int32) <= need[crowded, None]
        at[crowded] &= first  # keep the lowest-index ties only
    chosen |= at
    return chosen


def topk(
    scores: np.ndarray, k: int, exclude: Histories | None = None, *, overwrite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items per row of ``scores``, best first.

    Parameters
    ----------
    scores:
        float array of shape ``(n_users, n_items)``, no NaN, finite values within the float32 range; integer
        and boolean scores are converted to float32 (a copy).
    k:
        Items per user. When fewer than ``k`` items are left (small catalogue, exclusions), the tail is
        padded with index ``-1`` and score ``-inf``.
    exclude:
        Histories of the ``n_users`` scored users (same order); their items get ``-inf``.
    overwrite:
        Write the exclusions into ``scores`` itself instead of a copy (saves memory when the caller owns
        the array). Read-only arrays are always copied.

    Returns
    -------
    tuple of numpy.ndarray
        ``idx``: int64 array of shape ``(n_users, k)``, item indices (``-1`` where the score is ``-inf``);
        ``vals``: float32 array of shape ``(n_users, k)``, their scores, descending along each row.
        Equal scores are ordered by the lower item index.
    """
    k = check_k(k)
    converted = _check_scores(scores)
    if exclude is not None:
        if converted is scores and (not overwrite or not scores.flags.writeable):
            converted = scores.copy()
        mask_seen(converted, exclude)
    scores = converted
    n_users, n_items = scores.shape
    kk = min(k, n_items)
    idx = np.full((n_users, k), -1, dtype=np.int64)
    vals = np.full((n_users, k), -np.inf, dtype=np.float32)
    if kk == 0 or n_users == 0:
        return idx, vals
    chosen = np.nonzero(_select_top(scores, kk))[1].reshape(n_users, kk)  # ascending index per row
    chosen_vals = np.take_along_axis(scores, chosen, axis=1).astype(np.float32)
    order = np.argsort(-chosen_vals, axis=1, kind="stable")  # stable: ties keep the lower index first
    idx[:, :kk] = np.take_along_axis(chosen, order, axis=1)
    vals[:, :kk] = np.take_along_axis(chosen_vals, order, axis=1)
    idx[np.isneginf(vals)] = -1
    return idx, vals


def _row_best(scores: sp.csr_matrix, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, vals)`` of the positive stored entries of ``scores`` whose value is at least their row's
    ``keep[row]``-th largest: every positive entry of a row with at most ``keep[row]`` of them, else its best
    ``keep[row]`` and any ties with the last one. Grouped by row, as the csr matrix stores them.

    Each long row's threshold comes from ``np.partition`` on that row alone. A loop over rows, not one sort of
    every entry: a chunk of 2,048 users of a 10^5-item catalogue stores about 4,100 transition scores per user;
    sorting all 8.4 million of them made ``topk_positive`` take 3.2 s (k = 100, history excluded), 0.24 s with
    these thresholds, for the same answer. The threshold of a row is taken over all its stored entries: where
    the row has ``keep`` positive ones it is their ``keep``-th largest, else it is at most 0 and every positive
    entry passes. Only the survivors get row and column arrays (not all 8.4 million entries: 0.24 -> 0.1 s)."""
    n_users, data = scores.shape[0], np.asarray(scores.data, np.float32)  # compared as float32, like the sort
    counts = np.diff(scores.indptr)  # (n_users,)
    threshold = np.zeros(n_users, np.float32)  # entries must be positive: above 0 at least
    for row in np.flatnonzero(counts > keep):  # rows with more entries than they keep (at most the chunk's users)
        segment = data[scores.indptr[row] : scores.indptr[row + 1]]
        cut = counts[row] - keep[row]
        threshold[row] = max(np.partition(segment, cut)[cut], 0.0)  # the keep-th largest
    best = np.flatnonzero((data > 0) & (data >= np.repeat(threshold, counts)))  # (n_best,) positions
    rows = np.searchsorted(scores.indptr, best, side="right") - 1  # the row holding each position
    return rows, scores.indices[best].astype(np.int64), data[best]


def topk_positive(
    scores: sp.csr_matrix, k: int, exclude: Histories | None = None, *, dense_above: float = 0.125
) -> np.ndarray:
    """The ``k`` best positive entries per row of a sparse score matrix, best first (ties: lower index).

    The same answer as ``topk(scores.toarray(), k, exclude)`` followed by dropping the entries that are not
    positive. A sparse matrix (at most ``dense_above`` of its entries stored) is never made dense, so the cost
    follows the stored entries; a denser one takes the dense path, which is then the faster (a dense matrix is
    at most ``1 / dense_above`` times the sparse one's size), when torch is already loaded (its ``topk`` finds
    the thresholds). A process that has not loaded it, a batch job serving stored memory states, takes the sparse
    path rather than import torch for it (about 0.8 s): 0.049 against 0.043 s for the 943 ml-100k users' transition
    scores (75% stored, k = 100), 0.067 against 0.060 s for 610 ml-latest-small users (32%).

    Parameters
    ----------
    scores:
        csr matrix of shape ``(n_users, n_items)`` (explicit zeros and negative entries are never chosen).
    k:
        Items per user; rows with fewer positive entries are padded with ``-1``.
    exclude:
        Histories of the ``n_users`` users (same order); their items are never chosen.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(n_users, k)``: item indices, ``-1`` where a row ran out of positive entries.
    """
    k = check_k(k)
    scores = sp.csr_matrix(scores)
    n_users, n_items = scores.shape
    if np.isnan(scores.data).any():
        raise DataError("scores hold NaN; fix the scoring stage or replace NaN with -inf before topk_positive.")
    if exclude is not None and exclude.n_users != n_users:
        raise DataError(f"scores has {n_users} rows but the exclusion histories have {exclude.n_users} users.")
    if scores.nnz and scores.nnz >= dense_above * n_users * n_items and "torch" in sys.modules:
        dense = scores.toarray().astype(np.float32, copy=False)  # (n_users, n_items)
        if exclude is not None:
            mask_seen(dense, exclude)
        # Each row's positive entries at or above its k-th largest value: all of the top k, plus any ties at
        # that value (placed below by the lower index). No tie-breaking pass over the many zero entries.
        rows, cols = np.nonzero((dense > 0) & (dense >= _kth_largest(dense, min(k, n_items))))
        vals = dense[rows, cols]
    else:
        # Only each row's best entries can make its top k: at most ``k`` plus as many as the row's history has
        # events (the excluded ones among them), ties at the last value included; the sort and the exclusion
        # below then touch a few hundred entries per row instead of every stored one.
        slack = exclude.lengths if exclude is not None else np.zeros(n_users, np.int64)
        rows, cols, vals = _row_best(scores, k + slack)
        if exclude is not None:
            seen = np.unique(exclude.event_user() * n_items + exclude.item_idx)  # (n_seen,) sorted pair keys
            keep = ~np.isin(rows * n_items + cols, seen, assume_unique=False)
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, -vals, rows))  # by row, then best score, then lower index
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(n_users))  # first entry of each row
    place = np.arange(rows.size) - starts[rows]  # 0 for each row's best
    idx = np.full((n_users, k), -1, dtype=np.int64)
    top = place < k
    idx[rows[top], place[top]] = cols[top]
    return idx


def topk_ranked(order: np.ndarray, k: int, exclude: Histories | None = None, n_users: int = 1) -> np.ndarray:
    """The first ``k`` items of one global ranking per user, history items skipped.

    Equal to ``topk(np.repeat(scores[None], n_users, 0), k, exclude)[0]`` for ``order`` the stable argsort of
    ``-scores`` (so ties keep the lower index), without a dense ``(n_users, n_items)`` matrix: only the first
    ``k + (history items ranked that high)`` columns of the ranking are scanned.

    Parameters
    ----------
    order:
        int64 array of shape ``(n_items,)``: every item, best first.
    k:
        Items per user; ``-1`` pads where the catalogue runs out.
    exclude:
        Histories of the users (their count sets ``n_users``); their items are skipped.
    n_users:
        Rows when ``exclude`` is None.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(n_users, k)``.
    """
    k = check_k(k)
    n_items = order.size
    n_users = exclude.n_users if exclude is not None else n_users
    idx = np.full((n_users, k), -1, dtype=np.int64)
    if exclude is None:
        idx[:, : min(k, n_items)] = order[:k]
        return idx
    position = np.empty(n_items, np.int64)
    position[order] = np.arange(n_items)  # rank of each item in the global order
    users, ranked = exclude.event_user(), position[exclude.item_idx]  # (n_events,)
    near = ranked < k + exclude.lengths[users]  # only these can push an item out of a user's first k
    width = min(n_items, k + int(np.bincount(users[near], minlength=n_users).max(initial=0)))
    # every user's first k unseen items lie in the first `width` ranked items
    blocked = np.zeros((n_users, width), dtype=bool)
    inside = ranked < width
    blocked[users[inside], ranked[inside]] = True
    free = ~blocked
    place = np.cumsum(free, axis=1) - 1  # (n_users, width): how many unseen items come before
    rows, cols = np.nonzero(free & (place < k))
    idx[rows, place[rows, cols]] = order[cols]
    return idx


def merge_top_lists(lists: Sequence[np.ndarray], n_items: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The union of several sources' top lists, one row per (query, item), in order of first appearance.

    Parameters
    ----------
    lists:
        Each source's int ``(n_queries, k_s)`` item rows, best first, ``-1`` padding; an item at most once per
        query and source (a top-k selection).
    n_items:
        Items in the catalogue (every listed item is below it).

    Returns
    -------
    query, item:
        int64 ``(n_rows,)``: the first source's entries query by query, then each later source's entries that no
        earlier source listed for that query (query by query, best first): the order of a ``group_by(query,
        item, maintain_order=True)`` over the sources' long frames stacked in turn.
    ranks:
        One uint32 ``(n_rows,)`` per source: the item's 1-based position in that source's list, ``k_s + 1``
        where the source did not list it.

    Each chunk of queries marks its (query, item) cells in a dense table of :data:`MERGE_CELLS` cells, so every
    entry costs one lookup instead of a hash or a sort (the pipeline uses it up to :data:`MERGE_MAX_ITEMS`).
    """
    n_queries = lists[0].shape[0] if lists else 0
    if any(top.ndim != 2 or top.shape[0] != n_queries for top in lists):
        raise DataError(f"top lists must be 2-D with one row per query, got shapes {[t.shape for t in lists]}.")
    per_chunk = max(1, MERGE_CELLS // max(n_items, 1))
    table = np.full((min(per_chunk, max(n_queries, 1)), n_items), -1, np.int64)  # slot id of each marked cell
    fresh_rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in lists]  # (query, item) of new entries
    hits: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in lists]  # (slot id, rank) of every entry
    n_new = [0] * len(lists)
    for start in range(0, n_queries, per_chunk):
        stop = min(start + per_chunk, n_queries)
        marked = []
        for s, top in enumerate(lists):
            row, col = np.nonzero(top[start:stop] >= 0)  # row-major: query by query, best first
            item = top[start:stop][row, col].astype(np.int64)
            slot = table[row, item]  # (n,) -1 where no earlier source listed the item
            new = np.flatnonzero(slot < 0)
            ids = (s << _SOURCE_SHIFT) | (n_new[s] + np.arange(new.size, dtype=np.int64))
            table[row[new], item[new]] = ids
            if not np.array_equal(table[row[new], item[new]], ids):
                raise DataError(f"top list {s} names an item twice for one query; pass top-k selections.")
            slot[new] = ids
            n_new[s] += new.size
            fresh_rows[s].append((row[new] + start, item[new]))
            hits[s].append((slot, (col + 1).astype(np.uint32)))
            marked.append((row[new], item[new]))
        for row, item in marked:  # clear only the cells this chunk wrote
            table[row, item] = -1
    offsets = np.concatenate([[0], np.cumsum(n_new)]).astype(np.int64)  # (n_sources + 1,)
    n_rows = int(offsets[-1])
    query = np.concatenate([q for rows in fresh_rows for q, _ in rows] or [np.zeros(0, np.int64)]).astype(np.int64)
    item = np.concatenate([i for rows in fresh_rows for _, i in rows] or [np.zeros(0, np.int64)])
    ranks = []
    for s, top in enumerate(lists):
        rank = np.full(n_rows, top.shape[1] + 1, np.uint32)
        for slot, position in hits[s]:
            rank[offsets[slot >> _SOURCE_SHIFT] + (slot & ((1 << _SOURCE_SHIFT) - 1))] = position
        ranks.append(rank)
    return query, item, ranks


def to_recommendations(user_ids: pl.Series, idx: np.ndarray, vals: np.ndarray, item_ids: pl.Series) -> pl.DataFrame:
    """The long result table from :func:`topk` output.

    Parameters
    ----------
    user_ids:
        Series of length ``n_users``: the user of each row of ``idx``.
    idx, vals:
        int64 and float32 arrays of shape ``(n_users, k)`` from :func:`topk`; ``-1`` entries are dropped.
    item_ids:
        Series of length ``n_items``: the id of each catalogue row.

    Returns
    -------
    polars.DataFrame
        ``user_id, item_id, score (Float32), rank (UInt32, 1..k)``, users in the order of ``user_ids``,
        best first.
    """
    if idx.shape != vals.shape or idx.ndim != 2 or idx.shape[0] != len(user_ids):
        raise DataError(
            f"idx {idx.shape} and vals {vals.shape} must both have shape (len(user_ids)={len(user_ids)}, k)."
        )
    if idx.size and idx.max() >= len(item_ids):
        raise DataError(f"idx holds item row {int(idx.max())} but item_ids has {len(item_ids)} items.")
    rows, cols = np.nonzero(idx >= 0)
    if rows.size == 0:
        return empty_recommendations(user_ids.dtype, item_ids.dtype)
    return pl.DataFrame(
        {
            USER_ID: user_ids.gather(rows),
            ITEM_ID: item_ids.gather(idx[rows, cols]),
            SCORE: pl.Series(vals[rows, cols], dtype=pl.Float32),
            RANK: pl.Series((cols + 1).astype(np.uint32), dtype=pl.UInt32),
        }
    )
