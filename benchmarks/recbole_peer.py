"""RecBole peer harness (issue #6): RecBole's SASRec and BERT4Rec on OUR splits, scored by OUR metric code.

RecBole runs in its own pinned virtual environment (:func:`ensure_venv`, ``benchmarks/.venv-recbole``), through
``_recbole_worker.py``; the two sides exchange files only. :func:`export_split` writes our train / valid / test
split as RecBole benchmark files, so RecBole trains on exactly our train events, stops early on our valid targets
and is tested on our test targets. :func:`run_recbole` trains, asks RecBole's ``full_sort_topk`` for the top 50
items of every test user (as RecBole does it, and with the user's train+valid items masked, our protocol) and
scores both with :func:`recsys.evaluation.ranking_metrics`. :func:`time_full_sort` times ``full_sort_topk`` of an
untrained SASRec over a synthetic catalogue (10^4 to 10^6 items) for the end-to-end throughput ratio.

    python benchmarks/recbole_peer.py --datasets ml-100k --models SASRec --seeds 0 --max-epochs 50 \\
        --out benchmarks/results/recbole.json [--timing-items 10000 100000]

Raw results are merged into ``--out`` per dataset x model x seed (and per timing size), each with the command,
commit, seconds, versions and thread counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys.data import Dataset
from recsys.datasets import load_dataset
from recsys.errors import ConfigError
from recsys.evaluation import Split, SplitKind, make_split, ranking_metrics
from recsys.schema import ITEM_ID, RANK, USER_ID

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_recbole_worker.py"
DEFAULT_VENV = HERE / ".venv-recbole"
PINS = ("torch==2.13.0", "recbole==1.2.1", "ray<=2.6.3", "numpy<2", "pandas<2.2", "setuptools>=77.0.3,<81")
"""RecBole's environment. torch 2.13.0 declares ``setuptools>=77.0.3``, and ray 2.6.3 imports ``pkg_resources``,
which setuptools dropped in 81: hence ``>=77.0.3,<81`` instead of the issue's ``<70`` (which pip refuses next to
torch 2.13.0). pip adds RecBole's own requirements (colorlog 4.7.2, colorama 0.4.4, thop, tensorboard, ...);
``pip freeze`` is kept in the stamp file."""
SPLITS: dict[str, SplitKind] = {
    "ml-100k": "loo",
    "ml-latest-small": "loo",
    "amazon-scientific-lcrec": "loo",
    "amazon-scientific-unisrec": "published",
}
Model = Literal["SASRec", "BERT4Rec"]
HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token")


def _say(message: str) -> None:
    print(f"[recbole_peer] {message}", file=sys.stderr, flush=True)


def ensure_venv(path: Path = DEFAULT_VENV) -> Path:
    """Create RecBole's pinned virtual environment at ``path`` unless its stamp file says it is there.

    Returns
    -------
    Path
        The environment's python executable.
    """
    python, stamp = path / "bin" / "python", path / "recbole-pins.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("pins") == list(PINS) and python.exists():
        return python
    if not python.exists():
        _say(f"creating virtual environment {path}")
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    _say(f"pip install {' '.join(PINS)} (into {path})")
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    _say("checking that RecBole imports")
    check = "import recbole.quick_start, recbole.utils.case_study"
    subprocess.run([str(python), "-W", "ignore", "-c", check], check=True)
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    stamp.write_text(json.dumps({"pins": list(PINS), "freeze": freeze.splitlines()}, indent=2))
    _say(f"ready: {python}")
    return python


@dataclass(frozen=True)
class RecboleExport:
    """Where :func:`export_split` wrote a split and how RecBole's tokens map back to our ids.

    Attributes
    ----------
    data_path:
        RecBole's ``data_path``; the files lie in ``data_path / name``.
    name:
        RecBole's dataset name (``NAME.train.inter`` ...): ``"ours-"`` and our dataset's name.
    users, items:
        ``token (Int64), user_id`` and ``token (Int64), item_id``: RecBole token -> our id. Every catalogue
        item has a token (``NAME.item``), so RecBole ranks the same catalogue as we do.
    split:
        Our split that was exported.
    max_seq_len:
        The longest item list written (RecBole's ``MAX_ITEM_LIST_LENGTH``); longer histories keep their last items.
    """

    data_path: Path
    name: str
    users: pl.DataFrame
    items: pl.DataFrame
    split: Split
    max_seq_len: int


def _tokens(split: Split, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Dense integer tokens: users in sorted id order, items in catalogue order."""
    users = pl.concat([split.train[USER_ID], split.valid[USER_ID], split.test[USER_ID]]).unique().sort()
    user_map = pl.DataFrame({USER_ID: users}).with_row_index("token").with_columns(pl.col("token").cast(pl.Int64))
    item_map = items.select(ITEM_ID).with_row_index("token").with_columns(pl.col("token").cast(pl.Int64))
    return user_map, item_map


def _tokenise(events: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """``user, item`` tokens of ``events``, in their order (by user, then time)."""
    return (
        events.select(USER_ID, ITEM_ID)
        .with_row_index("_order")
        .join(users.rename({"token": "user"}), on=USER_ID, how="left")
        .join(items.rename({"token": "item"}), on=ITEM_ID, how="left")
        .sort("_order")
        .select("user", "item")
    )


def _as_text(items: pl.Expr) -> pl.Expr:
    return items.list.eval(pl.element().cast(pl.String)).list.join(" ")


def prefix_rows(events: pl.DataFrame, max_len: int) -> pl.DataFrame:
    """RecBole's sequential augmentation of token events: every event after a user's first one is a target,
    the (at most ``max_len``) events before it the item list. Columns ``user, item_list (str), item``."""
    shifted = [pl.col("item").shift(lag).over("user") for lag in range(max_len, 0, -1)]
    return (
        events.with_columns(pl.concat_list(shifted).list.drop_nulls().alias("_list"))
        .filter(pl.col("_list").list.len() > 0)
        .select("user", _as_text(pl.col("_list")).alias("item_list"), "item")
    )


def target_rows(history: pl.DataFrame, targets: pl.DataFrame, max_len: int) -> pl.DataFrame:
    """One row per target event: the user's last ``max_len`` history items as the item list."""
    lists = history.group_by("user", maintain_order=True).agg(pl.col("item").tail(max_len).alias("_list"))
    return targets.join(lists, on="user", how="inner").select(
        "user", _as_text(pl.col("_list")).alias("item_list"), "item"
    )


def write_benchmark(folder: Path, name: str, parts: dict[str, pl.DataFrame], n_items: int, masks: pl.DataFrame) -> None:
    """Write ``NAME.{train,valid,test}.inter`` (``user, item_list, item``), ``NAME.item`` (tokens ``0..n_items-1``)
    and ``NAME.history.tsv`` (``user <TAB> items``: the items masked for each test user)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        rows.rename(dict(zip(rows.columns, HEADER, strict=True))).write_csv(
            folder / f"{name}.{part}.inter", separator="\t", quote_style="never"
        )
    pl.DataFrame({"item_id:token": np.arange(n_items, dtype=np.int64)}).write_csv(folder / f"{name}.item")
    masks.select("user", _as_text(pl.col("items"))).write_csv(
        folder / f"{name}.history.tsv", separator="\t", include_header=False, quote_style="never"
    )


def export_split(
    dataset: Dataset | str,
    split_kind: SplitKind,
    out_dir: str | Path,
    max_seq_len: int = 50,
    data_dir: str | Path | None = None,
) -> RecboleExport:
    """Write our split of ``dataset`` as RecBole benchmark files (``benchmark_filename=[train, valid, test]``).

    With ``benchmark_filename`` RecBole's sequential datasets skip their own augmentation and read the item
    lists as written (``SequentialDataset._change_feat_format``), so the files hold exactly:

    - ``train``: every train event after a user's first, with the user's preceding train items as the list;
    - ``valid``: every valid target, with the user's train items as the list;
    - ``test``: one row per test user (its first test target; our metrics use all of them), with the user's
      train+valid items as the list: the same history our pipeline scores from;
    - ``NAME.item``: the whole catalogue, so that RecBole ranks every item, as we do;
    - ``NAME.history.tsv``: each test user's distinct train+valid items, masked in the masked protocol.

    Lists keep the last ``max_seq_len`` items (RecBole's ``MAX_ITEM_LIST_LENGTH``, default 50).

    Raises
    ------
    ConfigError
        ``max_seq_len`` is not a positive integer.
    """
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise ConfigError(f"max_seq_len={max_seq_len!r} must be a positive integer, for example 50.")
    ds = load_dataset(dataset, data_dir=data_dir) if isinstance(dataset, str) else dataset
    split = make_split(ds, split_kind)
    users, items = _tokens(split, ds.items)
    train, valid, test = (_tokenise(part, users, items) for part in (split.train, split.valid, split.test))
    history = _tokenise(split.history_for_test(), users, items)
    first_test = test.unique(subset="user", keep="first", maintain_order=True)
    masks = history.filter(pl.col("user").is_in(first_test["user"].implode()))
    masks = masks.group_by("user", maintain_order=True).agg(pl.col("item").unique(maintain_order=True).alias("items"))
    name = "ours-" + ds.name.replace("/", "-")  # not "ml-100k": RecBole would read its own bundled copy
    parts = {
        "train": prefix_rows(train, max_seq_len),
        "valid": target_rows(train, valid, max_seq_len),
        "test": target_rows(history, first_test, max_seq_len),
    }
    write_benchmark(Path(out_dir) / name, name, parts, ds.items.height, masks)
    return RecboleExport(Path(out_dir), name, users, items, split, max_seq_len)


def _run_worker(python: Path, job: dict[str, Any], work: Path, threads: int) -> dict[str, Any]:
    """Run ``_recbole_worker.py`` in RecBole's environment; its log goes to ``work/worker.log``."""
    (work / "job.json").write_text(json.dumps(job, indent=2))
    thread_vars = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", **dict.fromkeys(thread_vars, str(threads))}
    env.pop("PYTHONPATH", None)
    with open(work / "worker.log", "w") as log:
        code = subprocess.run(
            [str(python), "-W", "ignore", str(WORKER), str(work / "job.json"), str(work)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    if code != 0:
        tail = (work / "worker.log").read_text()[-3000:]
        raise RuntimeError(f"RecBole worker failed (exit {code}); log {work / 'worker.log'}:\n{tail}")
    return json.loads((work / "result.json").read_text())


def _recs(work: Path, which: str, export: RecboleExport) -> pl.DataFrame:
    """``user_id, item_id, rank`` in our ids from the worker's ``topk_<which>.npy``."""
    users = np.load(work / "users.npy", allow_pickle=False)
    topk = np.load(work / f"topk_{which}.npy", allow_pickle=False)  # (n_users, k) item tokens
    n_users, k = topk.shape
    frame = pl.DataFrame(
        {
            "user": np.repeat(users, k),
            "item": topk.reshape(-1),
            RANK: np.tile(np.arange(1, k + 1, dtype=np.uint32), n_users),
        }
    )
    return (
        frame.join(export.users.rename({"token": "user"}), on="user", how="left")
        .join(export.items.rename({"token": "item"}), on="item", how="left")
        .select(USER_ID, ITEM_ID, RANK)
        .sort(USER_ID, RANK)
    )


def _job(export: RecboleExport, work: Path, **settings: Any) -> dict[str, Any]:
    return {
        "data_path": str(export.data_path),
        "dataset": export.name,
        "max_seq_len": export.max_seq_len,
        "out_dir": str(work),
        **settings,
    }


def run_recbole(
    dataset_name: str,
    model: Model = "SASRec",
    seed: int = 0,
    epochs: int = 50,
    data_dir: str | Path | None = None,
    stopping_step: int = 5,
    max_seq_len: int = 50,
    threads: int = 2,
    train_batch_size: int = 2048,
    work_dir: str | Path | None = None,
    venv: Path = DEFAULT_VENV,
) -> dict[str, Any]:
    """Train RecBole's ``model`` on our split of ``dataset_name`` and score its top 50 with our metric code.

    ``data_dir`` is passed to :func:`recsys.datasets.load_dataset` (None: ``RECSYS_DATA_DIR``, else
    ``./shared/data`` or ``../shared/data``).

    Early stopping on valid NDCG@10 (RecBole's full ranking, ``stopping_step`` evaluations without gain, at most
    ``epochs``); the best checkpoint is reloaded. Inference: ``full_sort_topk`` over every test user, median of
    3 timed passes after a burn-in batch.

    Returns
    -------
    dict
        ``metrics_unmasked`` (RecBole's protocol: history items may be recommended) and ``metrics_masked``
        (the user's train+valid items set to ``-inf``), each from :func:`ranking_metrics` at ``K`` 10 and 50;
        ``fit_seconds``, ``epochs_run``, ``best_epoch``, inference seconds and users/s of both protocols,
        the settings and RecBole's versions.

    Raises
    ------
    ConfigError
        ``dataset_name`` has no split kind here, or ``model`` is not SASRec or BERT4Rec.
    """
    if dataset_name not in SPLITS:
        raise ConfigError(f"dataset_name={dataset_name!r} is not known here; use one of {list(SPLITS)}.")
    if model not in ("SASRec", "BERT4Rec"):
        raise ConfigError(f"model={model!r} is not supported; use 'SASRec' or 'BERT4Rec'.")
    python = ensure_venv(venv)
    with tempfile.TemporaryDirectory(prefix="recbole-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        export = export_split(dataset_name, SPLITS[dataset_name], work / "data", max_seq_len, data_dir)
        settings = {
            "model": model,
            "seed": seed,
            "epochs": epochs,
            "stopping_step": stopping_step,
            "train_batch_size": train_batch_size,
            "threads": threads,
            "k": 50,
            "batch_users": 256,
            "repeats": 3,
            "mode": "train",
        }
        result = _run_worker(python, _job(export, work, **settings), work, threads)
        n_items = export.items.height
        metrics = {
            f"metrics_{which}": ranking_metrics(_recs(work, which, export), export.split.test, n_items, ks=(10, 50))
            for which in ("unmasked", "masked")
        }
        return {
            "dataset": dataset_name,
            "split": SPLITS[dataset_name],
            "n_items": n_items,
            **metrics,
            **result,
            "settings": settings | {"max_seq_len": max_seq_len},
            "wall_seconds": time.perf_counter() - started,
        }


def synthetic_export(folder: Path, n_items: int, n_users: int, seq_len: int, seed: int = 0) -> RecboleExport:
    """A RecBole benchmark dataset of ``n_users`` users, each with ``seq_len`` random items out of ``n_items``;
    the same rows serve as train, valid and test (nothing is trained on them)."""
    rng = np.random.default_rng(seed)
    seqs = rng.integers(0, n_items, size=(n_users, seq_len + 1))
    rows = pl.DataFrame({"user": np.arange(n_users), "_list": seqs[:, :-1], "item": seqs[:, -1]})
    rows = rows.select("user", _as_text(pl.col("_list").arr.to_list()).alias("item_list"), "item")
    masks = pl.DataFrame({"user": np.arange(n_users), "items": seqs[:, :-1]})
    masks = masks.with_columns(pl.col("items").arr.to_list())
    name = f"synthetic-{n_items}"
    write_benchmark(folder / name, name, {"train": rows, "valid": rows, "test": rows}, n_items, masks)
    ids = pl.DataFrame({"token": np.arange(n_items, dtype=np.int64), ITEM_ID: np.arange(n_items, dtype=np.int64)})
    users = pl.DataFrame({"token": np.arange(n_users, dtype=np.int64), USER_ID: np.arange(n_users, dtype=np.int64)})
    empty = pl.DataFrame(schema={USER_ID: pl.Int64, ITEM_ID: pl.Int64})
    return RecboleExport(folder, name, users, ids, Split("synthetic", empty, empty, empty), seq_len)


def time_full_sort(
    n_items: int,
    n_users: int = 2000,
    model: Model = "SASRec",
    seq_len: int = 50,
    threads: int = 2,
    batch_users: int = 64,
    venv: Path = DEFAULT_VENV,
) -> dict[str, Any]:
    """Users/s of RecBole's ``full_sort_topk`` (top 50) with an UNTRAINED ``model`` over ``n_items`` items.

    The model is built the ordinary way, from a real (smallest useful) RecBole benchmark dataset: ``n_users``
    rows of ``seq_len`` random items, and ``NAME.item`` with all ``n_items`` tokens so that the item embedding
    has ``n_items + 1`` rows (no stand-in for RecBole's dataset object). Median of 3 passes after a burn-in
    batch, masked (history set to ``-inf``) and unmasked.

    Raises
    ------
    ConfigError
        ``n_items`` is not larger than ``seq_len + 50`` or ``n_users`` is not positive.
    """
    if n_items <= seq_len + 50 or n_users < 1:
        raise ConfigError(f"n_items={n_items!r} must exceed seq_len + 50 and n_users={n_users!r} must be >= 1.")
    python = ensure_venv(venv)
    with tempfile.TemporaryDirectory(prefix="recbole-timing-") as tmp:
        work = Path(tmp)
        export = synthetic_export(work / "data", n_items, n_users, seq_len)
        settings = {
            "model": model,
            "seed": 0,
            "epochs": 0,
            "stopping_step": 1,
            "train_batch_size": 2048,
            "threads": threads,
            "k": 50,
            "batch_users": batch_users,
            "repeats": 3,
            "mode": "timing",
        }
        result = _run_worker(python, _job(export, work, **settings), work, threads)
    keep = (
        "users_per_s_masked",
        "users_per_s_unmasked",
        "inference_seconds_masked",
        "inference_seconds_unmasked",
        "inference_runs_masked",
        "inference_runs_unmasked",
        "n_items_recbole",
        "n_parameters",
        "load_seconds",
        "torch_threads",
        "versions",
    )
    return {"n_items": n_items, "n_users": n_users, "model": model, "seq_len": seq_len, "batch_users": batch_users} | {
        k: result[k] for k in keep
    }


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


def _merge(out: Path, section: str, key: str, entry: dict[str, Any]) -> None:
    """Put ``entry`` under ``section/key`` of the JSON file ``out``, keeping every other entry."""
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault(section, {})[key] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["ml-100k"], choices=list(SPLITS))
    parser.add_argument("--models", nargs="*", default=["SASRec"], choices=["SASRec", "BERT4Rec"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--max-epochs", type=int, default=50, help="epoch cap (early stopping on valid NDCG@10)")
    parser.add_argument("--stopping-step", type=int, default=5, help="evaluations without gain before stopping")
    parser.add_argument("--max-seq-len", type=int, default=50, help="RecBole's MAX_ITEM_LIST_LENGTH")
    parser.add_argument(
        "--data-dir", default=None, help="public datasets folder (default: RECSYS_DATA_DIR, else ../shared/data)"
    )
    parser.add_argument("--timing-items", nargs="*", type=int, default=[], help="catalogue sizes for time_full_sort")
    parser.add_argument("--timing-users", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "recbole.json")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from foundation import cpu_name

    stamp = {
        "command": "python benchmarks/recbole_peer.py " + " ".join(sys.argv[1:]),
        "commit": _commit(),
        "cpu": cpu_name(),  # so that rows imported elsewhere say which machine ran them
        "cores": os.cpu_count(),
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for name in args.datasets:
        for model in args.models:
            for seed in args.seeds:
                _say(f"{model} on {name}, seed {seed}")
                started = time.perf_counter()
                result = run_recbole(
                    name,
                    model,
                    seed,
                    args.max_epochs,
                    args.data_dir,
                    args.stopping_step,
                    args.max_seq_len,
                    args.threads,
                )
                entry = stamp | {"seconds": time.perf_counter() - started} | result
                _merge(args.out, "runs", f"{name}/{model}/seed{seed}", entry)
                m, u = result["metrics_masked"], result["metrics_unmasked"]
                _say(
                    f"{name} {model}: {result['epochs_run']} epochs, fit {result['fit_seconds']:.0f} s; NDCG@10 "
                    f"masked {m['ndcg@10']:.4f}, unmasked {u['ndcg@10']:.4f}; "
                    f"{result['users_per_s_masked']:.0f} users/s masked"
                )
    for n_items in args.timing_items:
        _say(f"full_sort_topk timing at {n_items:,} items")
        started = time.perf_counter()
        result = time_full_sort(n_items, args.timing_users, threads=args.threads)
        _merge(args.out, "timing", f"SASRec/{n_items}", stamp | {"seconds": time.perf_counter() - started} | result)
        _say(
            f"{n_items:,} items: {result['users_per_s_unmasked']:.0f} users/s unmasked, "
            f"{result['users_per_s_masked']:.0f} masked"
        )


if __name__ == "__main__":
    main()
