"""Batch-job throughput: users per second of ``recsys recommend --out DIR`` on a saved model.

The pipeline is fitted on every event of the dataset and saved; then the batch job runs as a user would run it,
in a child process (``python -m recsys.cli recommend --model M --out DIR``), over every user. Reported: the
child's wall time (model load included), users per second, shards, and the child's peak resident memory.

Raw results: ``results/batch.json``; table: ``README.md`` (between the ``batch`` markers).

    python benchmarks/batch.py [--dataset ml-latest-small | --synthetic ITEMS USERS]
                               [--user-encoder zero-shot|memory] [--memory-budget-mb 512] [--cache-dir DIR]

``--synthetic`` makes a catalogue of short texts over 50 topics and users whose interest drifts between two
topics (the ranker then trains on 2,000 sampled users' cut-offs).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.data import Dataset
from recsys.datasets import load_dataset
from recsys.evaluation._harness import _git_commit
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import machine, write_block

HERE = Path(__file__).resolve().parent
START, END = "<!-- batch:start -->", "<!-- batch:end -->"


def synthetic(n_items: int, n_users: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A catalogue of ``n_items`` short texts over 50 topics and ``n_users`` users whose interest drifts from one
    topic to another halfway through their history (lengths 2 + geometric, mean about 10)."""
    rng = np.random.default_rng(seed)
    vocab = rng.integers(0, 26, (50, 40, 6))  # 50 topics x 40 words x 6 letters
    words = np.array(["".join(chr(97 + c) for c in w) for t in vocab for w in t]).reshape(50, 40)
    topic = rng.integers(0, 50, n_items)
    picks = rng.integers(0, 40, (n_items, 5))
    text = [f"{' '.join(words[t, p])} no {i}" for i, (t, p) in enumerate(zip(topic, picks, strict=True))]
    items = pl.DataFrame({"item_id": np.arange(n_items), "text": text})
    by_topic = [np.flatnonzero(topic == t) for t in range(50)]
    lengths = 2 + rng.geometric(1 / 8, n_users)
    user = np.repeat(np.arange(n_users), lengths)
    pos = np.arange(len(user)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    first, second = rng.integers(0, 50, n_users), rng.integers(0, 50, n_users)
    now = np.where(pos < np.repeat(lengths // 2, lengths), first[user], second[user])
    sizes = np.array([len(b) for b in by_topic])[now]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in by_topic])])[:-1][now]
    flat = np.concatenate(by_topic)
    item = flat[offsets + (rng.random(len(user)) * sizes).astype(np.int64)]
    events = pl.DataFrame({"user_id": user, "item_id": item, "timestamp": pos + 1_000_000})
    return events, items


def run(
    dataset: str, user_encoder: str, budget: float, cache_dir: str | None, size: tuple[int, int] | None = None
) -> dict[str, Any]:
    if size is None:
        data = load_dataset(dataset)
    else:
        dataset = f"synthetic {size[0]:,} items x {size[1]:,} users"
        data = Dataset.from_frames(*synthetic(*size), name="synthetic")
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=cache_dir, show_progress=False),
        user_encoder=user_encoder,  # type: ignore[arg-type]
        max_ranker_users=2_000 if size is not None else 10_000,
        show_progress=False,
    )
    started = time.perf_counter()
    model = Recommender(config).fit(data.interactions, data.items)
    fit_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="recsys-batch-bench-") as tmp:
        model_dir, out = model.save(Path(tmp) / "model"), Path(tmp) / "recs"
        command = [sys.executable, "-m", "recsys.cli", "recommend", "--model", str(model_dir), "--out", str(out)]
        command += ["--memory-budget-mb", str(budget)]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
        success = json.loads((out / "_SUCCESS").read_text())
        recs = pl.read_parquet(out / "part-*.parquet")
    n_users = recs["user_id"].n_unique()
    return {
        "dataset": dataset,
        "user_encoder": user_encoder,
        "users": n_users,
        "items": data.items.height,
        "events": data.interactions.height,
        "rows": recs.height,
        "shards": len(success["shards"]),
        "memory_budget_mb": budget,
        "fit_seconds": fit_seconds,
        "batch_seconds": seconds,
        "users_per_second": n_users / seconds,
        "peak_rss_mib": peak_mib,
    }


def render(payload: dict[str, Any]) -> str:
    lines = [
        START,
        "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores. Each row: its command and commit.",
        "",
        "| dataset | user encoder | users | items | shards | batch s (load included) | users/s | peak RSS MiB | fit s "
        "| command | commit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in payload["results"]:
        lines.append(
            f"| {r['dataset']} | {r['user_encoder']} | {r['users']:,} | {r['items']:,} | {r['shards']} | "
            f"{r['batch_seconds']:.1f} | {r['users_per_second']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['fit_seconds']:.0f} | `{r['command']}` | `{r['commit']}` |"
        )
    lines += ["", "(fit s: fitting on every event before saving; not part of the batch time.)", "", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--user-encoder", default="zero-shot", choices=["zero-shot", "memory"])
    parser.add_argument("--memory-budget-mb", type=float, default=512.0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--synthetic", nargs=2, type=int, metavar=("ITEMS", "USERS"), default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    size = tuple(args.synthetic) if args.synthetic else None
    result = run(args.dataset, args.user_encoder, args.memory_budget_mb, args.cache_dir, size)  # type: ignore[arg-type]
    command = ("python benchmarks/batch.py " + " ".join(sys.argv[1:])).strip()
    result |= {"command": command, "commit": _git_commit(str(HERE.parent))}
    path = HERE / "results" / "batch.json"
    path.parent.mkdir(exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    kept = [
        r for r in old.get("results", []) if (r["dataset"], r["user_encoder"]) != (result["dataset"], args.user_encoder)
    ]
    payload = {"machine": machine(), "results": [*kept, result]}
    path.write_text(json.dumps(payload, indent=2))
    write_block("Batch job throughput", START, END, render(payload))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
