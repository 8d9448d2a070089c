"""Explanations a person can read: which history items a recommendation comes from, and why the ranker put it
there.

- *Because you consumed*: the history items closest to the recommended item in the space of the interest-match
  score (the same vectors FAISS searches), most similar first.
- *Reasons*: the ranker features that pushed the item up most, from LightGBM's ``pred_contrib`` (SHAP values),
  phrased in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from recsys.data import Histories
from recsys.errors import ConfigError
from recsys.features.base import QUERY
from recsys.schema import ITEM_ID, ITEM_IDX, TEXT

__all__ = ["PHRASES", "because_items", "feature_importance", "phrase", "reasons"]

PHRASES: dict[str, str] = {
    "retrieval_score": "matches your interests as read from your whole history",
    "retrieval_rank": "is among the closest matches to your interests",
    "transition_rank": "is often consumed right after items you had recently",
    "transition_score": "often follows items you had recently",
    "popularity_rank": "is among the most popular items",
    "cooc_rank": "is among the items most often consumed together with your recent ones",
    "ease_rank": "is among the items people with histories like yours went on to pick",
    "similar_rank": "is among the items whose description is closest to your recent ones",
    "lexical_rank": "is among the items that share the most telling words with your recent ones",
    "log_popularity": "is popular",
    "log_popularity_recent": "is popular lately",
    "popularity_trend": "is gaining popularity",
    "log_popularity_now": "was popular around the time of your last activity",
    "popularity_now_trend": "was more popular than usual around the time of your last activity",
    "log_item_age": "has the right age for you",
    "user_log_events": "fits how active you are",
    "user_log_span": "fits how long you have been active",
    "user_log_mean_gap": "fits how often you come back",
    "user_log_last_gap": "fits your latest pace",
    "cooc_score": "is often consumed together with your recent items",
    "cooc_max": "is often consumed together with one of your recent items",
    "sim_last": "is similar to the last item you had",
    "sim_recent_mean": "is similar to your recent items",
    "sim_recent_max": "is very similar to one of your recent items",
    "sim_history": "is similar to your history as a whole",
    "learned_last": "is what people pick around the last item you had",
    "learned_recent_mean": "is what people pick around your recent items",
    "learned_recent_max": "is what people pick around one of your recent items",
    "learned_history": "is what people pick around your history as a whole",
    "lex_last": "shares words with the last item you had",
    "lex_recent_mean": "shares words with your recent items",
    "lex_recent_max": "shares many words with one of your recent items",
    "lex_history": "shares words with your history as a whole",
    "ease_score": "is what people with histories like yours went on to pick",
    "category_share_mean": "is in categories you often choose",
    "category_share_max": "is in a category you often choose",
    "brand_share": "is from a brand you often choose",
    "brand_events_since": "is from a brand you chose recently",
    "item_mean_weight": "is well rated",
    "item_weight_gap": "is rated above what you usually give",
    "times_consumed": "is something you came back to before",
    "events_since_consumed": "is due for a repeat",
    "user_repeat_ratio": "fits how often you repeat items",
}


def phrase(feature: str) -> str:
    """The words for a feature (its name when there are none); query-relative features (``*_gap``,
    ``*_qrank``) read as their base feature compared with the other candidates."""
    for suffix in ("_gap", "_qrank"):
        base = feature.removesuffix(suffix)
        if base != feature and base in PHRASES:
            return f"{PHRASES[base]}, more than the other candidates"
    return PHRASES.get(feature, feature.replace("_", " "))


def reasons(contributions: np.ndarray, names: list[str], top: int = 3) -> pl.Series:
    """One sentence per row from ``pred_contrib`` output ``(n_rows, n_features + 1)``: the ``top`` features with
    the largest positive contributions, with their values (String Series named ``reasons``)."""
    n, f = contributions.shape[0], len(names)
    long = pl.DataFrame(
        {
            "_row": np.repeat(np.arange(n, dtype=np.int64), f),
            "_words": np.tile(np.asarray([phrase(x) for x in names], dtype=object), n).tolist(),
            "_c": contributions[:, :f].ravel(),  # the bias column dropped
        }
    )
    sentences = (
        long.filter(pl.col("_c") > 0)
        .sort(["_row", "_c"], descending=[False, True])
        .group_by("_row", maintain_order=True)
        .head(top)
        .group_by("_row", maintain_order=True)
        .agg(pl.format("{} (+{})", "_words", pl.col("_c").round(2)).str.join("; ").alias("reasons"))
    )
    rows = pl.DataFrame({"_row": np.arange(n, dtype=np.int64)})
    out = rows.join(sentences, on="_row", how="left", maintain_order="left")["reasons"]
    return out.fill_null("no feature stands out")


def because_items(
    recs: pl.DataFrame, histories: Histories, vectors: np.ndarray, items: pl.DataFrame, top: int = 3
) -> pl.DataFrame:
    """For each row of ``recs`` (``query, item_idx``), the ``top`` history items most similar to it.

    Returns ``recs`` (order kept) with ``because_ids`` (List of item ids) and ``because`` (their texts, cut to
    60 characters, joined by " | ").
    """
    events = pl.DataFrame(
        {
            QUERY: pl.Series(histories.event_user(), dtype=pl.UInt32),
            "_hist": pl.Series(histories.item_idx, dtype=pl.UInt32),
        }
    ).unique(maintain_order=True)
    rows = recs.select(QUERY, ITEM_IDX).with_row_index("_rec")
    pairs = rows.join(events, on=QUERY, how="inner")
    a = pairs[ITEM_IDX].to_numpy().astype(np.int64)
    b = pairs["_hist"].to_numpy().astype(np.int64)
    sim = np.einsum("nd,nd->n", vectors[a], vectors[b]) if len(a) else np.zeros(0, np.float32)  # (n_pairs,)
    labels = items.select(pl.col(ITEM_ID).alias("_id"), pl.col(TEXT).str.slice(0, 60).alias("_text")).with_row_index(
        "_hist"
    )
    best = (
        pairs.with_columns(_sim=pl.Series(sim, dtype=pl.Float32))
        .sort(["_rec", "_sim"], descending=[False, True])
        .group_by("_rec", maintain_order=True)
        .head(top)
        .join(labels.with_columns(pl.col("_hist").cast(pl.UInt32)), on="_hist", how="left", maintain_order="left")
        .group_by("_rec", maintain_order=True)
        .agg(pl.col("_id").alias("because_ids"), pl.col("_text").str.join(" | ").alias("because"))
    )
    out = rows.join(best, on="_rec", how="left", maintain_order="left")
    return recs.with_columns(out["because_ids"], out["because"].fill_null(""))


def feature_importance(boosters: Any, groups: dict[str, list[str]]) -> pl.DataFrame:
    """``feature, group, gain, gain_share, splits``: the trained ranker's importance (a LightGBM booster, or a
    sequence of boosters over the same features, whose importances are summed), largest gain first."""
    boosters = list(boosters) if isinstance(boosters, Sequence) else [boosters]
    if not boosters:
        raise ConfigError("feature_importance needs at least one booster.")
    names = boosters[0].feature_name()
    gain = np.sum([b.feature_importance(importance_type="gain") for b in boosters], axis=0)
    splits = np.sum([b.feature_importance(importance_type="split") for b in boosters], axis=0)
    group_of = {n: g for g, ns in groups.items() for n in ns}
    total = float(np.sum(gain)) or 1.0
    return pl.DataFrame(
        {
            "feature": names,
            "group": [group_of.get(n, "") for n in names],
            "gain": np.asarray(gain, np.float64),
            "gain_share": np.asarray(gain, np.float64) / total,
            "splits": np.asarray(splits, np.int64),
            "meaning": [phrase(n) for n in names],
        }
    ).sort("gain", descending=True)
