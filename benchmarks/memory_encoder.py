"""Memory encoder benchmark: the learned encoder alone next to the baselines, ablations, history-length buckets.

For each dataset (Scientific on its published split, ml-100k and ml-latest-small leave-one-out; history items
excluded; full catalogue) it fits the baselines and the memory encoder in the same harness, then evaluates the
same fitted encoder reading only each user's last 50 events. On Scientific it also trains the encoder at 64
and 384 dimensions. Raw results: ``results/memory_encoder.json``; tables: ``README.md``.

    python benchmarks/memory_encoder.py [--datasets ...] [--dims 64 384]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from recsys.datasets import load_dataset
from recsys.evaluation import EvalConfig, EvalResult, evaluate_many, length_table, results_table
from recsys.models.memory_encoder import MemoryEncoderConfig
from recsys.models.memory_net import MemoryNetConfig
from recsys.models.memory_recommender import MemoryRecommender, MemoryRecommenderConfig
from recsys.models.text_encoder import TextEncoderConfig
from recsys.zoo import make_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import Prefitted, machine, write_block

HERE = Path(__file__).resolve().parent
RUNS = {"amazon-scientific-unisrec": "published", "ml-100k": "loo", "ml-latest-small": "loo"}
START, END = "<!-- memory-encoder:start -->", "<!-- memory-encoder:end -->"
BUCKETS = (20, 50, 200)


def memory(text: TextEncoderConfig, dim: int = 128) -> MemoryRecommender:
    net = MemoryNetConfig(dim=dim, n_heads=4 if dim <= 128 else 6)
    return MemoryRecommender(MemoryRecommenderConfig(text=text, encoder=MemoryEncoderConfig(net=net)))


def run_dataset(name: str, data_dir: str | None, text: TextEncoderConfig, dims: list[int]) -> list[EvalResult]:
    dataset = load_dataset(name, data_dir=data_dir)
    config = EvalConfig(split=RUNS[name], length_buckets=BUCKETS)  # type: ignore[arg-type]
    models: dict[str, Any] = {m: make_model(m, text) for m in ("popularity", "transitions", "zero-shot-text")}
    models["memory"] = memory(text)
    results = evaluate_many(models, dataset, config)
    fitted = models["memory"]
    results += evaluate_many({"memory, last 50 events": Prefitted(fitted.with_max_events(50))}, dataset, config)
    for r in results:
        if r.model.startswith("memory"):
            r.protocol["train_seconds"] = fitted.encoder_.train_seconds_
            r.protocol["epochs"] = fitted.encoder_.epochs_
    if name == "amazon-scientific-unisrec":
        results += evaluate_many({f"memory, dim {d}": memory(text, d) for d in dims}, dataset, config)
    return results


def render(results: list[EvalResult], info: dict[str, Any], command: str, seconds: float) -> str:
    lines = [
        START,
        "",
        f"Command: `{command}` ({seconds / 60:.0f} min in all). Commit `{results[0].commit}`.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}.",
        "",
    ]
    by_dataset: dict[str, list[EvalResult]] = {}
    for r in results:
        by_dataset.setdefault(r.dataset, []).append(r)
    for dataset, group in by_dataset.items():
        lines += [
            f"### {dataset}",
            "",
            results_table(group),
            "",
            "NDCG@10 by history length (events before the test target):",
            "",
            length_table(group),
            "",
        ]
        memory_rows = [r for r in group if r.model == "memory"]
        if memory_rows:
            r = memory_rows[0]
            lines += [
                f"Memory encoder training: {r.protocol.get('train_seconds', 0):.0f} s, "
                f"{r.protocol.get('epochs')} epochs (early stopping on validation NDCG@10).",
                "",
            ]
    return "\n".join([*lines, END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--datasets", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--dims", nargs="*", type=int, default=[64, 384])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    text = TextEncoderConfig(cache_dir=args.cache_dir, show_progress=False)
    started = time.perf_counter()
    results = [r for name in args.datasets for r in run_dataset(name, args.data_dir, text, args.dims)]
    seconds = time.perf_counter() - started
    info = machine()
    command = ("python benchmarks/memory_encoder.py " + " ".join(sys.argv[1:])).strip()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memory_encoder.json").write_text(
        json.dumps(
            {"machine": info, "command": command, "seconds": seconds, "results": [r.to_dict() for r in results]},
            indent=2,
            default=str,
        )
    )
    write_block("Memory encoder: quality", START, END, render(results, info, command, seconds))
    print(results_table(results))


if __name__ == "__main__":
    main()
