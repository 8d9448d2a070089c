"""The recommender: item text encoder -> user embedding -> FAISS candidates -> LightGBM LambdaRank.

:class:`Recommender` only composes the stages; each stage is usable and tested alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from recsys._persist import (
    arrays_to_sparse,
    config_from_dict,
    load_arrays,
    read_model_dir,
    sparse_to_arrays,
    write_model_dir,
)
from recsys._topk import topk
from recsys.data import Histories, item_index
from recsys.errors import ConfigError, DataError, ModelFormatError, check_is_fitted
from recsys.features.popularity import Popularity
from recsys.features.ranking import (
    QUERY,
    RETRIEVAL_RANK,
    RETRIEVAL_SCORE,
    TRANSITION_RANK,
    FeatureConfig,
    RankingFeatures,
)
from recsys.features.transitions import Transitions
from recsys.models.memory_encoder import MemoryEncoder, MemoryEncoderConfig
from recsys.models.memory_recommender import valid_targets
from recsys.models.ranker import LambdaRanker, RankerConfig
from recsys.models.text_encoder import ItemTextEncoder, TextEncoderConfig
from recsys.models.zero_shot import ZeroShotConfig, ZeroShotUserEncoder
from recsys.retrieval import FaissIndex, IndexConfig
from recsys.schema import ITEM_ID, ITEM_IDX, RANK, SCORE, TEXT, USER_ID

__all__ = ["Recommender", "RecommenderConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecommenderConfig:
    """Settings of every stage of the pipeline.

    Parameters
    ----------
    user_encoder:
        ``"zero-shot"``: recency-weighted mean of the history's text vectors (settings in ``user``);
        ``"memory"``: the learned long-context memory encoder (settings in ``memory``), trained on the events
        before the ranker's cut-offs (so its scores on the ranker's labels are out of sample), early-stopped on
        the first cut-off; its item vectors then replace the text vectors in FAISS.
    n_candidates:
        Items retrieved per user by FAISS (text similarity) and re-ranked by LightGBM.
    n_transition_candidates:
        Items added per user from item-to-item transitions of the recent history (0 turns the source off).
    n_cutoffs:
        Training queries per user for the ranker: the last ``n_cutoffs`` events of each user's history,
        each predicted from the events before it. Feature statistics use only events before all cut-offs.
    valid_fraction:
        Share of users whose ranker queries are held out for early stopping.
    chunk_users:
        Users scored per chunk in ``recommend`` (bounds memory).
    """

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    user_encoder: Literal["zero-shot", "memory"] = "zero-shot"
    user: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    memory: MemoryEncoderConfig = field(default_factory=MemoryEncoderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    n_candidates: int = 200
    n_transition_candidates: int = 100
    n_cutoffs: int = 3
    valid_fraction: float = 0.1
    chunk_users: int = 2048
    seed: int = 0
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("n_candidates", "n_cutoffs", "chunk_users"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RecommenderConfig.{name}={getattr(self, name)} must be >= 1.")
        if self.user_encoder not in ("zero-shot", "memory"):
            raise ConfigError(f"RecommenderConfig.user_encoder={self.user_encoder!r}; use 'zero-shot' or 'memory'.")
        if not 0 <= self.valid_fraction < 1:
            raise ConfigError(f"RecommenderConfig.valid_fraction={self.valid_fraction} must be in [0, 1).")


def source_frame(idx: np.ndarray, rank_column: str) -> pl.DataFrame:
    """Long frame ``query, item_idx, <rank_column>`` from a source's top lists ``(n_queries, k)``; -1 dropped."""
    n, k = idx.shape
    frame = pl.DataFrame(
        {
            QUERY: pl.Series(np.repeat(np.arange(n, dtype=np.uint32), k), dtype=pl.UInt32),
            ITEM_IDX: pl.Series(idx.ravel(), dtype=pl.Int64),
            rank_column: pl.Series(np.tile(np.arange(1, k + 1, dtype=np.uint32), n), dtype=pl.UInt32),
        }
    )
    return frame.filter(pl.col(ITEM_IDX) >= 0).with_columns(pl.col(ITEM_IDX).cast(pl.UInt32))


def merge_sources(sources: dict[str, tuple[pl.DataFrame, int]]) -> pl.DataFrame:
    """Union of the sources' candidates, one row per (query, item); a source's rank is its list length + 1
    where it did not propose the item."""
    frames = [frame for frame, _ in sources.values()]
    merged = (
        pl.concat(frames, how="diagonal")
        .group_by(QUERY, ITEM_IDX, maintain_order=True)
        .agg(pl.col(name).min() for name in sources)
    )
    return merged.with_columns(pl.col(name).fill_null(k + 1) for name, (_, k) in sources.items())


def pair_dot(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float32 ``(n_pairs,)``: ``queries[rows] . vectors[cols]``, in blocks to bound memory."""
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), 65_536):
        r, c = rows[start : start + 65_536], cols[start : start + 65_536]
        out[start : start + 65_536] = np.einsum("nd,nd->n", queries[r], vectors[c])  # (block,)
    return out


def training_queries(interactions: pl.DataFrame, n_cutoffs: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Time-respecting ranker queries.

    For each user and each of the last ``n_cutoffs`` events that has at least one earlier event, one
    query: the label is that event's item, the history every event before it.

    Returns
    -------
    (past, history, labels):
        ``past``: the events before every cut-off (for feature statistics); ``history``: events with
        ``user_id`` replaced by the query key; ``labels``: ``user_id`` (the query key), ``item_id``,
        ``owner`` (the real user).
    """
    df = interactions.with_columns(_pos=pl.int_range(pl.len()).over(USER_ID), _len=pl.len().over(USER_ID)).with_columns(
        _first_cut=pl.col("_len") - n_cutoffs
    )
    past = df.filter(pl.col("_pos") < pl.col("_first_cut")).drop("_pos", "_len", "_first_cut")
    histories, labels = [], []
    for c in range(1, n_cutoffs + 1):
        key = pl.concat_str([pl.col(USER_ID).cast(pl.String), pl.lit(f"#{c}")]).alias(USER_ID)
        cut = pl.col("_len") - c
        labels.append(
            df.filter((pl.col("_pos") == cut) & (cut >= 1)).select(key, ITEM_ID, pl.col(USER_ID).alias("owner"))
        )
        histories.append(df.filter(pl.col("_pos") < cut).with_columns(key))
    history = pl.concat(histories).drop("_pos", "_len", "_first_cut")
    return past, history, pl.concat(labels)


class Recommender:
    """Text-memory recommender: fit on interactions and item texts, recommend catalogue items.

    Attributes (after ``fit``)
    --------------------------
    items_: the catalogue (``item_id, text, ...``); ``index_``: ``item_id -> item_idx``;
    item_vectors_: float32 ``(n_items, dim)``; vector_index_: FAISS index; features_: fitted feature
    statistics (on all fitted events); ranker_: LightGBM LambdaRank; interactions_: the fitted events.
    """

    items_: pl.DataFrame | None = None
    index_: pl.DataFrame | None = None
    item_vectors_: np.ndarray | None = None
    user_encoder_: ZeroShotUserEncoder | MemoryEncoder | None = None
    vector_index_: FaissIndex | None = None
    features_: RankingFeatures | None = None
    ranker_: LambdaRanker | None = None
    interactions_: pl.DataFrame | None = None

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()

    # ----------------------------------------------------------------------------------------- fit
    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame) -> Recommender:
        """Embed item texts, index them, and train the ranker on time-respecting cut-offs.

        ``interactions`` and ``items`` follow the data contract (see :class:`recsys.data.Dataset`).
        """
        self.items_ = items.select(ITEM_ID, TEXT)
        self.index_ = item_index(items)
        text_vectors = ItemTextEncoder(self.config.text).encode(items[TEXT].to_list())
        if self.config.user_encoder == "memory":
            self.user_encoder_ = self._fit_memory(interactions, text_vectors)
            self.item_vectors_ = self.user_encoder_.item_vectors()
        else:
            self.item_vectors_ = text_vectors
            self.user_encoder_ = ZeroShotUserEncoder(self.config.user).fit(self.item_vectors_)
        self.vector_index_ = FaissIndex(self.config.index).fit(self.item_vectors_)
        self.ranker_ = self._fit_ranker(interactions)
        self.features_ = RankingFeatures(self.config.features).fit(interactions, self.index_)
        self.interactions_ = interactions
        return self

    def _fit_memory(self, interactions: pl.DataFrame, text_vectors: np.ndarray) -> MemoryEncoder:
        """Train the memory encoder on the events before the ranker's cut-offs, early-stopped on the first."""
        past, _, labels = training_queries(interactions, self.config.n_cutoffs)
        first_cut = labels.filter(pl.col(USER_ID).str.ends_with(f"#{self.config.n_cutoffs}"))
        histories = Histories.from_interactions(past, self.index_)  # type: ignore[arg-type]
        valid = first_cut.select(pl.col("owner").alias(USER_ID), ITEM_ID)
        targets = valid_targets(valid, self.index_, histories.user_ids)  # type: ignore[arg-type]
        return MemoryEncoder(self.config.memory).fit(histories, text_vectors, targets)

    def _fit_ranker(self, interactions: pl.DataFrame) -> LambdaRanker:
        past, history, labels = training_queries(interactions, self.config.n_cutoffs)
        if labels.height == 0:
            raise DataError("no user has two or more events; the ranker needs at least one earlier event per label.")
        features = RankingFeatures(self.config.features).fit(past, self.index_)  # type: ignore[arg-type]
        frame = self._candidate_features(history, labels[USER_ID], features, exclude_seen=True)
        labels = labels.with_row_index(QUERY)
        frame = frame.join(labels.select(QUERY, ITEM_ID, label=pl.lit(1, pl.Int32)), on=[QUERY, ITEM_ID], how="left")
        frame = frame.with_columns(pl.col("label").fill_null(0)).join(
            labels.select(QUERY, "owner"), on=QUERY, how="left", maintain_order="left"
        )
        hit = frame.group_by(QUERY).agg(pl.col("label").max())
        logger.info(
            "ranker training: %d queries, candidate recall@%d = %.3f",
            labels.height,
            self.config.n_candidates,
            hit["label"].sum() / labels.height,
        )
        frame = frame.join(hit.filter(pl.col("label") > 0).select(QUERY), on=QUERY, how="semi")
        in_valid = (pl.col("owner").hash(self.config.seed) % 1000) < int(1000 * self.config.valid_fraction)
        names = features.feature_names
        return LambdaRanker(self.config.ranker).fit(frame.filter(~in_valid), frame.filter(in_valid), names)

    # ----------------------------------------------------------------------------------- recommend
    def _histories(self, users: pl.Series, history: pl.DataFrame | None) -> Histories:
        source = history if history is not None else self.interactions_
        source = source.filter(pl.col(USER_ID).is_in(users.implode()))  # type: ignore[union-attr]
        return Histories.from_interactions(source, self.index_, users)  # type: ignore[arg-type]

    def _candidate_features(
        self,
        history: pl.DataFrame | None,
        users: pl.Series,
        features: RankingFeatures,
        exclude_seen: bool,
        k: int = 0,
    ) -> pl.DataFrame:
        """Candidates (at least ``k`` per user where the catalogue allows) with features for ``users``;
        ``query`` is the position in ``users``."""
        histories = self._histories(users, history)
        queries = self.user_encoder_.encode(histories)  # type: ignore[union-attr]  # (n_users, dim)
        n_candidates = min(max(self.config.n_candidates, k), self.index_.height)  # type: ignore[union-attr]
        idx, _ = self.vector_index_.search(  # type: ignore[union-attr]
            queries, n_candidates, exclude=histories if exclude_seen else None
        )
        idx = self._cold_start(idx, histories, features)
        sources = {RETRIEVAL_RANK: (source_frame(idx, RETRIEVAL_RANK), idx.shape[1])}
        if self.config.n_transition_candidates:
            t_idx = self._transition_candidates(histories, features, exclude_seen)
            sources[TRANSITION_RANK] = (source_frame(t_idx, TRANSITION_RANK), t_idx.shape[1])
        else:
            sources[TRANSITION_RANK] = (pl.DataFrame(schema={QUERY: pl.UInt32, ITEM_IDX: pl.UInt32}), 0)
        frame = merge_sources(sources)
        score = pair_dot(
            queries,
            self.item_vectors_,  # type: ignore[arg-type]
            frame[QUERY].to_numpy(),
            frame[ITEM_IDX].to_numpy(),
        )
        frame = features.transform(frame.with_columns(pl.Series(RETRIEVAL_SCORE, score)), histories)
        item_ids = self.index_.select(ITEM_IDX, ITEM_ID)  # type: ignore[union-attr]
        return frame.join(item_ids, on=ITEM_IDX, how="left", maintain_order="left")

    def _transition_candidates(self, histories: Histories, features: RankingFeatures, exclude_seen: bool) -> np.ndarray:
        """int64 ``(n_users, n_transition_candidates)``: items most reachable from the recent history."""
        scores = features.transitions_.score(histories)  # type: ignore[union-attr]  # (n_users, n_items)
        idx, vals = topk(
            scores, self.config.n_transition_candidates, histories if exclude_seen else None, overwrite=True
        )
        idx[vals <= 0] = -1  # no transition evidence: not a candidate
        return idx

    def _cold_start(self, idx: np.ndarray, histories: Histories, features: RankingFeatures) -> np.ndarray:
        """Users without history have no query vector: give them the most popular items as candidates."""
        cold = histories.lengths == 0
        if cold.any():
            counts = features.popularity_.counts_  # type: ignore[union-attr]
            top = np.argsort(-counts, kind="stable")[: idx.shape[1]]
            idx[cold, : len(top)] = top
        return idx

    def recommend(
        self,
        users: pl.Series | Sequence[Any] | None = None,
        k: int = 10,
        *,
        history: pl.DataFrame | None = None,
        exclude_seen: bool = True,
    ) -> pl.DataFrame:
        """Top ``k`` items per user: the long table ``user_id, item_id, score (f32), rank (u32)``.

        Parameters
        ----------
        users:
            User ids (default: every fitted user). Unknown users or users without events get popular items.
        k:
            Items per user.
        history:
            Interactions (data contract) that replace the fitted events of these users.
        exclude_seen:
            Never recommend an item in the user's history.
        """
        check_is_fitted(self)
        if k < 1:
            raise ConfigError(f"k={k} must be >= 1.")
        users = self._user_series(users)
        parts = []
        chunks = range(0, len(users), self.config.chunk_users)
        for start in tqdm(
            chunks, desc="recommend", unit="chunk", disable=not self.config.show_progress or len(chunks) < 2
        ):
            parts.append(self._recommend_chunk(users.slice(start, self.config.chunk_users), k, history, exclude_seen))
        return pl.concat(parts) if parts else self._recommend_chunk(users, k, history, exclude_seen)

    def _user_series(self, users: pl.Series | Sequence[Any] | None) -> pl.Series:
        dtype = self.interactions_.schema[USER_ID]  # type: ignore[union-attr]
        if users is None:
            return self.interactions_[USER_ID].unique(maintain_order=True)  # type: ignore[index]
        series = users if isinstance(users, pl.Series) else pl.Series(USER_ID, list(users))
        try:
            return series.cast(dtype, strict=True).rename(USER_ID)
        except Exception as err:
            raise DataError(f"users have dtype {series.dtype}; the fitted user_id has {dtype}. Cast them.") from err

    def _recommend_chunk(
        self, users: pl.Series, k: int, history: pl.DataFrame | None, exclude_seen: bool
    ) -> pl.DataFrame:
        frame = self._candidate_features(history, users, self.features_, exclude_seen, k)  # type: ignore[arg-type]
        frame = frame.with_columns(pl.Series(SCORE, self.ranker_.score(frame), dtype=pl.Float32))  # type: ignore[union-attr]
        top = (
            frame.sort([QUERY, SCORE, ITEM_IDX], descending=[False, True, False])
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).over(QUERY).alias(RANK))
            .filter(pl.col(RANK) <= k)
        )
        owners = pl.DataFrame({USER_ID: users}).with_row_index(QUERY)
        return top.join(owners, on=QUERY, how="left", maintain_order="left").select(USER_ID, ITEM_ID, SCORE, RANK)

    def score_items(self, pairs: pl.DataFrame, *, history: pl.DataFrame | None = None) -> pl.DataFrame:
        """Ranker scores of given ``(user_id, item_id)`` pairs, as ``recommend`` would rank them.

        The pipeline is two-stage: an item its candidate sources do not propose for a user (within
        ``n_candidates`` / ``n_transition_candidates``, history items excluded) cannot be recommended and gets
        score ``-inf``. Returns ``pairs`` with a ``score`` (Float32) column, rows in input order.
        """
        check_is_fitted(self)
        users = self._user_series(pairs[USER_ID].unique(maintain_order=True))
        frame = self._candidate_features(history, users, self.features_, exclude_seen=True)  # type: ignore[arg-type]
        scores = pl.Series(SCORE, self.ranker_.score(frame), dtype=pl.Float32)  # type: ignore[union-attr]
        owners = pl.DataFrame({USER_ID: users}).with_row_index(QUERY)
        scored = frame.select(QUERY, ITEM_ID).with_columns(scores).join(owners, on=QUERY).drop(QUERY)
        keyed = pairs.with_columns(pl.col(USER_ID).cast(users.dtype))
        out = keyed.join(scored, on=[USER_ID, ITEM_ID], how="left", maintain_order="left")
        return out.with_columns(pl.col(SCORE).fill_null(float("-inf"))).with_columns(pairs[USER_ID])

    # -------------------------------------------------------------------------------- save / load
    def save(self, directory: str | Path) -> Path:
        """Write the fitted recommender to ``directory`` (replaced atomically); see :mod:`recsys._persist`."""
        check_is_fitted(self)
        features = self.features_
        arrays = {
            "item_vectors": {"vectors": self.item_vectors_},
            **(
                {"memory_encoder": self.user_encoder_.to_arrays()}
                if isinstance(self.user_encoder_, MemoryEncoder)
                else {}
            ),
            "features": {
                "popularity.counts": features.popularity_.counts_,  # type: ignore[union-attr]
                **sparse_to_arrays(features.transitions_.matrix_, "transitions"),  # type: ignore[union-attr]
            },
        }
        return write_model_dir(
            directory,
            config=dataclasses.asdict(self.config),
            frames={"items": self.items_, "interactions": self.interactions_},  # type: ignore[dict-item]
            arrays=arrays,  # type: ignore[arg-type]
            texts={"ranker.txt": self.ranker_.to_text()},  # type: ignore[union-attr]
            writers={"index.faiss": self.vector_index_.save},  # type: ignore[union-attr]
            extra={"feature_names": self.ranker_.feature_names_},  # type: ignore[union-attr]
        )

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a directory written by :meth:`save`, after checking its manifest and checksums."""
        folder, manifest = read_model_dir(directory)
        config = config_from_dict(RecommenderConfig, json.loads((folder / "config.json").read_text()))
        self = cls(config)
        self.items_ = pl.read_parquet(folder / "items.parquet")
        self.index_ = item_index(self.items_)
        self.interactions_ = pl.read_parquet(folder / "interactions.parquet")
        self.item_vectors_ = load_arrays(folder / "item_vectors.safetensors")["vectors"]
        if config.user_encoder == "memory":
            arrays = load_arrays(folder / "memory_encoder.safetensors")
            self.user_encoder_ = MemoryEncoder.from_arrays(config.memory, arrays)
        else:
            self.user_encoder_ = ZeroShotUserEncoder(config.user).fit(self.item_vectors_)
        self.vector_index_ = FaissIndex.load(str(folder / "index.faiss"), config.index)
        self.ranker_ = LambdaRanker.from_text((folder / "ranker.txt").read_text(), config.ranker)
        if self.ranker_.feature_names_ != manifest.get("feature_names"):
            raise ModelFormatError("the ranker's feature list differs from the manifest's; the model is inconsistent.")
        self.features_ = _load_features(config.features, load_arrays(folder / "features.safetensors"))
        return self


def _load_features(config: FeatureConfig, arrays: dict[str, np.ndarray]) -> RankingFeatures:
    features = RankingFeatures(config)
    features.popularity_ = Popularity(config.popularity)
    features.popularity_.counts_ = arrays["popularity.counts"]
    features.transitions_ = Transitions(config.transitions)
    features.transitions_.matrix_ = arrays_to_sparse(arrays, "transitions")
    return features
