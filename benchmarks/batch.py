"""Batch-job throughput: users per second of ``recsys recommend --out DIR`` on a saved model.

The pipeline is fitted on every event of the dataset and saved; then the batch job runs as a user would run it,
in a child process (``python -m recsys.cli recommend --model M --out DIR``), over every user. Reported: the
child's wall time (model load included), users per second, shards, and the child's peak resident memory.

Raw results: ``results/batch.json``; table: ``README.md`` (between the ``batch`` markers).

    python benchmarks/batch.py [--dataset ml-latest-small] [--user-encoder zero-shot|memory]
                               [--memory-budget-mb 512] [--cache-dir DIR]
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

import polars as pl

from recsys.datasets import load_dataset
from recsys.evaluation._harness import _git_commit
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import machine

HERE = Path(__file__).resolve().parent
START, END = "<!-- batch:start -->", "<!-- batch:end -->"


def run(dataset: str, user_encoder: str, budget: float, cache_dir: str | None) -> dict[str, Any]:
    data = load_dataset(dataset)
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=cache_dir, show_progress=False),
        user_encoder=user_encoder,  # type: ignore[arg-type]
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


def render(result: dict[str, Any], info: dict[str, Any], command: str, commit: str) -> str:
    r = result
    return "\n".join(
        [
            START,
            "",
            f"Command: `{command}`. Commit `{commit}`. Machine: {info['cpu']}, {info['cores']} cores.",
            "",
            "| dataset | user encoder | users | items | shards | batch s (load included) | users/s | peak RSS MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            f"| {r['dataset']} | {r['user_encoder']} | {r['users']:,} | {r['items']:,} | {r['shards']} | "
            f"{r['batch_seconds']:.1f} | {r['users_per_second']:.0f} | {r['peak_rss_mib']:.0f} |",
            "",
            f"(Fit on every event before saving: {r['fit_seconds']:.0f} s; not part of the batch time.)",
            "",
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--user-encoder", default="zero-shot", choices=["zero-shot", "memory"])
    parser.add_argument("--memory-budget-mb", type=float, default=512.0)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    result = run(args.dataset, args.user_encoder, args.memory_budget_mb, args.cache_dir)
    info, commit = machine(), _git_commit(str(HERE.parent))
    command = ("python benchmarks/batch.py " + " ".join(sys.argv[1:])).strip()
    (HERE / "results").mkdir(exist_ok=True)
    payload = {"machine": info, "command": command, "commit": commit, "result": result}
    (HERE / "results" / "batch.json").write_text(json.dumps(payload, indent=2))
    readme = HERE / "README.md"
    text = readme.read_text()
    if START not in text:
        text += f"\n## Batch job throughput\n\n{START}\n{END}\n"
    text = text[: text.index(START)] + render(result, info, command, commit) + text[text.index(END) + len(END) :]
    readme.write_text(text)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
