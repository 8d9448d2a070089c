"""Tests of the data contract: readers, validation, the fingerprint and per-user histories.

Small frames with known answers; Hypothesis properties for the validation of messy interactions.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.data import (
    DataConfig,
    Dataset,
    DataWarning,
    Histories,
    item_index,
    read_table,
    validate_interactions,
    validate_items,
)
from recsys.errors import ConfigError, DataError, DatasetNotFoundError, SchemaError

CATALOGUE = pl.Series("item_id", [10, 11, 12], dtype=pl.Int64)


def interactions(**columns: list) -> pl.DataFrame:
    """A small valid interactions frame (user 1 then user 2, times ascending), with ``columns`` replaced."""
    data: dict[str, list] = {"user_id": [1, 1, 2], "item_id": [10, 11, 12], "timestamp": [100, 200, 300]}
    data.update(columns)
    return pl.DataFrame(data)


def items(**columns: list) -> pl.DataFrame:
    data: dict[str, list] = {"item_id": [10, 11, 12], "text": ["apple pie", "banana bread", "cherry tart"]}
    data.update(columns)
    return pl.DataFrame(data)


def message_names(error: pytest.ExceptionInfo, *parts: str) -> None:
    """The error message mentions every part (column, bad value, fix)."""
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


REPAIR = DataConfig(on_invalid="repair")


# --- readers -------------------------------------------------------------------------------------------------


@pytest.fixture
def table() -> pl.DataFrame:
    return pl.DataFrame({"user_id": [1, 2, 3], "item_id": ["a", "b", "c"], "timestamp": [5, 6, 7]})


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("t.parquet", lambda df, p: df.write_parquet(p)),
        ("t.csv", lambda df, p: df.write_csv(p)),
        ("t.tsv", lambda df, p: df.write_csv(p, separator="\t")),
        ("t.jsonl", lambda df, p: df.write_ndjson(p)),
        ("t.csv.gz", lambda df, p: Path(p).write_bytes(gzip.compress(df.write_csv().encode()))),
    ],
)
def test_readers_round_trip(tmp_path: Path, table: pl.DataFrame, name: str, write) -> None:
    path = tmp_path / name
    write(table, path)
    back = read_table(path)
    assert back.columns == table.columns
    assert back.to_dicts() == table.to_dicts()


def test_a_folder_of_parquet_parts_is_one_table(tmp_path: Path, table: pl.DataFrame) -> None:
    table.head(2).write_parquet(tmp_path / "part-0.parquet")
    table.tail(1).write_parquet(tmp_path / "part-1.parquet")
    assert sorted(read_table(tmp_path)["user_id"].to_list()) == [1, 2, 3]


def test_unknown_suffix_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    path.write_text("x")
    with pytest.raises(ConfigError) as error:
        read_table(path)
    message_names(error, "t.xlsx", "format=")


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        read_table(tmp_path / "absent.parquet")
    message_names(error, "absent.parquet")
    assert isinstance(error.value, FileNotFoundError)


# --- schema errors -------------------------------------------------------------------------------------------


def test_missing_interaction_columns() -> None:
    with pytest.raises(SchemaError) as error:
        validate_interactions(interactions().drop("timestamp"), DataConfig(), CATALOGUE)
    message_names(error, "'timestamp'", "rename")


def test_missing_item_text_column() -> None:
    with pytest.raises(SchemaError) as error:
        validate_items(items(), DataConfig(text_fields=("title",)))
    message_names(error, "'title'", "rename")


def test_missing_columns_raise_even_in_repair_mode() -> None:
    with pytest.raises(SchemaError):
        validate_interactions(interactions().drop("user_id"), REPAIR, CATALOGUE)


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_float_ids_are_a_schema_error(column: str) -> None:
    frame = interactions().with_columns(pl.col(column).cast(pl.Float64))
    with pytest.raises(SchemaError) as error:
        validate_interactions(frame, DataConfig(), CATALOGUE)
    message_names(error, repr(column), "Float64", "Fix:", "cast")


def test_float_item_ids_in_items_are_a_schema_error() -> None:
    with pytest.raises(SchemaError) as error:
        validate_items(items(item_id=[1.0, 2.0, 3.0]), DataConfig())
    message_names(error, "'item_id'", "Float64", "Fix:")


def test_item_id_dtype_must_match_the_catalogue() -> None:
    frame = interactions().with_columns(pl.col("item_id").cast(pl.Int32))
    with pytest.raises(SchemaError) as error:
        validate_interactions(frame, DataConfig(), CATALOGUE)
    message_names(error, "'item_id'", "Int32", "Int64", "Fix:")


def test_string_order_column_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as error:
        validate_interactions(interactions(timestamp=["a", "b", "c"]), DataConfig(), CATALOGUE)
    message_names(error, "'timestamp'", "String", "Fix:")


def test_non_numeric_weight_is_a_schema_error() -> None:
    frame = interactions(rating=["good", "bad", "ok"])
    with pytest.raises(SchemaError) as error:
        validate_interactions(frame, DataConfig(weight_column="rating"), CATALOGUE)
    message_names(error, "'rating'", "String", "Fix:")


# --- bad values: raise names column, value and fix; repair drops exactly those rows --------------------------


BAD_INTERACTIONS = [
    pytest.param({"user_id": [1, None, 2]}, "'user_id'", "None", "null user_id", id="null-user"),
    pytest.param({"item_id": [10, None, 12]}, "'item_id'", "None", "null item_id", id="null-item"),
    pytest.param({"item_id": [10, 99, 12]}, "'item_id'", "99", "unknown item (not in the items table)", id="unknown"),
    pytest.param(
        {"timestamp": [100.0, float("nan"), 300.0]},
        "'timestamp'",
        "nan",
        "non-finite or out-of-range order value",
        id="nan-time",
    ),
    pytest.param(
        {"timestamp": [100.0, float("inf"), 300.0]},
        "'timestamp'",
        "inf",
        "non-finite or out-of-range order value",
        id="inf-time",
    ),
    pytest.param({"timestamp": [100, None, 300]}, "'timestamp'", "None", "null order value", id="null-time"),
]


@pytest.mark.parametrize(("columns", "column", "value", "reason"), BAD_INTERACTIONS)
def test_bad_interaction_values_raise(columns: dict, column: str, value: str, reason: str) -> None:
    with pytest.raises(DataError) as error:
        validate_interactions(interactions(**columns), DataConfig(), CATALOGUE)
    assert not isinstance(error.value, SchemaError)
    message_names(error, column, value, "Fix:", "on_invalid='repair'")


@pytest.mark.parametrize(("columns", "column", "value", "reason"), BAD_INTERACTIONS)
def test_repair_drops_exactly_the_bad_interaction(columns: dict, column: str, value: str, reason: str) -> None:
    with pytest.warns(DataWarning, match="dropped 1 row"):
        out, report = validate_interactions(interactions(**columns), REPAIR, CATALOGUE)
    assert out.select("user_id", "item_id", "timestamp").rows() == [(1, 10, 100), (2, 12, 300)]
    assert report.dropped == {reason: 1}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights(bad: float) -> None:
    frame = interactions(rating=[4.0, bad, 5.0])
    with pytest.raises(DataError) as error:
        validate_interactions(frame, DataConfig(weight_column="rating"), CATALOGUE)
    message_names(error, "'rating'", repr(bad), "Fix:")
    with pytest.warns(DataWarning):
        out, report = validate_interactions(frame, DataConfig(weight_column="rating", on_invalid="repair"), CATALOGUE)
    assert out["weight"].to_list() == [4.0, 5.0]
    assert out.schema["weight"] == pl.Float32
    assert report.dropped == {"null or non-finite weight": 1}


def test_null_weight_is_flagged() -> None:
    frame = interactions(rating=[4.0, None, 5.0])
    with pytest.raises(DataError):
        validate_interactions(frame, DataConfig(weight_column="rating"), CATALOGUE)


def test_fractional_float_timestamps_raise_even_in_repair_mode() -> None:
    frame = interactions(timestamp=[100.0, 150.5, 300.0])
    for config in (DataConfig(), REPAIR):
        with pytest.raises(DataError) as error:
            validate_interactions(frame, config, CATALOGUE)
        message_names(error, "'timestamp'", "150.5", "Fix:")


def test_whole_float_timestamps_become_int64() -> None:
    out, _ = validate_interactions(interactions(timestamp=[100.0, 200.0, 300.0]), DataConfig(), CATALOGUE)
    assert out.schema["timestamp"] == pl.Int64
    assert out["timestamp"].to_list() == [100, 200, 300]


def test_float_timestamp_out_of_int64_range_is_flagged() -> None:
    with pytest.raises(DataError):
        validate_interactions(interactions(timestamp=[100.0, 1e19, 300.0]), DataConfig(), CATALOGUE)


def test_null_item_ids() -> None:
    frame = items(item_id=[10, None, 12])
    with pytest.raises(DataError) as error:
        validate_items(frame, DataConfig())
    message_names(error, "'item_id'", "None", "Fix:")
    with pytest.warns(DataWarning):
        out, report = validate_items(frame, REPAIR)
    assert out["item_id"].to_list() == [10, 12]
    assert report.dropped == {"null item id": 1}


def test_duplicate_item_ids_keep_the_first() -> None:
    frame = items(item_id=[10, 11, 10])
    with pytest.raises(DataError) as error:
        validate_items(frame, DataConfig())
    message_names(error, "'item_id'", "10", "one row per item")
    with pytest.warns(DataWarning):
        out, report = validate_items(frame, REPAIR)
    assert out.rows() == [(10, "apple pie"), (11, "banana bread")]
    assert report.dropped == {"duplicate item id": 1}


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_empty_item_text(empty: str | None) -> None:
    frame = items(text=["apple pie", empty, "cherry tart"])
    with pytest.raises(DataError) as error:
        validate_items(frame, DataConfig())
    message_names(error, "'item_id'", "11", "Fix:", "'text'")
    with pytest.warns(DataWarning):
        out, report = validate_items(frame, REPAIR)
    assert out["item_id"].to_list() == [10, 12]
    assert report.dropped == {"empty item text": 1}


def test_text_is_empty_only_when_every_field_is() -> None:
    frame = items(title=["Pie", "  ", None], text=["", " ", "tart"])
    config = DataConfig(text_fields=("title", "text"), on_invalid="repair")
    with pytest.warns(DataWarning):
        out, _ = validate_items(frame, config)
    assert out.select("item_id", "text").rows() == [(10, "Pie"), (12, "tart")]


# --- text joining --------------------------------------------------------------------------------------------


def test_text_fields_are_joined_with_the_separator_skipping_nulls() -> None:
    frame = pl.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Dune", None, "Emma"],
            "year": [1965, 1813, None],
            "genres": [["sci-fi", "classic"], ["romance"], []],
        }
    )
    out, report = validate_items(frame, DataConfig(text_fields=("title", "year", "genres"), text_separator=" | "))
    assert out.columns[:2] == ["item_id", "text"]
    assert out["text"].to_list() == ["Dune | 1965 | sci-fi, classic", "1813 | romance", "Emma"]
    assert set(out.columns) == {"item_id", "text", "title", "year", "genres"}
    assert report.dropped == {}


def test_default_separator() -> None:
    out, _ = validate_items(items(title=["A", "B", "C"]), DataConfig(text_fields=("title", "text")))
    assert out["text"][0] == "A. apple pie"


# --- order column --------------------------------------------------------------------------------------------


def test_datetime_order_column_becomes_epoch_seconds() -> None:
    times = pl.Series(["1970-01-01 00:00:00", "1970-01-02 00:00:00", "1970-01-02 01:01:01"]).str.to_datetime()
    out, _ = validate_interactions(interactions(timestamp=times.to_list()), DataConfig(), CATALOGUE)
    assert out.schema["timestamp"] == pl.Int64
    assert out["timestamp"].to_list() == [0, 86_400, 90_061]


def test_explicit_position_column_for_sequences_without_time() -> None:
    frame = pl.DataFrame({"user_id": ["u", "u", "v"], "item_id": [12, 10, 11], "pos": [1, 0, 0]})
    config = DataConfig(order_column="pos", order_is_time=False)
    out, _ = validate_interactions(frame, config, CATALOGUE)
    assert out.rows() == [("u", 10, 0), ("u", 12, 1), ("v", 11, 0)]
    dataset = Dataset.from_frames(frame, items(), config)
    assert dataset.has_time is False
    assert dataset.interactions.columns == ["user_id", "item_id", "timestamp"]


def test_unsorted_events_are_sorted_stably_and_counted() -> None:
    frame = pl.DataFrame(
        {
            "user_id": [2, 1, 1, 1, 2, 1],
            "item_id": [10, 12, 10, 11, 11, 12],
            "timestamp": [5, 30, 10, 10, 5, 10],
        }
    )
    out, report = validate_interactions(frame, DataConfig(), CATALOGUE)
    # user 1: the three events at time 10 keep their input order (10, 11, 12), then the one at 30.
    assert out.rows() == [(1, 10, 10), (1, 11, 10), (1, 12, 10), (1, 12, 30), (2, 10, 5), (2, 11, 5)]
    assert report.repaired == {"users whose events were sorted by time": 1}
    assert report.dropped == {}


def test_sorted_input_reports_no_repair() -> None:
    _, report = validate_interactions(interactions(), DataConfig(), CATALOGUE)
    assert report.repaired == {} and report.dropped == {}


def test_optional_columns_are_renamed_and_split_is_kept() -> None:
    frame = interactions(rating=[1, 2, 3], kind=["view", "buy", "view"], split=["train", "train", "test"], x=[0, 0, 0])
    out, _ = validate_interactions(frame, DataConfig(weight_column="rating", event_column="kind"), CATALOGUE)
    assert out.columns == ["user_id", "item_id", "timestamp", "weight", "event", "split"]
    assert out.schema["weight"] == pl.Float32
    assert out["event"].to_list() == ["view", "buy", "view"]


def test_repair_loses_no_good_rows_with_many_problems() -> None:
    frame = pl.DataFrame(
        {
            "user_id": [1, None, 1, 2, 2, 3, 1],
            "item_id": [10, 10, 99, 11, None, 12, 12],
            "timestamp": [3.0, 1.0, 2.0, float("nan"), 4.0, 5.0, 1.0],
        }
    )
    with pytest.warns(DataWarning):
        out, report = validate_interactions(frame, REPAIR, CATALOGUE)
    assert out.rows() == [(1, 12, 1), (1, 10, 3), (3, 12, 5)]
    assert sum(report.dropped.values()) == 4
    assert report.repaired == {"users whose events were sorted by time": 1}


# --- Dataset and fingerprint ---------------------------------------------------------------------------------


def test_dataset_from_frames_merges_both_reports() -> None:
    with pytest.warns(DataWarning):
        dataset = Dataset.from_frames(interactions(item_id=[10, 11, 11]), items(item_id=[10, 11, 11]), REPAIR)
    assert dataset.items["item_id"].to_list() == [10, 11]
    assert dataset.report.dropped == {"duplicate item id": 1}
    assert dataset.interactions.height == 3


def test_fingerprint_is_equal_for_equal_data() -> None:
    a = Dataset.from_frames(interactions(), items()).fingerprint()
    b = Dataset.from_frames(interactions(), items()).fingerprint()
    assert a == b
    assert (a.users, a.items, a.interactions) == (2, 3, 3)
    assert len(a.content_hash) == 16
    assert a.as_dict()["content_hash"] == a.content_hash


def test_fingerprint_changes_when_one_item_text_changes() -> None:
    a = Dataset.from_frames(interactions(), items()).fingerprint()
    b = Dataset.from_frames(interactions(), items(text=["apple pie", "banana bread", "cherry tarts"])).fingerprint()
    assert a.content_hash != b.content_hash
    assert (a.users, a.items, a.interactions) == (b.users, b.items, b.interactions)


def test_fingerprint_changes_when_the_order_changes() -> None:
    a = Dataset.from_frames(interactions(), items()).fingerprint()
    b = Dataset.from_frames(interactions(timestamp=[200, 100, 300]), items()).fingerprint()
    assert a.content_hash != b.content_hash


# --- histories -----------------------------------------------------------------------------------------------


@pytest.fixture
def three_users() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Catalogue ``a..d`` (rows 0..3); users x (3 events), y (1 event), z (2 events), already validated."""
    catalogue = item_index(pl.DataFrame({"item_id": ["a", "b", "c", "d"]}))
    events = pl.DataFrame(
        {
            "user_id": ["x", "x", "x", "y", "z", "z"],
            "item_id": ["d", "a", "c", "b", "a", "b"],
            "timestamp": [1, 2, 3, 7, 4, 5],
            "weight": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    return events, catalogue


def test_item_index_is_the_catalogue_row() -> None:
    index = item_index(pl.DataFrame({"item_id": ["q", "p"], "text": ["1", "2"]}))
    assert index.columns == ["item_idx", "item_id"]
    assert index.rows() == [(0, "q"), (1, "p")]


def test_histories_csr_known_answer(three_users: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, catalogue = three_users
    h = Histories.from_interactions(events, catalogue)
    assert h.user_ids.to_list() == ["x", "y", "z"]
    np.testing.assert_array_equal(h.indptr, [0, 3, 4, 6])
    np.testing.assert_array_equal(h.item_idx, [3, 0, 2, 1, 0, 1])
    np.testing.assert_array_equal(h.timestamps, [1, 2, 3, 7, 4, 5])
    np.testing.assert_array_equal(h.weights, [1, 2, 3, 4, 5, 6])
    assert h.indptr.dtype == np.int64 and h.item_idx.dtype == np.int64 and h.weights.dtype == np.float32
    np.testing.assert_array_equal(h.lengths, [3, 1, 2])
    np.testing.assert_array_equal(h.items_of(2), [0, 1])
    np.testing.assert_array_equal(h.event_user(), [0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(h.event_age(), [2, 1, 0, 0, 1, 0])


def test_histories_respect_requested_users_and_give_unknown_users_nothing(
    three_users: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    events, catalogue = three_users
    h = Histories.from_interactions(events, catalogue, users=pl.Series(["z", "nobody", "x"]))
    assert h.user_ids.to_list() == ["z", "nobody", "x"]
    assert h.user_ids.name == "user_id"
    np.testing.assert_array_equal(h.indptr, [0, 2, 2, 5])
    np.testing.assert_array_equal(h.item_idx, [0, 1, 3, 0, 2])
    assert h.items_of(1).size == 0


def test_histories_of_only_unknown_users_are_empty(three_users: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, catalogue = three_users
    h = Histories.from_interactions(events, catalogue, users=pl.Series(["p", "q"]))
    np.testing.assert_array_equal(h.indptr, [0, 0, 0])
    assert h.item_idx.size == 0 and h.indptr.dtype == np.int64


def test_histories_sort_by_time_within_user(three_users: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, catalogue = three_users
    h = Histories.from_interactions(events.reverse(), catalogue)
    assert h.user_ids.to_list() == ["z", "y", "x"]
    np.testing.assert_array_equal(h.item_idx, [0, 1, 1, 3, 0, 2])


def test_histories_reject_unknown_items(three_users: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, catalogue = three_users
    events = events.with_columns(
        pl.when(pl.col("timestamp") == 7).then(pl.lit("zz")).otherwise("item_id").alias("item_id")
    )
    with pytest.raises(DataError) as error:
        Histories.from_interactions(events, catalogue)
    message_names(error, "'zz'", "Fix:")


# --- properties ----------------------------------------------------------------------------------------------

maybe_id = st.one_of(st.none(), st.integers(0, 4))
event = st.tuples(maybe_id, st.one_of(st.none(), st.integers(0, 6)), st.one_of(st.none(), st.integers(-3, 3)))
PROPERTY_CATALOGUE = pl.Series("item_id", [0, 1, 2, 3, 4], dtype=pl.Int64)


def event_frame(rows: list[tuple]) -> pl.DataFrame:
    schema = {"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(rows=st.lists(event, max_size=30))
def test_property_raise_mode_only_raises_typed_errors(rows: list[tuple]) -> None:
    try:
        out, _ = validate_interactions(event_frame(rows), DataConfig(), PROPERTY_CATALOGUE)
    except DataError:  # SchemaError is a DataError
        return
    assert out.height == len(rows)


@PROPERTY_SETTINGS
@given(rows=st.lists(event, max_size=30))
def test_property_repair_keeps_exactly_the_good_rows_sorted(rows: list[tuple]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        out, report = validate_interactions(event_frame(rows), REPAIR, PROPERTY_CATALOGUE)
    good = [r for r in rows if r[0] is not None and r[1] is not None and r[1] <= 4 and r[2] is not None]
    assert sorted(out.rows()) == sorted(good)  # every output row was an input row, and no good row is lost
    assert sum(report.dropped.values()) == len(rows) - len(good)
    keys = out.select("user_id", "timestamp").rows()
    assert keys == sorted(keys)
    # ties keep input order: the good rows of each (user, time), in input order
    for key in set(keys):
        expected = [r for r in good if (r[0], r[2]) == key]
        assert [r for r in out.rows() if (r[0], r[2]) == key] == expected


@PROPERTY_SETTINGS
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(["u", "v", "w"])),
            st.sampled_from(["a", "b", "zz"]),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64)),
        ),
        max_size=20,
    ),
    repair=st.booleans(),
)
def test_property_float_times_and_string_ids_never_crash(rows: list[tuple], repair: bool) -> None:
    frame = pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Float64}, orient="row"
    )
    config = DataConfig(on_invalid="repair" if repair else "raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        try:
            out, _ = validate_interactions(frame, config, pl.Series(["a", "b"]))
        except DataError:
            return
    assert out.schema["timestamp"] == pl.Int64
    assert out["user_id"].null_count() == 0 and out["item_id"].is_in(["a", "b"]).all()
