"""Ranking-stage benchmark: the full pipeline next to the encoder alone and the baselines, candidate recall per
source, feature-group ablations, feature importance and one example explanation.

For each dataset (Scientific on its published split, ml-100k and ml-latest-small leave-one-out; history items
excluded; full catalogue) the harness fits the baselines, the memory encoder alone (``memory``) and the full
pipeline with the memory encoder (``pipeline-memory``). Then, on the same fitted pipeline:

- candidate recall: the share of test targets that each source proposes (FAISS over the encoder's vectors,
  transitions, popularity) and that the merged set holds: the ceiling of the ranker;
- ablations: the ranker retrained without one feature group at a time (same encoder, same candidates);
- the ranker's feature importance (gain) and, on ml-latest-small, an explanation of one user's top 3.

Raw results: ``results/ranking.json``; tables: ``README.md``.

    python benchmarks/ranking.py [--datasets ...] [--no-ablation | --ablate DATASET ...]
                                 [--encoder-from results/memory_encoder.json]

``--encoder-from`` takes the encoder-alone rows from the memory-encoder benchmark's results, or from an earlier
run of this benchmark (``results/ranking.json``; same harness, same splits, its commit shown in the table), instead
of training that encoder again. Datasets not run keep their earlier results in ``results/ranking.json`` and the
README (each dataset shows its own command and commit); a dataset run without ablation keeps its earlier
ablation, labelled with that run's commit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from recsys.datasets import load_dataset
from recsys.evaluation import EvalConfig, EvalResult, evaluate_many, make_split, results_table
from recsys.features.ranking import FeatureConfig
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender
from recsys.schema import ITEM_ID, USER_ID
from recsys.zoo import make_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import Prefitted, machine, write_block

HERE = Path(__file__).resolve().parent
RUNS = {"amazon-scientific-unisrec": "published", "ml-100k": "loo", "ml-latest-small": "loo"}
START, END = "<!-- ranking:start -->", "<!-- ranking:end -->"
BASELINES = ("popularity", "transitions", "zero-shot-text")
SOURCES = {
    "retrieval_rank": "encoder + FAISS",
    "transition_rank": "transitions",
    "popularity_rank": "popularity",
    "cooc_rank": "co-occurrence",
    "ease_rank": "EASE",
    "similar_rank": "similar text",
    "lexical_rank": "similar words",
}


def candidate_recall(model: Recommender, dataset: Any, split_kind: str) -> dict[str, Any]:
    """Share of test targets proposed by each source and by the merged set (history items excluded)."""
    split = make_split(dataset, split_kind)  # type: ignore[arg-type]
    users = split.test[USER_ID].unique().sort()
    cands = model.candidates(users, history=split.history_for_test())
    hits = split.test.select(USER_ID, ITEM_ID).join(cands, on=[USER_ID, ITEM_ID], how="left")
    cfg = model.config
    sizes = {
        "retrieval_rank": cfg.n_candidates,
        "transition_rank": cfg.n_transition_candidates,
        "popularity_rank": cfg.n_popularity_candidates,
        "cooc_rank": cfg.n_cooccurrence_candidates,
        "ease_rank": cfg.n_ease_candidates,
        "similar_rank": cfg.n_similar_candidates,
        "lexical_rank": cfg.n_lexical_candidates,
    }
    out: dict[str, Any] = {"n_targets": hits.height, "mean_candidates": cands.height / max(len(users), 1)}
    for column, label in SOURCES.items():
        if column not in hits.columns:  # a source that is off
            continue
        out[f"{label} (top {sizes[column]})"] = float((hits[column] <= sizes[column]).fill_null(False).mean())  # type: ignore[arg-type]
    out["merged"] = float(hits["retrieval_score"].is_not_null().mean())  # type: ignore[arg-type]
    return out


def encoder_rows(path: Path | None, dataset: str) -> list[EvalResult]:
    """The ``memory`` rows of ``dataset`` from a memory-encoder benchmark JSON (empty when no path)."""
    if path is None:
        return []
    payload = json.loads(path.read_text())
    if "runs" in payload:  # this benchmark's own results: the encoder-alone rows of an earlier run
        payload = {"results": payload["runs"].get(dataset, {}).get("results", [])}
    rows = [EvalResult.from_dict(r) for r in payload["results"]]
    return [r for r in rows if r.dataset == dataset and r.model == "memory"]


def run_dataset(
    name: str, data_dir: str | None, text: TextEncoderConfig, ablation: bool, encoder_from: Path | None
) -> dict[str, Any]:
    dataset = load_dataset(name, data_dir=data_dir)
    config = EvalConfig(split=RUNS[name])  # type: ignore[arg-type]
    results = encoder_rows(encoder_from, name)
    names = (*BASELINES, *([] if results else ["memory"]), "pipeline-memory")
    models: dict[str, Any] = {m: make_model(m, text) for m in names}
    started = {}
    for label, model in models.items():
        started[label] = time.perf_counter()
        results += evaluate_many({label: model}, dataset, config)
        results[-1].protocol["total_seconds"] = time.perf_counter() - started[label]
    pipeline: Recommender = models["pipeline-memory"]
    out: dict[str, Any] = {
        "results": results,
        "candidates": candidate_recall(pipeline, dataset, RUNS[name]),
        "importance": pipeline.feature_importance().head(12).to_dicts(),
        "ablation": [],
    }
    if ablation:
        groups = pipeline.features_.groups_of()  # type: ignore[union-attr]
        for group in groups:
            if group in ("interest",):
                continue  # the interest-match score is the pipeline's reason to exist
            kept = tuple(g for g in pipeline.config.features.groups if g != group)
            try:
                twin = pipeline.with_features(FeatureConfig(groups=kept))
            except Exception as err:  # e.g. transitions are also a candidate source
                logging.warning("ablation without %s skipped: %s", group, err)
                continue
            r = evaluate_many({f"pipeline-memory without {group}": Prefitted(twin)}, dataset, config)[0]
            out["ablation"].append(
                {"without": group, "ndcg@10": r.metrics["ndcg@10"], "recall@10": r.metrics["recall@10"]}
            )
    if name in ("ml-latest-small", "ml-100k"):  # movie titles read well
        out["explanation"] = explanation(pipeline, dataset)
    return out


def explanation(model: Recommender, dataset: Any) -> list[dict[str, Any]]:
    """The top 3 of one user with a mid-length history, explained (history = every event of the dataset)."""
    lengths = dataset.interactions.group_by(USER_ID).len().sort(USER_ID)
    user = lengths.filter(pl.col("len").is_between(40, 60))[USER_ID][0]
    recs = model.recommend([user], k=3, history=dataset.interactions, explain=True)
    titles = dataset.items.select(ITEM_ID, "text")
    recs = recs.join(titles, on=ITEM_ID, how="left", maintain_order="left")
    return [
        {"user": user, "rank": r["rank"], "item": r["text"][:70], "because": r["because"], "reasons": r["reasons"]}
        for r in recs.iter_rows(named=True)
    ]


def _commit_of(run: dict[str, Any], payload: dict[str, Any]) -> str:
    """The commit of an earlier run (its pipeline row's), for results written before runs kept their own."""
    rows = run.get("results", [])
    return str(rows[-1]["commit"]) if rows else "unknown"


def render(runs: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        START,
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}. Each dataset names "
        "its command and commit.",
        "",
    ]
    for dataset, run in runs.items():
        results: list[EvalResult] = run["results"]
        minutes = f" ({run['seconds'] / 60:.0f} min for the whole command)" if run.get("seconds") else ""
        lines += [f"### {dataset}", "", f"Command: `{run.get('command')}`{minutes}. Commit `{run.get('commit')}`."]
        lines += ["", results_table(results), ""]
        best_base = max((r for r in results if r.model in BASELINES), key=lambda r: r.metrics["ndcg@10"])
        enc = next(r for r in results if r.model == "memory")
        pipe = next(r for r in results if r.model == "pipeline-memory")
        top = max(best_base.metrics["ndcg@10"], enc.metrics["ndcg@10"])
        lines += [
            f"Full pipeline NDCG@10 {pipe.metrics['ndcg@10']:.4f} vs best of encoder alone and baselines "
            f"{top:.4f}: {100 * (pipe.metrics['ndcg@10'] / top - 1):+.1f}%.",
            "",
            "Candidate recall on the test targets (the ranker's ceiling):",
            "",
            "| source | recall |",
            "|---|---|",
        ]
        cands = run["candidates"]
        lines += [f"| {k} | {v:.4f} |" for k, v in cands.items() if k not in ("n_targets", "mean_candidates")]
        lines += ["", f"({cands['mean_candidates']:.0f} candidates per user on average.)", ""]
        if run["ablation"]:
            source = f", from commit `{run['ablation_commit']}`" if run.get("ablation_commit") else ""
            base = run.get("ablation_base") or pipe.metrics
            lines += [
                f"Ablation (ranker retrained without one feature group{source}):",
                "",
                "| without | NDCG@10 | Recall@10 |",
            ]
            lines += [
                "|---|---|---|",
                f"| (nothing) | {base['ndcg@10']:.4f} | {base['recall@10']:.4f} |",
            ]
            lines += [f"| {a['without']} | {a['ndcg@10']:.4f} | {a['recall@10']:.4f} |" for a in run["ablation"]]
            lines += [""]
        lines += ["Top features by gain:", "", "| feature | group | gain share |", "|---|---|---|"]
        lines += [f"| {f['feature']} | {f['group']} | {f['gain_share']:.3f} |" for f in run["importance"][:8]]
        lines += [""]
        if "explanation" in run:
            lines += [f"Example explanation (user {run['explanation'][0]['user']}):", ""]
            for e in run["explanation"]:
                lines += [f"{e['rank']}. **{e['item']}**: because you had {e['because']}; it {e['reasons']}."]
            lines += [""]
    return "\n".join([*lines, END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--datasets", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--ablate", nargs="*", default=None, help="datasets to ablate (default: all that run)")
    parser.add_argument("--encoder-from", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    text = TextEncoderConfig(cache_dir=args.cache_dir, show_progress=False)
    started = time.perf_counter()
    runs = {
        name: run_dataset(
            name,
            args.data_dir,
            text,
            not args.no_ablation and (args.ablate is None or name in args.ablate),
            args.encoder_from,
        )
        for name in args.datasets
    }
    seconds = time.perf_counter() - started
    info = machine()
    command = ("python benchmarks/ranking.py " + " ".join(sys.argv[1:])).strip()
    path = HERE / "results" / "ranking.json"
    old = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    merged: dict[str, Any] = {}
    for name in RUNS:
        if name in runs:
            run = {**runs[name], "results": [r.to_dict() for r in runs[name]["results"]]}
            run |= {"command": command, "seconds": seconds, "commit": runs[name]["results"][-1].commit}
            previous = old["runs"].get(name)
            if not run["ablation"] and previous and previous.get("ablation"):
                run["ablation"] = previous["ablation"]
                run["ablation_commit"] = previous.get("ablation_commit") or _commit_of(previous, old)
                base = previous.get("ablation_base") or previous["results"][-1]["metrics"]
                run["ablation_base"] = {m: base[m] for m in ("ndcg@10", "recall@10")}
            merged[name] = run
        elif name in old["runs"]:
            merged[name] = {"command": old.get("command"), "seconds": old.get("seconds"), **old["runs"][name]}
            merged[name].setdefault("commit", _commit_of(old["runs"][name], old))
    payload = {"machine": info, "runs": merged}
    (HERE / "results").mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    shown = {k: {**v, "results": [EvalResult.from_dict(r) for r in v["results"]]} for k, v in merged.items()}
    heading = "Ranking stage: full pipeline, candidates, ablations, explanations"
    write_block(heading, START, END, render(shown, info))
    for run in runs.values():
        print(results_table(run["results"]))


if __name__ == "__main__":
    main()
