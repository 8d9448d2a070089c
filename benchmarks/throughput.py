"""End to end: users/s of our batch job against RecBole's ``full_sort_topk``, peak memory, 1 and 2 threads.

Ours: ``recsys recommend --model DIR --out DIR`` (a fresh process: start-up, model load, each user's vector from
the memory state the encoder built from the user's whole history at fit time (``recsys update`` keeps it current),
FAISS, features, the LightGBM ranker, Parquet shards) on the model the
quality suite fitted and saved (``benchmarks/.models/<dataset>-<profile>``, its first seed), for every fitted
user; those are the test users, and RecBole's ``full_sort_topk`` is timed on the same users by the quality suite
(``benchmarks/results/quality.json``, rows ``RecBole ...``, masked protocol). Each batch run is timed with
1 and 2 threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``); the peak RSS is the batch process's own.

RecBole is also timed in this same run: an untrained SASRec's ``full_sort_topk`` (top 50, batches of 256 users,
history masked) over the dataset's catalogue size for as many users (``recbole_peer.time_full_sort``; timing does not
depend on training), so the ratio is not skewed by a different machine load in the quality suite's run.

A sweep shows what serving speed costs in quality: the same saved model recommends with smaller candidate quotas
(FAISS, transitions, popularity per user; the ranker unchanged), each point timed from stored states and scored on
the test targets (the model was fitted on train + valid, so its stored states are exactly the test histories).
Plot: ``results/throughput.png``.

The two-stage ranker (``--cascade-top M``, default 50; 0 skips it) is timed beside the plain ensemble on the same
model in the same run: one more stored-states point at the model's own quotas with its quality, and the batch job
with ``recsys recommend --cascade-top M`` at 2 threads.

The quality suite's in-memory timing passes each test user's history inline, so the memory encoder reads every
whole history again. A fitted user can also be served from the memory state stored at fit time; that path is
timed here too (the saved model loaded in this process, every fitted user, top 50, history masked). That path is
also split by stage (:func:`stage_split`): candidates (FAISS, transitions, popularity, the interest score), feature
blocks, the LightGBM ranker, the rest; with the candidate rows scored per user and the ranker's trees, which
together set the ranker's cost.

    python benchmarks/throughput.py --profile fast|full [--repeats 2] [--datasets ml-100k ...] [--cascade-top 50]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from recsys.evaluation._harness import _git_commit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import machine, run_child, write_block

OURS = "ours (pipeline-memory)"  # the quality suite's row of the full pipeline (quality.OURS)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "throughput.json"
START, END = "<!-- throughput:start -->", "<!-- throughput:end -->"


def batch_run(model_dir: Path, threads: int, cascade_top: int | None = None) -> dict[str, Any]:
    """One batch job in a child process with ``threads`` threads (``cascade_top``: ``--cascade-top``): wall seconds,
    users, peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="recsys-throughput-") as tmp:
        out = Path(tmp) / "recs"
        command = [sys.executable, "-m", "recsys.cli", "recommend", "--model", str(model_dir), "--out", str(out)]
        command += ["--cascade-top", str(cascade_top)] if cascade_top is not None else []
        seconds, peak_mib = run_child(command, env=env, quiet=True)
        users = pl.scan_parquet(out / "part-*.parquet").select(pl.col("user_id").n_unique()).collect().item()
    return {
        "threads": threads,
        "seconds": seconds,
        "users": users,
        "users_per_second": users / seconds,
        "peak_rss_mib": peak_mib,
    }


QUOTAS = ((20, 10, 2), (50, 25, 5), (100, 50, 10), (200, 100, 20))
"""Candidate quotas of the sweep, (FAISS, transitions, popularity) per user; the last is the library default."""


def _timed_recommend(model: Any, users: pl.Series, repeats: int) -> tuple[pl.DataFrame, float]:
    """Top 50 for ``users`` after a warm-up call: the recommendations and the best of ``repeats`` wall times."""
    model.recommend(users.head(64), k=50)
    seconds, recs = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        recs = model.recommend(users, k=50)
        seconds.append(time.perf_counter() - start)
    return recs, min(seconds)  # type: ignore[return-value]


@contextlib.contextmanager
def stage_timer(model: Any) -> Iterator[dict[str, float]]:
    """Seconds spent in each stage of ``model.recommend`` while the block runs, and the rows the ranker scored.

    It wraps three methods on this model's own objects (their classes are untouched, and the wrappers are removed on
    exit): ``Recommender._candidates`` (FAISS, transitions, popularity, the interest score), the feature blocks'
    ``transform`` and ``Recommender._serving_scores`` (the ranker: the plain ensemble's ``score`` or the two-stage
    ``score_top``; rows counted as candidate rows either way). ``recommend`` itself runs as shipped."""
    totals = {"candidates": 0.0, "features": 0.0, "ranker": 0.0, "rows": 0.0}
    targets = {"candidates": (model, "_candidates"), "features": (model.features_, "transform")}
    targets["ranker"] = (model, "_serving_scores")

    def timed(stage: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = method(*args, **kwargs)
            totals[stage] += time.perf_counter() - start
            if stage == "ranker":
                totals["rows"] += len(out)
            return out

        return wrapper

    for stage, (owner, name) in targets.items():
        setattr(owner, name, timed(stage, getattr(owner, name)))
    try:
        yield totals
    finally:
        for owner, name in targets.values():
            delattr(owner, name)  # the instance attribute goes; the class's method shows again


def stage_split(model: Any, users: pl.Series, repeats: int) -> dict[str, Any]:
    """The stored-states ``recommend`` (top 50) split by stage, from the fastest of ``repeats`` timed runs:
    seconds per stage (``other``: user lookup, stored states, top-k, ids), candidate rows per user and the
    ranker's trees (its cost is about rows x trees). One chunk at a time (``serve_workers=1``): chunks served side
    by side would overlap their stages, and the stage clocks would add up to more than the call."""
    serving = model.config
    model.config = dataclasses.replace(serving, serve_workers=1)
    try:
        return _stage_split(model, users, repeats)
    finally:
        model.config = serving


def _stage_split(model: Any, users: pl.Series, repeats: int) -> dict[str, Any]:
    model.recommend(users.head(64), k=50)  # warm-up
    runs = []
    for _ in range(max(repeats, 1)):
        with stage_timer(model) as totals:
            start = time.perf_counter()
            model.recommend(users, k=50)
            totals["total"] = time.perf_counter() - start
        runs.append(dict(totals))
    best = min(runs, key=lambda r: r["total"])
    rows = best.pop("rows")
    best["other"] = best["total"] - best["candidates"] - best["features"] - best["ranker"]
    trees = int(model.ranker_.n_trees)
    return {
        "seconds": best,
        "users": users.len(),
        "rows_per_user": rows / users.len(),
        "trees": trees,
        "ranker_ns_per_tree_row": 1e9 * best["ranker"] / (rows * trees) if rows and trees else None,
        **ranker_predictor(model),
    }


def _rankers(model: Any) -> list[Any]:
    """The model's LightGBM rankers: an ensemble's members, or its one ranker."""
    return list(getattr(model.ranker_, "members_", [model.ranker_]))


def steady_state(model: Any) -> Any:
    """``model`` with its rankers compiled at the first call (``predictor="compiled"`` where lleaves is installed),
    so that the warm-up call compiles them and every timed point scores as a long-running process does: the
    default ``"auto"`` compiles only after ``COMPILE_MIN_ROWS`` rows, which would leave the first sweep points on
    LightGBM. The batch job keeps the saved ``"auto"``, compile included in its time."""
    from recsys.models.compiled import compiled_available

    if compiled_available():
        for member in _rankers(model):
            member.config = dataclasses.replace(member.config, predictor="compiled")
    return model


def ranker_predictor(model: Any) -> dict[str, Any]:
    """What scored the candidates (``"compiled"``: the trees compiled by lleaves, ``recsys.models.compiled``;
    ``"lightgbm"``) and the seconds this process spent compiling them (once, in the first large call; the
    best-of-repeats timings leave it out, the batch job's fresh processes pay it)."""
    forests = [m._forest for m in _rankers(model)]
    if all(f is not None for f in forests):
        return {"ranker_predictor": "compiled", "compile_seconds": sum(f.compile_seconds for f in forests)}
    return {"ranker_predictor": "lightgbm", "compile_seconds": None}


def candidate_sweep(
    model_dir: Path, dataset: str, repeats: int, data_dir: str | None = None, cascade_top: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """users/s and test NDCG@10 / Recall@10 of the saved model at each of :data:`QUOTAS` and at its own quotas
    (``"own": True``; that point is also the suite's stored-states speed), then the :func:`stage_split` at its own
    quotas. The saved model is loaded in this process and every fitted user is served from the memory state stored
    at fit time (no history is read again). These points serve with the plain ensemble (every fold ranker scores
    every candidate), whatever ``cascade_top`` the model was saved with; with ``cascade_top``, every quota is
    served once more by the two-stage ranker (``"cascade_top"``: the setting; the plain points hold None), so the
    two knobs' joint frontier shows."""
    from quality import SPLITS

    from recsys.datasets import load_dataset
    from recsys.evaluation import make_split, ranking_metrics
    from recsys.pipeline import Recommender
    from recsys.schema import USER_ID

    model = steady_state(Recommender.load(model_dir))
    data = load_dataset(dataset, data_dir=data_dir)
    test = make_split(data, SPLITS[dataset]).test  # type: ignore[arg-type]
    users = model.interactions_[USER_ID].unique(maintain_order=True)  # type: ignore[index]
    default = model.config
    own = (default.n_candidates, default.n_transition_candidates, default.n_popularity_candidates)
    settings: list[tuple[tuple[int, int, int], int | None]] = [(q, None) for q in sorted(set(QUOTAS) | {own})]
    settings += [(q, cascade_top) for q, _ in settings] if cascade_top is not None else []
    points = []
    for (faiss, transitions, popularity), top in settings:
        model.config = dataclasses.replace(
            default,
            n_candidates=faiss,
            n_transition_candidates=transitions,
            n_popularity_candidates=popularity,
            cascade_top=top,
        )
        recs, seconds = _timed_recommend(model, users, repeats)
        metrics = ranking_metrics(recs, test, data.items.height, (10,))
        points.append(
            {
                "quotas": [faiss, transitions, popularity],
                "own": (faiss, transitions, popularity) == own and top is None,
                "cascade_top": top,
                "users_per_second": users.len() / seconds,
                "ndcg@10": metrics["ndcg@10"],
                "recall@10": metrics["recall@10"],
            }
        )
    model.config = dataclasses.replace(default, cascade_top=None)
    split = stage_split(model, users, repeats)
    model.config = default
    return points, split


def recbole_same_run(model_dir: Path, users: int) -> dict[str, Any]:
    """An untrained RecBole SASRec's ``full_sort_topk`` over the saved model's catalogue size, for ``users`` users."""
    from recbole_peer import time_full_sort

    n_items = pl.scan_parquet(model_dir / "items.parquet").select(pl.len()).collect().item()
    timing = time_full_sort(n_items, n_users=users, batch_users=256)
    return timing | {"model": "RecBole SASRec (untrained)", "users_per_second": timing["users_per_s_masked"]}


def in_memory_speeds(dataset: str, profile: str, path: Path | None = None) -> dict[str, dict[str, Any]]:
    """``recommend`` users/s with the model in memory, from the quality suite's rows (``path``, default
    ``results/quality.json``; masked): RecBole's ``full_sort_topk`` and ours (the full pipeline's row, not the
    encoder alone), timed the same way on the same test users. Each is its lowest seed's row, the seed whose model
    the quality suite saves, whatever order reruns left the rows in."""
    path = path if path is not None else HERE / "results" / "quality.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r.get("seed") or 0):
        if r["dataset"] != dataset or r.get("profile") != profile or r["protocol"] != "masked":
            continue
        who = "ours" if r["model"] == OURS else "recbole" if r["model"].startswith("RecBole") else None
        if who and who not in out:
            out[who] = {
                "model": r["model"],
                "users_per_second": r["users_per_second"],
                "users": r["users"],
                "ndcg@10": r["metrics"]["ndcg@10"],
                "seed": r.get("seed"),
            }
    return out


def run(
    profile: str,
    repeats: int,
    data_dir: str | None = None,
    datasets: list[str] | None = None,
    command: str = "",
    commit: str = "",
    cascade_top: int | None = None,
) -> list[dict[str, Any]]:
    """One row per saved model of ``profile`` (``datasets``: only these; None: every saved model), each marked with
    the ``command`` and ``commit`` that measured it. With ``cascade_top``, the two-stage ranker is timed too: the
    batch job with ``--cascade-top`` (2 threads) and one more stored-states point (:func:`candidate_sweep`)."""
    rows = []
    for model_dir in sorted((HERE / ".models").glob(f"*-{profile}")):
        dataset = model_dir.name.removesuffix(f"-{profile}")
        if datasets is not None and dataset not in datasets:
            continue
        runs = {t: [batch_run(model_dir, t, cascade_top=0) for _ in range(repeats)] for t in (1, 2)}  # plain
        best = {t: min(r, key=lambda x: x["seconds"]) for t, r in runs.items()}
        speeds = in_memory_speeds(dataset, profile)
        peer, mine = speeds.get("recbole"), speeds.get("ours")
        before = recbole_same_run(model_dir, best[2]["users"])
        sweep, stages = candidate_sweep(model_dir, dataset, repeats, data_dir, cascade_top)
        after = recbole_same_run(model_dir, best[2]["users"])  # RecBole's rate moves by tens of percent in minutes
        same_run = max(before, after, key=lambda t: t["users_per_second"])  # its faster run: the stricter bar
        same_run = same_run | {"runs_users_per_second": [before["users_per_second"], after["users_per_second"]]}
        (own,) = [p for p in sweep if p["own"]]
        own_quotas = tuple(own["quotas"])
        speed = own["users_per_second"]
        stored = {"model": "ours, stored states", "users": best[2]["users"], "users_per_second": speed}
        cascade = None
        if cascade_top is not None:
            (point,) = [p for p in sweep if p["cascade_top"] == cascade_top and tuple(p["quotas"]) == own_quotas]
            batch = min((batch_run(model_dir, 2, cascade_top) for _ in range(repeats)), key=lambda x: x["seconds"])
            cascade = {
                "top": cascade_top,
                "stored_states": point,
                "batch": batch,
                "stored_speedup": point["users_per_second"] / speed,
                "batch_speedup": batch["users_per_second"] / best[2]["users_per_second"],
                "stored_ratio_to_recbole_same_run": point["users_per_second"] / same_run["users_per_second"],
            }
        rows.append(
            {
                "dataset": dataset,
                "profile": profile,
                "runs": runs,
                "users": best[2]["users"],
                "users_per_second": best[2]["users_per_second"],
                "thread_speedup": best[1]["seconds"] / best[2]["seconds"],
                "peak_rss_mib": max(r["peak_rss_mib"] for rs in runs.values() for r in rs),
                "recbole": peer,
                "ours_in_memory": mine,
                "ours_stored_states": stored,
                "recbole_same_run": same_run,
                "candidate_sweep": sweep,
                "cascade": cascade,
                "stages": stages,
                "commit": commit,
                "command": command,
                "stored_ratio_to_recbole_same_run": stored["users_per_second"] / same_run["users_per_second"],
                "ratio_to_recbole": best[2]["users_per_second"] / peer["users_per_second"] if peer else None,
                "in_memory_ratio_to_recbole": (
                    mine["users_per_second"] / peer["users_per_second"] if peer and mine else None
                ),
            }
        )
        print(json.dumps(rows[-1] | {"runs": "..."}), flush=True)
    return rows


def render(payload: dict[str, Any]) -> str:
    info = payload["machine"]
    runs: dict[tuple[str, str], list[str]] = {}
    for r in payload["rows"]:  # rows measured before per-row records: the payload's own command and commit
        key = (r.get("command", payload["command"]), r.get("commit", payload["commit"]))
        runs.setdefault(key, []).append(f"{r['dataset']} ({r['profile']})")
    lines = [
        START,
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores. Each row's command and commit: "
        + "; ".join(f"`{command}` at `{commit}`: {', '.join(rows)}" for (command, commit), rows in runs.items())
        + ". Batch job: ours in a fresh process (start-up and model load included), best of its run's repeats "
        "(`--repeats`, default 2); peak RSS: the batch process's own high-water mark (VmHWM). In memory (like for "
        "like): `Recommender.recommend` and RecBole's `full_sort_topk` "
        "on the same test users with the fitted model already loaded, both timed by the quality suite (history "
        "masked, top 50), same profile; ours reads each history inline. Stored states: every fitted user served "
        "from the memory state saved at fit time (model loaded here, best of the same repeats). RecBole, same run: "
        "an untrained SASRec's `full_sort_topk` over the same catalogue size and user count, timed in this run "
        "(before and after our stored-states points, the faster of the two kept; rows measured before 2026-12-07 "
        "hold one run). "
        "Both serve with the plain ensemble (every fold ranker scores every candidate; `--cascade-top 0` in rows "
        "measured after the two-stage ranker became the default), which has its own table below.",
        "",
        "| dataset | profile | users | ours: batch job users/s (2 threads) | 1 -> 2 threads | peak RSS MiB "
        "| ours: in memory | ours: stored states | RecBole: in memory | ratio, in memory | ratio, batch job "
        "| RecBole, same run | ratio, stored states / same run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        peer, mine = r["recbole"], r.get("ours_in_memory")
        ratio = r.get("in_memory_ratio_to_recbole")
        lines.append(
            f"| {r['dataset']} | {r['profile']} | {r['users']:,} | {r['users_per_second']:.0f} | "
            f"{r['thread_speedup']:.2f}x | {r['peak_rss_mib']:,.0f} | "
            + (f"{mine['users_per_second']:.0f}" if mine else "-")
            + " | "
            + (f"{r['ours_stored_states']['users_per_second']:.0f}" if r.get("ours_stored_states") else "-")
            + " | "
            + (f"{peer['users_per_second']:.0f} ({peer['model']})" if peer else "-")
            + " | "
            + (f"{ratio:.2f}x" if ratio else "-")
            + " | "
            + (f"{r['ratio_to_recbole']:.2f}x" if r.get("ratio_to_recbole") else "-")
            + " | "
            + (f"{r['recbole_same_run']['users_per_second']:.0f}" if r.get("recbole_same_run") else "-")
            + " | "
            + (f"{r['stored_ratio_to_recbole_same_run']:.2f}x" if r.get("recbole_same_run") else "-")
            + " |"
        )
    staged = [r for r in payload["rows"] if r.get("stages")]
    if staged:
        lines += [
            "",
            "Where the stored-states time goes (the same call, each stage timed inside it; other: user lookup, "
            "stored states, top-k, ids; one chunk at a time, `serve_workers=1`, so that the stages do not overlap). "
            "The ranker's cost is about candidate rows x trees:",
            "",
            "| dataset | profile | users/s | candidate rows per user | ranker trees | candidates s | features s "
            "| ranker s | other s | ranker ns per tree and row | trees scored by (compile s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in staged:
            st, sec = r["stages"], r["stages"]["seconds"]
            per = st.get("ranker_ns_per_tree_row")
            compiled = st.get("ranker_predictor") == "compiled"  # rows before c. 2026-12-07: LightGBM
            scorer = f"lleaves ({st['compile_seconds']:.1f})" if compiled else "LightGBM"
            lines.append(
                f"| {r['dataset']} | {r['profile']} | {st['users'] / sec['total']:.0f} | {st['rows_per_user']:.0f} | "
                f"{st['trees']} | {sec['candidates']:.2f} | {sec['features']:.2f} | {sec['ranker']:.2f} | "
                f"{sec['other']:.2f} | " + (f"{per:.1f}" if per else "-") + f" | {scorer} |"
            )
    cascaded = [r for r in payload["rows"] if r.get("cascade")]
    if cascaded:
        lines += [
            "",
            "The two-stage ranker (`RecommenderConfig.cascade_top`, 50 by default): the first fold ranker "
            "shortlists each user's best M "
            "candidates (at least k) and only those get the whole ensemble's score. Same saved models, same run; "
            "stored states and quality at the model's own quotas (test targets, history masked), the batch job "
            "(`recsys recommend --cascade-top M`) at 2 threads, best of the repeats:",
            "",
            "| dataset | profile | M | stored states users/s, off -> on | speed-up | NDCG@10, off -> on "
            "| Recall@10, off -> on | batch job users/s, off -> on | speed-up "
            "| ratio, stored states / RecBole same run |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in cascaded:
            c, (own,) = r["cascade"], [p for p in r["candidate_sweep"] if p["own"]]
            on = c["stored_states"]
            lines.append(
                f"| {r['dataset']} | {r['profile']} | {c['top']} | {own['users_per_second']:.0f} -> "
                f"{on['users_per_second']:.0f} | {c['stored_speedup']:.2f}x | {own['ndcg@10']:.4f} -> "
                f"{on['ndcg@10']:.4f} | {own['recall@10']:.4f} -> {on['recall@10']:.4f} | "
                f"{r['users_per_second']:.0f} -> {c['batch']['users_per_second']:.0f} | {c['batch_speedup']:.2f}x | "
                f"{c['stored_ratio_to_recbole_same_run']:.2f}x |"
            )
    for r in payload["rows"]:
        if r.get("candidate_sweep"):
            lines += _quota_table(r)
    return "\n".join([*lines, "", END])


def _quota_table(r: dict[str, Any]) -> list[str]:
    """The candidate-quota sweep of one row as a markdown table, with the two-stage columns where each quota has a
    two-stage point (rows measured before that hold only the default quotas' one, which has its own table)."""
    plain = [p for p in r["candidate_sweep"] if not p.get("cascade_top")]
    two = {tuple(p["quotas"]): p for p in r["candidate_sweep"] if p.get("cascade_top")}
    both = len(two) > 1
    same = (r.get("recbole_same_run") or {}).get("users_per_second")
    header = "| quotas (FAISS, transitions, popularity) | users/s | NDCG@10 | Recall@10 |"
    header += " users/s, two-stage | NDCG@10, two-stage | two-stage / RecBole same run |" if both else ""
    setting = f"; two-stage: `cascade_top` {next(iter(two.values()))['cascade_top']}" if both else ""
    lines = [
        "",
        f"Candidate quotas against speed and quality, {r['dataset']} ({r['profile']} model), ranker unchanged "
        f"(users/s from stored states; test targets, history masked{setting}):",
        "",
        header,
        "|---|---:|---:|---:|" + ("---:|---:|---:|" if both else ""),
    ]
    for p in plain:
        line = (
            f"| {', '.join(map(str, p['quotas']))} | {p['users_per_second']:.0f} | {p['ndcg@10']:.4f} | "
            f"{p['recall@10']:.4f} |"
        )
        t = two.get(tuple(p["quotas"]))
        if both and t is not None:
            ratio = f"{t['users_per_second'] / same:.2f}x" if same else "-"
            line += f" {t['users_per_second']:.0f} | {t['ndcg@10']:.4f} | {ratio} |"
        lines.append(line)
    return lines


def plot(payload: dict[str, Any], path: Path) -> None:
    """NDCG@10 against users/s: our candidate-quota sweep per model, RecBole SASRec (same-run speed) beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in payload["rows"] if r.get("candidate_sweep")]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for r in rows:
        sweep = [p for p in r["candidate_sweep"] if not p.get("cascade_top")]
        label = f"ours, {r['dataset']} ({r['profile']})"
        (line,) = ax.plot([p["users_per_second"] for p in sweep], [p["ndcg@10"] for p in sweep], "o-", label=label)
        two = [p for p in r["candidate_sweep"] if p.get("cascade_top")]
        if len(two) > 1:  # the same quotas with the two-stage ranker, dashed in the same colour
            ax.plot([p["users_per_second"] for p in two], [p["ndcg@10"] for p in two], "x--", color=line.get_color(),
                    label=f"{label}, two-stage")  # fmt: skip
        for p in sweep:
            ax.annotate(str(p["quotas"][0]), (p["users_per_second"], p["ndcg@10"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        same, peer = r.get("recbole_same_run"), r.get("recbole")
        if same and peer and peer.get("ndcg@10") is not None:
            ax.plot([same["users_per_second"]], [peer["ndcg@10"]], "s", label=f"{peer['model']}, {r['profile']}")
    ax.set_xscale("log")
    ax.set_xlabel("users/s (log scale; ours from stored states, RecBole timed in the same run)")
    ax.set_ylabel("NDCG@10 (test, history masked)")
    ax.set_title("Serving speed against quality (labels: FAISS candidates per user)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the lines stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("fast", "full"), default="fast")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="the folder that holds the datasets (default: ../shared/data)")
    parser.add_argument(
        "--datasets", nargs="+", default=None, help="time only these saved models (default: every one of the profile)"
    )
    parser.add_argument(
        "--cascade-top",
        type=int,
        default=50,
        help="also time the two-stage ranker with this shortlist per user (0: skip it; default 50)",
    )
    args = parser.parse_args()
    command = " ".join(["python benchmarks/throughput.py", *sys.argv[1:]])
    commit = _git_commit(str(HERE.parent))
    if args.datasets:
        missing = [d for d in args.datasets if not (HERE / ".models" / f"{d}-{args.profile}").is_dir()]
        if missing:
            parser.error(f"no saved {args.profile} model for {missing}; the quality suite saves one per dataset.")
    rows = run(args.profile, args.repeats, args.data_dir, args.datasets, command, commit, args.cascade_top or None)
    old = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    keep = [r for r in old if (r["dataset"], r["profile"]) not in {(x["dataset"], x["profile"]) for x in rows}]
    payload = {
        "command": command,
        "commit": commit,
        "machine": machine(),
        "repeats": args.repeats,
        "rows": keep + rows,
    }
    RESULTS.write_text(json.dumps(payload, indent=1))
    write_block("End to end: batch job against RecBole", START, END, render(payload))
    plot(payload, RESULTS.with_suffix(".png"))


if __name__ == "__main__":
    main()
