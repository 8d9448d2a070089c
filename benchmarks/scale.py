"""Scale: time and peak memory of generate -> fit -> batch job against size, on synthetic data up to 10^6 x 10^6.

For each size (items x users), three stages run one after another, each in its own child process and each
leaving its JSON in the size's work folder (``<work-dir>/<size>/``), so an interrupted size resumes at the stage
it stopped in (``--redo`` starts it over):

1. **encode**: generate the synthetic dataset (:func:`recsys.datasets.synthetic_dataset`: long, drifting
   histories, at most 10,000 events) and encode its item texts with MiniLM into the text cache, in chunks of
   :data:`ENCODE_CHUNK` texts (each chunk is one cache part, so an interrupted encode keeps its finished chunks;
   the encode time is the sum of the chunks that ran the encoder).
2. **fit**: generate the dataset again, fit the pipeline with the memory encoder (its text vectors come from the
   cache) and save it.
3. **batch**: the batch job as a user would run it (``python -m recsys.cli recommend --model M --out DIR``, the
   default memory budget of 512 MB), over every user. The job keeps its committed shards, so an interrupted batch
   stage resumes too; its time sums each attempt up to its last committed shard (see :func:`batch_stage`).

Each child's peak resident memory is its own high-water mark (``VmHWM``, see ``foundation.run_child``).

Raw results: ``results/scale.json`` (a size already there is skipped unless ``--redo``); table:
``README.md`` (between the ``scale`` markers); plot: ``results/scale.png``.

    python benchmarks/scale.py [--profile fast|full] [--sizes 1e4 1e5 1e6] [--redo] [--work-dir DIR]

``fast`` runs 1,000 items x 1,000 users (a smoke run of the whole path, about 2 minutes on 2 Intel Xeon cores;
2,000 x 2,000 took 176 s there, ``--sizes 2e3``); ``full`` runs 10^4, 10^5
and 10^6 (items = users). The 10^6 run needs about 3-4 h on 2 cores (encoding 10^6 item texts alone takes about
80 min at about 200 texts/s) and about 20 GiB of disk under ``--work-dir``; run it with ``setsid nohup`` and run
the same command again after an interruption.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import machine, run_child, write_block

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scale.json"
START, END = "<!-- scale:start -->", "<!-- scale:end -->"
SIZES = {
    "1e3": (1_000, 1_000),
    "2e3": (2_000, 2_000),
    "1e4": (10_000, 10_000),
    "1e5": (100_000, 100_000),
    "1e6": (1_000_000, 1_000_000),
}
PROFILES = {"fast": ["1e3"], "full": ["1e4", "1e5", "1e6"]}
ANN_FROM = 100_000  # an approximate (IVF) index from this many items
ENCODE_CHUNK = 100_000  # texts per encode call (one cache part each)
logger = logging.getLogger("scale")


def pipeline_config(n_items: int, cache_dir: str) -> Any:
    """The pipeline fitted at every size: the memory encoder (a short training, see the README block), the
    ranker on 2,000 sampled users, IVF retrieval from :data:`ANN_FROM` items (flat while IVF is unavailable)."""
    from recsys.errors import ConfigError
    from recsys.models.memory_encoder import MemoryEncoderConfig
    from recsys.models.text_encoder import TextEncoderConfig
    from recsys.pipeline import RecommenderConfig
    from recsys.retrieval import IndexConfig

    index = IndexConfig()
    if n_items >= ANN_FROM:
        try:
            index = IndexConfig(kind="ivf")  # type: ignore[arg-type]  # nlist from n_items, nprobe 32
        except ConfigError:
            logger.warning("IndexConfig(kind='ivf') is not available yet: flat index at %d items", n_items)
    memory = MemoryEncoderConfig(
        epochs=2, patience=1, refit_epochs=1, max_train_events=256, max_epoch_users=2_000, max_valid_users=2_000
    )
    return RecommenderConfig(
        text=TextEncoderConfig(cache_dir=cache_dir),
        user_encoder="memory",
        memory=memory,
        memory_crossfit=0,
        index=index,
        max_ranker_users=2_000,
    )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _dataset(n_items: int, n_users: int) -> tuple[Any, dict[str, Any]]:
    """The size's synthetic dataset (seed 0) and its generation facts."""
    from recsys.datasets import synthetic_dataset

    started = time.perf_counter()
    data = synthetic_dataset(n_items, n_users, seed=0)
    facts: dict[str, Any] = {"generate_seconds": time.perf_counter() - started, "generate_peak_mib": _peak_mib()}
    lengths = data.interactions.group_by("user_id").len()["len"].to_numpy()
    facts |= {"events": data.interactions.height, "mean_history": float(lengths.mean())}
    facts |= {"max_history": int(lengths.max()), "users_over_1000": int((lengths > 1000).sum())}
    return data, facts


def encode_child(n_items: int, n_users: int, cache_dir: Path, out: Path) -> None:
    """Generate, then encode the item texts into the cache in chunks of :data:`ENCODE_CHUNK`; after each chunk,
    write the progress so far to ``out`` (JSON: ``encode_seconds`` sums the chunks that ran the encoder, so a
    resumed run adds to an interrupted one's time; ``done`` once every text is cached)."""
    from recsys.models.text_encoder import ItemTextEncoder

    data, facts = _dataset(n_items, n_users)
    progress = json.loads(out.read_text()) if out.exists() else {"encode_seconds": 0.0, "encoded": 0, "chunks": []}
    progress |= facts
    encoder = ItemTextEncoder(pipeline_config(n_items, str(cache_dir)).text)
    texts = data.items["text"].to_list()
    for start in range(0, len(texts), ENCODE_CHUNK):
        started = time.perf_counter()
        load = os.getloadavg()[0]
        encoder.encode(texts[start : start + ENCODE_CHUNK])
        if encoder.last_encoded_:  # a chunk found whole in the cache did not run the encoder
            seconds = time.perf_counter() - started
            progress["encode_seconds"] += seconds
            progress["encoded"] += encoder.last_encoded_
            chunk = {"start": start, "texts": encoder.last_encoded_, "seconds": seconds, "load": load}
            progress["chunks"].append(chunk)
            out.write_text(json.dumps(progress))
        logger.info("encode: %d of %d texts cached", min(start + ENCODE_CHUNK, len(texts)), len(texts))
    progress["done"] = True
    out.write_text(json.dumps(progress))


def fit_child(n_items: int, n_users: int, model_dir: Path, cache_dir: Path, out: Path) -> None:
    """Generate, fit (text vectors from the cache that the encode stage filled) and save; write the timings to
    ``out`` (JSON)."""
    from recsys.pipeline import Recommender

    data, timings = _dataset(n_items, n_users)
    config = pipeline_config(n_items, str(cache_dir))
    started = time.perf_counter()
    model = Recommender(config).fit(data.interactions, data.items)
    timings["fit_seconds"] = time.perf_counter() - started
    timings["memory_encoder_seconds"] = getattr(model.user_encoder_, "train_seconds_", None)
    timings["index"] = config.index.kind
    started = time.perf_counter()
    model.save(model_dir)
    timings["save_seconds"] = time.perf_counter() - started
    out.write_text(json.dumps(timings))


def _stage(name: str, out: Path, command: list[str], done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Run ``command`` in a child unless ``out`` already holds a result that ``done`` accepts; the result with the
    child's wall time, peak RSS and the 1-minute load average at its start and end."""
    if out.exists():
        result = json.loads(out.read_text())
        if done(result):
            logger.info("%s: done before (%s)", name, out)
            return result
    load = os.getloadavg()[0]
    wall, peak = run_child(command)
    result = json.loads(out.read_text()) if out.exists() else {}
    result |= {"process_seconds": wall, "peak_rss_mib": peak, "load_average": [load, os.getloadavg()[0]]}
    out.write_text(json.dumps(result))
    return result


def settle_interrupted(attempts: list[dict[str, Any]], records: Path) -> None:
    """Give each attempt that never finished (killed with this script) ``seconds``: from its start (``at``, epoch
    seconds) to the last shard record in ``records`` written after that start (0 when none was)."""
    for attempt in attempts:
        if "finished" not in attempt:
            times = [p.stat().st_mtime for p in records.glob("*")]
            mine = [t for t in times if t >= attempt["at"]]
            attempt["seconds"] = max(mine) - attempt["at"] if mine else 0.0
            attempt["finished"] = False


def batch_stage(model_dir: Path, out: Path, record: Path) -> dict[str, Any]:
    """The batch job (``recsys recommend``) over every user, resumable across interruptions of this script: the
    job itself keeps its committed shards, and ``record`` (JSON) keeps each attempt's start, its seconds and peak
    so far (written every 10 s) and the time of its last committed shard.

    ``seconds`` sums each attempt up to its last committed shard (the work after it is lost and redone by the next
    attempt, so it is not counted; the reloading of the model by every attempt is); ``peak_rss_mib`` is the
    largest peak of any attempt; ``load_average`` is the first attempt's start and the last one's end."""
    state: dict[str, Any] = json.loads(record.read_text()) if record.exists() else {"attempts": []}
    if not state["attempts"]:
        shutil.rmtree(out, ignore_errors=True)  # a fresh job (another run's output is not resumed)
    settle_interrupted(state["attempts"], out / "_shards")
    attempt: dict[str, Any] = {"at": time.time(), "load": [os.getloadavg()[0]]}
    state["attempts"].append(attempt)

    def save(seconds: float, peak: float | None) -> None:
        attempt["seconds_so_far"], attempt["peak_rss_mib"] = seconds, peak
        record.write_text(json.dumps(state))

    save(0.0, None)
    command = [sys.executable, "-m", "recsys.cli", "recommend", "--model", str(model_dir), "--out", str(out)]
    seconds, peak = run_child(command, progress=save)
    attempt |= {"seconds": seconds, "peak_rss_mib": peak, "finished": True}
    attempt["load"].append(os.getloadavg()[0])
    attempts = state["attempts"]
    state["seconds"] = sum(a["seconds"] for a in attempts)
    state["peak_rss_mib"] = max(a["peak_rss_mib"] or 0.0 for a in attempts)
    state["load_average"] = [attempts[0]["load"][0], attempt["load"][-1]]
    record.write_text(json.dumps(state))
    return state


def run_size(name: str, work: Path, redo: bool = False) -> dict[str, Any]:
    """The size's three stages (each skipped when its JSON in the size's folder says it finished), then its
    result row; the saved model and the recommendations are removed once the row exists (the stage JSONs stay)."""
    n_items, n_users = SIZES[name]
    folder = work / name
    if redo:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    model_dir, out, cache = folder / "model", folder / "recs", str(work / "text-cache")
    me = [sys.executable, str(Path(__file__).resolve())]
    logger.info("%s: generate + encode %d item texts", name, n_items)
    command = [*me, "--encode-child", str(n_items), str(n_users), cache, str(folder / "encode.json")]
    encode = _stage("encode", folder / "encode.json", command, done=lambda r: r.get("done", False))
    logger.info("%s: generate + fit + save (%d items x %d users)", name, n_items, n_users)
    command = [*me, "--fit-child", str(n_items), str(n_users), str(model_dir), cache, str(folder / "fit.json")]
    # a finished fit whose model was removed after its row (the row since reverted) fits again
    fit = _stage("fit", folder / "fit.json", command, done=lambda r: "process_seconds" in r and model_dir.exists())
    logger.info("%s: batch job", name)
    batch = batch_stage(model_dir, out, folder / "batch.json")
    seconds, peak = batch["seconds"], batch["peak_rss_mib"]
    success = json.loads((out / "_SUCCESS").read_text())
    users = int(success["total_users"])
    row = {"size": name, "items": n_items, "users": users}
    row |= {k: fit[k] for k in ("generate_seconds", "events", "mean_history", "max_history", "users_over_1000")}
    row |= {k: fit[k] for k in ("fit_seconds", "memory_encoder_seconds", "index", "save_seconds")}
    row |= {"encode_seconds": encode["encode_seconds"], "texts_encoded": encode["encoded"]}
    row |= {"encode_load_average": encode["load_average"], "fit_load_average": fit["load_average"]}
    row |= {"fit_process_seconds": fit["process_seconds"], "fit_peak_rss_mib": fit["peak_rss_mib"]}
    row |= {"encode_peak_rss_mib": encode["peak_rss_mib"], "batch_seconds": seconds}
    row |= {"users_per_second": users / seconds, "batch_peak_rss_mib": peak}
    row |= {"shards": len(success["shards"]), "memory_budget_mb": 512}
    row["load_average"] = batch["load_average"]  # the batch job's (1-minute, 2 cores)
    row["batch_attempts"] = batch["attempts"]  # more than one: the job was interrupted and resumed
    row["texts_per_second"] = encode["encoded"] / encode["encode_seconds"] if encode["encode_seconds"] else None
    row["encode_chunks"] = encode.get("chunks", [])  # seconds and load per chunk: a chunk beside other work shows
    for path in (model_dir, out):  # the stage JSONs stay (small); the model and the recommendations go
        shutil.rmtree(path, ignore_errors=True)
    (folder / "batch.json").unlink()  # its job is gone: a rerun after a reverted row starts a fresh one
    return row


def _encode_cell(row: dict[str, Any]) -> str:
    """``seconds (texts/s)``, or ``cached`` when every text was in the cache already (nothing was encoded)."""
    if not row.get("texts_per_second"):
        return "cached"
    return f"{row['encode_seconds']:.0f} ({row['texts_per_second']:.0f})"


def _batch_cell(row: dict[str, Any]) -> str:
    """The batch seconds, with the number of attempts when the job was interrupted and resumed."""
    attempts = len(row.get("batch_attempts", [])) or 1
    return f"{row['batch_seconds']:.0f}" + (f" ({attempts} runs)" if attempts > 1 else "")


def render(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [
        START,
        "",
        f"{m['cores']} cores. Each row: its command, commit and CPU.",
        "Synthetic data (`recsys.datasets.synthetic_dataset`, seed 0): items = users, log-normal histories (mean "
        "~30, at most 10,000), drifting interests. Pipeline: memory encoder (2 epochs at most, patience 1, 1 refit "
        "epoch, each on a fresh sample of 2,000 users and their last 256 events, no cross-fitting; it still encodes "
        "every user's whole history), ranker on 2,000 sampled users, "
        "IVF index from 10^5 items. Batch job: `recsys recommend --out DIR`, default 512 MB budget.",
        "",
        "| items x users | events | longest | generate s | encode s (texts/s) | fit s | fit peak MiB | batch s "
        "| users/s | batch peak MiB | shards | index | load | command | commit | CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for r in sorted(payload["results"], key=lambda r: r["items"]):
        lines.append(
            f"| {r['items']:,} x {r['users']:,} | {r['events']:,} | {r['max_history']:,} | "
            f"{r['generate_seconds']:.1f} | {_encode_cell(r)} | "
            f"{r['fit_seconds']:.0f} | {r['fit_peak_rss_mib']:.0f} | {_batch_cell(r)} | "
            f"{r['users_per_second']:.0f} | {r['batch_peak_rss_mib']:.0f} | {r['shards']} | {r['index']} | "
            f"{r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} | `{r['command']}` | `{r['commit']}` | "
            f"{r.get('cpu', m['cpu'])} |"
        )
    lines += [
        "",
        "(fit s: after the texts are encoded and cached, memory encoder and ranker included; fit peak: the "
        "generate + fit + save process (rows before commit 6e5bc41: generate + encode + fit + save in one process; "
        "since then the encode stage has its own process, its peak in `results/scale.json`); batch s (N runs): the "
        "job was interrupted and resumed, each run counted up to its last committed shard; load: the 1-minute "
        "load average at the start and the end of the batch job, on 2 cores: a row whose load is well above 2 "
        "ran beside other jobs (10^4: 3-4 of them), so its times are upper bounds. Plot: `results/scale.png`, where "
        "a hollow time marker is a stage whose load average exceeded 1.5x the cores.)",
        "",
        END,
    ]
    return "\n".join(lines)


STAGE_LOADS = {"encode_seconds": "encode_load_average", "fit_seconds": "fit_load_average"}
"""The load-average field of each timed stage (the other stages use the batch job's, ``load_average``)."""


def busy(row: dict[str, Any], stage: str, cores: int) -> bool:
    """Whether ``stage`` of ``row`` ran beside other work: its 1-minute load average (at its start or end, and
    for the encode stage at the start of each chunk) above 1.5 x ``cores``. A stage without its own load
    reading (rows before they were kept) takes the batch job's."""
    load = list(row.get(STAGE_LOADS.get(stage, "load_average")) or row.get("load_average") or [])
    if stage == "encode_seconds":
        load += [chunk["load"] for chunk in row.get("encode_chunks", [])]
    return bool(load) and max(load) > 1.5 * cores


def plot(results: list[dict[str, Any]], path: Path, cores: int = 2) -> None:
    """Log-log plot of the stage times and the peak memory of fit and batch against the number of users; a
    hollow time marker is a stage that ran beside other work (see :func:`busy`), so its time is an upper
    bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(results, key=lambda r: r["users"])
    x = np.array([r["users"] for r in rows])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))

    def line(axis: Any, stage: str | None, values: list[float], label: str) -> None:
        """One series; ``stage``: whose load decides hollow markers (None: never hollow, as for memory)."""
        drawn = axis.loglog(x, values, "-", label=label)[0]
        for xi, value, row in zip(x, values, rows, strict=True):
            face = "white" if stage and busy(row, stage, cores) else drawn.get_color()
            axis.plot(xi, value, "o", color=drawn.get_color(), markerfacecolor=face)

    for key, label in [
        ("generate_seconds", "generate"),
        ("encode_seconds", "encode texts"),
        ("fit_seconds", "fit"),
        ("batch_seconds", "batch job"),
    ]:
        line(left, key, [r[key] for r in rows], label)
    left.set(xlabel="users (= items)", ylabel="seconds", title="time (hollow: ran beside other work)")
    for key, label in [("fit_peak_rss_mib", "fit process"), ("batch_peak_rss_mib", "batch job")]:
        line(right, None, [r[key] / 1024 for r in rows], label)  # other work does not raise a process's peak
    right.axhline(20, color="grey", linestyle="--", label="20 GiB target")
    right.set(xlabel="users (= items)", ylabel="peak RSS (GiB)", title="peak memory")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def stored_results() -> dict[str, dict[str, Any]]:
    """The rows of ``results/scale.json`` by size name (empty when there is none)."""
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return {r["size"]: r for r in old.get("results", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None, help="overrides --profile")
    parser.add_argument("--redo", action="store_true", help="run sizes already in results/scale.json again")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "recsys-scale"))
    parser.add_argument("--fit-child", nargs=5, metavar=("ITEMS", "USERS", "MODEL", "CACHE", "OUT"), default=None)
    parser.add_argument("--encode-child", nargs=4, metavar=("ITEMS", "USERS", "CACHE", "OUT"), default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.encode_child:
        items, users, cache, out = args.encode_child
        encode_child(int(items), int(users), Path(cache), Path(out))
        return
    if args.fit_child:
        items, users, model_dir, cache, out = args.fit_child
        fit_child(int(items), int(users), Path(model_dir), Path(cache), Path(out))
        return
    from recsys.evaluation._harness import _git_commit

    command = ("python benchmarks/scale.py " + " ".join(sys.argv[1:])).strip()
    commit = _git_commit(str(HERE.parent))  # the code that runs, read before the hours a size can take
    for name in args.sizes or PROFILES[args.profile]:
        if name in stored_results() and not args.redo:
            logger.info("%s: already in %s (pass --redo to run it again)", name, RESULTS)
            continue
        row = run_size(name, Path(args.work_dir), args.redo) | {"command": command, "commit": commit}
        row["cpu"] = machine()["cpu"]
        results = stored_results() | {name: row}  # read again: another size may have finished meanwhile
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"machine": machine(), "results": list(results.values())}, indent=2))
        print(json.dumps(row, indent=2))
    payload: dict[str, Any] = {"machine": machine(), "results": list(stored_results().values())}
    if payload["results"]:
        write_block("Scale: synthetic data up to 10^6 x 10^6", START, END, render(payload))
        plot(payload["results"], RESULTS.with_suffix(".png"), payload["machine"]["cores"])


if __name__ == "__main__":
    main()
