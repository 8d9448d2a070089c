"""MovieLens: ``ml-latest-small`` (embedded in the package) and ``ml-100k`` (RecBole atomic files)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import polars as pl

from recsys.data import DataConfig, Dataset
from recsys.datasets._paths import find_files, finish, read_tsv
from recsys.errors import DatasetNotFoundError
from recsys.schema import ITEM_ID, TIMESTAMP, USER_ID

__all__ = ["load_ml_100k", "load_ml_latest_small", "read_atomic"]

_NO_GENRES = "(no genres listed)"


def _embedded(name: str) -> pl.DataFrame:
    """Read one embedded Parquet file of ``ml-latest-small`` (works from an installed wheel)."""
    resource = resources.files("recsys.datasets") / "embedded" / "ml-latest-small" / name
    if not resource.is_file():
        raise DatasetNotFoundError(
            f"The embedded file {name!r} is missing from the recsys package ({resource}). Fix: reinstall the "
            "package, or rebuild it: python -m recsys.datasets._build_embedded ../shared/data/ml-latest-small"
        )
    with resources.as_file(resource) as path:
        return pl.read_parquet(path)


def _movie_tags() -> pl.DataFrame:
    """``item_id, tags``: each movie's user tags, oldest first, unique ignoring case (first spelling kept)."""
    tags = _embedded("tags.parquet").with_columns(pl.col("tag").str.strip_chars())
    return (
        tags.filter(pl.col("tag") != "")
        .sort(["movieId", "timestamp"], maintain_order=True)
        .group_by("movieId", maintain_order=True)
        .agg(pl.col("tag").filter(pl.col("tag").str.to_lowercase().is_first_distinct()).alias("tags"))
        .select(pl.col("movieId").cast(pl.Int64).alias(ITEM_ID), "tags")
    )


def load_ml_latest_small(data_dir: str | Path | None = None, *, with_tags: bool = False) -> Dataset:
    """MovieLens ``ml-latest-small``: 610 users, 9,742 movies, 100,836 ratings (0.5-5), unix timestamps.

    Shipped inside the package (GroupLens licence: non-commercial research, cite Harper & Konstan 2015; the
    full terms are in ``recsys/datasets/embedded/ml-latest-small/README.txt``), so no data folder is needed.

    Parameters
    ----------
    data_dir:
        Ignored: the data ships with the package.
    with_tags:
        Add the users' free-text tags (unique per movie) as a third text field ``tags``.

    Returns
    -------
    Dataset
        ``item_id`` is ``movieId`` (Int64), ``user_id`` is ``userId`` (Int64), ``weight`` the rating; item
        text is ``title. genres[. tags]`` with genres written ``"A, B"`` (``"(no genres listed)"`` becomes
        null).
    """
    ratings = _embedded("ratings.parquet")
    interactions = ratings.select(
        pl.col("userId").cast(pl.Int64).alias(USER_ID),
        pl.col("movieId").cast(pl.Int64).alias(ITEM_ID),
        pl.col("timestamp").cast(pl.Int64).alias(TIMESTAMP),
        pl.col("rating"),
    )
    genres = pl.col("genres").str.replace_all("|", ", ", literal=True)
    items = _embedded("movies.parquet").select(
        pl.col("movieId").cast(pl.Int64).alias(ITEM_ID),
        pl.col("title"),
        pl.when(pl.col("genres") == _NO_GENRES).then(None).otherwise(genres).alias("genres"),
    )
    fields: tuple[str, ...] = ("title", "genres")
    if with_tags:
        items = items.join(_movie_tags(), on=ITEM_ID, how="left")
        fields = (*fields, "tags")
    config = DataConfig(text_fields=fields, weight_column="rating")
    return finish(interactions, items, config, "ml-latest-small")


def read_atomic(path: Path) -> pl.DataFrame:
    """Read a RecBole atomic file: tab-separated, typed headers (``rating:float``) whose suffix is stripped.

    ``float`` columns become Float64; every other type (``token``, ``token_seq``) stays a string.
    """
    frame = read_tsv(path)
    names = {c: c.split(":", 1)[0] for c in frame.columns}
    floats = [c for c in frame.columns if c.endswith(":float")]
    return frame.with_columns(pl.col(floats).cast(pl.Float64)).rename(names)


def load_ml_100k(data_dir: str | Path | None = None) -> Dataset:
    """MovieLens 100K as RecBole atomic files: 943 users, 1,682 movies, 100,000 ratings (1-5), unix times.

    Reads ``ml-100k/ml-100k.inter`` and ``ml-100k/ml-100k.item`` under the data folder (see
    :func:`~recsys.datasets.load_dataset`). Item text is ``movie_title. release_year. class`` with the
    space-separated genres of ``class`` written ``"A, B"``. ``weight`` is the rating.
    """
    inter_path, item_path = find_files("ml-100k", ("ml-100k.inter", "ml-100k.item"), data_dir)
    interactions = read_atomic(inter_path).select(
        pl.col(USER_ID).cast(pl.Int64),
        pl.col(ITEM_ID).cast(pl.Int64),
        pl.col(TIMESTAMP).cast(pl.Int64),
        pl.col("rating"),
    )
    items = read_atomic(item_path).select(
        pl.col(ITEM_ID).cast(pl.Int64),
        "movie_title",
        "release_year",
        pl.col("class").str.replace_all(" ", ", ", literal=True),
    )
    config = DataConfig(text_fields=("movie_title", "release_year", "class"), weight_column="rating")
    return finish(interactions, items, config, "ml-100k")
