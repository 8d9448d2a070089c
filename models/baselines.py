"""Four baselines with the :class:`~recsys._protocols.RecommenderLike` shape.

* :class:`PopularityRecommender`: the most popular items for everyone.
* :class:`TransitionRecommender`: items that followed the user's recent items in other sequences, with a
  tiny popularity term that breaks ties and serves users without transition evidence.
* :class:`ZeroShotTextRecommender`: cosine between the item text vectors and the recency-weighted mean of
  the user's item vectors, over the full catalogue.
* :class:`EaseRecommender`: EASE item-item regression over the user's whole history (the ranker's
  ``collaborative`` feature, :class:`~recsys.features.collaborative.Collaborative`), with the same popularity
  tie-break as transitions.

They share :class:`_HistoryRecommender`: history resolution (the ``history`` frame if given, else the
fitted events), dense scoring in user chunks, top-k with exclusion of seen items, and pair scoring.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from recsys._topk import check_k, to_recommendations, topk
from recsys.data import Histories, item_index
from recsys.errors import ConfigError, DataError, SchemaError, check_is_fitted
from recsys.features.base import QUERY, FitContext
from recsys.features.collaborative import Collaborative, CollaborativeConfig
from recsys.features.popularity import Popularity, PopularityConfig
from recsys.features.transitions import TransitionConfig, Transitions
from recsys.models.text_encoder import ItemTextEncoder, TextEncoderConfig
from recsys.models.zero_shot import ZeroShotConfig, ZeroShotUserEncoder
from recsys.schema import ITEM_ID, ITEM_IDX, SCORE, TEXT, TIMESTAMP, USER_ID, WEIGHT

__all__ = [
    "EaseRecommender",
    "EaseRecommenderConfig",
    "PopularityRecommender",
    "PopularityRecommenderConfig",
    "TransitionRecommender",
    "TransitionRecommenderConfig",
    "ZeroShotTextRecommender",
    "ZeroShotTextRecommenderConfig",
]

logger = logging.getLogger(__name__)

_R = TypeVar("_R", bound="_HistoryRecommender")
_EVENT_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP)
_PAIR_CHUNK = 65_536


# ----------------------------------------------------------------------------- configs


def _check_chunk_size(chunk_size: object) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(
            f"chunk_size must be a positive integer (users scored at once, e.g. 1024), got {chunk_size!r}."
        )


def _check_popularity_weight(w: object) -> None:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
        raise ConfigError(f"popularity_weight must be a finite number >= 0 (e.g. 1e-6), got {w!r}.")


@dataclass(frozen=True)
class PopularityRecommenderConfig:
    """Settings of :class:`PopularityRecommender`.

    Parameters
    ----------
    popularity:
        The popularity stage (optional recent time window).
    chunk_size:
        Users scored at once; bounds memory at ``chunk_size * n_items`` floats.
    """

    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        _check_chunk_size(self.chunk_size)


@dataclass(frozen=True)
class TransitionRecommenderConfig:
    """Settings of :class:`TransitionRecommender`.

    Parameters
    ----------
    transitions:
        The transition stage.
    popularity_weight:
        Weight of the max-normalised popularity added to the transition scores (tie-break and fallback for
        users whose transition scores are all zero).
    chunk_size:
        Users scored at once; bounds memory at ``chunk_size * n_items`` floats.
    """

    transitions: TransitionConfig = field(default_factory=TransitionConfig)
    popularity_weight: float = 1e-6
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        _check_popularity_weight(self.popularity_weight)
        _check_chunk_size(self.chunk_size)


@dataclass(frozen=True)
class EaseRecommenderConfig:
    """Settings of :class:`EaseRecommender`.

    Parameters
    ----------
    ease:
        The EASE stage (ridge penalty, covered items, weights kept per item).
    popularity_weight:
        Weight of the max-normalised popularity added to the EASE scores (tie-break, and the ranking of items
        the model does not cover and of users without history).
    chunk_size:
        Users scored at once; bounds memory at ``chunk_size * n_items`` floats.
    """

    ease: CollaborativeConfig = field(default_factory=CollaborativeConfig)
    popularity_weight: float = 1e-6
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        _check_popularity_weight(self.popularity_weight)
        _check_chunk_size(self.chunk_size)


@dataclass(frozen=True)
class ZeroShotTextRecommenderConfig:
    """Settings of :class:`ZeroShotTextRecommender`.

    Parameters
    ----------
    text:
        The item text encoder.
    user:
        The zero-shot user encoder.
    chunk_size:
        Users scored at once; bounds memory at ``chunk_size * n_items`` floats.
    """

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    user: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        _check_chunk_size(self.chunk_size)


# ----------------------------------------------------------------------------- helpers


def _event_columns(frame: pl.DataFrame) -> list[str]:
    """The contract's event columns present in ``frame`` (``weight`` is optional)."""
    return [*_EVENT_COLUMNS, *([WEIGHT] if WEIGHT in frame.columns else [])]


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{name} lacks column(s) {missing}; it has {frame.columns}. "
            "Pass frames of the data contract (recsys.data.Dataset.from_frames)."
        )


def _same_dtype(frame: pl.DataFrame, column: str, dtype: pl.DataType, name: str) -> None:
    if frame.schema[column] != dtype:
        raise SchemaError(
            f"{name} column {column!r} has dtype {frame.schema[column]} but the fitted data has {dtype}. "
            f"Fix: pl.col({column!r}).cast(pl.{dtype})."
        )


def _as_users(users: pl.Series | Sequence[Any], dtype: pl.DataType) -> pl.Series:
    """``users`` as a Series named ``user_id`` of the fitted user dtype."""
    series = users if isinstance(users, pl.Series) else pl.Series(USER_ID, list(users))
    try:
        return series.cast(dtype).rename(USER_ID)
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(
            f"users of dtype {series.dtype} cannot be cast to the fitted user_id dtype {dtype}; "
            "pass ids of the same type as in the training interactions."
        ) from exc


def _slice_users(histories: Histories, start: int, stop: int) -> Histories:
    """The histories of users ``start:stop`` (views of the arrays, ``indptr`` rebased to 0)."""
    stop = min(stop, histories.n_users)
    lo, hi = int(histories.indptr[start]), int(histories.indptr[stop])
    weights = None if histories.weights is None else histories.weights[lo:hi]
    return Histories(
        user_ids=histories.user_ids.slice(start, stop - start),
        indptr=histories.indptr[start : stop + 1] - lo,
        item_idx=histories.item_idx[lo:hi],
        timestamps=histories.timestamps[lo:hi],
        weights=weights,
    )


# ----------------------------------------------------------------------------- shared base


def _append_events(interactions: pl.DataFrame, later: pl.DataFrame) -> pl.DataFrame:
    """``interactions`` then ``later`` (same columns), each user's events kept in time order."""
    later = later.select(interactions.columns).cast(interactions.schema)  # type: ignore[arg-type]
    return pl.concat([interactions, later]).sort(USER_ID, TIMESTAMP, maintain_order=True)


class _HistoryRecommender:
    """Common ``fit`` / ``recommend`` / ``score_items`` of recommenders that score users from their histories.

    Subclasses implement ``_fit_model``, ``_score_dense`` and ``_score_pairs`` and have a config with
    ``chunk_size``.

    Attributes
    ----------
    index_:
        ``item_id -> item_idx`` of the fitted catalogue.
    item_ids_:
        Series of length ``n_items``: the id of each catalogue row.
    interactions_:
        The fitted events ``user_id, item_id, timestamp``: the histories used when ``history`` is not given.
    """

    config: Any
    index_: pl.DataFrame
    item_ids_: pl.Series
    interactions_: pl.DataFrame

    def fit(self: _R, interactions: pl.DataFrame, items: pl.DataFrame, valid: pl.DataFrame | None = None) -> _R:
        """Fit on validated ``interactions`` and the full catalogue ``items``. Returns ``self``.

        Parameters
        ----------
        interactions:
            ``user_id, item_id, timestamp`` events (see :class:`recsys.data.Dataset`).
        items:
            ``item_id`` (and ``text`` for text models), one row per catalogue item.
        valid:
            Later events (a validation split); a model without early stopping simply learns from them too.
        """
        if valid is not None:
            interactions = _append_events(interactions, valid)
        _require_columns(interactions, _EVENT_COLUMNS, "interactions")
        _require_columns(items, [ITEM_ID], "items")
        _same_dtype(interactions, ITEM_ID, items.schema[ITEM_ID], "interactions")
        index = item_index(items)
        events = interactions.select(_event_columns(interactions))
        self._fit_model(events, items, index)
        self.index_, self.item_ids_, self.interactions_ = index, items[ITEM_ID], events
        logger.info("%s fitted on %d events, %d items", type(self).__name__, events.height, items.height)
        return self

    @property
    def n_items(self) -> int:
        check_is_fitted(self)
        return self.index_.height

    def recommend(
        self,
        users: pl.Series | Sequence[Any],
        k: int = 10,
        *,
        history: pl.DataFrame | None = None,
        exclude_seen: bool = True,
    ) -> pl.DataFrame:
        """Top ``k`` catalogue items per user.

        Parameters
        ----------
        users:
            User ids (users without events get history-free scores).
        k:
            Items per user.
        history:
            Events ``user_id, item_id, timestamp`` that replace the fitted events of ``users``.
        exclude_seen:
            Never recommend an item in the user's history.

        Returns
        -------
        polars.DataFrame
            ``user_id, item_id, score (Float32), rank (UInt32, 1..k)``, users in the given order, best first.
        """
        check_is_fitted(self)
        k = check_k(k)
        histories = self._histories(users, history)
        size = self.config.chunk_size
        idx_parts, val_parts = [np.empty((0, k), np.int64)], [np.empty((0, k), np.float32)]
        starts = range(0, histories.n_users, size)
        for start in tqdm(starts, desc="Recommending", unit="chunk", disable=len(starts) <= 1):
            chunk = _slice_users(histories, start, start + size)
            scores = self._score_dense(chunk)  # (chunk users, n_items)
            idx, vals = topk(scores, k, exclude=chunk if exclude_seen else None, overwrite=True)
            idx_parts.append(idx)
            val_parts.append(vals)
        return to_recommendations(histories.user_ids, np.vstack(idx_parts), np.vstack(val_parts), self.item_ids_)

    def score_items(self, pairs: pl.DataFrame, *, history: pl.DataFrame | None = None) -> pl.DataFrame:
        """Scores of given (user, item) pairs, the same values ``recommend`` ranks by (no exclusion).

        Parameters
        ----------
        pairs:
            Frame with ``user_id`` and ``item_id`` (catalogue items); other columns are kept.
        history:
            Events that replace the fitted events of the users in ``pairs``.

        Returns
        -------
        polars.DataFrame
            ``pairs`` with a ``score`` (Float32) column appended, rows in the input order.
        """
        check_is_fitted(self)
        _require_columns(pairs, [USER_ID, ITEM_ID], "pairs")
        _same_dtype(pairs, ITEM_ID, self.item_ids_.dtype, "pairs")
        user_col = _as_users(pairs[USER_ID], self.interactions_.schema[USER_ID])
        users = user_col.unique(maintain_order=True)
        histories = self._histories(users, history)
        user_pos = user_col.replace_strict(users, np.arange(len(users)), return_dtype=pl.Int64).to_numpy()
        scores = self._score_pairs(histories, user_pos, self._item_rows(pairs[ITEM_ID]))
        return pairs.with_columns(pl.Series(SCORE, scores, dtype=pl.Float32))

    # -- shared steps

    def _histories(self, users: pl.Series | Sequence[Any], history: pl.DataFrame | None) -> Histories:
        """Histories of ``users`` from ``history`` if given, else from the fitted events."""
        events = self.interactions_
        if history is not None:
            _require_columns(history, _EVENT_COLUMNS, "history")
            _same_dtype(history, ITEM_ID, self.item_ids_.dtype, "history")
            events = history.select(_event_columns(history))
        user_series = _as_users(users, events.schema[USER_ID])
        return Histories.from_interactions(events, self.index_, user_series)

    def _item_rows(self, item_ids: pl.Series) -> np.ndarray:
        """int64 array: the catalogue row of each id; :class:`DataError` for ids outside the catalogue."""
        rows = item_ids.replace_strict(self.index_[ITEM_ID], self.index_[ITEM_IDX], default=None)
        unknown = item_ids.filter(rows.is_null())
        if unknown.len():
            raise DataError(
                f"{unknown.len()} pair(s) have item_id values not in the fitted catalogue (for example "
                f"{unknown.unique(maintain_order=True).head(5).to_list()}). Fix: score catalogue items only."
            )
        return rows.to_numpy().astype(np.int64)

    # -- subclass hooks

    def _fit_model(self, interactions: pl.DataFrame, items: pl.DataFrame, index: pl.DataFrame) -> None:
        raise NotImplementedError

    def _score_dense(self, histories: Histories) -> np.ndarray:
        """float32 array of shape ``(histories.n_users, n_items)``, writable and owned by the caller."""
        raise NotImplementedError

    def _score_pairs(self, histories: Histories, user_pos: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """float32 array of shape ``(n_pairs,)``: ``_score_dense(histories)[user_pos, item_idx]``."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- the baselines


class PopularityRecommender(_HistoryRecommender):
    """Recommend the items with the most events (within an optional time window); score = event count.

    Attributes
    ----------
    popularity_:
        The fitted :class:`~recsys.features.popularity.Popularity` stage.
    """

    popularity_: Popularity

    def __init__(self, config: PopularityRecommenderConfig | None = None) -> None:
        self.config = config if config is not None else PopularityRecommenderConfig()

    def _fit_model(self, interactions: pl.DataFrame, items: pl.DataFrame, index: pl.DataFrame) -> None:
        self.popularity_ = Popularity(self.config.popularity).fit(interactions, index)

    def _score_dense(self, histories: Histories) -> np.ndarray:
        return self.popularity_.score(histories.n_users)

    def _score_pairs(self, histories: Histories, user_pos: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        return self.popularity_.counts_[item_idx]


class TransitionRecommender(_HistoryRecommender):
    """Score = recency-weighted transitions from the user's items + ``popularity_weight`` * popularity / max.

    Attributes
    ----------
    transitions_:
        The fitted :class:`~recsys.features.transitions.Transitions` stage.
    popularity_:
        Popularity over all fitted events (the fallback term).
    """

    transitions_: Transitions
    popularity_: Popularity

    def __init__(self, config: TransitionRecommenderConfig | None = None) -> None:
        self.config = config if config is not None else TransitionRecommenderConfig()

    def _fit_model(self, interactions: pl.DataFrame, items: pl.DataFrame, index: pl.DataFrame) -> None:
        histories = Histories.from_interactions(interactions, index)
        self.transitions_ = Transitions(self.config.transitions).fit(histories, index.height)
        self.popularity_ = Popularity().fit(interactions, index)

    def _prior(self) -> np.ndarray:
        """float32 array of shape ``(n_items,)``: the popularity term."""
        return (np.float32(self.config.popularity_weight) * self.popularity_.normalized()).astype(np.float32)

    def _score_dense(self, histories: Histories) -> np.ndarray:
        scores = self.transitions_.score(histories)
        scores += self._prior()[None, :]
        return scores

    def _score_pairs(self, histories: Histories, user_pos: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        scores = self.transitions_.score_pairs(histories, user_pos, item_idx)
        scores += self._prior()[item_idx]
        return scores


class EaseRecommender(_HistoryRecommender):
    """Score = EASE score of the item given the user's whole history (0 where the model does not cover the
    item) + ``popularity_weight`` * popularity / max.

    Attributes
    ----------
    ease_:
        The fitted :class:`~recsys.features.collaborative.Collaborative` stage.
    popularity_:
        Popularity over all fitted events (the tie-break term).
    """

    ease_: Collaborative
    popularity_: Popularity

    def __init__(self, config: EaseRecommenderConfig | None = None) -> None:
        self.config = config if config is not None else EaseRecommenderConfig()

    def _fit_model(self, interactions: pl.DataFrame, items: pl.DataFrame, index: pl.DataFrame) -> None:
        histories = Histories.from_interactions(interactions, index)
        context = FitContext(histories, items, np.zeros((index.height, 0), np.float32))  # reads events only
        self.ease_ = Collaborative(self.config.ease).fit(context)
        self.popularity_ = Popularity().fit(interactions, index)

    def _prior(self) -> np.ndarray:
        """float32 array of shape ``(n_items,)``: the popularity term."""
        return (np.float32(self.config.popularity_weight) * self.popularity_.normalized()).astype(np.float32)

    def _score_dense(self, histories: Histories) -> np.ndarray:
        scores = np.nan_to_num(self.ease_.score_all(histories), nan=0.0)  # (n_users, n_items)
        scores += self._prior()[None, :]
        return scores

    def _score_pairs(self, histories: Histories, user_pos: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        pairs = pl.DataFrame({QUERY: user_pos, ITEM_IDX: item_idx})
        scores = self.ease_.transform(pairs, histories)["ease_score"].to_numpy()  # (n_pairs,), NaN: not covered
        return (np.nan_to_num(scores, nan=0.0) + self._prior()[item_idx]).astype(np.float32)


class ZeroShotTextRecommender(_HistoryRecommender):
    """Score = cosine between the item text vectors and the user's recency-weighted mean item vector.

    Users without history get a zero vector, hence all-zero scores (ties in catalogue order).

    Attributes
    ----------
    item_vectors_:
        L2-normalised float32 array of shape ``(n_items, dim)`` from :class:`ItemTextEncoder`.
    user_encoder_:
        The fitted :class:`~recsys.models.zero_shot.ZeroShotUserEncoder`.
    """

    item_vectors_: np.ndarray
    user_encoder_: ZeroShotUserEncoder

    def __init__(self, config: ZeroShotTextRecommenderConfig | None = None) -> None:
        self.config = config if config is not None else ZeroShotTextRecommenderConfig()

    def _fit_model(self, interactions: pl.DataFrame, items: pl.DataFrame, index: pl.DataFrame) -> None:
        _require_columns(items, [TEXT], "items")
        if items[TEXT].null_count():
            raise DataError(f"items column 'text' has {items[TEXT].null_count()} null(s); give every item text.")
        vectors = ItemTextEncoder(self.config.text).encode(items[TEXT].to_list())
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.item_vectors_ = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        self.user_encoder_ = ZeroShotUserEncoder(self.config.user).fit(self.item_vectors_)

    def _score_dense(self, histories: Histories) -> np.ndarray:
        user_vectors = self.user_encoder_.encode(histories)  # (n_users, dim)
        return user_vectors @ self.item_vectors_.T  # (n_users, n_items)

    def _score_pairs(self, histories: Histories, user_pos: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        user_vectors = self.user_encoder_.encode(histories)  # (n_users, dim)
        out = np.empty(user_pos.size, dtype=np.float32)
        for start in range(0, user_pos.size, _PAIR_CHUNK):
            rows = slice(start, start + _PAIR_CHUNK)
            u, v = user_vectors[user_pos[rows]], self.item_vectors_[item_idx[rows]]  # (chunk, dim) each
            out[rows] = np.einsum("ij,ij->i", u, v)
        return out
