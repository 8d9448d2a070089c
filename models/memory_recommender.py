"""The memory encoder alone as a recommender: cosine between its user vector and its item vectors.

This is the ``memory`` model of the evaluation harness; inside the full pipeline the same encoder replaces the
zero-shot user vector (``RecommenderConfig(user_encoder="memory")``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.data import Histories
from recsys.errors import ConfigError, DataError
from recsys.models.baselines import _PAIR_CHUNK, _check_chunk_size, _HistoryRecommender, _require_columns
from recsys.models.memory_config import MemoryEncoderConfig
from recsys.models.text_encoder import ItemTextEncoder, TextEncoderConfig
from recsys.schema import TEXT

if TYPE_CHECKING:
    from recsys.models.memory_encoder import MemoryEncoder

__all__ = ["MemoryRecommender", "MemoryRecommenderConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryRecommenderConfig:
    """Settings of :class:`MemoryRecommender`.

    Parameters
    ----------
    text: the item text encoder whose (cached) vectors feed the memory encoder.
    encoder: the memory encoder (architecture and training).
    max_events: read only each user's last ``max_events`` events at inference (an ablation; None reads all).
    chunk_size: users scored at once.
    """

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    encoder: MemoryEncoderConfig = field(default_factory=MemoryEncoderConfig)
    max_events: int | None = None
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        _check_chunk_size(self.chunk_size)
        if self.max_events is not None and self.max_events < 1:
            raise ConfigError(f"MemoryRecommenderConfig.max_events={self.max_events} must be >= 1 or None.")


class MemoryRecommender(_HistoryRecommender):
    """Recommend by the learned interest-match score ``<user vector, item vector>`` over the full catalogue.

    Attributes
    ----------
    encoder_: the trained :class:`MemoryEncoder`; item_vectors_: float32 ``(n_items, dim)``.
    """

    encoder_: MemoryEncoder
    item_vectors_: np.ndarray

    def __init__(self, config: MemoryRecommenderConfig | None = None) -> None:
        self.config = config if config is not None else MemoryRecommenderConfig()
        self._valid: pl.DataFrame | None = None

    def fit(
        self, interactions: pl.DataFrame, items: pl.DataFrame, valid: pl.DataFrame | None = None
    ) -> MemoryRecommender:
        """Train on ``interactions``; early-stop on ``valid`` events (default: each user's last event), then
        refit on both (see :class:`MemoryEncoderConfig`)."""
        self._valid = valid
        try:
            return super().fit(interactions, items)
        finally:
            self._valid = None

    def with_max_events(self, max_events: int | None) -> MemoryRecommender:
        """A copy sharing the fitted encoder that reads only the last ``max_events`` events (ablation)."""
        twin = MemoryRecommender(dataclasses.replace(self.config, max_events=max_events))
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k.endswith("_")})
        return twin

    def _fit_model(self, interactions: pl.DataFrame, items: pl.DataFrame, index: pl.DataFrame) -> None:
        _require_columns(items, [TEXT], "items")
        if items[TEXT].null_count():
            raise DataError(f"items column 'text' has {items[TEXT].null_count()} null(s); give every item text.")
        text_vectors = ItemTextEncoder(self.config.text).encode(items[TEXT].to_list())
        histories = Histories.from_interactions(interactions, index)
        valid = None if self._valid is None else Histories.from_interactions(self._valid, index, histories.user_ids)
        from recsys.models.memory_encoder import MemoryEncoder  # torch: only where an encoder is trained

        self.encoder_ = MemoryEncoder(self.config.encoder).fit(histories, text_vectors, valid)
        self.item_vectors_ = self.encoder_.item_vectors()

    def _user_vectors(self, histories: Histories) -> np.ndarray:
        if self.config.max_events is not None:
            histories = histories.last(self.config.max_events)
        return self.encoder_.encode(histories)  # (n_users, dim)

    def _score_dense(self, histories: Histories) -> np.ndarray:
        return self._user_vectors(histories) @ self.item_vectors_.T  # (n_users, n_items)

    def _score_pairs(self, histories: Histories, user_pos: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        users = self._user_vectors(histories)
        out = np.empty(user_pos.size, dtype=np.float32)
        for start in range(0, user_pos.size, _PAIR_CHUNK):
            rows = slice(start, start + _PAIR_CHUNK)
            out[rows] = np.einsum("ij,ij->i", users[user_pos[rows]], self.item_vectors_[item_idx[rows]])
        return out
