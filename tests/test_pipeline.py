"""The end-to-end pipeline: known answers on synthetic topics, contracts, save/load, real data."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import polars as pl
import pytest
from conftest import TOPICS, require_data

import recsys.pipeline as pipeline_module
from recsys.data import Dataset
from recsys.datasets import load_dataset
from recsys.errors import ConfigError, DataError, ModelFormatError, NotFittedError
from recsys.evaluation import EvalConfig, evaluate_many
from recsys.explain import feature_importance
from recsys.features.ranking import GROUPS, FeatureConfig, RankingFeatures
from recsys.models.baselines import PopularityRecommender
from recsys.models.memory_encoder import MemoryEncoder, MemoryEncoderConfig
from recsys.models.memory_net import MemoryNetConfig
from recsys.models.ranker import RankerConfig, RankerEnsemble
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import (
    Recommender,
    RecommenderConfig,
    before_cutoff,
    pair_dot,
    ranking_settings,
    training_queries,
)


def test_pair_dot_known_answer_and_the_same_bits_on_any_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """``queries[rows] . vectors[cols]`` per pair; with blocks of 7 pairs spread over 1, 2 or 3 threads, the same
    float32 bits."""
    queries = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    vectors = np.array([[3.0, 4.0], [-1.0, 0.5]], np.float32)
    np.testing.assert_array_equal(pair_dot(queries, vectors, np.array([0, 1, 1]), np.array([0, 0, 1])), [3, 8, 1])
    rng = np.random.default_rng(0)
    queries, vectors = rng.normal(size=(5, 16)).astype(np.float32), rng.normal(size=(9, 16)).astype(np.float32)
    rows, cols = rng.integers(0, 5, size=100), rng.integers(0, 9, size=100)
    monkeypatch.setattr("recsys.pipeline.PAIR_BLOCK", 7)
    one = pair_dot(queries, vectors, rows, cols, n_threads=1)
    np.testing.assert_allclose(one, np.sum(queries[rows] * vectors[cols], axis=1), rtol=1e-5)
    for n_threads in (2, 3):
        np.testing.assert_array_equal(pair_dot(queries, vectors, rows, cols, n_threads=n_threads), one)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="session")
def topic_data() -> tuple[pl.DataFrame, pl.DataFrame]:
    """18 items in 3 topics; 36 users, each reading 5 items of one topic in a rotating order."""
    rows = [(i, text, topic) for i, (topic, text) in enumerate((t, x) for t, xs in TOPICS.items() for x in xs)]
    items = pl.DataFrame(rows, schema={"item_id": pl.Int64, "text": pl.String, "topic": pl.String}, orient="row")
    events = []
    for t, topic in enumerate(TOPICS):
        ids = items.filter(pl.col("topic") == topic)["item_id"].to_list()
        for u in range(12):
            order = ids[u % 6 :] + ids[: u % 6]
            events += [(t * 12 + u, item, 10 * step) for step, item in enumerate(order[:5])]
    interactions = pl.DataFrame(
        events, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}, orient="row"
    )
    return interactions, items


def _config(cache_dir: str) -> RecommenderConfig:
    return RecommenderConfig(
        text=TextEncoderConfig(cache_dir=cache_dir, show_progress=False),
        n_candidates=12,
        n_transition_candidates=6,
        ranker=RankerConfig(min_child_samples=2, n_estimators=30),
        show_progress=False,
    )


@pytest.fixture(scope="session")
def fitted(topic_data: tuple[pl.DataFrame, pl.DataFrame], cache_dir: str) -> Recommender:
    interactions, items = topic_data
    return Recommender(_config(cache_dir)).fit(interactions, items)


def test_user_with_one_topic_gets_that_topic(fitted: Recommender, topic_data: tuple[pl.DataFrame, pl.DataFrame]):
    _, items = topic_data
    recs = fitted.recommend([0, 12, 24], k=1)
    topics = recs.join(items.select("item_id", "topic"), on="item_id").sort("user_id")["topic"].to_list()
    assert topics == ["dogs", "space", "cooking"]


def test_result_contract(fitted: Recommender, topic_data: tuple[pl.DataFrame, pl.DataFrame]):
    interactions, _ = topic_data
    recs = fitted.recommend(None, k=3)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs.schema["rank"] == pl.UInt32 and recs.schema["score"] == pl.Float32
    assert recs.height == 36 * 3
    assert recs.select(pl.struct("user_id", "item_id").is_unique().all()).item()
    assert (
        recs.group_by("user_id")
        .agg(pl.col("rank").sort())
        .select(pl.col("rank").list.eval(pl.element()))["rank"]
        .to_list()
        == [[1, 2, 3]] * 36
    )
    seen = recs.join(interactions, on=["user_id", "item_id"], how="semi")
    assert seen.height == 0, "history items must be excluded by default"


def test_include_seen_can_return_history_items(fitted: Recommender):
    recs = fitted.recommend([0], k=18, exclude_seen=False)
    assert recs.height == 18


def test_history_override_and_unknown_user(fitted: Recommender, topic_data: tuple[pl.DataFrame, pl.DataFrame]):
    _, items = topic_data
    space_ids = items.filter(pl.col("topic") == "space")["item_id"].head(4).to_list()
    inline = pl.DataFrame({"user_id": [999] * 4, "item_id": space_ids, "timestamp": [1, 2, 3, 4]})
    recs = fitted.recommend([999], k=1, history=inline)
    assert recs.join(items, on="item_id")["topic"].to_list() == ["space"]
    cold = fitted.recommend([12345], k=2)  # no history at all: popular items, never a crash
    assert cold.height == 2


def test_not_fitted_and_fit_twice(topic_data: tuple[pl.DataFrame, pl.DataFrame], cache_dir: str, fitted: Recommender):
    with pytest.raises(NotFittedError, match="Recommender"):
        Recommender(_config(cache_dir)).recommend([0])
    interactions, items = topic_data
    again = Recommender(_config(cache_dir)).fit(interactions, items).fit(interactions, items)
    assert again.recommend(None, k=3).equals(fitted.recommend(None, k=3))


def test_save_load_round_trip_and_tampering(fitted: Recommender, tmp_path):
    path = fitted.save(tmp_path / "model")
    loaded = Recommender.load(path)
    assert loaded.recommend(None, k=3).equals(fitted.recommend(None, k=3))
    (path / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelFormatError, match="unexpected"):
        Recommender.load(path)
    (path / "evil.pkl").unlink()
    manifest = json.loads((path / "manifest.json").read_text())
    listed = {"config.json", "index.faiss", "item_vectors.safetensors", *manifest["ranker_files"]}
    assert manifest["ranker_files"] and set(manifest["files"]) >= listed
    ranker = path / manifest["ranker_files"][0]
    ranker.write_text(ranker.read_text() + "\n")
    with pytest.raises(ModelFormatError, match="sha256"):
        Recommender.load(path)


def test_a_single_ranker_saves_as_ranker_txt_and_older_manifests_load(fitted: Recommender, tmp_path):
    single = fitted.with_features(ranker_ensemble=False)
    path = single.save(tmp_path / "single")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest.pop("ranker_files") == ["ranker.txt"]
    (path / "manifest.json").write_text(json.dumps(manifest))  # as written before ensembles: no ranker_files
    assert Recommender.load(path).recommend(None, k=3).equals(single.recommend(None, k=3))


def test_training_queries_never_see_the_label():
    events = pl.DataFrame(
        {"user_id": [1] * 5 + [2] * 2, "item_id": [10, 11, 12, 13, 14, 20, 21], "timestamp": list(range(7))}
    )
    past, history, labels = training_queries(events, n_cutoffs=2)
    assert past.filter(pl.col("user_id") == 1)["item_id"].to_list() == [10, 11, 12]
    assert past.filter(pl.col("user_id") == 2).height == 0
    assert sorted(labels["item_id"].to_list()) == [13, 14, 21]
    for key, label in labels.select("user_id", "item_id").iter_rows():
        seen = history.filter(pl.col("user_id") == key)
        assert label not in seen["item_id"].to_list()
        assert seen.height >= 1


def test_statistics_of_a_user_with_fewer_events_than_cutoffs_hold_none_of_them():
    """User 2 has 3 events, fewer than ``n_cutoffs=5``: its cut-off 1 and 2 labels must stay out of the shared
    past (``pl.len() - 5`` on UInt32 once wrapped round and kept all three, label events included)."""
    events = pl.DataFrame(
        {
            "user_id": [1] * 7 + [2] * 3,
            "item_id": [10, 11, 12, 13, 14, 15, 16, 20, 21, 22],
            "timestamp": list(range(10)),
        }
    )
    past, history, labels = training_queries(events, n_cutoffs=5)
    assert past["item_id"].to_list() == [10, 11]
    assert labels.filter(pl.col("owner") == 2).sort("cutoff")["item_id"].to_list() == [22, 21]
    assert not set(labels["item_id"].to_list()) & set(past["item_id"].to_list())
    assert set(history["user_id"].to_list()) == set(labels["user_id"].to_list())  # no history without a label
    assert before_cutoff(events, 3)["item_id"].to_list() == [10, 11, 12, 13]
    assert before_cutoff(events, 9).height == 0


def test_per_cutoff_statistics_see_every_event_before_their_own_cutoff_and_never_the_label(
    fitted: Recommender, topic_data
):
    """Known answer with ``n_cutoffs=2``: on each query's own label row, ``log_popularity`` is ``log1p`` of the
    label item's count among every user's events but their last ``c`` (``c``: the query's cut-off), so the label
    event itself is never counted, and the cut-off 1 queries count the cut-off 2 events that shared statistics
    (events before both cut-offs) leave out."""
    interactions, _ = topic_data
    model = Recommender(dataclasses.replace(fitted.config, n_cutoffs=2, cutoff_statistics="per_cutoff"))
    model.__dict__.update({k: v for k, v in fitted.__dict__.items() if k != "config"})
    frame = model.training_frame(interactions)
    _, _, labels = training_queries(interactions, 2)
    keys = labels.sort("cutoff", maintain_order=True)  # the frame numbers queries cut-off by cut-off
    if model.folds_:
        fold = model._fold(pl.col("owner"))
        keys = labels.with_columns(_f=fold).sort("cutoff", "_f", maintain_order=True).drop("_f")
    keys = keys.with_row_index("query")
    rows = frame.join(keys.select("query", "cutoff", "owner", label_item="item_id"), on="query")
    rows = rows.filter(pl.col("item_id") == pl.col("label_item"))  # the label's own candidate row
    assert rows.height > 0
    for c in (1, 2):
        before = interactions.filter(pl.int_range(pl.len()).over("user_id") < pl.len().over("user_id").cast(int) - c)
        counts = before.group_by("item_id").len()
        mine = (
            rows.filter(pl.col("cutoff") == c)
            .join(counts, on="item_id", how="left")
            .with_columns(pl.col("len").fill_null(0))
        )
        assert mine.height > 0
        np.testing.assert_allclose(mine["log_popularity"].to_numpy(), np.log1p(mine["len"].to_numpy()), rtol=1e-5)
    shared = Recommender(dataclasses.replace(fitted.config, n_cutoffs=2, cutoff_statistics="shared"))
    shared.__dict__.update({k: v for k, v in fitted.__dict__.items() if k != "config"})
    assert not shared.training_frame(interactions).equals(frame)
    with pytest.raises(ConfigError, match="cutoff_statistics"):
        RecommenderConfig(cutoff_statistics="sometimes")  # type: ignore[arg-type]


def test_label_window_lists_the_later_items_and_the_history_holds_none():
    events = pl.DataFrame({"user_id": [1] * 5, "item_id": [10, 11, 12, 13, 14], "timestamp": list(range(5))})
    _, history, labels = training_queries(events, n_cutoffs=3, label_window=3)
    rows = {key: (item, later) for key, item, later in labels.select("user_id", "item_id", "later").iter_rows()}
    # cut-off c predicts the c-th last event; `later` holds the next label_window - 1 events after it
    assert rows == {"1#1": (14, None), "1#2": (13, [14]), "1#3": (12, [13, 14])}
    for key, (item, later) in rows.items():
        seen = history.filter(pl.col("user_id") == key)["item_id"].to_list()
        assert item not in seen and not set(later or []) & set(seen)


def test_label_window_gives_the_next_item_label_2_and_later_items_label_1(fitted: Recommender):
    events = fitted.interactions_
    windowed = Recommender(dataclasses.replace(fitted.config, label_window=3))
    windowed.__dict__.update({k: v for k, v in fitted.__dict__.items() if k != "config"})
    frame = windowed.training_frame(events)
    assert set(frame["label"].unique().to_list()) <= {0, 1, 2}
    _, _, labels = training_queries(events, fitted.config.n_cutoffs, label_window=3)
    keys = labels.with_row_index("query")
    nexts = frame.filter(pl.col("label") == 2).join(keys, on="query").select("item_id", "item_id_right")
    assert nexts.height > 0 and (nexts["item_id"] == nexts["item_id_right"]).all()
    later = frame.filter(pl.col("label") == 1).join(keys, on="query")
    assert later.height > 0
    assert all(item in (rest or []) for item, rest in later.select("item_id", "later").iter_rows())


def test_ranker_folds_train_the_final_ranker_with_the_mean_best_round(
    fitted: Recommender, caplog: pytest.LogCaptureFixture
):
    folded = Recommender(dataclasses.replace(fitted.config, ranker_folds=3, ranker_ensemble=False))
    folded.__dict__.update({k: v for k, v in fitted.__dict__.items() if k != "config"})
    with caplog.at_level("INFO", logger="recsys.pipeline"):
        folded._fit_ranking(fitted.interactions_)  # type: ignore[arg-type]
    (line,) = [r.getMessage() for r in caplog.records if "best rounds" in r.getMessage()]
    rounds = [int(x) for x in line.split("[")[1].split("]")[0].split(",")]
    assert len(rounds) == 3 and all(1 <= r <= 30 for r in rounds)
    booster = folded.ranker_.booster_  # type: ignore[union-attr]
    assert booster.num_trees() == max(1, round(sum(rounds) / 3))  # no early stop: every query trains it
    assert folded.recommend([0, 12], k=2).height == 4
    with pytest.raises(ConfigError, match="ranker_folds"):
        RecommenderConfig(ranker_folds=1)


def test_ranker_ensemble_serves_the_mean_of_the_fold_rankers(fitted: Recommender, tmp_path):
    ensemble = fitted.with_features(ranker_folds=3, ranker_ensemble=True)
    members = ensemble.ranker_.members_  # type: ignore[union-attr]
    assert len(members) == 3 and ensemble.ranker_.n_trees == sum(m.n_trees for m in members)  # type: ignore[union-attr]
    frame = fitted.training_frame(fitted.interactions_)  # type: ignore[arg-type]
    by_hand = (members[0].score(frame) + members[1].score(frame) + members[2].score(frame)) / 3
    np.testing.assert_allclose(ensemble.ranker_.score(frame), by_hand, rtol=1e-12)  # type: ignore[union-attr]
    assert len({tuple(m.score(frame)) for m in members}) == 3  # three different rankers, not one copied
    contributions = ensemble.ranker_.contributions(frame)  # type: ignore[union-attr]
    np.testing.assert_allclose(contributions.sum(axis=1), by_hand, rtol=1e-6, atol=1e-9)  # still sums to the score
    importance = ensemble.feature_importance()
    assert feature_importance(members[0].booster_, {}).height == len(members[0].feature_names_)  # one booster too
    assert importance["splits"].sum() == sum(b.feature_importance("split").sum() for b in ensemble.ranker_.boosters)  # type: ignore[union-attr]
    path = ensemble.save(tmp_path / "ensemble")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["ranker_files"] == ["ranker-0.txt", "ranker-1.txt", "ranker-2.txt"]
    assert not (path / "ranker.txt").exists()
    loaded = Recommender.load(path)
    assert loaded.recommend(None, k=3, explain=True).equals(ensemble.recommend(None, k=3, explain=True))
    assert [m.n_trees for m in loaded.ranker_.members_] == [m.n_trees for m in members]  # type: ignore[union-attr]
    for files in (["ranker-0.txt", "../elsewhere.txt"], ["ranker-0.txt", "items.parquet"], []):
        (path / "manifest.json").write_text(json.dumps(manifest | {"ranker_files": files}))
        with pytest.raises(ModelFormatError, match="ranker files"):
            Recommender.load(path)
    single = fitted.with_features(ranker_folds=0, ranker_ensemble=True)  # the hold-out: one ranker, as before
    assert single.ranker_.booster_ is not None and len(single.ranker_.to_texts()) == 1  # type: ignore[union-attr]


def test_train_with_seen_puts_history_items_among_the_training_candidates(fitted: Recommender):
    events = fitted.interactions_
    position = events.select(  # type: ignore[union-attr]
        pl.col("user_id").alias("owner"), "item_id", pos=pl.int_range(pl.len()).over("user_id")
    )

    def seen_rows(model: Recommender) -> pl.DataFrame:
        """Training rows whose candidate the query's owner consumed before the label event."""
        frame = model.training_frame(events)  # type: ignore[arg-type]
        label_at = frame.filter(pl.col("label") == 1).join(position, on=["owner", "item_id"])
        rows = frame.join(label_at.select("query", label_at="pos"), on="query")
        return rows.join(position, on=["owner", "item_id"]).filter(pl.col("pos") < pl.col("label_at"))

    assert seen_rows(fitted).height == 0  # the default: history items are never training candidates
    with_seen = fitted.with_features(train_with_seen=True)
    seen = seen_rows(with_seen)
    assert seen.height > 0 and (seen["label"] == 0).all()  # nobody re-reads an item here
    recs = with_seen.recommend([0, 12], k=6, exclude_seen=False)
    assert recs.height == 12


def test_training_queries_of_a_user_sample_keep_every_past_event():
    events = pl.DataFrame(
        {"user_id": [1] * 4 + [2] * 4 + [3] * 4, "item_id": list(range(12)), "timestamp": list(range(12))}
    )
    past_all, _, _ = training_queries(events, n_cutoffs=2)
    past, history, labels = training_queries(events, n_cutoffs=2, max_users=1, seed=5)
    assert past.equals(past_all)  # feature statistics still see every user
    assert labels["owner"].n_unique() == 1 and labels.height == 2
    owner = labels["owner"][0]
    assert set(history["user_id"].str.split("#").list.first().cast(pl.Int64).to_list()) == {owner}
    again = training_queries(events, n_cutoffs=2, max_users=1, seed=5)[2]
    assert again.equals(labels)  # seeded
    with pytest.raises(ConfigError, match="max_ranker_users"):
        RecommenderConfig(max_ranker_users=0)


@pytest.mark.realdata
def test_pipeline_beats_popularity_on_ml_100k(cache_dir: str):
    data_dir = require_data("ml-100k/ml-100k.inter", "ml-100k/ml-100k.item")
    dataset = load_dataset("ml-100k", data_dir=data_dir)
    text = TextEncoderConfig(cache_dir=cache_dir, show_progress=False)
    models = {
        "popularity": PopularityRecommender(),
        "pipeline": Recommender(RecommenderConfig(text=text, show_progress=False)),
    }
    results = {r.model: r.metrics for r in evaluate_many(models, dataset, EvalConfig(split="loo"))}
    assert results["pipeline"]["ndcg@10"] > 1.5 * results["popularity"]["ndcg@10"]
    assert results["pipeline"]["recall@50"] > results["popularity"]["recall@50"]


def test_score_items_matches_recommend(fitted: Recommender):
    recs = fitted.recommend([0, 12], k=3)
    pairs = recs.select("user_id", "item_id")
    scored = fitted.score_items(pairs)
    assert scored.select("user_id", "item_id").equals(pairs)
    assert np.allclose(scored["score"].to_numpy(), recs["score"].to_numpy(), atol=1e-6)


def test_score_keeps_input_order_and_matches_recommend(fitted: Recommender):
    recs = fitted.recommend([0, 12, 24], k=4)
    shuffled = recs.select("user_id", "item_id").sample(fraction=1.0, shuffle=True, seed=3)
    scored = fitted.score(shuffled, with_features=True)
    assert scored.select("user_id", "item_id").equals(shuffled)
    joined = scored.join(recs, on=["user_id", "item_id"], suffix="_rec")
    assert np.allclose(joined["score"].to_numpy(), joined["score_rec"].to_numpy(), atol=1e-6)
    assert set(fitted.ranker_.feature_names_) <= set(scored.columns)
    assert scored.schema["interest_score"] == pl.Float32
    # the interest-match score is the user vector . item vector
    vectors = fitted.user_encoder_.encode(fitted._histories(pl.Series("user_id", [0]), None))
    row = scored.filter(pl.col("user_id") == 0).row(0, named=True)
    item_row = fitted.index_.filter(pl.col("item_id") == row["item_id"])["item_idx"].item()
    assert row["interest_score"] == pytest.approx(float(vectors[0] @ fitted.item_vectors_[item_row]), abs=1e-5)


def test_score_unknown_policy_inline_history_and_new_items(fitted: Recommender, topic_data):
    _, items = topic_data
    rows = pl.DataFrame({"user_id": [0, 777, 0], "item_id": [5, 1, 4242]})
    with pytest.raises(DataError, match=r"777.*4242|unknown user"):
        fitted.score(rows)
    nulls = fitted.score(rows, on_unknown="null")
    assert nulls["user_id"].to_list() == [0, 777, 0]
    assert nulls["score"].is_null().to_list() == [False, True, True]
    # a user known only by an inline history, and a new item known only by its text
    space = items.filter(pl.col("topic") == "space")["item_id"].head(3).to_list()
    inline = pl.DataFrame({"user_id": [777] * 3, "item_id": space, "timestamp": [1, 2, 3]})
    new = pl.DataFrame({"item_id": [4242, 4243], "text": ["a rocket engine for the moon mission", "dog treats"]})
    pairs = pl.DataFrame({"user_id": [777, 777], "item_id": [4243, 4242]})
    scored = fitted.score(pairs, history=inline, items=new)
    assert scored["item_id"].to_list() == [4243, 4242] and scored["score"].null_count() == 0
    by_item = dict(zip(scored["item_id"].to_list(), scored["interest_score"].to_list(), strict=True))
    assert by_item[4242] > by_item[4243], "a space reader must match the space item better"


def test_score_an_inline_history_that_holds_new_items(fitted: Recommender, topic_data):
    """A history may mention items that exist only in ``items=``: they are encoded from their text."""
    _, items = topic_data
    space = items.filter(pl.col("topic") == "space")["item_id"].head(2).to_list()
    new = pl.DataFrame({"item_id": [4242, 4243], "text": ["a rocket engine for the moon mission", "dog treats"]})
    inline = pl.DataFrame({"user_id": [777] * 3, "item_id": [*space, 4242], "timestamp": [1, 2, 3]})
    pairs = pl.DataFrame({"user_id": [777, 777], "item_id": [4243, space[0]]})
    scored = fitted.score(pairs, history=inline, items=new)
    assert scored["score"].null_count() == 0
    by_item = dict(zip(scored["item_id"].to_list(), scored["interest_score"].to_list(), strict=True))
    assert by_item[space[0]] > by_item[4243], "a space reader must match a space item better than dog treats"


def test_retrieve_is_the_encoder_alone(fitted: Recommender, topic_data):
    """``retrieve`` ranks the unseen items by the user vector's inner product with the item vectors (no
    ranker), may include history items when asked, and gives an unknown user the most popular items."""
    interactions, _ = topic_data
    users = [0, 12, 25]
    got = fitted.retrieve(users, k=4)
    assert got.columns == ["user_id", "item_id", "score", "rank"]
    queries = fitted.user_encoder_.encode(fitted._histories(pl.Series("user_id", users), None))  # (3, dim)
    scores = queries @ fitted.item_vectors_.T  # (3, n_items)
    ids = fitted.index_["item_id"].to_list()
    for query, user in enumerate(users):
        seen = set(interactions.filter(pl.col("user_id") == user)["item_id"].to_list())
        expected = [ids[i] for i in np.argsort(-scores[query], kind="stable") if ids[i] not in seen][:4]
        mine = got.filter(pl.col("user_id") == user).sort("rank")
        assert mine["item_id"].to_list() == expected and mine["rank"].to_list() == [1, 2, 3, 4]
        np.testing.assert_allclose(
            mine["score"].to_numpy(), np.sort(scores[query, [ids.index(i) for i in expected]])[::-1], rtol=1e-5
        )
    everything = fitted.retrieve([0], k=len(ids), exclude_seen=False)
    assert everything.height == len(ids)  # history items included
    cold = fitted.retrieve([10**6], k=3)
    popular = [ids[i] for i in np.argsort(-fitted.popularity_, kind="stable")[:3]]
    assert cold["item_id"].to_list() == popular and cold["score"].null_count() == 3
    assert fitted.retrieve([], k=3).height == 0


def test_candidates_report_each_source(fitted: Recommender):
    cands = fitted.candidates([0, 12])
    assert cands.columns == [
        "user_id",
        "item_id",
        "retrieval_score",
        "retrieval_rank",
        "transition_rank",
        "popularity_rank",
    ]
    assert cands.select(pl.struct("user_id", "item_id").is_unique().all()).item()
    seen = cands.join(fitted.interactions_, on=["user_id", "item_id"], how="semi")
    assert seen.height == 0
    assert cands["popularity_rank"].min() == 1


def test_cooccurrence_source_proposes_the_top_cooc_scores_and_round_trips(topic_data, cache_dir: str, tmp_path):
    """With ``n_cooccurrence_candidates``, each user's ``cooc_rank`` 1..k are the unseen items with the highest
    ``cooc_score`` (the feature's own values, ties aside), the ranker reads ``cooc_rank``, and the model saves,
    loads and scores with it."""
    interactions, items = topic_data
    config = dataclasses.replace(_config(cache_dir), n_cooccurrence_candidates=3)
    model = Recommender(config).fit(interactions, items)
    assert "cooc_rank" in model.ranker_.feature_names_
    assert model.features_.groups_of()["source"] == ["transition_rank", "popularity_rank", "cooc_rank"]
    cands = model.candidates([0, 12, 25])
    assert cands.columns[-1] == "cooc_rank"
    histories = model._histories(pl.Series("user_id", [0, 12, 25]), None)
    scores = model.features_.cooccurrence.score_sparse(histories).toarray()  # (3, n_items)
    item_idx = dict(zip(model.index_["item_id"].to_list(), model.index_["item_idx"].to_list(), strict=True))
    for query, user in enumerate([0, 12, 25]):
        mine = cands.filter((pl.col("user_id") == user) & (pl.col("cooc_rank") <= 3)).sort("cooc_rank")
        got = [scores[query, item_idx[i]] for i in mine["item_id"].to_list()]
        seen = set(interactions.filter(pl.col("user_id") == user)["item_id"].to_list())
        unseen = [scores[query, idx] for i, idx in item_idx.items() if i not in seen]
        expected = sorted((v for v in unseen if v > 0), reverse=True)[:3]
        np.testing.assert_allclose(got, expected, rtol=1e-6)  # the same scores, best first
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.recommend([0, 12], k=3).equals(model.recommend([0, 12], k=3))
    with pytest.raises(ConfigError, match="cooccurrence"):
        RecommenderConfig(features=FeatureConfig(groups=("interest", "transition")), n_cooccurrence_candidates=5)


def test_ease_source_proposes_the_top_ease_scores_and_round_trips(fitted: Recommender, topic_data, tmp_path):
    """With the ``collaborative`` group and ``n_ease_candidates``, each user's ``ease_rank`` 1..k are the unseen
    items with the highest positive ``ease_score``, the ranker reads both, and the model saves and loads."""
    interactions, _ = topic_data
    assert "collaborative" in fitted.config.features.groups  # a default group
    model = fitted.with_features(fitted.config.features, n_ease_candidates=3)
    assert {"ease_rank", "ease_score", "ease_score_gap"} <= set(model.ranker_.feature_names_)
    users = [0, 12, 25]
    cands = model.candidates(users)
    histories = model._histories(pl.Series("user_id", users), None)
    scores = model.features_.collaborative.score_all(histories)  # (3, n_items)
    item_idx = dict(zip(model.index_["item_id"].to_list(), model.index_["item_idx"].to_list(), strict=True))
    for query, user in enumerate(users):
        mine = cands.filter((pl.col("user_id") == user) & (pl.col("ease_rank") <= 3)).sort("ease_rank")
        got = [scores[query, item_idx[i]] for i in mine["item_id"].to_list()]
        seen = set(interactions.filter(pl.col("user_id") == user)["item_id"].to_list())
        unseen = [scores[query, idx] for i, idx in item_idx.items() if i not in seen]
        expected = sorted((v for v in unseen if v > 0), reverse=True)[:3]
        assert expected  # at least one positive score to rank
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    loaded = Recommender.load(model.save(tmp_path / "ease"))
    assert loaded.recommend(users, k=3).equals(model.recommend(users, k=3))
    without = FeatureConfig(groups=tuple(g for g in fitted.config.features.groups if g != "collaborative"))
    with pytest.raises(ConfigError, match="collaborative"):
        RecommenderConfig(features=without, n_ease_candidates=5)


def test_similar_text_and_word_sources_propose_the_closest_items_and_round_trip(
    fitted: Recommender, topic_data, tmp_path
):
    """With ``n_similar_candidates``, each user's ``similar_rank`` 1..k are the unseen items of highest
    ``sim_recent_mean`` (the feature's own values); ``n_lexical_candidates`` (with the ``lexical`` group) adds
    ``lexical_rank`` the same way; the ranker reads both and the model saves and loads."""
    interactions, _ = topic_data
    groups = (*fitted.config.features.groups, "lexical")
    model = fitted.with_features(FeatureConfig(groups=groups), n_similar_candidates=3, n_lexical_candidates=3)
    assert {"similar_rank", "lexical_rank"} <= set(model.ranker_.feature_names_)
    assert model.features_.groups_of()["source"][-2:] == ["similar_rank", "lexical_rank"]
    users = [0, 12, 25]
    cands = model.candidates(users)
    assert cands.columns[-2:] == ["similar_rank", "lexical_rank"]
    every = pl.DataFrame({"user_id": users}).join(model.index_.select("item_id"), how="cross")
    featured = model.score(every, with_features=True)
    for rank, feature in (("similar_rank", "sim_recent_mean"), ("lexical_rank", "lex_recent_mean")):
        for user in users:
            mine = cands.filter((pl.col("user_id") == user) & (pl.col(rank) <= 3)).sort(rank)
            seen = interactions.filter(pl.col("user_id") == user)["item_id"]
            values = featured.filter((pl.col("user_id") == user) & ~pl.col("item_id").is_in(seen.implode()))
            expected = values[feature].sort(descending=True).head(3).to_numpy()
            got = mine.join(values, on="item_id", how="left", maintain_order="left")[feature].to_numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    loaded = Recommender.load(model.save(tmp_path / "similar"))
    assert loaded.recommend(users, k=3).equals(model.recommend(users, k=3))
    with pytest.raises(ConfigError, match="lexical"):
        RecommenderConfig(n_lexical_candidates=5)  # the group is opt-in
    without = FeatureConfig(groups=tuple(g for g in fitted.config.features.groups if g != "similarity"))
    with pytest.raises(ConfigError, match="similarity"):
        RecommenderConfig(features=without, n_similar_candidates=5)


def test_explanations_name_real_history_items(fitted: Recommender, topic_data):
    interactions, _ = topic_data
    recs = fitted.recommend([0, 12], k=2, explain=True)
    assert {"because_ids", "because", "reasons"} <= set(recs.columns)
    for user, because in recs.select("user_id", "because_ids").iter_rows():
        history = set(interactions.filter(pl.col("user_id") == user)["item_id"].to_list())
        assert because and set(because) <= history
    assert all(isinstance(r, str) and r for r in recs["reasons"].to_list())
    plain = fitted.recommend([0, 12], k=2)
    assert recs.select(plain.columns).equals(plain)
    importance = fitted.feature_importance()
    assert set(importance["feature"].to_list()) == set(fitted.ranker_.feature_names_)
    assert importance["gain_share"].sum() == pytest.approx(1.0)


def test_memory_features_transformer_polars_and_pandas(fitted: Recommender):
    from recsys.transformer import MEMORY_FEATURES, MemoryFeatures

    frame = pl.DataFrame({"user_id": [0, 0, 12], "item_id": [6, 1, 7], "extra": ["a", "b", "c"]})
    out = MemoryFeatures(fitted).fit(frame).transform(frame)
    assert isinstance(out, pl.DataFrame)
    assert out.columns == [*frame.columns, *MEMORY_FEATURES]
    assert out.select(frame.columns).equals(frame)
    assert sorted(out.filter(pl.col("user_id") == 0)["interest_rank"].to_list()) == [1, 2]
    pd = pytest.importorskip("pandas")
    pd_out = MemoryFeatures(fitted).fit_transform(frame.to_pandas())
    assert isinstance(pd_out, pd.DataFrame)
    assert np.allclose(pd_out["interest_score"].to_numpy(), out["interest_score"].to_numpy())


def test_sampled_metrics_for_the_pipeline(topic_data: tuple[pl.DataFrame, pl.DataFrame], cache_dir: str):
    interactions, items = topic_data
    dataset = Dataset.from_frames(interactions, items.drop("topic"), name="topics")
    config = EvalConfig(split="loo", sampled_negatives=5)
    result = evaluate_many({"pipeline": Recommender(_config(cache_dir))}, dataset, config)[0]
    assert 0 <= result.metrics["sampled_ndcg@10"] <= 1
    assert result.protocol["sampled_negatives"] == 5


def test_pipeline_with_the_memory_encoder_round_trips(
    topic_data: tuple[pl.DataFrame, pl.DataFrame], cache_dir: str, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """The learned encoder replaces the zero-shot user vector with no other change; save/load keeps it."""
    interactions, items = topic_data
    memory = MemoryEncoderConfig(
        net=MemoryNetConfig(dim=32, n_heads=2, segment_len=4, n_memory=2), epochs=2, show_progress=False
    )
    config = dataclasses.replace(_config(cache_dir), user_encoder="memory", memory=memory)
    model = Recommender(config).fit(interactions, items)
    assert isinstance(model.user_encoder_, MemoryEncoder)
    assert model.item_vectors_.shape == (18, 32)
    recs = model.recommend(None, k=3)
    assert recs.height == 36 * 3
    loaded = Recommender.load(model.save(tmp_path / "memory-model"))
    assert loaded.recommend(None, k=3).equals(recs)
    # histories given inline: the saved encoder is built on first use, once, by chunks served side by side
    inline = Recommender.load(tmp_path / "memory-model")
    monkeypatch.setattr(pipeline_module, "MIN_PARALLEL_CHUNK_USERS", 1)
    inline.config = dataclasses.replace(inline.config, serve_workers=3, chunk_users=12)
    assert not inline.user_encoder_.built
    side = inline.recommend(None, k=3, history=interactions)
    assert inline.user_encoder_.built
    loaded.config = dataclasses.replace(loaded.config, serve_workers=1)
    assert side.equals(loaded.recommend(None, k=3, history=interactions))


def test_valid_events_are_appended_to_training(topic_data, cache_dir: str):
    interactions, items = topic_data
    last = pl.col("timestamp") == pl.col("timestamp").max().over("user_id")
    train, valid = interactions.filter(~last), interactions.filter(last)
    model = Recommender(_config(cache_dir)).fit(train, items, valid=valid)
    assert model.interactions_.sort("user_id", "timestamp").equals(interactions.sort("user_id", "timestamp"))
    baseline = PopularityRecommender().fit(train, items, valid=valid)
    assert baseline.interactions_.height == interactions.height


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_holdout", 0),
        ("n_popularity_candidates", -1),
        ("n_transition_candidates", -2),
        ("n_cooccurrence_candidates", -1),
        ("n_ease_candidates", -1),
    ],
)
def test_candidate_and_holdout_settings_are_checked(field: str, value: int):
    with pytest.raises(ConfigError, match=field):
        RecommenderConfig(**{field: value})


def test_feature_groups_are_checked_and_ablations_share_the_encoder(fitted: Recommender):
    from recsys.features.ranking import FeatureConfig

    with pytest.raises(ConfigError, match="unknown group"):
        FeatureConfig(groups=("interest", "vibes"))
    with pytest.raises(ConfigError, match="transition"):
        RecommenderConfig(features=FeatureConfig(groups=("interest",)))
    small = fitted.with_features(FeatureConfig(groups=("interest", "source", "transition")))
    assert small.ranker_.feature_names_ == [
        "retrieval_score",
        "retrieval_rank",
        "transition_rank",
        "popularity_rank",
        "transition_score",
    ]
    assert small.user_encoder_ is fitted.user_encoder_
    assert small.recommend([0], k=3).height == 3
    three = fitted.with_features(ranker=dataclasses.replace(fitted.config.ranker, n_estimators=3))
    assert all(b.num_trees() <= 3 for b in three.ranker_.boosters)  # type: ignore[union-attr]
    assert max(b.num_trees() for b in fitted.ranker_.boosters) > 3  # type: ignore[union-attr]
    assert three.config.features == fitted.config.features and three.user_encoder_ is fitted.user_encoder_
    with pytest.raises(ConfigError, match="memory_crossfit"):
        fitted.with_features(memory_crossfit=3)  # the encoder depends on it
    cooc = fitted.with_features(n_cooccurrence_candidates=4)
    assert "cooc_rank" in cooc.ranker_.feature_names_ and "cooc_rank" not in fitted.ranker_.feature_names_
    assert cooc.candidates([0])["cooc_rank"].min() == 1 and cooc.user_encoder_ is fitted.user_encoder_


def test_ranker_cutoffs_change_without_refitting_an_encoder_that_does_not_read_them(
    fitted: Recommender, topic_data: tuple[pl.DataFrame, pl.DataFrame]
):
    interactions, _ = topic_data
    one = fitted.with_features(n_cutoffs=1)  # zero-shot: the encoder does not read n_cutoffs
    assert one.config.n_cutoffs == 1 and fitted.config.n_cutoffs == 5 and one.user_encoder_ is fitted.user_encoder_
    queries = one.training_frame(interactions).group_by("query").agg(pl.col("owner").first())
    assert queries.height == queries["owner"].n_unique() == interactions["user_id"].n_unique()  # one per user
    assert "n_cutoffs" in ranking_settings(RecommenderConfig(user_encoder="memory"))  # cross-fitted (default)
    assert "n_cutoffs" in ranking_settings(
        RecommenderConfig(user_encoder="memory", memory_crossfit=0, memory_holdout=2)
    )
    held_out = RecommenderConfig(user_encoder="memory", memory_crossfit=0)  # holds out the last n_cutoffs events
    assert "n_cutoffs" not in ranking_settings(held_out) and "n_candidates" in ranking_settings(held_out)


def test_learned_group_reads_each_folds_own_item_space(topic_data, cache_dir: str, tmp_path, monkeypatch):
    """With the ``learned`` group and cross-fitting, each fold's training queries get their learned-space
    similarities from that fold's encoder (never from the encoder trained on every user), serving uses the
    final encoder's space, and the block survives save and load."""
    interactions, items = topic_data
    memory = MemoryEncoderConfig(
        net=MemoryNetConfig(dim=32, n_heads=2, segment_len=4, n_memory=2), epochs=2, show_progress=False
    )
    features = FeatureConfig(groups=GROUPS)
    config = dataclasses.replace(
        _config(cache_dir), user_encoder="memory", memory=memory, memory_crossfit=2, features=features
    )
    spaces: list[np.ndarray] = []
    swap = RankingFeatures.with_learned_vectors

    def spy(self: RankingFeatures, vectors: np.ndarray) -> RankingFeatures:
        spaces.append(vectors)
        return swap(self, vectors)

    monkeypatch.setattr(RankingFeatures, "with_learned_vectors", spy)
    model = Recommender(config).fit(interactions, items)
    folds = [id(r.item_vectors) for r in model.folds_.values()]
    cutoffs = training_queries(interactions, model.config.n_cutoffs)[2]["cutoff"].n_unique()
    assert [id(v) for v in spaces] == folds * cutoffs  # per-cut-off statistics: each cut-off's queries, fold by fold
    assert all(not np.array_equal(v, model.item_vectors_) for v in spaces)
    learned = model.features_.blocks_["learned"]
    np.testing.assert_allclose(learned.vectors_, model.item_vectors_, atol=1e-6)  # serving: the final encoder
    names = [n for n in model.ranker_.feature_names_ if n.startswith("learned_")]
    assert names == ["learned_last", "learned_recent_mean", "learned_recent_max", "learned_history"]
    recs = model.recommend(None, k=3)
    loaded = Recommender.load(model.save(tmp_path / "learned"))
    assert loaded.recommend(None, k=3).equals(recs)
    # a new item known only by its text gets its learned-space vector from the encoder's item tower
    space = items.filter(pl.col("topic") == "space")["item_id"].head(3).to_list()
    inline = pl.DataFrame({"user_id": [777] * 3, "item_id": space, "timestamp": [1, 2, 3]})
    new = pl.DataFrame({"item_id": [4242], "text": ["a rocket engine for the moon mission"]})
    scored = loaded.score(
        pl.DataFrame({"user_id": [777, 777], "item_id": [4242, space[0]]}),
        history=inline,
        items=new,
        with_features=True,
    )
    assert scored["learned_last"].null_count() == 0 and scored["score"].null_count() == 0
    assert "learned" not in Recommender(_config(cache_dir)).fit(interactions, items).features_.blocks_


def test_crossfitted_memory_encoders_score_unseen_users(topic_data, cache_dir: str, tmp_path):
    """With memory_crossfit=2 each fold's ranker queries come from an encoder trained without those users."""
    interactions, items = topic_data
    memory = MemoryEncoderConfig(
        net=MemoryNetConfig(dim=32, n_heads=2, segment_len=4, n_memory=2), epochs=2, show_progress=False
    )
    config = dataclasses.replace(_config(cache_dir), user_encoder="memory", memory=memory, memory_crossfit=2)
    model = Recommender(config).fit(interactions, items)
    assert sorted(model.folds_) == [0, 1]
    folds = interactions.select(fold=model._fold(pl.col("user_id")))["fold"]
    assert set(folds.to_list()) == {0, 1}
    for retrieval in model.folds_.values():
        assert retrieval.item_vectors.shape == (18, 32)
        assert retrieval.encoder is not model.user_encoder_
    recs = model.recommend(None, k=3)
    assert recs.height == 36 * 3
    loaded = Recommender.load(model.save(tmp_path / "crossfit"))
    assert loaded.recommend(None, k=3).equals(recs) and loaded.folds_ == {}
    with pytest.raises(ConfigError, match="fold encoders"):  # its ranker would train on in-sample scores
        loaded.with_features(n_candidates=5)
    assert model.with_features(n_candidates=5).ranker_ is not None
    with pytest.raises(ConfigError, match="memory_crossfit"):
        RecommenderConfig(memory_crossfit=1)
    three = model.with_features(memory_crossfit=3)  # new fold encoders; the serving encoder stays
    assert sorted(three.folds_) == [0, 1, 2] and sorted(model.folds_) == [0, 1]
    assert three.user_encoder_ is model.user_encoder_
    assert all(r.encoder is not s.encoder for r in three.folds_.values() for s in model.folds_.values())
    assert set(three.training_frame(interactions)["owner"].to_list()) == set(interactions["user_id"].to_list())
    with pytest.raises(ConfigError, match="cross-fitting off"):
        model.with_features(memory_crossfit=0)


def test_time_crossfit_scores_training_queries_with_an_encoder_of_the_earlier_events(
    topic_data, cache_dir: str, monkeypatch
):
    """With crossfit_by="time" one extra encoder, trained on every user's events before the last n_cutoffs,
    scores every training query (all users in fold 0); the serving encoder trains on every event."""
    interactions, items = topic_data
    memory = MemoryEncoderConfig(
        net=MemoryNetConfig(dim=32, n_heads=2, segment_len=4, n_memory=2), epochs=2, show_progress=False
    )
    config = dataclasses.replace(
        _config(cache_dir), user_encoder="memory", memory=memory, memory_crossfit=2, crossfit_by="time"
    )
    trained: list[int] = []  # events each encoder trains on
    fit = MemoryEncoder.fit

    def spy(self: MemoryEncoder, histories, text_vectors, valid=None) -> MemoryEncoder:
        trained.append(int(histories.lengths.sum()))
        return fit(self, histories, text_vectors, valid)

    monkeypatch.setattr(MemoryEncoder, "fit", spy)
    model = Recommender(config).fit(interactions, items)
    before = before_cutoff(interactions, model.config.n_cutoffs).height
    assert trained == [before, interactions.height] and before < interactions.height
    assert list(model.folds_) == [0] and model.folds_[0].encoder is not model.user_encoder_
    assert interactions.select(fold=model._fold(pl.col("user_id")))["fold"].unique().to_list() == [0]
    assert "crossfit_by" in ranking_settings(model.config)
    users = model.with_features(crossfit_by="users")  # two user folds, the serving encoder kept
    assert sorted(users.folds_) == [0, 1] and users.user_encoder_ is model.user_encoder_
    assert trained[2:] == [interactions.filter(users._fold(pl.col("user_id")) != f).height for f in (0, 1)]
    with pytest.raises(ConfigError, match="crossfit_by='days'; use 'users' or 'time'"):
        RecommenderConfig(crossfit_by="days")  # type: ignore[arg-type]


def test_ranker_features_never_see_the_label_event(fitted: Recommender, topic_data):
    """Each user's last event is a label and in no history: replacing its item changes the labels only."""
    interactions, _ = topic_data
    last = pl.col("timestamp") == pl.col("timestamp").max().over("user_id")
    swapped = interactions.with_columns(pl.when(last).then((pl.col("item_id") + 7) % 18).otherwise(pl.col("item_id")))
    a, b = fitted.training_frame(interactions), fitted.training_frame(swapped)
    features = fitted.ranker_.feature_names_
    assert a.select("query", "item_id", *features).equals(b.select("query", "item_id", *features))
    assert not a["label"].equals(b["label"])
    assert a.group_by("query").agg(pl.col("label").sum())["label"].max() == 1


def test_cascade_top_serves_the_ensemble_on_the_first_rankers_shortlist(fitted: Recommender):
    """``cascade_top``: the first fold ranker shortlists each user's candidates, the whole ensemble orders the
    shortlist (at least ``k`` rows), so the served scores are the ensemble's own; ``score`` is unchanged."""
    assert isinstance(fitted.ranker_, RankerEnsemble) and len(fitted.ranker_.members_) > 1
    full = fitted.recommend(None, k=3)
    twin = copy.copy(fitted)
    twin.config = dataclasses.replace(fitted.config, cascade_top=10_000)  # every candidate: the plain ensemble
    assert twin.recommend(None, k=3).equals(full)
    twin.config = dataclasses.replace(fitted.config, cascade_top=1)  # k=3 rows per user still reach the ensemble
    short = twin.recommend(None, k=3)
    assert short.group_by("user_id").len()["len"].to_list() == [3] * short["user_id"].n_unique()
    again = twin.score(short.select("user_id", "item_id"))  # the whole ensemble's score of the same pairs
    np.testing.assert_allclose(short["score"].to_numpy(), again["score"].to_numpy(), rtol=1e-6)
    with pytest.raises(ConfigError, match="cascade_top=0"):
        RecommenderConfig(cascade_top=0)
    assert RecommenderConfig().cascade_top == 50  # the default, chosen on the throughput suite's paired runs


def test_serving_chunks_split_the_users_in_flight():
    two = Recommender(RecommenderConfig(serve_workers=2))
    assert two._serving_chunks(8442) == (1024, 2)  # 2,048 users in flight, as in one chunk
    assert two._serving_chunks(943) == (472, 2)
    assert two._serving_chunks(300) == (2048, 1)  # 150 a chunk is below MIN_PARALLEL_CHUNK_USERS
    assert Recommender(RecommenderConfig(serve_workers=1))._serving_chunks(8442) == (2048, 1)
    with pytest.raises(ConfigError, match="serve_workers"):
        RecommenderConfig(serve_workers=0)


def test_chunks_served_side_by_side_give_the_same_lists(fitted: Recommender, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pipeline_module, "MIN_PARALLEL_CHUNK_USERS", 1)
    serial, side = copy.copy(fitted), copy.copy(fitted)
    serial.config = dataclasses.replace(fitted.config, serve_workers=1, chunk_users=5)
    side.config = dataclasses.replace(fitted.config, serve_workers=3, chunk_users=15)
    assert side._serving_chunks(36) == (5, 3)
    for explain in (False, True):
        expected = serial.recommend(None, k=4, explain=explain)
        assert expected.height == 36 * 4
        assert side.recommend(None, k=4, explain=explain).equals(expected)
