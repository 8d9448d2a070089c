"""Query-relative features: how a candidate compares with the other candidates of the same query.

A cosine of 0.6 is a strong match for a user whose best candidate scores 0.62 and a weak one for a user whose
best scores 0.9; trees split on absolute values, so the ranker also gets each signal relative to its query:

- ``<column>_gap``: the value minus the query's largest value of that column (0 for the best candidate, < 0
  below it);
- ``<column>_qrank``: the candidate's rank in its query by that column (1 = largest; tied values share the
  smallest rank, so duplicate rows get equal features).

Like every block's, the columns are Float32 and NaN where the input is missing (NaN inputs never rank first).

The block reads columns that earlier blocks added (the pipeline applies it last) and learns nothing. The
values depend on the whole candidate set of a query: with ``Recommender.score`` they compare a candidate with
*the caller's* other candidates of that user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from recsys.data import Histories
from recsys.errors import ConfigError, SchemaError
from recsys.features.base import QUERY, FeatureBlock, FitContext

__all__ = ["RELATIVE_COLUMNS", "QueryRelative", "RelativeConfig"]

NAN = float("nan")
RELATIVE_COLUMNS = (
    "retrieval_score",
    "sim_recent_max",
    "sim_last",
    "sim_recent_mean",
    "sim_history",
    "cooc_score",
    "cooc_max",
    "ease_score",
    "transition_score",
    "log_popularity",
)


@dataclass(frozen=True)
class RelativeConfig:
    """Settings of :class:`QueryRelative`.

    Parameters
    ----------
    columns:
        Columns compared within each query (those that no enabled group produces are skipped).
    ranks:
        Also add ``<column>_qrank`` (``retrieval_score`` never gets one: ``retrieval_rank`` is its rank).
    """

    columns: tuple[str, ...] = RELATIVE_COLUMNS
    ranks: bool = True

    def __post_init__(self) -> None:
        if not self.columns:
            raise ConfigError("RelativeConfig.columns is empty; name at least one column or drop the group.")


class QueryRelative(FeatureBlock):
    """``<column>_gap`` and ``<column>_qrank`` for each of ``columns`` within each query (see module docs)."""

    group = "relative"

    def __init__(self, config: RelativeConfig | None = None, available: Sequence[str] | None = None) -> None:
        self.config = config or RelativeConfig()
        wanted = self.config.columns
        self.columns = [c for c in wanted if available is None or c in available]

    @property
    def names(self) -> list[str]:
        gaps = [f"{c}_gap" for c in self.columns]
        ranks = [f"{c}_qrank" for c in self.columns if self.config.ranks and c != "retrieval_score"]
        return gaps + ranks

    def fit(self, context: FitContext) -> QueryRelative:
        return self

    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        missing = [c for c in self.columns if c not in candidates.columns]
        if missing:
            raise SchemaError(
                f"query-relative features need {missing}, which the earlier blocks did not add; the relative "
                "block must come after the blocks it compares."
            )
        value = {c: pl.col(c).cast(pl.Float64).fill_nan(None) for c in self.columns}  # NaN = missing, never best
        gaps = [
            (value[c] - value[c].max().over(QUERY)).cast(pl.Float32).fill_null(NAN).alias(f"{c}_gap")
            for c in self.columns
        ]
        ranks = [
            value[c].rank("min", descending=True).over(QUERY).cast(pl.Float32).fill_null(NAN).alias(f"{c}_qrank")
            for c in self.columns
            if self.config.ranks and c != "retrieval_score"
        ]
        return candidates.with_columns(*gaps, *ranks)
