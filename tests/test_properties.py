"""Property-based tests (Hypothesis) of the validators, top-k and the public API on hostile input.

Every property states the expected answer: a typed error (a subclass of ``RecsysError`` whose message names
the offending column) or a result computed independently here (an oracle). The FAISS-facing properties live
in ``properties_faiss_cases.py`` and run in a subprocess (``test_properties_faiss.py``).

Examples in the default run (``max_examples``, derandomized; ``HYPOTHESIS_PROFILE=thorough`` runs 10x, random):
validators 300 + 150 + 100 + 3 = 553, top-k 150, public API 40 + 30 + 30 + 40 + 3 + 3 = 146; this file 849,
with ``properties_faiss_cases.py`` (200 + 60 = 260) 1,109 in all, plus 12 + 13 explicit ``@example`` cases.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import histories_from_rows
from hypothesis import event, example, given
from hypothesis import strategies as st
from property_support import examples, layout, same_array

from recsys._topk import to_recommendations, topk
from recsys.data import DataConfig, Dataset, DataWarning, Histories, item_index
from recsys.errors import ConfigError, DataError, RecsysError, SchemaError
from recsys.models.ranker import RankerConfig
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig

EPOCH = dt.datetime(1970, 1, 1)
# What polars' str.strip_chars() strips (Unicode White_Space); Python's str.strip() also strips \x1c-\x1f.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
INT_IDS = [0, 1, 2, 7, -3]
STR_IDS = ["a", "b", "é", "日本", "", " "]
UNKNOWN = {"int": [99, 12345], "str": ["zz", "ß"]}


def _ids(kind: str) -> list[Any]:
    return INT_IDS if kind == "int" else STR_IDS


def _raises_typed(call: Callable[[], Any]) -> RecsysError | None:
    """Run ``call``; return its RecsysError (None when it succeeds). Any other exception fails the test."""
    try:
        call()
    except RecsysError as err:
        return err
    return None


# ============================================================================================ validators

# Each example draws a few faults to inject (often none); the oracle below judges the frames it gets, never the
# fault labels, which only steer generation towards clean and hostile frames alike.
FAULTS = [
    "null item id",
    "duplicate item id",
    "empty text",
    "null user",
    "null item",
    "unknown item",
    "bad time",
    "bad weight",
]

good_texts = st.one_of(
    st.text(max_size=12).map(lambda t: "·" + t),  # any unicode, after one visible character
    st.sampled_from(["dog food", "  padded title  ", "Ünïcödé 🐕", "日本語のタイトル"]),
    st.sampled_from(["x", "é", "語"]).map(lambda c: c * 100_000),  # huge
)
empty_texts = st.one_of(
    st.none(),
    st.just(""),
    st.text(alphabet=" \t\n\r\u00a0\u2003\u3000\x0b", max_size=4),  # whitespace only
    st.just(" " * 100_000),  # huge and empty
)
tag_lists = st.one_of(
    st.none(), st.lists(st.one_of(st.none(), st.sampled_from(["sci-fi", " ", "", "drama"])), max_size=3)
)


@st.composite
def item_frames(draw: st.DrawFn, kind: str, faults: set[str]) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """An items table with null, duplicate and unicode ids and empty, whitespace, unicode and huge texts."""
    ids = draw(st.lists(st.sampled_from(_ids(kind)), max_size=len(_ids(kind)), unique=True))
    if "null item id" in faults or "duplicate item id" in faults:
        extra = st.none() if "duplicate item id" not in faults else st.sampled_from(_ids(kind))
        extra = extra | st.none() if "null item id" in faults else extra
        for _ in range(draw(st.integers(1, 3))):
            ids.insert(draw(st.integers(0, len(ids))), draw(extra))
    n = len(ids)
    text = good_texts | empty_texts if "empty text" in faults else good_texts
    data: dict[str, pl.Series] = {
        "item_id": pl.Series(ids, dtype=pl.Int64 if kind == "int" else pl.String),
        "text": pl.Series(draw(st.lists(text, min_size=n, max_size=n)), dtype=pl.String),
    }
    fields = ["text"]
    if draw(st.booleans()):
        data["tags"] = pl.Series(draw(st.lists(tag_lists, min_size=n, max_size=n)), dtype=pl.List(pl.String))
        fields.append("tags")
    if draw(st.booleans()):
        years = draw(st.lists(st.none() | st.integers(1900, 2030), min_size=n, max_size=n))
        data["year"] = pl.Series(years, dtype=pl.Int64)
        fields.append("year")
    return pl.DataFrame(data), tuple(fields)


# (good values, bad values) per kind of order column: many equal values, in any order
TIME_VALUES: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "int": (st.integers(-3, 5), st.none()),
    "uint": (st.integers(0, 5), st.none() | st.sampled_from([2**63, 2**64 - 1])),
    "float": (
        st.integers(-3, 5).map(float),
        st.none() | st.sampled_from([math.nan, math.inf, -math.inf, 2.0**63, -(2.0**63), 1e300]),
    ),
    "datetime": (st.integers(0, 5).map(lambda s: dt.datetime(2020, 1, 1) + dt.timedelta(seconds=s)), st.none()),
}
TIME_DTYPES = {"int": pl.Int64, "uint": pl.UInt64, "float": pl.Float64, "datetime": pl.Datetime("us")}
GOOD_WEIGHTS = st.sampled_from([0.0, 1.5, -2.0, 3.0e38])
BAD_WEIGHTS = st.none() | st.sampled_from([1e300, -1e300, math.nan, math.inf, -math.inf])


def _maybe(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], on: bool) -> st.SearchStrategy[Any]:
    """``good`` values, mixed with ``bad`` ones when the fault is ``on``."""
    return st.one_of(good, good, bad) if on else good


@st.composite
def interaction_frames(draw: st.DrawFn, kind: str, faults: set[str]) -> tuple[pl.DataFrame, DataConfig, str]:
    """Interactions with null ids, unknown items, duplicate rows, unsorted/equal/NaN/inf/huge times and
    null/NaN/inf/huge weights. Returns the frame, its config and the kind of time values."""
    n = draw(st.integers(0, 20))
    time_kind = draw(st.sampled_from(sorted(TIME_VALUES)))
    order = draw(st.sampled_from(["timestamp", "ts"]))
    users = _maybe(st.sampled_from(_ids(kind)[:4]), st.none(), "null user" in faults)
    items = _maybe(st.sampled_from(_ids(kind)), st.none(), "null item" in faults)
    items = _maybe(items, st.sampled_from(UNKNOWN[kind]), "unknown item" in faults)
    times = _maybe(*TIME_VALUES[time_kind], "bad time" in faults)
    rows = draw(st.lists(st.tuples(users, items, times), min_size=n, max_size=n))
    rows += draw(st.lists(st.sampled_from(rows), max_size=3)) if rows else []  # exact duplicate rows
    id_dtype = pl.Int64 if kind == "int" else pl.String
    frame = pl.DataFrame(
        rows, schema={"user_id": id_dtype, "item_id": id_dtype, order: TIME_DTYPES[time_kind]}, orient="row"
    )
    weighted = draw(st.booleans())
    if weighted:
        weights = _maybe(GOOD_WEIGHTS, BAD_WEIGHTS, "bad weight" in faults)
        frame = frame.with_columns(
            rating=pl.Series(draw(st.lists(weights, min_size=len(rows), max_size=len(rows))), dtype=pl.Float64)
        )
    on_invalid = draw(st.sampled_from(["raise", "repair"]))
    config = DataConfig(order_column=order, weight_column="rating" if weighted else None, on_invalid=on_invalid)
    return frame, config, time_kind


def _text_part(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = ", ".join(v for v in value if v is not None)
    return str(value).strip(WHITESPACE) or None


def expected_items(items: pl.DataFrame, fields: tuple[str, ...]) -> list[tuple[Any, str]]:
    """The data contract by hand: drop null ids, then later duplicates, then items whose joined text is empty."""
    seen, kept = set(), []
    for row in items.iter_rows(named=True):
        if row["item_id"] is None or row["item_id"] in seen:
            continue
        seen.add(row["item_id"])
        parts = [p for p in (_text_part(row[f]) for f in fields) if p is not None]
        if parts:
            kept.append((row["item_id"], ". ".join(parts)))
    return kept


def _time(value: Any, kind: str) -> int | None:
    """The validated timestamp, or None when the value is bad."""
    if value is None:
        return None
    if kind == "datetime":
        return int((value - EPOCH).total_seconds())
    if kind == "float":
        return int(value) if math.isfinite(value) and abs(value) < 2**63 else None
    return value if value < 2**63 else None


def _weight(value: float | None) -> float | None:
    with np.errstate(over="ignore"):
        return float(np.float32(value)) if value is not None and np.isfinite(np.float32(value)) else None


def expected_interactions(
    frame: pl.DataFrame, config: DataConfig, time_kind: str, known: set[Any]
) -> tuple[list[tuple[Any, ...]], set[str], int]:
    """Good rows (with validated values) sorted by user then time (ties in input order), the columns of the
    bad rows, and the number of users whose good rows were out of order."""
    good, bad_columns = [], set()
    for position, row in enumerate(frame.iter_rows(named=True)):
        values = {
            "user_id": row["user_id"],
            "item_id": row["item_id"],
            "timestamp": _time(row[config.order_column], time_kind),
        }
        problems = {c for c in ("user_id", "item_id") if row[c] is None}
        problems |= {"item_id"} if row["item_id"] is not None and row["item_id"] not in known else set()
        problems |= {config.order_column} if values["timestamp"] is None else set()
        if config.weight_column is not None:
            values["weight"] = _weight(row[config.weight_column])
            problems |= {config.weight_column} if values["weight"] is None else set()
        bad_columns |= problems
        if not problems:
            good.append((values["user_id"], values["timestamp"], position, tuple(values.values())))
    unsorted = 0
    for user in {g[0] for g in good}:
        times = [g[1] for g in good if g[0] == user]
        unsorted += any(b < a for a, b in itertools.pairwise(times))
    return [g[3] for g in sorted(good, key=lambda g: g[:3])], bad_columns, unsorted


@st.composite
def hostile_frames(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, tuple[str, ...], DataConfig, str]:
    kind = draw(st.sampled_from(["int", "str"]))
    faults = draw(st.sets(st.sampled_from(FAULTS), max_size=3))
    items, fields = draw(item_frames(kind, faults))
    interactions, config, time_kind = draw(interaction_frames(kind, faults))
    config = DataConfig(
        text_fields=fields,
        order_column=config.order_column,
        weight_column=config.weight_column,
        on_invalid=config.on_invalid,
    )
    return interactions, items, fields, config, time_kind


EMPTY_INTERACTIONS = pl.DataFrame(schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64})
ONE_ITEM = pl.DataFrame({"item_id": [0], "text": ["a single item"]})


@examples(300)
@given(case=hostile_frames())
@example(case=(EMPTY_INTERACTIONS, ONE_ITEM.clear(), ("text",), DataConfig(), "int"))
@example(case=(EMPTY_INTERACTIONS, ONE_ITEM, ("text",), DataConfig(on_invalid="repair"), "int"))
@example(
    case=(pl.DataFrame({"user_id": [1], "item_id": [0], "timestamp": [5]}), ONE_ITEM, ("text",), DataConfig(), "int")
)
def test_from_frames_keeps_the_good_rows_and_accounts_for_every_other(
    case: tuple[pl.DataFrame, pl.DataFrame, tuple[str, ...], DataConfig, str],
) -> None:
    """Rows in = rows kept + rows dropped (counted by reason); kept rows are exactly the good ones, sorted
    stably; under "raise" any bad row is a DataError naming a bad column."""
    interactions, items, fields, config, time_kind = case
    kept_items = expected_items(items, fields)
    item_problems = len(kept_items) < items.height
    kept_rows, bad_columns, unsorted = expected_interactions(
        interactions, config, time_kind, {item_id for item_id, _ in kept_items}
    )
    event(f"on_invalid={config.on_invalid}, bad rows: {bool(item_problems or bad_columns)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = Dataset.from_frames(interactions, items, config)
        except SchemaError as err:
            raise AssertionError(f"well-typed frames raised SchemaError: {err}") from err
        except DataError as err:
            assert config.on_invalid == "raise" and (item_problems or bad_columns)
            named = bad_columns | ({"item_id"} if item_problems else set())
            assert any(repr(column) in str(err) for column in named), (named, str(err))
            return
    dropped = sum(data.report.dropped.values())
    assert items.height + interactions.height == data.items.height + data.interactions.height + dropped
    assert data.items.select("item_id", "text").rows() == kept_items
    assert data.interactions.rows() == kept_rows
    assert data.interactions.schema["timestamp"] == pl.Int64
    if config.weight_column is not None:
        assert data.interactions.schema["weight"] == pl.Float32
    assert data.report.repaired.get("users whose events were sorted by time", 0) == unsorted
    assert any(issubclass(w.category, DataWarning) for w in caught) == (dropped > 0)
    if config.on_invalid == "raise":
        assert dropped == 0


# ---- wrong dtypes and missing columns: always a SchemaError naming the column, in both modes --------------


def _swap(frame: pl.DataFrame, column: str, values: list[Any], dtype: pl.DataType | None = None) -> pl.DataFrame:
    n = frame.height
    series = pl.Series(column, (values * n)[:n], dtype=dtype)
    return frame.with_columns(series) if column in frame.columns else frame.hstack([series])


# (name, frame, column, make): ``make(interactions, items) -> (interactions, items, extra config)``
Mutation = Callable[[pl.DataFrame, pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]]
MUTATIONS: list[tuple[str, str, Mutation]] = [
    ("user_id", "float ids", lambda i, t: (_swap(i, "user_id", [1.5]), t, {})),
    ("user_id", "bool ids", lambda i, t: (_swap(i, "user_id", [True]), t, {})),
    ("user_id", "int8 ids", lambda i, t: (_swap(i, "user_id", [1], pl.Int8), t, {})),
    ("user_id", "categorical ids", lambda i, t: (_swap(i, "user_id", ["u"], pl.Categorical), t, {})),
    ("user_id", "list ids", lambda i, t: (_swap(i, "user_id", [[1]]), t, {})),
    ("user_id", "all-null ids", lambda i, t: (_swap(i, "user_id", [None], pl.Null), t, {})),
    ("user_id", "missing", lambda i, t: (i.drop("user_id"), t, {})),
    ("item_id", "int32 against int64 items", lambda i, t: (i.with_columns(pl.col("item_id").cast(pl.Int32)), t, {})),
    ("item_id", "string against int64 items", lambda i, t: (i.with_columns(pl.col("item_id").cast(pl.String)), t, {})),
    ("item_id", "missing", lambda i, t: (i.drop("item_id"), t, {})),
    ("timestamp", "string times", lambda i, t: (_swap(i, "timestamp", ["2020-01-01"]), t, {})),
    ("timestamp", "bool times", lambda i, t: (_swap(i, "timestamp", [False]), t, {})),
    ("timestamp", "date times", lambda i, t: (_swap(i, "timestamp", [dt.date(2020, 1, 1)]), t, {})),
    ("timestamp", "duration times", lambda i, t: (_swap(i, "timestamp", [dt.timedelta(1)]), t, {})),
    ("timestamp", "list times", lambda i, t: (_swap(i, "timestamp", [[1]]), t, {})),
    ("timestamp", "decimal times", lambda i, t: (_swap(i, "timestamp", [Decimal(1)]), t, {})),
    ("timestamp", "fractional times", lambda i, t: (i.with_columns(pl.col("timestamp") + 0.5), t, {})),
    ("timestamp", "missing", lambda i, t: (i.drop("timestamp"), t, {})),
    ("rating", "string weights", lambda i, t: (_swap(i, "rating", ["5"]), t, {"weight_column": "rating"})),
    ("rating", "bool weights", lambda i, t: (_swap(i, "rating", [True]), t, {"weight_column": "rating"})),
    ("rating", "list weights", lambda i, t: (_swap(i, "rating", [[1.0]]), t, {"weight_column": "rating"})),
    ("rating", "missing weights", lambda i, t: (i, t, {"weight_column": "rating"})),
    ("kind", "list events", lambda i, t: (_swap(i, "kind", [["click"]]), t, {"event_column": "kind"})),
    ("kind", "struct events", lambda i, t: (_swap(i, "kind", [{"a": 1}]), t, {"event_column": "kind"})),
    ("kind", "missing events", lambda i, t: (i, t, {"event_column": "kind"})),
    ("item_id", "float item ids", lambda i, t: (i, _swap(t, "item_id", [1.5]), {})),
    ("item_id", "bool item ids", lambda i, t: (i, _swap(t, "item_id", [True]), {})),
    ("item_id", "all-null item ids", lambda i, t: (i, _swap(t, "item_id", [None], pl.Null), {})),
    ("text", "bool texts", lambda i, t: (i, _swap(t, "text", [True]), {})),
    ("text", "date texts", lambda i, t: (i, _swap(t, "text", [dt.date(2020, 1, 1)]), {})),
    ("text", "struct texts", lambda i, t: (i, _swap(t, "text", [{"a": "b"}]), {})),
    ("text", "nested list texts", lambda i, t: (i, _swap(t, "text", [[["a"]]]), {})),
    ("text", "binary texts", lambda i, t: (i, _swap(t, "text", [b"\xff"]), {})),
    ("text", "all-null texts", lambda i, t: (i, _swap(t, "text", [None], pl.Null), {})),
    ("text", "missing", lambda i, t: (i, t.drop("text"), {})),
    ("title", "missing text field", lambda i, t: (i, t, {"text_fields": ("text", "title")})),
]


@st.composite
def clean_frames(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame]:
    n_items = draw(st.integers(1, 4))
    item_ids = list(range(10, 10 + n_items))
    words = st.text(alphabet="abcdé語 ", min_size=1, max_size=8).filter(lambda s: s.strip())
    items = pl.DataFrame({"item_id": item_ids, "text": draw(st.lists(words, min_size=n_items, max_size=n_items))})
    rows = draw(
        st.lists(st.tuples(st.integers(0, 3), st.sampled_from(item_ids), st.integers(-5, 5)), min_size=1, max_size=8)
    )
    interactions = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    return interactions, items


@examples(150)
@given(frames=clean_frames(), mutation=st.sampled_from(MUTATIONS), repair=st.booleans())
def test_wrong_dtypes_and_missing_columns_are_schema_errors_naming_the_column(
    frames: tuple[pl.DataFrame, pl.DataFrame], mutation: tuple[str, str, Mutation], repair: bool
) -> None:
    column, _, make = mutation
    interactions, items, extra = make(*frames)
    config = DataConfig(on_invalid="repair" if repair else "raise", **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(SchemaError) as error:
            Dataset.from_frames(interactions, items, config)
    assert repr(column) in str(error.value)


@examples(3)
@given(seed=st.integers(0, 2**32 - 1), distinct_times=st.sampled_from([1, 50, 100_000]))
def test_a_100k_event_history_is_sorted_stably_and_kept_whole(seed: int, distinct_times: int) -> None:
    """One user, 100,000 events at ``distinct_times`` different times (1: all equal), in random order."""
    rng = np.random.default_rng(seed)
    n = 100_000
    times = rng.integers(0, distinct_times, n)
    items = pl.DataFrame({"item_id": np.arange(50), "text": [f"item {i}" for i in range(50)]})
    frame = pl.DataFrame({"user_id": np.zeros(n, np.int64), "item_id": rng.integers(0, 50, n), "timestamp": times})
    data = Dataset.from_frames(frame, items)
    order = np.argsort(times, kind="stable")
    np.testing.assert_array_equal(data.interactions["item_id"].to_numpy(), frame["item_id"].to_numpy()[order])
    np.testing.assert_array_equal(data.interactions["timestamp"].to_numpy(), times[order])
    assert data.report.repaired.get("users whose events were sorted by time", 0) == int(distinct_times > 1)
    assert data.report.dropped == {}


# ---- per-user histories from raw (unvalidated) events ---------------------------------------------------

# (dtype, good values, bad values) per kind of timestamp column
HISTORY_TIMES: dict[str, tuple[pl.DataType, st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "int": (pl.Int64, st.integers(-2, 4), st.none()),
    "uint": (pl.UInt64, st.integers(0, 4), st.none() | st.just(2**64 - 1)),
    "float": (pl.Float64, st.integers(-2, 4).map(float), st.none() | st.sampled_from([math.nan, math.inf, 0.5])),
    "datetime": (pl.Datetime("ms"), st.integers(0, 4).map(lambda s: EPOCH + dt.timedelta(seconds=s)), st.none()),
}
HISTORY_FAULTS = ["null user", "unknown item", "bad time", "bad weight", "no timestamp", "int item ids", "string time"]


@st.composite
def raw_events(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.Series | None, str]:
    faults = draw(st.sets(st.sampled_from(HISTORY_FAULTS), max_size=2))
    time_kind = draw(st.sampled_from(sorted(HISTORY_TIMES)))
    dtype, good, bad = HISTORY_TIMES[time_kind]
    users = _maybe(st.sampled_from(["x", "y", "z"]), st.none(), "null user" in faults)
    items = _maybe(st.sampled_from(["a", "b", "c"]), st.just("zz"), "unknown item" in faults)
    rows = draw(st.lists(st.tuples(users, items, _maybe(good, bad, "bad time" in faults)), max_size=12))
    frame = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": dtype}, orient="row")
    if draw(st.booleans()):
        weights = _maybe(GOOD_WEIGHTS, BAD_WEIGHTS, "bad weight" in faults)
        weights = draw(st.lists(weights, min_size=len(rows), max_size=len(rows)))
        frame = frame.with_columns(weight=pl.Series(weights, dtype=pl.Float64))
    if "string time" in faults:
        time_kind = "string"
        frame = frame.with_columns(pl.col("timestamp").cast(pl.String))
    if "no timestamp" in faults:
        frame = frame.drop("timestamp")
    if "int item ids" in faults:
        frame = frame.with_columns(pl.col("item_id").cast(pl.Categorical).to_physical().cast(pl.Int64))
    users = draw(st.none() | st.lists(st.sampled_from(["x", "y", "nobody"]), max_size=4).map(pl.Series))
    return frame, users, time_kind


def _history_oracle(frame: pl.DataFrame, time_kind: str) -> type[RecsysError] | None:
    """The error Histories.from_interactions must raise (schema problems first), or None."""
    if "timestamp" not in frame.columns or frame.schema["item_id"] != pl.String or time_kind == "string":
        return SchemaError
    times = frame["timestamp"].drop_nulls().to_list()
    if time_kind == "float" and any(math.isfinite(t) and t != int(t) for t in times):
        return SchemaError
    bad_time = frame["timestamp"].null_count() or any(_time(t, time_kind) is None for t in times)
    bad_weight = "weight" in frame.columns and any(_weight(w) is None for w in frame["weight"].to_list())
    bad_user = frame["user_id"].null_count() > 0
    if bad_user or bad_time or bad_weight or not frame["item_id"].is_in(["a", "b", "c"]).all():
        return DataError
    return None


@examples(100)
@given(case=raw_events())
def test_histories_from_raw_events_are_exact_or_a_typed_error(case: tuple[pl.DataFrame, pl.Series | None, str]) -> None:
    """Each requested user's events, oldest first (ties in input order), as catalogue rows; or the oracle's error."""
    frame, users, time_kind = case
    catalogue = item_index(pl.DataFrame({"item_id": ["a", "b", "c"]}))
    expected_error = _history_oracle(frame, time_kind)
    event(f"outcome: {expected_error.__name__ if expected_error else 'histories'}")
    if expected_error is not None:
        with pytest.raises(expected_error):
            Histories.from_interactions(frame, catalogue, users)
        return
    histories = Histories.from_interactions(frame, catalogue, users)
    wanted = frame["user_id"].unique(maintain_order=True).to_list() if users is None else users.to_list()
    assert histories.user_ids.to_list() == wanted
    rows = list(frame.iter_rows(named=True))
    for u, user in enumerate(wanted):
        own = sorted(
            ((_time(r["timestamp"], time_kind), p, r) for p, r in enumerate(rows) if r["user_id"] == user),
            key=lambda t: t[:2],
        )
        start, stop = histories.indptr[u], histories.indptr[u + 1]
        assert histories.item_idx[start:stop].tolist() == ["abc".index(r["item_id"]) for _, _, r in own]
        assert histories.timestamps[start:stop].tolist() == [t for t, _, _ in own]
        if histories.weights is not None:
            assert histories.weights[start:stop].tolist() == [_weight(r["weight"]) for _, _, r in own]


# ================================================================================================= top-k

SCORE_DTYPES = [np.float64, np.float32, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex128, object]


VALID_K = st.integers(1, 16) | st.sampled_from([np.int64(3), 10**4])
INVALID_K = st.sampled_from([0, -2, True, 2.5, "3", None, 1.0])
TOPK_FAULTS = ["k", "dtype", "NaN", "1-D", "exclusion rows", "exclusion items"]


@st.composite
def topk_cases(draw: st.DrawFn) -> dict[str, Any]:
    n_users, n_items = draw(st.integers(0, 5)), draw(st.integers(0, 12))
    values = np.array(
        draw(st.lists(st.integers(-4, 4), min_size=n_users * n_items, max_size=n_users * n_items)), dtype=np.float64
    ).reshape(n_users, n_items) / draw(st.sampled_from([1, 2]))
    faults = draw(st.sets(st.sampled_from(TOPK_FAULTS), max_size=2))
    dtype = draw(st.sampled_from(SCORE_DTYPES if "dtype" in faults else SCORE_DTYPES[:-2]))
    special = draw(st.sampled_from([None, math.inf, -math.inf] + ([math.nan, 1e300] if "NaN" in faults else [])))
    if special is not None and values.size and np.dtype(dtype).kind in "fcO":  # ints cannot hold them
        values.flat[draw(st.integers(0, values.size - 1))] = special
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = values.astype(dtype)
    exclude = None
    if draw(st.booleans()) or {"exclusion rows", "exclusion items"} & faults:
        rows = n_users + ("exclusion rows" in faults)
        top = n_items + 2 * ("exclusion items" in faults)
        exclude = histories_from_rows(
            draw(st.lists(st.lists(st.integers(0, max(top - 1, 0)), max_size=4), min_size=rows, max_size=rows))
        )
        exclude = exclude if top > 0 else histories_from_rows([[] for _ in range(rows)])
    return {
        "scores": layout(
            scores, draw(st.sampled_from(["C", "fortran", "strided", "transposed", "reversed", "read-only"]))
        ),
        "k": draw(INVALID_K if "k" in faults else VALID_K),
        "exclude": exclude,
        "overwrite": draw(st.booleans()),
        "one_d": "1-D" in faults,
    }


def _valid_k(k: Any) -> bool:
    return not isinstance(k, bool) and isinstance(k, (int, np.integer)) and k >= 1


def _topk_oracle(case: dict[str, Any]) -> type[RecsysError] | None:
    scores, exclude = case["scores"], case["exclude"]
    if not _valid_k(case["k"]):
        return ConfigError
    if case["one_d"] or scores.dtype.kind in "Oc":
        return DataError
    real = scores.astype(np.float64)
    if np.isnan(real).any() or (np.abs(real[np.isfinite(real)]) > np.finfo(np.float32).max).any():
        return DataError
    if exclude is not None and (exclude.n_users != scores.shape[0] or (exclude.item_idx >= scores.shape[1]).any()):
        return DataError
    return None


def _topk_case(scores: Any, k: Any, exclude: list[list[int]] | None = None, overwrite: bool = False) -> dict[str, Any]:
    histories = None if exclude is None else histories_from_rows(exclude)
    return {"scores": np.asarray(scores), "k": k, "exclude": histories, "overwrite": overwrite, "one_d": False}


GRID = np.arange(12).reshape(3, 4) % 5  # (3, 4) with ties


@examples(150)
@given(case=topk_cases())
@example(case=_topk_case(GRID, 2, [[0], [1], [2]]))  # int scores with exclusions: converted, never overflow
@example(case=_topk_case(GRID > 2, 3, [[3], [1], []]))  # bool scores: excluded items never come back as True
@example(case=_topk_case(GRID.astype(np.float16).T, 9, [[0, 1], [], [2], [3]], overwrite=True))
@example(case=_topk_case(GRID.astype(object), 2))
@example(case=_topk_case(GRID.astype(np.complex128), 2))
@example(case=_topk_case(np.zeros((2, 0), np.float32), 2, [[1], []]))  # exclusion beyond the catalogue
@example(case=_topk_case(np.array([[1e300, -1e300, 0.0]]), 3))  # float64 beyond float32
@example(case=_topk_case(np.array([[np.inf, -np.inf, 1.0]], np.float32), 3))
@example(case=_topk_case(GRID.astype(np.float32), 2.5))
def test_topk_is_a_full_sort_or_a_typed_error(case: dict[str, Any]) -> None:
    """Ranks by (score descending, item index ascending) of the float scores, history items and -inf never
    returned (-1 / -inf padding up to k); int and bool scores are converted; input untouched unless overwrite."""
    scores, k, exclude = case["scores"], case["k"], case["exclude"]
    before = scores.copy()
    expected_error = _topk_oracle(case)
    event(f"outcome: {expected_error.__name__ if expected_error else 'top k'}")
    call = scores.ravel() if case["one_d"] else scores
    if expected_error is not None:
        with pytest.raises(expected_error):
            topk(call, k, exclude, overwrite=case["overwrite"])
        assert same_array(scores, before)
        return
    idx, vals = topk(scores, k, exclude, overwrite=case["overwrite"])
    reference = before.astype(np.float64)
    if exclude is not None:
        reference[exclude.event_user(), exclude.item_idx] = -np.inf
    n_users, n_items = reference.shape
    assert idx.shape == vals.shape == (n_users, k) and idx.dtype == np.int64 and vals.dtype == np.float32
    for u in range(n_users):
        order = np.lexsort((np.arange(n_items), -reference[u]))[:k]
        order = order[reference[u, order] > -np.inf]
        expected = np.full(k, -1)
        expected[: len(order)] = order
        np.testing.assert_array_equal(idx[u], expected)
        np.testing.assert_array_equal(vals[u][: len(order)], reference[u, order].astype(np.float32))
        assert np.isneginf(vals[u][len(order) :]).all()
    mutated = case["overwrite"] and exclude is not None and scores.flags.writeable and scores.dtype.kind == "f"
    assert same_array(scores, reference.astype(scores.dtype) if mutated else before)
    recs = to_recommendations(pl.Series("user_id", range(n_users)), idx, vals, pl.Series("item_id", range(n_items)))
    assert recs.height == int((idx >= 0).sum())
    assert recs.filter(pl.col("rank") == 1).height == int((idx[:, :1] >= 0).sum())
    assert recs.select(pl.col("rank").max().over("user_id") == pl.len().over("user_id")).to_series().all()


# =========================================================================================== public API

N_ITEMS = 18


@pytest.fixture(scope="module")
def model(
    topic_interactions: pl.DataFrame, topic_items: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Recommender:
    """A small zero-shot pipeline on conftest's nine topic users and 18 items, fitted once for this module."""
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=str(tmp_path_factory.mktemp("embeddings")), show_progress=False),
        n_candidates=12,
        n_transition_candidates=6,
        ranker=RankerConfig(min_child_samples=2, n_estimators=20),
        show_progress=False,
    )
    return Recommender(config).fit(topic_interactions, topic_items)


def _seen(model: Recommender, user: Any) -> set[int]:
    events = model.interactions_
    assert events is not None
    return set(events.filter(pl.col("user_id").eq_missing(user))["item_id"].to_list())


def check_recommendations(recs: pl.DataFrame, users: list[Any], k: int, seen: dict[Any, set[int]]) -> None:
    """One block per requested user (duplicates included), in request order, of min(k, items not seen) rows
    ranked 1..n by non-increasing score, without history items."""
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs.schema["score"] == pl.Float32 and recs.schema["rank"] == pl.UInt32
    sizes = [min(k, N_ITEMS - len(seen[u])) for u in users]
    assert recs["user_id"].to_list() == [u for u, n in zip(users, sizes, strict=True) for _ in range(n)]
    start = 0
    for user, size in zip(users, sizes, strict=True):
        block = recs.slice(start, size)
        start += size
        assert block["rank"].to_list() == list(range(1, size + 1))
        assert block["item_id"].n_unique() == size and not set(block["item_id"].to_list()) & seen[user]
        scores = block["score"].to_numpy()
        assert np.isfinite(scores).all() and (np.diff(scores) <= 0).all()


USER_POOL = [0, 4, 8, None, 100, -1]  # three fitted users, a null id and two unknown users


@examples(40)
@given(
    users=st.lists(st.sampled_from(USER_POOL), max_size=6),
    k=st.integers(-2, N_ITEMS + 5),
    container=st.sampled_from(["list", "series", "int32", "numpy"]),
)
def test_recommend_any_user_list(model: Recommender, users: list[Any], k: int, container: str) -> None:
    """Unknown and null users get popular items; duplicates are answered once per occurrence; each user's
    list is the same as when asked alone; k < 1 is a ConfigError; k above the catalogue returns what is left."""
    request: Any = users
    if container == "series":
        request = pl.Series("whatever", users, dtype=pl.Int64)
    elif container == "int32":
        request = pl.Series(users, dtype=pl.Int32)
    elif container == "numpy" and None not in users:
        request = np.array(users, dtype=np.int64)
    if k < 1:
        with pytest.raises(ConfigError, match="k"):
            model.recommend(request, k=k)
        return
    recs = model.recommend(request, k=k)
    check_recommendations(recs, users, k, {u: _seen(model, u) for u in users})
    for user in set(users) - {None}:
        alone = model.recommend([user], k=k)
        assert recs.filter(pl.col("user_id") == user).head(alone.height).equals(alone)


@st.composite
def inlinehistories_from_rows(draw: st.DrawFn) -> pl.DataFrame:
    """Events of new users 500/501 (and sometimes fitted user 0, whose events they replace): a single event up
    to 12, unsorted, with equal timestamps and repeated items."""
    rows = draw(
        st.lists(
            st.tuples(st.sampled_from([500, 501, 0]), st.integers(0, N_ITEMS - 1), st.integers(0, 3)),
            min_size=1,
            max_size=12,
        )
    )
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}, orient="row")


@examples(30)
@given(history=inlinehistories_from_rows(), k=st.integers(1, N_ITEMS + 2))
def test_recommend_with_an_inline_history_sorts_it_stably(model: Recommender, history: pl.DataFrame, k: int) -> None:
    """Unsorted events give the same answer as the same events sorted by time (ties kept in input order); the
    history's items are excluded; a user without events there gets popular items."""
    users = [500, 501, 0]
    recs = model.recommend(users, k=k, history=history)
    seen = {u: set(history.filter(pl.col("user_id") == u)["item_id"].to_list()) for u in users}
    check_recommendations(recs, users, k, seen)
    assert recs.equals(model.recommend(users, k=k, history=history.sort("timestamp", maintain_order=True)))


HISTORY_MUTATIONS: dict[str, tuple[type[RecsysError], Callable[[pl.DataFrame], pl.DataFrame]]] = {
    "unknown item": (DataError, lambda h: h.with_columns(pl.lit(999, pl.Int64).alias("item_id"))),
    "null item": (DataError, lambda h: h.with_columns(pl.lit(None, pl.Int64).alias("item_id"))),
    "null time": (DataError, lambda h: h.with_columns(pl.lit(None, pl.Int64).alias("timestamp"))),
    "NaN time": (DataError, lambda h: h.with_columns(pl.lit(math.nan).alias("timestamp"))),
    "inf time": (DataError, lambda h: h.with_columns(pl.lit(math.inf).alias("timestamp"))),
    "fractional time": (SchemaError, lambda h: h.with_columns(pl.col("timestamp") + 0.25)),
    "string time": (SchemaError, lambda h: h.with_columns(pl.col("timestamp").cast(pl.String))),
    "no time": (SchemaError, lambda h: h.drop("timestamp")),
    "string items": (SchemaError, lambda h: h.with_columns(pl.col("item_id").cast(pl.String))),
    "NaN weight": (DataError, lambda h: h.with_columns(weight=pl.lit(math.nan))),
}


@examples(30)
@given(history=inlinehistories_from_rows(), mutation=st.sampled_from(sorted(HISTORY_MUTATIONS)), scoring=st.booleans())
def test_a_hostile_inline_history_is_a_typed_error(
    model: Recommender, history: pl.DataFrame, mutation: str, scoring: bool
) -> None:
    expected, mutate = HISTORY_MUTATIONS[mutation]
    bad = mutate(history)
    with pytest.raises(expected):
        if scoring:
            model.score(pl.DataFrame({"user_id": [500, 501, 0], "item_id": [1, 2, 3]}), history=bad, on_unknown="null")
        else:
            model.recommend([500, 501, 0], k=3, history=bad)


@examples(3)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([1, 6, 50]))
def test_a_100k_event_inline_history(model: Recommender, seed: int, k: int) -> None:
    """100,000 events of one new user over items 0..11 with many equal times: the 6 other items at most, the
    same as for the sorted events; score() keeps its 18 rows in order, all scored."""
    rng = np.random.default_rng(seed)
    n = 100_000
    history = pl.DataFrame(
        {"user_id": np.full(n, 500), "item_id": rng.integers(0, 12, n), "timestamp": rng.integers(0, 1000, n)}
    )
    recs = model.recommend([500], k=k, history=history)
    check_recommendations(recs, [500], k, {500: set(range(12))})
    assert recs.equals(model.recommend([500], k=k, history=history.sort("timestamp", maintain_order=True)))
    candidates = pl.DataFrame({"user_id": [500] * N_ITEMS, "item_id": rng.permutation(N_ITEMS)})
    scored = model.score(candidates, history=history)
    assert scored.select("user_id", "item_id").equals(candidates)
    assert scored["score"].null_count() == 0 and np.isfinite(scored["interest_score"].to_numpy()).all()


CANDIDATE_USERS = [0, 4, 8, 100]  # three fitted users, one unknown
CANDIDATE_ITEMS = [0, 5, 11, 17, 18, -4]  # four catalogue items, two unknown


def _unknown_ids(message: str, kind: str) -> str:
    found = re.search(rf"{kind} \(for example \[(.*?)\]\)", message)
    assert found is not None, message
    return found.group(1)


def check_scored(model: Recommender, candidates: pl.DataFrame, scored: pl.DataFrame, alone: dict) -> None:
    """Input rows in input order; null scores exactly on unknown users or items, finite ones elsewhere; each
    row's interest_score (user vector . item vector) equal to that of the same pair scored alone."""
    assert scored.height == candidates.height
    assert scored.select(candidates.columns).equals(candidates)
    assert scored.schema["score"] == pl.Float32 and scored.schema["interest_score"] == pl.Float32
    for user, item, interest, score in scored.select("user_id", "item_id", "interest_score", "score").iter_rows():
        if user not in (0, 4, 8) or not 0 <= item < N_ITEMS:
            assert interest is None and score is None
            continue
        if (user, item) not in alone:
            alone[(user, item)] = model.score(pl.DataFrame({"user_id": [user], "item_id": [item]}))["interest_score"][0]
        assert interest == pytest.approx(alone[(user, item)], abs=1e-6) and math.isfinite(score)


@examples(40)
@given(
    rows=st.lists(st.tuples(st.sampled_from(CANDIDATE_USERS), st.sampled_from(CANDIDATE_ITEMS)), max_size=30),
    on_unknown=st.sampled_from(["raise", "null"]),
)
def test_score_keeps_rows_and_names_unknown_ids(
    model: Recommender, rows: list[tuple[int, int]], on_unknown: str
) -> None:
    candidates = pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64}, orient="row")
    bad_users = {u for u, _ in rows if u not in (0, 4, 8)}
    bad_items = {i for _, i in rows if not 0 <= i < N_ITEMS}
    if on_unknown == "raise" and (bad_users or bad_items):
        with pytest.raises(DataError) as error:
            model.score(candidates, on_unknown="raise")
        for kind, bad in (("user", bad_users), ("item", bad_items)):
            named = _unknown_ids(str(error.value), kind)
            assert all(str(b) in named for b in bad)  # at most five of each kind: all named
        return
    check_scored(model, candidates, model.score(candidates, on_unknown=on_unknown), {})  # type: ignore[arg-type]


@examples(3)
@given(seed=st.integers(0, 2**32 - 1), unknown_share=st.sampled_from([0.0, 0.01, 0.3]))
def test_score_more_than_10k_candidates_for_one_user(model: Recommender, seed: int, unknown_share: float) -> None:
    rng = np.random.default_rng(seed)
    n = 10_500
    items = np.where(rng.random(n) < unknown_share, rng.integers(N_ITEMS, N_ITEMS + 40, n), rng.integers(0, N_ITEMS, n))
    candidates = pl.DataFrame({"user_id": np.full(n, 4), "item_id": items})
    scored = model.score(candidates, on_unknown="null")
    alone: dict = {}
    check_scored(model, candidates, scored, alone)
    if (items >= N_ITEMS).any():
        with pytest.raises(DataError) as error:
            model.score(candidates)
        assert any(str(i) in _unknown_ids(str(error.value), "item") for i in set(items[items >= N_ITEMS].tolist()))


# ---- edge cases these properties found in recsys/pipeline.py (fixed): known answers ----------------------------


def test_score_duplicate_candidate_rows_score_the_same(model: Recommender) -> None:
    scored = model.score(pl.DataFrame({"user_id": [0] * 5, "item_id": [0] * 5}))
    assert scored["score"].n_unique() == 1


def test_score_null_user_under_raise_is_a_data_error(model: Recommender) -> None:
    with pytest.raises(DataError):
        model.score(
            pl.DataFrame({"user_id": [None, 0], "item_id": [1, 1]}, schema={"user_id": pl.Int64, "item_id": pl.Int64})
        )


def test_score_candidates_with_another_item_dtype_is_typed(model: Recommender) -> None:
    with pytest.raises(RecsysError):
        model.score(pl.DataFrame({"user_id": [0], "item_id": ["1"]}))


def test_score_candidates_with_a_score_column(model: Recommender) -> None:
    candidates = pl.DataFrame({"user_id": [0], "item_id": [1], "score": [0.5]})
    error = _raises_typed(lambda: model.score(candidates))
    assert error is not None or model.score(candidates).height == 1


def test_inline_history_with_another_user_dtype_is_typed(model: Recommender) -> None:
    history = pl.DataFrame({"user_id": ["500"], "item_id": [1], "timestamp": [1]})
    assert _raises_typed(lambda: model.recommend([500], k=3, history=history)) is not None


def test_recommend_mixed_type_user_list_is_typed(model: Recommender) -> None:
    assert _raises_typed(lambda: model.recommend([1, "x"], k=3)) is not None


def test_recommend_non_integer_k_is_a_config_error(model: Recommender) -> None:
    with pytest.raises(ConfigError):
        model.recommend([0], k=2.5)  # type: ignore[arg-type]
