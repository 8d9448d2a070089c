"""Shared fixtures: where the public datasets are, and small synthetic data with known answers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import Histories

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RECSYS_DATA_DIR", REPO.parent / "shared" / "data"))


def require_data(*relative: str) -> Path:
    """Return ``DATA_DIR``; skip the test, saying which file is absent, if any named file is missing."""
    for rel in relative:
        if not (DATA_DIR / rel).exists():
            pytest.skip(f"dataset file {DATA_DIR / rel} is absent; set RECSYS_DATA_DIR to the shared data folder")
    return DATA_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


TOPICS = {
    "dogs": [
        "funny dog movie",
        "puppy training guide",
        "dog food for puppies",
        "dog leash and collar",
        "a documentary about sheepdogs",
        "dog grooming brush",
    ],
    "space": [
        "rocket launch documentary",
        "telescope for stargazing",
        "astronaut biography",
        "mars rover model kit",
        "planetarium poster of the solar system",
        "book about black holes",
    ],
    "cooking": [
        "cast iron frying pan",
        "italian pasta cookbook",
        "chef knife set",
        "spice rack with herbs",
        "baking recipes for bread",
        "kitchen mixing bowls",
    ],
}


@pytest.fixture(scope="session")
def topic_items() -> pl.DataFrame:
    """18 items, six per topic; ``item_id`` 0..17 (Int64), ``topic`` column."""
    rows = [(i, text, topic) for i, (topic, text) in enumerate((t, x) for t, xs in TOPICS.items() for x in xs)]
    return pl.DataFrame(rows, schema={"item_id": pl.Int64, "text": pl.String, "topic": pl.String}, orient="row")


@pytest.fixture(scope="session")
def topic_interactions(topic_items: pl.DataFrame) -> pl.DataFrame:
    """Nine users, three per topic, each with the first four items of their topic in order (times 1..4)."""
    rows = []
    for t, topic in enumerate(TOPICS):
        ids = topic_items.filter(pl.col("topic") == topic)["item_id"].to_list()
        for u in range(3):
            user = t * 3 + u
            order = ids[u:] + ids[:u]
            rows += [(user, item, 100 * user + step) for step, item in enumerate(order[:4])]
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}, orient="row")


def histories_from_rows(rows: list[list[int]]) -> Histories:
    """Histories of ``len(rows)`` users with the given catalogue rows."""
    lengths = [len(r) for r in rows]
    flat = np.array([i for r in rows for i in r], dtype=np.int64)
    return Histories(
        user_ids=pl.Series("user_id", list(range(len(rows)))),
        indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        item_idx=flat,
        timestamps=np.arange(flat.size, dtype=np.int64),
    )
