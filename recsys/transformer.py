"""Our memory features for a pipeline that has its own ranker: an sklearn-compatible transformer.

:class:`MemoryFeatures` takes the caller's candidate frame (``user_id, item_id`` and anything else; polars or
pandas) and returns the same type with the interest-match score and the features derived from the user's
memory added, rows in input order, so it drops into an sklearn ``Pipeline`` in front of any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator, TransformerMixin

from recsys.errors import ConfigError, DataError, check_is_fitted
from recsys.pipeline import Recommender
from recsys.schema import USER_ID

__all__ = ["MEMORY_FEATURES", "MemoryFeatures"]

MEMORY_FEATURES = (
    "interest_score",
    "interest_rank",
    "interest_gap",
    "sim_last",
    "sim_recent_mean",
    "sim_recent_max",
    "sim_history",
)
"""Columns added: the interest-match score (user vector . item vector), its rank among the user's rows of the
frame (1 = best) and its gap to that user's best row, and the text similarity of the item to the user's last
item, recent items and whole history."""


class MemoryFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Add the memory features to a candidate frame.

    Parameters
    ----------
    model: a fitted :class:`~recsys.pipeline.Recommender`, or the folder it was saved to.
    history: interactions giving users' histories inline (see :meth:`Recommender.score`).
    items: ``item_id, text`` of items outside the fitted catalogue (scored from their text).
    on_unknown: ``"null"`` (default) gives unknown users or items null features; ``"raise"`` raises.

    Attributes
    ----------
    model_: the fitted recommender (loaded in :meth:`fit` when ``model`` is a path).
    """

    def __init__(
        self,
        model: Recommender | str | Path | None = None,
        history: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        on_unknown: Literal["raise", "null"] = "null",
    ) -> None:
        self.model = model
        self.history = history
        self.items = items
        self.on_unknown = on_unknown

    def fit(self, X: Any = None, y: Any = None) -> MemoryFeatures:
        """Load the model (nothing is learned from ``X``). Returns ``self``."""
        if self.model is None:
            raise ConfigError("MemoryFeatures needs model=: a fitted Recommender or the folder it was saved to.")
        self.model_ = self.model if isinstance(self.model, Recommender) else Recommender.load(self.model)
        return self

    def transform(self, X: Any) -> Any:
        """``X`` with :data:`MEMORY_FEATURES` added (same type, same row order)."""
        check_is_fitted(self, ("model_",))
        is_pandas = type(X).__module__.startswith("pandas")
        frame = pl.from_pandas(X) if is_pandas else X
        if not isinstance(frame, pl.DataFrame):
            raise DataError(f"MemoryFeatures takes a polars or pandas DataFrame, got {type(X).__name__}.")
        clash = [c for c in MEMORY_FEATURES if c in frame.columns]
        if clash:
            raise DataError(f"the frame already has column(s) {clash}; rename them before adding memory features.")
        scored = self.model_.score(
            frame, history=self.history, items=self.items, with_features=True, on_unknown=self.on_unknown
        )
        by_user = pl.col("interest_score").over(USER_ID)
        added = scored.select(
            pl.col("interest_score"),
            pl.col("interest_score").rank("min", descending=True).over(USER_ID).cast(pl.UInt32).alias("interest_rank"),
            (by_user.max() - pl.col("interest_score")).alias("interest_gap"),
            *[pl.col(c) if c in scored.columns else pl.lit(np.nan, pl.Float32).alias(c) for c in MEMORY_FEATURES[3:]],
        )
        out = pl.concat([frame, added], how="horizontal")
        return out.to_pandas() if is_pandas else out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The names of the added columns (sklearn's convention)."""
        return np.asarray(MEMORY_FEATURES, dtype=object)
