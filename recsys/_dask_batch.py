"""The batch job on a Dask cluster: hash-partitioned users, one task per shard, the single-machine commit protocol.

See :mod:`recsys.distributed` for the user-facing description. The client resolves the users, writes
``_JOB.json``, submits one task per uncommitted shard and writes ``_SUCCESS`` once every shard is committed; each
task runs :func:`recsys.batch.write_shard` on a worker, which loads the model once per process
(:func:`worker_model`).
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from recsys import __version__
from recsys._batch_files import JOB, SUCCESS, committed, json_bytes, remove_stale, sha256
from recsys._dask_cluster import DaskConfig, connect, require_dask
from recsys.batch import (
    BatchConfig,
    BatchReport,
    check_history,
    job_identity,
    open_output,
    resolve_users,
    serve_shards,
    users_per_shard,
    write_shard,
    write_success,
)
from recsys.errors import ConfigError
from recsys.pipeline import Recommender
from recsys.schema import USER_ID

__all__ = ["DaskBatchJob", "model_loads", "partition_of", "worker_model"]

logger = logging.getLogger(__name__)

HASH = "polars.Series.hash(seed) % n_partitions"
_PART = "_partition"


def partition_of(users: pl.Series, n_partitions: int, seed: int) -> pl.Series:
    """UInt32 partition of each user id: ``hash(user_id, seed) % n_partitions``.

    polars' hash is the same in every process for the same polars version and dtype; ``_JOB.json`` records the
    sha256 of the assignment, so a resume under a polars that hashes differently is refused, never mixed.
    """
    return (users.hash(seed) % n_partitions).cast(pl.UInt32).rename(_PART)


def _by_partition(frame: pl.DataFrame, column: pl.Series, n: int) -> list[pl.DataFrame]:
    """``frame``'s rows split by partition ``column`` (one frame per partition, empty ones included, order kept)."""
    groups = frame.with_columns(column).partition_by(_PART, as_dict=True, maintain_order=True, include_key=False)
    empty = frame.clear()
    return [groups.get((i,), empty) for i in range(n)]


# ------------------------------------------------------------------------------------------ on the workers
_MODELS: dict[tuple[str, str], tuple[Recommender, pl.Series]] = {}
_LOADS: Counter[str] = Counter()
_LOCK = threading.Lock()


def worker_model(model_dir: str, fingerprint: str) -> tuple[Recommender, pl.Series]:
    """The model at ``model_dir`` and its known user ids, loaded once per process (a Dask worker is one process)
    and reused by every shard task; the cache holds one model, keyed by directory and manifest sha256.

    Raises
    ------
    ConfigError
        The directory's manifest no longer has the job's sha256 (the model was replaced while the job ran).
    """
    key = (model_dir, fingerprint)
    with _LOCK:
        if key not in _MODELS:
            found = sha256((Path(model_dir) / "manifest.json").read_bytes())
            if found != fingerprint:
                raise ConfigError(
                    f"the model at {model_dir!r} changed since the job started (manifest sha256 {found[:12]}..., "
                    f"the job's {fingerprint[:12]}...); rerun the job, or point it at an unchanging model directory."
                )
            _MODELS.clear()  # one model per worker process at a time
            model = Recommender.load(model_dir)
            _MODELS[key] = (model, model.interactions_[USER_ID].unique())  # type: ignore[index]
            _LOADS[model_dir] += 1
        return _MODELS[key]


def model_loads() -> dict[str, int]:
    """How many times this process loaded each model directory (run on workers with ``client.run``)."""
    return dict(_LOADS)


@dataclass(frozen=True)
class _ShardSpec:
    """What every shard task of one job shares."""

    out: str
    model_dir: str
    fingerprint: str
    config: BatchConfig
    chunk_users: int
    key: str
    version: str


def _shard_task(spec: _ShardSpec, i: int, users: pl.Series, history: pl.DataFrame | None) -> dict[str, Any]:
    """Commit shard ``i`` (or return its record if an earlier attempt already committed it): idempotent, so Dask
    may retry it or run it again after losing a worker."""
    if spec.version != __version__:
        raise ConfigError(f"this worker runs recsys {__version__}, the client {spec.version}; install one version.")
    out = Path(spec.out)
    if not (out / JOB).exists():
        raise ConfigError(
            f"a worker cannot see the output directory {spec.out!r}; --out must be on a file system that the client "
            "and every worker share."
        )
    record = committed(out, i, spec.key)
    if record is not None:
        return record
    model, known = worker_model(spec.model_dir, spec.fingerprint)
    model = copy.copy(model)  # a shallow copy: this task's chunk size and cascade, the cached arrays shared
    serve_shards(model, spec.config, spec.chunk_users)
    return write_shard(out, i, model, users, known, history, spec.config, spec.key)


# ------------------------------------------------------------------------------------------ on the client
class DaskBatchJob:
    """:class:`recsys.batch.BatchJob` on a Dask cluster: users hash-partitioned into shards, one task per shard.

    Parameters
    ----------
    config:
        The batch settings (``k``, ``exclude_seen``, the memory budget that sizes the partitions, progress).
    dask:
        Where to run and how to partition and retry (:class:`DaskConfig`).
    """

    def __init__(self, config: BatchConfig | None = None, dask: DaskConfig | None = None) -> None:
        self.config = config or BatchConfig()
        self.dask = dask or DaskConfig()

    def run(
        self,
        model_dir: str | Path,
        out_dir: str | Path,
        users: pl.Series | Sequence[Any] | None = None,
        *,
        history: pl.DataFrame | None = None,
        overwrite: bool = False,
    ) -> BatchReport:
        """Write the top ``k`` of every user to ``out_dir`` with the cluster; resume a failed run of the same job.

        Arguments as :meth:`recsys.batch.BatchJob.run`; ``model_dir`` and ``out_dir`` must be paths every worker
        can read and write (a shared file system).
        """
        require_dask()
        model_path, out = Path(model_dir).resolve(), Path(out_dir).resolve()
        model = Recommender.load(model_path)
        fingerprint = sha256((model_path / "manifest.json").read_bytes())
        wanted = resolve_users(model, users)
        inline = check_history(history, model) if history is not None else None
        job = self._identity(model, fingerprint, wanted, inline)
        del model  # the workers load their own copy
        n = job["n_shards"]
        parts = [p[USER_ID] for p in _by_partition(wanted.to_frame(), partition_of(wanted, n, self.dask.hash_seed), n)]
        histories: list[pl.DataFrame | None] = [None] * n
        if inline is not None:
            histories = list(_by_partition(inline, partition_of(inline[USER_ID], n, self.dask.hash_seed), n))
        key = sha256(json_bytes(job))
        spec = _ShardSpec(str(out), str(model_path), fingerprint, self.config, job["shard_users"], key, __version__)
        with open_output(out, job, overwrite):
            records, written = self._write_shards(spec, parts, histories)
            remove_stale(out)  # temporary files of tasks that died with their worker
            manifest = write_success(out, job, self.config, records)
        return BatchReport(
            out_dir=out,
            n_users=wanted.len(),
            n_rows=manifest["total_rows"],
            n_shards=n,
            shards_written=written,
            shards_reused=n - written,
            fallback_users=manifest["fallback_users"],
            manifest=manifest,
        )

    def _identity(
        self, model: Recommender, fingerprint: str, users: pl.Series, history: pl.DataFrame | None
    ) -> dict[str, Any]:
        """The single-machine identity with the partitioning: ``n_shards`` hash partitions (the assignment's
        sha256 recorded); ``shard_users`` is the chunk each task scores at a time."""
        job = job_identity(model, fingerprint, users, history, self.config)
        n = self.dask.partitions or math.ceil(users.len() / users_per_shard(model, self.config))
        assignment = partition_of(users, n, self.dask.hash_seed).to_numpy().astype("<u4").tobytes()
        job["n_shards"] = n
        job["partitioning"] = {"hash": HASH, "seed": self.dask.hash_seed, "assignment_sha256": sha256(assignment)}
        return job

    def _write_shards(
        self, spec: _ShardSpec, parts: list[pl.Series], histories: list[pl.DataFrame | None]
    ) -> tuple[list[dict[str, Any]], int]:
        """Submit a task per uncommitted shard; return every commit record (in shard order) and how many shards the
        tasks wrote (a retried task that finds its shard committed counts too)."""
        out, n = Path(spec.out), len(parts)
        records = {i: r for i in range(n) if (r := committed(out, i, spec.key)) is not None}
        if len(records) < n:
            (out / SUCCESS).unlink(missing_ok=True)  # never a _SUCCESS beside a shard being redone
        todo = [i for i in range(n) if i not in records]
        users = sum(p.len() for p in parts)
        logger.info(
            "dask batch: %d users in %d hash partition(s) (%d already committed) on %s",
            users,
            n,
            len(records),
            self.dask.scheduler,
        )
        done = sum(r["users"] for r in records.values())
        token = uuid.uuid4().hex[:8]  # task keys unique per run: never confused with a cancelled earlier run's
        with connect(self.dask) as client, client.as_current():
            from distributed import as_completed

            workers = len(client.nthreads())
            if len(todo) < workers:
                logger.warning(
                    "%d shard(s) to compute for %d Dask workers: some workers stay idle; pass more partitions "
                    "(--partitions, DaskConfig.partitions), a few per worker",
                    len(todo),
                    workers,
                )
            bar = tqdm(total=users, initial=done, unit="user", desc="batch", disable=not self.dask.show_progress)

            futures = {
                client.submit(
                    _shard_task,
                    spec,
                    i,
                    parts[i],
                    histories[i],
                    key=f"recsys-shard-{spec.key[:12]}-{token}-{i:05d}",
                    retries=self.dask.retries,
                    pure=False,
                ): i
                for i in todo
            }
            try:
                with bar:
                    for future in as_completed(futures):
                        i = futures[future]
                        records[i] = future.result()
                        bar.update(parts[i].len())
            except BaseException:
                client.cancel(list(futures))
                logger.error("dask batch failed; committed shards are kept: run the same job again to resume")
                raise
        return [records[i] for i in range(n)], len(todo)
