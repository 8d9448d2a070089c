"""Tests of the evaluation package: splits, full-catalogue metrics (known answers) and the harness."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import recsys.evaluation._harness as harness_module
from recsys.data import DataConfig, Dataset
from recsys.errors import ConfigError, DataError, SchemaError
from recsys.evaluation import (
    EvalConfig,
    EvalResult,
    evaluate,
    evaluate_many,
    leave_one_out,
    length_table,
    load_results,
    make_split,
    metrics_by_history_length,
    published_split,
    ranking_metrics,
    results_table,
    sample_negatives,
    sampled_ranking_metrics,
    save_results,
    temporal_cutoffs,
    temporal_split,
)

ID = {"user_id": pl.Int64, "item_id": pl.Int64}


def recs_frame(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    """``(user_id, item_id, rank)`` rows as a recommendation table."""
    return pl.DataFrame(rows, schema={**ID, "rank": pl.UInt32}, orient="row").with_columns(
        (-pl.col("rank").cast(pl.Float32)).alias("score")
    )


def targets_frame(rows: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ID, orient="row")


def make_dataset(rows: list[tuple[int, int, int]], n_items: int = 10, **kwargs: Any) -> Dataset:
    """A dataset of ``(user_id, item_id, timestamp)`` events over items ``0..n_items-1``."""
    items = pl.DataFrame({"item_id": list(range(n_items)), "text": [f"item {i}" for i in range(n_items)]})
    events = pl.DataFrame(rows, schema={**ID, "timestamp": pl.Int64}, orient="row")
    return Dataset.from_frames(events, items, **kwargs)


def rows_of(df: pl.DataFrame) -> list[tuple[int, int, int]]:
    return df.select("user_id", "item_id", "timestamp").rows()


@pytest.fixture(autouse=True)
def no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the tests from running git in the developer's checkout."""
    monkeypatch.setattr(harness_module, "_git_commit", lambda cwd: "abc1234")


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_known_answers_single_target() -> None:
    recs = recs_frame([(1, 10, 1), (1, 11, 2), (2, 20, 1), (2, 21, 2), (2, 22, 3), (3, 30, 1)])
    targets = targets_frame([(1, 10), (2, 22), (3, 99), (4, 40)])  # ranks 1, 3, missing, no recommendations
    m = ranking_metrics(recs, targets, n_items=100, ks=(2, 10))
    assert m["ndcg@10"] == pytest.approx((1.0 + 0.5 + 0 + 0) / 4)
    assert m["mrr@10"] == pytest.approx((1.0 + 1 / 3) / 4)
    assert m["recall@10"] == pytest.approx(2 / 4)
    assert m["hit_rate@10"] == pytest.approx(2 / 4)
    assert m["ndcg@2"] == pytest.approx(1 / 4)  # the rank-3 hit falls outside the top 2
    assert m["mrr@2"] == pytest.approx(1 / 4)
    assert m["coverage@2"] == pytest.approx(5 / 100)
    assert m["coverage@10"] == pytest.approx(6 / 100)
    assert list(m) == [f"{n}@{k}" for k in (2, 10) for n in ("recall", "ndcg", "mrr", "hit_rate", "coverage")]


def test_metrics_rank_one_and_rank_three_alone() -> None:
    one = ranking_metrics(recs_frame([(1, 5, 1)]), targets_frame([(1, 5)]), n_items=10, ks=(10,))
    three = ranking_metrics(recs_frame([(1, 7, 1), (1, 8, 2), (1, 5, 3)]), targets_frame([(1, 5)]), 10, (10,))
    assert one["ndcg@10"] == one["mrr@10"] == one["recall@10"] == 1.0
    assert three["ndcg@10"] == pytest.approx(1 / math.log2(4)) == pytest.approx(0.5)
    assert three["mrr@10"] == pytest.approx(1 / 3)


def test_metrics_several_targets_per_user() -> None:
    recs = recs_frame([(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4)])
    targets = targets_frame([(1, 1), (1, 4), (1, 4)])  # the repeated target counts once
    m = ranking_metrics(recs, targets, n_items=10, ks=(3, 10))
    ideal = 1 + 1 / math.log2(3)  # two targets: ideal DCG over min(K, 2) = 2 positions
    assert m["recall@3"] == pytest.approx(0.5)
    assert m["ndcg@3"] == pytest.approx(1 / ideal)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / ideal)
    assert m["mrr@10"] == pytest.approx(1.0)
    one = ranking_metrics(
        recs.filter(pl.col("rank") == 4).with_columns(pl.lit(1, pl.UInt32).alias("rank")),
        targets,
        n_items=10,
        ks=(1,),
    )
    assert one["ndcg@1"] == pytest.approx(1.0)  # ideal DCG over min(K=1, 2 targets) = 1 position


def test_metrics_align_integer_ids_and_ignore_users_without_targets() -> None:
    recs = recs_frame([(1, 5, 1), (9, 6, 1)]).with_columns(pl.col("user_id", "item_id").cast(pl.Int32))
    m = ranking_metrics(recs, targets_frame([(1, 5)]), n_items=10, ks=(10,))
    assert m["ndcg@10"] == 1.0
    assert m["coverage@10"] == pytest.approx(0.1)  # user 9 has no targets and is not counted


def test_metrics_reject_bad_input() -> None:
    recs, targets = recs_frame([(1, 5, 1)]), targets_frame([(1, 5)])
    with pytest.raises(SchemaError, match="rank"):
        ranking_metrics(recs.drop("rank"), targets, 10)
    with pytest.raises(SchemaError, match="dtype"):
        ranking_metrics(recs.with_columns(pl.col("item_id").cast(pl.String)), targets, 10)
    with pytest.raises(DataError, match="targets is empty"):
        ranking_metrics(recs, targets.clear(), 10)
    with pytest.raises(DataError, match="duplicated"):
        ranking_metrics(pl.concat([recs, recs]), targets, 10)
    with pytest.raises(ConfigError, match="ks="):
        ranking_metrics(recs, targets, 10, ks=(0,))
    with pytest.raises(ConfigError, match="n_items="):
        ranking_metrics(recs, targets, 0)


def history_frame(lengths: dict[int, int]) -> pl.DataFrame:
    """``user -> number of events`` as a history frame (items 0.., times 0..)."""
    rows = [(user, i, i) for user, n in lengths.items() for i in range(n)]
    return pl.DataFrame(rows, schema={**ID, "timestamp": pl.Int64}, orient="row")


def test_metrics_by_history_length_known_answers() -> None:
    recs = recs_frame([(1, 10, 1), (1, 11, 2), (2, 20, 1), (2, 21, 2), (2, 22, 3), (3, 31, 1), (5, 51, 1), (5, 50, 2)])
    targets = targets_frame([(1, 10), (2, 22), (3, 30), (4, 40), (5, 50)])
    # user 4 is absent from the history (length 0) and has no recommendations
    history = history_frame({1: 1, 2: 2, 3: 3, 5: 7, 9: 50})
    table = metrics_by_history_length(recs, targets, history, n_items=100, ks=(10,), buckets=(2, 4, 10))
    assert table.columns == ["bucket", "users", "recall@10", "ndcg@10", "mrr@10", "hit_rate@10", "coverage@10"]
    assert table["bucket"].to_list() == ["<=2", "3-4", "5-10", ">10"]
    assert table["users"].to_list() == [3, 1, 1, 0]
    assert table["ndcg@10"].to_list()[:3] == pytest.approx([(1 + 0.5 + 0) / 3, 0.0, 1 / math.log2(3)])
    assert table["recall@10"].to_list()[:3] == pytest.approx([2 / 3, 0.0, 1.0])
    assert table["coverage@10"].to_list()[:3] == pytest.approx([5 / 100, 1 / 100, 2 / 100])
    assert table.row(3, named=True) == {"bucket": ">10", "users": 0, **dict.fromkeys(table.columns[2:])}
    small = targets.filter(pl.col("user_id").is_in([1, 2, 4]))
    assert table.row(0, named=True) == {"bucket": "<=2", "users": 3, **ranking_metrics(recs, small, 100, (10,))}


def test_metrics_by_history_length_labels_dtypes_and_errors() -> None:
    recs, targets = recs_frame([(1, 5, 1)]), targets_frame([(1, 5), (2, 6)])
    history = history_frame({1: 2, 2: 3}).with_columns(pl.col("user_id").cast(pl.Int32))
    table = metrics_by_history_length(recs, targets, history, 10, ks=(1,), buckets=(1, 2))
    assert table.select("bucket", "users", "ndcg@1").rows() == [("<=1", 0, None), ("2", 1, 1.0), (">2", 1, 0.0)]
    assert table.schema["ndcg@1"] == pl.Float64
    for bad in [(), (0, 5), (50, 20), (5, 5), (2.5,)]:
        with pytest.raises(ConfigError, match="buckets="):
            metrics_by_history_length(recs, targets, history, 10, buckets=bad)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="history lacks"):
        metrics_by_history_length(recs, targets, history.drop("user_id"), 10)
    with pytest.raises(SchemaError, match="history column"):
        metrics_by_history_length(recs, targets, history.with_columns(pl.col("user_id").cast(pl.String)), 10)
    with pytest.raises(DataError, match="targets is empty"):
        metrics_by_history_length(recs, targets.clear(), history, 10)


# ---------------------------------------------------------------------------------------------- splits


def test_leave_one_out_known_rows() -> None:
    ds = make_dataset(
        [(1, 0, 1), (1, 1, 2), (1, 2, 3), (1, 3, 4), (2, 4, 1), (2, 5, 2), (2, 6, 3), (3, 7, 1), (3, 8, 2)]
    )
    split = leave_one_out(ds)
    assert split.name == "loo"
    assert rows_of(split.train) == [(1, 0, 1), (1, 1, 2), (2, 4, 1), (3, 7, 1), (3, 8, 2)]
    assert rows_of(split.valid) == [(1, 2, 3), (2, 5, 2)]
    assert rows_of(split.test) == [(1, 3, 4), (2, 6, 3)]  # user 3 (2 events) is not evaluated
    assert rows_of(split.history_for_test()) == [
        (1, 0, 1),
        (1, 1, 2),
        (1, 2, 3),
        (2, 4, 1),
        (2, 5, 2),
        (3, 7, 1),
        (3, 8, 2),
    ]
    assert split.history_for_valid().equals(split.train)
    assert make_split(ds, "loo").test.equals(split.test)


TEMPORAL_EVENTS = (
    [(1, t // 10 % 10, t) for t in (10, 20, 30, 170, 190, 200)]
    + [(2, t // 10 % 10, t) for t in range(40, 170, 10)]
    + [(3, 8, 180)]  # first appears in the valid period: no history, dropped
)


def test_temporal_cutoffs_and_split() -> None:
    ds = make_dataset(TEMPORAL_EVENTS)
    assert ds.interactions.height == 20
    valid_cut, test_cut = temporal_cutoffs(ds, 0.1, 0.1)
    assert valid_cut == pytest.approx(10 + 0.8 * 190)  # 162: linear quantile of times 10..200
    assert test_cut == pytest.approx(10 + 0.9 * 190)  # 181
    split = temporal_split(ds, valid_fraction=0.1, test_fraction=0.1)
    assert split.name == "temporal"
    assert split.train["timestamp"].max() == 160 and split.train.height == 16
    assert rows_of(split.valid) == [(1, 7, 170)]
    assert rows_of(split.test) == [(1, 9, 190), (1, 0, 200)]  # several targets for one user
    assert 3 not in split.history_for_test()["user_id"].to_list()


def test_temporal_split_rejects_bad_settings() -> None:
    ds = make_dataset(TEMPORAL_EVENTS)
    with pytest.raises(ConfigError, match="valid_fraction"):
        temporal_split(ds, valid_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="test_fraction"):
        temporal_split(ds, test_fraction=0.0)
    positions = make_dataset(TEMPORAL_EVENTS, config=DataConfig(order_is_time=False))
    with pytest.raises(ConfigError, match="split='loo'"):
        temporal_split(positions)


def test_published_split_from_split_column() -> None:
    items = pl.DataFrame({"item_id": [0, 1, 2, 3], "text": ["a", "b", "c", "d"]})
    events = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "item_id": [0, 1, 2, 3, 0],
            "timestamp": [1, 2, 3, 1, 2],
            "split": ["train", "valid", "test", "train", "test"],
        }
    )
    split = published_split(Dataset.from_frames(events, items))
    assert split.name == "published"
    assert rows_of(split.train) == [(1, 0, 1), (2, 3, 1)]
    assert rows_of(split.valid) == [(1, 1, 2)]
    assert rows_of(split.test) == [(1, 2, 3), (2, 0, 2)]
    assert "split" not in split.train.columns
    with pytest.raises(ConfigError, match="amazon-scientific-unisrec"):
        published_split(Dataset.from_frames(events.drop("split"), items))
    with pytest.raises(DataError, match="'split' holds"):
        published_split(Dataset.from_frames(events.with_columns(pl.lit("dev").alias("split")), items))


# ---------------------------------------------------------------------------------------------- harness


class FixedOrder:
    """Recommends the catalogue in ascending ``item_id`` order; scores are ``-item_id``."""

    def __init__(self) -> None:
        self.fitted_on: pl.DataFrame | None = None
        self.calls: list[dict[str, Any]] = []

    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame) -> FixedOrder:
        self.fitted_on = interactions
        self.items_ = items.select("item_id").sort("item_id")
        return self

    def recommend(
        self,
        users: pl.Series | Sequence[Any],
        k: int = 10,
        *,
        history: pl.DataFrame | None = None,
        exclude_seen: bool = True,
    ) -> pl.DataFrame:
        users = pl.Series("user_id", users)
        self.calls.append({"users": users.to_list(), "k": k, "history": history})
        candidates = pl.DataFrame({"user_id": users}).join(self.items_, how="cross")
        if exclude_seen and history is not None:
            candidates = candidates.join(history.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
        return (
            candidates.sort("user_id", "item_id")
            .with_columns(pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.UInt32).alias("rank"))
            .filter(pl.col("rank") <= k)
            .with_columns((-pl.col("item_id")).cast(pl.Float32).alias("score"))
            .select("user_id", "item_id", "score", "rank")
        )


class EarlyStopping(FixedOrder):
    """Records the validation targets its ``fit`` is given."""

    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame, valid: pl.DataFrame | None = None) -> FixedOrder:
        self.valid_seen = valid
        return super().fit(interactions, items)


class KwargsOnly(FixedOrder):
    """A ``fit`` with ``**kwargs`` only: the harness must not pass ``valid``."""

    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame, **kwargs: Any) -> FixedOrder:
        self.kwargs_seen = kwargs
        return super().fit(interactions, items)


class FixedOrderScorer(FixedOrder):
    def score_items(self, pairs: pl.DataFrame, *, history: pl.DataFrame) -> pl.DataFrame:
        return pairs.with_columns((-pl.col("item_id")).cast(pl.Float32).alias("score"))


# LOO: user 1 test item 0 (history 5, 6); user 2 test item 3 (history 0, 1, 2); user 3 test 9 (history 7, 8);
# user 4 has two events and is not evaluated.
HARNESS_EVENTS = [
    (1, 5, 1),
    (1, 6, 2),
    (1, 0, 3),
    (2, 0, 1),
    (2, 1, 2),
    (2, 2, 3),
    (2, 3, 4),
    (3, 7, 1),
    (3, 8, 2),
    (3, 9, 3),
    (4, 1, 1),
    (4, 2, 2),
]


@pytest.fixture(scope="module")
def harness_ds() -> Dataset:
    return make_dataset(HARNESS_EVENTS, name="tiny")


def test_evaluate_end_to_end_known_ndcg(harness_ds: Dataset) -> None:
    model = FixedOrder()
    result = evaluate(model, harness_ds, EvalConfig(ks=(5, 10)), name="fixed")
    # with exclude_seen the targets sit at ranks 1, 1 and 8
    assert result.metrics["ndcg@10"] == pytest.approx((1 + 1 + 1 / math.log2(9)) / 3)
    assert result.metrics["ndcg@5"] == pytest.approx(2 / 3)
    assert result.metrics["recall@10"] == pytest.approx(1.0)
    assert result.metrics["coverage@5"] == pytest.approx(8 / 10)  # {0..4} and {3..7}
    assert model.fitted_on is not None and rows_of(model.fitted_on) == rows_of(leave_one_out(harness_ds).train)
    (call,) = model.calls
    assert call["users"] == [1, 2, 3] and call["k"] == 10
    assert rows_of(call["history"]) == [
        e for e in HARNESS_EVENTS if e[0] != 4 and e not in [(1, 0, 3), (2, 3, 4), (3, 9, 3)]
    ]
    assert result.protocol == {
        "catalogue": "full",
        "exclude_seen": True,
        "ks": [5, 10],
        "n_eval_users": 3,
        "sampled_negatives": None,
        "max_users": None,
        "seed": 0,
        "valid_targets_used": False,
    }
    assert (result.dataset, result.split, result.model, result.commit) == ("tiny", "loo", "fixed", "abc1234")
    assert result.fingerprint == harness_ds.fingerprint().as_dict()
    assert result.fit_seconds >= 0 and result.predict_seconds >= 0
    assert result.by_length is None


def test_exclude_seen_off_pushes_targets_down(harness_ds: Dataset) -> None:
    on = evaluate(FixedOrder(), harness_ds, EvalConfig(ks=(10,)), name="on")
    off = evaluate(FixedOrder(), harness_ds, EvalConfig(ks=(10,), exclude_seen=False), name="off")
    # without exclusion the history items stay in front: ranks 1, 4 and 10
    assert off.metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 3)
    assert off.metrics["mrr@10"] == pytest.approx((1 + 1 / 4 + 1 / 10) / 3)
    assert off.metrics["ndcg@10"] < on.metrics["ndcg@10"]
    assert off.protocol["exclude_seen"] is False


def test_evaluate_many_splits_once_and_subsamples(harness_ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = harness_module.make_split

    def counting_make_split(ds: Dataset, kind: Any) -> Any:
        calls.append(kind)
        return real(ds, kind)

    monkeypatch.setattr(harness_module, "make_split", counting_make_split)
    results = evaluate_many({"a": FixedOrder(), "b": FixedOrder()}, harness_ds, EvalConfig(max_users=2, seed=3))
    assert calls == ["loo"]
    assert [r.model for r in results] == ["a", "b"]
    assert all(r.protocol["n_eval_users"] == 2 and r.protocol["max_users"] == 2 for r in results)
    assert results[0].metrics == results[1].metrics  # same seed, same users


def test_eval_result_json_round_trip(harness_ds: Dataset, tmp_path: Path) -> None:
    result = evaluate(FixedOrder(), harness_ds, EvalConfig(ks=(10, 50)), name="fixed")
    assert EvalResult.from_json(result.to_json()) == result
    assert json.loads(result.to_json())["metrics"]["ndcg@10"] == result.metrics["ndcg@10"]
    path = save_results([result, result], tmp_path / "out" / "results.json")
    assert isinstance(json.loads(path.read_text()), list)
    assert load_results(path) == [result, result]
    table = results_table([result])
    assert "split loo" in table and "history items excluded" in table and "full catalogue" in table
    assert "| model | recall@10 | ndcg@10 | recall@50 | ndcg@50 | mrr@50 | coverage@10 | fit s | predict s |" in table
    assert f"| fixed | {result.metrics['recall@10']:.4f} |" in table


def test_sampled_metrics_are_labelled_and_known(harness_ds: Dataset) -> None:
    config = EvalConfig(ks=(1, 10), sampled_negatives=3, seed=1)
    result = evaluate(FixedOrderScorer(), harness_ds, config, name="scorer")
    # targets 0 and 3 outscore every allowed negative; target 9 is beaten by all 3 negatives (drawn from 0..6)
    assert result.metrics["sampled_ndcg@10"] == pytest.approx((1 + 1 + 1 / math.log2(5)) / 3)
    assert result.metrics["sampled_hit_rate@1"] == pytest.approx(2 / 3)
    assert "sampled_coverage@10" not in result.metrics and "ndcg@10" in result.metrics
    assert result.protocol["sampled_negatives"] == 3
    assert "3 negatives" in results_table([result], metrics=("sampled_ndcg@10",))


def test_sampled_metrics_need_score_items(harness_ds: Dataset) -> None:
    model = FixedOrder()
    with pytest.raises(ConfigError, match="score_items"):
        evaluate(model, harness_ds, EvalConfig(sampled_negatives=5), name="fixed")
    assert model.fitted_on is None  # refused before fitting


def test_sample_negatives_excludes_and_is_deterministic() -> None:
    users = pl.Series("user_id", [1, 2])
    catalogue = pl.Series("item_id", list(range(20)))
    excluded = targets_frame([(1, i) for i in range(15)] + [(2, 0)])
    a = sample_negatives(users, catalogue, excluded, n=8, seed=7)
    assert a.equals(sample_negatives(users, catalogue, excluded, n=8, seed=7))
    per_user = a.group_by("user_id").agg(pl.col("item_id")).sort("user_id")["item_id"].to_list()
    assert sorted(per_user[0]) == [15, 16, 17, 18, 19]  # only 5 allowed items: all of them
    assert len(set(per_user[1])) == 8 and 0 not in per_user[1]


def test_sampled_ranking_ties_go_against_the_target() -> None:
    scored = pl.DataFrame({"user_id": [1, 1, 1], "item_id": [0, 1, 2], "score": [0.5, 0.5, 0.1]})
    m = sampled_ranking_metrics(scored, targets_frame([(1, 0)]), ks=(1, 3))
    assert m == pytest.approx(
        {
            "sampled_recall@1": 0.0,
            "sampled_ndcg@1": 0.0,
            "sampled_mrr@1": 0.0,
            "sampled_hit_rate@1": 0.0,
            "sampled_recall@3": 1.0,
            "sampled_ndcg@3": 1 / math.log2(3),
            "sampled_mrr@3": 0.5,
            "sampled_hit_rate@3": 1.0,
        }
    )


def test_eval_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="split"):
        EvalConfig(split="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ks"):
        EvalConfig(ks=())
    with pytest.raises(ConfigError, match="sampled_negatives"):
        EvalConfig(sampled_negatives=0)
    with pytest.raises(ConfigError, match="max_users"):
        EvalConfig(max_users=-1)


def test_fit_gets_valid_targets_when_it_takes_them(harness_ds: Dataset) -> None:
    split = leave_one_out(harness_ds)
    early, kwargs, plain = EarlyStopping(), KwargsOnly(), FixedOrder()
    results = evaluate_many({"early": early, "kwargs": kwargs, "plain": plain}, harness_ds, EvalConfig(ks=(10,)))
    assert early.valid_seen is not None and early.valid_seen.equals(split.valid)
    assert early.fitted_on is not None and early.fitted_on.equals(split.train)
    assert kwargs.kwargs_seen == {}
    assert plain.fitted_on is not None and plain.fitted_on.equals(split.train)
    assert [r.protocol["valid_targets_used"] for r in results] == [True, False, False]
    assert results[0].metrics == results[2].metrics


def test_evaluate_by_history_length(harness_ds: Dataset, tmp_path: Path) -> None:
    # test histories (train + valid): user 1 has 2 events, user 2 has 3, user 3 has 2; targets at ranks 1, 1, 8
    config = EvalConfig(ks=(10,), length_buckets=[2])  # type: ignore[arg-type]
    assert config.length_buckets == (2,)
    results = evaluate_many({"a": FixedOrder(), "b": FixedOrder()}, harness_ds, config)
    by_length = results[0].by_length
    assert by_length is not None and [(row["bucket"], row["users"]) for row in by_length] == [("<=2", 2), (">2", 1)]
    assert by_length[0]["ndcg@10"] == pytest.approx((1 + 1 / math.log2(9)) / 2)
    assert by_length[1]["ndcg@10"] == pytest.approx(1.0)
    assert by_length[0]["coverage@10"] == pytest.approx(1.0)  # users 1 and 3 get 0-4, 7-9 and 0-6, 9
    assert EvalResult.from_json(results[0].to_json()) == results[0]
    assert load_results(save_results(results, tmp_path / "r.json")) == results
    table = length_table(results, metric="ndcg@10")
    assert "ndcg@10 by history length" in table and "split loo" in table
    assert "| model | <=2 (n=2) | >2 (n=1) |" in table
    assert f"| a | {(1 + 1 / math.log2(9)) / 2:.4f} | 1.0000 |" in table
    with pytest.raises(ConfigError, match="metric="):
        length_table(results, metric="ndcg@99")
    plain = evaluate(FixedOrder(), harness_ds, EvalConfig(ks=(10,)), name="plain")
    with pytest.raises(ConfigError, match="length_buckets"):
        length_table([results[0], plain])
    other = evaluate(FixedOrder(), harness_ds, EvalConfig(ks=(10,), length_buckets=(1,)), name="other")
    with pytest.raises(ConfigError, match="different"):
        length_table([results[0], other])
    with pytest.raises(ConfigError, match="length_buckets"):
        EvalConfig(length_buckets=(5, 5))
