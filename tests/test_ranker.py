"""Tests of the LambdaRank ranker on synthetic queries whose right order is known.

In every query the label-1 candidate has the largest value of feature ``a``; feature ``b`` is noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from recsys.errors import ConfigError, DataError, NotFittedError, SchemaError
from recsys.models.ranker import LambdaRanker, RankerConfig, RankerEnsemble

FEATURES = ["a", "b"]
CANDIDATES = 10
# One thread: LightGBM's OpenMP spin-waits crawl when other processes share the cores.
FAST = RankerConfig(
    n_estimators=40, learning_rate=0.2, num_leaves=7, min_child_samples=5, early_stopping_rounds=10, n_threads=1
)


def queries(n: int, seed: int, first: int = 0) -> pl.DataFrame:
    """``n`` queries (ids ``first..``) of ``CANDIDATES`` rows each, sorted by query: ``query, cand, a, b, label``."""
    rng = np.random.default_rng(seed)
    # a: a random permutation of 0..CANDIDATES-1 per query plus jitter in [0, 1.5), so neighbours overlap a little.
    ranks = rng.permuted(np.tile(np.arange(CANDIDATES), (n, 1)), axis=1)
    a = (ranks + 1.5 * rng.random((n, CANDIDATES))) / CANDIDATES
    label = (a == a.max(axis=1, keepdims=True)).astype(np.int32)
    return pl.DataFrame(
        {
            "query": np.repeat(np.arange(first, first + n), CANDIDATES),
            "cand": np.tile(np.arange(CANDIDATES), n),
            "a": a.ravel(),
            "b": rng.random(n * CANDIDATES),
            "label": label.ravel(),
        }
    )


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    return {"train": queries(300, 0), "valid": queries(100, 1, first=300), "test": queries(200, 2, first=400)}


@pytest.fixture(scope="module")
def ranker(data: dict[str, pl.DataFrame]) -> LambdaRanker:
    """Fitted once per module, with early stopping on the validation queries."""
    return LambdaRanker(FAST).fit(data["train"], data["valid"], FEATURES)


def top1_accuracy(frame: pl.DataFrame, scores: np.ndarray) -> float:
    """Share of queries whose best-scored row is the label-1 row."""
    best = (
        frame.with_columns(pl.Series("s", scores))
        .sort(["query", "s"], descending=[False, True], maintain_order=True)
        .group_by("query", maintain_order=True)
        .first()
    )
    return float(best["label"].mean())


def test_learns_the_known_ordering(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    test = data["test"]
    assert top1_accuracy(test, ranker.score(test)) > 0.9


def test_the_informative_feature_dominates(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    contrib = np.abs(ranker.contributions(data["test"]))  # (n, 3)
    assert contrib[:, 0].mean() > 3 * contrib[:, 1].mean()


def test_two_fits_give_identical_scores(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    again = LambdaRanker(FAST).fit(data["train"], data["valid"], FEATURES)
    np.testing.assert_array_equal(again.score(data["test"]), ranker.score(data["test"]))


def test_fit_twice_equals_fit_once(data: dict[str, pl.DataFrame]) -> None:
    once = LambdaRanker(FAST).fit(data["train"], None, FEATURES)
    twice = LambdaRanker(FAST).fit(data["valid"], None, FEATURES).fit(data["train"], None, FEATURES)
    np.testing.assert_array_equal(once.score(data["test"]), twice.score(data["test"]))


def test_unsorted_query_column_is_sorted_by_fit(data: dict[str, pl.DataFrame]) -> None:
    train = data["train"]
    # Rows interleaved across queries (q0c0, q1c0, ..., q0c1, ...); each query's own rows keep their order,
    # so after fit's stable sort the data is exactly the sorted frame.
    interleaved = train.sort("cand", maintain_order=True)
    assert (np.diff(interleaved["query"].to_numpy()) < 0).any()
    sorted_fit = LambdaRanker(FAST).fit(train, None, FEATURES)
    unsorted_fit = LambdaRanker(FAST).fit(interleaved, None, FEATURES)
    np.testing.assert_array_equal(unsorted_fit.score(data["test"]), sorted_fit.score(data["test"]))
    shuffled = train.sample(fraction=1.0, shuffle=True, seed=5)
    shuffled_fit = LambdaRanker(FAST).fit(shuffled, data["valid"].sample(fraction=1.0, shuffle=True, seed=6), FEATURES)
    assert top1_accuracy(data["test"], shuffled_fit.score(data["test"])) > 0.9


def test_string_query_ids_are_grouped(data: dict[str, pl.DataFrame]) -> None:
    train = data["train"].with_columns(pl.format("user-{}", "query").alias("query"))
    ranker = LambdaRanker(FAST).fit(train, None, FEATURES)
    assert top1_accuracy(data["test"], ranker.score(data["test"])) > 0.9


def test_scoring_checks_feature_columns(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    with pytest.raises(SchemaError, match=r"\['b'\]"):
        ranker.score(data["test"].drop("b"))
    with pytest.raises(SchemaError, match=r"\['a'\]"):
        ranker.contributions(data["test"].drop("a"))


def test_scoring_uses_columns_by_name_not_position(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    test = data["test"]
    reordered = test.select("b", "label", "a", "query")
    np.testing.assert_array_equal(ranker.score(reordered), ranker.score(test))


def test_missing_feature_at_fit_is_a_schema_error(data: dict[str, pl.DataFrame]) -> None:
    with pytest.raises(SchemaError, match="'c'"):
        LambdaRanker(FAST).fit(data["train"], None, ["a", "c"])


def test_a_group_over_10000_rows_is_a_data_error() -> None:
    n = 10_001
    frame = pl.DataFrame({"query": np.zeros(n, np.int64), "a": np.arange(n) / n, "b": np.zeros(n), "label": 0})
    with pytest.raises(DataError, match="10001"):
        LambdaRanker(FAST).fit(frame, None, FEATURES)


def test_a_group_of_exactly_10000_rows_is_allowed() -> None:
    n = 10_000
    frame = pl.DataFrame(
        {"query": np.zeros(n, np.int64), "a": np.arange(n) / n, "b": np.zeros(n), "label": np.arange(n) == n - 1}
    )
    ranker = LambdaRanker(RankerConfig(n_estimators=2, n_threads=1)).fit(frame, None, FEATURES)
    assert ranker.score(frame.head(3)).shape == (3,)


def test_text_round_trip_gives_identical_scores(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    loaded = LambdaRanker.from_text(ranker.to_text())
    assert loaded.feature_names_ == FEATURES
    np.testing.assert_array_equal(loaded.score(data["test"]), ranker.score(data["test"]))
    np.testing.assert_array_equal(loaded.contributions(data["test"]), ranker.contributions(data["test"]))


def test_contributions_sum_to_the_raw_score(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    test = data["test"]
    contrib = ranker.contributions(test)
    assert contrib.shape == (test.height, len(FEATURES) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), ranker.score(test), rtol=1e-6, atol=1e-9)


def test_empty_frame_scores_empty(ranker: LambdaRanker, data: dict[str, pl.DataFrame]) -> None:
    assert ranker.score(data["test"].head(0)).shape == (0,)


def test_use_before_fit_is_not_fitted_error(data: dict[str, pl.DataFrame]) -> None:
    for use in (
        lambda r: r.score(data["test"]),
        lambda r: r.contributions(data["test"]),
        lambda r: r.to_text(),
    ):
        with pytest.raises(NotFittedError, match=r"LambdaRanker\.fit"):
            use(LambdaRanker())


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="n_estimators"):
        RankerConfig(n_estimators=0)
    with pytest.raises(ConfigError, match="learning_rate"):
        RankerConfig(learning_rate=0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("feature_fraction", 0.0),
        ("feature_fraction", 1.5),
        ("truncation_level", 0),
        ("lambda_l2", -1.0),
        ("lambda_l2", float("inf")),
        ("path_smooth", -0.5),
        ("path_smooth", "10"),
    ],
)
def test_config_rejects_bad_tree_settings(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        RankerConfig(**{field: value})


def test_feature_fraction_is_seeded_and_samples_features(data: dict[str, pl.DataFrame]) -> None:
    """With half the features per tree, some trees cannot split on ``a`` (the only signal): the model differs
    from the full one, but two fits with the same seed are identical."""
    half = RankerConfig(**{**FAST.__dict__, "feature_fraction": 0.5})
    one = LambdaRanker(half).fit(data["train"], data["valid"], FEATURES)
    two = LambdaRanker(half).fit(data["train"], data["valid"], FEATURES)
    full = LambdaRanker(FAST).fit(data["train"], data["valid"], FEATURES)
    np.testing.assert_array_equal(one.score(data["test"]), two.score(data["test"]))
    assert not np.array_equal(one.score(data["test"]), full.score(data["test"]))
    assert "feature_fraction: 0.5" in one.to_text()


def test_leaf_penalties_shrink_the_trees_outputs(data: dict[str, pl.DataFrame]) -> None:
    """A huge ``lambda_l2`` shrinks every leaf value to about 0; a huge ``path_smooth`` pulls every leaf to its
    tree's root value, so all rows score alike. Both reach LightGBM's parameters and the saved text."""
    test, n = data["test"], {"n_estimators": 5, "early_stopping_rounds": 5}
    plain = LambdaRanker(RankerConfig(**{**FAST.__dict__, **n})).fit(data["train"], None, FEATURES).score(test)
    for field in ("lambda_l2", "path_smooth"):
        config = RankerConfig(**{**FAST.__dict__, **n, field: 1e9})
        ranker = LambdaRanker(config).fit(data["train"], None, FEATURES)
        scores = ranker.score(test)
        assert np.ptp(scores) < 1e-4 * np.ptp(plain), field
        assert f"{field}: 1e+09" in ranker.to_text() or f"{field}: 1000000000" in ranker.to_text()


def test_base_feature_is_the_starting_score_of_fit_and_score(data: dict[str, pl.DataFrame]) -> None:
    """With ``base_feature="a"`` every score is the trees' output plus ``base_weight * a`` (and ``a``'s
    contribution carries it)."""
    config = RankerConfig(**{**FAST.__dict__, "base_feature": "a", "base_weight": 5.0})
    based = LambdaRanker(config).fit(data["train"], data["valid"], FEATURES)
    test = data["test"]
    matrix = test.select(FEATURES).cast(pl.Float32).to_numpy()
    trees = based.booster_.predict(matrix, num_iteration=based.booster_.best_iteration or None)
    np.testing.assert_allclose(based.score(test) - trees, 5.0 * matrix[:, 0], rtol=1e-6)
    contrib = based.contributions(test)
    np.testing.assert_allclose(contrib.sum(axis=1), based.score(test), rtol=1e-6, atol=1e-9)
    assert top1_accuracy(test, based.score(test)) > 0.95  # starting from a's (right) order, it keeps it
    loaded = LambdaRanker.from_text(based.to_text(), config)  # the saved config carries the base (as a model's)
    np.testing.assert_array_equal(loaded.score(test), based.score(test))
    with pytest.raises(ConfigError, match="base_feature"):
        LambdaRanker(RankerConfig(**{**FAST.__dict__, "base_feature": "c"})).fit(data["train"], None, FEATURES)
    with pytest.raises(ConfigError, match="base_weight"):
        RankerConfig(base_weight=0.0)


def test_two_stage_scores_keep_the_ensemble_on_each_querys_top_rows(data: dict[str, pl.DataFrame]) -> None:
    """``score_top``: the first member picks each query's ``keep`` best rows, which get the ensemble's score;
    every other row ranks below them, in the first member's order; keeping every row is plain ``score``."""
    members = [
        LambdaRanker(dataclasses.replace(FAST, seed=s)).fit(data["train"], data["valid"], FEATURES) for s in (0, 1)
    ]
    members.append(
        LambdaRanker(dataclasses.replace(FAST, seed=2, feature_fraction=0.5)).fit(data["train"], None, FEATURES)
    )
    ensemble = RankerEnsemble(members)
    test = data["test"].with_columns(query=pl.col("query").cast(pl.String))  # any query dtype
    full = ensemble.score(test)
    np.testing.assert_array_equal(ensemble.score_top(test, "query", CANDIDATES), full)
    first = members[0].score(test)
    out = test.with_columns(
        first=pl.Series(first), full=pl.Series(full), two=pl.Series(ensemble.score_top(test, "query", 3))
    )
    out = out.with_columns(kept=pl.col("first").rank("ordinal", descending=True).over("query") <= 3)
    kept, dropped = out.filter("kept"), out.filter(~pl.col("kept"))
    assert kept.height == 3 * test["query"].n_unique()
    np.testing.assert_array_equal(kept["two"].to_numpy(), kept["full"].to_numpy())
    lowest_kept = kept.group_by("query").agg(pl.col("two").min().alias("low"))
    below = dropped.join(lowest_kept, on="query").select((pl.col("two") < pl.col("low")).all()).item()
    assert below  # nothing outside the top 3 outranks a kept row of its query
    order = (
        dropped.sort("query", "first")
        .group_by("query", maintain_order=True)
        .agg(pl.col("two").diff().drop_nulls() >= 0)
    )
    assert order["two"].explode().all()  # the dropped rows keep the first member's order
    assert ensemble.score_top(test.head(0), "query", 3).shape == (0,)
    assert first.shape == full.shape and not np.array_equal(first, full)  # the members do differ
