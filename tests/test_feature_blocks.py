"""Tests of the ranker feature blocks: known answers on hand-made data, and the contract every block keeps.

The contract: rows and their order are kept, columns are Float32 with NaN (never null) for "undefined",
``state()``/``load_state()`` leave outputs unchanged, row order does not matter, and a query's columns depend
only on its own history and the fitted state (no label or later event leaks in).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from conftest import histories_from_rows

from recsys.data import Histories
from recsys.errors import ConfigError, DataError, NotFittedError
from recsys.features import (
    QUERY,
    BrandAffinity,
    BrandConfig,
    CategoryAffinity,
    CategoryConfig,
    Collaborative,
    CollaborativeConfig,
    CoOccurrence,
    CoOccurrenceConfig,
    FeatureBlock,
    FitContext,
    ItemRatings,
    ItemStats,
    ItemStatsConfig,
    LearnedSimilarity,
    LexicalConfig,
    LexicalSimilarity,
    PopularityTaste,
    RatingConfig,
    RepeatSignals,
    SimilarityConfig,
    TasteConfig,
    TextSimilarity,
    TimelyConfig,
    TimelyPopularity,
    UserActivity,
    _common,
    lexical,
)
from recsys.features import affinity as affinity_module
from recsys.features import collaborative as collaborative_module
from recsys.features.cooccurrence import _scale_symmetric, cooccurrence_counts
from recsys.features.ranking import GROUPS, FeatureConfig, RankingFeatures
from recsys.features.similarity import _Segments
from recsys.features.transitions import recency_matrix
from recsys.schema import ITEM_IDX

NAN = math.nan
SQ2, SQ6 = math.sqrt(2), math.sqrt(6)


# ---------------------------------------------------------------------------------------------- helpers
def timed(rows: list[list[tuple[int, int]]]) -> Histories:
    """Histories of ``len(rows)`` queries from ``(item_idx, timestamp)`` events, oldest first."""
    lengths = [len(r) for r in rows]
    return Histories(
        user_ids=pl.Series("user_id", list(range(len(rows)))),
        indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        item_idx=np.array([i for r in rows for i, _ in r], dtype=np.int64),
        timestamps=np.array([t for r in rows for _, t in r], dtype=np.int64),
    )


def events_of(histories: Histories, u: int) -> list[tuple[int, int]]:
    """``(item_idx, timestamp)`` events of query ``u``, oldest first."""
    span = slice(histories.indptr[u], histories.indptr[u + 1])
    return list(zip(histories.item_idx[span].tolist(), histories.timestamps[span].tolist(), strict=True))


def pairs(rows: list[tuple[int, int]]) -> pl.DataFrame:
    """A candidate frame ``query (u32), item_idx (u32)`` with a passenger column ``tag`` (row number)."""
    return pl.DataFrame(
        {QUERY: [q for q, _ in rows], ITEM_IDX: [i for _, i in rows], "tag": list(range(len(rows)))},
        schema={QUERY: pl.UInt32, ITEM_IDX: pl.UInt32, "tag": pl.Int64},
    )


def context(events: Histories, items: pl.DataFrame | None = None, vectors: np.ndarray | None = None) -> FitContext:
    n_items = 6 if items is None else items.height
    items = items if items is not None else pl.DataFrame({"item_id": range(n_items), "text": ["x"] * n_items})
    vectors = vectors if vectors is not None else np.eye(n_items, dtype=np.float32)
    return FitContext(events=events, items=items, item_vectors=vectors)


def columns(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """float64 ``(n_rows, len(names))`` of the named columns."""
    return frame.select(names).to_numpy().astype(np.float64)


def assert_columns(frame: pl.DataFrame, expected: dict[str, list[float]]) -> None:
    for name, values in expected.items():
        assert frame.schema[name] == pl.Float32, name
        np.testing.assert_allclose(frame[name].to_numpy(), np.array(values, np.float32), rtol=1e-5, err_msg=name)


# ------------------------------------------------------------------------------------------- ItemStats
def test_item_stats_known_answer() -> None:
    events = timed([[(0, 10), (1, 20), (2, 30)], [(1, 15), (0, 25), (1, 35), (3, 45)], [(4, 50)]])
    # the 0.75 quantile of 10,15,20,25,30,35,45,50 is 37.5: the recent events are item 3 (t=45) and 4 (t=50)
    block = ItemStats(ItemStatsConfig(recent_fraction=0.25)).fit(context(events))
    histories = timed([[(1, 100), (2, 130)], []])
    out = block.transform(pairs([(0, 0), (0, 3), (0, 5), (1, 1)]), histories)

    def share(count: float, total: float) -> float:
        return math.log((count + 1) / (total + 6))

    assert_columns(
        out,
        {
            "log_popularity": [math.log1p(2), math.log1p(1), 0.0, math.log1p(3)],
            "log_popularity_recent": [0.0, math.log1p(1), 0.0, 0.0],
            "popularity_trend": [
                share(0, 2) - share(2, 8),
                share(1, 2) - share(1, 8),
                share(0, 2) - share(0, 8),
                share(0, 2) - share(3, 8),
            ],
            # now = 130 for query 0; item 5 was never seen; query 1 has no history, hence no "now"
            "log_item_age": [math.log1p(120), math.log1p(85), NAN, NAN],
        },
    )


def test_item_stats_age_is_clipped_at_zero() -> None:
    block = ItemStats().fit(context(timed([[(0, 500)]])))
    out = block.transform(pairs([(0, 0)]), timed([[(1, 100)]]))
    assert out["log_item_age"][0] == 0.0


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, math.nan, True, "0.1"])
def test_item_stats_config_rejects(fraction: object) -> None:
    with pytest.raises(ConfigError, match="recent_fraction"):
        ItemStatsConfig(recent_fraction=fraction)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ PopularityTaste
def test_popularity_taste_known_answer() -> None:
    # past counts: item 0 x3, item 1 x1, item 2 x0 (and the rest of the 6-item catalogue x0)
    events = timed([[(0, 10), (1, 20), (0, 30)], [(0, 40)]])
    block = PopularityTaste(TasteConfig(recent=2, min_spread=0.5)).fit(context(events))
    np.testing.assert_array_equal(block.counts_, [3, 1, 0, 0, 0, 0])
    l3, l1 = math.log1p(3), math.log1p(1)
    # query 0 took items 0, 0, 1, 2 (log-popularities l3, l3, l1, 0): mean (2 l3 + l1) / 4; its last 2: l1, 0
    # query 1 took item 1 once (no spread: the floor 0.5 divides); query 2 has no history
    histories = timed([[(0, 100), (0, 110), (1, 120), (2, 130)], [(1, 100)], []])
    out = block.transform(pairs([(0, 0), (0, 2), (1, 0), (2, 0)]), histories)
    mean = (2 * l3 + l1) / 4
    std = math.sqrt((2 * l3**2 + l1**2) / 4 - mean**2)
    assert_columns(
        out,
        {
            "user_popularity_taste": [mean, mean, l1, NAN],
            "popularity_taste_gap": [l3 - mean, -mean, l3 - l1, NAN],
            "popularity_taste_z": [(l3 - mean) / std, -mean / std, (l3 - l1) / 0.5, NAN],
            "popularity_taste_gap_recent": [l3 - l1 / 2, -l1 / 2, l3 - l1, NAN],
        },
    )


@pytest.mark.parametrize(("field", "value"), [("recent", 0), ("recent", 2.5), ("min_spread", 0.0), ("min_spread", -1)])
def test_taste_config_rejects(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TasteConfig(**{field: value})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ TimelyPopularity
def test_timely_popularity_known_answer() -> None:
    # one log of 8 events at t = 10..80; 4 bins by event count: edges 10, 30, 50, 60, 81 (past the last event),
    # bins [10,30) = items 0,1; [30,50) = 0,2; [50,60) = 0; [60,81) = 1,3,0. A window is the one whole bin before
    # the bin holding "now".
    events = timed([[(0, 10), (1, 20), (0, 30), (2, 40), (0, 50), (1, 60), (3, 70), (0, 80)]])
    block = TimelyPopularity(TimelyConfig(n_bins=4, window_bins=1)).fit(context(events))
    np.testing.assert_array_equal(block.edges_, [10, 30, 50, 60, 81])
    # now = 55 reads [30,50) (item 0's event at 50 is before now but its bin is not over); now = 60 reads [50,60)
    # and never the event at 60 itself (a label may share its query's last timestamp); now = 5 has no past;
    # now = 100 reads the last bin; an empty history has no "now"
    histories = timed([[(5, 40), (4, 55)], [(4, 60)], [(4, 5)], [(4, 100)], []])
    out = block.transform(pairs([(0, 0), (0, 2), (0, 1), (1, 0), (1, 1), (2, 0), (3, 1), (3, 5), (4, 0)]), histories)

    def share(count: float, total: float) -> float:
        return math.log((count + 1) / (total + 6))

    one = math.log1p(1)
    assert_columns(
        out,
        {
            "log_popularity_now": [one, one, 0.0, one, 0.0, 0.0, one, 0.0, NAN],
            "popularity_now_trend": [
                share(1, 2) - share(4, 8),
                share(1, 2) - share(1, 8),
                share(0, 2) - share(2, 8),
                share(1, 1) - share(4, 8),
                share(0, 1) - share(2, 8),
                share(0, 0) - share(4, 8),
                share(1, 3) - share(2, 8),
                share(0, 3) - share(0, 8),
                NAN,
            ],
        },
    )


def test_timely_popularity_wider_windows_sum_bins_and_new_items_count_zero() -> None:
    events = timed([[(0, 10), (1, 20), (0, 30), (2, 40), (0, 50), (1, 60), (3, 70), (0, 80)]])
    block = TimelyPopularity(TimelyConfig(n_bins=4, window_bins=2)).fit(context(events))
    histories = timed([[(4, 65)]])  # bin [60,81) holds now: the window is [30,50) + [50,60)
    out = block.transform(pairs([(0, 0), (0, 2), (0, 1)]), histories)
    assert_columns(out, {"log_popularity_now": [math.log1p(2), math.log1p(1), 0.0]})
    n_old = 6
    grown = block.extend_items(pl.DataFrame({"item_id": range(n_old + 2)}), np.zeros((n_old + 2, 4)), n_old)
    got = grown.transform(pairs([(0, 0), (0, n_old), (0, n_old + 1)]), histories)
    assert_columns(got, {"log_popularity_now": [math.log1p(2), 0.0, 0.0]})
    assert block.counts_.size == n_old  # the original is left as it was


def test_timely_popularity_without_events_counts_zero() -> None:
    block = TimelyPopularity().fit(context(timed([[]])))
    out = block.transform(pairs([(0, 0)]), timed([[(1, 100)]]))
    assert_columns(out, {"log_popularity_now": [0.0]})


@pytest.mark.parametrize(
    ("field", "value"), [("n_bins", 0), ("window_bins", 0), ("n_bins", 2.5), ("window_bins", True)]
)
def test_timely_config_rejects(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TimelyConfig(**{field: value})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- UserActivity
def test_user_activity_known_answer() -> None:
    histories = timed([[(0, 100), (1, 130), (2, 170)], [(3, 5)], []])
    out = UserActivity().fit(context(histories)).transform(pairs([(0, 1), (1, 0), (2, 0), (0, 4)]), histories)
    assert_columns(
        out,
        {
            "user_log_events": [math.log1p(3), math.log1p(1), 0.0, math.log1p(3)],
            "user_log_span": [math.log1p(70), 0.0, NAN, math.log1p(70)],
            "user_log_mean_gap": [math.log1p(35), NAN, NAN, math.log1p(35)],
            "user_log_last_gap": [math.log1p(40), NAN, NAN, math.log1p(40)],
        },
    )


# -------------------------------------------------------------------------------------- TextSimilarity
VECTORS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / SQ2, 1 / SQ2, 0], [2, 0, 0], [0, 1 / SQ2, 1 / SQ2]], dtype=np.float32
)  # item 4 is not unit length on purpose: the block normalises


@pytest.fixture(params=["lookups", "vectors"])
def similarity_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a similarity test on both paths: cosines looked up in the item-item matrix (small catalogues) and
    computed from gathered candidate vectors (catalogues above ``LOOKUP_MAX_ITEMS``)."""
    if request.param == "vectors":
        monkeypatch.setattr("recsys.features._common.LOOKUP_MAX_ITEMS", 0)
    return str(request.param)


def test_text_similarity_known_answer(similarity_path: str) -> None:
    block = TextSimilarity(SimilarityConfig(short_term=2)).fit(context(histories_from_rows([[0]]), vectors=VECTORS))
    histories = histories_from_rows([[0, 1, 2], [4], []])
    out = block.transform(pairs([(0, 3), (0, 5), (1, 0), (2, 0)]), histories)
    assert_columns(
        out,
        {
            "sim_last": [0.0, 1 / SQ2, 1.0, NAN],
            "sim_recent_mean": [0.5, 1.0, 1.0, NAN],  # profile of items 1 and 2: (0, 1, 1) / sqrt(2)
            "sim_recent_max": [1 / SQ2, 1 / SQ2, 1.0, NAN],
            "sim_history": [2 / SQ6, 2 / SQ6, 1.0, NAN],  # profile (1, 1, 1) / sqrt(3)
        },
    )


def test_text_similarity_of_items_without_a_vector_is_zero(similarity_path: str) -> None:
    """An item whose text vector is zero (no text) has cosine 0 to everything, and a history of only such items
    has a zero profile: every column 0, not NaN (NaN is kept for empty histories)."""
    vectors = np.vstack([VECTORS, np.zeros((1, 3), np.float32)])  # item 6: zero
    catalogue = pl.DataFrame({"item_id": range(7), "text": ["x"] * 7})
    fitted = context(histories_from_rows([[0]]), items=catalogue, vectors=vectors)
    block = TextSimilarity(SimilarityConfig(short_term=2)).fit(fitted)
    out = block.transform(pairs([(0, 0), (0, 6), (1, 6)]), histories_from_rows([[6, 6], [0, 6]]))
    assert_columns(
        out,
        {
            "sim_last": [0.0, 0.0, 0.0],
            "sim_recent_mean": [0.0, 0.0, 0.0],
            "sim_recent_max": [0.0, 0.0, 0.0],
            "sim_history": [0.0, 0.0, 0.0],
        },
    )


def test_learned_similarity_reads_the_learned_space_under_its_own_names(similarity_path: str) -> None:
    """The learned block computes TextSimilarity's cosines from ``learned_vectors``, not the text vectors."""
    events = histories_from_rows([[0]])
    text = np.eye(6, dtype=np.float32)  # every pair of different items at cosine 0 in the text space
    fitted = context(events, vectors=text)
    learned = LearnedSimilarity(SimilarityConfig(short_term=2)).fit(
        FitContext(fitted.events, fitted.items, text, learned_vectors=VECTORS)
    )
    assert learned.names == ["learned_last", "learned_recent_mean", "learned_recent_max", "learned_history"]
    histories = histories_from_rows([[0, 1, 2], [4], []])
    out = learned.transform(pairs([(0, 3), (0, 5), (1, 0), (2, 0)]), histories)
    assert_columns(  # the numbers of test_text_similarity_known_answer: the same vectors
        out,
        {
            "learned_last": [0.0, 1 / SQ2, 1.0, NAN],
            "learned_recent_mean": [0.5, 1.0, 1.0, NAN],
            "learned_recent_max": [1 / SQ2, 1 / SQ2, 1.0, NAN],
            "learned_history": [2 / SQ6, 2 / SQ6, 1.0, NAN],
        },
    )
    swapped = learned.with_vectors(text)  # another encoder's space (a cross-fitting fold's)
    # item 4 equals item 0 in VECTORS (cosine 1 above) but not in the text space
    assert_columns(swapped.transform(pairs([(0, 3), (1, 0)]), histories), {"learned_last": [0.0, 0.0]})
    assert learned.vectors_ is not swapped.vectors_
    with pytest.raises(DataError, match="learned"):
        LearnedSimilarity().fit(fitted)  # the context has no learned space


def test_ranking_features_skip_the_learned_group_without_a_learned_space() -> None:
    events = histories_from_rows([[0, 1, 2], [3, 4, 5]])
    every = FeatureConfig(groups=GROUPS)
    without = RankingFeatures(every).fit(context(events))
    assert "learned" not in without.blocks_ and "learned" not in FeatureConfig().groups  # opt-in by default
    base = context(events)
    space = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    features = RankingFeatures(every).fit(FitContext(base.events, base.items, base.item_vectors, space))
    assert [n for n in features.feature_names if n.startswith("learned_")] == LearnedSimilarity().names
    other = space[::-1].copy()
    twin = features.with_learned_vectors(other)
    assert twin.blocks_["similarity"] is features.blocks_["similarity"]  # the other blocks are shared
    frame = pairs([(0, 3), (0, 4), (1, 0)]).with_columns(
        pl.lit(0.5, pl.Float32).alias("retrieval_score"),
        *(pl.lit(1, pl.UInt32).alias(c) for c in ("retrieval_rank", "transition_rank", "popularity_rank")),
    )
    ours, theirs = features.transform(frame, events), twin.transform(frame, events)
    assert ours["sim_last"].equals(theirs["sim_last"])
    assert not np.allclose(ours["learned_last"].to_numpy(), theirs["learned_last"].to_numpy())
    assert without.with_learned_vectors(other) is without


def test_text_similarity_matches_a_direct_computation_across_segments_and_blocks(
    monkeypatch: pytest.MonkeyPatch, similarity_path: str
) -> None:
    """Queries with 1 to 400 candidates (several padded segments each) in small blocks give the cosines that a
    per-pair loop computes; pairs arrive shuffled. The lookups read the history sums in blocks of 2 queries."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [rng.integers(0, 50, size=n).tolist() for n in (0, 1, 3, 7, 12, 40)]
    counts = [5, 1, 400, 2, 130, 9]
    pair_list = [(q, int(i)) for q, n in enumerate(counts) for i in rng.integers(0, 50, size=n)]
    pair_list = [pair_list[j] for j in rng.permutation(len(pair_list))]
    monkeypatch.setattr("recsys.features.similarity.PAIR_BLOCK", 256)  # several blocks
    monkeypatch.setattr("recsys.features._common.DENSE_CELLS", 100)  # 2 queries of 50 items per product
    catalogue = pl.DataFrame({"item_id": range(50), "text": ["x"] * 50})
    fit_context = context(histories_from_rows([[0]]), items=catalogue, vectors=vectors)
    block = TextSimilarity(SimilarityConfig(short_term=4)).fit(fit_context)
    out = block.transform(pairs(pair_list), histories_from_rows(rows))

    def profile(items: list[int]) -> np.ndarray:
        mean = unit[items].mean(axis=0)
        return mean / np.linalg.norm(mean)

    expected: dict[str, list[float]] = {name: [] for name in block.names}
    for q, i in pair_list:
        history = rows[q]
        if not history:
            for name in block.names:
                expected[name].append(NAN)
            continue
        recent = history[-4:]
        expected["sim_last"].append(float(unit[history[-1]] @ unit[i]))
        expected["sim_recent_mean"].append(float(profile(recent) @ unit[i]))
        expected["sim_recent_max"].append(float(max(unit[j] @ unit[i] for j in recent)))
        expected["sim_history"].append(float(profile(history) @ unit[i]))
    for name, values in expected.items():
        np.testing.assert_allclose(out[name].to_numpy(), values, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(("counts", "width"), [([273], 91), ([100, 100, 100], 100), ([130, 130], 65), ([1, 1], 1)])
def test_similarity_segments_split_a_mean_query_evenly(counts: list[int], width: int) -> None:
    """A query of the mean size fills whole segments of at most 128 pairs (273 pairs: 3 x 91, not 128 + 128 +
    17), and every pair keeps its slot in its query's segments."""
    sorted_query = np.repeat(np.arange(len(counts)), counts)
    segments = _Segments(sorted_query)
    assert segments.width == width
    slot = np.concatenate([np.arange(n) for n in counts])
    np.testing.assert_array_equal(segments.column, slot % width)
    np.testing.assert_array_equal(segments.query, sorted_query[segments.start[:-1]])


LEXICON = ["red apple pie", "red apple pie", "green pear tart", "", None, "pie apple red"]


def exact_lexical_cosine(texts: list[str | None], a: int, b: int) -> float:
    """The cosine of two texts' unprojected TF-IDF bags (sublinear counts, the catalogue's idf)."""
    counts = lexical.hashed_counts(pl.Series(texts, dtype=pl.String))
    n, frequency = counts.shape[0], np.bincount(counts.indices, minlength=lexical.N_HASHED)
    counts.data = np.log1p(counts.data)
    bags = (counts @ sp.diags(np.log((1.0 + n) / (1.0 + frequency)) + 1.0)).toarray()
    return float(bags[a] @ bags[b] / (np.linalg.norm(bags[a]) * np.linalg.norm(bags[b])))


def test_lexical_similarity_known_answer(similarity_path: str) -> None:
    """Same words: cosine 1; no shared word: about 0; the same words in another order share the words but not
    the word pairs, as the unprojected TF-IDF says (to the projection's error at 4,096 dimensions)."""
    items = catalogue()
    items = items.with_columns(text=pl.Series(LEXICON, dtype=pl.String))
    block = LexicalSimilarity(LexicalConfig(short_term=2, dim=4096)).fit(context(histories_from_rows([[0]]), items))
    histories = histories_from_rows([[2, 0], [3], []])
    out = block.transform(pairs([(0, 1), (0, 2), (0, 5), (1, 0), (2, 0)]), histories)
    np.testing.assert_allclose(out["lex_last"][0], 1.0, rtol=1e-5)
    assert abs(out["lex_last"][1]) < 0.1  # green pear tart vs red apple pie
    reordered = exact_lexical_cosine(LEXICON, 0, 5)
    assert 0.3 < reordered < 0.9
    np.testing.assert_allclose(out["lex_last"][2], reordered, atol=0.1)
    np.testing.assert_allclose(out["lex_recent_max"][1], 1.0, rtol=1e-5)  # item 2 is among the last two
    assert out["lex_last"][3] == 0.0  # an empty text has a zero vector
    assert np.isnan(out["lex_last"][4])  # an empty history


def test_lexical_similarity_new_items_get_vectors_from_their_text() -> None:
    items = catalogue().with_columns(text=pl.Series(LEXICON, dtype=pl.String))
    block = LexicalSimilarity(LexicalConfig(dim=256)).fit(context(histories_from_rows([[0]]), items))
    grown = pl.concat([items, pl.DataFrame({"item_id": [6], "text": ["green pear tart"]})])
    twin = block.extend_items(grown, np.zeros((7, 4), np.float32), 6)
    np.testing.assert_array_equal(twin.vectors_[6], block.vectors_[2])
    out = twin.transform(pairs([(0, 6)]), histories_from_rows([[2]]))
    np.testing.assert_allclose(out["lex_last"].to_numpy(), [1.0], rtol=1e-5)
    with pytest.raises(DataError, match="'text'"):
        LexicalSimilarity().fit(context(histories_from_rows([[0]]), items.drop("text")))


def test_text_similarity_top_items_known_answer() -> None:
    """The similar-items source: each query's items by cosine to the normalised mean of its last ``short_term``
    items, best first; history items excluded when asked, -1 where the catalogue runs out or the history is
    empty."""
    block = TextSimilarity(SimilarityConfig(short_term=2)).fit(context(histories_from_rows([[0]]), vectors=VECTORS))
    histories = histories_from_rows([[0, 1, 2], [4], []])
    got = block.top_items(histories, 5, exclude=histories)
    # query 0: profile (0, 1, 1) / sqrt(2); left after excluding 0, 1, 2: item 5 (1.0), 3 (0.5), 4 (0.0)
    np.testing.assert_array_equal(got[0], [5, 3, 4, -1, -1])
    np.testing.assert_array_equal(got[1, :2], [0, 3])  # profile (1, 0, 0): item 0 (1.0), then 3 (1 / sqrt(2))
    np.testing.assert_array_equal(got[2], [-1] * 5)
    unmasked = block.top_items(histories, 3)
    assert unmasked[0, 0] == 5 and set(unmasked[0, 1:].tolist()) == {1, 2}  # tied at 1 / sqrt(2)
    assert unmasked[1, :2].tolist() in ([0, 4], [4, 0])  # item 4 is item 0's direction
    with pytest.raises(DataError, match="item rows"):
        block.top_items(histories_from_rows([[9]]), 2)


def test_lexical_top_items_propose_items_sharing_words() -> None:
    items = catalogue().with_columns(text=pl.Series(LEXICON, dtype=pl.String))
    block = LexicalSimilarity(LexicalConfig(dim=4096)).fit(context(histories_from_rows([[0]]), items))
    histories = histories_from_rows([[0], [2]])
    got = block.top_items(histories, 2, exclude=histories)
    assert got[0].tolist() == [1, 5]  # the same text, then the same words in another order
    assert got[1, 0] != 2  # the history item itself is excluded


@pytest.mark.parametrize(("field", "value"), [("short_term", 0), ("dim", 0), ("dim", 2.5), ("seed", -1)])
def test_lexical_config_rejects(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        LexicalConfig(**{field: value})  # type: ignore[arg-type]


def test_text_similarity_rejects_vectors_of_the_wrong_shape() -> None:
    with pytest.raises(DataError, match="item_vectors"):
        TextSimilarity().fit(context(histories_from_rows([[0]]), vectors=VECTORS[:4]))


@pytest.mark.parametrize("short_term", [0, -1, 2.5, True])
def test_similarity_config_rejects(short_term: object) -> None:
    with pytest.raises(ConfigError, match="short_term"):
        SimilarityConfig(short_term=short_term)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ CategoryAffinity
GENRES = ["Action|Comedy", "Comedy", "Drama , Action", "", "Drama", None]


def catalogue(**extra: Sequence[object]) -> pl.DataFrame:
    return pl.DataFrame({"item_id": range(6), "text": ["x"] * 6, **extra})


@pytest.mark.parametrize("dense_cells", [affinity_module.DENSE_CELLS, 0], ids=["dense shares", "sparse shares"])
def test_category_affinity_known_answer(dense_cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of reading the history's shares: a dense copy (few queries x categories) and sparse lookups."""
    monkeypatch.setattr(affinity_module, "DENSE_CELLS", dense_cells)
    block = CategoryAffinity().fit(context(histories_from_rows([[0]]), items=catalogue(genres=GENRES)))
    # history of query 0: Action 1/4, Comedy 3/4, Drama 1/4 of its events
    histories = histories_from_rows([[0, 1, 1, 4], [], [4]])
    out = block.transform(pairs([(0, 2), (0, 0), (0, 1), (0, 3), (0, 5), (1, 0), (2, 1)]), histories)
    assert_columns(
        out,
        {
            "category_share_mean": [0.25, 0.5, 0.75, NAN, NAN, NAN, 0.0],
            "category_share_max": [0.25, 0.75, 0.75, NAN, NAN, NAN, 0.0],
        },
    )
    assert block.item_categories_.shape == (6, 3)


def test_category_affinity_reads_list_columns_like_strings() -> None:
    lists = [["Action", "Comedy"], ["Comedy"], ["Drama", "Action"], [], ["Drama"], None]
    events = histories_from_rows([[0]])
    from_lists = CategoryAffinity().fit(context(events, items=catalogue(category=lists)))
    from_text = CategoryAffinity().fit(context(events, items=catalogue(genres=GENRES)))
    assert (from_lists.item_categories_ != from_text.item_categories_).nnz == 0


def test_category_column_detection() -> None:
    assert CategoryAffinity.detect_column(catalogue(category=["a"] * 6, genre=["b"] * 6)) == "genre"
    assert CategoryAffinity.detect_column(catalogue()) is None
    with pytest.raises(ConfigError, match="category column"):
        CategoryAffinity().fit(context(histories_from_rows([[0]]), items=catalogue()))
    with pytest.raises(ConfigError, match="'tags'"):
        CategoryAffinity(CategoryConfig(column="tags")).fit(context(histories_from_rows([[0]]), items=catalogue()))


@pytest.mark.parametrize(("field", "value"), [("column", ""), ("column", 3), ("separator", ""), ("separator", "[")])
def test_category_config_rejects(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CategoryConfig(**{field: value})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- BrandAffinity
BRANDS = ["Acme", "acme ", "Zed", None, "", "Kit"]


def test_brand_affinity_known_answer() -> None:
    block = BrandAffinity().fit(context(histories_from_rows([[0]]), items=catalogue(brand=BRANDS)))
    # query 0 had items 2 (Zed), 0 (Acme), 1 (acme, the same brand), 3 (none): Acme 2/4, newest at age 1
    histories = histories_from_rows([[2, 0, 1, 3], [], [5]])
    out = block.transform(pairs([(0, 0), (0, 1), (0, 2), (0, 5), (0, 3), (0, 4), (1, 0), (2, 5), (2, 0)]), histories)
    assert_columns(
        out,
        {
            "brand_share": [0.5, 0.5, 0.25, 0.0, NAN, NAN, NAN, 1.0, 0.0],
            "brand_events_since": [1.0, 1.0, 3.0, NAN, NAN, NAN, NAN, 0.0, NAN],
        },
    )
    assert block.item_brand_[0] == block.item_brand_[1] != 0
    assert block.item_brand_[3] == block.item_brand_[4] == 0


def test_brand_affinity_new_items_match_their_brand() -> None:
    """An item appended after fitting with a known brand counts the history events of that brand; an unknown
    brand or a catalogue without the column gives it none."""
    block = BrandAffinity().fit(context(histories_from_rows([[0]]), items=catalogue(brand=BRANDS)))
    grown = pl.concat(
        [catalogue(brand=BRANDS), pl.DataFrame({"item_id": [6, 7], "text": ["x", "y"], "brand": ["ZED", "New"]})]
    )
    twin = block.extend_items(grown, np.zeros((8, 4), np.float32), 6)
    histories = histories_from_rows([[2, 2, 0]])
    out = twin.transform(pairs([(0, 6), (0, 7)]), histories)
    assert_columns(out, {"brand_share": [2 / 3, 0.0], "brand_events_since": [1.0, NAN]})
    bare = block.extend_items(catalogue().vstack(pl.DataFrame({"item_id": [6], "text": ["x"]})), np.zeros((7, 4)), 6)
    assert bare.item_brand_[6] == 0 and block.item_brand_.size == 6


def test_brand_affinity_rejects_a_missing_or_list_column() -> None:
    with pytest.raises(ConfigError, match="brand column 'brand'"):
        BrandAffinity().fit(context(histories_from_rows([[0]]), items=catalogue()))
    with pytest.raises(ConfigError, match="one label per item"):
        BrandAffinity(BrandConfig(column="tags")).fit(
            context(histories_from_rows([[0]]), items=catalogue(tags=[["a"]] * 6))
        )
    with pytest.raises(ConfigError, match="column"):
        BrandConfig(column="")


# ----------------------------------------------------------------------------------------- ItemRatings
def weighted(rows: list[list[tuple[int, float]]]) -> Histories:
    """Histories from ``(item_idx, weight)`` events, one time step apart."""
    histories = timed([[(i, t) for t, (i, _) in enumerate(r)] for r in rows])
    return dataclasses.replace(histories, weights=np.array([w for r in rows for _, w in r], dtype=np.float32))


def test_item_ratings_known_answer() -> None:
    # past events: item 0 rated 5, 5, 2 (sum 12, 3 events), item 1 rated 4 (sum 4), 8 events in all, mean 3.5
    events = weighted([[(0, 5.0), (1, 4.0), (2, 1.0)], [(0, 5.0), (3, 3.0)], [(0, 2.0), (2, 4.0), (4, 4.0)]])
    block = ItemRatings(RatingConfig(prior_events=2.0)).fit(context(events))
    histories = weighted([[(1, 2.0), (3, 4.0)], []])  # query 0 rates 3 on average
    out = block.transform(pairs([(0, 0), (0, 1), (0, 5), (1, 0)]), histories)
    item0, item1 = (12 + 2 * 3.5) / 5, (4 + 2 * 3.5) / 3
    assert_columns(
        out,
        {
            "item_mean_weight": [item0, item1, 3.5, item0],  # item 5 has no events: the mean of all
            "item_weight_gap": [item0 - 3.0, item1 - 3.0, 0.5, NAN],  # query 1 has no history
        },
    )


def test_item_ratings_without_weights_are_nan() -> None:
    """Implicit data (no weights at fit) gives NaN columns; so does the gap of a history without weights."""
    unweighted = histories_from_rows([[0, 1], [2]])
    out = ItemRatings().fit(context(unweighted)).transform(pairs([(0, 0), (1, 3)]), unweighted)
    assert np.isnan(columns(out, ["item_mean_weight", "item_weight_gap"])).all()
    fitted = ItemRatings().fit(context(weighted([[(0, 4.0), (1, 2.0)]])))
    out = fitted.transform(pairs([(0, 0)]), unweighted)
    assert_columns(out, {"item_mean_weight": [(4 + 10 * 3.0) / 11], "item_weight_gap": [NAN]})


@pytest.mark.parametrize("prior", [0, -1.0, float("nan"), True, "10"])
def test_rating_config_rejects(prior: object) -> None:
    with pytest.raises(ConfigError, match="prior_events"):
        RatingConfig(prior_events=prior)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- RepeatSignals
def test_repeat_signals_known_answer() -> None:
    histories = histories_from_rows([[2, 0, 2, 1], []])
    out = RepeatSignals().fit(context(histories)).transform(pairs([(0, 2), (0, 1), (0, 5), (1, 0)]), histories)
    assert_columns(
        out,
        {
            "times_consumed": [2.0, 1.0, 0.0, 0.0],
            "events_since_consumed": [1.0, 0.0, NAN, NAN],
            "user_repeat_ratio": [0.25, 0.25, 0.25, NAN],
        },
    )


# ----------------------------------------------------------------------------------------- CoOccurrence
def test_cooccurrence_counts_by_window() -> None:
    events = histories_from_rows([[0, 1, 2], [0, 0, 1]])
    one = cooccurrence_counts(events, 4, window=1).toarray()
    two = cooccurrence_counts(events, 4, window=2).toarray()
    expected_one = np.zeros((4, 4))
    expected_one[0, 1] = expected_one[1, 0] = 2  # (0,1) in both users; (0,0) is the same item
    expected_one[1, 2] = expected_one[2, 1] = 1
    np.testing.assert_array_equal(one, expected_one)
    expected_two = expected_one.copy()
    expected_two[0, 1] = expected_two[1, 0] = 3  # the second user's first 0 and its 1, two steps apart
    expected_two[0, 2] = expected_two[2, 0] = 1
    np.testing.assert_array_equal(two, expected_two)


def test_cooccurrence_known_answer() -> None:
    config = CoOccurrenceConfig(window=1, recent=2, half_life=1.0)
    block = CoOccurrence(config).fit(context(histories_from_rows([[0, 1, 2], [0, 0, 1]])))
    c01, c12 = 2 / SQ6, 1 / SQ2  # counts 2 and 1 over sqrt(3 * 2) and sqrt(2 * 1)
    # query 0: newest 1 (weight 1), then 0 (weight 0.5); item 2 is three events back, beyond `recent`
    histories = histories_from_rows([[2, 0, 1], []])
    out = block.transform(pairs([(0, 0), (0, 2), (0, 1), (0, 3), (1, 0)]), histories)
    assert_columns(
        out,
        {
            "cooc_score": [c01, c12, 0.5 * c01, 0.0, NAN],
            "cooc_max": [c01, c12, c01, 0.0, NAN],
        },
    )


@pytest.mark.parametrize("rows_per_block", [1, 3, 65_536])
def test_cooccurrence_in_place_scaling_equals_the_diagonal_products(rows_per_block: int) -> None:
    """The in-place block scaling gives bit for bit what ``diag(s) @ C @ diag(s)`` in float64 then float32 gave."""
    rng = np.random.default_rng(0)
    counts = sp.random(50, 50, density=0.2, random_state=1, dtype=np.float32, format="csr")
    counts.data = rng.integers(1, 9, counts.nnz).astype(np.float32)
    counts = (counts + counts.T).tocsr()
    scale = np.where(rng.random(50) < 0.1, 0.0, 1.0 / np.sqrt(rng.integers(1, 40, 50)))
    expected = (sp.diags(scale) @ counts @ sp.diags(scale)).astype(np.float32).toarray()
    got = _scale_symmetric(counts.copy(), scale, rows_per_block)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.toarray(), expected)


def test_cooccurrence_score_equals_recency_weighted_matrix_product() -> None:
    """The per-position gather is the fast path of gathering ``W @ C`` (the reference) at the pairs."""
    rng = np.random.default_rng(3)
    events = histories_from_rows([list(rng.integers(0, 30, rng.integers(0, 25))) for _ in range(40)])
    config = CoOccurrenceConfig(window=4, recent=6, half_life=2.0)
    block = CoOccurrence(config).fit(context(events, items=pl.DataFrame({"item_id": range(30)})))
    query, items = rng.integers(0, 40, 500), rng.integers(0, 30, 500)
    out = block.transform(pairs(list(zip(query.tolist(), items.tolist(), strict=True))), events)
    reference = (recency_matrix(events, 30, config.half_life, config.recent) @ block.matrix_).toarray()[query, items]
    reference[events.lengths[query] == 0] = NAN
    np.testing.assert_allclose(out["cooc_score"].to_numpy(), reference, rtol=1e-5, atol=1e-7)


def test_cooccurrence_source_scores_are_the_feature_over_the_whole_catalogue() -> None:
    """The co-occurrence candidate source ranks items by ``score_sparse``: it must be ``cooc_score`` at every
    (query, item) pair, zero where nothing co-occurs, and empty for an empty history."""
    rng = np.random.default_rng(4)
    events = histories_from_rows([list(rng.integers(0, 20, rng.integers(0, 15))) for _ in range(25)] + [[]])
    config = CoOccurrenceConfig(window=3, recent=4, half_life=1.5)
    block = CoOccurrence(config).fit(context(events, items=pl.DataFrame({"item_id": range(20)})))
    scores = block.score_sparse(events)
    assert scores.shape == (26, 20) and scores.dtype == np.float32
    query, items = np.repeat(np.arange(26), 20), np.tile(np.arange(20), 26)
    out = block.transform(pairs(list(zip(query.tolist(), items.tolist(), strict=True))), events)
    feature = out["cooc_score"].to_numpy().reshape(26, 20)
    empty = events.lengths == 0
    assert empty[25] and empty.sum() < 26
    np.testing.assert_allclose(scores.toarray()[~empty], feature[~empty], rtol=1e-5, atol=1e-7)
    assert scores[empty].nnz == 0 and np.isnan(feature[empty]).all()


@pytest.mark.parametrize(
    ("lookup", "max_items", "cells"),
    [(0, 0, 1 << 22), (0, 1 << 17, 1 << 22), (0, 1 << 17, 30), (0, 1 << 17, 75), (5_000, 1 << 17, 1 << 22)],
)
def test_cooccurrence_row_buffer_and_lookups_equal_the_binary_search(
    lookup: int, max_items: int, cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three ways to read ``C[history item, candidate]`` (binary search, row buffer, dense lookups) give the
    same columns bit for bit, with 1, 2 or every query per buffer chunk, queries repeated and out of order, and
    an explicit max over several ages."""
    rng = np.random.default_rng(5)
    events = histories_from_rows([list(rng.integers(0, 30, rng.integers(0, 25))) for _ in range(40)])
    block = CoOccurrence(CoOccurrenceConfig(window=4, recent=6)).fit(
        context(events, items=pl.DataFrame({"item_id": range(30)}))
    )
    frame = pairs(list(zip(rng.integers(0, 40, 600).tolist(), rng.integers(0, 30, 600).tolist(), strict=True)))
    monkeypatch.setattr(_common, "LOOKUP_MAX_ITEMS", 0)
    monkeypatch.setattr(_common, "DENSE_MAX_ITEMS", 0)  # the binary search: the reference
    expected = block.transform(frame, events)
    monkeypatch.setattr(_common, "LOOKUP_MAX_ITEMS", lookup)
    monkeypatch.setattr(_common, "DENSE_MAX_ITEMS", max_items)
    monkeypatch.setattr(_common, "DENSE_CELLS", cells)  # 30 cells: one query per chunk; 75: two
    got = block.transform(frame, events)
    names = ["cooc_score", "cooc_max"]
    np.testing.assert_array_equal(columns(got, names), columns(expected, names))
    assert (got["cooc_max"].to_numpy() > 0).sum() > 100  # the pairs do co-occur: the test compares real values


@pytest.mark.parametrize("touched", [30, 4])  # every row looked up (no copy), or 4 of the 30 (copied out)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.6])
def test_sparse_values_equal_dense_lookups(density: float, touched: int) -> None:
    """The keyed lookups of the co-occurrence and transition features against the dense matrix (the reference)."""
    rng = np.random.default_rng(4)
    matrix = sp.random(30, 25, density=density, format="csr", dtype=np.float32, random_state=5)
    for r in range(matrix.shape[0]):
        span = slice(matrix.indptr[r], matrix.indptr[r + 1])
        order = rng.permutation(span.stop - span.start)
        matrix.indices[span], matrix.data[span] = matrix.indices[span][order], matrix.data[span][order]
    matrix.has_sorted_indices = False  # each row shuffled above
    dense = matrix.toarray()
    rows, cols = rng.choice(30, touched, replace=False)[rng.integers(0, touched, 2000)], rng.integers(0, 25, 2000)
    np.testing.assert_array_equal(_common.sparse_values(matrix, rows, cols), dense[rows, cols])
    assert density == 0.0 or np.count_nonzero(dense[rows, cols]) > 20  # real values are compared


@pytest.mark.parametrize(
    ("field", "value"), [("window", 0), ("recent", -2), ("half_life", 0.0), ("half_life", math.inf)]
)
def test_cooccurrence_config_rejects(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CoOccurrenceConfig(**{field: value})  # type: ignore[arg-type]


def test_collaborative_known_answer() -> None:
    """Two users hold items 0 and 1, a third holds 2: with l2 = 1, G = [[3, 2, 0], [2, 3, 0], [0, 0, 2]] and
    P = G^-1 has P[0, 1] = -2/5, P[1, 1] = 3/5, so B[0, 1] = B[1, 0] = 2/3 and nothing links item 2 to them."""
    events = timed([[(0, 1), (1, 2)], [(1, 1), (0, 2), (0, 3)], [(2, 1)]])
    block = Collaborative(CollaborativeConfig(l2=1.0)).fit(context(events))
    np.testing.assert_allclose(block.weights_.toarray(), [[0, 2 / 3, 0], [2 / 3, 0, 0], [0, 0, 0]], atol=1e-6)
    np.testing.assert_array_equal(block.columns_, [0, 1, 2, -1, -1, -1])  # items 3-5 have no events
    histories = timed([[(0, 5)], [(0, 5), (0, 6), (0, 7)], [(0, 5), (1, 6)], [], [(4, 5)]])
    frame = pairs([(0, 1), (1, 1), (2, 1), (2, 0), (0, 2), (0, 3), (3, 1), (4, 1)])
    got = block.transform(frame, histories)["ease_score"].to_numpy()
    # a repeated item counts once; a held item scores from the others; item 3 and the empty history are NaN;
    # a history of uncovered items scores 0
    np.testing.assert_allclose(got, [2 / 3, 2 / 3, 2 / 3, 2 / 3, 0, NAN, NAN, 0], atol=1e-6)


def test_spd_inverse_equals_numpys_inverse_across_blocks() -> None:
    """The Cholesky inverse (mirrored block by block, the last block partial) equals ``np.linalg.inv``, exactly
    symmetric; a matrix that is not positive definite is a DataError, not a wrong answer."""
    rng = np.random.default_rng(0)
    a = rng.random((60, 50))
    gram = a.T @ a + np.eye(50)
    got = collaborative_module.spd_inverse(gram.copy(), block=16)
    np.testing.assert_allclose(got, np.linalg.inv(gram), rtol=1e-9, atol=1e-12)
    assert np.array_equal(got, got.T) and got.flags["C_CONTIGUOUS"]
    with pytest.raises(DataError, match="positive definite"):
        collaborative_module.spd_inverse(np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_collaborative_covers_the_most_frequent_items_and_keeps_the_largest_weights() -> None:
    events = timed([[(0, 1), (1, 2), (2, 3)], [(0, 1), (1, 2)], [(0, 1), (3, 2)]])
    block = Collaborative(CollaborativeConfig(l2=1.0, max_items=2)).fit(context(events))
    np.testing.assert_array_equal(block.columns_, [0, 1, -1, -1, -1, -1])  # 3 and 2 events; ties broken by index
    wide = Collaborative(CollaborativeConfig(l2=1.0)).fit(context(events))
    narrow = Collaborative(CollaborativeConfig(l2=1.0, neighbors=1)).fit(context(events))
    dense = wide.weights_.toarray()
    assert np.all(np.diff(narrow.weights_.indptr) <= 1)
    for row, kept in enumerate(narrow.weights_.toarray()):
        if kept.any():
            np.testing.assert_allclose(np.abs(kept).max(), np.abs(dense[row]).max(), rtol=1e-6)


def test_collaborative_scores_in_chunks_equal_one_chunk(
    fit_context: FitContext, queries: tuple[pl.DataFrame, Histories], monkeypatch: pytest.MonkeyPatch
) -> None:
    frame, histories = queries
    block = FACTORIES["collaborative"]().fit(fit_context)
    expected = columns(block.transform(frame, histories), block.names)
    monkeypatch.setattr(collaborative_module, "DENSE_CELLS", 40)  # one or two queries per chunk
    np.testing.assert_array_equal(columns(block.transform(frame, histories), block.names), expected)
    assert np.isfinite(expected).any() and np.isnan(expected).any()


def test_collaborative_dense_weights_score_exactly_like_the_sparse_ones(
    fit_context: FitContext, queries: tuple[pl.DataFrame, Histories], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small catalogue scores through a dense float64 copy of ``B``: the same float64 terms in the same order as
    the sparse product, so the same bits."""
    frame, histories = queries
    block = FACTORIES["collaborative"]().fit(fit_context)
    assert isinstance(block._scoring_weights(), np.ndarray)  # this catalogue is small: the dense copy
    dense_path = columns(block.transform(frame, histories), block.names), block.score_all(histories)
    monkeypatch.setattr(collaborative_module, "DENSE_WEIGHT_BYTES", 0)
    assert sp.issparse(block._scoring_weights())
    np.testing.assert_array_equal(columns(block.transform(frame, histories), block.names), dense_path[0])
    np.testing.assert_array_equal(block.score_all(histories), dense_path[1])
    assert np.isfinite(dense_path[0]).sum() > 10 and np.unique(dense_path[0][np.isfinite(dense_path[0])]).size > 5


def test_collaborative_top_items_are_the_best_positive_unseen_scores(
    fit_context: FitContext, queries: tuple[pl.DataFrame, Histories], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, histories = queries
    block = FACTORIES["collaborative"]().fit(fit_context)
    every = pairs([(q, i) for q in range(histories.n_users) for i in range(N_ITEMS)])
    dense = columns(block.transform(every, histories), block.names).reshape(histories.n_users, N_ITEMS)
    np.testing.assert_array_equal(block.score_all(histories), dense)
    top = block.top_items(histories, 5, exclude=histories)  # (n_queries, 5)
    for q in range(histories.n_users):
        seen = set(histories.item_idx[histories.indptr[q] : histories.indptr[q + 1]].tolist())
        ranked = sorted((i for i in range(N_ITEMS) if dense[q, i] > 0 and i not in seen), key=lambda i: -dense[q, i])
        assert top[q][top[q] >= 0].tolist() == ranked[:5]
        assert np.all(top[q][len(ranked[:5]) :] == -1)
    monkeypatch.setattr(collaborative_module, "DENSE_CELLS", 40)  # one or two queries per chunk
    np.testing.assert_array_equal(block.top_items(histories, 5, exclude=histories), top)
    assert (top >= 0).sum() > histories.n_users  # the test has positive scores to rank


@pytest.mark.parametrize("every_item_has_events", [True, False])
def test_collaborative_new_items_are_not_covered(every_item_has_events: bool) -> None:
    n_old = 3 if every_item_has_events else 6  # True: the weights cover the whole catalogue (and are padded)
    items = pl.DataFrame({"item_id": range(n_old), "text": ["x"] * n_old})
    events = timed([[(0, 1), (1, 2)], [(1, 1), (0, 2), (2, 3)], [(2, 1)]])
    block = Collaborative(CollaborativeConfig(l2=1.0)).fit(context(events, items, np.eye(n_old, dtype=np.float32)))
    grown = block.extend_items(pl.DataFrame({"item_id": range(n_old + 2)}), np.zeros((n_old + 2, 4)), n_old)
    np.testing.assert_array_equal(grown.columns_[n_old:], [-1, -1])
    histories = timed([[(0, 1), (n_old, 2)]])  # a new item in the history too
    got = grown.transform(pairs([(0, n_old + 1), (0, 1), (0, 2)]), histories)["ease_score"].to_numpy()
    expected = block.transform(pairs([(0, 1), (0, 2)]), timed([[(0, 1)]]))["ease_score"].to_numpy()
    assert np.isnan(got[0]) and np.all(np.isfinite(expected))
    np.testing.assert_array_equal(got[1:], expected)


@pytest.mark.parametrize(("field", "value"), [("l2", 0.0), ("l2", -1.0), ("max_items", 0), ("neighbors", 0)])
def test_collaborative_config_rejects(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CollaborativeConfig(**{field: value})  # type: ignore[arg-type]


# -------------------------------------------------------------------------- the contract of every block
N_ITEMS, N_USERS = 40, 30
FACTORIES: dict[str, Callable[[], FeatureBlock]] = {
    "item": lambda: ItemStats(ItemStatsConfig(recent_fraction=0.3)),
    "user": UserActivity,
    "similarity": lambda: TextSimilarity(SimilarityConfig(short_term=3)),
    "category": CategoryAffinity,
    "brand": BrandAffinity,
    "lexical": lambda: LexicalSimilarity(LexicalConfig(short_term=3, dim=64)),
    "rating": lambda: ItemRatings(RatingConfig(prior_events=2.0)),
    "repeat": RepeatSignals,
    "timely": lambda: TimelyPopularity(TimelyConfig(n_bins=10, window_bins=2)),
    "taste": lambda: PopularityTaste(TasteConfig(recent=3)),
    "cooccurrence": lambda: CoOccurrence(CoOccurrenceConfig(window=3, recent=4)),
    "collaborative": lambda: Collaborative(CollaborativeConfig(l2=2.0, max_items=30, neighbors=8)),
}
STATELESS = {"user", "repeat"}


def random_histories(rng: np.random.Generator, n: int, start: int = 0) -> Histories:
    rows = []
    for size in rng.integers(0, 12, n):  # a handful of test queries
        items, jitter = rng.integers(0, N_ITEMS, size), rng.integers(0, 5, size)
        rows.append([(int(i), start + 10 * k + int(j)) for k, (i, j) in enumerate(zip(items, jitter, strict=True))])
    rows[0] = rows[0] or [(1, start)]  # query 0 is the one whose leakage we check: give it a history
    rows[1] = []  # and keep one empty history
    return timed(rows)


@pytest.fixture(scope="module")
def fit_context() -> FitContext:
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b", "c", "d", "e"])
    genres = ["|".join(rng.choice(labels, int(rng.integers(0, 3)), replace=False)) for _ in range(N_ITEMS)]
    brands = rng.choice(np.array(["acme", "zed", "kit", ""]), N_ITEMS).tolist()
    words = np.array(["grit", "roll", "glue", "tape", "drill", "bit", "3/8", "1.75mm"])
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 5)))) for _ in range(N_ITEMS)]
    items = pl.DataFrame({"item_id": range(N_ITEMS), "text": texts, "genres": genres, "brand": brands})
    events = random_histories(rng, 50)
    events = dataclasses.replace(events, weights=rng.integers(1, 6, events.item_idx.size).astype(np.float32))  # 1-5
    return FitContext(events, items, rng.normal(size=(N_ITEMS, 8)).astype(np.float32))


@pytest.fixture(scope="module")
def queries() -> tuple[pl.DataFrame, Histories]:
    rng = np.random.default_rng(1)
    histories = random_histories(rng, N_USERS, start=1000)
    n = 400
    frame = pairs(list(zip(rng.integers(0, N_USERS, n).tolist(), rng.integers(0, N_ITEMS, n).tolist(), strict=True)))
    return frame, histories


@pytest.fixture(params=list(FACTORIES))
def block(request: pytest.FixtureRequest, fit_context: FitContext) -> FeatureBlock:
    return FACTORIES[request.param]().fit(fit_context)


def test_rows_order_and_dtypes_are_kept(block: FeatureBlock, queries: tuple[pl.DataFrame, Histories]) -> None:
    frame, histories = queries
    out = block.transform(frame, histories)
    assert out.columns == [*frame.columns, *block.names]
    assert out.select(frame.columns).equals(frame)
    assert all(out.schema[name] == pl.Float32 for name in block.names)
    assert out.select(pl.col(block.names).null_count()).sum_horizontal().item() == 0  # NaN, never null


def test_row_order_does_not_matter(block: FeatureBlock, queries: tuple[pl.DataFrame, Histories]) -> None:
    frame, histories = queries
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=7)
    expected = block.transform(frame, histories)
    got = block.transform(shuffled, histories).sort("tag")
    np.testing.assert_array_equal(columns(got, block.names), columns(expected, block.names))


def test_blocks_of_pairs_equal_one_block(
    block: FeatureBlock, queries: tuple[pl.DataFrame, Histories], monkeypatch: pytest.MonkeyPatch
) -> None:
    frame, histories = queries
    expected = block.transform(frame, histories)
    monkeypatch.setattr(_common, "PAIR_BLOCK", 7)  # many blocks, most of them cutting through a query
    np.testing.assert_array_equal(
        columns(block.transform(frame, histories), block.names), columns(expected, block.names)
    )


def test_fit_twice_equals_fit_once(block: FeatureBlock, fit_context: FitContext) -> None:
    once = block.state()  # stateless blocks: both are empty
    assert bool(once) == bool(block.state_attributes)
    twice = block.fit(fit_context).state()
    assert once.keys() == twice.keys()
    assert all(np.array_equal(once[k], twice[k]) for k in once)


@pytest.mark.parametrize("group", list(FACTORIES))
def test_state_round_trip(group: str, fit_context: FitContext, queries: tuple[pl.DataFrame, Histories]) -> None:
    frame, histories = queries
    fitted = FACTORIES[group]().fit(fit_context)
    restored = FACTORIES[group]().load_state(fitted.state())
    np.testing.assert_array_equal(
        columns(restored.transform(frame, histories), fitted.names),
        columns(fitted.transform(frame, histories), fitted.names),
    )


def test_unfitted_block_refuses_to_transform(queries: tuple[pl.DataFrame, Histories]) -> None:
    frame, histories = queries
    for group, factory in FACTORIES.items():
        if group not in STATELESS:
            with pytest.raises(NotFittedError):
                factory().transform(frame, histories)


def test_query_outside_the_histories_is_refused(block: FeatureBlock, queries: tuple[pl.DataFrame, Histories]) -> None:
    _, histories = queries
    with pytest.raises(DataError, match="query"):
        block.transform(pairs([(N_USERS, 0)]), histories)


def test_a_query_reads_only_its_own_history(block: FeatureBlock, queries: tuple[pl.DataFrame, Histories]) -> None:
    """Query 0's columns are the same whether or not the other queries' histories hold events after its cut-off
    (including its label item), and when query 0 is alone."""
    _, histories = queries
    label = 5
    own = histories.select(np.array([0]))
    later = int(histories.timestamps.max()) + 1000
    own_rows, *others = [events_of(histories, u) for u in range(histories.n_users)]
    with_future = timed([own_rows, *[[*r, (label, later), (label, later + 1), (3, later + 2)] for r in others]])
    without_label = timed([own_rows, *[[(i, t) for i, t in r if i != label] for r in others]])
    frame = pairs([(0, i) for i in range(N_ITEMS)] + [(1, label), (2, label)])
    mine = pl.col(QUERY) == 0
    reference = columns(block.transform(frame, histories).filter(mine), block.names)
    for variant in (with_future, without_label):
        np.testing.assert_array_equal(columns(block.transform(frame, variant).filter(mine), block.names), reference)
    alone = columns(block.transform(frame.filter(mine), own), block.names)
    np.testing.assert_array_equal(alone, reference)


def test_ranking_features_on_threads_equal_the_blocks_one_after_another(
    fit_context: FitContext, queries: tuple[pl.DataFrame, Histories]
) -> None:
    """Every group side by side on threads gives the columns of applying each block in turn, then ``relative``;
    a column the frame already holds under a feature's name is replaced, not duplicated."""
    frame, histories = queries
    rng = np.random.default_rng(3)
    frame = frame.with_columns(
        retrieval_score=pl.Series(rng.normal(size=frame.height), dtype=pl.Float32),
        retrieval_rank=pl.Series(rng.integers(1, 50, frame.height), dtype=pl.UInt32),
        transition_rank=pl.Series(rng.integers(1, 50, frame.height), dtype=pl.UInt32),
        popularity_rank=pl.Series(rng.integers(1, 50, frame.height), dtype=pl.UInt32),
    )
    space = rng.normal(size=(fit_context.n_items, 8)).astype(np.float32)
    every = dataclasses.replace(fit_context, learned_vectors=space)
    features = RankingFeatures(FeatureConfig(groups=GROUPS)).fit(every)
    assert set(features.blocks_ or {}) == set(GROUPS) - {"interest", "source"}  # every block group, category too
    expected = frame
    for block in (features.blocks_ or {}).values():  # "relative" is the last block
        expected = block.transform(expected, histories)
    names = features.feature_names
    for n_threads in (1, 2, 8):
        got = features.transform(frame, histories, n_threads=n_threads)
        assert got.height == frame.height and got.select(frame.columns).equals(frame)
        np.testing.assert_array_equal(columns(got, names), columns(expected, names))
    stale = features.transform(frame.with_columns(sim_last=pl.lit(9.0, pl.Float32)), histories, n_threads=2)
    assert stale.columns.count("sim_last") == 1
    np.testing.assert_array_equal(columns(stale, names), columns(expected, names))
    # the transition scores the candidate stage already holds: read, not multiplied again; same columns
    assert features.transitions is not None
    scores = features.transitions.score_sparse(histories)
    reused = features.transform(frame, histories, n_threads=2, transition_scores=scores)
    np.testing.assert_array_equal(columns(reused, names), columns(expected, names))
    assert (reused["transition_score"] > 0).sum() > 0
    doubled = features.transform(frame, histories, n_threads=2, transition_scores=(scores * 2).tocsr())
    np.testing.assert_array_equal(doubled["transition_score"], expected["transition_score"] * 2)  # it reads them


def test_sparse_state_is_saved_with_int32_indices_and_loaded_without_a_copy(fit_context: FitContext) -> None:
    """A loaded co-occurrence matrix shares the arrays it was loaded from: no second copy while a model loads."""
    fitted = FACTORIES["cooccurrence"]().fit(fit_context)
    state = fitted.state()
    assert state["matrix_.indices"].dtype == np.int32 and state["matrix_.indptr"].dtype == np.int32
    restored = FACTORIES["cooccurrence"]().load_state(state)
    for part in ("data", "indices", "indptr"):
        assert np.shares_memory(getattr(restored.matrix_, part), state[f"matrix_.{part}"])
    old = state | {k: state[k].astype(np.int64) for k in ("matrix_.indices", "matrix_.indptr")}  # older saves
    assert (FACTORIES["cooccurrence"]().load_state(old).matrix_ != fitted.matrix_).nnz == 0
