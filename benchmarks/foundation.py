"""Foundation benchmark: every baseline and the pipeline, full-catalogue metrics, in one harness.

Runs ml-100k (leave-one-out) and amazon-scientific-unisrec (its published split), each with history items
excluded (our default) and not excluded (RecBole's protocol for sequential models), writes raw results to
``benchmarks/results/foundation.json`` and regenerates the tables in ``benchmarks/README.md``.

    python benchmarks/foundation.py [--data-dir ../shared/data] [--datasets ml-100k ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from recsys.datasets import load_dataset
from recsys.evaluation import EvalConfig, EvalResult, evaluate_many, results_table
from recsys.models.text_encoder import TextEncoderConfig
from recsys.zoo import DEFAULT_MODELS, make_model

HERE = Path(__file__).resolve().parent
RUNS = {"ml-100k": "loo", "amazon-scientific-unisrec": "published"}
START, END = "<!-- foundation:start -->", "<!-- foundation:end -->"


class Prefitted:
    """An already fitted model in the harness: ``fit`` does nothing, ``recommend`` delegates."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame) -> Prefitted:
        return self

    def recommend(self, users: Any, k: int = 10, **kwargs: Any) -> pl.DataFrame:
        return self.model.recommend(users, k, **kwargs)


def write_block(heading: str, start: str, end: str, block: str) -> None:
    """Put ``block`` (which holds its own ``start`` and ``end`` markers) in place of the README section between
    them; a README without that section gets it appended under ``## heading``."""
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    if start not in text:
        text += f"\n## {heading}\n\n{start}\n{end}\n"
    readme.write_text(text[: text.index(start)] + block + text[text.index(end) + len(end) :])


def _vm_hwm_mib(pid: int) -> float | None:
    """The process's peak RSS since its exec (``VmHWM``), in MiB; None where /proc does not tell."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def run_child(
    command: list[str],
    env: dict[str, str] | None = None,
    quiet: bool = False,
    progress: Callable[[float, float | None], None] | None = None,
    every: float = 10.0,
) -> tuple[float, float]:
    """Run ``command`` to the end; its wall seconds and its own peak RSS in MiB. ``quiet``: discard its output
    (the tail of its stderr goes into the error on failure). ``progress``: called about every ``every`` seconds
    with the seconds and the peak so far (so that a caller killed with its child can leave a record behind).

    The peak is the child's ``VmHWM`` (its peak RSS since exec), read every 20 ms while it runs. ``ru_maxrss``
    from ``wait4`` is only the fallback where /proc is missing: Linux carries the parent's high-water mark over
    the fork and the exec into it, so a child of a large process (this suite's parent has loaded models) would
    report the parent's size."""
    with tempfile.TemporaryFile() as errors:
        pipes = {"stdout": subprocess.DEVNULL, "stderr": errors} if quiet else {}
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, **pipes)  # type: ignore[call-overload]
        peak: float | None = None
        reported = started
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            hwm = _vm_hwm_mib(child.pid)
            peak = hwm if peak is None or (hwm is not None and hwm > peak) else peak
            if progress is not None and time.perf_counter() - reported >= every:
                reported = time.perf_counter()
                progress(reported - started, peak)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        child.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            tail = ""
            if quiet:
                errors.seek(0)
                tail = errors.read().decode(errors="replace")[-2000:]
            raise subprocess.CalledProcessError(code, command, stderr=tail)
    return seconds, peak if peak is not None else usage.ru_maxrss / 1024  # Linux: KiB


def cpu_name() -> str:
    """The CPU model name (Linux's /proc/cpuinfo), else ``"unknown"``."""
    if Path("/proc/cpuinfo").exists():
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        return match.group(1).strip() if match else "unknown"
    return "unknown"


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")
"""The CPU's vector-instruction flags that :func:`machine` records: BLAS, FAISS and LightGBM pick their code paths
by them, so two machines with one model name can round differently."""


def cpu_flags() -> list[str]:
    """Which of :data:`SIMD_FLAGS` the CPU has (Linux's /proc/cpuinfo), in that order; [] where unknown."""
    path = Path("/proc/cpuinfo")
    match = re.search(r"^flags\s*:\s*(.+)$", path.read_text(), re.MULTILINE) if path.exists() else None
    present = set(match.group(1).split()) if match else set()
    return [flag for flag in SIMD_FLAGS if flag in present]


def machine() -> dict[str, object]:
    """This machine and its software, as every suite records them: CPU name and flags, cores, torch threads,
    Python and the versions of the libraries that compute the results."""
    cpu = cpu_name()
    import torch

    versions = {}
    names = ("textmemory-recsys", "torch", "transformers", "faiss-cpu", "polars", "lightgbm", "numpy", "scipy")
    for name in (*names, "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "cpu": cpu,
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": versions,
    }


def run(datasets: list[str], data_dir: str | None, cache_dir: str | None) -> list[EvalResult]:
    text = TextEncoderConfig(cache_dir=cache_dir, show_progress=False)
    results: list[EvalResult] = []
    for name in datasets:
        dataset = load_dataset(name, data_dir=data_dir)
        for exclude_seen in (True, False):
            models = {m: make_model(m, text) for m in DEFAULT_MODELS}
            config = EvalConfig(split=RUNS[name], exclude_seen=exclude_seen)  # type: ignore[arg-type]
            results += evaluate_many(models, dataset, config)
    return results


def render(results: list[EvalResult], info: dict[str, object], command: str, seconds: float) -> str:
    lines = [
        START,
        "",
        f"Command: `{command}` ({seconds:.0f} s in all). Commit `{results[0].commit}`.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, "
        f"Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in dict(info["versions"]).items()) + ".",  # type: ignore[call-overload]
        "",
    ]
    groups: dict[tuple[str, bool], list[EvalResult]] = {}
    for r in results:
        groups.setdefault((r.dataset, bool(r.protocol["exclude_seen"])), []).append(r)
    for (dataset, exclude), group in groups.items():
        lines += [
            f"### {dataset}, {'history items excluded' if exclude else 'history items NOT excluded'}",
            "",
            f"Fingerprint: {group[0].fingerprint}",
            "",
            results_table(group),
            "",
        ]
    return "\n".join([*lines, END])


def plot(results: list[EvalResult], path: Path) -> None:
    """Grouped bars of NDCG@10 per model, one panel per dataset and protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[EvalResult]] = {}
    for r in results:
        groups.setdefault(
            f"{r.dataset}\n{'history excluded' if r.protocol['exclude_seen'] else 'not excluded'}", []
        ).append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), sharey=False, squeeze=False)
    for ax, (title, group) in zip(axes[0], groups.items(), strict=True):
        names = [r.model for r in group]
        ax.bar(names, [r.metrics["ndcg@10"] for r in group], color=["#999", "#6a9", "#69c", "#d62"][: len(names)])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_ylabel("NDCG@10 (full catalogue)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="public datasets folder (default: RECSYS_DATA_DIR ...)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache folder")
    parser.add_argument("--datasets", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    started = time.perf_counter()
    results = run(args.datasets, args.data_dir, args.cache_dir)
    seconds = time.perf_counter() - started
    info = machine()
    command = "python benchmarks/foundation.py " + " ".join(sys.argv[1:])
    out = HERE / "results" / "foundation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": info, "command": command, "seconds": seconds, "results": [r.to_dict() for r in results]},
            indent=2,
        )
    )
    plot(results, HERE / "results" / "foundation.png")
    block = render(results, info, command.strip(), seconds)
    write_block("Foundation: baselines and the first pipeline", START, END, block)
    for group_start in range(0, len(results), len(DEFAULT_MODELS)):
        print(results_table(results[group_start : group_start + len(DEFAULT_MODELS)]))


if __name__ == "__main__":
    main()
