"""Scale-out on Dask: the batch job and ranker training on a cluster (optional extra ``recsys[dask]``).

Install with ``pip install "textmemory-recsys[dask]"``. ``DaskConfig(scheduler=...)`` says where work runs:
``"local:N"`` (a ``LocalCluster`` of ``N`` one-thread worker processes, started and stopped by the call), a
scheduler address (``"tcp://host:8786"``) or a scheduler file (``"scheduler.json"``).

**Batch recommendation** (:class:`DaskBatchJob`, ``recsys recommend --out DIR --scheduler ...``):

- Users are assigned to ``n`` partitions by ``hash(user_id, seed) % n`` (polars' hash), users in input order
  inside a partition; ``n`` defaults to the single-machine shard count (``ceil(users / users_per_shard)``), so a
  partition holds about the users one memory budget allows. Partition ``i`` is shard ``part-i.parquet``.
- One task per shard runs on a worker: it loads the model once per worker process (cached by directory and
  manifest sha256), computes, checks and commits the shard with the single-machine protocol
  (:func:`recsys.batch.write_shard`: temporary file, fsync, rename, commit record with sha256).
- A task first looks for its own commit record, so a retried task (``retries``) or one rerun after its worker died
  returns the committed shard instead of writing it twice; either way the bytes are the same.
- The client holds the output's lock, writes ``_JOB.json`` (with the partitioning: hash, seed and the sha256 of
  the user-to-partition assignment) first and ``_SUCCESS`` last, once every shard is committed. Rerunning a failed
  job keeps the committed shards. The output directory and the model must be on a file system that the client
  and every worker share.

**Ranker training** (:class:`DaskRanker`, :class:`DaskRecommender`, ``recsys fit --scheduler ...``): LightGBM's
``DaskLGBMRanker`` trains data-parallel over query-hash partitions of the training frame, with early stopping on
the whole validation set (:class:`ValidationStop`); the result is a plain LightGBM booster. The training frame
itself (candidates and features) is still built on the client.
"""

from __future__ import annotations

from recsys._dask_batch import DaskBatchJob, model_loads, partition_of
from recsys._dask_cluster import DaskConfig, connect, parse_scheduler, require_dask
from recsys._dask_ranker import DaskRanker, DaskRecommender, ValidationStop, ranker_frames

__all__ = [
    "DaskBatchJob",
    "DaskConfig",
    "DaskRanker",
    "DaskRecommender",
    "ValidationStop",
    "connect",
    "model_loads",
    "parse_scheduler",
    "partition_of",
    "ranker_frames",
    "require_dask",
]
