"""The evaluation harness: split once, fit, recommend for the test users, score against the full catalogue.

Every :class:`EvalResult` carries the protocol (catalogue, exclusion of seen items, cut-offs, users, sampled
negatives, whether ``fit`` saw the validation targets), the dataset fingerprint, the timings and the code
commit, so that two numbers are only compared when they were measured the same way.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

import polars as pl

from recsys._protocols import RecommenderLike
from recsys.data import Dataset
from recsys.errors import ConfigError, DataError
from recsys.evaluation._metrics import (
    check_length_buckets,
    metrics_by_history_length,
    ranking_metrics,
    sample_negatives,
    sampled_ranking_metrics,
)
from recsys.evaluation._splits import Split, SplitKind, make_split
from recsys.schema import ITEM_ID, SCORE, USER_ID

__all__ = [
    "DEFAULT_TABLE_METRICS",
    "EvalConfig",
    "EvalResult",
    "evaluate",
    "evaluate_many",
    "length_table",
    "load_results",
    "results_table",
    "save_results",
]

logger = logging.getLogger(__name__)

DEFAULT_TABLE_METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr@50", "coverage@10")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class EvalConfig:
    """How a model is evaluated.

    Parameters
    ----------
    split:
        ``"loo"``, ``"temporal"`` or ``"published"`` (see :func:`~recsys.evaluation.make_split`).
    ks:
        Cut-offs of the metrics; the model recommends ``max(ks)`` items per user.
    exclude_seen:
        Passed to ``recommend``: items in a user's history (train + valid events) are never recommended.
    sampled_negatives:
        When set, also rank each target among this many sampled negatives (metrics prefixed ``sampled_``);
        the model must have ``score_items``. Full-catalogue metrics are always reported.
    seed:
        Seed of the user subsample and of the negative sampling.
    max_users:
        Evaluate a random subsample of at most this many test users (for quick runs); stated in the result.
    length_buckets:
        When set, also report the metrics per bucket of history length (events in train + valid) with these
        edges, e.g. ``(20, 50, 200)`` (see :func:`~recsys.evaluation.metrics_by_history_length`); stored in
        :attr:`EvalResult.by_length`.
    """

    split: SplitKind = "loo"
    ks: tuple[int, ...] = (10, 50)
    exclude_seen: bool = True
    sampled_negatives: int | None = None
    seed: int = 0
    max_users: int | None = None
    length_buckets: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.split not in get_args(SplitKind):
            raise ConfigError(f"EvalConfig.split={self.split!r} is not known; use one of {list(get_args(SplitKind))}.")
        object.__setattr__(self, "ks", tuple(self.ks))
        if not self.ks or not all(_positive_int(k) for k in self.ks):
            raise ConfigError(
                f"EvalConfig.ks={self.ks!r} must be a non-empty tuple of positive integers, e.g. (10, 50)."
            )
        if self.sampled_negatives is not None and not _positive_int(self.sampled_negatives):
            raise ConfigError(
                f"EvalConfig.sampled_negatives={self.sampled_negatives!r} must be a positive integer "
                "(e.g. 100) or None for full-catalogue metrics only."
            )
        if self.max_users is not None and not _positive_int(self.max_users):
            raise ConfigError(
                f"EvalConfig.max_users={self.max_users!r} must be a positive integer or None (every test user)."
            )
        if self.length_buckets is not None:
            object.__setattr__(
                self, "length_buckets", check_length_buckets(self.length_buckets, "EvalConfig.length_buckets")
            )


@dataclass
class EvalResult:
    """One model's numbers on one dataset and split, with everything needed to reproduce them.

    Attributes
    ----------
    dataset:
        Dataset name.
    fingerprint:
        :meth:`Dataset.fingerprint` as a dict (users, items, interactions, content_hash).
    split:
        Split kind.
    protocol:
        ``catalogue`` ("full"), ``exclude_seen``, ``ks``, ``n_eval_users``, ``sampled_negatives``,
        ``max_users``, ``seed``, ``valid_targets_used`` (``fit`` received the validation targets).
    model:
        Model name.
    metrics:
        Metric name (``"ndcg@10"``, ``"sampled_ndcg@10"``, ...) to value.
    fit_seconds, predict_seconds:
        Wall time of ``fit`` and of ``recommend``.
    commit:
        Short git commit of the working directory (``-dirty`` with uncommitted changes), or ``"unknown"``.
    created:
        ISO 8601 UTC time of the evaluation.
    by_length:
        With ``EvalConfig.length_buckets``: the rows of :func:`~recsys.evaluation.metrics_by_history_length`
        on the test targets as dicts (``bucket``, ``users`` and the metrics, null for an empty bucket);
        otherwise ``None``.
    """

    dataset: str
    fingerprint: dict[str, Any]
    split: str
    protocol: dict[str, Any]
    model: str
    metrics: dict[str, float]
    fit_seconds: float
    predict_seconds: float
    commit: str = "unknown"
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    by_length: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    def to_json(self) -> str:
        """The result as a JSON object (indented)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """Rebuild a result from :meth:`to_dict` output."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"EvalResult data has unknown key(s) {unknown}; allowed keys are {sorted(known)}.")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        """Rebuild a result from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


def _git(args: list[str], cwd: str) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never take the index lock
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


BENCHMARK_OUTPUTS = ("benchmarks/results", "benchmarks/README.md")
"""What the benchmarks write: changes there do not make a checkout ``-dirty`` (a second run in the same checkout
runs the same code as the first, whose results it finds changed)."""


@lru_cache(maxsize=8)
def _git_commit(cwd: str) -> str:
    """``git rev-parse --short HEAD`` in ``cwd``, with ``-dirty`` if tracked files other than
    :data:`BENCHMARK_OUTPUTS` changed; else "unknown"."""
    try:
        head = _git(["rev-parse", "--short", "HEAD"], cwd)
        outputs = [f":(top,exclude){path}" for path in BENCHMARK_OUTPUTS]
        dirty = _git(["status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outputs], cwd)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return f"{head}-dirty" if dirty else head


def _eval_targets(split: Split, config: EvalConfig) -> pl.DataFrame:
    """The test targets of the evaluated users (all, or a seeded subsample of ``max_users``)."""
    users = split.test[USER_ID].unique().sort()
    if users.len() == 0:
        raise DataError(
            f"split {split.name!r} has no test targets (every user has too few events?); "
            "use a larger dataset or another split."
        )
    if config.max_users is not None and config.max_users < users.len():
        users = users.sample(config.max_users, seed=config.seed).sort()
        logger.info("evaluating a random subsample of %d test users (seed %d)", users.len(), config.seed)
    return split.test.filter(pl.col(USER_ID).is_in(users.implode()))


def _check_model(model: RecommenderLike, config: EvalConfig, name: str) -> None:
    if not isinstance(model, RecommenderLike):
        raise ConfigError(
            f"model {name!r} ({type(model).__name__}) lacks fit(interactions, items) or "
            "recommend(users, k, *, history, exclude_seen); "
            "wrap it to follow recsys._protocols.RecommenderLike."
        )
    if config.sampled_negatives is not None and not callable(getattr(model, "score_items", None)):
        raise ConfigError(
            f"model {name!r} ({type(model).__name__}) has no score_items(pairs, *, history), which "
            f"EvalConfig.sampled_negatives={config.sampled_negatives} needs; set sampled_negatives=None for "
            "full-catalogue metrics only, or add score_items to the model."
        )


def _sampled_metrics(
    model: Any, targets: pl.DataFrame, history: pl.DataFrame, items: pl.DataFrame, n: int, config: EvalConfig
) -> dict[str, float]:
    """Rank each test target among ``n`` random catalogue items, scored by ``model.score_items``."""
    excluded = targets.select(USER_ID, ITEM_ID)
    if config.exclude_seen:
        excluded = pl.concat([excluded, history.select(USER_ID, ITEM_ID)])
    users = targets[USER_ID].unique(maintain_order=True)
    negatives = sample_negatives(users, items[ITEM_ID], excluded, n, config.seed)
    pairs = pl.concat([targets.select(USER_ID, ITEM_ID).unique(maintain_order=True), negatives]).sort(
        USER_ID, maintain_order=True
    )
    scored = model.score_items(pairs, history=history)
    if SCORE not in scored.columns:
        raise DataError(f"score_items returned columns {scored.columns}; it must return user_id, item_id, score.")
    scored = pairs.join(scored.select(USER_ID, ITEM_ID, SCORE), on=[USER_ID, ITEM_ID], how="left")
    return sampled_ranking_metrics(scored, targets, config.ks)


def _accepts_valid(model: Any) -> bool:
    """Whether ``model.fit`` takes a parameter named ``valid`` by keyword (a ``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(model.fit).parameters
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return False
    param = parameters.get("valid")
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


def _fit(model: RecommenderLike, split: Split, items: pl.DataFrame) -> bool:
    """Fit on ``split.train``, passing ``valid=split.valid`` when ``fit`` takes it; whether it was passed."""
    if _accepts_valid(model) and split.valid.height > 0:
        model.fit(split.train, items, valid=split.valid)  # type: ignore[call-arg]
        return True
    model.fit(split.train, items)
    return False


def _protocol(config: EvalConfig, n_eval_users: int, valid_targets_used: bool) -> dict[str, Any]:
    return {
        "catalogue": "full",
        "exclude_seen": config.exclude_seen,
        "ks": list(config.ks),
        "n_eval_users": n_eval_users,
        "sampled_negatives": config.sampled_negatives,
        "max_users": config.max_users,
        "seed": config.seed,
        "valid_targets_used": valid_targets_used,
    }


def _evaluate_on_split(
    model: RecommenderLike, name: str, dataset: Dataset, split: Split, config: EvalConfig
) -> EvalResult:
    """Fit ``model`` on ``split.train``, recommend for the test users and score against ``split.test``."""
    targets = _eval_targets(split, config)
    users = targets[USER_ID].unique().sort()
    history = split.history_for_test().filter(pl.col(USER_ID).is_in(users.implode()))
    start = time.perf_counter()
    valid_targets_used = _fit(model, split, dataset.items)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    recs = model.recommend(users, k=max(config.ks), history=history, exclude_seen=config.exclude_seen)
    predict_seconds = time.perf_counter() - start
    metrics = ranking_metrics(recs, targets, dataset.items.height, config.ks)
    if config.sampled_negatives is not None:
        metrics.update(_sampled_metrics(model, targets, history, dataset.items, config.sampled_negatives, config))
    by_length = None
    if config.length_buckets is not None:
        table = metrics_by_history_length(
            recs, targets, history, dataset.items.height, config.ks, config.length_buckets
        )
        by_length = table.to_dicts()
    result = EvalResult(
        dataset=dataset.name,
        fingerprint=dataset.fingerprint().as_dict(),
        split=split.name,
        protocol=_protocol(config, users.len(), valid_targets_used),
        model=name,
        metrics=metrics,
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        commit=_git_commit(os.getcwd()),
        by_length=by_length,
    )
    logger.info(
        "%s on %s/%s: %s (fit %.2fs, predict %.2fs)",
        name,
        dataset.name,
        split.name,
        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
        fit_seconds,
        predict_seconds,
    )
    return result


def evaluate(model: RecommenderLike, dataset: Dataset, config: EvalConfig, name: str) -> EvalResult:
    """Split ``dataset``, fit ``model`` on the training events and measure it on the test targets.

    The model is fitted on ``split.train`` and ``dataset.items``, then asked for ``max(config.ks)`` items per
    test user with ``history = split.history_for_test()`` (train + valid events of those users). Metrics are
    computed against the full catalogue (see :func:`~recsys.evaluation.ranking_metrics`), plus sampled
    metrics when ``config.sampled_negatives`` is set, plus metrics per history-length bucket when
    ``config.length_buckets`` is set.

    A model that early-stops may declare a keyword parameter ``valid`` in ``fit`` (found with
    :func:`inspect.signature`; a ``**kwargs`` does not count): it is then called as
    ``fit(split.train, dataset.items, valid=split.valid)``, the validation target events, whose history is
    ``split.train``. An empty ``split.valid`` is not passed. ``protocol["valid_targets_used"]`` records which
    call was made. The test targets are never passed to ``fit``.

    Parameters
    ----------
    model:
        Any :class:`~recsys._protocols.RecommenderLike`; with ``sampled_negatives`` it also needs
        ``score_items(pairs, *, history) -> user_id, item_id, score``.
    dataset:
        The validated dataset.
    config:
        The protocol.
    name:
        Model name in the result.

    Raises
    ------
    ConfigError
        ``sampled_negatives`` is set and the model has no ``score_items``, or the split is impossible.
    """
    return evaluate_many({name: model}, dataset, config)[0]


def evaluate_many(models: Mapping[str, RecommenderLike], dataset: Dataset, config: EvalConfig) -> list[EvalResult]:
    """Evaluate several models on one split made once (see :func:`evaluate`); results in ``models`` order."""
    if not models:
        raise ConfigError("models is empty; pass a dict of name -> recommender.")
    for name, model in models.items():
        _check_model(model, config, name)
    logger.info("evaluating on %s (%s)", dataset.name, dataset.fingerprint())
    split = make_split(dataset, config.split)
    return [_evaluate_on_split(model, name, dataset, split, config) for name, model in models.items()]


def _protocol_line(result: EvalResult) -> str:
    p = result.protocol
    seen = "history items excluded" if p.get("exclude_seen") else "history items not excluded"
    users = f"{p.get('n_eval_users')} test users"
    if p.get("max_users") is not None:
        users += f" (random subsample, max_users={p['max_users']}, seed={p.get('seed')})"
    sampled = f"; sampled_ metrics vs {p['sampled_negatives']} negatives" if p.get("sampled_negatives") else ""
    return (
        f"Dataset {result.dataset}, split {result.split}, ranked against the {p.get('catalogue', 'full')} "
        f"catalogue, {seen}, {users}{sampled}; commit {result.commit}."
    )


def results_table(results: Sequence[EvalResult], metrics: Sequence[str] = DEFAULT_TABLE_METRICS) -> str:
    """A GitHub markdown table, one row per model, after the protocol line(s) of the results.

    Missing metrics show as ``-``; values have 4 decimals, timings 2.
    """
    if not results:
        raise ConfigError("results is empty; pass the list returned by evaluate_many.")
    lines = list(dict.fromkeys(_protocol_line(r) for r in results))
    header = ["model", *metrics, "fit s", "predict s"]
    rows = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|",
    ]
    for r in results:
        values = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics]
        rows.append("| " + " | ".join([r.model, *values, f"{r.fit_seconds:.2f}", f"{r.predict_seconds:.2f}"]) + " |")
    return "\n".join([*lines, "", *rows])


def _length_buckets(results: Sequence[EvalResult], metric: str) -> list[tuple[str, int]]:
    """The ``(bucket, users)`` pairs shared by every result's ``by_length``; ConfigError when they differ."""
    missing = [r.model for r in results if r.by_length is None]
    if missing:
        raise ConfigError(
            f"result(s) of model(s) {missing} have no by_length; "
            "evaluate with EvalConfig(length_buckets=(20, 50, 200))."
        )
    tables = [r.by_length or [] for r in results]
    buckets = [(str(row["bucket"]), int(row["users"])) for row in tables[0]]
    if any([(str(row["bucket"]), int(row["users"])) for row in t] != buckets for t in tables[1:]):
        raise ConfigError(
            "the results have different history-length buckets or user counts; make one length_table per "
            "dataset, split and EvalConfig.length_buckets."
        )
    known = sorted({key for t in tables for row in t for key in row} - {"bucket", "users"})
    if metric not in known:
        raise ConfigError(f"metric={metric!r} is not in by_length; use one of {known}.")
    return buckets


def length_table(results: Sequence[EvalResult], metric: str = "ndcg@10") -> str:
    """A GitHub markdown table of ``metric`` by history length: one row per model, one column per bucket.

    The header names each bucket with its number of test users (``"21-50 (n=120)"``); an empty bucket or a
    missing value shows as ``-``, values have 4 decimals. The protocol line(s) of the results come first.

    Parameters
    ----------
    results:
        Results evaluated with ``EvalConfig.length_buckets`` on the same split (same buckets and users).
    metric:
        A metric of :func:`~recsys.evaluation.ranking_metrics`, e.g. ``"ndcg@10"`` or ``"recall@50"``.

    Raises
    ------
    ConfigError
        ``results`` is empty, a result has no ``by_length``, the buckets differ, or ``metric`` is unknown.
    """
    if not results:
        raise ConfigError("results is empty; pass the list returned by evaluate_many.")
    buckets = _length_buckets(results, metric)
    lines = [*dict.fromkeys(_protocol_line(r) for r in results), f"{metric} by history length (train + valid events)."]
    header = ["model", *(f"{bucket} (n={users})" for bucket, users in buckets)]
    rows = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", *["---:"] * len(buckets)]) + "|",
    ]
    for r in results:
        values = [row.get(metric) for row in r.by_length or []]
        cells = ["-" if v is None else f"{v:.4f}" for v in values]
        rows.append("| " + " | ".join([r.model, *cells]) + " |")
    return "\n".join([*lines, "", *rows])


def save_results(results: Sequence[EvalResult], path: str | Path) -> Path:
    """Write ``results`` as a JSON list of :meth:`EvalResult.to_dict` objects (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    return path


def load_results(path: str | Path) -> list[EvalResult]:
    """Read a file written by :func:`save_results`."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise DataError(f"{str(path)!r} holds a {type(data).__name__}; save_results writes a JSON list.")
    return [EvalResult.from_dict(item) for item in data]
