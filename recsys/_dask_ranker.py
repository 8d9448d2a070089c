"""Ranker training on a Dask cluster: LightGBM's ``DaskLGBMRanker`` with every query inside one partition.

:class:`DaskRanker` has :class:`~recsys.models.ranker.LambdaRanker`'s interface and result (a LightGBM booster,
saved as LightGBM text); :class:`DaskRecommender` is a :class:`~recsys.pipeline.Recommender` whose ranker trains
that way (everything else, including the training frame, is computed on the client as before).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np
import polars as pl

from recsys._dask_cluster import DaskConfig, connect, require_dask, worker_addresses
from recsys.errors import ConfigError, DataError
from recsys.models.ranker import (
    LambdaRanker,
    RankerConfig,
    RankerEnsemble,
    _groups,
    _matrix,
    ndcg_at,
    ranker_from_texts,
    start_scores,
)
from recsys.pipeline import Recommender, RecommenderConfig

__all__ = ["DaskRanker", "DaskRecommender", "ranker_frames"]

logger = logging.getLogger(__name__)

_PART = "_partition"
_PORT_TRIES = 5
_PATCH_LOCK = threading.Lock()


def _free_port() -> int:
    """A TCP port free on this host right now (run on a worker by :func:`open_ports`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def open_ports(client: Any, workers: Sequence[str]) -> dict[str, int]:
    """A free port on each worker's host for LightGBM's network, distinct among the workers of one host.

    Each worker binds port 0 and closes the socket again, so only plain ints travel back to the client.

    Raises
    ------
    ConfigError
        ``_PORT_TRIES`` rounds in a row handed two workers of one host the same port.
    """
    for _ in range(_PORT_TRIES):
        ports = {worker: int(port) for worker, port in client.run(_free_port, workers=list(workers)).items()}
        claimed = {(urlparse(worker).hostname, port) for worker, port in ports.items()}
        if len(claimed) == len(ports):
            return ports
    raise ConfigError(
        f"could not find distinct free ports for LightGBM on the workers {list(workers)} in {_PORT_TRIES} tries; "
        "retry, or run fewer Dask workers per host."
    )


@contextlib.contextmanager
def _ports_without_held_sockets() -> Iterator[None]:
    """Within the block, ``DaskLGBMRanker`` finds its workers' ports with :func:`open_ports`.

    LightGBM's own ``_assign_open_ports_to_workers`` keeps each port's socket open in a Dask future and reads
    the port with a second task on that future. When the scheduler runs that task on another worker, Dask must
    send the socket there, which it cannot serialize ("Could not serialize object of type _RemoteSocket"), and
    ``fit`` waits forever (it hung one run of our test suite). Here no socket leaves its worker: the cost is a
    short window between closing the probe socket and LightGBM binding the port, in which another process could
    take it (LightGBM then fails with a socket error instead of hanging). A LightGBM without that private
    function keeps its own behaviour.
    """
    import lightgbm.dask as lgb_dask

    if not hasattr(lgb_dask, "_assign_open_ports_to_workers"):
        yield
        return

    def assign(*, client: Any, workers: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
        return {}, open_ports(client, workers)  # no socket futures: LightGBM skips their release

    with _PATCH_LOCK:
        original = lgb_dask._assign_open_ports_to_workers
        lgb_dask._assign_open_ports_to_workers = assign
        try:
            yield
        finally:
            lgb_dask._assign_open_ports_to_workers = original


class ValidationStop:
    """LightGBM callback: early stopping on NDCG@``at`` of the *whole* validation set, by LightGBM's rule.

    ``DaskLGBMRanker`` does not support LightGBM's early stopping (each worker would see only its own part of an
    ``eval_set``). Every worker gets this callback with the full validation set instead: after each round it adds
    the new tree's scores (``predict(start_iteration=i, num_iteration=1)``, so a round costs one tree over the
    validation rows) and computes :func:`~recsys.models.ranker.ndcg_at`. The trees are the same on every worker
    (data-parallel training), so every worker reaches the same decision in the same round and they stop together.
    The rule is ``lightgbm.early_stopping``'s: the best round is the first with the highest value; stop once
    ``rounds`` rounds pass without a strictly higher one, or at the last round.
    """

    order = 30  # after LightGBM's own callbacks
    before_iteration = False

    def __init__(
        self,
        matrix: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray,
        rounds: int,
        at: int,
        start: np.ndarray | None = None,
    ) -> None:
        self.matrix, self.labels, self.groups, self.rounds, self.at = matrix, labels, groups, rounds, at
        self.start = np.zeros(len(labels)) if start is None else start  # (rows,) the starting score (init_score)
        self.scores = self.start.copy()
        self.best_iteration, self.best_score = -1, -np.inf
        self.history: list[float] = []

    def __call__(self, env: Any) -> None:
        import lightgbm as lgb

        if env.iteration == env.begin_iteration:  # a fresh training run
            self.scores[:] = self.start
            self.best_iteration, self.best_score, self.history = -1, -np.inf, []
        self.scores += env.model.predict(self.matrix, start_iteration=env.iteration, num_iteration=1, raw_score=True)
        value = ndcg_at(self.scores, self.labels, self.groups, self.at)
        self.history.append(value)
        if value > self.best_score:
            self.best_iteration, self.best_score = env.iteration, value
        if env.iteration - self.best_iteration >= self.rounds or env.iteration == env.end_iteration - 1:
            best = [("valid", f"ndcg@{self.at}", self.best_score, True)]
            raise lgb.callback.EarlyStopException(self.best_iteration, best)


def _partitions(
    frame: pl.DataFrame,
    query: str,
    label: str,
    features: Sequence[str],
    n: int,
    seed: int,
    config: RankerConfig | None = None,
) -> list[tuple[np.ndarray, ...]]:
    """``(matrix float32 (rows, features), labels int32 (rows,), group sizes (queries,))`` per non-empty
    partition, plus the starting scores (float64 (rows,), LightGBM's ``init_score``) where ``config`` has a
    ``base_feature``; a query's rows all go to partition ``hash(query, seed) % n``, sorted by query as LightGBM
    needs."""
    parts = frame.with_columns((pl.col(query).hash(seed) % n).alias(_PART)).partition_by(
        _PART, maintain_order=True, include_key=False
    )
    out = []
    for part in parts:
        part = part.sort(query, maintain_order=True)
        matrix = _matrix(part, features)
        arrays: tuple[np.ndarray, ...] = (matrix, part[label].cast(pl.Int32).to_numpy(), _groups(part[query]))
        start = None if config is None else start_scores(config, matrix, features)
        out.append(arrays if start is None else (*arrays, start))
    return out


def _dask_arrays(client: Any, parts: list[tuple[np.ndarray, ...]]) -> tuple[Any, ...]:
    """Dask arrays of each part's arrays (the matrix, labels, groups and any starting scores), chunk ``j`` =
    partition ``j``, scattered to worker ``j % n_workers`` (so the partitions, and LightGBM's data-parallel work,
    are spread over the workers)."""
    import dask
    import dask.array as da

    workers = worker_addresses(client)
    columns: list[list[Any]] = [[] for _ in parts[0]]
    for j, arrays in enumerate(parts):
        futures = client.scatter(list(arrays), workers=[workers[j % len(workers)]])
        for column, future, array in zip(columns, futures, arrays, strict=True):
            column.append(da.from_delayed(dask.delayed(future), shape=array.shape, dtype=array.dtype))
    return tuple(da.concatenate(column) for column in columns)


class DaskRanker(LambdaRanker):
    """:class:`~recsys.models.ranker.LambdaRanker` trained with LightGBM's ``DaskLGBMRanker`` on a cluster.

    The training frame is hash-partitioned by query (a query's candidate rows never straddle partitions, as
    LambdaRank needs) and spread over the workers; LightGBM trains data-parallel over them with the same parameters
    as :meth:`RankerConfig.lgb_params` (``num_threads`` becomes each worker's thread count). Early stopping uses
    :class:`ValidationStop` on the whole validation set. The result is a plain LightGBM booster truncated to the
    best round: :meth:`score`, :meth:`to_text` and saved models are exactly those of a ``LambdaRanker``.

    Not bit-reproducible across runs with several partitions: ``DaskLGBMRanker`` orders the workers (LightGBM's
    ranks) by a set of task keys, which changes between client processes, and the ranks decide which worker's part
    some steps use (the feature bins among them); with one partition the result equals ``LambdaRanker``'s tree for
    tree.
    """

    def __init__(self, config: RankerConfig | None = None, dask: DaskConfig | None = None) -> None:
        super().__init__(config)
        self.dask = dask or DaskConfig()

    def fit(
        self,
        train: pl.DataFrame,
        valid: pl.DataFrame | None,
        features: Sequence[str],
        query: str = "query",
        label: str = "label",
    ) -> DaskRanker:
        """Train on ``train`` groups on the cluster; early-stop on NDCG of ``valid`` groups when given.

        Returns
        -------
        self
        """
        import lightgbm as lgb

        require_dask()
        if train.height == 0:
            raise DataError("the ranker's training frame is empty; it needs at least one query with candidates.")
        stop = None
        if valid is not None and valid.height:
            valid = valid.sort(query, maintain_order=True)
            labels, groups = valid[label].cast(pl.Int32).to_numpy(), _groups(valid[query])
            rounds, at = self.config.early_stopping_rounds, self.config.eval_at
            matrix = _matrix(valid, features)
            stop = ValidationStop(matrix, labels, groups, rounds, at, start_scores(self.config, matrix, features))
        with connect(self.dask) as client:
            n = self.dask.partitions or len(worker_addresses(client))
            parts = _partitions(train, query, label, features, n, self.dask.hash_seed, self.config)
            booster = self._train(client, parts, features, stop)
        best = booster.best_iteration if stop is not None else booster.current_iteration()
        logger.info("dask ranker: %d partition(s), best iteration %d", len(parts), best)
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self.feature_names_ = list(features)
        return self

    def _train(
        self,
        client: Any,
        parts: list[tuple[np.ndarray, ...]],
        features: Sequence[str],
        stop: ValidationStop | None,
    ) -> Any:
        """``DaskLGBMRanker.fit`` over the partitions; the trained booster (from the first worker)."""
        from lightgbm import DaskLGBMRanker

        params = {k: v for k, v in self.config.lgb_params().items() if k not in ("num_threads", "metric", "eval_at")}
        params["n_estimators"] = self.config.n_estimators
        model = DaskLGBMRanker(client=client, **params)
        matrix, labels, groups, *start = _dask_arrays(client, parts)
        # LightGBM waits on futures with the default client
        with warnings.catch_warnings(), client.as_current(), _ports_without_held_sockets():
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            # the callback carries the validation set to every worker inside the task: sent once per worker anyway
            warnings.filterwarnings("ignore", message="Sending large graph")
            model.fit(
                matrix,
                labels,
                group=groups,
                init_score=start[0] if start else None,
                feature_name=list(features),
                callbacks=[stop] if stop else None,
            )
        return model.to_local().booster_


# ------------------------------------------------------------------------------------------ in the pipeline
def ranker_frames(
    model: Recommender,
    past: pl.DataFrame,
    history: pl.DataFrame,
    labels: pl.DataFrame,
    events: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """The ranker's ``(train, valid, feature names)`` for the queries of :func:`recsys.pipeline.training_queries`,
    exactly as ``Recommender.fit`` gives them to its ranker (``Recommender._ranker_frames``; ``events``: every
    fitted event, which ``cutoff_statistics="per_cutoff"`` needs)."""
    return model._ranker_frames(past, history, labels, events)


class DaskRecommender(Recommender):
    """A :class:`~recsys.pipeline.Recommender` whose ranker trains on a Dask cluster (:class:`DaskRanker`).

    Everything else (text encoding, the user encoder, the training frame's candidates and features) runs on the
    client as in ``Recommender.fit``; the fitted model holds plain ``LambdaRanker``s (one, or the fold rankers of a
    ``RankerEnsemble``) and saves and loads exactly like any other (``Recommender.load``). Every ranker fit (the
    ``valid_fraction`` hold-out, or each fold and, without ``ranker_ensemble``, the final ranker of
    ``ranker_folds``) trains on the cluster.
    """

    def __init__(self, config: RecommenderConfig | None = None, dask: DaskConfig | None = None) -> None:
        super().__init__(config)
        self.dask = dask or DaskConfig()

    def _ranker(self, config: RankerConfig) -> LambdaRanker:
        """Every ranker fit of ``Recommender._fit_ranker`` (the hold-out, or each cross-validation fold and, without
        ``ranker_ensemble``, the final ranker of ``ranker_folds``) trains on the cluster."""
        return DaskRanker(config, self.dask)

    def _fit_ranker(
        self, past: pl.DataFrame, history: pl.DataFrame, labels: pl.DataFrame, events: pl.DataFrame | None = None
    ) -> LambdaRanker | RankerEnsemble:
        ranker = super()._fit_ranker(past, history, labels, events)
        return ranker_from_texts(ranker.to_texts(), self.config.ranker)  # plain LambdaRankers, as saved
