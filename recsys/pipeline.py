"""The recommender: item text encoder -> user embedding -> FAISS candidates -> LightGBM LambdaRank.

:class:`Recommender` only composes the stages; each stage is usable and tested alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys._persist import config_from_dict, load_arrays, read_model_dir, write_model_dir
from recsys._topk import MERGE_MAX_ITEMS, check_k, merge_top_lists, topk_positive, topk_ranked
from recsys.data import DataConfig, Histories, item_index
from recsys.errors import ConfigError, DataError, ModelFormatError, SchemaError, check_is_fitted
from recsys.explain import because_items, feature_importance, reasons
from recsys.features._common import PAIR_BLOCK
from recsys.features.base import FitContext
from recsys.features.popularity import item_popularity
from recsys.features.ranking import (
    COOCCURRENCE_RANK,
    EASE_RANK,
    LEXICAL_RANK,
    POPULARITY_RANK,
    QUERY,
    RETRIEVAL_RANK,
    RETRIEVAL_SCORE,
    SIMILAR_RANK,
    TRANSITION_RANK,
    FeatureConfig,
    RankingFeatures,
    feature_threads,
    thread_map,
)
from recsys.models.baselines import _append_events
from recsys.models.memory_config import MemoryEncoderConfig, MemoryStates
from recsys.models.ranker import LambdaRanker, RankerConfig, RankerEnsemble, ranker_from_texts
from recsys.models.text_encoder import ItemTextEncoder, TextEncoderConfig
from recsys.models.zero_shot import ZeroShotConfig, ZeroShotUserEncoder
from recsys.retrieval import FaissIndex, IndexConfig
from recsys.schema import ITEM_ID, ITEM_IDX, RANK, SCORE, TEXT, USER_ID
from recsys.update import OnChangedText, load_states, stored_queries, update_recommender

if TYPE_CHECKING:
    from recsys.models.memory_encoder import MemoryEncoder

__all__ = ["Recommender", "RecommenderConfig"]

logger = logging.getLogger(__name__)


RANKING_SETTINGS = (
    "n_candidates",
    "n_transition_candidates",
    "n_popularity_candidates",
    "n_cooccurrence_candidates",
    "n_ease_candidates",
    "n_similar_candidates",
    "n_lexical_candidates",
    "cutoff_statistics",
    "label_window",
    "train_with_seen",
    "max_ranker_users",
    "valid_fraction",
    "ranker_folds",
    "ranker_ensemble",
)
"""The :class:`RecommenderConfig` fields that :meth:`Recommender.with_features` may change: the ranking stage
reads them, the user encoder and the FAISS index do not (``n_cutoffs`` too where the encoder does not read it:
:func:`ranking_settings`)."""


def ranking_settings(config: RecommenderConfig) -> tuple[str, ...]:
    """The settings :meth:`Recommender.with_features` may change for a pipeline of ``config``:
    :data:`RANKING_SETTINGS`; ``n_cutoffs`` unless the memory encoder holds out the last ``n_cutoffs`` events
    (``memory_crossfit=0`` with ``memory_holdout=None``), as cross-fitted and zero-shot encoders do not read it;
    and ``memory_crossfit`` and ``crossfit_by`` of a cross-fitted memory encoder (another number of folds, at least
    2, or another split, refits the fold encoders that score the ranker's training queries; the serving encoder,
    trained on every event, stays)."""
    crossfit = config.user_encoder == "memory" and bool(config.memory_crossfit)
    encoder_reads_cutoffs = config.user_encoder == "memory" and not crossfit and config.memory_holdout is None
    return (
        *RANKING_SETTINGS,
        *(() if encoder_reads_cutoffs else ("n_cutoffs",)),
        *(("memory_crossfit", "crossfit_by") if crossfit else ()),
    )


RANKER_FILE = re.compile(r"ranker(-\d+)?\.txt")
"""The saved ranker's LightGBM text models: ``ranker.txt``, or ``ranker-0.txt``... for an ensemble."""

MIN_PARALLEL_CHUNK_USERS = 256
"""``recommend`` serves chunks side by side (``RecommenderConfig.serve_workers``) only when each would hold at least
this many users: below it, a chunk's fixed costs outweigh the idle core it fills."""

AUTO_RANKER_FOLDS = 5  # ranker_folds=None: cross-validation folds below ...
AUTO_FOLDS_BELOW_QUERIES = 20_000  # ... this many training queries

_CHOICES = {
    "cutoff_statistics": ("shared", "per_cutoff"),
    "crossfit_by": ("users", "time"),
    "user_encoder": ("zero-shot", "memory"),
}

_MINIMUMS = {
    "n_candidates": 1,
    "n_cutoffs": 1,
    "label_window": 1,
    "chunk_users": 1,
    "serve_workers": 1,
    "cascade_top": 1,
    "memory_holdout": 1,
    "max_ranker_users": 1,
    "n_transition_candidates": 0,
    "n_popularity_candidates": 0,
    "n_cooccurrence_candidates": 0,
    "n_ease_candidates": 0,
    "n_similar_candidates": 0,
    "n_lexical_candidates": 0,
}

SOURCE_GROUPS = {
    "transition": ("n_transition_candidates", "transition"),
    "co-occurrence": ("n_cooccurrence_candidates", "cooccurrence"),
    "EASE": ("n_ease_candidates", "collaborative"),
    "similar-text": ("n_similar_candidates", "similarity"),
    "similar-words": ("n_lexical_candidates", "lexical"),
}
"""Each feature-backed candidate source: its quota field and the feature group that scores it."""


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
    n_popularity_candidates:
        Items added per user from the most popular items (0 turns the source off).
    n_cooccurrence_candidates:
        Items added per user from co-occurrence with the recent history: the items with the highest
        ``cooc_score`` over the catalogue (0, the default, turns the source off; the ranker then has no
        ``cooc_rank`` column). Needs the ``cooccurrence`` feature group.
    n_ease_candidates:
        Items added per user from EASE over the whole history: the items of highest positive ``ease_score``
        (the ``collaborative`` group, which it needs; 0, the default, turns the source off and the ranker has
        no ``ease_rank`` column). Off because it did not hold on the test split: 50 EASE candidates on top of
        the group, NDCG@10 (seed 0, same encoders, ranker retrained) on validation targets Scientific 0.1082 ->
        0.1093 and ml-100k 0.1532 -> 0.1541, but on test 0.1089 -> 0.1095 and 0.1436 -> 0.1365, for about 50
        more candidates per user to score.
    n_similar_candidates:
        Items added per user from text similarity to the recent history: the items of highest
        ``sim_recent_mean`` (the cosine of their text vector to the normalised mean of the last
        ``features.similarity.short_term`` history items), found by a FAISS index of the text vectors built on
        first use (0, the default, turns the source off; the ranker then has no ``similar_rank`` column). Needs
        the ``similarity`` group. The interest score reads the whole history through the memory encoder; this
        source proposes what resembles the last few items (an accessory of the product just bought).
    n_lexical_candidates:
        The same over the ``lexical`` group's word TF-IDF vectors (``lex_recent_mean``; column
        ``lexical_rank``): items that share telling words (a brand, a model number) with the recent history.
        Needs the ``lexical`` group. Both off: on Scientific (unisrec validation targets, seeds 0 and 1, paired)
        50 of them moved NDCG@10 by +0.0004 / -0.0008 (text) and -0.0004 / -0.0012 (words, against the
        ``lexical`` group alone), although they raised the training queries' candidate recall from 0.417 to
        0.441 and 0.443.
    n_cutoffs:
        Training queries per user for the ranker: the last ``n_cutoffs`` events of each user's history,
        each predicted from the events before it. Feature statistics use, per cut-off, the events before that
        cut-off (``cutoff_statistics="per_cutoff"``) or only events before all cut-offs (``"shared"``).
        Measured on Scientific (with query-relative features, shared statistics, before the fix of 913f0ed,
        which then still held every event of the users with 4): NDCG@10 0.1081 with 5 against 0.1071 with 3;
        with per-cut-off statistics (unisrec validation targets, seed 0, paired) 8 equals 5 (0.1078).
    cutoff_statistics:
        What the feature statistics (co-occurrence, transitions, popularity, item and user stats...) of the
        ranker's training queries are fitted on. ``"per_cutoff"`` (default): for the queries of the ``c``-th
        last event, every user's events but their last ``c`` (the label event and everything after it stay
        out), one fit per cut-off. ``"shared"``: the events before every cut-off, one fit for all queries.
        Serving uses statistics from every event; with short histories the shared fit sees a fraction of them
        (Scientific, 6 events per user: 12,083 of 50,985), the first cut-off's nearly all (42,543). Paired
        (same encoders, ranker retrained): NDCG@10 on Scientific 0.1049 -> 0.1089 (mean of 3 seeds, +0.0032 to
        +0.0045 each), ml-100k 0.1389 -> 0.1441 (seed 0). It costs ``n_cutoffs`` statistics fits instead of one.
    label_window:
        Positives per training query: the next event's item (label 2) and, when ``> 1``, the items of the
        following ``label_window - 1`` events (label 1), so the ranker learns what a user takes up soon, not
        only next. Early stopping still scores the next item alone. 1: the next item only (label 1). On ml-100k's
        validation targets with 5 folds: NDCG@10 0.1435 with 3 against 0.1527 with 1; on Scientific's (unisrec,
        seed 0, paired) -0.0005 with 2 and +0.0001 with 3 (twice the trees).
    train_with_seen:
        The ranker's training candidates include the user's history items, as ``recommend(...,
        exclude_seen=False)`` proposes them (label 0 unless the label event re-consumes one), so it learns what a
        seen item is worth (``times_consumed``, the EASE score of a seen item...). Off (the default), training
        candidates exclude history items, as ``recommend`` serves by default; a model meant to serve with
        ``exclude_seen=False`` (RecBole's protocol) should turn it on: with it off, seen items are outside
        what the ranker was trained on (ml-100k unmasked, 3 seeds, same encoders: NDCG@10 0.0548 off, 0.1427 on).
        It costs masked serving (ml-100k seed 0, paired: 0.1411 off, 0.1333 on), so each protocol wants its own.
    max_ranker_users:
        The ranker trains on the cut-offs of at most this many users (a seeded sample; None: every user). Its
        training frame has about ``users x n_cutoffs x candidates`` rows (10,000 users: ~16M rows at the
        default quotas), so this bounds ``fit`` at catalogue scale; feature statistics still use every event.
    memory_holdout:
        Last events per user the memory encoder does not train on (default ``n_cutoffs``: its scores on every
        ranker label are out of sample). Smaller values train the encoder on more events (short histories)
        at the price of in-sample scores on the earlier cut-offs; the first held-out event early-stops it.
    memory_crossfit:
        ``k >= 2``: cross-fit instead of holding events out. The users are split into ``k`` folds; the ranker's
        queries of each fold are scored by an encoder trained on the other folds' whole histories (out of
        sample), and the encoder that serves is trained on every event. It costs ``k`` extra encoders, each on
        ``(k - 1) / k`` of the users. 0 turns it off (then ``memory_holdout`` applies). Measured on Scientific:
        NDCG@10 0.1053 with 2 folds against 0.1018 holding out the cut-offs.
    crossfit_by:
        With ``memory_crossfit`` on: ``"users"`` (default) splits the users into ``memory_crossfit`` folds as
        above; ``"time"`` trains one extra encoder on every user's events before the last ``memory_holdout``
        (default ``n_cutoffs``) and scores every training query with it, so that, as at serving, the encoder
        has read the query's user before (but not the label event or anything after it); the serving encoder
        is still trained on every event. Measured on ml-100k's validation targets (paired, same serving
        encoder, ranker retrained): NDCG@10 -0.0035 and -0.0020 (seeds 0, 1) against ``"users"``; the ranker's
        gain over the encoder is not a matter of which encoder scores its training queries.
    valid_fraction:
        Share of users whose ranker queries are held out for early stopping (when ``ranker_folds`` is 0).
    ranker_folds:
        ``k >= 2``: choose the ranker's number of trees by ``k``-fold cross-validation over users (each fold's
        queries early-stop a ranker trained on the other folds), then serve their mean (``ranker_ensemble``, the
        default; ``k`` fits) or train one ranker on every query with the mean best round (``k + 1`` fits);
        every query both trains and validates. 0: one seeded
        ``valid_fraction`` hold-out. ``None`` (default): 5 folds when the ranker has fewer than 20,000
        training queries, else the hold-out. Why: on small data a 10% hold-out is a few hundred queries and
        early-stops noisily (ml-100k: 47 trees); chosen on ml-100k's validation targets (test events removed),
        NDCG@10 0.1474 with the hold-out, 0.1510 with a 30% hold-out, 0.1527 with 5 folds (encoder alone 0.1385).
    ranker_ensemble:
        With ``ranker_folds`` (explicit, or automatic on small data): serve the mean score of the ``k`` fold
        rankers, each early-stopped on its own fold (:class:`~recsys.models.ranker.RankerEnsemble`), instead of
        one ranker refitted on every query with the mean best round. ``k`` fits instead of ``k + 1``, and the
        model scores ``k`` boosters. No effect with the hold-out. Why: the fold rankers' best rounds spread
        widely (ml-100k: 8 to 157), so one tree count for all is a noisy choice. ml-100k NDCG@10, same encoders:
        validation targets (seed 0) 0.1532 with the refit, 0.1555 with the ensemble; test (3 seeds) 0.1398 ±
        0.0046 with the refit, 0.1439 ± 0.0024 with the ensemble.
    chunk_users:
        Users in flight in ``recommend`` (bounds memory): one chunk of them, or ``serve_workers`` chunks of
        ``chunk_users / serve_workers`` served side by side.
    serve_workers:
        Chunks of users that ``recommend`` serves side by side on threads (their numpy, polars, FAISS and
        compiled-tree work releases the GIL); each chunk's feature blocks then get ``1 / serve_workers`` of the
        feature threads. None: 2 where :func:`~recsys.features.ranking.feature_threads` allows 2 or more, else 1.
        A call with fewer users than ``serve_workers * MIN_PARALLEL_CHUNK_USERS`` (within one chunk) runs as one
        chunk. The lists do not depend on it. Why: the stages between the feature blocks (candidate merging,
        top-k, the query-relative block) leave a core idle; two chunks at once fill it. Measured on 2 cores
        (the saved seed-0 models, stored states, every user, three paired alternations): unisrec 5.2-5.9 s ->
        4.4-4.8 s per call, ml-100k 0.76-0.91 -> 0.64-0.70 s.
    cascade_top:
        Serving with a fold-ranker ensemble (``ranker_ensemble``): the first member scores every candidate and
        the whole ensemble only each user's best ``cascade_top`` by it (at least ``k``), see
        :meth:`~recsys.models.ranker.RankerEnsemble.score_top`. None: every member scores every candidate.
        ``recommend`` only: ``score`` always returns the whole ensemble's score. It may be changed on a loaded
        model (``dataclasses.replace(model.config, cascade_top=None)``), or per batch job
        (``BatchConfig.cascade_top``, ``recsys recommend --cascade-top``). Default 50: the throughput suite
        (0c8a7af, seed-0 models, stored states, test targets) served 1.26-1.42x the users/s of the plain
        ensemble on ml-100k, ml-latest-small and both Scientific sets, with NDCG@10 and Recall@10 unchanged to
        four decimals on three of them and +0.0001 on unisrec; 25 lost on ml-latest-small (0.0942 against
        0.0954).
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
    n_popularity_candidates: int = 20
    n_cooccurrence_candidates: int = 0
    n_ease_candidates: int = 0
    n_similar_candidates: int = 0
    n_lexical_candidates: int = 0
    n_cutoffs: int = 5
    cutoff_statistics: Literal["shared", "per_cutoff"] = "per_cutoff"
    label_window: int = 1
    train_with_seen: bool = False
    max_ranker_users: int | None = 10_000
    memory_holdout: int | None = None
    memory_crossfit: int = 2
    crossfit_by: Literal["users", "time"] = "users"
    valid_fraction: float = 0.1
    ranker_folds: int | None = None
    ranker_ensemble: bool = True
    chunk_users: int = 2048
    serve_workers: int | None = None
    cascade_top: int | None = 50
    seed: int = 0
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name, low in _MINIMUMS.items():  # None is allowed where the field is optional
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"RecommenderConfig.{name}={value} must be >= {low}.")
        if self.memory_crossfit == 1 or self.memory_crossfit < 0:
            raise ConfigError(f"RecommenderConfig.memory_crossfit={self.memory_crossfit} must be 0 (off) or >= 2.")
        for source, (field_name, group) in SOURCE_GROUPS.items():
            if getattr(self, field_name) and group not in self.features.groups:
                raise ConfigError(
                    f"{source} candidates need the {group!r} feature group; add it to FeatureConfig.groups "
                    f"or set {field_name}=0."
                )
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                use = " or ".join(repr(c) for c in choices)
                raise ConfigError(f"RecommenderConfig.{name}={getattr(self, name)!r}; use {use}.")
        if self.ranker_folds is not None and (self.ranker_folds == 1 or self.ranker_folds < 0):
            raise ConfigError(f"RecommenderConfig.ranker_folds={self.ranker_folds} must be 0 (off) or >= 2.")
        if not 0 <= self.valid_fraction < 1:
            raise ConfigError(f"RecommenderConfig.valid_fraction={self.valid_fraction} must be in [0, 1).")


def _memory_encoder_class() -> type[MemoryEncoder]:
    """:class:`~recsys.models.memory_encoder.MemoryEncoder`, imported (with torch) only where one is trained."""
    from recsys.models.memory_encoder import MemoryEncoder

    return MemoryEncoder


class SavedMemoryEncoder:
    """A loaded model's memory encoder, built from its saved arrays on first use.

    Serving users from the memory states stored at fit time reads no encoder, so a batch job that only does that
    never imports torch (about 0.8 s of its start-up). Any attribute of
    :class:`~recsys.models.memory_encoder.MemoryEncoder` (``encode``, ``update``, ``project_texts``...) builds
    the encoder once and is answered by it.
    """

    def __init__(self, config: MemoryEncoderConfig, arrays: dict[str, np.ndarray]) -> None:
        self.config = config
        self._arrays: dict[str, np.ndarray] | None = arrays
        self._encoder: MemoryEncoder | None = None
        self._lock = threading.Lock()

    @property
    def encoder(self) -> MemoryEncoder:
        """The built encoder (built now if it was not yet)."""
        if self._encoder is None:
            with self._lock:  # chunks served side by side may ask at once: build once
                if self._encoder is None:
                    arrays = cast(dict[str, np.ndarray], self._arrays)
                    self._encoder = _memory_encoder_class().from_arrays(self.config, arrays)
                    self._arrays = None  # the encoder holds its own tensors
        return self._encoder

    @property
    def built(self) -> bool:
        """Whether the encoder has been built (torch imported)."""
        return self._encoder is not None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_arrays", "_encoder", "config"):
            raise AttributeError(name)  # copy and pickle probe these before __init__ ran
        return getattr(self.encoder, name)


@dataclass(frozen=True)
class Retrieval:
    """Where interest-match candidates come from: a user encoder, the item vectors in its space, their index."""

    encoder: ZeroShotUserEncoder | MemoryEncoder | SavedMemoryEncoder
    item_vectors: np.ndarray
    index: FaissIndex


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


def merge_sources(sources: dict[str, np.ndarray], n_items: int) -> pl.DataFrame:
    """Union of the sources' candidates (each an int ``(n_queries, k)`` top list, ``-1`` padding), one row per
    (query, item) in order of first appearance, with one rank column per source (named by its key): the
    list length + 1 where the source did not propose the item.

    Up to :data:`~recsys._topk.MERGE_MAX_ITEMS` items by :func:`~recsys._topk.merge_top_lists` (lookups in a
    dense table), above by a polars ``group_by`` over the stacked long frames; the same frame either way
    (unisrec, 8,442 users, 2.3 million candidates: 0.43 -> 0.12 s)."""
    if n_items <= MERGE_MAX_ITEMS:
        query, item, ranks = merge_top_lists(list(sources.values()), n_items)
        columns = {QUERY: pl.Series(query, dtype=pl.UInt32), ITEM_IDX: pl.Series(item, dtype=pl.UInt32)}
        columns |= {name: pl.Series(r, dtype=pl.UInt32) for name, r in zip(sources, ranks, strict=True)}
        return pl.DataFrame(columns)
    frames = [source_frame(idx, name) for name, idx in sources.items()]
    merged = (
        pl.concat(frames, how="diagonal")
        .group_by(QUERY, ITEM_IDX, maintain_order=True)
        .agg(pl.col(name).min() for name in sources)
    )
    return merged.with_columns(pl.col(name).fill_null(idx.shape[1] + 1) for name, idx in sources.items())


def pair_dot(
    queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_threads: int | None = None
) -> np.ndarray:
    """float32 ``(n_pairs,)``: ``queries[rows] . vectors[cols]``, in blocks to bound memory, the blocks spread
    over ``n_threads`` threads (:func:`~recsys.features.ranking.thread_map`; numpy's gathers and
    ``einsum`` release the GIL). Each block is computed the same way on any thread, so the result does not
    depend on ``n_threads``."""
    out = np.empty(len(rows), dtype=np.float32)
    block = PAIR_BLOCK

    def fill(start: int) -> None:
        r, c = rows[start : start + block], cols[start : start + block]
        out[start : start + block] = np.einsum("nd,nd->n", queries[r], vectors[c])  # (block,)

    thread_map(fill, range(0, len(rows), block), n_threads)
    return out


def training_queries(
    interactions: pl.DataFrame, n_cutoffs: int, max_users: int | None = None, seed: int = 0, label_window: int = 1
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Time-respecting ranker queries.

    For each user and each of the last ``n_cutoffs`` events that has at least one earlier event, one
    query: the label is that event's item, the history every event before it. With ``max_users``, only the
    queries of a seeded random sample of that many users are made (``past`` still holds every user's events).
    With ``label_window > 1``, ``labels`` also lists in ``later`` the items of the next ``label_window - 1``
    events after the label event (secondary positives; the history never holds them either).

    Returns
    -------
    (past, history, labels):
        ``past``: the events before every cut-off (for feature statistics); ``history``: events with
        ``user_id`` replaced by the query key; ``labels``: ``user_id`` (the query key), ``item_id``,
        ``owner`` (the real user), ``cutoff`` (``c``: the label is the owner's ``c``-th last event) and
        ``later`` (list of item ids) when ``label_window > 1``.
    """
    past = before_cutoff(interactions, n_cutoffs)
    df = interactions.with_columns(_pos=pl.int_range(pl.len()).over(USER_ID), _len=_events_of_user())
    if max_users is not None and df[USER_ID].n_unique() > max_users:
        sample = df[USER_ID].unique().sort().sample(max_users, seed=seed)
        df = df.filter(pl.col(USER_ID).is_in(sample.implode()))
    histories, labels = [], []
    for c in range(1, n_cutoffs + 1):
        key = pl.concat_str([pl.col(USER_ID).cast(pl.String), pl.lit(f"#{c}")]).alias(USER_ID)
        cut = pl.col("_len") - c
        label = df.filter((pl.col("_pos") == cut) & (cut >= 1)).select(
            key, ITEM_ID, pl.col(USER_ID).alias("owner"), cutoff=pl.lit(c, pl.Int32)
        )
        if label_window > 1:
            soon = (pl.col("_pos") > cut) & (pl.col("_pos") < cut + label_window) & (cut >= 1)
            later = df.filter(soon).group_by(key, maintain_order=True).agg(pl.col(ITEM_ID).alias("later"))
            label = label.join(later, on=USER_ID, how="left", maintain_order="left")
        labels.append(label)
        histories.append(df.filter(pl.col("_pos") < cut).with_columns(key))
    history = pl.concat(histories).drop("_pos", "_len")
    return past, history, pl.concat(labels)


def before_cutoff(events: pl.DataFrame, c: int) -> pl.DataFrame:
    """Every user's events but their last ``c`` (events sorted by user, then time, as fitted): none of a user
    with ``c`` events or fewer."""
    return events.filter(pl.int_range(pl.len()).over(USER_ID) < _events_of_user() - c)


def _events_of_user() -> pl.Expr:
    """Each event's user's event count, signed: ``pl.len()`` is UInt32, so ``pl.len() - c`` wraps round for a
    user with fewer than ``c`` events (and kept every event of such users, label events included)."""
    return pl.len().over(USER_ID).cast(pl.Int64)


def _with_positive(frame: pl.DataFrame) -> pl.DataFrame:
    """The queries of a training frame that hold at least one positive label."""
    positive = frame.group_by(QUERY).agg(pl.col("label").max()).filter(pl.col("label") > 0)
    return frame.join(positive, on=QUERY, how="semi")


def _next_only(frame: pl.DataFrame, top: int) -> pl.DataFrame:
    """Validation labels: 1 for the next item (label ``top``), else 0; queries whose next item is a candidate."""
    return _with_positive(frame.with_columns((pl.col("label") == top).cast(pl.Int32)))


class Recommender:
    """Text-memory recommender: fit on interactions and item texts, recommend catalogue items.

    Attributes (after ``fit``)
    --------------------------
    items_: the catalogue (``item_id, text, ...``); ``index_``: ``item_id -> item_idx``;
    text_vectors_: float32 ``(n_items, text_dim)`` item text embeddings; item_vectors_: float32
    ``(n_items, dim)`` vectors in FAISS (the text vectors, or the memory encoder's item vectors);
    vector_index_: FAISS index; popularity_: float32 ``(n_items,)`` events per item; features_: fitted
    feature blocks (on all fitted events); ranker_: LightGBM LambdaRank (one ranker, or the mean of the
    cross-validation folds' rankers: ``ranker_ensemble``); interactions_: the fitted events;
    folds_: the cross-fitted retrieval stages that scored the ranker's training queries (``memory_crossfit``;
    empty otherwise, and after ``load`` or ``update``); states_: the memory encoder's
    :class:`~recsys.models.memory_encoder.MemoryStates` of every fitted user (``None`` for zero-shot models, whose
    user vector is a cheap mean): the query vectors of fitted users served from their fitted events, and the
    starting point of :meth:`update`.
    """

    items_: pl.DataFrame | None = None
    index_: pl.DataFrame | None = None
    text_vectors_: np.ndarray | None = None
    item_vectors_: np.ndarray | None = None
    user_encoder_: ZeroShotUserEncoder | MemoryEncoder | SavedMemoryEncoder | None = None
    vector_index_: FaissIndex | None = None
    popularity_: np.ndarray | None = None
    folds_: dict[int, Retrieval] | None = None  # cross-fitted encoders for ranker training ({} when off)
    features_: RankingFeatures | None = None
    ranker_: LambdaRanker | RankerEnsemble | None = None
    interactions_: pl.DataFrame | None = None
    states_: MemoryStates | None = None  # optional: None for zero-shot models (see REQUIRED_STATE)

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()

    # ----------------------------------------------------------------------------------------- fit
    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame, valid: pl.DataFrame | None = None) -> Recommender:
        """Embed item texts, index them, and train the ranker on time-respecting cut-offs.

        ``interactions`` and ``items`` follow the data contract (see :class:`recsys.data.Dataset`). ``valid``:
        later events (a validation split), appended to ``interactions``: every stage holds out its own
        cut-offs, so they become the newest training labels.
        """
        if valid is not None:
            interactions = _append_events(interactions, valid)
        self.states_ = None  # fitting twice equals fitting once
        self.items_ = items
        self.index_ = item_index(items)
        self.text_vectors_ = ItemTextEncoder(self.config.text).encode(items[TEXT].to_list())
        folds: dict[int, Retrieval] = {}
        if self.config.user_encoder == "memory" and self.config.memory_crossfit:
            folds = self._crossfit_memory(interactions, self.text_vectors_)
            self.user_encoder_ = _memory_encoder_class()(self.config.memory).fit(
                self._histories_of(interactions), self.text_vectors_
            )
            self.item_vectors_ = self.user_encoder_.item_vectors()
        elif self.config.user_encoder == "memory":
            self.user_encoder_ = self._fit_memory(interactions, self.text_vectors_)
            self.item_vectors_ = self.user_encoder_.item_vectors()
        else:
            self.item_vectors_ = self.text_vectors_
            self.user_encoder_ = ZeroShotUserEncoder(self.config.user).fit(self.item_vectors_)
        self.vector_index_ = FaissIndex(self.config.index).fit(self.item_vectors_)
        self.folds_ = folds
        self.popularity_ = item_popularity(interactions, self.index_)
        self._fit_ranking(interactions)
        self.interactions_ = interactions
        if self._has_memory():
            self.states_ = self.user_encoder_.states(self._histories_of(interactions))  # type: ignore[union-attr]
        return self

    def _has_memory(self) -> bool:
        """Whether the user encoder is a memory encoder (trained here or loaded), without importing torch."""
        return self.user_encoder_ is not None and not isinstance(self.user_encoder_, ZeroShotUserEncoder)

    def _fit_ranking(self, interactions: pl.DataFrame) -> None:
        """The ranker on time-respecting cut-offs, then the feature blocks on every event (for serving)."""
        cfg = self.config
        queries = training_queries(interactions, cfg.n_cutoffs, cfg.max_ranker_users, cfg.seed, cfg.label_window)
        self.ranker_ = self._fit_ranker(*queries, events=interactions)
        self.features_ = self._new_features().fit(self._context(interactions))

    def _new_features(self) -> RankingFeatures:
        """Unfitted feature blocks of this config, reading the optional source columns that are on."""
        return RankingFeatures(self.config.features, self._optional_sources())

    def _optional_sources(self) -> tuple[str, ...]:
        return tuple(c for c, n in self._optional_lengths().items() if n)

    def _optional_lengths(self) -> dict[str, int]:
        """Each optional candidate source's rank column and list length (0: off)."""
        cfg = self.config
        return {
            COOCCURRENCE_RANK: cfg.n_cooccurrence_candidates,
            EASE_RANK: cfg.n_ease_candidates,
            SIMILAR_RANK: cfg.n_similar_candidates,
            LEXICAL_RANK: cfg.n_lexical_candidates,
        }

    def _source_lengths(self) -> dict[str, int]:
        """Each candidate source's rank column and list length (a rank of length + 1: not proposed)."""
        cfg = self.config
        lengths = {
            RETRIEVAL_RANK: min(cfg.n_candidates, self.index_.height),  # type: ignore[union-attr]
            TRANSITION_RANK: cfg.n_transition_candidates,
            POPULARITY_RANK: cfg.n_popularity_candidates,
        }
        return lengths | {c: n for c, n in self._optional_lengths().items() if n}

    def with_features(
        self, features: FeatureConfig | None = None, ranker: RankerConfig | None = None, **ranking: Any
    ) -> Recommender:
        """A new recommender sharing this one's text vectors, user encoder, cross-fitting folds and FAISS index,
        with its ranker retrained on ``features`` and ``ranker`` settings (each: this one's when None) and the
        ranking-stage settings in ``ranking`` (:func:`ranking_settings`, for example
        ``n_cooccurrence_candidates=100``). For feature ablations, ranker settings and candidate quotas compared
        without retraining the encoder. Another ``memory_crossfit`` (at least 2) trains new fold encoders for the
        ranker's training queries; the serving encoder stays.

        Raises
        ------
        ConfigError
            ``ranking`` names a setting that the encoder or the index depends on, or an invalid value; or this
            model was loaded and its encoder is cross-fitted (``memory_crossfit``): the fold encoders that score
            the ranker's training queries out of sample are not saved, so retraining the ranker needs the model
            that ``fit`` returned."""
        check_is_fitted(self, REQUIRED_STATE)
        if self.config.user_encoder == "memory" and self.config.memory_crossfit and not self.folds_:
            raise ConfigError(
                "with_features needs the cross-fitted fold encoders (memory_crossfit="
                f"{self.config.memory_crossfit}), which a loaded model lacks; call it on the fitted model, or fit "
                "a new Recommender with the new settings."
            )
        allowed = ranking_settings(self.config)
        other = sorted(set(ranking) - set(allowed))
        if other:
            raise ConfigError(
                f"with_features cannot change {other}: the encoder or the index depends on them. It changes "
                f"{list(allowed)}; fit a new Recommender for the others."
            )
        if ranking.get("memory_crossfit") == 0:  # (a model fitted without cross-fitting cannot name it at all)
            raise ConfigError(
                "with_features cannot turn cross-fitting off (memory_crossfit=0): the encoder would then hold out "
                "the last events; fit a new Recommender for that."
            )
        twin = copy.copy(self)
        twin.config = dataclasses.replace(
            self.config, features=features or self.config.features, ranker=ranker or self.config.ranker, **ranking
        )
        folds = ("memory_crossfit", "crossfit_by", *(("n_cutoffs",) if twin.config.crossfit_by == "time" else ()))
        if any(getattr(twin.config, k) != getattr(self.config, k) for k in folds):  # new folds: their own encoders
            twin.folds_ = twin._crossfit_memory(self.interactions_, self.text_vectors_)  # type: ignore[arg-type]
        twin._fit_ranking(self.interactions_)  # type: ignore[arg-type]
        return twin

    def _context(self, events: pl.DataFrame) -> FitContext:
        """What the feature blocks learn from: ``events``, the catalogue, its text vectors and, for the memory
        encoder, its item vectors (the ``learned`` group's space)."""
        learned = self.item_vectors_ if self._has_memory() else None
        return FitContext(self._histories_of(events), self.items_, self.text_vectors_, learned)  # type: ignore[arg-type]

    def _histories_of(self, events: pl.DataFrame) -> Histories:
        return Histories.from_interactions(events, self.index_)  # type: ignore[arg-type]

    def _fold(self, users: pl.Expr) -> pl.Expr:
        """The cross-fitting fold of each user (a seeded hash, so it is stable across calls; 0 across time)."""
        if self.config.crossfit_by == "time":
            return pl.lit(0, pl.Int64)
        return (users.hash(self.config.seed + 1) % self.config.memory_crossfit).cast(pl.Int64)

    def _crossfit_memory(self, interactions: pl.DataFrame, text_vectors: np.ndarray) -> dict[int, Retrieval]:
        """One encoder per fold, trained on the other folds' users (all their events); across time, one encoder
        trained on the events before the cut-offs."""
        if self.config.crossfit_by == "time":
            encoder = self._fit_memory(interactions, text_vectors)
            vectors = encoder.item_vectors()
            return {0: Retrieval(encoder, vectors, FaissIndex(self.config.index).fit(vectors))}
        folds = {}
        for f in range(self.config.memory_crossfit):
            others = interactions.filter(self._fold(pl.col(USER_ID)) != f)
            encoder = _memory_encoder_class()(self.config.memory).fit(self._histories_of(others), text_vectors)
            vectors = encoder.item_vectors()
            folds[f] = Retrieval(encoder, vectors, FaissIndex(self.config.index).fit(vectors))
        return folds

    def _fit_memory(self, interactions: pl.DataFrame, text_vectors: np.ndarray) -> MemoryEncoder:
        """Train the memory encoder on the events before the ranker's cut-offs, early-stopped on the first."""
        holdout = self.config.memory_holdout or self.config.n_cutoffs
        past = before_cutoff(interactions, holdout)  # (not every query of training_queries: only its past)
        cut = _events_of_user() - holdout  # the first held-out event of each user
        first_cut = interactions.filter((pl.int_range(pl.len()).over(USER_ID) == cut) & (cut >= 1))
        histories = self._histories_of(past)
        valid = Histories.from_interactions(first_cut, self.index_, histories.user_ids)  # type: ignore[arg-type]
        return _memory_encoder_class()(self.config.memory).fit(histories, text_vectors, valid)

    def _fit_ranker(
        self, past: pl.DataFrame, history: pl.DataFrame, labels: pl.DataFrame, events: pl.DataFrame | None = None
    ) -> LambdaRanker | RankerEnsemble:
        cfg = self.config
        frame, names, top = self._ranker_frame(past, history, labels, events)
        folds = cfg.ranker_folds
        if folds is None:  # auto: cross-validate where a hold-out would be small
            folds = AUTO_RANKER_FOLDS if frame[QUERY].n_unique() < AUTO_FOLDS_BELOW_QUERIES else 0
        if folds < 2:
            train, valid = self._split_valid(frame, top)
            return self._ranker(cfg.ranker).fit(train, valid, names)
        fold = pl.col("owner").hash(cfg.seed) % folds
        rankers = []
        for f in range(folds):  # each fold's users early-stop a ranker trained on the others
            held_out = _next_only(frame.filter(fold == f), top)
            if held_out.height == 0:  # a fold without users (tiny data): nothing to stop on, no member
                continue
            rankers.append(self._ranker(cfg.ranker).fit(frame.filter(fold != f), held_out, names))
        rounds = [r.n_trees for r in rankers]
        if cfg.ranker_ensemble:
            logger.info("ranker: the mean of %d fold rankers (best rounds %s)", len(rounds), rounds)
            return RankerEnsemble(rankers)
        n_trees = max(1, round(float(np.mean(rounds))))
        logger.info("ranker: %d-fold best rounds %s; final ranker: every query, %d trees", len(rounds), rounds, n_trees)
        return self._ranker(dataclasses.replace(cfg.ranker, n_estimators=n_trees)).fit(frame, None, names)

    def _ranker(self, config: RankerConfig) -> LambdaRanker:
        """A new, unfitted ranker stage; a subclass may train it elsewhere (``recsys.distributed``: on Dask)."""
        return LambdaRanker(config)

    def _ranker_frame(
        self, past: pl.DataFrame, history: pl.DataFrame, labels: pl.DataFrame, events: pl.DataFrame | None = None
    ) -> tuple[pl.DataFrame, list[str], int]:
        """The training frame's queries that hold a positive, the feature names, and the next item's label."""
        frame, names = self._training_frame(past, history, labels, events)
        return _with_positive(frame), names, 2 if "later" in labels.columns else 1

    def _ranker_frames(
        self, past: pl.DataFrame, history: pl.DataFrame, labels: pl.DataFrame, events: pl.DataFrame | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
        """The ranker's ``(train, valid, feature names)``: the queries that hold a positive, split by a seeded
        hash of the user (``valid_fraction``). Validation labels mark the next item alone."""
        frame, names, top = self._ranker_frame(past, history, labels, events)
        return (*self._split_valid(frame, top), names)

    def _split_valid(self, frame: pl.DataFrame, top: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        in_valid = (pl.col("owner").hash(self.config.seed) % 1000) < int(1000 * self.config.valid_fraction)
        return frame.filter(~in_valid), _next_only(frame.filter(in_valid), top)

    def training_frame(self, interactions: pl.DataFrame) -> pl.DataFrame:
        """The ranker's training data for ``interactions`` with the fitted retrieval stage: one row per
        (query, candidate) with ``query``, ``owner`` (the user), ``item_id``, every feature and ``label``
        (1 = the held-out event). For inspection and leakage checks."""
        check_is_fitted(self, REQUIRED_STATE)
        cfg = self.config
        queries = training_queries(interactions, cfg.n_cutoffs, cfg.max_ranker_users, cfg.seed, cfg.label_window)
        return self._training_frame(*queries, events=interactions)[0]

    def _training_frame(
        self, past: pl.DataFrame, history: pl.DataFrame, labels: pl.DataFrame, events: pl.DataFrame | None = None
    ) -> tuple[pl.DataFrame, list[str]]:
        """Candidates, features and labels of the training queries. The queries are taken in groups (cut-off,
        when ``cutoff_statistics="per_cutoff"`` and ``events`` holds every fitted event; cross-fitting fold),
        each with its statistics and its fold's encoder; ``QUERY`` numbers them in that order."""
        if labels.height == 0:
            raise DataError("no user has two or more events; the ranker needs at least one earlier event per label.")
        per_cutoff = events is not None and self.config.cutoff_statistics == "per_cutoff"
        labels = labels.with_columns(
            _cut=pl.col("cutoff") if per_cutoff else pl.lit(0),
            _fold=self._fold(pl.col("owner")) if self.folds_ else pl.lit(0),
        ).sort("_cut", "_fold", maintain_order=True)
        parts, offset = [], 0
        for (cut,), queries in labels.group_by("_cut", maintain_order=True):
            source = past if not per_cutoff else before_cutoff(events, int(cut))  # type: ignore[arg-type]
            part, names = self._cutoff_frame(source, history, queries)
            parts.append(part.with_columns(pl.col(QUERY) + offset))
            offset += queries.height
        frame = pl.concat(parts)
        labels = labels.drop("_cut", "_fold").with_row_index(QUERY)
        top = 2 if "later" in labels.columns else 1  # the next item outranks the later ones
        gains = labels.select(QUERY, ITEM_ID, label=pl.lit(top, pl.Int32))
        if top == 2:
            later = labels.select(QUERY, pl.col("later").alias(ITEM_ID)).explode(ITEM_ID).drop_nulls()
            gains = pl.concat([gains, later.with_columns(label=pl.lit(1, pl.Int32))])
            gains = gains.group_by(QUERY, ITEM_ID).agg(pl.col("label").max())
        frame = frame.join(gains, on=[QUERY, ITEM_ID], how="left", maintain_order="left")
        frame = frame.with_columns(pl.col("label").fill_null(0)).join(
            labels.select(QUERY, "owner"), on=QUERY, how="left", maintain_order="left"
        )
        hits = frame.group_by(QUERY).agg(pl.col("label").max() == top)["label"].sum()
        logger.info("ranker training: %d queries, candidate recall %.3f", labels.height, hits / labels.height)
        return frame, names

    def _cutoff_frame(
        self, source: pl.DataFrame, history: pl.DataFrame, queries: pl.DataFrame
    ) -> tuple[pl.DataFrame, list[str]]:
        """Candidates and features of one group of training ``queries`` (sorted by ``_fold``), with statistics
        fitted on ``source``; ``QUERY`` is the position in ``queries``. The statistics (at scale, gigabytes) are
        freed when it returns, before the next cut-off's are fitted."""
        features = self._new_features().fit(self._context(source))
        popularity = item_popularity(source, self.index_)  # type: ignore[arg-type]
        parts, offset = [], 0
        for (fold,), group in queries.group_by("_fold", maintain_order=True):
            retrieval = self.folds_.get(int(fold)) if self.folds_ else None  # type: ignore[call-overload]
            mine = features.with_learned_vectors(retrieval.item_vectors) if retrieval else features
            exclude_seen = not self.config.train_with_seen
            part, _ = self._candidate_features(history, group[USER_ID], mine, exclude_seen, 0, popularity, retrieval)
            parts.append(part.with_columns(pl.col(QUERY) + offset))
            offset += group.height
        return pl.concat(parts), features.feature_names

    # ---------------------------------------------------------------------------------- candidates
    def _histories(self, users: pl.Series, history: pl.DataFrame | None) -> Histories:
        source = history if history is not None else self.interactions_
        source = source.filter(pl.col(USER_ID).is_in(users.implode()))  # type: ignore[union-attr]
        return Histories.from_interactions(source, self.index_, users)  # type: ignore[arg-type]

    def _stored_queries(self, users: pl.Series, history: pl.DataFrame | None) -> np.ndarray | None:
        """float32 ``(len(users), dim)``: the stored memory-state vectors of ``users`` when they are served from the
        fitted events (no inline ``history``); None (encode the histories) otherwise and for zero-shot models.
        They equal encoding the fitted histories again (to float tolerance) without reading them."""
        if history is not None or self.states_ is None:
            return None
        return stored_queries(self.states_, users)

    def _checked_history(self, history: pl.DataFrame | None) -> pl.DataFrame | None:
        """A caller's inline ``history`` with integer id columns cast to the fitted integer dtypes; ids of another
        kind (strings for integers, ...) are a :class:`SchemaError`. None stays None."""
        if history is None:
            return None
        for column in (USER_ID, ITEM_ID):
            if column not in history.columns:
                raise SchemaError(
                    f"history lacks column {column!r}; pass interactions with user_id, item_id, timestamp."
                )
            fitted = (self.interactions_ if column == USER_ID else self.index_).schema[column]  # type: ignore[union-attr]
            given = history.schema[column]
            if given != fitted and not (given.is_integer() and fitted.is_integer()):
                raise SchemaError(
                    f"history column {column!r} has dtype {given}; the model was fitted with {fitted}. Cast it."
                )
            if given != fitted:
                try:
                    history = history.with_columns(pl.col(column).cast(fitted, strict=True))
                except Exception as err:
                    raise SchemaError(f"history column {column!r} has ids outside {fitted}.") from err
        return history

    def _candidates(
        self,
        histories: Histories,
        features: RankingFeatures,
        exclude_seen: bool,
        k: int = 0,
        popularity: np.ndarray | None = None,
        retrieval: Retrieval | None = None,
        queries: np.ndarray | None = None,
    ) -> tuple[pl.DataFrame, np.ndarray, sp.csr_matrix | None]:
        """Merged candidates ``query, item_idx, retrieval_score`` and one rank column per source, plus the
        query vectors ``(n_queries, dim)`` and the transition scores csr ``(n_queries, n_items)`` when the
        transition source ran (None otherwise; ``features.transform`` reuses them). ``popularity`` (default
        ``popularity_``) must come from the same past events as ``features``; ``retrieval`` defaults to the
        fitted encoder and index; ``queries`` (default: encode ``histories``) are precomputed query vectors (see
        :meth:`_stored_queries`)."""
        popularity = cast(np.ndarray, self.popularity_ if popularity is None else popularity)
        retrieval = retrieval or Retrieval(self.user_encoder_, self.item_vectors_, self.vector_index_)  # type: ignore[arg-type]
        if queries is None:
            queries = retrieval.encoder.encode(histories)  # (n_queries, dim)
        n_candidates = min(max(self.config.n_candidates, k), self.index_.height)  # type: ignore[union-attr]
        exclude = histories if exclude_seen else None
        idx, _ = retrieval.index.search(queries, n_candidates, exclude=exclude)
        cold = np.flatnonzero(histories.lengths == 0)  # no query vector: popular items instead
        if len(cold):
            idx[cold] = self._popular(popularity, histories.select(cold), n_candidates, exclude_seen)
        sources = {RETRIEVAL_RANK: idx}
        transition_scores = None
        if self.config.n_transition_candidates and features.transitions is not None:
            transition_scores = features.transitions.score_sparse(histories)  # csr (n_queries, n_items)
            # items without transition evidence (score 0) are not candidates
            sources[TRANSITION_RANK] = topk_positive(transition_scores, self.config.n_transition_candidates, exclude)
        if self.config.n_popularity_candidates:
            sources[POPULARITY_RANK] = self._popular(
                popularity, histories, self.config.n_popularity_candidates, exclude_seen
            )
        sources |= self._optional_candidates(histories, features, exclude)
        frame = merge_sources(sources, self.index_.height)  # type: ignore[union-attr]
        for name in (TRANSITION_RANK, POPULARITY_RANK):
            if name not in frame.columns:
                frame = frame.with_columns(pl.lit(1, pl.UInt32).alias(name))  # source off: rank 0 + 1
        score = pair_dot(queries, retrieval.item_vectors, frame[QUERY].to_numpy(), frame[ITEM_IDX].to_numpy())
        return frame.with_columns(pl.Series(RETRIEVAL_SCORE, score)), queries, transition_scores

    def _optional_candidates(
        self, histories: Histories, features: RankingFeatures, exclude: Histories | None
    ) -> dict[str, np.ndarray]:
        """The optional sources that are on, each an int64 ``(n_queries, quota)`` top list (-1 pads) by its rank
        column: co-occurrence, EASE, similar text, similar words."""
        cfg, sources = self.config, {}
        if cfg.n_cooccurrence_candidates and features.cooccurrence is not None:
            scores = features.cooccurrence.score_sparse(histories)  # csr (n_queries, n_items): cooc_score
            sources[COOCCURRENCE_RANK] = topk_positive(scores, cfg.n_cooccurrence_candidates, exclude)
        if cfg.n_ease_candidates and features.collaborative is not None:
            sources[EASE_RANK] = features.collaborative.top_items(histories, cfg.n_ease_candidates, exclude)
        if cfg.n_similar_candidates and features.similarity is not None:
            sources[SIMILAR_RANK] = features.similarity.top_items(histories, cfg.n_similar_candidates, exclude)
        if cfg.n_lexical_candidates and features.lexical is not None:
            sources[LEXICAL_RANK] = features.lexical.top_items(histories, cfg.n_lexical_candidates, exclude)
        return sources

    @staticmethod
    def _popular(popularity: np.ndarray, histories: Histories, n: int, exclude_seen: bool) -> np.ndarray:
        """int64 ``(n_queries, n)``: the most popular items, history items skipped when ``exclude_seen``
        (-1 pads where the catalogue runs out)."""
        order = np.argsort(-np.asarray(popularity, np.float32), kind="stable")  # ties: lower index first
        return topk_ranked(order, n, histories if exclude_seen else None, histories.n_users)

    def _candidate_features(
        self,
        history: pl.DataFrame | None,
        users: pl.Series,
        features: RankingFeatures,
        exclude_seen: bool,
        k: int = 0,
        popularity: np.ndarray | None = None,
        retrieval: Retrieval | None = None,
        n_threads: int | None = None,
    ) -> tuple[pl.DataFrame, Histories]:
        """Candidates (at least ``k`` per user where the catalogue allows) with features for ``users``, and
        their histories; ``query`` is the position in ``users``; ``n_threads``: the feature blocks' threads
        (default :func:`~recsys.features.ranking.feature_threads`)."""
        histories = self._histories(users, history)
        queries = self._stored_queries(users, history) if retrieval is None else None
        frame, _, transition_scores = self._candidates(
            histories, features, exclude_seen, k, popularity, retrieval, queries
        )
        frame = features.transform(frame, histories, n_threads, transition_scores=transition_scores)
        item_ids = self.index_.select(ITEM_IDX, ITEM_ID)  # type: ignore[union-attr]
        return frame.join(item_ids, on=ITEM_IDX, how="left", maintain_order="left"), histories

    def candidates(
        self, users: pl.Series | Sequence[Any] | None = None, *, history: pl.DataFrame | None = None
    ) -> pl.DataFrame:
        """The candidate set the ranker orders: ``user_id, item_id, retrieval_score`` and each source's rank
        (the list length + 1 where that source did not propose the item). History items are excluded."""
        check_is_fitted(self, REQUIRED_STATE)
        users = self._user_series(users)
        history = self._checked_history(history)
        histories = self._histories(users, history)
        queries = self._stored_queries(users, history)
        frame, _, _ = self._candidates(histories, self.features_, exclude_seen=True, queries=queries)  # type: ignore[arg-type]
        return self._with_ids(frame, users).select(USER_ID, ITEM_ID, RETRIEVAL_SCORE, *self._source_lengths())

    def _with_ids(self, frame: pl.DataFrame, users: pl.Series) -> pl.DataFrame:
        """``frame`` (rows keyed by ``query``, the position in ``users``, and ``item_idx``) with ``user_id`` and
        ``item_id`` joined on, row order kept."""
        owners = pl.DataFrame({USER_ID: users}).with_row_index(QUERY)
        item_ids = self.index_.select(ITEM_IDX, ITEM_ID)  # type: ignore[union-attr]
        frame = frame.join(owners, on=QUERY, how="left", maintain_order="left")
        return frame.join(item_ids, on=ITEM_IDX, how="left", maintain_order="left")

    def recommend(
        self,
        users: pl.Series | Sequence[Any] | None = None,
        k: int = 10,
        *,
        history: pl.DataFrame | None = None,
        exclude_seen: bool = True,
        explain: bool = False,
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
        explain:
            Add ``because_ids`` (the history items most similar to the recommendation), ``because`` (their
            texts) and ``reasons`` (the ranker features that pushed it up most, in words; see
            :mod:`recsys.explain`).
        """
        check_is_fitted(self, REQUIRED_STATE)
        k = check_k(k)
        users = self._user_series(users)
        history = self._checked_history(history)
        size, workers = self._serving_chunks(len(users))
        chunks = [users.slice(start, size) for start in range(0, len(users), size)] or [users]
        threads = max(1, feature_threads() // workers) if workers > 1 else None

        def serve(chunk: pl.Series) -> pl.DataFrame:
            return self._recommend_chunk(chunk, k, history, exclude_seen, explain, n_threads=threads)

        progress = {"desc": "recommend", "unit": "chunk", "total": len(chunks)}
        progress["disable"] = not self.config.show_progress or len(chunks) < 2
        if workers == 1:
            return pl.concat([serve(chunk) for chunk in tqdm(chunks, **progress)])
        with ThreadPoolExecutor(workers, thread_name_prefix="recsys-serve") as pool:
            return pl.concat(list(tqdm(pool.map(serve, chunks), **progress)))  # in the users' order

    def _serving_chunks(self, n_users: int) -> tuple[int, int]:
        """``(users per chunk, chunks served side by side)`` for a ``recommend`` call of ``n_users``: the
        ``chunk_users`` in flight split among ``serve_workers`` chunks of at least
        :data:`MIN_PARALLEL_CHUNK_USERS` users, else one chunk of ``chunk_users`` at a time."""
        cfg = self.config
        workers = cfg.serve_workers if cfg.serve_workers is not None else min(2, feature_threads())
        in_flight = min(cfg.chunk_users, max(n_users, 1))
        size = -(-in_flight // workers)  # ceil
        if workers < 2 or size < MIN_PARALLEL_CHUNK_USERS:
            return cfg.chunk_users, 1
        return size, workers

    def retrieve(
        self,
        users: pl.Series | Sequence[Any] | None = None,
        k: int = 10,
        *,
        history: pl.DataFrame | None = None,
        exclude_seen: bool = True,
    ) -> pl.DataFrame:
        """The first stage alone, no ranker: each user's ``k`` items of highest interest score (the user
        encoder's vector against the item vectors, searched in the FAISS index), as the long table ``user_id,
        item_id, score (f32), rank (u32)`` of :meth:`recommend`. Users without events get the most popular
        items, with a null score. It measures what the ranking stage adds (the quality benchmark's ``ours
        (encoder alone)`` row). Arguments as in :meth:`recommend`."""
        check_is_fitted(self, REQUIRED_STATE)
        k = check_k(k)
        users = self._user_series(users)
        history = self._checked_history(history)
        n = min(k, self.index_.height)  # type: ignore[union-attr]
        parts = []
        for start in range(0, len(users), self.config.chunk_users):
            chunk = users.slice(start, self.config.chunk_users)
            histories = self._histories(chunk, history)
            queries = self._stored_queries(chunk, history)
            if queries is None:
                queries = self.user_encoder_.encode(histories)  # type: ignore[union-attr]  # (n_chunk, dim)
            exclude = histories if exclude_seen else None
            idx, score = self.vector_index_.search(queries, n, exclude=exclude)  # type: ignore[union-attr]  # (n_chunk, n)
            cold = np.flatnonzero(histories.lengths == 0)
            if len(cold):
                idx[cold] = self._popular(self.popularity_, histories.select(cold), n, exclude_seen)  # type: ignore[arg-type]
                score[cold] = np.nan
            frame = source_frame(idx, RANK).with_columns(
                pl.Series(SCORE, score.ravel()[idx.ravel() >= 0], dtype=pl.Float32).fill_nan(None)
            )
            parts.append(self._with_ids(frame, chunk))
        if not parts:
            item_id = self.index_.schema[ITEM_ID]  # type: ignore[union-attr]
            return pl.DataFrame(schema={USER_ID: users.dtype, ITEM_ID: item_id, SCORE: pl.Float32, RANK: pl.UInt32})
        return pl.concat(parts).select(USER_ID, ITEM_ID, SCORE, RANK)

    def _serving_scores(self, frame: pl.DataFrame, k: int) -> np.ndarray:
        """The ranker's scores of a candidate frame for a top-``k`` list (``cascade_top``: two stages)."""
        top = self.config.cascade_top
        if top is not None and isinstance(self.ranker_, RankerEnsemble):
            return self.ranker_.score_top(frame, QUERY, max(top, k))
        return self.ranker_.score(frame)  # type: ignore[union-attr]

    def _user_series(self, users: pl.Series | Sequence[Any] | None) -> pl.Series:
        dtype = self.interactions_.schema[USER_ID]  # type: ignore[union-attr]
        if users is None:
            return self.interactions_[USER_ID].unique(maintain_order=True)  # type: ignore[index]
        try:
            series = users if isinstance(users, pl.Series) else pl.Series(USER_ID, list(users))
            return series.cast(dtype, strict=True).rename(USER_ID)
        except Exception as err:
            raise DataError(
                f"users {list(users[:5])!r}... cannot be read as the fitted user_id dtype {dtype}; pass ids of one "
                "type that casts to it."
            ) from err

    def _recommend_chunk(
        self,
        users: pl.Series,
        k: int,
        history: pl.DataFrame | None,
        exclude_seen: bool,
        explain: bool = False,
        n_threads: int | None = None,
    ) -> pl.DataFrame:
        frame, histories = self._candidate_features(
            history,
            users,
            self.features_,  # type: ignore[arg-type]
            exclude_seen,
            k,
            n_threads=n_threads,
        )
        frame = frame.with_columns(pl.Series(SCORE, self._serving_scores(frame, k), dtype=pl.Float32))
        if not explain:  # the feature columns are not needed any more: do not sort them along
            frame = frame.select(QUERY, ITEM_IDX, ITEM_ID, SCORE)
        top = (
            # rows among their query's k best scores, ties at the k-th included (a superset of the top k), so
            # that only they are sorted
            frame.filter(pl.col(SCORE).rank("min", descending=True).over(QUERY) <= k)
            .sort([QUERY, SCORE, ITEM_IDX], descending=[False, True, False])
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).over(QUERY).alias(RANK))
            .filter(pl.col(RANK) <= k)
        )
        columns = [USER_ID, ITEM_ID, SCORE, RANK]
        if explain:
            contributions = self.ranker_.contributions(top)  # type: ignore[union-attr]  # (n_top, n_features + 1)
            top = because_items(top, histories, self.item_vectors_, self.items_)  # type: ignore[arg-type]
            top = top.with_columns(reasons(contributions, self.ranker_.feature_names_))  # type: ignore[union-attr, arg-type]
            columns += ["because_ids", "because", "reasons"]
        owners = pl.DataFrame({USER_ID: users}).with_row_index(QUERY)
        return top.join(owners, on=QUERY, how="left", maintain_order="left").select(columns)

    def feature_importance(self) -> pl.DataFrame:
        """The trained ranker's feature importance: ``feature, group, gain, gain_share, splits, meaning``."""
        check_is_fitted(self, REQUIRED_STATE)
        return feature_importance(self.ranker_.boosters, self.features_.groups_of())  # type: ignore[union-attr]

    def score(
        self,
        candidates: pl.DataFrame,
        *,
        history: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        with_features: bool = False,
        on_unknown: Literal["raise", "null"] = "raise",
    ) -> pl.DataFrame:
        """Score a caller's own ``(user_id, item_id)`` candidates, for external ranking pipelines.

        Parameters
        ----------
        candidates:
            ``user_id, item_id`` rows (any order, duplicates allowed).
        history:
            Interactions (data contract) that give the users' histories inline, instead of the fitted events
            (as in :meth:`recommend`). Users without events there are unknown.
        items:
            ``item_id, text`` of items outside the fitted catalogue (new items, scored from their text alone).
            Items in neither are unknown.
        with_features:
            Also return every ranker feature column. Query-relative features (``*_gap``, ``*_qrank``) compare an
            item with the user's own candidates (as in :meth:`recommend`), not with the other rows passed.
        on_unknown:
            ``"raise"``: a :class:`~recsys.errors.DataError` names the unknown users and items; ``"null"``: their
            rows get null scores.

        Returns
        -------
        ``candidates`` in input order with ``interest_score`` (Float32: the user vector . item vector) and
        ``score`` (Float32: the ranker's score), plus the feature columns on request.
        """
        check_is_fitted(self, REQUIRED_STATE)
        if on_unknown not in ("raise", "null"):
            raise ConfigError(f"on_unknown={on_unknown!r}; use 'raise' or 'null'.")
        for column in (USER_ID, ITEM_ID):
            if column not in candidates.columns:
                raise DataError(f"candidates lack column {column!r}; pass user_id, item_id rows.")
        taken = [c for c in ("interest_score", SCORE) if c in candidates.columns]
        if taken:
            raise DataError(f"candidates already have column(s) {taken}, which score() adds; rename or drop them.")
        if candidates[USER_ID].null_count() and on_unknown == "raise":
            raise DataError(
                f"candidates column 'user_id' has {candidates[USER_ID].null_count()} null(s); drop them, or pass "
                "on_unknown='null' to score them null."
            )
        model = self._with_new_items(items) if items is not None else self
        item_dtype, given = model.index_.schema[ITEM_ID], candidates.schema[ITEM_ID]  # type: ignore[union-attr]
        try:
            if given != item_dtype and not (given.is_integer() and item_dtype.is_integer()):
                raise TypeError(given)
            item_ids = candidates[ITEM_ID].cast(item_dtype, strict=True)
        except Exception as err:
            raise SchemaError(
                f"candidates column 'item_id' has dtype {given}; the catalogue's is {item_dtype}. Cast it."
            ) from err
        users = self._user_series(candidates[USER_ID].unique(maintain_order=True))
        history = self._checked_history(history)
        source = history if history is not None else self.interactions_  # as in _histories
        known_users = users.filter(users.is_in(source[USER_ID].implode()))  # type: ignore[index]
        keyed = candidates.select(pl.col(USER_ID).cast(users.dtype), item_ids).with_row_index("_row")
        known = keyed.join(model.index_, on=ITEM_ID, how="left").with_columns(  # type: ignore[arg-type]
            _known_user=pl.col(USER_ID).is_in(known_users.implode())
        )
        unknown = known.filter(pl.col(ITEM_IDX).is_null() | ~pl.col("_known_user"))
        if unknown.height and on_unknown == "raise":
            bad_users = unknown.filter(~pl.col("_known_user"))[USER_ID].unique().head(5).to_list()
            bad_items = unknown.filter(pl.col(ITEM_IDX).is_null())[ITEM_ID].unique().head(5).to_list()
            raise DataError(
                f"{unknown.height} candidate row(s) have an unknown user (for example {bad_users}) or item "
                f"(for example {bad_items}). Fix: pass their events in history=, new items with text in items=, "
                "or on_unknown='null'."
            )
        rows = known.filter(pl.col(ITEM_IDX).is_not_null() & pl.col("_known_user"))
        frame = model._pair_features(rows, known_users, history)
        frame = frame.with_columns(pl.Series(SCORE, model.ranker_.score(frame), dtype=pl.Float32))  # type: ignore[union-attr]
        keep = ["_row", "interest_score", SCORE] + (list(model.ranker_.feature_names_) if with_features else [])  # type: ignore[union-attr]
        scored = frame.with_columns(interest_score=pl.col(RETRIEVAL_SCORE).cast(pl.Float32))
        out = keyed.select("_row").join(scored.select(keep), on="_row", how="left", maintain_order="left")
        return pl.concat([candidates, out.drop("_row")], how="horizontal")

    def score_items(self, pairs: pl.DataFrame, *, history: pl.DataFrame | None = None) -> pl.DataFrame:
        """``pairs`` (``user_id, item_id``) with the ranker's ``score`` (Float32), rows in input order: the
        evaluation harness's sampled-metrics protocol (see :meth:`score`). Unknown users or items score null."""
        scored = self.score(pairs.select(USER_ID, ITEM_ID), history=history, on_unknown="null")
        return pairs.with_columns(scored[SCORE])

    def _pair_features(self, rows: pl.DataFrame, users: pl.Series, history: pl.DataFrame | None) -> pl.DataFrame:
        """Features of given ``(user, item_idx)`` rows (column ``_row`` kept): source ranks from the candidate
        sources (list length + 1 where a source did not propose the item), then every feature block.

        The features are computed over the user's own candidates plus the given items, so query-relative
        features compare an item with the same reference as in :meth:`recommend` (not with the caller's other
        rows), and duplicate rows get equal features."""
        histories = self._histories(users, history)
        stored = self._stored_queries(users, history)
        sources, queries, transition_scores = self._candidates(
            histories, self.features_, exclude_seen=True, queries=stored
        )
        owners = pl.DataFrame({USER_ID: users}).with_row_index(QUERY)
        pairs = rows.join(owners, on=USER_ID, how="left").select("_row", QUERY, pl.col(ITEM_IDX).cast(pl.UInt32))
        ranks = sources.drop(RETRIEVAL_SCORE).unique([QUERY, ITEM_IDX], keep="first")
        union = pl.concat([pairs.select(QUERY, ITEM_IDX), ranks.select(QUERY, ITEM_IDX)])
        frame = union.unique(maintain_order=True).join(ranks, on=[QUERY, ITEM_IDX], how="left", maintain_order="left")
        lengths = self._source_lengths()
        frame = frame.with_columns(pl.col(name).fill_null(n + 1).cast(pl.UInt32) for name, n in lengths.items())
        score = pair_dot(queries, self.item_vectors_, frame[QUERY].to_numpy(), frame[ITEM_IDX].to_numpy())  # type: ignore[arg-type]
        frame = frame.with_columns(pl.Series(RETRIEVAL_SCORE, score))
        frame = self.features_.transform(frame, histories, transition_scores=transition_scores)  # type: ignore[union-attr]
        return pairs.join(frame, on=[QUERY, ITEM_IDX], how="left", maintain_order="left")

    def _with_new_items(self, items: pl.DataFrame) -> Recommender:
        """A shallow copy whose catalogue, feature blocks and user encoder also hold ``items`` (``item_id, text``)
        that are not in it yet (the FAISS index is not rebuilt: :meth:`update` does that)."""
        for column in (ITEM_ID, TEXT):
            if column not in items.columns:
                raise DataError(f"items lack column {column!r}; new items need item_id and text.")
        new = items.filter(~pl.col(ITEM_ID).is_in(self.index_[ITEM_ID].implode()))  # type: ignore[index]
        if new.height == 0:
            return self
        if new[TEXT].null_count():
            raise DataError(f"items column 'text' has {new[TEXT].null_count()} null(s); new items need text.")
        text = ItemTextEncoder(self.config.text).encode(new[TEXT].to_list())  # (n_new, text_dim)
        if self._has_memory():
            vectors = self.user_encoder_.project_texts(text)  # type: ignore[union-attr]
        else:
            vectors = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        twin = copy.copy(self)
        twin.items_ = pl.concat([cast(pl.DataFrame, self.items_), new], how="diagonal_relaxed")
        twin.index_ = item_index(twin.items_)
        twin.text_vectors_ = np.concatenate([self.text_vectors_, text])  # type: ignore[list-item]
        twin.item_vectors_ = np.concatenate([self.item_vectors_, vectors.astype(np.float32)])  # type: ignore[list-item]
        twin.popularity_ = np.concatenate([self.popularity_, np.zeros(new.height, np.float32)])  # type: ignore[list-item]
        n_old = cast(pl.DataFrame, self.index_).height
        features = cast(RankingFeatures, self.features_)
        twin.features_ = features.extend_items(twin.items_, twin.text_vectors_, n_old, twin.item_vectors_)
        if self._has_memory():  # histories may hold the new items
            twin.user_encoder_ = self.user_encoder_.add_items(text)  # type: ignore[union-attr]
        else:
            twin.user_encoder_ = ZeroShotUserEncoder(self.config.user).fit(twin.item_vectors_)  # type: ignore[arg-type]
        return twin

    # -------------------------------------------------------------------------------------- update
    def update(
        self,
        interactions: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        *,
        data: DataConfig | None = None,
        on_changed_text: OnChangedText = "raise",
    ) -> Recommender:
        """A **new** recommender with new events and new items added, without retraining; ``self`` is unchanged.

        New items (ids the model does not know) are embedded from their text and added to the catalogue, the
        feature blocks and the FAISS index. New events are validated like ``fit``'s input and appended; with the
        memory encoder, only the states of users with new events are advanced (O(their new events + one
        segment)), and new users get fresh states. The popularity and the feature blocks are recomputed on all
        events (cheap polars and sparse statistics, linear in all events); the encoder weights and the ranker are
        not retrained. See :mod:`recsys.update` for the rules (changed texts, events older than a user's last
        event, replayed events) and the costs; :func:`recsys.update.update_recommender` also returns a report.

        Parameters
        ----------
        interactions:
            New events: ``user_id, item_id, timestamp`` (and ``weight`` if the model has weights). Their items must
            be in the model or in ``items``.
        items:
            New items: ``item_id, text`` (or the text fields named in ``data``). Known ids with the same text are
            ignored.
        data:
            How the raw frames map onto the data contract (default: the contract's own column names).
        on_changed_text:
            ``"raise"`` (a known item with another text is a :class:`~recsys.errors.DataError`) or ``"keep"``
            (keep the model's text, with a warning).

        Raises
        ------
        SchemaError, DataError
            Missing or mistyped columns; bad rows, unknown items, events older than the model's.
        """
        return update_recommender(self, interactions, items, data=data, on_changed_text=on_changed_text)[0]

    # -------------------------------------------------------------------------------- save / load
    def save(self, directory: str | Path) -> Path:
        """Write the fitted recommender to ``directory`` (replaced atomically), with the memory states of a
        memory-encoder model (safetensors); see :mod:`recsys._persist`."""
        check_is_fitted(self, REQUIRED_STATE)
        features = self.features_
        rankers = self.ranker_.to_texts()  # type: ignore[union-attr]  # one LightGBM text model per member
        ranker_files = ["ranker.txt"] if len(rankers) == 1 else [f"ranker-{i}.txt" for i in range(len(rankers))]
        arrays = {
            "item_vectors": {"vectors": self.item_vectors_, "text": self.text_vectors_, "popularity": self.popularity_},
            **(
                {"memory_encoder": self.user_encoder_.to_arrays()}  # type: ignore[union-attr]
                if self._has_memory()
                else {}
            ),
            "features": features.state(),  # type: ignore[union-attr]
        }
        return write_model_dir(
            directory,
            config=dataclasses.asdict(self.config),
            frames={"items": self.items_, "interactions": self.interactions_},  # type: ignore[dict-item]
            arrays=arrays,  # type: ignore[arg-type]
            texts=dict(zip(ranker_files, rankers, strict=True)),
            writers={"index.faiss": self.vector_index_.save},  # type: ignore[union-attr]
            savers=[self.states_.save] if self.states_ is not None else [],
            extra={
                "feature_names": self.ranker_.feature_names_,  # type: ignore[union-attr]
                "ranker_files": ranker_files,
                "feature_blocks": list(features.blocks_),  # type: ignore[union-attr, arg-type]
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a directory written by :meth:`save`, after checking its manifest and checksums (and, for a
        memory-encoder model, that its memory states exist and match its events)."""
        folder, manifest = read_model_dir(directory)
        config = config_from_dict(RecommenderConfig, json.loads((folder / "config.json").read_text()))
        self = cls(config)
        self.items_ = pl.read_parquet(folder / "items.parquet")
        self.index_ = item_index(self.items_)
        self.interactions_ = pl.read_parquet(folder / "interactions.parquet")
        vectors = load_arrays(folder / "item_vectors.safetensors")
        self.item_vectors_, self.text_vectors_, self.popularity_ = (
            vectors["vectors"],
            vectors["text"],
            vectors["popularity"],
        )
        if config.user_encoder == "memory":
            arrays = load_arrays(folder / "memory_encoder.safetensors")
            self.user_encoder_ = SavedMemoryEncoder(config.memory, arrays)  # built (torch imported) on first use
        else:
            self.user_encoder_ = ZeroShotUserEncoder(config.user).fit(self.item_vectors_)
        self.vector_index_ = FaissIndex.load(str(folder / "index.faiss"), config.index)
        self.folds_ = {}  # training-only state: not saved
        self.states_ = None
        if config.user_encoder == "memory":
            net = config.memory.net
            self.states_ = load_states(folder, self.interactions_, self.index_.height, net.dim, net.n_memory)
        files = manifest.get("ranker_files", ["ranker.txt"])  # one LightGBM text model per ensemble member
        unchecked = [f for f in files if f not in manifest.get("files", {}) or not RANKER_FILE.fullmatch(f)]
        if unchecked or not files:
            raise ModelFormatError(f"the manifest's ranker files {files} are not among its checksummed files.")
        self.ranker_ = ranker_from_texts([(folder / f).read_text() for f in files], config.ranker)
        arrays = load_arrays(folder / "features.safetensors")
        blocks = list(manifest.get("feature_blocks", []))
        self.features_ = RankingFeatures.from_state(config.features, blocks, arrays, self._optional_sources())
        names = manifest.get("feature_names")
        if self.ranker_.feature_names_ != names or self.features_.feature_names != names:
            raise ModelFormatError(
                f"the ranker's features {self.ranker_.feature_names_}, the feature blocks' "
                f"{self.features_.feature_names} and the manifest's {names} differ; the model is inconsistent."
            )
        return self


REQUIRED_STATE: tuple[str, ...] = tuple(
    name for name in Recommender.__annotations__ if name.endswith("_") and name != "states_"
)
"""The attributes every fitted :class:`Recommender` has (``states_`` is None for zero-shot models)."""
