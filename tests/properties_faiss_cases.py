"""FAISS-facing property cases. ``test_properties_faiss.py`` runs each test here in its own subprocess, so a crash
in native code (FAISS only ``assert``s, and can segfault on bad arrays) fails that test instead of killing the
run. The file name does not start with ``test_``: pytest collects it only when asked to by name.

Examples in the default run: 200 + 60 = 260 (see the sum in ``test_properties.py``).
"""

from __future__ import annotations

import math
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import histories_from_rows
from hypothesis import event, example, given
from hypothesis import strategies as st
from property_support import examples, layout, same_array

from recsys.data import Histories
from recsys.errors import ConfigError, DataError, ModelFormatError, RecsysError
from recsys.retrieval import ExactIndex, FaissIndex, IndexConfig

DTYPES = [np.float64, np.float32, np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_, np.complex64, object]
LAYOUTS = ["C", "fortran", "strided", "transposed", "reversed", "read-only"]


GOOD_DTYPES, BAD_DTYPES = DTYPES[:7], DTYPES[7:]
# Each example draws a few faults to inject (often none); the oracle judges the arrays it gets, never the labels.
FAULTS = ["vectors dtype", "queries dtype", "vectors shape", "queries shape", "vectors NaN", "queries NaN", "dim", "k"]


@st.composite
def arrays(draw: st.DrawFn, rows: int, dim: int, faults: set[str], name: str) -> np.ndarray:
    """Small whole or half values (exact in every dtype and in float32 sums) in any dtype and layout; with the
    faults: a bool/complex/object dtype, one NaN/inf/1e300, or a 1-D/3-D array."""
    values = np.array(draw(st.lists(st.integers(-3, 3), min_size=rows * dim, max_size=rows * dim)), dtype=np.float64)
    values = values.reshape(rows, dim) / draw(st.sampled_from([1, 2]))
    dtype = draw(st.sampled_from(BAD_DTYPES if f"{name} dtype" in faults else GOOD_DTYPES))
    if f"{name} NaN" in faults and values.size and np.dtype(dtype).kind in "fcO":
        values.flat[draw(st.integers(0, values.size - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf, 1e300])
        )
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matrix = layout(values.astype(dtype), draw(st.sampled_from(LAYOUTS)))
    if f"{name} shape" in faults:
        return draw(st.sampled_from([matrix.ravel(), matrix[None]]))
    return matrix


@st.composite
def search_cases(draw: st.DrawFn) -> dict[str, Any]:
    faults = draw(st.sets(st.sampled_from([*FAULTS, "exclusion rows"]), max_size=2))
    n_items, dim, n_queries = draw(st.integers(0, 25)), draw(st.integers(1, 6)), draw(st.integers(0, 6))
    query_dim = draw(st.integers(1, 7)) if "dim" in faults else dim
    exclude = None
    if draw(st.booleans()) or "exclusion rows" in faults:
        users = n_queries + ("exclusion rows" in faults)
        rows = st.lists(st.integers(0, max(n_items - 1, 0)), max_size=5) if n_items else st.just([])
        exclude = histories_from_rows(draw(st.lists(rows, min_size=users, max_size=users)))
    return {
        "vectors": draw(arrays(n_items, dim, faults, "vectors")),
        "queries": draw(arrays(n_queries, query_dim, faults, "queries")),
        "k": draw(
            st.sampled_from([0, -1, True, 2.5, "3", None, 1.0])
            if "k" in faults
            else st.integers(1, n_items + 6) | st.just(np.int64(3))
        ),
        "exclude": exclude,
        "batch_size": draw(st.sampled_from([1, 2, 4096])),
    }


def _bad_matrix(x: np.ndarray, dim: int | None = None) -> bool:
    """What ``as_float32_matrix`` rejects: not 2-D, another dimension, not real numbers, width 0, non-finite."""
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        return True
    if x.dtype.kind not in "iuf" or x.shape[1] == 0:
        return True
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return not np.isfinite(x.astype(np.float32)).all()


def _search_oracle(case: dict[str, Any]) -> type[RecsysError] | None:
    """The error fit-then-search must raise, in the order the checks run, or None."""
    vectors, queries, k, exclude = case["vectors"], case["queries"], case["k"], case["exclude"]
    if _bad_matrix(vectors) or _bad_matrix(queries, vectors.shape[1]):
        return DataError
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        return ConfigError
    if exclude is not None and exclude.n_users != len(queries):
        return DataError
    return None


def check_results(case: dict[str, Any], idx: np.ndarray, scores: np.ndarray, exact: bool) -> None:
    """Shape (n_queries, k); the best min(k, items not excluded) rows by inner product (for ExactIndex, ties
    in item order; FAISS orders ties its own way), then -1 / -inf; no excluded item."""
    vectors = case["vectors"].astype(np.float32).astype(np.float64)
    queries = case["queries"].astype(np.float32).astype(np.float64)
    k = int(case["k"])
    full = queries @ vectors.T  # (n_queries, n_items), exact for these small values
    exclude = case["exclude"]
    if exclude is not None:
        full[exclude.event_user(), exclude.item_idx] = -np.inf
    assert idx.shape == scores.shape == (len(queries), k) and idx.dtype == np.int64 and scores.dtype == np.float32
    for u in range(len(queries)):
        order = np.lexsort((np.arange(len(vectors)), -full[u]))
        order = order[full[u, order] > -np.inf][:k]
        n = len(order)
        np.testing.assert_array_equal(scores[u, :n], full[u, order].astype(np.float32))
        assert (idx[u, n:] == -1).all() and np.isneginf(scores[u, n:]).all()
        if exact:
            np.testing.assert_array_equal(idx[u, :n], order)
        else:  # the same scores, each the real score of a distinct, allowed item
            assert len(set(idx[u, :n].tolist())) == n and (idx[u, :n] >= 0).all()
            np.testing.assert_array_equal(full[u, idx[u, :n]].astype(np.float32), scores[u, :n])


def _case(vectors: Any, queries: Any, k: Any, exclude: Histories | None = None) -> dict[str, Any]:
    return {"vectors": np.asarray(vectors), "queries": np.asarray(queries), "k": k, "exclude": exclude, "batch_size": 2}


ONES = np.ones((4, 3), dtype=np.float32)


@examples(200)
@given(case=search_cases())
@example(case=_case(np.zeros((0, 3), np.float32), ONES, 5))  # empty catalogue: padding only
@example(case=_case(np.arange(12, dtype=np.float16).reshape(3, 4).T, ONES[:2, :3].astype(np.int64), 9))  # k > items
@example(
    case=_case(
        np.asfortranarray(ONES.astype(np.float64)), ONES[:, ::-1], 2, histories_from_rows([[0], [], [1, 2], [3]])
    )
)
@example(case=_case(ONES.astype(np.complex64), ONES, 2))  # complex: refused, not truncated to its real part
@example(case=_case(np.zeros((4, 0)), np.zeros((1, 0)), 1))  # zero-width vectors
@example(case=_case(ONES, ONES[:, :2], 1))  # mismatched dimension
@example(case=_case(ONES, np.where(ONES > 0, np.nan, 0), 1))  # NaN queries
@example(case=_case(ONES.astype(np.float64) * 1e300, ONES, 1))  # finite float64, infinite float32
@example(case=_case(ONES, ONES, 2.5))
@example(case=_case(ONES, ONES, True))
@example(case=_case(ONES, ONES, "3"))
@example(case=_case(ONES, ONES, 0))
@example(case=_case(ONES, ONES, -1))
def test_index_search_on_any_array(case: dict[str, Any]) -> None:
    """Any dtype (converted to float32), any layout, zero rows, k above the catalogue: the exact top k for
    FaissIndex and ExactIndex alike; NaN/inf, complex/bool/object, 1-D/3-D, other dims: DataError; k < 1 or
    not an integer: ConfigError. The inputs are never modified."""
    vectors_before, queries_before = case["vectors"].copy(), case["queries"].copy()
    expected = _search_oracle(case)
    event(f"outcome: {expected.__name__ if expected else 'results'}")
    for index_class in (FaissIndex, ExactIndex):
        index = index_class(IndexConfig(batch_size=case["batch_size"]))
        if expected is not None:
            with pytest.raises(expected):
                index.fit(case["vectors"]).search(case["queries"], case["k"], exclude=case["exclude"])
            continue
        idx, scores = index.fit(case["vectors"]).search(case["queries"], case["k"], exclude=case["exclude"])
        check_results(case, idx, scores, exact=index_class is ExactIndex)
    assert same_array(case["vectors"], vectors_before) and same_array(case["queries"], queries_before)


# ---- FAISS's own index file: round trip, and corrupt files are a ModelFormatError -------------------------

HEADER = 45  # IndexFlatIP: "IxFI", d (i32), ntotal (i64), 2 x i64, is_trained (u8), metric (i32), byte size (i64)
SIZE_FIELD = slice(37, 45)


@st.composite
def index_files(draw: st.DrawFn) -> tuple[np.ndarray, str, Any]:
    n_items, dim = draw(st.integers(1, 12)), draw(st.integers(1, 5))
    vectors = np.array(draw(st.lists(st.integers(-3, 3), min_size=n_items * dim, max_size=n_items * dim)))
    damage = draw(st.sampled_from(["none", "truncate", "huge byte size", "garbage", "wrong magic"]))
    where = draw(st.integers(0, 10_000))
    garbage = draw(st.binary(max_size=80))
    return vectors.reshape(n_items, dim).astype(np.float32), damage, (where, garbage)


def _damage(raw: bytes, damage: str, where: int, garbage: bytes) -> bytes:
    if damage == "truncate":
        return raw[: where % len(raw)]
    if damage == "huge byte size":  # beyond FAISS's own sanity limit on vector sizes
        return raw[: SIZE_FIELD.start] + struct.pack("<q", 2**62 + where) + raw[SIZE_FIELD.stop :]
    if damage == "garbage":
        return b"\x00" + garbage  # never a valid magic
    if damage == "wrong magic":
        return b"IxFX" + raw[4:]
    return raw


@examples(60)
@given(case=index_files())
def test_faiss_index_files_round_trip_or_are_a_model_format_error(case: tuple[np.ndarray, str, Any]) -> None:
    vectors, damage, (where, garbage) = case
    event(f"damage: {damage}")
    queries = vectors[: min(3, len(vectors))] + 1
    with tempfile.TemporaryDirectory(prefix="recsys-props-") as folder:
        path = Path(folder) / "index.faiss"
        FaissIndex().fit(vectors).save(path)
        path.write_bytes(_damage(path.read_bytes(), damage, where, garbage))
        if damage != "none":
            with pytest.raises(ModelFormatError, match=r"index\.faiss"):
                FaissIndex.load(path)
            return
        loaded = FaissIndex.load(path)
    assert (loaded.n_items_, loaded.dim_) == vectors.shape
    for got, want in zip(loaded.search(queries, 4), FaissIndex().fit(vectors).search(queries, 4), strict=True):
        np.testing.assert_array_equal(got, want)
