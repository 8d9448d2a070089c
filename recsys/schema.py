"""Fixed column names and the polars schemas of every frame that crosses a stage.

One place defines them; every stage imports from here. Results are always the long table
``user_id, item_id, score, rank``.
"""

from __future__ import annotations

from typing import Final

import polars as pl

__all__ = [
    "EVENT",
    "ID_DTYPES",
    "ITEM_ID",
    "ITEM_IDX",
    "RANK",
    "RECOMMENDATION_COLUMNS",
    "SCORE",
    "TEXT",
    "TIMESTAMP",
    "TIMESTAMP_DTYPES",
    "USER_ID",
    "WEIGHT",
    "empty_recommendations",
]

USER_ID: Final = "user_id"
ITEM_ID: Final = "item_id"
TIMESTAMP: Final = "timestamp"
"""Event time (integer unix seconds or ``Datetime``), or an explicit order for sequences without time."""
WEIGHT: Final = "weight"
"""Optional interaction strength (for example a rating)."""
EVENT: Final = "event"
"""Optional event type (click, purchase, ...)."""
TEXT: Final = "text"
"""The item text, joined from the configured text fields."""
ITEM_IDX: Final = "item_idx"
"""Dense row number of an item in the fitted catalogue (UInt32); internal."""
SCORE: Final = "score"
RANK: Final = "rank"

ID_DTYPES: Final = (pl.Int64, pl.Int32, pl.UInt32, pl.UInt64, pl.Int16, pl.UInt16, pl.String)
"""Allowed dtypes of ``user_id`` and ``item_id`` (integers or strings)."""
TIMESTAMP_DTYPES: Final = (pl.Int64, pl.Int32, pl.UInt32, pl.UInt64, pl.Float64, pl.Float32, pl.Datetime)

RECOMMENDATION_COLUMNS: Final = (USER_ID, ITEM_ID, SCORE, RANK)


def empty_recommendations(user_dtype: pl.DataType, item_dtype: pl.DataType) -> pl.DataFrame:
    """An empty result table with the right dtypes: ``user_id, item_id, score (f32), rank (u32)``."""
    return pl.DataFrame(schema={USER_ID: user_dtype, ITEM_ID: item_dtype, SCORE: pl.Float32, RANK: pl.UInt32})
