"""Last.fm artists in the LLaRA split: next-item samples without user ids, rebuilt into pseudo-users."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import polars as pl

from recsys.data import DataConfig, Dataset
from recsys.datasets._paths import find_files, finish
from recsys.errors import DataError
from recsys.schema import ITEM_ID, TIMESTAMP, USER_ID

__all__ = ["load_lastfm_llara"]

_FILES: Final = ("train_data.jsonl", "val_data.jsonl", "test_data.jsonl", "id2name.txt")
_SCHEMA: Final[dict[str, pl.DataType]] = {"seq": pl.List(pl.Int64), "next": pl.Int64()}


def _read_samples(path: Path) -> pl.DataFrame:
    """``seq (list[i64]), next (i64), row (u32)`` from a JSON-lines sample file."""
    return pl.read_ndjson(path, schema=_SCHEMA).with_row_index("row")


def _read_names(path: Path) -> pl.DataFrame:
    """``item_id (Int64), name`` from ``id::artist name`` lines (the name may itself hold ``::``)."""
    lines = pl.Series("line", path.read_text(encoding="utf-8").splitlines()).to_frame()
    parts = lines.filter(pl.col("line") != "").select(pl.col("line").str.extract_groups(r"^(\d+)::(.*)$"))
    frame = parts.unnest("line").rename({"1": ITEM_ID, "2": "name"})
    bad = frame.filter(pl.col(ITEM_ID).is_null())
    if bad.height:
        raise DataError(f"{bad.height} line(s) of {path} are not 'id::name'; the file is damaged, re-fetch it.")
    return frame.with_columns(pl.col(ITEM_ID).cast(pl.Int64))


def _check_windows(train: pl.DataFrame, window: int) -> None:
    """Each training line's ``seq`` must be the ``min(position, window)`` items before its ``next``."""
    expected_len = pl.min_horizontal(pl.col("position"), pl.lit(window))
    bad_len = train.filter(pl.col("seq").list.len() != expected_len)
    cells = (
        train.with_columns(pl.int_ranges(0, pl.col("seq").list.len()).alias("j"))
        .explode("seq", "j")
        .drop_nulls("seq")
        .with_columns((pl.col("row").cast(pl.Int64) - pl.col("seq_len") + pl.col("j")).alias("source"))
        .join(
            train.select(pl.col("row").cast(pl.Int64).alias("source"), pl.col("next").alias("want")),
            on="source",
        )
    )
    bad_cells = cells.filter(pl.col("seq") != pl.col("want"))
    if bad_len.height or bad_cells.height:
        rows = sorted({*bad_len["row"].to_list(), *bad_cells["row"].to_list()})[:5]
        raise DataError(
            f"train_data.jsonl is not sliding windows over whole sequences (for example lines {rows}); "
            "the LLaRA file is damaged or in another layout, re-fetch it."
        )


def _train_events(train: pl.DataFrame) -> pl.DataFrame:
    """Rebuild the training sequences: an empty ``seq`` starts one; its lines' ``next`` values are its items.

    The file holds one line per position: every prefix while the history is short, then a sliding window of
    the last ``window`` items, so each sequence is the ``next`` values of its lines, in file order.
    """
    starts = pl.col("seq").list.len() == 0
    if train.height and train["seq"][0].len() != 0:
        raise DataError("train_data.jsonl does not start with an empty history; it is not the LLaRA layout.")
    train = train.with_columns((starts.cum_sum() - 1).alias("sequence"), pl.col("seq").list.len().alias("seq_len"))
    train = train.with_columns(pl.int_range(pl.len()).over("sequence").alias("position"))
    _check_windows(train, window=int(train.select(pl.col("seq_len").max().fill_null(0)).item()))
    return train.select(
        pl.format("train-{}", pl.col("sequence")).alias(USER_ID),
        pl.col("next").alias(ITEM_ID),
        pl.col("position").cast(pl.Int64).alias(TIMESTAMP),
        pl.lit("train").alias("split"),
    )


def _holdout_events(samples: pl.DataFrame, split: str) -> pl.DataFrame:
    """Line ``i`` becomes pseudo-user ``<split>-<i>``: ``seq`` as train events, then ``next`` as ``split``."""
    items = pl.col("seq").list.concat(pl.concat_list("next"))
    frame = samples.select(
        pl.format(f"{split}-{{}}", pl.col("row")).alias(USER_ID),
        items.alias(ITEM_ID),
        pl.int_ranges(0, items.list.len()).alias(TIMESTAMP),
        pl.col("seq").list.len().alias("n"),
    ).explode(ITEM_ID, TIMESTAMP)
    return frame.select(
        USER_ID,
        ITEM_ID,
        pl.col(TIMESTAMP).cast(pl.Int64),
        pl.when(pl.col(TIMESTAMP) == pl.col("n")).then(pl.lit(split)).otherwise(pl.lit("train")).alias("split"),
    )


def load_lastfm_llara(data_dir: str | Path | None = None) -> Dataset:
    """Last.fm artists as split by LLaRA (SIGIR 2024): 4,606 artists; there are no user ids.

    Reads ``{train,val,test}_data.jsonl`` (lines ``{"seq": [...], "next": id}``, history at most 10) and
    ``id2name.txt`` (``id::artist name``, the item text ``name``) from ``lastfm-llara/``. Pseudo-users
    (``user_id`` strings):

    * ``"train-<k>"``: the k-th training sequence (0-based). The training file holds one line per position
      (every prefix up to 10 items, then a sliding window of the last 10), so each sequence is rebuilt whole
      from its lines' ``next`` values (checked exactly against every window); all its events are ``"train"``.
    * ``"valid-<i>"`` / ``"test-<i>"``: line ``i`` (0-based) of the val/test file, its ``seq`` as ``"train"``
      events followed by ``next`` as the ``"valid"`` / ``"test"`` event.

    ``timestamp`` is the position (``has_time=False``). Val/test pseudo-users are not linked to training ones.
    """
    train_path, val_path, test_path, names_path = find_files("lastfm-llara", _FILES, data_dir)
    interactions = pl.concat(
        [
            _train_events(_read_samples(train_path)),
            _holdout_events(_read_samples(val_path), "valid"),
            _holdout_events(_read_samples(test_path), "test"),
        ]
    )
    config = DataConfig(text_fields=("name",), order_is_time=False)
    return finish(interactions, _read_names(names_path), config, "lastfm-llara")
