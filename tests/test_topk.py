"""Tests of top-k selection and the long result table."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch  # noqa: F401  # topk_positive's dense path runs where torch is loaded
from conftest import histories_from_rows as histories

from recsys import _topk
from recsys._topk import merge_top_lists, to_recommendations, topk, topk_positive, topk_ranked
from recsys.errors import ConfigError, DataError
from recsys.pipeline import merge_sources


def reference_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Full sort by (score descending, index ascending): the slow, obvious answer."""
    n_items = scores.shape[1]
    return np.stack([np.lexsort((np.arange(n_items), -row))[:k] for row in scores])


def test_ties_are_broken_by_the_lower_index() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    idx, vals = topk(scores, 2)
    np.testing.assert_array_equal(idx, [[1, 2], [0, 1]])
    np.testing.assert_array_equal(vals, [[3.0, 3.0], [0.0, 0.0]])
    assert idx.dtype == np.int64 and vals.dtype == np.float32


def test_matches_a_full_sort_on_many_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 40)).astype(np.float32)
    for k in (1, 5, 39, 40):
        idx, vals = topk(scores, k)
        expected = reference_topk(scores, k)
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_array_equal(vals, np.take_along_axis(scores, expected, axis=1))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", [np.float64, np.dtype(">f4"), np.longdouble, np.float16])
@pytest.mark.parametrize("k", [7, 25])  # 25 of 30: the k-th largest is found from the smaller side
def test_any_float_layout_matches_a_full_sort(dtype: np.dtype, k: int) -> None:
    """Every array a caller may pass (a transposed, read-only view; float64, big-endian, long double, half): the
    same exact answer, no warning."""
    rng = np.random.default_rng(1)
    base = (rng.integers(0, 5, size=(30, 60)) / 2.0).astype(dtype)  # many ties
    scores = base.T  # (60, 30), not C-contiguous
    scores.flags.writeable = False
    idx, vals = topk(scores, k)
    expected = reference_topk(scores, k)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(vals, np.take_along_axis(scores, expected, axis=1).astype(np.float32))


def test_topk_positive_refuses_nan() -> None:
    scores = sp.csr_matrix(np.array([[np.nan, 3, 2, 1], [1, 2, 3, 4]], np.float32))
    for dense_above in (0.0, 2.0):
        with pytest.raises(DataError, match="NaN"):
            topk_positive(scores, 2, dense_above=dense_above)


def test_excluded_items_become_minus_one_and_input_is_untouched() -> None:
    scores = np.array([[5.0, 4.0, 3.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    before = scores.copy()
    idx, vals = topk(scores, 3, exclude=histories([[0, 2], [0, 1, 2]]))
    np.testing.assert_array_equal(idx, [[1, -1, -1], [-1, -1, -1]])
    assert vals[0, 0] == 4.0 and np.isneginf(vals[0, 1:]).all() and np.isneginf(vals[1]).all()
    np.testing.assert_array_equal(scores, before)


def test_overwrite_writes_exclusions_in_place() -> None:
    scores = np.array([[5.0, 4.0, 3.0]], dtype=np.float32)
    idx, _ = topk(scores, 1, exclude=histories([[0]]), overwrite=True)
    assert idx[0, 0] == 1
    assert np.isneginf(scores[0, 0])


def test_read_only_input_is_copied_even_with_overwrite() -> None:
    scores = np.broadcast_to(np.array([1.0, 2.0], dtype=np.float32), (2, 2))
    idx, _ = topk(scores, 1, exclude=histories([[1], []]), overwrite=True)
    np.testing.assert_array_equal(idx[:, 0], [0, 1])


def test_k_larger_than_the_catalogue_is_padded() -> None:
    idx, vals = topk(np.array([[0.5, 1.0]], dtype=np.float32), 4)
    np.testing.assert_array_equal(idx, [[1, 0, -1, -1]])
    assert np.isneginf(vals[0, 2:]).all()


def test_minus_inf_scores_are_marked() -> None:
    idx, _ = topk(np.array([[-np.inf, 1.0, -np.inf]], dtype=np.float32), 2)
    np.testing.assert_array_equal(idx, [[1, -1]])


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_raises(k: object) -> None:
    with pytest.raises(ConfigError, match="k must be"):
        topk(np.zeros((1, 3), dtype=np.float32), k)  # type: ignore[arg-type]


def test_nan_scores_raise() -> None:
    with pytest.raises(DataError, match="NaN"):
        topk(np.array([[np.nan, 1.0]], dtype=np.float32), 1)


def test_to_recommendations_drops_minus_one_and_ranks_from_one() -> None:
    idx = np.array([[2, 0, -1], [-1, -1, -1], [1, 2, 0]], dtype=np.int64)
    vals = np.array([[3, 1, -np.inf], [-np.inf] * 3, [9, 8, 7]], dtype=np.float32)
    out = to_recommendations(pl.Series("user_id", ["a", "b", "c"]), idx, vals, pl.Series("item_id", [10, 11, 12]))
    assert out.columns == ["user_id", "item_id", "score", "rank"]
    assert out.schema["score"] == pl.Float32 and out.schema["rank"] == pl.UInt32
    assert out.rows() == [
        ("a", 12, 3.0, 1),
        ("a", 10, 1.0, 2),
        ("c", 11, 9.0, 1),
        ("c", 12, 8.0, 2),
        ("c", 10, 7.0, 3),
    ]


def test_to_recommendations_of_nothing_is_an_empty_typed_table() -> None:
    idx = np.full((1, 2), -1, dtype=np.int64)
    vals = np.full((1, 2), -np.inf, dtype=np.float32)
    out = to_recommendations(pl.Series("user_id", [1]), idx, vals, pl.Series("item_id", ["x"]))
    assert out.height == 0
    assert out.schema == pl.Schema({"user_id": pl.Int64, "item_id": pl.String, "score": pl.Float32, "rank": pl.UInt32})


# ---------------------------------------------------------------- sparse and global-ranking variants
def test_topk_positive_known_answer() -> None:
    # row 0: 0.5 @1, 2.0 @3, 2.0 @4 (tie: lower index first), -1 @0 never chosen; row 1: nothing positive
    scores = sp.csr_matrix(np.array([[-1.0, 0.5, 0.0, 2.0, 2.0], [0.0, 0.0, -3.0, 0.0, 0.0]], dtype=np.float32))
    np.testing.assert_array_equal(topk_positive(scores, 4), [[3, 4, 1, -1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(topk_positive(scores, 2, histories([[3], []])), [[4, 1], [-1, -1]])


def test_topk_positive_long_rows_keep_seen_items_out_and_ties_in_order() -> None:
    """A row longer than ``k`` plus its history: its best entries are a seen item (twice in the history) and
    ties at the cut, and the answer is still the best unseen items, ties by the lower index."""
    values = np.array([[5.0, 5.0, 4.0, 3.0, 3.0, 3.0, 1.0, 0.0]], dtype=np.float32)
    scores = sp.csr_matrix(values)
    np.testing.assert_array_equal(topk_positive(scores, 2, histories([[0, 0]]), dense_above=2.0), [[1, 2]])
    np.testing.assert_array_equal(topk_positive(scores, 3, histories([[0, 0]]), dense_above=2.0), [[1, 2, 3]])
    np.testing.assert_array_equal(topk_positive(scores, 4, dense_above=2.0), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(topk_positive(scores, 3, histories([[2]]), dense_above=2.0), [[0, 1, 3]])


def test_topk_ranked_known_answer() -> None:
    order = np.array([2, 0, 3, 1])  # item 2 is the most popular
    np.testing.assert_array_equal(topk_ranked(order, 2, n_users=2), [[2, 0], [2, 0]])
    seen = histories([[2, 2, 0], [1], []])  # a repeated history item is skipped once
    np.testing.assert_array_equal(topk_ranked(order, 3, seen), [[3, 1, -1], [2, 0, 3], [2, 0, 3]])


def test_sparse_and_ranked_variants_equal_dense_topk() -> None:
    """Both shortcuts give exactly the dense answer, ties and exclusions included, on 200 random cases."""
    rng = np.random.default_rng(1)
    for case in range(200):
        n_users, n_items, k = int(rng.integers(1, 20)), int(rng.integers(1, 50)), int(rng.integers(1, 12))
        scores = sp.random(n_users, n_items, density=rng.random(), random_state=case, format="csr")
        scores.data = np.round(scores.data * 4) - (rng.random(scores.data.size) < 0.2)  # ties and negatives
        scores = scores.astype(np.float32)
        seen = histories([list(rng.integers(0, n_items, rng.integers(0, 8))) for _ in range(n_users)])
        popularity = np.round(rng.random(n_items) * 3).astype(np.float32)
        order = np.argsort(-popularity, kind="stable")
        for exclude in (None, seen):
            idx, vals = topk(scores.toarray(), k, exclude)
            idx[vals <= 0] = -1
            for dense_above in (0.0, 2.0):  # the dense path, then the sparse one, whatever the density
                np.testing.assert_array_equal(topk_positive(scores, k, exclude, dense_above=dense_above), idx)
            dense = topk(np.repeat(popularity[None], n_users, 0), k, exclude)[0]
            np.testing.assert_array_equal(topk_ranked(order, k, exclude, n_users), dense)


# ------------------------------------------------------------------------------------------- merge_top_lists
def test_merge_top_lists_known_answer() -> None:
    """Query 0: source A lists 3, 1; source B lists 1, 4 (so 4 is new); query 1: A lists 2 (then padding), B
    lists 2. Rows: A's entries query by query, then B's new one; a rank of k + 1 where a source is silent."""
    a = np.array([[3, 1], [2, -1]])
    b = np.array([[1, 4], [2, -1]])
    query, item, (rank_a, rank_b) = merge_top_lists([a, b], n_items=5)
    np.testing.assert_array_equal(query, [0, 0, 1, 0])
    np.testing.assert_array_equal(item, [3, 1, 2, 4])
    np.testing.assert_array_equal(rank_a, [1, 2, 1, 3])
    np.testing.assert_array_equal(rank_b, [3, 1, 1, 2])


@pytest.mark.parametrize("cells", [1 << 18, 40, 7])  # every query in one chunk; 2 queries per chunk; 1
def test_merge_sources_table_equals_the_group_by(cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense-table merge and the polars ``group_by`` (catalogues above ``MERGE_MAX_ITEMS``) give the same
    frame, row order included, for overlapping lists of different lengths with padding, in chunks of queries."""
    rng = np.random.default_rng(3)
    n_queries, n_items = 30, 20

    def lists(k: int) -> np.ndarray:
        top = np.stack([rng.permutation(n_items)[:k] for _ in range(n_queries)])
        top[rng.random(top.shape) < 0.2] = -1  # padding anywhere is skipped
        return top

    sources = {"retrieval_rank": lists(8), "transition_rank": lists(5), "popularity_rank": lists(3)}
    monkeypatch.setattr(_topk, "MERGE_CELLS", cells)
    table = merge_sources(sources, n_items)
    monkeypatch.setattr("recsys.pipeline.MERGE_MAX_ITEMS", 0)
    grouped = merge_sources(sources, n_items)
    assert table.equals(grouped) and table.schema == grouped.schema
    both = (table["retrieval_rank"] <= 8) & (table["transition_rank"] <= 5)
    assert both.sum() > 0 and (table["retrieval_rank"] == 9).sum() > 0  # overlaps and new items both occur


def test_merge_top_lists_rejects_an_item_listed_twice_and_takes_empty_lists() -> None:
    with pytest.raises(DataError, match="twice"):
        merge_top_lists([np.array([[1, 1]])], n_items=3)
    query, item, ranks = merge_top_lists([np.full((2, 3), -1), np.zeros((2, 0), np.int64)], n_items=3)
    assert query.size == item.size == ranks[0].size == ranks[1].size == 0
    query, item, ranks = merge_top_lists([np.zeros((0, 4), np.int64)], n_items=3)
    assert query.size == 0 and len(ranks) == 1
