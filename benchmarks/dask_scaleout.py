"""Dask scale-out: wall time of a local cluster against one process, for the batch job and for ranker training.

(Not named ``distributed.py``: run as a script, that file would shadow the ``distributed`` package.)

The pipeline is fitted once (zero-shot user encoder) and saved. Then, alternating single-process and Dask runs
(``--repeats`` of each, the median reported):

- **ranker training**: the ranker's training and validation frames are built once (``ranker_frames``, on the
  client, as in ``Recommender.fit``); then ``LambdaRanker.fit`` (one process, ``n_threads`` = 2) against
  ``DaskRanker.fit`` on an already running ``LocalCluster`` of ``--workers`` one-thread workers. Validation
  NDCG@10 of both (``LambdaRanker.ndcg``) and their tree counts are recorded.
- **batch job**, as a user runs it, in a child process (``python -m recsys.cli recommend --model M --out DIR``):
  single process; ``--scheduler local:N`` (starts its own cluster: cluster start, worker imports and the model
  loads included); and ``--scheduler ADDRESS`` on the running cluster whose workers already hold the model (the
  steady state of a long-lived cluster). The Dask jobs use ``max(budget partitions, 4 x workers)`` partitions so
  every worker has work. The outputs are compared row for row (sorted by user and rank).

Raw results: ``results/distributed.json``; table: ``README.md`` (between the ``distributed`` markers).

    python benchmarks/dask_scaleout.py [--dataset ml-latest-small | --synthetic ITEMS USERS] [--workers 2]
                                     [--repeats 3] [--cache-dir DIR] [--only ranker|batch]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.batch import BatchConfig, users_per_shard
from recsys.data import Dataset
from recsys.datasets import load_dataset
from recsys.distributed import DaskConfig, DaskRanker, ranker_frames
from recsys.evaluation._harness import _git_commit
from recsys.models.ranker import LambdaRanker, _groups, query_ndcg
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig, training_queries

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import synthetic
from foundation import machine, write_block

HERE = Path(__file__).resolve().parent
START, END = "<!-- distributed:start -->", "<!-- distributed:end -->"


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = run()
    return time.perf_counter() - started, value


def recommend(model_dir: Path, out: Path, *extra: str) -> float:
    """Wall time of ``recsys recommend --out DIR`` in a child process."""
    command = [sys.executable, "-m", "recsys.cli", "recommend", "--model", str(model_dir), "--out", str(out), *extra]
    seconds, _ = timed(lambda: subprocess.run(command, check=True, capture_output=True))
    return seconds


def compare(single: Path, dask: Path) -> dict[str, Any]:
    """Row-for-row comparison of two batch outputs, sorted by (user_id, rank)."""
    a = pl.read_parquet(single / "part-*.parquet").sort("user_id", "rank")
    b = pl.read_parquet(dask / "part-*.parquet").sort("user_id", "rank")
    joined = a.join(b, on=["user_id", "rank"], how="full", suffix="_dask", coalesce=True)
    differs = (pl.col("item_id") != pl.col("item_id_dask")) | (pl.col("fallback") != pl.col("fallback_dask"))
    scores = (pl.col("score") - pl.col("score_dask")).abs()
    diff = joined.select(
        rows_differing=(differs | pl.col("item_id").is_null() | pl.col("item_id_dask").is_null()).sum(),
        users_score_differs=pl.col("user_id").filter(scores > 0).n_unique(),
        max_abs_score_diff=scores.max(),
    ).row(0, named=True)
    return {"rows": a.height, "rows_dask": b.height, "equal": a.equals(b), **diff}


def paired(local: LambdaRanker, remote: LambdaRanker, valid: pl.DataFrame) -> dict[str, float]:
    """Validation queries, and the mean and standard error of the per-query NDCG@10 difference (Dask - single)."""
    valid = valid.sort("query", maintain_order=True)
    labels, groups = valid["label"].to_numpy(), _groups(valid["query"])
    diff = query_ndcg(remote.score(valid), labels, groups, 10) - query_ndcg(local.score(valid), labels, groups, 10)
    return {
        "valid_queries": len(groups),
        "ndcg10_diff": float(diff.mean()),
        "ndcg10_diff_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
    }


def rank_training(model: Recommender, data: Dataset, dask: DaskConfig, repeats: int, workers: int) -> dict[str, Any]:
    cfg = model.config
    queries = training_queries(data.interactions, cfg.n_cutoffs, cfg.max_ranker_users, cfg.seed, cfg.label_window)
    frame_seconds, (train, valid, names) = timed(lambda: ranker_frames(model, *queries, events=data.interactions))
    single, dist = [], []
    busy: set[str] = set()
    for _ in range(repeats):
        busy |= set(others())
        seconds, local = timed(lambda: LambdaRanker(cfg.ranker).fit(train, valid, names))
        single.append(seconds)
        busy |= set(others())
        seconds, remote = timed(lambda: DaskRanker(cfg.ranker, dask).fit(train, valid, names))
        dist.append(seconds)
    busy |= set(others())
    return {
        "train_rows": train.height,
        "valid_rows": valid.height,
        "features": len(names),
        "frame_seconds": frame_seconds,
        "single_seconds": single,
        "dask_seconds": dist,
        "single_ndcg10": local.ndcg(valid),
        "dask_ndcg10": remote.ndcg(valid),
        **paired(local, remote, valid),
        "single_trees": local.booster_.best_iteration,
        "dask_trees": remote.booster_.num_trees(),
        # rounds trained: early stopping runs `early_stopping_rounds` past the best round (at most n_estimators)
        "single_rounds": min(local.booster_.best_iteration + cfg.ranker.early_stopping_rounds, cfg.ranker.n_estimators),
        "dask_rounds": min(remote.booster_.num_trees() + cfg.ranker.early_stopping_rounds, cfg.ranker.n_estimators),
        "workers": workers,
        "concurrent_benchmarks": sorted(busy),
    }


def batch_jobs(model: Recommender, model_dir: Path, tmp: Path, address: str, repeats: int, workers: int) -> dict:
    n_users = model.interactions_["user_id"].n_unique()  # type: ignore[index]
    budget_parts = math.ceil(n_users / users_per_shard(model, BatchConfig()))
    partitions = max(budget_parts, 4 * workers)
    dask = ["--partitions", str(partitions)]
    few = tmp / "few-users.csv"  # a small job on the running cluster: its workers load the model once
    model.interactions_["user_id"].unique(maintain_order=True).head(4 * workers).to_frame().write_csv(few)  # type: ignore[index]
    recommend(model_dir, tmp / "warm-up", "--scheduler", address, "--users", str(few), "--partitions", str(2 * workers))
    single, cold, warm = [], [], []
    busy = set(others())
    for r in range(repeats):
        single.append(recommend(model_dir, tmp / f"single{r}"))
        busy |= set(others())
        cold.append(recommend(model_dir, tmp / f"cold{r}", "--scheduler", f"local:{workers}", *dask))
        busy |= set(others())
        warm.append(recommend(model_dir, tmp / f"warm{r}", "--scheduler", address, *dask))
        busy |= set(others())
    return {
        "users": n_users,
        "shards_single": json.loads((tmp / "single0" / "_SUCCESS").read_text())["job"]["n_shards"],
        "partitions": partitions,
        "single_seconds": single,
        "dask_cold_seconds": cold,
        "dask_warm_seconds": warm,
        "comparison": compare(tmp / "single0", tmp / "cold0"),
        "concurrent_benchmarks": sorted(busy),
        "dask_runs_identical": all(
            (tmp / "cold0" / "_SUCCESS").read_bytes() == (tmp / name / "_SUCCESS").read_bytes()
            for name in [f"cold{r}" for r in range(repeats)] + [f"warm{r}" for r in range(repeats)]
        ),
    }


def run(
    dataset: str,
    cache_dir: str | None,
    size: tuple[int, int] | None,
    workers: int,
    repeats: int,
    parts: tuple[str, ...] = ("ranker", "batch"),
) -> dict[str, Any]:
    from distributed import LocalCluster

    if size is None:
        data = load_dataset(dataset)
    else:
        dataset = f"synthetic {size[0]:,} items x {size[1]:,} users"
        data = Dataset.from_frames(*synthetic(*size), name="synthetic")
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=cache_dir, show_progress=False),
        max_ranker_users=2_000 if size is not None else 10_000,
        show_progress=False,
    )
    fit_seconds, model = timed(lambda: Recommender(config).fit(data.interactions, data.items))
    result: dict[str, Any] = {"dataset": dataset, "items": data.items.height, "events": data.interactions.height}
    with tempfile.TemporaryDirectory(prefix="recsys-dask-bench-") as folder:
        tmp = Path(folder)
        model_dir = model.save(tmp / "model")
        start_seconds, cluster = timed(
            lambda: LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=40)
        )
        with cluster:
            dask = DaskConfig(scheduler=cluster.scheduler_address, show_progress=False)
            if "ranker" in parts:
                result["ranker"] = rank_training(model, data, dask, repeats, workers)
            if "batch" in parts:
                result["batch"] = batch_jobs(model, model_dir, tmp, cluster.scheduler_address, repeats, workers)
    for part in parts:
        result[part] |= {"repeats": repeats, "fit_seconds": fit_seconds, "cluster_start_seconds": start_seconds}
    return result


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _short(commands: list[str]) -> str:
    """``vexp.py ml-100k`` for each distinct benchmark script and first argument in ``commands``."""
    names = []
    for command in commands:
        words = command.split()
        script = next((i for i, w in enumerate(words) if w.endswith(".py") and "benchmarks/" in w), None)
        if script is not None:
            names.append(" ".join([Path(words[script]).name, *words[script + 1 : script + 2]]))
    return ", ".join(sorted(set(names)))


def render(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [
        START,
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Local cluster: {payload['results'][0]['ranker']['workers']} worker "
        "processes x 1 thread; single process: LightGBM 2 threads. Medians of the runs; each row: command and commit.",
        "",
        "| dataset | users | job | single process s | local cluster s | single / cluster | runs | command | commit |",
        "|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in payload["results"]:
        b, k = r["batch"], r["ranker"]
        rows = [
            (
                "batch",
                f"batch, `--scheduler local:N` (cluster start + model loads), {b['partitions']} partitions",
                b["single_seconds"],
                b["dask_cold_seconds"],
            ),
            ("batch", "batch, running cluster with the model loaded", b["single_seconds"], b["dask_warm_seconds"]),
            (
                "ranker",
                f"ranker training ({k['train_rows']:,} rows; {k['single_rounds']} / {k['dask_rounds']} rounds)",
                k["single_seconds"],
                k["dask_seconds"],
            ),
        ]
        for part, job, single, dist in rows:
            lines.append(
                f"| {r['dataset']} | {b['users']:,} | {job} | {_median(single):.1f} | {_median(dist):.1f} | "
                f"{_median(single) / _median(dist):.2f} | {len(single)} | `{r[part]['command']}` | "
                f"`{r[part]['commit']}` |"
            )
    lines += [
        "",
        "| dataset | single-process NDCG@10 (trees of rounds) | Dask NDCG@10 (trees of rounds) | difference (± s.e.) "
        "| batch output, Dask against single process |",
        "|---|---:|---:|---:|---|",
    ]
    for r in payload["results"]:
        k, c = r["ranker"], r["batch"]["comparison"]
        if c["equal"]:
            same = "identical"
        elif c["rows_differing"] == 0:
            same = (
                f"same items, ranks and flags; scores differ for {c['users_score_differs']} user(s) "
                f"(max {c['max_abs_score_diff']:.1e})"
            )
        else:
            same = f"{c['rows_differing']} row(s) differ"
        lines.append(
            f"| {r['dataset']} | {k['single_ndcg10']:.4f} ({k['single_trees']} of {k['single_rounds']}) | "
            f"{k['dask_ndcg10']:.4f} ({k['dask_trees']} of {k['dask_rounds']}) | "
            f"{(k['dask_ndcg10'] / k['single_ndcg10'] - 1):+.2%} ({k['ndcg10_diff']:+.4f} ± {k['ndcg10_diff_se']:.4f} "
            f"over {k['valid_queries']:,} queries) | {same} ({c['rows']:,} rows) |"
        )
    busy = [
        f"{r['dataset']} {part}: {_short(r[part]['concurrent_benchmarks'])}"
        for r in payload["results"]
        for part in ("batch", "ranker")
        if r[part].get("concurrent_benchmarks")
    ]
    if busy:
        lines += [
            "",
            "Other benchmark processes ran during these timings, so they are inflated: " + "; ".join(busy) + ".",
        ]
    lines += [
        "",
        "(Batch times are a child process each, Python start and model load included; the cluster rows also start "
        "the cluster and its worker processes, which import recsys and load the model, once per job.)",
        "",
        END,
    ]
    return "\n".join(lines)


def others() -> list[str]:
    """Other benchmark scripts running (not stopped) on this machine now: their load distorts the timings."""
    found = subprocess.run(["pgrep", "-af", "benchmarks/"], capture_output=True, text=True).stdout.splitlines()
    running = []
    for line in found:
        pid, _, command = line.partition(" ")
        words = command.split()
        if not words or "python" not in Path(words[0]).name or "dask_scaleout.py" in command:
            continue  # shell loops waiting for a benchmark, and this benchmark itself
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("T", "t", "Z"):  # stopped or finished processes take no CPU
            running.append(command)
    return running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--synthetic", nargs=2, type=int, metavar=("ITEMS", "USERS"), default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--only", nargs="+", choices=["ranker", "batch"], default=None, help="re-measure one part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    size = tuple(args.synthetic) if args.synthetic else None
    parts = tuple(args.only) if args.only else ("ranker", "batch")
    result = run(args.dataset, args.cache_dir, size, args.workers, args.repeats, parts)  # type: ignore[arg-type]
    command = ("python benchmarks/dask_scaleout.py " + " ".join(sys.argv[1:])).strip()
    stamp = {"command": command, "commit": _git_commit(str(HERE.parent)), "load_average_1m_at_end": os.getloadavg()[0]}
    for part in parts:
        result[part] |= stamp
    path = HERE / "results" / "distributed.json"
    path.parent.mkdir(exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    previous = {r["dataset"]: r for r in old.get("results", [])}
    merged = previous.get(result["dataset"], {}) | result  # --only keeps the other part's earlier measurement
    kept = [r for name, r in previous.items() if name != result["dataset"]]
    payload = {"machine": machine(), "results": [*kept, merged]}
    path.write_text(json.dumps(payload, indent=2))
    write_block("Scale-out on Dask", START, END, render(payload))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
