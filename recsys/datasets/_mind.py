"""The MIND news format (Microsoft News Dataset): ``news.tsv`` and ``behaviors.tsv``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import polars as pl

from recsys.data import DataConfig, Dataset
from recsys.data._config import OnInvalid
from recsys.datasets._paths import find_files, finish, read_tsv, require_files
from recsys.schema import EVENT, ITEM_ID, TIMESTAMP, USER_ID

__all__ = ["load_mind", "load_mind_small_fragment"]

NEWS_COLUMNS: Final = (
    ITEM_ID,
    "category",
    "subcategory",
    "title",
    "abstract",
    "url",
    "title_entities",
    "abstract_entities",
)
BEHAVIOR_COLUMNS: Final = ("impression_id", USER_ID, "time", "history", "impressions")
TIME_FORMAT: Final = "%m/%d/%Y %I:%M:%S %p"
_FILES: Final = ("news.tsv", "behaviors.tsv")


def _read_behaviors(path: Path) -> pl.DataFrame:
    """``impression_id, user_id, time (Datetime), history, impressions``, sorted by time."""
    return (
        read_tsv(path, columns=BEHAVIOR_COLUMNS)
        .with_columns(pl.col("time").str.to_datetime(TIME_FORMAT, time_unit="us"))
        .sort("time", maintain_order=True)
    )


def _history_events(behaviors: pl.DataFrame) -> pl.DataFrame:
    """Each user's history once, one second apart, ending one second before their first impression.

    MIND repeats the same history on every impression of a user; the earliest impression's history is used.
    """
    first = behaviors.group_by(USER_ID, maintain_order=True).agg(
        pl.col("history").first(), pl.col("time").first().alias("first_time")
    )
    events = (
        first.with_columns(pl.col("history").str.split(" ").list.eval(pl.element().filter(pl.element() != "")))
        .explode("history")
        .drop_nulls("history")
    )
    step = pl.int_range(pl.len()).over(USER_ID) - pl.len().over(USER_ID)
    return events.select(
        USER_ID,
        pl.col("history").alias(ITEM_ID),
        (pl.col("first_time") + pl.duration(seconds=step)).alias(TIMESTAMP),
        pl.lit("history").alias(EVENT),
    )


def _click_events(behaviors: pl.DataFrame) -> pl.DataFrame:
    """The clicked (``-1``) items of every impression, at the impression time."""
    shown = behaviors.select(USER_ID, "time", pl.col("impressions").str.split(" ")).explode("impressions")
    parts = pl.col("impressions").str.split_exact("-", 1).struct.rename_fields([ITEM_ID, "label"])
    return (
        shown.select(USER_ID, "time", parts.alias("parts"))
        .unnest("parts")
        .filter(pl.col("label") == "1")
        .select(USER_ID, ITEM_ID, pl.col("time").alias(TIMESTAMP), pl.lit("click").alias(EVENT))
    )


def load_mind(folder: str | Path, name: str = "mind", on_invalid: OnInvalid = "repair") -> Dataset:
    """Read a folder in the MIND format: ``news.tsv`` (8 columns, no header) and ``behaviors.tsv``.

    Parameters
    ----------
    folder:
        The folder holding both files (for example MIND-small's ``train/``).
    name:
        Dataset name.
    on_invalid:
        ``"repair"`` (default) drops events whose news id has no row in ``news.tsv`` (MIND's behaviours
        reference news outside a partial ``news.tsv``), counts them in ``dataset.report`` and warns;
        ``"raise"`` raises :class:`~recsys.errors.DataError` instead.

    Returns
    -------
    Dataset
        String ids (``N123``, ``U456``). Events: each user's history clicks (``event="history"``, in order,
        one second apart, ending just before their first impression) and the clicked impression items
        (``event="click"``, at the impression time); unclicked impressions are not events. Item text is
        ``title. abstract. category. subcategory``; url and entity columns are kept.
    """
    news_path, behaviors_path = require_files(folder, _FILES)
    items = read_tsv(news_path, columns=NEWS_COLUMNS)
    behaviors = _read_behaviors(behaviors_path)
    interactions = pl.concat([_history_events(behaviors), _click_events(behaviors)])
    config = DataConfig(
        text_fields=("title", "abstract", "category", "subcategory"),
        event_column=EVENT,
        on_invalid=on_invalid,
    )
    return finish(interactions, items, config, name)


def load_mind_small_fragment(data_dir: str | Path | None = None, *, on_invalid: OnInvalid = "repair") -> Dataset:
    """The first 2,000 news and 5,000 impressions of MIND-small train: a format fixture, not a benchmark.

    Most history and clicked ids have no news row here, so most events are dropped (see ``dataset.report``).
    """
    news_path, _ = find_files("mind-small-fragment", _FILES, data_dir)
    return load_mind(news_path.parent, name="mind-small-fragment", on_invalid=on_invalid)
