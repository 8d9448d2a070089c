"""recsys: text-memory recommendation.

Item texts -> sentence embeddings -> user vectors -> FAISS candidates -> LightGBM LambdaRank.

>>> from recsys import Recommender, load_dataset
>>> data = load_dataset("ml-latest-small")                  # doctest: +SKIP
>>> recs = Recommender().fit(data.interactions, data.items).recommend([1], k=10)  # doctest: +SKIP

Heavy stages (torch, FAISS, LightGBM) are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from recsys.data import DataConfig, Dataset, read_table
from recsys.errors import (
    ConfigError,
    DataError,
    DatasetNotFoundError,
    ModelFormatError,
    NotFittedError,
    RecsysError,
    SchemaError,
)

if TYPE_CHECKING:
    from recsys.datasets import load_dataset
    from recsys.evaluation import EvalConfig, evaluate
    from recsys.pipeline import Recommender, RecommenderConfig

__version__ = "0.1.0"

_LAZY = {
    "Recommender": "recsys.pipeline",
    "RecommenderConfig": "recsys.pipeline",
    "load_dataset": "recsys.datasets",
    "EvalConfig": "recsys.evaluation",
    "evaluate": "recsys.evaluation",
}

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "EvalConfig",
    "ModelFormatError",
    "NotFittedError",
    "Recommender",
    "RecommenderConfig",
    "RecsysError",
    "SchemaError",
    "evaluate",
    "load_dataset",
    "read_table",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")
