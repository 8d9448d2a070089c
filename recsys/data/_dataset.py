"""A validated pair of frames (interactions and items) with a fingerprint."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from recsys.data._config import DataConfig
from recsys.data._validate import ValidationReport, validate_interactions, validate_items
from recsys.schema import ITEM_ID, TEXT, TIMESTAMP, USER_ID

__all__ = ["Dataset", "Fingerprint"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fingerprint:
    """Sizes and a content hash, printed with every evaluation so that preprocessing drift is caught."""

    users: int
    items: int
    interactions: int
    content_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "items": self.items,
            "interactions": self.interactions,
            "content_hash": self.content_hash,
        }

    def __str__(self) -> str:
        return (
            f"{self.users:,} users, {self.items:,} items, {self.interactions:,} interactions, "
            f"sha256 {self.content_hash}"
        )


@dataclass(frozen=True)
class Dataset:
    """Interactions and items that passed validation.

    Attributes
    ----------
    interactions:
        ``user_id, item_id, timestamp (Int64)`` plus optional ``weight (Float32)``, ``event`` and ``split``
        (``"train"``/``"valid"``/``"test"`` where the dataset ships a published split), sorted by user and
        ``timestamp``.
    items:
        ``item_id, text`` plus the other raw item columns; one row per item (the full catalogue).
    name:
        Dataset name, used in results.
    has_time:
        False when ``timestamp`` is an explicit position rather than a time.
    report:
        What validation dropped or repaired.
    """

    interactions: pl.DataFrame
    items: pl.DataFrame
    name: str = "custom"
    has_time: bool = True
    report: ValidationReport = field(default_factory=ValidationReport)

    @classmethod
    def from_frames(
        cls, interactions: pl.DataFrame, items: pl.DataFrame, config: DataConfig | None = None, name: str = "custom"
    ) -> Dataset:
        """Validate raw frames against the data contract (see :class:`DataConfig`)."""
        config = config or DataConfig()
        items, item_report = validate_items(items, config)
        interactions, inter_report = validate_interactions(interactions, config, items[ITEM_ID])
        report = item_report.merge(inter_report)
        logger.info("dataset %s: %s", name, report.summary())
        return cls(interactions, items, name, config.order_is_time, report)

    @property
    def has_published_split(self) -> bool:
        return "split" in self.interactions.columns

    def fingerprint(self) -> Fingerprint:
        """Users, items, interactions and a sha256 of the ids, order and item texts (first 16 hex digits)."""
        digest = hashlib.sha256()
        digest.update(self.interactions.select(USER_ID, ITEM_ID, TIMESTAMP).write_csv().encode())
        digest.update(self.items.select(ITEM_ID, TEXT).write_csv().encode())
        return Fingerprint(
            users=self.interactions[USER_ID].n_unique(),
            items=self.items.height,
            interactions=self.interactions.height,
            content_hash=digest.hexdigest()[:16],
        )
