"""Amazon 2018 "Industrial and Scientific": the UniSRec benchmark split and the LC-Rec sequences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import polars as pl

from recsys.data import DataConfig, Dataset
from recsys.datasets._movielens import read_atomic
from recsys.datasets._paths import find_files, finish, read_tsv
from recsys.errors import DataError
from recsys.schema import ITEM_ID, TIMESTAMP, USER_ID

__all__ = ["load_amazon_scientific_lcrec", "load_amazon_scientific_unisrec"]

_UNISREC_FILES: Final = (
    "Scientific.train.inter",
    "Scientific.valid.inter",
    "Scientific.test.inter",
    "Scientific.text",
    "Scientific.item2index",
)
MAX_HISTORY: Final = 50
"""The UniSRec/RecBole benchmark files keep at most this many history items per row."""

_STAGES: Final = ("train", "valid", "test")


def _read_benchmark(path: Path, stage: int) -> pl.DataFrame:
    """``user_id, item_id_list (list[i64]), item_id, stage, row`` from a RecBole benchmark ``.inter`` file."""
    return (
        read_atomic(path)
        .select(
            pl.col(USER_ID).cast(pl.Int64),
            pl.col("item_id_list").str.split(" ").cast(pl.List(pl.Int64)),
            pl.col(ITEM_ID).cast(pl.Int64),
        )
        .with_row_index("row")
        .with_columns(pl.lit(stage, pl.Int8).alias("stage"))
    )


def _stack_in_position_order(rows: list[pl.DataFrame]) -> pl.DataFrame:
    """All prediction rows, each user's in the order of their target's position in the sequence.

    Train rows are ordered by history length; rows truncated to ``MAX_HISTORY`` (same length) come longest
    first in the file, so ties go by descending row number. Valid then test follow. Adds ``n_hist`` and ``p``,
    the target's position (shortest history length plus the row's rank).
    """
    stacked = pl.concat(rows).with_columns(pl.col("item_id_list").list.len().alias("n_hist"))
    stacked = stacked.sort(
        [USER_ID, "stage", "n_hist", "row"], descending=[False, False, False, True], maintain_order=True
    )
    k = pl.int_range(pl.len()).over(USER_ID)
    return stacked.with_columns((pl.col("n_hist").first().over(USER_ID) + k).alias("p"))


def _sequences(stacked: pl.DataFrame) -> pl.DataFrame:
    """``user_id, sequence``: the shortest history followed by every target in position order."""
    return stacked.group_by(USER_ID, maintain_order=True).agg(
        pl.col("item_id_list").first().list.concat(pl.col(ITEM_ID).implode()).alias("sequence")
    )


def _check_one_valid_test(stacked: pl.DataFrame) -> None:
    """Each user must have exactly one valid row and one test row."""
    stages = stacked.filter(pl.col("stage") > 0).group_by(USER_ID).agg(pl.col("stage").sort().alias("stages"))
    odd = stages.filter(pl.col("stages") != pl.lit([1, 2], pl.List(pl.Int8)))
    if odd.height:
        raise DataError(
            f"{odd.height} user(s) lack exactly one valid and one test row in the UniSRec files "
            f"(for example user_id {odd[USER_ID].head(5).to_list()}); the files are not the published split."
        )


def _check_windows(stacked: pl.DataFrame, sequences: pl.DataFrame) -> None:
    """Every row must be a window of its user's sequence: ``history == seq[p - len:p]``, ``target == seq[p]``.

    ``p``, the target's position, is the length of the user's shortest history plus the row's rank in position
    order; the history length must be ``min(p, MAX_HISTORY)``. This covers "the valid history is the test
    history minus its last item" (up to the truncation).
    """
    seq, n_hist, p = pl.col("sequence"), pl.col("n_hist"), pl.col("p")
    checked = stacked.join(sequences, on=USER_ID)
    bad = checked.filter(
        (seq.list.slice(p - n_hist, n_hist) != pl.col("item_id_list"))
        | (seq.list.get(p, null_on_oob=True) != pl.col(ITEM_ID))
        | (n_hist != pl.min_horizontal(p, pl.lit(MAX_HISTORY)))
    )
    if bad.height:
        where = bad.select(pl.col("stage").replace_strict(range(3), _STAGES), USER_ID, "row").head(5).rows()
        raise DataError(
            f"{bad.height} UniSRec row(s) disagree with the user's sequence rebuilt from the three files "
            f"(for example (file, user_id, row): {where}), e.g. a valid history is not the test history "
            "minus its last item. The files are not the published split; re-fetch them."
        )


_UNISREC_TEXT = r"^(?s)(.*)\. (Industrial & Scientific[^.]*)?\. (.*?)\.?$"
"""``title. category path. brand.``: the category path (one leaf, its levels joined by spaces, so it cannot be
split into levels) starts with the catalogue root or is empty (134 items); the brand may hold dots ("Mr. Heater")."""


def _unisrec_items(text_path: Path, index_path: Path) -> pl.DataFrame:
    """``item_id (Int64), text, asin, brand (str), categories (list[str])``: the integer ids of the split files with
    their text, and the brand and category path read back out of that text (null brand / empty list where the text
    has none; the text itself is unchanged)."""
    index = read_tsv(index_path, columns=("asin", ITEM_ID)).with_columns(pl.col(ITEM_ID).cast(pl.Int64))
    text = read_atomic(text_path).rename({ITEM_ID: "asin"})
    items = index.join(text, on="asin", how="left").select(ITEM_ID, "text", "asin").sort(ITEM_ID)
    parts = pl.col("text").str.strip_chars().str.extract_groups(_UNISREC_TEXT)
    brand = parts.struct.field("3").str.strip_chars()
    category = parts.struct.field("2").str.strip_chars()
    return items.with_columns(
        pl.when(brand != "").then(brand).alias("brand"),
        pl.when(category != "")
        .then(pl.concat_list(category))
        .otherwise(pl.lit([], pl.List(pl.String)))
        .alias("categories"),
    )


def _events(sequences: pl.DataFrame) -> pl.DataFrame:
    """One row per event: position as ``timestamp``; the last two events are ``valid`` and ``test``."""
    n = pl.col("sequence").list.len()
    return (
        sequences.with_columns(pl.int_ranges(0, n).alias(TIMESTAMP), n.alias("n"))
        .explode("sequence", TIMESTAMP)
        .select(
            USER_ID,
            pl.col("sequence").alias(ITEM_ID),
            TIMESTAMP,
            pl.when(pl.col(TIMESTAMP) == pl.col("n") - 1)
            .then(pl.lit("test"))
            .when(pl.col(TIMESTAMP) == pl.col("n") - 2)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("train"))
            .alias("split"),
        )
    )


def load_amazon_scientific_unisrec(data_dir: str | Path | None = None) -> Dataset:
    """UniSRec "Scientific": 8,442 users, 4,385 items, 59,427 events, with the published leave-one-out split.

    Reads ``Scientific.{train,valid,test}.inter`` (RecBole benchmark rows ``user_id, item_id_list, item_id``),
    ``Scientific.text`` and ``Scientific.item2index`` from ``amazon-scientific-unisrec/``. ``item_id`` is the
    integer id of the split files (Int64), ``user_id`` the integer user id; item text is the file's single
    string (title, categories, brand). There are no times: ``timestamp`` is the position 0..n-1
    (``has_time=False``). ``split`` is ``"test"`` for the last event, ``"valid"`` for the one before,
    ``"train"`` for the rest, exactly as in the files.

    The files truncate every history to its last 50 items. Three users (247, 1412, 1570) have longer
    sequences (80, 60 and 56 events); their early items are recovered from the train rows, which hold every
    prefix, so the full sequences are returned. A model following the benchmark protocol truncates to 50
    itself.

    Raises
    ------
    DataError
        A file row is not a window of its user's rebuilt sequence, e.g. the valid row's history is not the
        test history minus its last item: the files are not the published split.
    """
    paths = find_files("amazon-scientific-unisrec", _UNISREC_FILES, data_dir)
    rows = [_read_benchmark(path, stage) for stage, path in enumerate(paths[:3])]
    stacked = _stack_in_position_order(rows)
    sequences = _sequences(stacked)
    _check_one_valid_test(stacked)
    _check_windows(stacked, sequences)
    items = _unisrec_items(paths[3], paths[4])
    config = DataConfig(text_fields=("text",), order_is_time=False)
    return finish(_events(sequences), items, config, "amazon-scientific-unisrec")


def _lcrec_items(path: Path) -> pl.DataFrame:
    raw: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    fields = {"title": pl.String, "description": pl.String, "brand": pl.String, "categories": pl.String}
    ids = pl.DataFrame({ITEM_ID: list(raw)}).select(pl.col(ITEM_ID).cast(pl.Int64))
    return ids.hstack(pl.from_dicts(list(raw.values()), schema=fields))


def _lcrec_interactions(path: Path) -> pl.DataFrame:
    raw: dict[str, list[int]] = json.loads(path.read_text(encoding="utf-8"))
    frame = pl.DataFrame(
        {USER_ID: list(raw), ITEM_ID: list(raw.values())},
        schema={USER_ID: pl.String, ITEM_ID: pl.List(pl.Int64)},
    )
    return (
        frame.with_columns(
            pl.col(USER_ID).cast(pl.Int64), pl.int_ranges(0, pl.col(ITEM_ID).list.len()).alias(TIMESTAMP)
        )
        .explode(ITEM_ID, TIMESTAMP)
        .with_columns(pl.col(TIMESTAMP).cast(pl.Int64))
    )


def load_amazon_scientific_lcrec(data_dir: str | Path | None = None) -> Dataset:
    """LC-Rec "Scientific": 8,317 users, 4,344 items, 58,492 events; chronological sequences without times.

    Reads ``Scientific.inter.json`` (user index -> item list, oldest first) and ``Scientific.item.json``
    (item index -> title, description, brand, categories) from ``amazon-scientific-lcrec/``. Ids are the
    integer indexes (Int64). Item text is ``title. brand. categories. description``; 123 items have an empty
    description (the title is never empty). ``timestamp`` is the position (``has_time=False``); no split is
    published, so there is no ``split`` column.
    """
    inter_path, item_path = find_files(
        "amazon-scientific-lcrec", ("Scientific.inter.json", "Scientific.item.json"), data_dir
    )
    config = DataConfig(text_fields=("title", "brand", "categories", "description"), order_is_time=False)
    return finish(_lcrec_interactions(inter_path), _lcrec_items(item_path), config, "amazon-scientific-lcrec")
