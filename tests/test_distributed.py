"""Scale-out on Dask, on a LocalCluster of 2 worker processes: the distributed batch job equals the single-process
job row for row, workers load the model once, failed tasks and a worker killed mid-job still give the same output,
and the distributed ranker matches the single-process one (validation NDCG@10 within 1%; the same trees from one
partition)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import TOPICS

from recsys._dask_cluster import worker_addresses
from recsys._dask_ranker import open_ports
from recsys.batch import BatchConfig, BatchJob, BatchReport, bytes_per_user
from recsys.data import DataWarning
from recsys.distributed import (
    DaskBatchJob,
    DaskConfig,
    DaskRanker,
    DaskRecommender,
    model_loads,
    parse_scheduler,
    partition_of,
    require_dask,
)
from recsys.errors import ConfigError
from recsys.models.ranker import LambdaRanker, RankerConfig, RankerEnsemble, ndcg_at
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed: pip install -e '.[dask]'")
pytest.importorskip("dask.array", reason="dask[array] is not installed: pip install -e '.[dask]'")

K = 3
UNKNOWN = [777, 778, 779]
N_USERS = 60


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One LocalCluster for the module: 2 worker processes with one thread each."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as connected:
        yield connected


@pytest.fixture(scope="module")
def on_cluster(cluster: Any) -> DaskConfig:
    return DaskConfig(scheduler=cluster.scheduler_address, show_progress=False)


@pytest.fixture(scope="module")
def items() -> pl.DataFrame:
    rows = [(i, text, topic) for i, (topic, text) in enumerate((t, x) for t, xs in TOPICS.items() for x in xs)]
    return pl.DataFrame(rows, schema={"item_id": pl.Int64, "text": pl.String, "topic": pl.String}, orient="row")


def topic_events(items: pl.DataFrame, n_users: int) -> pl.DataFrame:
    """``n_users`` users spread over the three topics, four events each (times 0, 100, 200, 300)."""
    events = []
    for user in range(n_users):
        topic = list(TOPICS)[user % 3]
        ids = items.filter(pl.col("topic") == topic)["item_id"]
        events += [(user, int(ids[(user // 3 + s) % 6]), 100 * s) for s in range(4)]
    return pl.DataFrame(events, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}, orient="row")


def small_config(folder: Path) -> RecommenderConfig:
    return RecommenderConfig(
        text=TextEncoderConfig(cache_dir=str(folder / "cache"), show_progress=False),
        n_candidates=10,
        n_transition_candidates=6,
        ranker=RankerConfig(min_child_samples=2, n_estimators=20, n_threads=1),
        show_progress=False,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, items: pl.DataFrame) -> Path:
    """A small zero-shot model: 60 users over three topics, four events each, 18 items."""
    folder = tmp_path_factory.mktemp("dask_model")
    Recommender(small_config(folder)).fit(topic_events(items, N_USERS), items).save(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Recommender:
    return Recommender.load(model_dir)


USERS = list(range(N_USERS - 1, -1, -1)) + UNKNOWN + [5, 777]  # reverse order, unknown users, two duplicates
HISTORY = pl.DataFrame({"user_id": [778] * 3, "item_id": [6, 7, 8], "timestamp": [1, 2, 3]})  # 778: three space items


def batch_config(model: Recommender, users_per_shard: float = 4.5) -> BatchConfig:
    return BatchConfig(k=K, memory_budget_mb=users_per_shard * bytes_per_user(model, K) / 2**20, show_progress=False)


def quiet(job: Any, *args: Any, **kwargs: Any) -> BatchReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the duplicate user ids
        return job.run(*args, **kwargs)


def read_output(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(out.glob("part-*.parquet")))


def files_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith(("part-", "_SUCCESS"))}


@pytest.fixture(scope="module")
def single(model: Recommender, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The single-process job's output (every user in USERS, HISTORY inline), sorted by (user_id, rank)."""
    out = tmp_path_factory.mktemp("single") / "out"
    quiet(BatchJob(batch_config(model)), model_dir, out, USERS, history=HISTORY)
    return read_output(out).sort("user_id", "rank")


@pytest.fixture(scope="module")
def reference(
    model: Recommender, model_dir: Path, on_cluster: DaskConfig, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An uninterrupted distributed job (the reference for resumes, retries and the killed worker)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    quiet(DaskBatchJob(batch_config(model), on_cluster), model_dir, out, USERS, history=HISTORY)
    return out


# ------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("local:3", ("local", 3)),
        ("tcp://10.0.0.5:8786", ("address", "tcp://10.0.0.5:8786")),
        ("10.0.0.5:8786", ("address", "10.0.0.5:8786")),
        (" scheduler-host:8786 ", ("address", "scheduler-host:8786")),
        ("/shared/scheduler.json", ("file", "/shared/scheduler.json")),
    ],
)
def test_scheduler_forms(value: str, expected: tuple[str, object]):
    assert parse_scheduler(value) == expected


@pytest.mark.parametrize("value", ["", "local", "local:0", "local:two", "localhost", "tcp//host:1", "host:port"])
def test_bad_scheduler_is_a_config_error_naming_the_forms(value: str):
    with pytest.raises(ConfigError, match=r"local:N"):
        DaskConfig(scheduler=value)


@pytest.mark.parametrize(("kwargs", "match"), [({"partitions": 0}, "partitions=0"), ({"retries": -1}, "retries=-1")])
def test_bad_dask_settings(kwargs: dict[str, object], match: str):
    with pytest.raises(ConfigError, match=match):
        DaskConfig(**kwargs)  # type: ignore[arg-type]


def test_missing_dask_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    with pytest.raises(ConfigError, match=r"textmemory-recsys\[dask\]"):
        require_dask()


def test_unreachable_scheduler_is_a_config_error(model: Recommender, model_dir: Path, tmp_path: Path):
    config = DaskConfig(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1, show_progress=False)
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        quiet(DaskBatchJob(batch_config(model), config), model_dir, tmp_path / "out", [0, 1])


# ------------------------------------------------------------------------------------------ partitioning
def test_partition_hash_is_the_same_on_the_workers(client: Any):
    """The client computes the assignment; a resume in another process must get the same one."""
    users = pl.Series("user_id", [*range(500), 10**12, -7])
    here = partition_of(users, 7, 0).to_list()
    there = client.run(lambda: partition_of(users, 7, 0).to_list())
    assert all(v == here for v in there.values())
    assert set(here) == set(range(7)) and partition_of(users, 7, 1).to_list() != here  # the seed matters


# ------------------------------------------------------------------------------------------ batch output
def test_distributed_output_equals_single_process_row_for_row(
    model: Recommender, reference: Path, single: pl.DataFrame
):
    job = json.loads((reference / "_JOB.json").read_text())
    n = job["n_shards"]
    assert n == 16  # ceil(63 unique users / 4 per shard), as the single-process job
    distributed_rows = read_output(reference).sort("user_id", "rank")
    # the same users, items, ranks and fallback flags; the scores bit for bit (each user is scored alone)
    assert distributed_rows.equals(single)
    assert distributed_rows.height == 63 * K
    assert sorted(distributed_rows.filter(pl.col("fallback"))["user_id"].unique()) == UNKNOWN
    # shard i holds exactly the users with hash % n == i, in input order
    unique = list(dict.fromkeys(USERS))
    parts = partition_of(pl.Series("user_id", unique), n, 0).to_list()
    for i in range(n):
        shard = pl.read_parquet(reference / f"part-{i:05d}.parquet")
        assert shard["user_id"].unique(maintain_order=True).to_list() == [
            u for u, p in zip(unique, parts, strict=True) if p == i
        ]
    assert job["partitioning"]["seed"] == 0 and len(job["partitioning"]["assignment_sha256"]) == 64
    success = json.loads((reference / "_SUCCESS").read_text())
    assert success["total_users"] == 63 and success["fallback_users"] == 3 and len(success["shards"]) == n


def test_each_worker_loads_the_model_once(client: Any, model_dir: Path, reference: Path):
    loads = [counts.get(str(model_dir.resolve()), 0) for counts in client.run(model_loads).values()]
    assert max(loads) == 1  # 16 shards over 2 workers, at most one load per worker process
    assert len(list(reference.glob("part-*.parquet"))) == 16


def test_cascade_top_on_the_cluster_equals_the_single_process_job(
    model: Recommender, model_dir: Path, on_cluster: DaskConfig, single: pl.DataFrame, tmp_path: Path
):
    """The workers serve with the job's ``cascade_top``, not their cached model's own setting."""
    assert isinstance(model.ranker_, RankerEnsemble)  # a fold ensemble: the cascade changes what is scored
    config = dataclasses.replace(batch_config(model), cascade_top=1)
    quiet(BatchJob(config), model_dir, tmp_path / "one", USERS, history=HISTORY)
    quiet(DaskBatchJob(config, on_cluster), model_dir, tmp_path / "many", USERS, history=HISTORY)
    one, many = (read_output(tmp_path / name).sort("user_id", "rank") for name in ("one", "many"))
    assert many.equals(one)
    assert not one.select("user_id", "item_id").equals(single.select("user_id", "item_id"))
    assert json.loads((tmp_path / "many" / "_JOB.json").read_text())["cascade_top"] == 1


def test_resume_redoes_only_missing_shards(
    model: Recommender, model_dir: Path, on_cluster: DaskConfig, reference: Path
):
    out = reference.parent / "resumed"
    shutil.copytree(reference, out)
    (out / "_SUCCESS").unlink()
    (out / "part-00002.parquet").unlink()
    (out / "_shards" / "part-00005.json").unlink()
    (out / ".part-00007.parquet.x1.tmp").write_bytes(b"half a shard")
    report = quiet(DaskBatchJob(batch_config(model), on_cluster), model_dir, out, USERS, history=HISTORY)
    assert report.shards_written == 2 and report.shards_reused == 14
    assert files_of(out) == files_of(reference) and not list(out.glob(".*.tmp"))


def test_refuses_a_single_process_output(model: Recommender, model_dir: Path, on_cluster: DaskConfig, tmp_path: Path):
    quiet(BatchJob(batch_config(model)), model_dir, tmp_path / "out", [0, 1, 2])
    with pytest.raises(ConfigError, match=r"different batch job \(.*partitioning"):
        quiet(DaskBatchJob(batch_config(model), on_cluster), model_dir, tmp_path / "out", [0, 1, 2])


def flaky_write_shard(after_commit: bool) -> None:
    """Runs on a worker: the next call of each shard's write raises once (before or after committing)."""
    import recsys._dask_batch as module

    real = getattr(module, "_real_write_shard", module.write_shard)
    failed: set[int] = set()

    def flaky(out: Path, i: int, *args: Any) -> dict[str, Any]:
        if i not in failed:
            failed.add(i)
            if after_commit:
                real(out, i, *args)
            raise OSError(f"injected failure of shard {i}")
        return real(out, i, *args)

    module._real_write_shard = real  # type: ignore[attr-defined]
    module.write_shard = flaky  # type: ignore[assignment]


def restore_write_shard() -> None:
    import recsys._dask_batch as module

    module.write_shard = getattr(module, "_real_write_shard", module.write_shard)


@pytest.mark.parametrize("after_commit", [False, True])
def test_failed_tasks_are_retried_to_the_same_output(
    client: Any, model: Recommender, model_dir: Path, on_cluster: DaskConfig, reference: Path, after_commit: bool
):
    """Every shard task fails once (before writing, or after committing its shard); with retries the job ends with
    the uninterrupted output, and without retries it fails with the injected error."""
    out = reference.parent / f"flaky-{after_commit}"
    client.run(flaky_write_shard, after_commit)
    try:
        with pytest.raises(OSError, match="injected failure"):
            config = DaskConfig(scheduler=on_cluster.scheduler, retries=0, show_progress=False)
            quiet(DaskBatchJob(batch_config(model), config), model_dir, out, USERS, history=HISTORY)
        report = quiet(DaskBatchJob(batch_config(model), on_cluster), model_dir, out, USERS, history=HISTORY)
    finally:
        client.run(restore_write_shard)
    assert report.n_shards == 16
    assert files_of(out) == files_of(reference)


# ------------------------------------------------------------------------------------------ the ranker
def ranking_queries(n: int, seed: int) -> pl.DataFrame:
    """``n`` queries of 20 candidates; the relevant one has the largest ``a + noise``, ``b`` is weak, ``c`` noise."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.random((n, 20)), rng.random((n, 20)), rng.random((n, 20))
    utility = a + 0.3 * b + 0.3 * rng.normal(size=(n, 20))
    label = (utility == utility.max(axis=1, keepdims=True)).astype(np.int32)
    return pl.DataFrame(
        {
            "query": np.repeat(np.arange(n), 20),
            "a": a.ravel(),
            "b": b.ravel(),
            "c": c.ravel(),
            "label": label.ravel(),
        }
    )


RANKER = RankerConfig(n_estimators=60, learning_rate=0.1, num_leaves=7, min_child_samples=20, n_threads=1)


@pytest.fixture(scope="module")
def ranker_data() -> tuple[pl.DataFrame, pl.DataFrame]:
    return ranking_queries(2000, 0), ranking_queries(500, 1).with_columns(pl.col("query") + 10_000)


def test_ndcg_at_known_answers():
    # one query: the relevant item second of three -> 1 / log2(3)
    assert ndcg_at(np.array([3.0, 2.0, 1.0]), np.array([0, 1, 0]), np.array([3]), 10) == pytest.approx(1 / np.log2(3))
    # ties keep row order (as LightGBM): the relevant item is the second of two tied rows
    assert ndcg_at(np.array([1.0, 1.0]), np.array([0, 1]), np.array([2]), 10) == pytest.approx(1 / np.log2(3))
    # beyond the cut-off it counts 0; a query without a relevant item counts 1
    assert ndcg_at(np.array([3.0, 2.0, 1.0, 5.0]), np.array([0, 0, 1, 0]), np.array([3, 1]), 2) == 0.5


def test_ndcg_at_equals_lightgbms_validation_metric(ranker_data: tuple[pl.DataFrame, pl.DataFrame]):
    train, valid = ranker_data
    local = LambdaRanker(RANKER).fit(train, valid, ["a", "b", "c"])
    assert local.ndcg(valid) == pytest.approx(local.booster_.best_score["valid_0"]["ndcg@10"], abs=1e-12)


@pytest.mark.parametrize("base", [None, "a"])
def test_dask_ranker_on_one_partition_is_the_single_process_ranker(
    ranker_data: tuple[pl.DataFrame, pl.DataFrame], on_cluster: DaskConfig, base: str | None
):
    """One partition trains on one worker: the same trees and the same early-stopping round as ``LambdaRanker``
    (so ValidationStop follows ``lightgbm.early_stopping``), also when both start from a feature's score."""
    train, valid = ranker_data
    config = dataclasses.replace(RANKER, base_feature=base, base_weight=3.0)
    local = LambdaRanker(config).fit(train, valid, ["a", "b", "c"])
    one = DaskConfig(scheduler=on_cluster.scheduler, partitions=1, show_progress=False)
    remote = DaskRanker(config, one).fit(train, valid, ["a", "b", "c"])
    assert remote.booster_.num_trees() == local.booster_.best_iteration < RANKER.n_estimators  # it stopped early
    np.testing.assert_array_equal(remote.score(valid), local.score(valid))


def test_dask_ranker_ndcg_within_one_percent(ranker_data: tuple[pl.DataFrame, pl.DataFrame], on_cluster: DaskConfig):
    train, valid = ranker_data
    local = LambdaRanker(RANKER).fit(train, valid, ["a", "b", "c"])
    remote = DaskRanker(RANKER, on_cluster).fit(train, valid, ["a", "b", "c"])  # two partitions, two workers
    assert isinstance(remote.booster_, type(local.booster_)) and remote.feature_names_ == ["a", "b", "c"]
    print(f"validation NDCG@10: single process {local.ndcg(valid):.4f}, two workers {remote.ndcg(valid):.4f}")
    assert abs(remote.ndcg(valid) - local.ndcg(valid)) <= 0.01 * local.ndcg(valid)
    # both learned the utility: ordering by its noise-free part a + 0.3 b gives 0.567, a random order 0.247
    assert remote.ndcg(valid) > 0.55
    text = LambdaRanker.from_text(remote.to_text(), RANKER)
    np.testing.assert_array_equal(text.score(valid), remote.score(valid))


def test_open_ports_gives_each_worker_a_distinct_free_port(client: Any):
    workers = worker_addresses(client)
    ports = open_ports(client, workers)
    assert sorted(ports) == workers and len(set(ports.values())) == len(workers)  # both workers on 127.0.0.1
    for port in ports.values():  # free: this process can bind each of them
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", port))


def test_open_ports_gives_up_on_ports_that_keep_colliding():
    class SamePort:  # a cluster whose two workers on one host always report the same port
        def run(self, function: Any, workers: list[str]) -> dict[str, int]:
            return dict.fromkeys(workers, 4321)

    with pytest.raises(ConfigError, match="distinct free ports"):
        open_ports(SamePort(), ["tcp://10.0.0.1:1", "tcp://10.0.0.1:2"])
    assert open_ports(SamePort(), ["tcp://10.0.0.1:1", "tcp://10.0.0.2:1"]) == {
        "tcp://10.0.0.1:1": 4321,
        "tcp://10.0.0.2:1": 4321,
    }  # one per host: no collision


def test_dask_ranker_keeps_lightgbms_sockets_on_their_workers(
    ranker_data: tuple[pl.DataFrame, pl.DataFrame], on_cluster: DaskConfig, monkeypatch: pytest.MonkeyPatch
):
    """LightGBM's own port assignment holds sockets in Dask futures, which hangs ``fit`` when Dask moves one
    between workers; the ranker never calls it (here it would raise) and puts it back afterwards."""
    import lightgbm.dask as lgb_dask

    def held_sockets(**_: Any) -> Any:
        raise AssertionError("LightGBM's socket-holding port assignment was used")

    monkeypatch.setattr(lgb_dask, "_assign_open_ports_to_workers", held_sockets)
    train, valid = ranker_data
    remote = DaskRanker(RANKER, on_cluster).fit(train, valid, ["a", "b", "c"])  # two partitions, two workers
    assert remote.booster_.num_trees() > 0
    assert lgb_dask._assign_open_ports_to_workers is held_sockets


def test_dask_recommender_fits_a_plain_saved_model(
    items: pl.DataFrame, on_cluster: DaskConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The ranker trains on the cluster with the frames Recommender.fit gives LambdaRanker; the saved model is an
    ordinary one."""
    seen: dict[str, tuple[pl.DataFrame, ...]] = {}
    for cls in (LambdaRanker, DaskRanker):
        real = cls.fit

        def recording(self: Any, train: pl.DataFrame, valid: pl.DataFrame, names: Any, real: Any = real) -> Any:
            seen[type(self).__name__] = (train, valid)
            return real(self, train, valid, names)

        monkeypatch.setattr(cls, "fit", recording)
    events = topic_events(items, N_USERS)
    config = dataclasses.replace(small_config(tmp_path), ranker_folds=0)  # the hold-out, as on Dask
    fitted = DaskRecommender(config, on_cluster).fit(events, items)
    Recommender(config).fit(events, items)
    dask_frames, plain_frames = seen["DaskRanker"], seen["LambdaRanker"]
    assert all(a.equals(b) for a, b in zip(dask_frames, plain_frames, strict=True)) and dask_frames[1].height > 0
    assert type(fitted.ranker_) is LambdaRanker
    loaded = Recommender.load(fitted.save(tmp_path / "model"))
    assert loaded.ranker_.feature_names_ == fitted.ranker_.feature_names_  # type: ignore[union-attr]
    assert loaded.recommend([0, 1], k=K).equals(fitted.recommend([0, 1], k=K))


@pytest.mark.parametrize("ensemble", [False, True])
def test_dask_recommender_cross_validates_the_tree_count(
    items: pl.DataFrame, on_cluster: DaskConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture, ensemble: bool
):
    config = dataclasses.replace(small_config(tmp_path), ranker_folds=2, ranker_ensemble=ensemble)
    with caplog.at_level("INFO", logger="recsys.pipeline"):
        fitted = DaskRecommender(config, on_cluster).fit(topic_events(items, N_USERS), items)
    (line,) = [r.getMessage() for r in caplog.records if "best rounds" in r.getMessage()]
    rounds = [int(x) for x in line.split("[")[1].split("]")[0].split(",")]
    assert len(rounds) == 2
    if ensemble:  # the fold rankers themselves, as plain LambdaRankers
        assert type(fitted.ranker_) is RankerEnsemble
        assert [type(m) for m in fitted.ranker_.members_] == [LambdaRanker, LambdaRanker]
        assert [m.n_trees for m in fitted.ranker_.members_] == rounds
    else:  # one ranker on every query with the mean best round
        assert type(fitted.ranker_) is LambdaRanker
        assert fitted.ranker_.booster_.num_trees() == max(1, round(sum(rounds) / 2))


# ------------------------------------------------------------------------------------------ command line
def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "RECSYS_CACHE_DIR": str(home / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_recommend_on_the_cluster_equals_the_library_job(
    model: Recommender, model_dir: Path, on_cluster: DaskConfig, reference: Path, tmp_path: Path
):
    users = tmp_path / "users.csv"
    pl.DataFrame({"user_id": USERS}).write_csv(users)
    HISTORY.write_csv(tmp_path / "history.csv")
    budget = repr(batch_config(model).memory_budget_mb)
    out = tmp_path / "out"
    args = ["recommend", "--model", str(model_dir), "--users", str(users), "--out", str(out), "--k", str(K)]
    args += ["--memory-budget-mb", budget, "--history", str(tmp_path / "history.csv")]
    result = cli(*args, "--scheduler", on_cluster.scheduler, home=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16 shard(s)" in result.stdout
    assert files_of(out) == files_of(reference)
    bad = cli(*args, "--scheduler", "local:none", home=tmp_path)
    assert bad.returncode == 2 and "local:N" in bad.stderr and "Traceback" not in bad.stderr
    single_file = cli(
        "recommend",
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path / "r.parquet"),
        "--scheduler",
        on_cluster.scheduler,
        home=tmp_path,
    )
    assert single_file.returncode == 2 and "directory" in single_file.stderr


def test_partitions_without_a_scheduler_is_refused():
    from recsys.cli import _batch_job

    with pytest.raises(ConfigError, match="--partitions needs --scheduler"):
        _batch_job(BatchConfig(), None, 4)


# ------------------------------------------------------------------------------------------ a killed worker (last)
def test_a_worker_killed_mid_job_still_gives_the_same_output(
    client: Any, model: Recommender, model_dir: Path, on_cluster: DaskConfig, reference: Path
):
    """SIGKILL one worker process once the first shard is committed: the nanny restarts it, its tasks run again
    (finding committed shards committed), and the output equals the uninterrupted run byte for byte."""
    out = reference.parent / "killed"
    config = DaskConfig(scheduler=on_cluster.scheduler, partitions=40, show_progress=False)  # many small tasks
    expected_dir = reference.parent / "unkilled"
    quiet(DaskBatchJob(batch_config(model), config), model_dir, expected_dir, USERS, history=HISTORY)
    pids = client.run(os.getpid)
    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            outcome["report"] = quiet(DaskBatchJob(batch_config(model), config), model_dir, out, USERS, history=HISTORY)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 60
    while not list((out / "_shards").glob("part-*.json")):
        assert time.monotonic() < deadline and thread.is_alive(), f"no shard committed: {outcome}"
        time.sleep(0.002)
    victim = max(pids.values())
    running = thread.is_alive()
    os.kill(victim, signal.SIGKILL)
    at_kill = len(list((out / "_shards").glob("part-*.json")))
    thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert running and at_kill < 40, "the kill came after the job had finished"
    assert victim not in client.run(os.getpid).values()  # the worker really died (and was replaced)
    assert files_of(out) == files_of(expected_dir)
    assert not list(out.glob(".*.tmp")) and not list((out / "_shards").glob(".*.tmp"))
    client.wait_for_workers(2, timeout=60)  # the nanny's replacement joins
