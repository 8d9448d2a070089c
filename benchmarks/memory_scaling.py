"""Memory encoder scaling: time and peak memory against history length, and the incremental update speed-up.

Each history length runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own.
The encoder is the default architecture, untrained (speed and memory do not depend on the weights), over a
synthetic catalogue of 10,000 items with 384-dimensional text vectors.

    python benchmarks/memory_scaling.py [--max-length 100000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from foundation import write_block  # noqa: E402

START, END = "<!-- memory-scaling:start -->", "<!-- memory-scaling:end -->"
N_ITEMS = 10_000


def _encoder():
    from recsys.models.memory_encoder import MemoryEncoder, MemoryEncoderConfig

    vectors = np.random.default_rng(0).normal(size=(N_ITEMS, 384)).astype(np.float32)
    return MemoryEncoder(MemoryEncoderConfig(show_progress=False)).initialize(vectors)


def _histories(lengths: list[int], seed: int = 0, t0: int = 0):
    from recsys.data import Histories

    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(indptr[-1])
    times = t0 + np.cumsum(rng.integers(1, 86_400, n))
    users = pl.Series("user_id", np.arange(len(lengths)))
    return Histories(users, indptr, rng.integers(0, N_ITEMS, n), times, rng.normal(size=n).astype(np.float32))


def measure_one(length: int, threads: int) -> dict[str, float]:
    """In this process: encode one user with ``length`` events; return seconds and peak memory growth."""
    import torch

    torch.set_num_threads(threads)
    encoder = _encoder()
    encoder.encode(_histories([64]))  # warm-up
    h = _histories([length])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3):
        started = time.perf_counter()
        encoder.encode(h)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "events": length,
        "seconds": float(np.median(times)),
        "peak_growth_mib": (peak - before) / 1024,
        "peak_rss_mib": peak / 1024,
    }


def incremental(threads: int, n_users: int = 1000, length: int = 1000, new: int = 10) -> dict[str, float]:
    """States for ``n_users`` x ``length`` events, then ``new`` events each: update vs encoding from scratch."""
    import torch

    from recsys.models.memory_encoder import _concat

    torch.set_num_threads(threads)
    encoder = _encoder()
    old, fresh = _histories([length] * n_users), _histories([new] * n_users, seed=1, t0=10**10)
    states = encoder.states(old)
    started = time.perf_counter()
    updated = encoder.update(states, fresh)
    update_s = time.perf_counter() - started
    combined = _concat(old, fresh)
    started = time.perf_counter()
    full = encoder.encode(combined)
    full_s = time.perf_counter() - started
    return {
        "users": n_users,
        "history": length,
        "new_events": new,
        "update_seconds": update_s,
        "full_seconds": full_s,
        "speedup": full_s / update_s,
        "max_abs_diff": float(np.abs(updated.embeddings - full).max()),
    }


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["events"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.loglog(n, [r["seconds"] for r in rows], "o-", color="#d62")
    a.loglog(n, [rows[0]["seconds"] * x / n[0] for x in n], ":", color="#999", label="linear")
    a.set_xlabel("history length (events)"), a.set_ylabel("encode time (s)"), a.legend()
    b.semilogx(n, [r["peak_growth_mib"] for r in rows], "o-", color="#69c")
    b.set_xlabel("history length (events)"), b.set_ylabel("peak memory growth (MiB)")
    b.set_ylim(0, max(10.0, 1.2 * max(r["peak_growth_mib"] for r in rows)))
    fig.suptitle("Memory encoder: one user, whole history", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(rows: list[dict[str, float]], inc: dict[str, float], command: str) -> str:
    lines = [
        START,
        "",
        "![time and memory against history length](results/memory_scaling.png)",
        "",
        f"Command: `{command}`.",
        "",
        "| events | encode s | events/s | peak memory growth MiB | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['events']:,} | {r['seconds']:.3f} | {r['events'] / r['seconds']:,.0f} | "
        f"{r['peak_growth_mib']:.1f} | {r['peak_rss_mib']:.0f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Incremental update: {inc['users']:,} users with {inc['history']:,} events each get "
        f"{inc['new_events']} new events: `update` {inc['update_seconds']:.2f} s against "
        f"{inc['full_seconds']:.2f} s to encode the {inc['history'] + inc['new_events']:,}-event histories "
        f"from scratch (**{inc['speedup']:.0f}x**); max abs difference of the user vectors "
        f"{inc['max_abs_diff']:.1e}.",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-length", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one length
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.threads)))
        return
    lengths = [n for n in (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000) if n <= args.max_length]
    rows = []
    for n in lengths:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    inc = incremental(args.threads)
    print(inc)
    command = "python benchmarks/memory_scaling.py " + " ".join(sys.argv[1:])
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memory_scaling.json").write_text(
        json.dumps({"command": command, "lengths": rows, "incremental": inc}, indent=2)
    )
    plot(rows, HERE / "results" / "memory_scaling.png")
    write_block("Memory encoder: history length scaling", START, END, render(rows, inc, command.strip()))


if __name__ == "__main__":
    main()
