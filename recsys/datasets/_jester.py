"""Jester 5k: joke ratings in [-10, 10] with the full joke texts, and no times."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data import DataConfig, Dataset
from recsys.datasets._paths import find_files, finish, read_tsv
from recsys.schema import ITEM_ID, TIMESTAMP, USER_ID

__all__ = ["load_jester5k"]


def load_jester5k(data_dir: str | Path | None = None) -> Dataset:
    """Jester 5k (recommenderlab): 5,000 users, 100 jokes, 363,209 ratings in [-10, 10].

    Reads ``ratings.tsv.gz`` (``user_id, joke_id, rating``) and ``jokes.tsv`` (``joke_id, text``) from
    ``jester5k/``. Ids are strings (``"u7452"``, ``"j1"``); ``weight`` is the rating. There are no times:
    ``timestamp`` is the file row number (``has_time=False``), and the file is sorted by joke, so each user's
    "order" is joke order (j1, j2, ...), not the order in which they rated: do not use it for sequential
    models.
    """
    ratings_path, jokes_path = find_files("jester5k", ("ratings.tsv.gz", "jokes.tsv"), data_dir)
    interactions = (
        read_tsv(ratings_path)
        .with_row_index(TIMESTAMP)
        .select(
            USER_ID,
            pl.col("joke_id").alias(ITEM_ID),
            pl.col(TIMESTAMP).cast(pl.Int64),
            pl.col("rating").cast(pl.Float64),
        )
    )
    items = read_tsv(jokes_path).rename({"joke_id": ITEM_ID})
    config = DataConfig(text_fields=("text",), weight_column="rating", order_is_time=False)
    return finish(interactions, items, config, "jester5k")
