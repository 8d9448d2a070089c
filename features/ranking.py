"""The ranker's feature set: candidate-source columns plus the feature blocks, composed by group.

The pipeline builds a candidate frame ``query (u32), item_idx (u32), retrieval_score (f32), retrieval_rank
(u32), transition_rank (u32), popularity_rank (u32)`` (and ``cooc_rank``, ``ease_rank``, ``similar_rank``,
``lexical_rank`` (u32) when the co-occurrence, EASE, similar-text or similar-words source is on) whose ``query``
is a row of the :class:`~recsys.data.Histories` passed beside it (the query's events before its cut-off). A
source rank is the item's position in that source's list, or the list length + 1 when the source did not
propose it, so the ranks also say which sources proposed a candidate.

:class:`RankingFeatures` fits every enabled block on past events (:class:`~recsys.features.base.FitContext`)
and adds their columns. Groups (for ablations): ``interest`` (the interest-match score and its rank),
``source`` (the other sources' ranks), ``item``, ``user``, ``transition``, ``cooccurrence``, ``similarity``,
``learned`` (the similarity cosines in the user encoder's learned item space; skipped when the encoder has
none), ``lexical`` (the same cosines over the items' word TF-IDF vectors; opt-in), ``collaborative`` (EASE
item-item regression over the whole history), ``category`` (skipped when the catalogue has no category column),
``brand`` (how much and how recently the query consumed the candidate's brand; skipped when the catalogue has no
brand column; opt-in), ``rating`` (the candidate's shrunk mean interaction weight and its gap to the query's
mean; opt-in), ``repeat``, ``timely`` (popularity in a window ending at the query's own "now"; opt-in), ``taste``
(the candidate's popularity against the user's usual popularity; opt-in) and ``relative`` (each of the main
signals relative to the query's other candidates; applied last).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import ConfigError, DataError, ModelFormatError, SchemaError, check_is_fitted
from recsys.features.affinity import BrandAffinity, BrandConfig, CategoryAffinity, CategoryConfig, RepeatSignals
from recsys.features.base import QUERY, FeatureBlock, FitContext
from recsys.features.collaborative import Collaborative, CollaborativeConfig
from recsys.features.cooccurrence import CoOccurrence, CoOccurrenceConfig
from recsys.features.item_stats import ItemStats, ItemStatsConfig
from recsys.features.lexical import LexicalConfig, LexicalSimilarity
from recsys.features.ratings import ItemRatings, RatingConfig
from recsys.features.relative import QueryRelative, RelativeConfig
from recsys.features.similarity import LearnedSimilarity, SimilarityConfig, TextSimilarity
from recsys.features.taste import PopularityTaste, TasteConfig
from recsys.features.timely import TimelyConfig, TimelyPopularity
from recsys.features.transitions import TransitionConfig, Transitions
from recsys.features.user_stats import UserActivity
from recsys.schema import ITEM_IDX

__all__ = [
    "CANDIDATE_COLUMNS",
    "COOCCURRENCE_RANK",
    "DEFAULT_GROUPS",
    "EASE_RANK",
    "GROUPS",
    "LEXICAL_RANK",
    "OPT_IN_GROUPS",
    "POPULARITY_RANK",
    "QUERY",
    "RETRIEVAL_RANK",
    "RETRIEVAL_SCORE",
    "SIMILAR_RANK",
    "TRANSITION_RANK",
    "FeatureConfig",
    "RankingFeatures",
    "TransitionFeature",
    "feature_threads",
    "thread_map",
]

T = TypeVar("T")
R = TypeVar("R")
B = TypeVar("B", bound=FeatureBlock)

RETRIEVAL_SCORE = "retrieval_score"
RETRIEVAL_RANK = "retrieval_rank"
TRANSITION_RANK = "transition_rank"
POPULARITY_RANK = "popularity_rank"
COOCCURRENCE_RANK = "cooc_rank"
EASE_RANK = "ease_rank"
SIMILAR_RANK = "similar_rank"
LEXICAL_RANK = "lexical_rank"
OPTIONAL_SOURCES = (COOCCURRENCE_RANK, EASE_RANK, SIMILAR_RANK, LEXICAL_RANK)
"""Source rank columns that exist only where their source is on (``RankingFeatures(sources=...)``)."""
CANDIDATE_COLUMNS = (QUERY, ITEM_IDX, RETRIEVAL_SCORE, RETRIEVAL_RANK, TRANSITION_RANK, POPULARITY_RANK)
SOURCE_COLUMNS = {"interest": [RETRIEVAL_SCORE, RETRIEVAL_RANK], "source": [TRANSITION_RANK, POPULARITY_RANK]}
GROUPS = (
    "interest",
    "source",
    "item",
    "user",
    "transition",
    "cooccurrence",
    "similarity",
    "learned",
    "lexical",
    "collaborative",
    "category",
    "brand",
    "rating",
    "repeat",
    "timely",
    "taste",
    "relative",  # last: it compares columns the other groups add
)
OPT_IN_GROUPS = ("learned", "lexical", "timely", "taste", "brand", "rating")
DEFAULT_GROUPS = tuple(g for g in GROUPS if g not in OPT_IN_GROUPS)
"""The groups a default :class:`FeatureConfig` enables: every group but ``learned``, which is opt-in until its
full-pipeline benchmark (benchmarks/README.md) shows a gain. ``collaborative`` is on: paired, seed 0, NDCG@10
on validation targets Scientific 0.1079 -> 0.1082 and ml-100k 0.1430 -> 0.1532, on the test split 0.1089 ->
0.1089 and 0.1411 -> 0.1436. With history items not excluded it costs (ml-100k, 0.0546 -> 0.0500): EASE scores
history items highly, and the ranker never trains on them as candidates. ``timely`` (popularity just before the
query's own "now") is opt-in: paired on validation targets, ml-100k +0.0017 / -0.0022 (seeds 0, 1), Scientific
-0.0001 / -0.0011 (seeds 0, 1). ``taste`` (the candidate's popularity against the user's usual popularity) is
opt-in: on validation targets ml-100k -0.0031 / +0.0008 (seeds 0, 1), Scientific -0.0002 (seed 0)."""


@dataclass(frozen=True)
class FeatureConfig:
    """Which feature groups the ranker sees, and each block's settings.

    Parameters
    ----------
    groups: the enabled groups (see the module docstring); order does not matter. Default:
        :data:`DEFAULT_GROUPS` (every group but :data:`OPT_IN_GROUPS`).
    """

    groups: tuple[str, ...] = DEFAULT_GROUPS
    item: ItemStatsConfig = field(default_factory=ItemStatsConfig)
    transitions: TransitionConfig = field(default_factory=TransitionConfig)
    cooccurrence: CoOccurrenceConfig = field(default_factory=CoOccurrenceConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    collaborative: CollaborativeConfig = field(default_factory=CollaborativeConfig)
    category: CategoryConfig = field(default_factory=CategoryConfig)
    brand: BrandConfig = field(default_factory=BrandConfig)
    rating: RatingConfig = field(default_factory=RatingConfig)
    relative: RelativeConfig = field(default_factory=RelativeConfig)
    timely: TimelyConfig = field(default_factory=TimelyConfig)
    taste: TasteConfig = field(default_factory=TasteConfig)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.groups) - set(GROUPS))
        if unknown:
            raise ConfigError(f"FeatureConfig.groups has unknown group(s) {unknown}; choose from {list(GROUPS)}.")
        object.__setattr__(self, "groups", tuple(g for g in GROUPS if g in self.groups))


def feature_threads() -> int:
    """Threads for the feature blocks: ``OMP_NUM_THREADS`` when set (the budget a user gives numerical libraries,
    as the batch benchmarks do for their 1-thread runs), else the CPU count."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    return os.cpu_count() or 1


def thread_map(function: Callable[[T], R], items: Sequence[T], n_threads: int | None = None) -> list[R]:
    """``[function(item) for item in items]``, on up to ``n_threads`` threads (default :func:`feature_threads`)
    when there is more than one item; for work that releases the GIL (numpy, scipy, polars)."""
    workers = min(len(items), n_threads if n_threads is not None else feature_threads())
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="recsys-features") as pool:
        return list(pool.map(function, items))


class TransitionFeature(FeatureBlock):
    """``transition_score``: how strongly the query's recent items lead to the candidate (see
    :class:`~recsys.features.transitions.Transitions`); also the pipeline's transition candidate source."""

    group = "transition"
    state_attributes = ("matrix_",)

    def __init__(self, config: TransitionConfig | None = None) -> None:
        self.config = config or TransitionConfig()

    @property
    def names(self) -> list[str]:
        return ["transition_score"]

    @property
    def model(self) -> Transitions:
        """The fitted :class:`Transitions` (shares ``matrix_``)."""
        check_is_fitted(self, self.state_attributes)
        transitions = Transitions(self.config)
        transitions.matrix_ = self.matrix_
        return transitions

    def fit(self, context: FitContext) -> TransitionFeature:
        self.matrix_ = Transitions(self.config).fit(context.events, context.n_items).matrix_
        return self

    def _transform(
        self, candidates: pl.DataFrame, histories: Histories, scores: sp.csr_matrix | None = None
    ) -> pl.DataFrame:
        score = self.model.score_pairs(
            histories,
            candidates[QUERY].to_numpy().astype(np.int64),
            candidates[ITEM_IDX].to_numpy().astype(np.int64),
            scores=scores,
        )
        return candidates.with_columns(transition_score=pl.Series(score, dtype=pl.Float32))

    def transform_from_scores(
        self, candidates: pl.DataFrame, histories: Histories, scores: sp.csr_matrix
    ) -> pl.DataFrame:
        """:meth:`transform` reading the pairs from ``scores``, the csr ``(n_queries, n_items)`` of
        ``self.model.score_sparse(histories)`` that the caller already holds (same values, one sparse product
        less)."""
        check_is_fitted(self, self.state_attributes)
        return self._transform(candidates, histories, scores)


class RankingFeatures:
    """Fits the enabled feature blocks on past events and adds their columns to candidate frames.

    Parameters
    ----------
    config: the groups and each block's settings.
    sources: the optional source rank columns (:data:`OPTIONAL_SOURCES`) the candidate frames carry; the
        ``source`` group reads them after ``transition_rank`` and ``popularity_rank``.

    Attributes
    ----------
    blocks_: the fitted blocks by group (``category`` and ``brand`` absent when the catalogue lacks their column).
    """

    blocks_: dict[str, FeatureBlock] | None = None

    def __init__(self, config: FeatureConfig | None = None, sources: tuple[str, ...] = ()) -> None:
        self.config = config or FeatureConfig()
        unknown = sorted(set(sources) - set(OPTIONAL_SOURCES))
        if unknown:
            raise ConfigError(f"unknown optional source column(s) {unknown}; choose from {list(OPTIONAL_SOURCES)}.")
        self.sources = tuple(c for c in OPTIONAL_SOURCES if c in sources)

    def _source_columns(self, group: str) -> list[str]:
        """The candidate columns that ``group`` reads directly (none for a block group)."""
        return SOURCE_COLUMNS.get(group, []) + (list(self.sources) if group == "source" else [])

    def _new_block(self, group: str) -> FeatureBlock:
        cfg = self.config
        factories = {
            "item": lambda: ItemStats(cfg.item),
            "user": UserActivity,
            "transition": lambda: TransitionFeature(cfg.transitions),
            "cooccurrence": lambda: CoOccurrence(cfg.cooccurrence),
            "similarity": lambda: TextSimilarity(cfg.similarity),
            "learned": lambda: LearnedSimilarity(cfg.similarity),
            "lexical": lambda: LexicalSimilarity(cfg.lexical),
            "collaborative": lambda: Collaborative(cfg.collaborative),
            "category": lambda: CategoryAffinity(cfg.category),
            "brand": lambda: BrandAffinity(cfg.brand),
            "rating": lambda: ItemRatings(cfg.rating),
            "repeat": RepeatSignals,
            "timely": lambda: TimelyPopularity(cfg.timely),
            "taste": lambda: PopularityTaste(cfg.taste),
        }
        return factories[group]()  # type: ignore[no-untyped-call]

    def _relative(self, blocks: dict[str, FeatureBlock]) -> QueryRelative:
        """The query-relative block over the columns that the source columns and ``blocks`` provide."""
        available = [c for g in self.config.groups for c in self._source_columns(g)]
        available += [n for block in blocks.values() for n in block.names]
        return QueryRelative(self.config.relative, available)

    def _block_groups(self, items: pl.DataFrame | None) -> list[str]:
        groups = [g for g in self.config.groups if g not in SOURCE_COLUMNS]
        if "category" in groups and items is not None:
            column = self.config.category.column or CategoryAffinity.detect_column(items)
            if column is None or column not in items.columns:
                groups.remove("category")
        if "brand" in groups and items is not None and self.config.brand.column not in items.columns:
            groups.remove("brand")
        return groups

    def fit(self, context: FitContext) -> RankingFeatures:
        """Fit every enabled block on ``context`` (past events only). Returns ``self``."""
        groups = self._block_groups(context.items)
        if context.learned_vectors is None and "learned" in groups:
            groups.remove("learned")
        blocks = {g: self._new_block(g).fit(context) for g in groups if g != "relative"}
        if "relative" in groups:
            blocks["relative"] = self._relative(blocks).fit(context)
        self.blocks_ = blocks
        return self

    @property
    def feature_names(self) -> list[str]:
        """Every column the ranker reads, in a fixed order."""
        check_is_fitted(self)
        names = [c for g in self.config.groups for c in self._source_columns(g)]
        return names + [n for block in self.blocks_.values() for n in block.names]  # type: ignore[union-attr]

    def groups_of(self) -> dict[str, list[str]]:
        """Feature names by group (for ablations and reports)."""
        check_is_fitted(self)
        out = {g: self._source_columns(g) for g in self.config.groups if g in SOURCE_COLUMNS}
        return out | {g: block.names for g, block in self.blocks_.items()}  # type: ignore[union-attr]

    def _block(self, group: str, kind: type[B]) -> B | None:
        """The fitted block of ``group`` when the group is enabled and its block is a ``kind``, else None."""
        block = (self.blocks_ or {}).get(group)
        return block if isinstance(block, kind) else None

    @property
    def cooccurrence(self) -> CoOccurrence | None:
        """The fitted co-occurrence block when its group is enabled (also the co-occurrence candidate source)."""
        return self._block("cooccurrence", CoOccurrence)

    @property
    def collaborative(self) -> Collaborative | None:
        """The fitted EASE block when its group is enabled (also the EASE candidate source)."""
        return self._block("collaborative", Collaborative)

    @property
    def similarity(self) -> TextSimilarity | None:
        """The fitted text-similarity block when its group is enabled (also the similar-text candidate source)."""
        return self._block("similarity", TextSimilarity)

    @property
    def lexical(self) -> LexicalSimilarity | None:
        """The fitted word-overlap block when its group is enabled (also the similar-words candidate source)."""
        return self._block("lexical", LexicalSimilarity)

    @property
    def transitions(self) -> Transitions | None:
        """The fitted transition model when its group is enabled."""
        block = (self.blocks_ or {}).get("transition")
        return block.model if isinstance(block, TransitionFeature) else None

    def transform(
        self,
        candidates: pl.DataFrame,
        histories: Histories,
        n_threads: int | None = None,
        *,
        transition_scores: sp.csr_matrix | None = None,
    ) -> pl.DataFrame:
        """Add every feature column to ``candidates`` (rows and their order kept).

        The blocks read only the candidate columns, so they run side by side on ``n_threads`` threads (default:
        :func:`feature_threads`); their numpy, scipy and polars work releases the GIL. The
        ``relative`` block compares their columns and runs last. The result does not depend on ``n_threads``.
        ``transition_scores``: ``self.transitions.score_sparse(histories)`` when the caller already computed it
        (the pipeline's transition candidate source does); the transition block then reads its pairs from it
        instead of multiplying again, with the same values.
        """
        check_is_fitted(self)
        missing = [c for c in (*CANDIDATE_COLUMNS, *self.sources) if c not in candidates.columns]
        if missing:
            raise SchemaError(f"candidate frame lacks {missing}; it has {candidates.columns}.")
        blocks = [b for g, b in self.blocks_.items() if g != "relative"]  # type: ignore[union-attr]

        def columns(block: FeatureBlock) -> pl.DataFrame:
            if transition_scores is not None and isinstance(block, TransitionFeature):
                return block.transform_from_scores(candidates, histories, transition_scores).select(block.names)
            return block.transform(candidates, histories).select(block.names)

        parts = thread_map(columns, blocks, n_threads)
        added = [name for part in parts for name in part.columns]
        out = pl.concat([candidates.drop(added, strict=False), *parts], how="horizontal")
        relative = self.blocks_.get("relative")  # type: ignore[union-attr]
        return relative.transform(out, histories) if relative is not None else out

    def extend_items(
        self, items: pl.DataFrame, item_vectors: np.ndarray, n_old: int, learned_vectors: np.ndarray | None = None
    ) -> RankingFeatures:
        """A copy whose blocks also score the items appended to the catalogue (see
        :meth:`FeatureBlock.extend_items`); ``learned_vectors``: the whole extended catalogue in the user
        encoder's space, needed when the ``learned`` group is fitted."""
        check_is_fitted(self)
        blocks = self.blocks_ or {}
        if "learned" in blocks and learned_vectors is None:
            raise DataError("the 'learned' feature group needs the new items' vectors in the encoder's space.")
        twin = RankingFeatures(self.config, self.sources)
        twin.blocks_ = {
            g: b.extend_items(items, learned_vectors if g == "learned" else item_vectors, n_old)  # type: ignore[arg-type]
            for g, b in blocks.items()
        }
        return twin

    def with_learned_vectors(self, vectors: np.ndarray) -> RankingFeatures:
        """A copy whose ``learned`` block compares ``vectors`` (another encoder's item space, for example a
        cross-fitting fold's); the other blocks are shared. Without a ``learned`` block: ``self``."""
        check_is_fitted(self)
        block = (self.blocks_ or {}).get("learned")
        if not isinstance(block, LearnedSimilarity):
            return self
        twin = RankingFeatures(self.config, self.sources)
        twin.blocks_ = {**self.blocks_, "learned": block.with_vectors(vectors)}  # type: ignore[dict-item]
        return twin

    # ------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, np.ndarray]:
        """Every block's fitted arrays, keys prefixed by the group."""
        check_is_fitted(self)
        return {f"{g}.{k}": v for g, block in self.blocks_.items() for k, v in block.state().items()}  # type: ignore[union-attr]

    @classmethod
    def from_state(
        cls, config: FeatureConfig, groups: list[str], arrays: dict[str, np.ndarray], sources: tuple[str, ...] = ()
    ) -> RankingFeatures:
        """Rebuild fitted features from :meth:`state` output; ``groups`` are the fitted block groups,
        ``sources`` the optional source columns."""
        self = cls(config, sources)
        unknown = sorted(set(groups) - set(GROUPS))
        if unknown:
            raise ModelFormatError(f"saved features name unknown group(s) {unknown}.")
        blocks: dict[str, FeatureBlock] = {}
        for g in groups:
            prefix = f"{g}."
            mine = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            block = self._relative(blocks) if g == "relative" else self._new_block(g)
            blocks[g] = block.load_state(mine)
        self.blocks_ = blocks
        return self
