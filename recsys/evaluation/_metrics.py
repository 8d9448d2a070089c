"""Top-K ranking metrics against the full catalogue, as polars joins over whole frames.

For a user with targets ``T`` (distinct items) and a ranked list whose hits in the top ``K`` sit at ranks
``r_1 < r_2 < ...``:

* ``recall@K``   = hits / ``|T|``
* ``ndcg@K``     = ``sum(1 / log2(r_i + 1)) / sum_{j=1}^{min(K, |T|)} 1 / log2(j + 1)`` (binary relevance)
* ``mrr@K``      = ``1 / r_1`` (0 without a hit)
* ``hit_rate@K`` = 1 if there is a hit, else 0

Each is averaged over the users with targets; a user with targets but no recommendations counts as zero.
``coverage@K`` is the number of distinct items recommended in the top ``K`` (to users with targets) over the
catalogue size. :func:`metrics_by_history_length` reports the same metrics per bucket of history length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataError, SchemaError
from recsys.schema import ITEM_ID, RANK, SCORE, USER_ID

__all__ = [
    "METRIC_NAMES",
    "metrics_by_history_length",
    "ranking_metrics",
    "sample_negatives",
    "sampled_ranking_metrics",
]

METRIC_NAMES = ("recall", "ndcg", "mrr", "hit_rate", "coverage")
"""Metric families returned by :func:`ranking_metrics`, each once per ``K`` as ``"<name>@<K>"``."""


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigError(f"ks={ks!r} must be a non-empty tuple of positive integers, for example (10, 50).")
    return ks


def _require(df: pl.DataFrame, columns: tuple[str, ...], frame: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{frame} lacks column(s) {missing}; it has {df.columns}. It needs {list(columns)}.")


def _align_ids(recs: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """Cast the id columns of ``recs`` to the dtypes of ``targets`` where both are integers."""
    casts = []
    for column in (USER_ID, ITEM_ID):
        have, want = recs.schema[column], targets.schema[column]
        if have == want or recs.height == 0 or (have.is_integer() and want.is_integer()):
            casts.append(pl.col(column).cast(want))
        else:
            raise SchemaError(
                f"recs column {column!r} has dtype {have} but targets' has dtype {want}; "
                f"cast both to the same type, e.g. pl.col({column!r}).cast({want})."
            )
    return recs.with_columns(casts)


def _check_inputs(recs: pl.DataFrame, targets: pl.DataFrame, n_items: int) -> pl.DataFrame:
    _require(recs, (USER_ID, ITEM_ID, RANK), "recs")
    _require(targets, (USER_ID, ITEM_ID), "targets")
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1:
        raise ConfigError(f"n_items={n_items!r} must be the catalogue size, a positive integer.")
    if targets.height == 0:
        raise DataError("targets is empty, so no user can be evaluated; pass the target events of the split.")
    recs = _align_ids(recs.select(USER_ID, ITEM_ID, RANK), targets)
    duplicated = recs.select(USER_ID, ITEM_ID).is_duplicated()
    if duplicated.any():
        examples = recs.filter(duplicated).head(3).rows()
        raise DataError(
            f"recs holds {int(duplicated.sum())} duplicated (user_id, item_id) rows "
            f"(for example {examples}); "
            "a recommender must list each item at most once per user."
        )
    return recs


def _ideal_dcg(k: int) -> pl.DataFrame:
    """``_n -> _idcg``: the DCG of ``_n`` hits at ranks ``1.._n``, for ``_n`` in ``1..k``."""
    discounts = [1.0 / math.log2(r + 1) for r in range(1, k + 1)]
    return pl.DataFrame({"_n": list(range(1, k + 1)), "_idcg": discounts}).with_columns(
        pl.col("_n").cast(pl.UInt32), pl.col("_idcg").cum_sum()
    )


def _per_user(hits: pl.DataFrame, per_user_targets: pl.DataFrame, k: int) -> pl.DataFrame:
    """One row per user with targets: ``recall, ndcg, mrr, hit_rate`` at ``k``."""
    found = (
        hits.filter(pl.col(RANK) <= k)
        .group_by(USER_ID)
        .agg(
            pl.len().cast(pl.Float64).alias("_hits"),
            (1.0 / (pl.col(RANK).cast(pl.Float64) + 1.0).log(2)).sum().alias("_dcg"),
            (1.0 / pl.col(RANK).min().cast(pl.Float64)).alias("mrr"),
        )
    )
    return (
        per_user_targets.join(found, on=USER_ID, how="left")
        .with_columns(pl.col("_hits", "_dcg", "mrr").fill_null(0.0), pl.min_horizontal("_n_targets", k).alias("_n"))
        .join(_ideal_dcg(k), on="_n", how="left")
        .select(
            (pl.col("_hits") / pl.col("_n_targets")).alias("recall"),
            (pl.col("_dcg") / pl.col("_idcg")).alias("ndcg"),
            pl.col("mrr"),
            (pl.col("_hits") > 0).cast(pl.Float64).alias("hit_rate"),
        )
    )


def ranking_metrics(
    recs: pl.DataFrame, targets: pl.DataFrame, n_items: int, ks: Sequence[int] = (10, 50)
) -> dict[str, float]:
    """Recall, NDCG, MRR, hit rate and coverage at each ``K`` of ranked lists against target items.

    Parameters
    ----------
    recs:
        ``user_id, item_id, rank`` (rank 1 is best; other columns are ignored). Users absent from ``recs``
        count as zero for every metric.
    targets:
        ``user_id, item_id``: the held-out items, possibly several per user; a repeated (user, item) pair
        counts once.
    n_items:
        Size of the full catalogue, the denominator of ``coverage@K``.
    ks:
        Cut-offs, positive integers.

    Returns
    -------
    dict of str to float
        Keys ``"recall@K"``, ``"ndcg@K"``, ``"mrr@K"``, ``"hit_rate@K"``, ``"coverage@K"`` for each ``K``, in
        that order; the first four are means over the users with targets.

    Raises
    ------
    SchemaError
        A column is missing or the id dtypes of ``recs`` and ``targets`` do not match.
    DataError
        ``targets`` is empty or ``recs`` lists an item twice for a user.
    ConfigError
        ``n_items`` or ``ks`` are not positive integers.
    """
    ks = _check_ks(ks)
    recs = _check_inputs(recs, targets, n_items)
    targets = targets.select(USER_ID, ITEM_ID).unique()
    per_user_targets = targets.group_by(USER_ID).agg(pl.len().cast(pl.UInt32).alias("_n_targets"))
    recs = recs.join(per_user_targets.select(USER_ID), on=USER_ID, how="semi")
    hits = recs.join(targets, on=[USER_ID, ITEM_ID], how="inner")
    out: dict[str, float] = {}
    for k in ks:
        means = _per_user(hits, per_user_targets, k).mean().row(0, named=True)
        out.update({f"{name}@{k}": float(value) for name, value in means.items()})
        covered = recs.filter(pl.col(RANK) <= k)[ITEM_ID].n_unique()
        out[f"coverage@{k}"] = covered / n_items
    return out


def check_length_buckets(buckets: Sequence[int], name: str = "buckets") -> tuple[int, ...]:
    """``buckets`` as a tuple, checked: a non-empty, strictly increasing sequence of positive integers.

    Raises
    ------
    ConfigError
        Naming the argument ``name``, when the edges are empty, not positive integers or not increasing.
    """
    edges = tuple(buckets)
    valid = bool(edges) and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in edges)
    if not valid or any(a >= b for a, b in pairwise(edges)):
        raise ConfigError(
            f"{name}={buckets!r} must be a non-empty, strictly increasing tuple of positive integers "
            "(history-length bucket edges), for example (20, 50, 200)."
        )
    return edges


def _bucket_labels(edges: tuple[int, ...]) -> list[str]:
    """``(20, 50, 200)`` -> ``["<=20", "21-50", "51-200", ">200"]``."""
    middle = [f"{lo + 1}-{hi}" if hi > lo + 1 else str(hi) for lo, hi in pairwise(edges)]
    return [f"<={edges[0]}", *middle, f">{edges[-1]}"]


def _history_lengths(targets: pl.DataFrame, history: pl.DataFrame, edges: tuple[int, ...]) -> pl.DataFrame:
    """One row per target user: ``user_id, _len`` (its events in ``history``, 0 if none) and ``_bucket``."""
    _require(history, (USER_ID,), "history")
    have, want = history.schema[USER_ID], targets.schema[USER_ID]
    if not (have == want or history.height == 0 or (have.is_integer() and want.is_integer())):
        raise SchemaError(
            f"history column {USER_ID!r} has dtype {have} but targets' has dtype {want}; "
            f"cast both to the same type, e.g. pl.col({USER_ID!r}).cast({want})."
        )
    counts = history.select(pl.col(USER_ID).cast(want)).group_by(USER_ID).agg(pl.len().alias("_len"))
    length = pl.col("_len").fill_null(0)
    return (
        targets.select(USER_ID)
        .unique()
        .join(counts, on=USER_ID, how="left")
        .with_columns(pl.sum_horizontal([(length > e).cast(pl.UInt32) for e in edges]).alias("_bucket"))
    )


def metrics_by_history_length(
    recs: pl.DataFrame,
    targets: pl.DataFrame,
    history: pl.DataFrame,
    n_items: int,
    ks: Sequence[int] = (10, 50),
    buckets: Sequence[int] = (20, 50, 200),
) -> pl.DataFrame:
    """:func:`ranking_metrics` per bucket of target users grouped by the length of their history.

    A user's history length is its number of events in ``history``; bucket edges ``(20, 50, 200)`` give the
    buckets ``"<=20"``, ``"21-50"``, ``"51-200"`` and ``">200"`` (a target user absent from ``history`` has
    length 0).

    Parameters
    ----------
    recs, targets, n_items, ks:
        As for :func:`ranking_metrics`.
    history:
        ``user_id, ...``: the events the model scored from (for the test targets, ``split.history_for_test()``).
    buckets:
        Bucket edges, strictly increasing positive integers; each bucket includes its upper edge.

    Returns
    -------
    pl.DataFrame
        One row per bucket, in order: ``bucket`` (str), ``users`` (int64, target users in the bucket) and one
        float64 column per metric of :func:`ranking_metrics`, computed on that bucket's users (``coverage@K``
        over the full catalogue). An empty bucket has ``users = 0`` and null metrics.

    Raises
    ------
    SchemaError, DataError, ConfigError
        As for :func:`ranking_metrics`; also for bad ``buckets`` or a ``history`` without ``user_id``.
    """
    ks = _check_ks(ks)
    edges = check_length_buckets(buckets)
    recs = _check_inputs(recs, targets, n_items)
    users = _history_lengths(targets, history, edges)
    names = [f"{name}@{k}" for k in ks for name in METRIC_NAMES]
    rows: list[dict[str, object]] = []
    for index, label in enumerate(_bucket_labels(edges)):
        members = users.filter(pl.col("_bucket") == index).select(USER_ID)
        metrics: dict[str, float | None] = dict.fromkeys(names)
        if members.height:
            in_bucket = targets.join(members, on=USER_ID, how="semi")
            metrics.update(ranking_metrics(recs.join(members, on=USER_ID, how="semi"), in_bucket, n_items, ks))
        rows.append({"bucket": label, "users": members.height, **metrics})
    schema = {"bucket": pl.String, "users": pl.Int64, **dict.fromkeys(names, pl.Float64)}
    return pl.DataFrame(rows, schema=schema)


def _draw_round(
    need: pl.DataFrame, taken: pl.DataFrame, excluded: pl.DataFrame, n_cat: int, rng: np.random.Generator
) -> pl.DataFrame:
    """One round of rejection sampling: new ``_pos, _idx`` rows for users still short of negatives."""
    counts = taken.group_by("_pos").agg(pl.len().cast(pl.Int64).alias("_have"))
    short = (
        need.join(counts, on="_pos", how="left")
        .with_columns(pl.col("_have").fill_null(0))
        .with_columns((pl.col("_want") - pl.col("_have")).alias("_short"))
        .filter(pl.col("_short") > 0)
    )
    if short.height == 0:
        return taken.clear()
    free = (short["_avail"] - short["_have"]).clip(lower_bound=1).to_numpy()
    draws = np.minimum(np.ceil(short["_short"].to_numpy() * n_cat / free * 1.3) + 8, 2 * n_cat).astype(np.int64)
    candidates = pl.DataFrame(
        {
            "_pos": np.repeat(short["_pos"].to_numpy(), draws),
            "_idx": rng.integers(0, n_cat, int(draws.sum())),
        },
        schema={"_pos": pl.UInt32, "_idx": pl.UInt32},
    )
    return (
        candidates.join(excluded, on=["_pos", "_idx"], how="anti", maintain_order="left")
        .join(taken, on=["_pos", "_idx"], how="anti", maintain_order="left")
        .unique(maintain_order=True)
        .join(short.select("_pos", "_short"), on="_pos", how="inner", maintain_order="left")
        .filter(pl.int_range(pl.len()).over("_pos") < pl.col("_short"))
        .select("_pos", "_idx")
    )


def _fill_exactly(
    need: pl.DataFrame, taken: pl.DataFrame, excluded: pl.DataFrame, n_cat: int, rng: np.random.Generator
) -> pl.DataFrame:
    """Top up the users still short after rejection sampling from their full list of allowed items."""
    counts = taken.group_by("_pos").agg(pl.len().cast(pl.Int64).alias("_have"))
    short = (
        need.join(counts, on="_pos", how="left")
        .with_columns((pl.col("_want") - pl.col("_have").fill_null(0)).alias("_short"))
        .filter(pl.col("_short") > 0)
        .select("_pos", "_short")
    )
    if short.height == 0:
        return taken
    allowed = (
        short.join(pl.DataFrame({"_idx": np.arange(n_cat, dtype=np.uint32)}), how="cross")
        .join(excluded, on=["_pos", "_idx"], how="anti")
        .join(taken, on=["_pos", "_idx"], how="anti")
    )
    allowed = allowed.with_columns(pl.Series("_key", rng.random(allowed.height))).sort("_pos", "_key")
    extra = allowed.filter(pl.int_range(pl.len()).over("_pos") < pl.col("_short")).select("_pos", "_idx")
    return pl.concat([taken, extra])


def sample_negatives(
    users: pl.Series, catalogue: pl.Series, excluded: pl.DataFrame, n: int, seed: int = 0
) -> pl.DataFrame:
    """Draw ``n`` distinct negatives per user, uniformly from the catalogue minus the user's excluded items.

    Users with fewer than ``n`` allowed items get all of them.

    Parameters
    ----------
    users:
        The users (distinct ids).
    catalogue:
        Every item id of the catalogue.
    excluded:
        ``user_id, item_id``: items never drawn for that user (the targets, and the history when seen items
        are excluded from recommendations).
    n:
        Negatives per user, a positive integer.
    seed:
        Seed of the generator; the draw is deterministic given the inputs.

    Returns
    -------
    pl.DataFrame
        ``user_id, item_id``, sorted by user in the order of ``users``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} negatives per user must be a positive integer, for example 100.")
    rng = np.random.default_rng(seed)
    index = pl.DataFrame({ITEM_ID: catalogue.unique(maintain_order=True)}).with_row_index("_idx")
    n_cat = index.height
    positions = pl.DataFrame({USER_ID: users}).with_row_index("_pos")
    excluded = (
        excluded.select(USER_ID, ITEM_ID)
        .unique()
        .join(positions, on=USER_ID, how="inner")
        .join(index, on=ITEM_ID, how="inner")
        .select("_pos", "_idx")
    )
    need = (
        positions.join(excluded.group_by("_pos").agg(pl.len().alias("_n_excl")), on="_pos", how="left")
        .with_columns((n_cat - pl.col("_n_excl").fill_null(0).cast(pl.Int64)).alias("_avail"))
        .with_columns(pl.min_horizontal("_avail", n).alias("_want"))
    )
    taken = pl.DataFrame(schema={"_pos": pl.UInt32, "_idx": pl.UInt32})
    for _ in range(4):
        fresh = _draw_round(need, taken, excluded, n_cat, rng)
        if fresh.height == 0:
            break
        taken = pl.concat([taken, fresh])
    taken = _fill_exactly(need, taken, excluded, n_cat, rng)
    return (
        taken.sort("_pos", maintain_order=True)
        .join(positions, on="_pos", how="left", maintain_order="left")
        .join(index, on="_idx", how="left", maintain_order="left")
        .select(USER_ID, ITEM_ID)
    )


def sampled_ranking_metrics(
    scored: pl.DataFrame, targets: pl.DataFrame, ks: Sequence[int] = (10, 50)
) -> dict[str, float]:
    """Rank each user's targets among the user's scored candidates; metrics prefixed ``sampled_``.

    Candidates are sorted by ``score``, best first; a target tied with a negative is placed after it (so a
    constant score earns no credit), and a null or NaN score ranks last. ``coverage`` is not reported.

    Parameters
    ----------
    scored:
        ``user_id, item_id, score``: every target and every sampled negative of each user.
    targets:
        ``user_id, item_id``: the held-out items.
    ks:
        Cut-offs, positive integers.

    Returns
    -------
    dict of str to float
        ``"sampled_recall@K"``, ``"sampled_ndcg@K"``, ``"sampled_mrr@K"``, ``"sampled_hit_rate@K"`` per ``K``.
    """
    _require(scored, (USER_ID, ITEM_ID, SCORE), "scored")
    _require(targets, (USER_ID, ITEM_ID), "targets")
    flagged = targets.select(USER_ID, ITEM_ID).unique().with_columns(pl.lit(1, pl.UInt8).alias("_is_target"))
    ranked = (
        _align_ids(scored.select(USER_ID, ITEM_ID, SCORE), targets)
        .unique([USER_ID, ITEM_ID], keep="first", maintain_order=True)
        .join(flagged, on=[USER_ID, ITEM_ID], how="left")
        .with_columns(pl.col(SCORE).cast(pl.Float64).fill_nan(None), pl.col("_is_target").fill_null(0))
        .sort([USER_ID, SCORE, "_is_target"], descending=[False, True, False], nulls_last=True)
        .with_columns((pl.int_range(1, pl.len() + 1).over(USER_ID)).cast(pl.UInt32).alias(RANK))
    )
    metrics = ranking_metrics(ranked, targets, max(ranked.height, 1), ks)  # coverage is dropped below
    return {f"sampled_{key}": value for key, value in metrics.items() if not key.startswith("coverage")}
