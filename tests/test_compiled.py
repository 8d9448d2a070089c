"""The ranker's compiled predictor (lleaves) against LightGBM's own on the same boosters and rows.

The known answer is LightGBM's: the compiled forest must return its scores (to float rounding of the sum order),
including on missing values and after early stopping, where the booster holds more trees than it scores.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import polars as pl
import pytest

import recsys.models.ranker as ranker_module
from recsys.errors import ConfigError
from recsys.models import compiled
from recsys.models.ranker import LambdaRanker, RankerConfig, RankerEnsemble

pytestmark = pytest.mark.skipif(
    not compiled.compiled_available(), reason="lleaves is not installed (the `fast` extra; `make install` has it)"
)

FEATURES = ["a", "b", "c"]
FAST = RankerConfig(
    n_estimators=60, learning_rate=0.3, num_leaves=7, min_child_samples=5, early_stopping_rounds=5, n_threads=1
)


def frame(n_queries: int, seed: int, first: int = 0, rows: int = 10) -> pl.DataFrame:
    """Queries of ``rows`` candidates: the label-1 row has the largest ``a``; ``c`` is missing (NaN) in a fifth of
    the rows and, where present, tells the label too (so trees split on it and send missing values one way)."""
    rng = np.random.default_rng(seed)
    a = rng.random((n_queries, rows))
    label = (a == a.max(axis=1, keepdims=True)).astype(np.int32)
    c = np.where(rng.random((n_queries, rows)) < 0.2, np.nan, label + rng.normal(0, 0.7, (n_queries, rows)))
    return pl.DataFrame(
        {
            "query": np.repeat(np.arange(first, first + n_queries), rows),
            "a": a.ravel(),
            "b": rng.random(n_queries * rows),
            "c": c.ravel(),
            "label": label.ravel(),
        }
    )


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    return {"train": frame(300, 0), "valid": frame(100, 1, first=300), "test": frame(400, 2, first=400)}


def fitted(data: dict[str, pl.DataFrame], predictor: str, seed: int = 0) -> LambdaRanker:
    config = dataclasses.replace(FAST, predictor=predictor, seed=seed, feature_fraction=0.8)
    return LambdaRanker(config).fit(data["train"], data["valid"], FEATURES)


def test_compiled_scores_are_lightgbms(data: dict[str, pl.DataFrame]) -> None:
    ranker = fitted(data, "compiled")
    test = data["test"]
    assert test["c"].is_nan().sum() > 0
    reference = ranker.booster_.predict(test.select(FEATURES).to_numpy())
    scores = ranker.score(test)
    assert ranker._forest is not None  # the compiled forest scored it
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-12)
    assert np.std(scores) > 0.1  # not a constant forest


def test_compiled_forest_stops_at_the_best_iteration(data: dict[str, pl.DataFrame]) -> None:
    ranker = fitted(data, "compiled")
    trees = ranker.booster_.num_trees()
    assert trees > 6
    ranker.booster_.best_iteration = 5  # a booster that holds more trees than it scores
    test = data["test"].select(FEATURES).to_numpy()
    reference = ranker.booster_.predict(test, num_iteration=5)
    assert not np.allclose(reference, ranker.booster_.predict(test, num_iteration=trees))
    np.testing.assert_allclose(ranker.score(data["test"]), reference, rtol=0, atol=1e-12)


def test_lightgbm_predictor_never_compiles(data: dict[str, pl.DataFrame]) -> None:
    ranker = fitted(data, "lightgbm")
    ranker.score(data["test"])
    assert ranker._forest is None


def test_auto_compiles_once_the_rows_scored_reach_the_threshold(
    data: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    ranker = fitted(data, "auto")
    test = data["test"]  # 4,000 rows
    monkeypatch.setattr(ranker_module, "COMPILE_MIN_ROWS", 1000)
    small = ranker.score(test.head(600))
    assert ranker._forest is None  # 600 rows so far: LightGBM
    second = ranker.score(test.slice(600, 600))  # 1,200 in all: this call compiles
    assert ranker._forest is not None
    whole = ranker.score(test)
    np.testing.assert_allclose(whole[:600], small, rtol=0, atol=1e-12)
    np.testing.assert_allclose(whole[600:1200], second, rtol=0, atol=1e-12)
    ranker.fit(data["train"], data["valid"], FEATURES)  # a new booster: its own count and forest
    assert ranker._forest is None and ranker._rows_scored == 0


def test_text_round_trip_compiles_the_same_forest(data: dict[str, pl.DataFrame]) -> None:
    ranker = fitted(data, "compiled")
    loaded = LambdaRanker.from_text(ranker.to_text(), ranker.config)
    np.testing.assert_array_equal(loaded.score(data["test"]), ranker.score(data["test"]))
    assert loaded._forest is not None


def test_ensemble_and_two_stage_scores_match_lightgbm(data: dict[str, pl.DataFrame]) -> None:
    test = data["test"]
    compiled_members = [fitted(data, "compiled", seed) for seed in (0, 1, 2)]
    lightgbm_members = [
        LambdaRanker.from_text(m.to_text(), dataclasses.replace(m.config, predictor="lightgbm"))
        for m in compiled_members
    ]
    fast, slow = RankerEnsemble(compiled_members), RankerEnsemble(lightgbm_members)
    np.testing.assert_allclose(fast.score(test), slow.score(test), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.score_top(test, "query", 3), slow.score_top(test, "query", 3), rtol=0, atol=1e-12)
    # explanations run in LightGBM either way
    np.testing.assert_array_equal(fast.contributions(test.head(20)), slow.contributions(test.head(20)))


def test_without_lleaves_auto_falls_back_and_compiled_is_a_config_error(
    data: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    auto, forced = fitted(data, "auto"), fitted(data, "compiled")
    monkeypatch.setattr(ranker_module, "compiled_available", lambda: False)
    monkeypatch.setattr(compiled, "compiled_available", lambda: False)
    monkeypatch.setattr(ranker_module, "COMPILE_MIN_ROWS", 1)
    reference = auto.booster_.predict(
        data["test"].select(FEATURES).to_numpy(), num_iteration=auto.booster_.best_iteration
    )
    np.testing.assert_array_equal(auto.score(data["test"]), reference)
    assert auto._forest is None
    with pytest.raises(ConfigError, match="fast"):
        forced.score(data["test"])


def test_a_failed_compile_falls_back_to_lightgbm_under_auto(
    data: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(text: str) -> None:
        raise AttributeError("module 'llvmlite.binding' has no attribute 'PassManagerBuilder'")

    auto, forced = fitted(data, "auto"), fitted(data, "compiled")
    monkeypatch.setattr(ranker_module, "CompiledForest", broken)
    monkeypatch.setattr(ranker_module, "COMPILE_MIN_ROWS", 1)
    reference = auto.booster_.predict(
        data["test"].select(FEATURES).to_numpy(), num_iteration=auto.booster_.best_iteration
    )
    with caplog.at_level(logging.WARNING, logger="recsys.models.ranker"):
        np.testing.assert_array_equal(auto.score(data["test"]), reference)
    assert "LightGBM scores instead" in caplog.text
    with pytest.raises(ConfigError, match="PassManagerBuilder"):
        forced.score(data["test"])


def test_config_rejects_an_unknown_predictor() -> None:
    with pytest.raises(ConfigError, match="predictor"):
        RankerConfig(predictor="treelite")


def test_calls_at_once_compile_once_and_count_every_row(
    data: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks served side by side score one ranker from several threads: the row count misses no call, the
    forest is compiled once, and every call gets LightGBM's scores."""
    from concurrent.futures import ThreadPoolExecutor

    ranker = fitted(data, "auto")
    expected = fitted(data, "lightgbm").score(data["test"])  # the same seed: the same booster
    built = []

    class Counted(compiled.CompiledForest):
        def __init__(self, text: str) -> None:
            built.append(text)
            super().__init__(text)

    monkeypatch.setattr(ranker_module, "CompiledForest", Counted)
    monkeypatch.setattr(ranker_module, "COMPILE_MIN_ROWS", 4 * data["test"].height)
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(lambda _: ranker.score(data["test"]), range(8)))
    assert len(built) == 1  # the 4th call reaches the threshold; the others find the forest or wait for it
    assert ranker._rows_scored == 4 * data["test"].height
    for score in scores:
        np.testing.assert_allclose(score, expected, rtol=0, atol=1e-12)
