"""Tests of the vector indexes: FaissIndex against the ExactIndex reference, exclusion, padding and input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import histories_from_rows as histories

from recsys.data import Histories
from recsys.errors import ConfigError, DataError, ModelFormatError, NotFittedError
from recsys.retrieval import ExactIndex, FaissIndex, IndexConfig, _fetch_batches, as_float32_matrix

INDEXES = [ExactIndex, FaissIndex]


def normalized(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    """200 items and 50 queries of dimension 16, unit length, seeded."""
    rng = np.random.default_rng(7)
    return normalized(rng, 200, 16), normalized(rng, 50, 16)


@pytest.fixture(scope="module")
def random_histories() -> Histories:
    rng = np.random.default_rng(8)
    return histories([sorted(rng.choice(200, size=int(rng.integers(0, 30)), replace=False)) for _ in range(50)])


# A 1-D catalogue on the line: item i has vector (i,), the query (1,) ranks items by descending i.
LINE = np.arange(6, dtype=np.float32)[:, None]  # (6, 1)


@pytest.mark.parametrize("k", [1, 10, 200])
def test_faiss_matches_exact(vectors: tuple[np.ndarray, np.ndarray], k: int) -> None:
    items, queries = vectors
    exact_idx, exact_scores = ExactIndex().fit(items).search(queries, k)
    faiss_idx, faiss_scores = FaissIndex().fit(items).search(queries, k)
    np.testing.assert_array_equal(faiss_idx, exact_idx)
    np.testing.assert_allclose(faiss_scores, exact_scores, atol=1e-5)
    assert exact_idx.dtype == faiss_idx.dtype == np.int64
    assert exact_scores.dtype == faiss_scores.dtype == np.float32


def test_faiss_matches_exact_with_exclusion(
    vectors: tuple[np.ndarray, np.ndarray], random_histories: Histories
) -> None:
    items, queries = vectors
    exact_idx, exact_scores = ExactIndex().fit(items).search(queries, 10, exclude=random_histories)
    faiss_idx, faiss_scores = FaissIndex().fit(items).search(queries, 10, exclude=random_histories)
    np.testing.assert_array_equal(faiss_idx, exact_idx)
    np.testing.assert_allclose(faiss_scores, exact_scores, atol=1e-5)
    for u in range(len(queries)):
        assert not set(exact_idx[u]) & set(random_histories.items_of(u).tolist())


def test_exact_is_the_brute_force_answer(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = vectors
    idx, scores = ExactIndex().fit(items).search(queries, 5)
    full = queries @ items.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :5], atol=1e-6)


@pytest.mark.parametrize("index_class", INDEXES)
def test_history_items_are_excluded_even_when_they_are_the_best(index_class: type) -> None:
    index = index_class().fit(LINE)
    idx, scores = index.search(np.ones((2, 1)), 2, exclude=histories([[5, 4], [0]]))
    np.testing.assert_array_equal(idx, [[3, 2], [5, 4]])
    np.testing.assert_array_equal(scores, [[3.0, 2.0], [5.0, 4.0]])


@pytest.mark.parametrize("index_class", INDEXES)
def test_padding_when_k_exceeds_the_items_left(index_class: type) -> None:
    index = index_class().fit(LINE)
    idx, scores = index.search(np.ones((2, 1)), 5, exclude=histories([[5, 3, 1], []]))
    np.testing.assert_array_equal(idx, [[4, 2, 0, -1, -1], [5, 4, 3, 2, 1]])
    np.testing.assert_array_equal(scores[0, :3], [4.0, 2.0, 0.0])
    assert np.isneginf(scores[0, 3:]).all()
    idx, scores = index.search(np.ones((1, 1)), 8)
    np.testing.assert_array_equal(idx, [[5, 4, 3, 2, 1, 0, -1, -1]])
    assert np.isneginf(scores[0, 6:]).all()


@pytest.mark.parametrize("index_class", INDEXES)
def test_everything_excluded_is_all_padding(index_class: type) -> None:
    index = index_class().fit(LINE)
    idx, scores = index.search(np.ones((1, 1)), 3, exclude=histories([list(range(6))]))
    np.testing.assert_array_equal(idx, [[-1, -1, -1]])
    assert np.isneginf(scores).all()


def test_fetch_batches_group_histories_of_similar_length() -> None:
    # k = 10: k + length in [10, 20) -> group 0, [1000, 2000) -> 6, [2000, 4000) -> 7; shortest first
    lengths = np.array([0, 5, 1000, 3, 2000, 9])
    batches = [b.tolist() for b in _fetch_batches(lengths, 10, batch_size=2, min_batch=1)]
    assert batches == [[0, 3], [1, 5], [2], [4]]
    # a group under min_batch queries joins the next one; the last group goes out whatever its size
    batches = [b.tolist() for b in _fetch_batches(lengths, 10, batch_size=8, min_batch=5)]
    assert batches == [[0, 3, 1, 5, 2], [4]]
    batches = [b.tolist() for b in _fetch_batches(lengths, 10, batch_size=8, min_batch=2)]
    assert batches == [[0, 3, 1, 5], [2, 4]]
    assert list(_fetch_batches(np.zeros(0, np.int64), 10, 8)) == []


@pytest.mark.parametrize("index_class", INDEXES)
def test_exclusion_is_exact_across_fetch_batches(index_class: type) -> None:
    # histories from 0 to 150 events over 200 items: several fetch sizes, each user must still get the exact
    # top 10 of the items it has not seen
    rng = np.random.default_rng(11)
    items, queries = normalized(rng, 200, 16), normalized(rng, 40, 16)
    rows = [rng.choice(200, size=int(n), replace=False).tolist() for n in rng.integers(0, 150, 40)]
    idx, _ = index_class(IndexConfig(batch_size=3)).fit(items).search(queries, 10, exclude=histories(rows))
    full = queries @ items.T
    for u, seen in enumerate(rows):
        full[u, seen] = -np.inf
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :10])


@pytest.mark.parametrize("index_class", INDEXES)
def test_long_history_still_yields_k_results(index_class: type) -> None:
    rng = np.random.default_rng(3)
    items = normalized(rng, 100, 8)
    queries = normalized(rng, 3, 8)
    full = queries @ items.T
    # user 0 has seen its 40 best items; user 1 nothing; user 2 its 60 worst.
    best = np.argsort(-full, axis=1)
    exclude = histories([best[0, :40].tolist(), [], best[2, 40:].tolist()])
    idx, scores = index_class().fit(items).search(queries, 5, exclude=exclude)
    assert (idx >= 0).all() and np.isfinite(scores).all()
    np.testing.assert_array_equal(idx[0], best[0, 40:45])
    np.testing.assert_array_equal(idx[1], best[1, :5])
    np.testing.assert_array_equal(idx[2], best[2, :5])


@pytest.mark.parametrize("index_class", INDEXES)
def test_batch_size_one_equals_one_large_batch(
    index_class: type, vectors: tuple[np.ndarray, np.ndarray], random_histories: Histories
) -> None:
    items, queries = vectors
    one = index_class(IndexConfig(batch_size=1)).fit(items).search(queries, 7, exclude=random_histories)
    big = index_class(IndexConfig(batch_size=10_000)).fit(items).search(queries, 7, exclude=random_histories)
    odd = index_class(IndexConfig(batch_size=3)).fit(items).search(queries, 7, exclude=random_histories)
    for other in (big, odd):
        np.testing.assert_array_equal(one[0], other[0])
        np.testing.assert_allclose(one[1], other[1], atol=1e-6)  # BLAS may sum in another order per batch


@pytest.mark.parametrize("index_class", INDEXES)
def test_float64_integer_and_non_contiguous_inputs_are_converted(
    index_class: type, vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    items, queries = vectors
    expected = index_class().fit(items).search(queries, 5)
    cases = [
        (items.astype(np.float64), queries.astype(np.float64)),
        (np.asfortranarray(items), queries.T.copy().T),  # Fortran order, transposed view
        (np.repeat(items, 2, axis=0)[::2], np.hstack([queries, queries])[:, :16]),  # strided slices
    ]
    for fit_on, query in cases:
        assert not (fit_on.flags.c_contiguous and fit_on.dtype == np.float32 and query.flags.c_contiguous)
        idx, scores = index_class().fit(fit_on).search(query, 5)
        np.testing.assert_array_equal(idx, expected[0])
        np.testing.assert_allclose(scores, expected[1], atol=1e-6)
    int_idx, int_scores = index_class().fit(LINE.astype(np.int64)).search(np.array([[2]], dtype=np.int32), 2)
    np.testing.assert_array_equal(int_idx, [[5, 4]])
    np.testing.assert_array_equal(int_scores, [[10.0, 8.0]])


def test_as_float32_matrix_returns_c_contiguous_float32() -> None:
    x = np.arange(12, dtype=np.int16).reshape(3, 4).T  # (4, 3), not C-contiguous
    out = as_float32_matrix(x, "x")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("index_class", INDEXES)
@pytest.mark.parametrize(
    ("queries", "words"),
    [
        (np.array([[1.0, np.nan]]), ["queries", "NaN"]),
        (np.array([[1.0, np.inf]]), ["queries", "infinite"]),
        (np.ones((2, 3)), ["queries", "dimension 3", "dimension 2"]),
        (np.ones(2), ["queries", "2-D", "(2,)"]),
        (np.ones((1, 1, 2)), ["queries", "2-D"]),
        (np.array([["a", "b"]]), ["queries", "numeric"]),
    ],
    ids=["nan", "inf", "wrong-dim", "1-d", "3-d", "strings"],
)
def test_bad_queries_are_data_errors(index_class: type, queries: np.ndarray, words: list[str]) -> None:
    index = index_class().fit(np.eye(2))
    with pytest.raises(DataError) as error:
        index.search(queries, 1)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("index_class", INDEXES)
def test_bad_vectors_are_data_errors(index_class: type) -> None:
    with pytest.raises(DataError, match="vectors"):
        index_class().fit(np.array([[np.nan, 1.0]]))
    with pytest.raises(DataError, match="2-D"):
        index_class().fit(np.ones(3))


@pytest.mark.parametrize("index_class", INDEXES)
def test_bad_k_and_misaligned_histories(index_class: type) -> None:
    index = index_class().fit(LINE)
    with pytest.raises(ConfigError, match="k=0"):
        index.search(np.ones((1, 1)), 0)
    with pytest.raises(DataError, match="2 users but there are 1 queries"):
        index.search(np.ones((1, 1)), 1, exclude=histories([[], []]))


@pytest.mark.parametrize("index_class", INDEXES)
def test_search_before_fit(index_class: type) -> None:
    with pytest.raises(NotFittedError, match=f"{index_class.__name__}.fit"):
        index_class().search(np.ones((1, 2)), 1)


def test_save_before_fit() -> None:
    with pytest.raises(NotFittedError):
        FaissIndex().save("/nonexistent/never-written.faiss")


def test_faiss_save_load_round_trips(
    tmp_path: Path, vectors: tuple[np.ndarray, np.ndarray], random_histories: Histories
) -> None:
    items, queries = vectors
    index = FaissIndex().fit(items)
    path = str(tmp_path / "items.faiss")
    index.save(path)
    loaded = FaissIndex.load(path)
    assert (loaded.n_items_, loaded.dim_) == (200, 16)
    before = index.search(queries, 10, exclude=random_histories)
    after = loaded.search(queries, 10, exclude=random_histories)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])


@pytest.mark.parametrize("index_class", INDEXES)
def test_fit_twice_equals_fit_once(index_class: type, vectors: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = vectors
    other = np.random.default_rng(0).standard_normal((30, 16))
    once = index_class().fit(items).search(queries, 5)
    twice = index_class().fit(other).fit(items).search(queries, 5)
    np.testing.assert_array_equal(once[0], twice[0])
    np.testing.assert_array_equal(once[1], twice[1])


def test_index_config_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="kind"):
        IndexConfig(kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        IndexConfig(batch_size=0)


def test_loading_a_non_faiss_file_is_a_model_format_error(tmp_path: Path) -> None:
    path = tmp_path / "not-an-index.faiss"
    path.write_bytes(b"definitely not faiss")
    with pytest.raises(ModelFormatError):
        FaissIndex.load(str(path))
