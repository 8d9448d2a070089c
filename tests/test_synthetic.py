"""Tests of ``recsys.datasets.synthetic_dataset``: determinism, shapes, history bounds, drift and the contract."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.data import Dataset
from recsys.datasets import SyntheticConfig, synthetic_dataset
from recsys.errors import ConfigError


@pytest.fixture(scope="module")
def data() -> Dataset:
    return synthetic_dataset(3_000, 2_000, max_history=1_500, seed=7)


def test_same_seed_same_data_other_seed_other_data(data: Dataset) -> None:
    again = synthetic_dataset(3_000, 2_000, max_history=1_500, seed=7)
    assert again.interactions.equals(data.interactions) and again.items.equals(data.items)
    other = synthetic_dataset(3_000, 2_000, max_history=1_500, seed=8)
    assert not other.interactions.equals(data.interactions)


def test_shapes_and_columns(data: Dataset) -> None:
    assert data.items.columns == ["item_id", "text", "category"]
    assert data.items.height == 3_000 and data.items["item_id"].to_list() == list(range(3_000))
    assert data.interactions.columns == ["user_id", "item_id", "timestamp"]
    assert data.interactions["user_id"].n_unique() == 2_000
    assert data.interactions.schema == pl.Schema({"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64})
    assert data.name == "synthetic-3000x2000-s7"


def test_texts_are_short_titles_with_their_category(data: Dataset) -> None:
    words = data.items["text"].str.split(" ").list.len().to_numpy()
    assert words.min() >= 10 and words.max() <= 12
    assert data.items.select(pl.col("text").str.contains(pl.col("category"), literal=True).all()).item()
    assert data.items["text"].n_unique() > 0.99 * data.items.height


def test_history_lengths_are_heavy_tailed_and_capped(data: Dataset) -> None:
    lengths = data.interactions.group_by("user_id").len()["len"].to_numpy()
    assert lengths.min() >= 2 and lengths.max() <= 1_500
    assert 15 < lengths.mean() < 50
    assert np.median(lengths) < lengths.mean()  # skewed: a few very long users
    assert lengths.max() > 500


def test_timestamps_strictly_increase_per_user(data: Dataset) -> None:
    gaps = data.interactions.select(pl.col("timestamp").diff().over("user_id").drop_nulls())
    assert gaps.min().item() >= 1


def test_interests_drift_over_long_histories(data: Dataset) -> None:
    topics = data.interactions.join(data.items.select("item_id", "category"), on="item_id", maintain_order="left")
    ends = topics.group_by("user_id", maintain_order=True).agg(
        pl.len().alias("n"),
        pl.col("category").head(50).mode().first().alias("first"),
        pl.col("category").tail(50).mode().first().alias("last"),
    )
    long = ends.filter(pl.col("n") >= 300)
    assert long.height >= 10
    assert (long["first"] != long["last"]).to_numpy().mean() > 0.8


def test_popularity_is_skewed_within_topics(data: Dataset) -> None:
    counts = data.interactions["item_id"].value_counts()["count"].to_numpy()
    top = np.sort(counts)[::-1]
    assert top[: len(top) // 10].sum() > 0.3 * top.sum()  # the top 10% of items take over 30% of the events


def test_passes_validation_again(data: Dataset) -> None:
    again = Dataset.from_frames(data.interactions, data.items)
    assert not again.report.dropped and not again.report.repaired


def test_tiny_sizes_and_bad_settings() -> None:
    tiny = synthetic_dataset(1, 3, max_history=4)
    assert tiny.items.height == 1 and tiny.interactions["item_id"].unique().to_list() == [0]
    with pytest.raises(ConfigError, match="n_items"):
        synthetic_dataset(0, 10)
    with pytest.raises(ConfigError, match="max_history"):
        synthetic_dataset(10, 10, max_history=1)
    with pytest.raises(ConfigError, match="drift"):
        SyntheticConfig(drift=1.5)
