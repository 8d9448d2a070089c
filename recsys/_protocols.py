"""The shape every recommender in the evaluation harness has (baselines and the full pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import polars as pl

__all__ = ["RecommenderLike"]


@runtime_checkable
class RecommenderLike(Protocol):
    """Fit on interactions and items; recommend ``k`` catalogue items per user.

    ``recommend`` returns the long table ``user_id, item_id, score (f32), rank (u32, 1..k)``, best first.
    ``history`` (an interactions frame of the data contract) replaces the fitted events of the requested
    users: the evaluation harness passes train + valid events to score the test targets. With
    ``exclude_seen`` the items in a user's history are never recommended.

    ``fit`` may also take an optional keyword parameter ``valid: pl.DataFrame | None = None``: target events
    (an interactions frame) whose history is the fitted ``interactions``, for early stopping or model
    selection. It is left out of the signature below so that models without it still conform; the evaluation
    harness passes ``valid=split.valid`` only to a ``fit`` that names ``valid`` in its signature (a
    ``**kwargs`` does not count), and never passes test targets.
    """

    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame) -> Any: ...

    def recommend(
        self,
        users: pl.Series | Sequence[Any],
        k: int = 10,
        *,
        history: pl.DataFrame | None = None,
        exclude_seen: bool = True,
    ) -> pl.DataFrame: ...
