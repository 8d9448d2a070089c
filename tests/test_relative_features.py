"""Query-relative features: known answers, NaN handling, row order, and their place in RankingFeatures."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recsys.data import Histories
from recsys.errors import ConfigError, SchemaError
from recsys.features import QUERY, FeatureConfig, FitContext, QueryRelative, RankingFeatures, RelativeConfig
from recsys.schema import ITEM_IDX

NAN = math.nan


def frame() -> pl.DataFrame:
    """Two queries: query 0 has three candidates, query 1 has two (one with a NaN similarity)."""
    return pl.DataFrame(
        {
            QUERY: [0, 0, 0, 1, 1],
            ITEM_IDX: [4, 5, 6, 4, 7],
            "retrieval_score": [0.5, 0.9, 0.7, 0.2, 0.4],
            "sim_last": [0.1, 0.3, 0.3, NAN, 0.8],
        },
        schema={QUERY: pl.UInt32, ITEM_IDX: pl.UInt32, "retrieval_score": pl.Float32, "sim_last": pl.Float32},
    )


def no_histories() -> Histories:
    return Histories(
        user_ids=pl.Series("user_id", [0, 1]),
        indptr=np.zeros(3, np.int64),
        item_idx=np.zeros(0, np.int64),
        timestamps=np.zeros(0, np.int64),
    )


def test_gaps_and_ranks_known_answer() -> None:
    block = QueryRelative(available=["retrieval_score", "sim_last"]).fit(None)  # type: ignore[arg-type]
    assert block.names == ["retrieval_score_gap", "sim_last_gap", "sim_last_qrank"]
    out = block.transform(frame(), no_histories())
    np.testing.assert_allclose(out["retrieval_score_gap"].to_numpy(), [-0.4, 0.0, -0.2, -0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["sim_last_gap"].to_numpy(), [-0.2, 0.0, 0.0, NAN, 0.0], atol=1e-6)
    # ties (0.3, 0.3) share rank 1; NaN is missing, never the best
    np.testing.assert_array_equal(out["sim_last_qrank"].to_numpy(), [3, 1, 1, NAN, 1])
    assert all(out.schema[n] == pl.Float32 for n in block.names)


def test_row_order_does_not_change_a_candidates_values() -> None:
    block = QueryRelative(available=["retrieval_score", "sim_last"])
    base = block.transform(frame().with_row_index("row"), no_histories()).sort("row")
    shuffled = frame().with_row_index("row")[[4, 2, 0, 3, 1]]
    again = block.transform(shuffled, no_histories()).sort("row")
    np.testing.assert_array_equal(again["retrieval_score_gap"].to_numpy(), base["retrieval_score_gap"].to_numpy())


def test_only_available_columns_and_a_clear_error_when_one_is_missing() -> None:
    assert QueryRelative(RelativeConfig(columns=("sim_last", "cooc_max")), ["sim_last"]).columns == ["sim_last"]
    with pytest.raises(SchemaError, match="cooc_max"):
        QueryRelative(RelativeConfig(columns=("cooc_max",))).transform(frame(), no_histories())
    with pytest.raises(ConfigError):
        RelativeConfig(columns=())


def test_ranking_features_apply_the_relative_block_last_and_round_trip() -> None:
    events = Histories(
        user_ids=pl.Series("user_id", [0, 1]),
        indptr=np.array([0, 3, 5], np.int64),
        item_idx=np.array([0, 1, 2, 1, 2], np.int64),
        timestamps=np.array([1, 2, 3, 4, 5], np.int64),
    )
    items = pl.DataFrame({"item_id": range(8), "text": ["x"] * 8})
    context = FitContext(events=events, items=items, item_vectors=np.eye(8, dtype=np.float32))
    config = FeatureConfig(groups=("interest", "similarity", "relative"))
    features = RankingFeatures(config).fit(context)
    names = features.feature_names
    assert names[-1].endswith(("_gap", "_qrank")) and "sim_last_gap" in names and "retrieval_score_gap" in names
    assert "cooc_max_gap" not in names  # its group is off
    candidates = (
        frame()
        .drop("sim_last")
        .with_columns(
            retrieval_rank=pl.lit(1, pl.UInt32),
            transition_rank=pl.lit(1, pl.UInt32),
            popularity_rank=pl.lit(1, pl.UInt32),
        )
    )
    out = features.transform(candidates, events)
    restored = RankingFeatures.from_state(config, list(features.blocks_ or {}), features.state())
    assert restored.feature_names == names
    np.testing.assert_array_equal(
        restored.transform(candidates, events).select(names).to_numpy(), out.select(names).to_numpy()
    )


def test_relative_features_are_phrased_from_their_base_feature() -> None:
    from recsys.explain import PHRASES, phrase

    assert phrase("sim_last_qrank") == f"{PHRASES['sim_last']}, more than the other candidates"
    assert phrase("unknown_thing_gap") == "unknown thing gap"
