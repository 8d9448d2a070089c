"""The batch job: shards sized from the memory budget, checked output, fallback users, resume, refusal,
determinism, and SIGKILL fault injection (killed at random moments, resumed, equal to an uninterrupted run)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from conftest import TOPICS
from polars.testing import assert_frame_equal

from recsys.batch import (
    OUTPUT_COLUMNS,
    BatchConfig,
    BatchJob,
    BatchReport,
    bytes_per_user,
    check_shard,
    job_identity,
    read_users,
    users_per_shard,
)
from recsys.data import DataWarning
from recsys.errors import ConfigError, DataError, SchemaError
from recsys.models.ranker import RankerConfig, RankerEnsemble
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig

K = 3
UNKNOWN = [777, 778, 779]
N_TRIALS = 10


@pytest.fixture(scope="module")
def items() -> pl.DataFrame:
    rows = [(i, text, topic) for i, (topic, text) in enumerate((t, x) for t, xs in TOPICS.items() for x in xs)]
    return pl.DataFrame(rows, schema={"item_id": pl.Int64, "text": pl.String, "topic": pl.String}, orient="row")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, items: pl.DataFrame) -> Path:
    """A small zero-shot model: 30 users (ten per topic), four events each, 18 items."""
    folder = tmp_path_factory.mktemp("batch_model")
    events = [
        (t * 10 + u, int(items.filter(pl.col("topic") == topic)["item_id"][(u + s) % 6]), 100 * s)
        for t, topic in enumerate(TOPICS)
        for u in range(10)
        for s in range(4)
    ]
    interactions = pl.DataFrame(
        events, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}, orient="row"
    )
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=str(folder / "cache"), show_progress=False),
        n_candidates=10,
        n_transition_candidates=6,
        ranker=RankerConfig(min_child_samples=2, n_estimators=20),
        show_progress=False,
    )
    Recommender(config).fit(interactions, items).save(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Recommender:
    return Recommender.load(model_dir)


@pytest.fixture(scope="module")
def users_file(model_dir: Path) -> Path:
    """Every fitted user in reverse order, three unknown users, and two duplicates."""
    path = model_dir.parent / "users.csv"
    ids = list(range(29, -1, -1)) + UNKNOWN + [5, 777]
    pl.DataFrame({"user_id": ids}).write_csv(path)
    return path


def budget_for(model: Recommender, users: float) -> float:
    """A memory budget (MiB) that fits ``users`` users per shard (fractions round down)."""
    return users * bytes_per_user(model, K) / 2**20


def config(model: Recommender, users_per: float = 2.5) -> BatchConfig:
    return BatchConfig(k=K, memory_budget_mb=budget_for(model, users_per), show_progress=False)


def run_job(
    model: Recommender, model_dir: Path, out: Path, users: object = None, users_per: float = 2.5, **kw: object
) -> BatchReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return BatchJob(config(model, users_per)).run(model_dir, out, users, **kw)  # type: ignore[arg-type]


def read_output(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(out.glob("part-*.parquet")))


def files_of(out: Path) -> dict[str, bytes]:
    """The output's data files and manifest, by name (the lock and commit records left out)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith(("part-", "_SUCCESS"))}


# ------------------------------------------------------------------------------------------ sizing
def test_bytes_per_user_follows_the_documented_formula(model: Recommender):
    n_items, n_features = 18, len(model.ranker_.feature_names_)  # type: ignore[union-attr]
    events, users = model.interactions_.height, model.interactions_["user_id"].n_unique()  # type: ignore[union-attr]
    mean_length = events / users
    per_row = model.features_.transitions.matrix_.nnz / n_items  # type: ignore[union-attr]
    sparse = min(n_items, 2 * mean_length * per_row)  # the user's transition scores, stored sparsely
    candidates = 10 + 6 + 18  # FAISS, transitions, popularity (20, capped at the catalogue)
    expected = 40 * sparse + 9 * (20 + mean_length) + 2 * candidates * (n_features + 8) * 8 + 64 * K
    assert bytes_per_user(model, K) == int(expected)


@pytest.mark.parametrize(("users_per", "expected"), [(2.5, 2), (7.0, 7), (0.01, 1), (1000.0, 1000)])
def test_users_per_shard_from_budget(model: Recommender, users_per: float, expected: int):
    assert users_per_shard(model, config(model, users_per)) == expected


def test_shards_are_fixed_slices_of_the_user_list(model: Recommender, model_dir: Path, tmp_path: Path):
    users = list(range(29, -1, -1)) + UNKNOWN  # 33 users, 2 per shard
    report = run_job(model, model_dir, tmp_path / "out", users)
    assert report.n_shards == math.ceil(33 / 2) == len(list((tmp_path / "out").glob("part-*.parquet")))
    for i in range(report.n_shards):
        shard = pl.read_parquet(tmp_path / "out" / f"part-{i:05d}.parquet")
        assert shard["user_id"].unique(maintain_order=True).to_list() == users[2 * i : 2 * i + 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k=0"),
        ({"memory_budget_mb": 0}, "memory_budget_mb=0"),
        ({"memory_budget_mb": float("nan")}, "finite"),
        ({"cascade_top": -1}, "cascade_top=-1"),
        ({"cascade_top": True}, "cascade_top=True"),
        ({"quotas": (0, 10, 2)}, "FAISS at least 1"),
        ({"quotas": (20, -1, 2)}, r"quotas=\(20, -1, 2\)"),
        ({"quotas": (20, 10)}, "three integers"),
        ({"quotas": (20.0, 10, 2)}, "three integers"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object], match: str):
    with pytest.raises(ConfigError, match=match):
        BatchConfig(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ output
def test_every_user_once_with_fallback_flags(model: Recommender, model_dir: Path, users_file: Path, tmp_path: Path):
    with pytest.warns(DataWarning, match="2 duplicate 'user_id' value"):
        report = BatchJob(config(model)).run(model_dir, tmp_path / "out", read_users(users_file))
    recs = read_output(tmp_path / "out")
    assert tuple(recs.columns) == OUTPUT_COLUMNS
    assert recs.schema["score"] == pl.Float32 and recs.schema["rank"] == pl.UInt32
    assert recs["user_id"].unique(maintain_order=True).to_list() == list(range(29, -1, -1)) + UNKNOWN
    assert recs.group_by("user_id").len()["len"].to_list() == [K] * 33
    flagged = recs.filter(pl.col("fallback"))["user_id"].unique().sort().to_list()
    assert flagged == UNKNOWN and report.fallback_users == 3
    popular = model.recommend([777], k=K)
    assert recs.filter(pl.col("user_id") == 777).select("item_id", "rank").equals(popular.select("item_id", "rank"))
    # the same items and order as Recommender.recommend gives these users (the batch job only shards)
    direct = model.recommend(recs["user_id"].unique(maintain_order=True), k=K)
    assert recs.select("user_id", "item_id", "rank").equals(direct.select("user_id", "item_id", "rank"))


def test_inline_history_scores_an_unknown_user_from_its_texts(model: Recommender, model_dir: Path, tmp_path: Path):
    space = [6, 7, 8]  # three space items
    history = pl.DataFrame({"user_id": [5000] * 3, "item_id": space, "timestamp": [1, 2, 3]})
    run_job(model, model_dir, tmp_path / "out", [0, 5000, 777], history=history)
    recs = read_output(tmp_path / "out")
    new, popular = (recs.filter(pl.col("user_id") == user) for user in (5000, 777))
    assert new["fallback"].all() and popular["fallback"].all()
    assert not recs.filter(pl.col("user_id") == 0)["fallback"].any()
    from_history = model.recommend([5000], k=K, history=history)
    assert new.select("item_id", "rank").equals(from_history.select("item_id", "rank"))
    assert new["item_id"].to_list() != popular["item_id"].to_list()  # the history was used, not popularity
    assert not set(new["item_id"].to_list()) & set(space)  # history items are excluded


def test_cascade_top_serves_the_first_rankers_shortlist_and_is_part_of_the_job(
    model: Recommender, model_dir: Path, tmp_path: Path
):
    """``cascade_top=1`` with k=3: only the first fold ranker's top 3 per user reach the whole ensemble; the job
    writes what ``recommend`` gives with the same setting, and a resume with another setting is refused."""
    assert isinstance(model.ranker_, RankerEnsemble)  # the small data gives a fold ensemble: a real cascade
    users = list(range(30))
    out = tmp_path / "out"
    budget = budget_for(model, 2.5)
    BatchJob(BatchConfig(k=K, memory_budget_mb=budget, show_progress=False, cascade_top=1)).run(model_dir, out, users)
    recs = read_output(out)
    twin = copy.copy(model)
    twin.config = dataclasses.replace(model.config, cascade_top=1)
    expected = twin.recommend(users, k=K)
    assert recs.select("user_id", "item_id", "rank").equals(expected.select("user_id", "item_id", "rank"))
    plain = model.recommend(users, k=K)
    assert not expected.select("user_id", "item_id").equals(plain.select("user_id", "item_id"))  # it changes lists
    with pytest.raises(ConfigError, match=r"cascade_top: 1 there, 50 now.*--overwrite"):
        run_job(model, model_dir, out, users)  # the model's own setting (the default 50): another job
    assert_one_table_serves_like(twin, model_dir, tmp_path, "--cascade-top", "1")  # the command line's option


def assert_one_table_serves_like(twin: Recommender, model_dir: Path, tmp_path: Path, *options: str) -> None:
    """``recsys recommend`` to one table with ``options`` writes what ``twin`` (the model with those settings)
    recommends for every user."""
    table = tmp_path / "recs.parquet"
    args = ["recommend", "--model", str(model_dir), "--out", str(table), "--k", str(K), *options]
    process = cli(*args, home=tmp_path, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    every = twin.recommend(None, k=K)
    assert (
        pl.read_parquet(table).select("user_id", "item_id", "rank").equals(every.select("user_id", "item_id", "rank"))
    )


def test_quotas_serve_fewer_candidates_and_are_part_of_the_job(model: Recommender, model_dir: Path, tmp_path: Path):
    """``quotas=(5, 2, 1)``: the job writes what ``recommend`` gives with those candidate fields set on the model
    (lists that differ from the model's own 200/100/20), sizes its shards for them, records them in its identity
    (a resume without them is another job), and the one-table command line takes ``--quotas 5,2,1``."""
    users = list(range(30))
    out = tmp_path / "out"
    small = BatchConfig(k=K, memory_budget_mb=budget_for(model, 2.5), show_progress=False, quotas=(5, 2, 1))
    BatchJob(small).run(model_dir, out, users)
    twin = copy.copy(model)
    twin.config = dataclasses.replace(
        model.config, n_candidates=5, n_transition_candidates=2, n_popularity_candidates=1
    )
    expected = twin.recommend(users, k=K)
    recs = read_output(out)
    assert recs.select("user_id", "item_id", "rank").equals(expected.select("user_id", "item_id", "rank"))
    plain = model.recommend(users, k=K)
    assert not expected.select("user_id", "item_id").equals(plain.select("user_id", "item_id"))  # it changes lists
    job = job_identity(model, "fp", pl.Series("user_id", users), None, small)
    assert job["quotas"] == [5, 2, 1] and "quotas" not in job_identity(model, "fp", pl.Series("user_id", users), None,
                                                                         BatchConfig(k=K))  # fmt: skip
    assert users_per_shard(model, small) > users_per_shard(
        model, BatchConfig(k=K, memory_budget_mb=small.memory_budget_mb)
    )
    with pytest.raises(ConfigError, match="--overwrite"):
        run_job(model, model_dir, out, users)  # the model's own quotas: another job
    assert_one_table_serves_like(twin, model_dir, tmp_path, "--quotas", "5,2,1")
    table = tmp_path / "bad.parquet"
    bad = cli("recommend", "--model", str(model_dir), "--out", str(table), "--quotas", "5;2;1", home=tmp_path,
              stderr=subprocess.PIPE)  # fmt: skip
    _, stderr = bad.communicate(timeout=120)
    assert bad.returncode != 0 and "three integers FAISS,TRANSITIONS,POPULARITY" in stderr


def test_cascade_top_of_a_one_ranker_model_is_no_setting(model: Recommender, caplog: pytest.LogCaptureFixture):
    """With one ranker there is nothing to shortlist for: the job's identity records no cascade, with a warning."""
    single = copy.copy(model)
    single.ranker_ = model.ranker_.members_[0]  # type: ignore[union-attr]
    users = pl.Series("user_id", [0, 1])
    with caplog.at_level("WARNING", logger="recsys.batch"):
        job = job_identity(single, "fp", users, None, BatchConfig(cascade_top=50))
    assert job["cascade_top"] is None and "has no effect" in caplog.text
    assert job_identity(model, "fp", users, None, BatchConfig(cascade_top=50))["cascade_top"] == 50


def good_shard() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2],
            "item_id": [10, 11, 10, 12],
            "score": pl.Series([0.5, 0.4, 0.9, 0.1], dtype=pl.Float32),
            "rank": pl.Series([1, 2, 1, 2], dtype=pl.UInt32),
            "fallback": [False, False, True, True],
        }
    )


@pytest.mark.parametrize(
    ("corrupt", "error", "match"),
    [
        (lambda f: f.with_columns(item_id=pl.Series([10, 10, 10, 12])), DataError, r"repeat a \(user_id, item_id\)"),
        (lambda f: f.with_columns(rank=pl.Series([1, 3, 1, 2], dtype=pl.UInt32)), DataError, "'rank' is not 1..n"),
        (lambda f: f.with_columns(rank=pl.Series([2, 2, 1, 2], dtype=pl.UInt32)), DataError, "'rank' is not 1..n"),
        (
            lambda f: f.with_columns(score=pl.Series([0.5, float("nan"), 0.9, 0.1], dtype=pl.Float32)),
            DataError,
            "non-finite",
        ),
        (
            lambda f: f.with_columns(score=pl.Series([0.5, float("inf"), 0.9, 0.1], dtype=pl.Float32)),
            DataError,
            "non-finite",
        ),
        (lambda f: f.filter(pl.col("user_id") == 1), DataError, r"got no recommendations, for example \[2\]"),
        (lambda f: f.with_columns(user_id=pl.Series([1, 1, 3, 3])), DataError, "not given"),
        (lambda f: f.with_columns(fallback=pl.Series([False, True, True, True])), DataError, "'fallback' differs"),
        (lambda f: f.with_columns(score=pl.col("score").cast(pl.Float64)), SchemaError, "'score' has dtype Float64"),
        (lambda f: f.drop("fallback"), SchemaError, "expected"),
        (lambda f: f.with_columns(item_id=pl.Series([10, None, 10, 12])), DataError, "null"),
    ],
)
def test_check_shard_rejects_a_bad_shard(corrupt, error: type[Exception], match: str):
    users = pl.Series("user_id", [1, 2])
    check_shard(good_shard(), users, k=2)  # the good one passes
    with pytest.raises(error, match=match):
        check_shard(corrupt(good_shard()), users, k=2)


def test_check_shard_rejects_more_than_k_rows():
    with pytest.raises(DataError, match="at most k=1"):
        check_shard(good_shard(), pl.Series("user_id", [1, 2]), k=1)


def test_bad_user_lists(model: Recommender, model_dir: Path, tmp_path: Path):
    with pytest.raises(DataError, match="null 'user_id'"):
        run_job(model, model_dir, tmp_path / "a", pl.Series("user_id", [1, None]))
    with pytest.raises(DataError, match="empty"):
        run_job(model, model_dir, tmp_path / "b", [])
    with pytest.raises(DataError, match="dtype String"):
        run_job(model, model_dir, tmp_path / "c", ["x"])
    pl.DataFrame({"uid": [1]}).write_csv(tmp_path / "u.csv")
    with pytest.raises(SchemaError, match="no 'user_id' column"):
        read_users(tmp_path / "u.csv")


# ------------------------------------------------------------------------------------------ resume and refusal
def test_resume_after_a_partially_written_directory(model: Recommender, model_dir: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    run_job(model, model_dir, reference)
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "_SUCCESS").unlink()
    (out / "part-00001.parquet").unlink()  # a missing shard
    (out / "_shards" / "part-00002.json").unlink()  # killed between the rename and the commit record
    (out / "part-00003.parquet").write_bytes(b"PAR1 truncated")  # an altered shard fails its sha256
    (out / ".part-00004.parquet.x1y2.tmp").write_bytes(b"half a shard")  # a stray temporary file
    report = run_job(model, model_dir, out)
    assert report.shards_written == 3 and report.shards_reused == report.n_shards - 3
    assert not list(out.glob(".*.tmp"))
    assert files_of(out) == files_of(reference)


def test_a_finished_job_is_not_recomputed(model: Recommender, model_dir: Path, tmp_path: Path):
    first = run_job(model, model_dir, tmp_path / "out")
    again = run_job(model, model_dir, tmp_path / "out")
    assert again.shards_written == 0 and again.manifest == first.manifest


def test_refuses_another_jobs_output(model: Recommender, model_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    run_job(model, model_dir, out, [0, 1, 2])
    with pytest.raises(ConfigError, match=r"users_sha256.*--overwrite"):
        run_job(model, model_dir, out, [0, 1, 3])
    with pytest.raises(ConfigError, match=r"k: 3 there, 2 now.*--overwrite"):
        BatchJob(BatchConfig(k=2, memory_budget_mb=budget_for(model, 2.5), show_progress=False)).run(
            model_dir, out, [0, 1, 2]
        )
    (out / "_SUCCESS").unlink()  # a partial output of another job is refused too
    with pytest.raises(ConfigError, match="different batch job"):
        run_job(model, model_dir, out, [0, 1, 3])
    report = run_job(model, model_dir, out, [0, 1, 3], overwrite=True)
    assert report.manifest["total_users"] == 3
    assert read_output(out)["user_id"].unique().sort().to_list() == [0, 1, 3]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no batch job"):
        run_job(model, model_dir, other, [0])


def test_a_second_job_on_the_same_directory_is_refused(model: Recommender, model_dir: Path, tmp_path: Path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".lock").open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another batch job is writing"):
            run_job(model, model_dir, out, [0])


def test_same_inputs_give_identical_bytes(model: Recommender, model_dir: Path, users_file: Path, tmp_path: Path):
    run_job(model, model_dir, tmp_path / "a", read_users(users_file))
    run_job(model, model_dir, tmp_path / "b", read_users(users_file))
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    assert_frame_equal(read_output(tmp_path / "a"), read_output(tmp_path / "b"))


# ------------------------------------------------------------------------------------------ command line
def cli(*args: str, home: Path, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "HOME": str(home), "RECSYS_CACHE_DIR": str(home / "cache")}
    command = [sys.executable, "-m", "recsys.cli", *args]
    return subprocess.Popen(command, text=True, env=env, **popen)  # type: ignore[call-overload]


TINY_SHARDS = 2.5  # users per shard in the budget: two, so 17 shards and kills land mid-run


def recommend_args(model: Recommender, model_dir: Path, users_file: Path, out: Path) -> list[str]:
    budget = budget_for(model, TINY_SHARDS)
    args = ["recommend", "--model", str(model_dir), "--users", str(users_file), "--out", str(out)]
    return [*args, "--k", str(K), "--memory-budget-mb", repr(budget)]


def test_cli_refuses_another_job_with_exit_2(model: Recommender, model_dir: Path, users_file: Path, tmp_path: Path):
    out = tmp_path / "out"
    run_job(model, model_dir, out, [0, 1])
    result = cli(*recommend_args(model, model_dir, users_file, out), home=tmp_path, stderr=subprocess.PIPE)
    _, stderr = result.communicate(timeout=120)
    assert result.returncode == 2, stderr
    assert "different batch job" in stderr and "--overwrite" in stderr and "Traceback" not in stderr


def wait_for(path: Path, text: str, timeout: float = 60.0) -> None:
    """Poll ``path`` until it holds ``text``."""
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the batch job never logged {text!r}: {path.read_text()[-2000:] if path.exists() else ''}"
            )
        time.sleep(0.005)


PLAN_LOGGED = "already committed"  # the job's plan line: the model is loaded and shards are about to be written

# Imports recsys once, then forks one job process per request (an output folder and a log file on stdin): each
# job is a separate process, killed with SIGKILL by the test, without paying the import cost every time. It
# prints the job's pid, then its wait status.
ZYGOTE = """
import logging, os, sys, traceback
import lightgbm  # imported lazily by Recommender.load: preloaded here, once
from recsys.batch import BatchConfig, BatchJob, read_users
model, users, k, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
for line in sys.stdin:
    out, log = line.split()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            logging.basicConfig(filename=log, level=logging.INFO)
            job = BatchJob(BatchConfig(k=k, memory_budget_mb=budget, show_progress=False))
            job.run(model, out, read_users(users))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class Jobs:
    """Batch jobs in their own processes, forked from one :data:`ZYGOTE`."""

    def __init__(self, model_dir: Path, users_file: Path, budget: float) -> None:
        args = [str(model_dir), str(users_file), str(K), repr(budget)]
        command = [sys.executable, "-c", ZYGOTE, *args]
        self.zygote = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self, out: Path, log: Path) -> int:
        """Start a job writing to ``out``; return its pid once it has logged its plan."""
        self.zygote.stdin.write(f"{out} {log}\n")  # type: ignore[union-attr]
        self.zygote.stdin.flush()  # type: ignore[union-attr]
        pid = int(self.zygote.stdout.readline())  # type: ignore[union-attr]
        wait_for(log, PLAN_LOGGED)
        return pid

    def wait(self) -> int:
        """The wait status of the last job (see ``os.waitpid``)."""
        return int(self.zygote.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        self.zygote.stdin.close()  # type: ignore[union-attr]
        try:
            self.zygote.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.zygote.kill()
            self.zygote.wait()


@pytest.fixture
def jobs(model: Recommender, model_dir: Path, users_file: Path) -> Iterator[Jobs]:
    started = Jobs(model_dir, users_file, budget_for(model, TINY_SHARDS))
    yield started
    started.close()


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(
    model: Recommender, model_dir: Path, users_file: Path, jobs: Jobs, tmp_path: Path
):
    """Regression guard for the commit protocol: SIGKILL lands before, during and between shard writes
    (stratified random delays over the shard phase of an uninterrupted run); the resumed output must equal
    the uninterrupted CLI run byte for byte, and no temporary file may survive."""
    reference, log = tmp_path / "reference", tmp_path / "reference.log"
    with log.open("w") as handle:
        process = cli(*recommend_args(model, model_dir, users_file, reference), home=tmp_path, stderr=handle)
    assert process.wait(timeout=120) == 0, log.read_text()[-2000:]
    expected, expected_frame = files_of(reference), read_output(reference)
    assert len(expected) == 18  # 17 shards + _SUCCESS
    jobs.start(tmp_path / "timed", tmp_path / "timed.log")  # an uninterrupted job, to time its shard phase
    started = time.monotonic()
    assert jobs.wait() == 0, (tmp_path / "timed.log").read_text()[-2000:]
    phase = time.monotonic() - started
    assert files_of(tmp_path / "timed") == expected  # the library job equals the CLI job
    rng = random.Random(20240601)
    killed, progress = 0, []  # trials whose job was killed before it finished; shards committed at each kill
    for trial in range(2 * N_TRIALS):  # extra trials only if a kill came too late on a slow machine
        if killed == N_TRIALS:
            break
        out = tmp_path / f"trial{trial}"
        mid_run = False
        for attempt in range(2 if trial % 3 == 2 else 1):  # some trials kill the resumed job again
            pid = jobs.start(out, tmp_path / f"t{trial}.{attempt}.log")
            time.sleep(0.9 * phase * (trial % N_TRIALS + rng.random()) / N_TRIALS)  # spread over the run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            status = jobs.wait()
            if os.WIFSIGNALED(status) and not (out / "_SUCCESS").exists():
                mid_run = True
                progress.append(len(list((out / "_shards").glob("part-*.json"))))
        killed += mid_run
        jobs.start(out, tmp_path / f"t{trial}.resume.log")  # the same job again: it resumes
        assert jobs.wait() == 0, (tmp_path / f"t{trial}.resume.log").read_text()[-2000:]
        assert not list(out.glob(".*.tmp")) and not list((out / "_shards").glob(".*.tmp"))
        assert files_of(out) == expected, f"trial {trial}: resumed output differs from the uninterrupted run"
        assert_frame_equal(read_output(out), expected_frame)
    assert killed == N_TRIALS, f"only {killed} trials were killed before the job finished"
    assert len(set(progress)) >= 3 and max(progress) > 0, f"kills did not spread over the run: {progress}"


def test_recommend_help_names_the_batch_options(tmp_path: Path):
    process = cli("recommend", "--help", home=tmp_path, stdout=subprocess.PIPE)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    for option in ("--memory-budget-mb", "--overwrite", "--history", "--cascade-top", "directory"):
        assert option in stdout
