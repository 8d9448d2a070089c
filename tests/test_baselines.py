"""Known-answer and contract tests of the four baselines and the stages they compose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import polars as pl
import pytest

from recsys._protocols import RecommenderLike
from recsys.data import Histories, item_index
from recsys.errors import ConfigError, DataError, NotFittedError
from recsys.features.collaborative import CollaborativeConfig
from recsys.features.popularity import Popularity, PopularityConfig
from recsys.features.transitions import TransitionConfig, Transitions
from recsys.models.baselines import (
    EaseRecommender,
    EaseRecommenderConfig,
    PopularityRecommender,
    PopularityRecommenderConfig,
    TransitionRecommender,
    TransitionRecommenderConfig,
    ZeroShotTextRecommender,
    ZeroShotTextRecommenderConfig,
)
from recsys.models.text_encoder import TextEncoderConfig
from recsys.models.zero_shot import ZeroShotConfig, ZeroShotUserEncoder

Recommender: TypeAlias = PopularityRecommender | TransitionRecommender | ZeroShotTextRecommender | EaseRecommender
Factory: TypeAlias = Callable[[int], Recommender]
KINDS = ["popularity", "transition", "zero_shot", "ease"]


def events(rows: Sequence[tuple[int, int]]) -> pl.DataFrame:
    """Interactions from (user, item) rows; the row number is the timestamp."""
    users, items = zip(*rows, strict=True) if rows else ((), ())
    return pl.DataFrame(
        {"user_id": list(users), "item_id": list(items), "timestamp": list(range(len(rows)))},
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64},
    )


def rec_items(recs: pl.DataFrame, user: int) -> list[int]:
    return recs.filter(pl.col("user_id") == user).sort("rank")["item_id"].to_list()


@pytest.fixture(scope="module")
def text_config(tmp_path_factory: pytest.TempPathFactory) -> TextEncoderConfig:
    return TextEncoderConfig(cache_dir=str(tmp_path_factory.mktemp("embeddings")), show_progress=False)


@pytest.fixture(scope="module")
def make(text_config: TextEncoderConfig) -> Callable[[str], Factory]:
    """``make(kind)(chunk_size)``: an unfitted recommender of that kind."""

    def factory(kind: str) -> Factory:
        def build(chunk_size: int = 1024) -> Recommender:
            if kind == "popularity":
                return PopularityRecommender(PopularityRecommenderConfig(chunk_size=chunk_size))
            if kind == "transition":
                return TransitionRecommender(TransitionRecommenderConfig(chunk_size=chunk_size))
            if kind == "ease":
                return EaseRecommender(EaseRecommenderConfig(ease=CollaborativeConfig(l2=1.0), chunk_size=chunk_size))
            return ZeroShotTextRecommender(ZeroShotTextRecommenderConfig(text=text_config, chunk_size=chunk_size))

        return build

    return factory


@pytest.fixture(scope="module")
def zero_shot(
    text_config: TextEncoderConfig, topic_interactions: pl.DataFrame, topic_items: pl.DataFrame
) -> ZeroShotTextRecommender:
    return ZeroShotTextRecommender(ZeroShotTextRecommenderConfig(text=text_config)).fit(topic_interactions, topic_items)


# ----------------------------------------------------------------------------- known answers


def test_zero_shot_gives_a_dogs_user_dog_items_first(
    zero_shot: ZeroShotTextRecommender, topic_items: pl.DataFrame, topic_interactions: pl.DataFrame
) -> None:
    dog_items = set(topic_items.filter(pl.col("topic") == "dogs")["item_id"])
    recs = zero_shot.recommend([0, 1, 2], k=2)
    for user in (0, 1, 2):
        seen = set(topic_interactions.filter(pl.col("user_id") == user)["item_id"])
        assert set(rec_items(recs, user)) == dog_items - seen  # the two unseen dog items


def test_zero_shot_ranks_each_users_own_topic_first(
    zero_shot: ZeroShotTextRecommender, topic_items: pl.DataFrame
) -> None:
    recs = zero_shot.recommend(list(range(9)), k=1).join(topic_items, on="item_id")
    expected = {u: ["dogs", "space", "cooking"][u // 3] for u in range(9)}
    assert dict(recs.select("user_id", "topic").iter_rows()) == expected


def test_zero_shot_scores_are_cosines_in_minus_one_one(zero_shot: ZeroShotTextRecommender) -> None:
    recs = zero_shot.recommend([0], k=18, exclude_seen=False)
    assert recs.height == 18
    assert recs["score"].is_between(-1.0001, 1.0001).all()
    assert recs["score"].is_sorted(descending=True)


def test_transitions_on_a_chain_recommend_c_after_b(topic_items: pl.DataFrame) -> None:
    a, b, c = 0, 1, 2
    train = events([(u, i) for u in range(3) for i in (a, b, c)] + [(9, 10)])
    model = TransitionRecommender().fit(train, topic_items)
    recs = model.recommend([100], k=1, history=events([(100, b)]))
    assert rec_items(recs, 100) == [c]
    recs = model.recommend([100], k=2, history=events([(100, a)]))
    assert rec_items(recs, 100) == [b, c]  # b follows a directly, c two steps later


def test_transitions_fall_back_to_popularity_without_evidence(topic_items: pl.DataFrame) -> None:
    train = events([(0, 5), (1, 5), (2, 5), (0, 7), (1, 7), (0, 3)])
    recs = TransitionRecommender().fit(train, topic_items).recommend([42], k=3)
    assert rec_items(recs, 42) == [5, 7, 3]
    assert (recs["score"] > 0).all()


def test_ease_recommends_what_similar_histories_hold(topic_items: pl.DataFrame) -> None:
    """Users holding 0 and 1 also hold 2; users holding 3 hold 4: a history of {0, 1} is completed by 2, not by
    the more popular 3 or 4, and a user without history gets the popularity order."""
    train = events([(u, i) for u in range(3) for i in (0, 1, 2)] + [(u, i) for u in range(3, 8) for i in (3, 4)])
    model = EaseRecommender(EaseRecommenderConfig(ease=CollaborativeConfig(l2=1.0))).fit(train, topic_items)
    recs = model.recommend([100, 101], k=1, history=events([(100, 0), (100, 1)]))
    assert rec_items(recs, 100) == [2] and recs["score"][0] > 0.1
    assert rec_items(recs, 101) == [3]  # no history: the most popular item (3 and 4 tie; catalogue order)


def test_popularity_ranks_by_count(topic_items: pl.DataFrame) -> None:
    train = events([(0, 5), (1, 5), (2, 5), (0, 2), (1, 2), (3, 7)])
    recs = PopularityRecommender().fit(train, topic_items).recommend([42], k=5)
    assert rec_items(recs, 42) == [5, 2, 7, 0, 1]  # zero counts: ties in catalogue order
    assert recs["score"].to_list() == [3.0, 2.0, 1.0, 0.0, 0.0]
    assert recs["rank"].to_list() == [1, 2, 3, 4, 5]


def test_popularity_window_counts_only_recent_events(topic_items: pl.DataFrame) -> None:
    train = events([(0, 5), (1, 5), (2, 5), (0, 2), (1, 2)])  # timestamps 0..4
    stage = Popularity(PopularityConfig(window_seconds=1)).fit(train, item_index(topic_items))
    assert stage.counts_[2] == 2.0 and stage.counts_[5] == 0.0
    frame = stage.popularity_frame()
    assert frame.schema == pl.Schema({"item_idx": pl.UInt32, "popularity": pl.Float32})
    assert frame.height == 18
    assert stage.score(3).shape == (3, 18)


def test_exclude_seen_removes_history_items_and_off_keeps_them(topic_items: pl.DataFrame) -> None:
    train = events([(0, 5), (1, 5), (2, 5), (1, 2), (2, 2)])
    model = PopularityRecommender().fit(train, topic_items)
    assert rec_items(model.recommend([0], k=2), 0) == [2, 0]
    assert rec_items(model.recommend([0], k=2, exclude_seen=False), 0) == [5, 2]


def test_history_overrides_the_fitted_events(topic_items: pl.DataFrame) -> None:
    train = events([(u, i) for u in range(3) for i in (0, 1, 2)])
    model = TransitionRecommender().fit(train, topic_items)
    fitted = rec_items(model.recommend([0], k=3), 0)
    assert not {0, 1, 2} & set(fitted)  # the fitted history is excluded
    override = rec_items(model.recommend([0], k=1, history=events([(0, 1)])), 0)
    assert override == [2]  # only the override's item is excluded, and it drives the scores


def test_users_without_events_and_empty_user_lists(topic_items: pl.DataFrame) -> None:
    model = PopularityRecommender().fit(events([(0, 5)]), topic_items)
    assert model.recommend([], k=3).height == 0
    assert model.recommend([0, 77], k=2)["user_id"].to_list() == [0, 0, 77, 77]


# ----------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("kind", KINDS)
def test_all_are_recommender_like(make: Callable[[str], Factory], kind: str) -> None:
    assert isinstance(make(kind)(1024), RecommenderLike)


@pytest.mark.parametrize("kind", KINDS)
def test_not_fitted_error_before_fit(make: Callable[[str], Factory], kind: str) -> None:
    model = make(kind)(1024)
    with pytest.raises(NotFittedError, match=r"\.fit\("):
        model.recommend([0], k=3)
    with pytest.raises(NotFittedError):
        model.score_items(pl.DataFrame({"user_id": [0], "item_id": [1]}))


@pytest.mark.parametrize("kind", KINDS)
def test_fit_twice_equals_fit_once(
    make: Callable[[str], Factory], kind: str, topic_interactions: pl.DataFrame, topic_items: pl.DataFrame
) -> None:
    users = [*range(9), 99]
    once = make(kind)(1024).fit(topic_interactions, topic_items).recommend(users, k=5)
    model = make(kind)(1024).fit(events([(0, 17), (1, 16)]), topic_items)
    twice = model.fit(topic_interactions, topic_items).recommend(users, k=5)
    assert once.equals(twice)


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_scoring_equals_unchunked(
    make: Callable[[str], Factory], kind: str, topic_interactions: pl.DataFrame, topic_items: pl.DataFrame
) -> None:
    users = [99, *range(9)]
    whole = make(kind)(1024).fit(topic_interactions, topic_items).recommend(users, k=4)
    chunked = make(kind)(2).fit(topic_interactions, topic_items).recommend(users, k=4)
    # Same items and ranks; scores equal up to BLAS rounding (a matmul of 2 rows and of 10 rows may round
    # differently in the last bit).
    assert whole.drop("score").equals(chunked.drop("score"))
    assert np.allclose(whole["score"].to_numpy(), chunked["score"].to_numpy(), atol=1e-6)
    assert whole["user_id"].unique(maintain_order=True).to_list() == users


@pytest.mark.parametrize("kind", KINDS)
def test_score_items_equals_the_recommended_scores(
    make: Callable[[str], Factory], kind: str, topic_interactions: pl.DataFrame, topic_items: pl.DataFrame
) -> None:
    model = make(kind)(1024).fit(topic_interactions, topic_items)
    recs = model.recommend([99, *range(9)], k=18, exclude_seen=False)
    scored = model.score_items(recs.select("user_id", "item_id").reverse()).reverse()
    assert scored.schema["score"] == pl.Float32
    np.testing.assert_allclose(scored["score"].to_numpy(), recs["score"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_score_items_uses_history_and_rejects_unknown_items(topic_items: pl.DataFrame) -> None:
    train = events([(u, i) for u in range(3) for i in (0, 1, 2)])
    model = TransitionRecommender().fit(train, topic_items)
    pairs = pl.DataFrame({"user_id": [50, 50], "item_id": [2, 0]})
    scores = model.score_items(pairs, history=events([(50, 1)]))["score"].to_list()
    assert scores[0] > 0.5 > scores[1]
    with pytest.raises(DataError, match="not in the fitted catalogue"):
        model.score_items(pl.DataFrame({"user_id": [0], "item_id": [999]}))


def test_bad_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="chunk_size"):
        PopularityRecommenderConfig(chunk_size=0)
    with pytest.raises(ConfigError, match="window"):
        TransitionConfig(window=0)
    with pytest.raises(ConfigError, match="half_life"):
        ZeroShotConfig(half_life=0.0)
    with pytest.raises(ConfigError, match="popularity_weight"):
        EaseRecommenderConfig(popularity_weight=-1.0)


# ----------------------------------------------------------------------------- stages


def chain_histories(sequences: list[list[int]]) -> Histories:
    rows = [(u, i) for u, seq in enumerate(sequences) for i in seq]
    return Histories.from_interactions(
        events(rows),
        item_index(pl.DataFrame({"item_id": list(range(5))})),
        pl.Series("user_id", range(len(sequences))),
    )


def test_transition_matrix_known_values() -> None:
    h = chain_histories([[0, 1, 2], [3]])  # the user boundary must not link 2 -> 3
    raw = Transitions(TransitionConfig(window=3, distance_decay=0.5, normalize=False)).fit(h, 5).matrix_
    assert raw.dtype == np.float32
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[0, 1], expected[0, 2], expected[1, 2] = 1.0, 0.5, 1.0
    np.testing.assert_array_equal(raw.toarray(), expected)
    normalized = Transitions(TransitionConfig(normalize=True)).fit(h, 5).matrix_.toarray()
    np.testing.assert_allclose(normalized[0], [0, 2 / 3, 1 / 3, 0, 0], rtol=1e-6)


@pytest.mark.parametrize(("max_items", "cells"), [(0, 1 << 22), (1 << 17, 1 << 22), (1 << 17, 5), (1 << 17, 12)])
def test_transition_score_pairs_equals_dense_rows(max_items: int, cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Binary search in the sparse rows (max_items 0) or the dense row buffer (1, 2 or 2 users per chunk)."""
    from recsys.features import _common

    monkeypatch.setattr(_common, "DENSE_MAX_ITEMS", max_items)
    monkeypatch.setattr(_common, "DENSE_CELLS", cells)
    rng = np.random.default_rng(1)
    h = chain_histories([list(rng.integers(0, 5, size=n)) for n in (0, 1, 4, 6, 3)])
    stage = Transitions().fit(h, 5)
    dense = stage.score(h)
    users, items = rng.integers(0, 5, size=40), rng.integers(0, 5, size=40)
    pairs = stage.score_pairs(h, users, items, chunk_users=2)
    np.testing.assert_allclose(pairs, dense[users, items], rtol=1e-6)
    assert not dense[0].any()  # empty history
    assert (pairs > 0).sum() > 10
    # the candidate stage's own score_sparse(h), read instead of multiplying again: bit for bit the same
    reused = stage.score_pairs(h, users, items, chunk_users=2, scores=stage.score_sparse(h))
    np.testing.assert_array_equal(reused, pairs)


def test_transition_score_pairs_rejects_scores_of_other_histories() -> None:
    h = chain_histories([[0, 1, 2], [3, 4]])
    stage = Transitions().fit(h, 5)
    other = stage.score_sparse(chain_histories([[0, 1]]))  # one user, not two
    with pytest.raises(DataError, match=r"score_sparse\(histories\)"):
        stage.score_pairs(h, np.array([0, 1]), np.array([1, 2]), scores=other)


def test_zero_shot_encoder_recency_weighted_mean() -> None:
    vectors = np.eye(5, 3, dtype=np.float32)  # items 0..2 are unit axes, 3..4 zero
    encoder = ZeroShotUserEncoder(ZeroShotConfig(half_life=1.0)).fit(vectors)
    users = encoder.encode(chain_histories([[], [1], [0, 1], [0, 1]]))
    assert users.dtype == np.float32 and users.shape == (4, 3)
    np.testing.assert_array_equal(users[0], 0.0)
    np.testing.assert_allclose(users[1], [0, 1, 0])
    np.testing.assert_allclose(users[2], np.array([0.5, 1.0, 0]) / np.sqrt(1.25), rtol=1e-6)
    last_only = ZeroShotUserEncoder(ZeroShotConfig(max_events=1)).fit(vectors).encode(chain_histories([[0, 1]]))
    np.testing.assert_allclose(last_only[0], [0, 1, 0])
