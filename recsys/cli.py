"""The ``recsys`` command line: thin wrappers over the public API.

Exit codes: 0 success, 2 bad data or settings, 3 missing file or dataset, 4 bad model directory,
1 anything unexpected.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, cast

import polars as pl
import typer

from recsys.batch import BatchConfig, BatchJob, read_users
from recsys.data import DataConfig, Dataset, read_table
from recsys.datasets import available_datasets, load_dataset
from recsys.distributed import DaskBatchJob, DaskConfig, DaskRecommender, require_dask
from recsys.errors import ConfigError, DatasetNotFoundError, ModelFormatError, RecsysError
from recsys.evaluation import EvalConfig, SplitKind, evaluate_many, results_table, save_results
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig
from recsys.retrieval import IndexConfig
from recsys.schema import ITEM_ID, TEXT, USER_ID, WEIGHT
from recsys.update import update_recommender
from recsys.zoo import DEFAULT_MODELS, MODEL_NAMES, make_model

app = typer.Typer(
    help="Text-memory recommendation: item texts -> user embeddings -> FAISS candidates -> LightGBM ranking.",
    no_args_is_help=True,
    add_completion=False,
)
logger = logging.getLogger("recsys.cli")

DataDir = Annotated[
    Path | None,
    typer.Option(help="Folder holding the public datasets (default: $RECSYS_DATA_DIR, ./shared/data, ../shared/data)."),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="Run on Dask (needs the dask extra): local:N for a local cluster of N worker processes, a scheduler "
        "address such as tcp://10.0.0.5:8786, or a scheduler file (.json). See README 'Running on Dask'."
    ),
]
CacheDir = Annotated[
    Path | None, typer.Option(help="Embedding cache folder (default: $RECSYS_CACHE_DIR or ~/.cache/recsys/embeddings).")
]


def _text_config(cache_dir: Path | None) -> TextEncoderConfig:
    return TextEncoderConfig(cache_dir=str(cache_dir) if cache_dir else None)


def _write_table(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


@app.command()
def datasets() -> None:
    """List the datasets that `--dataset` accepts."""
    for name in available_datasets():
        typer.echo(name)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("recsys-output/quickstart"),
    k: Annotated[int, typer.Option(help="Recommendations per user.")] = 10,
    cache_dir: CacheDir = None,
) -> None:
    """The main job on the embedded ml-latest-small: fit, recommend, evaluate against baselines.

    Writes OUT/recommendations.parquet (top-k for every user, from all their events), OUT/metrics.json and
    prints the leave-one-out test metrics of the pipeline and the baselines (full catalogue, history
    items excluded).
    """
    started = time.perf_counter()
    dataset = load_dataset("ml-latest-small")
    typer.echo(f"dataset ml-latest-small (embedded): {dataset.fingerprint()}")
    text = _text_config(cache_dir)
    models = {name: make_model(name, text) for name in DEFAULT_MODELS}
    results = evaluate_many(models, dataset, EvalConfig(split="loo"))
    recs = models["pipeline"].recommend(None, k=k, history=dataset.interactions)  # type: ignore[arg-type]
    _write_table(recs, out / "recommendations.parquet")
    save_results(results, out / "metrics.json")
    typer.echo(results_table(results))
    typer.echo(
        f"\nwrote {recs.height:,} recommendations for {recs[USER_ID].n_unique():,} users to "
        f"{out / 'recommendations.parquet'}; metrics to {out / 'metrics.json'} "
        f"({time.perf_counter() - started:.0f} s)"
    )


def _load_input(
    dataset: str | None,
    data_dir: Path | None,
    interactions: Path | None,
    items: Path | None,
    config: DataConfig,
) -> Dataset:
    if dataset is not None:
        return load_dataset(dataset, data_dir=data_dir)
    if interactions is None or items is None:
        raise typer.BadParameter("give --dataset NAME, or both --interactions FILE and --items FILE.")
    return Dataset.from_frames(read_table(interactions), read_table(items), config, name=interactions.stem)


@app.command()
def fit(
    out: Annotated[Path, typer.Option(help="Model directory to write.")],
    dataset: Annotated[str | None, typer.Option(help="A dataset name (see `recsys datasets`).")] = None,
    interactions: Annotated[Path | None, typer.Option(help="Interactions file (Parquet, CSV, JSON lines).")] = None,
    items: Annotated[Path | None, typer.Option(help="Items file (Parquet, CSV, JSON lines).")] = None,
    text_field: Annotated[list[str] | None, typer.Option(help="Item text column; repeat for several.")] = None,
    order_column: Annotated[str, typer.Option(help="Interaction time or order column.")] = "timestamp",
    weight_column: Annotated[str | None, typer.Option(help="Optional weight column, e.g. rating.")] = None,
    repair: Annotated[bool, typer.Option(help="Drop bad rows (counted and reported) instead of failing.")] = False,
    n_candidates: Annotated[int, typer.Option(help="FAISS candidates re-ranked per user.")] = 200,
    user_encoder: Annotated[
        str, typer.Option(help="zero-shot (text mean) or memory (the learned long-context encoder).")
    ] = "zero-shot",
    index: Annotated[
        str,
        typer.Option(
            help="Vector index: flat (exact), ivf, hnsw (approximate), or auto: exact below 200,000 items, IVF "
            "from there (recall@100 >= 0.95 at 10^6 items in benchmarks/README.md)."
        ),
    ] = "auto",
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    scheduler: Scheduler = None,
) -> None:
    """Fit the pipeline on a dataset or on your own files and save it to OUT.

    With --scheduler the LightGBM ranker trains on a Dask cluster (DaskLGBMRanker); the saved model is the same
    format either way.
    """
    config = DataConfig(
        text_fields=tuple(text_field or ["text"]),
        order_column=order_column,
        weight_column=weight_column,
        on_invalid="repair" if repair else "raise",
    )
    data = _load_input(dataset, data_dir, interactions, items, config)
    typer.echo(f"{data.name}: {data.fingerprint()}; {data.report.summary()}")
    config_ = RecommenderConfig(
        text=_text_config(cache_dir),
        n_candidates=n_candidates,
        user_encoder=cast(Any, user_encoder),
        index=IndexConfig(kind=cast(Any, index)),
    )
    model = Recommender(config_) if scheduler is None else DaskRecommender(config_, _dask_config(scheduler))
    model.fit(data.interactions, data.items)
    typer.echo(f"saved model to {model.save(out)}")


def _print_rows(recs: pl.DataFrame, recommender: Recommender, show: int, explain: bool) -> None:
    texts = recommender.items_.select(ITEM_ID, TEXT)  # type: ignore[union-attr]
    for row in recs.head(show).join(texts, on=ITEM_ID, how="left", maintain_order="left").iter_rows(named=True):
        line = f"user {row[USER_ID]} #{row['rank']}: {row[TEXT][:70]}"
        if explain:
            line += f"\n    because you had: {row['because']}\n    it {row['reasons']}"
        typer.echo(line)


def _dask_config(scheduler: str, partitions: int | None = None) -> DaskConfig:
    """The settings for ``--scheduler``; Dask's own INFO logs (workers joining and leaving) kept out of the output."""
    config = DaskConfig(scheduler=scheduler, partitions=partitions)
    require_dask()
    import distributed  # noqa: F401  (configures its loggers on import; quieted after)

    logging.getLogger("distributed").setLevel(logging.WARNING)
    return config


def _quotas(text: str | None) -> tuple[int, int, int] | None:
    """``--quotas "20,10,2"`` as a tuple (checked by :class:`BatchConfig`); None when not given."""
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError as err:
        raise ConfigError(
            f"--quotas {text!r}: give three integers FAISS,TRANSITIONS,POPULARITY, for example 20,10,2."
        ) from err
    return values  # type: ignore[return-value]  # BatchConfig checks that there are three


def _batch_job(config: BatchConfig, scheduler: str | None, partitions: int | None) -> BatchJob | DaskBatchJob:
    if scheduler is None:
        if partitions is not None:
            raise ConfigError("--partitions needs --scheduler (it sets the Dask job's user partitions).")
        return BatchJob(config)
    return DaskBatchJob(config, _dask_config(scheduler, partitions))


LEAN_LIGHTGBM_HIDES = ("sklearn", "pandas")
"""LightGBM's optional integrations that local serving never uses (see :func:`_import_lightgbm_lean`)."""


def _import_lightgbm_lean() -> None:
    """Import LightGBM in this CLI process without its optional scikit-learn and pandas integrations.

    Local serving scores numpy arrays with ``lightgbm.Booster`` and never touches LightGBM's scikit-learn
    estimators or its pandas input handling, yet importing them (scikit-learn pulls in ``scipy.stats`` and pandas)
    cost about 1.5 s of every batch job's start-up, on ml-100k more than the recommendations themselves. While
    LightGBM imports, the modules of :data:`LEAN_LIGHTGBM_HIDES` that nothing has imported yet read as absent,
    which LightGBM supports (it checks for them); they stay importable afterwards. A no-op when LightGBM is
    already imported. Only the ``recommend`` command without ``--scheduler`` calls this (the Dask path needs
    ``lightgbm.DaskLGBMRanker``, which needs scikit-learn); importing :mod:`recsys` as a library never does.
    """
    if "lightgbm" in sys.modules:
        return
    hidden = [name for name in LEAN_LIGHTGBM_HIDES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import name" raises ImportError
    try:
        import lightgbm  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _is_batch_output(out: Path) -> bool:
    """A directory (existing, or a path without a file suffix) gets the sharded batch job."""
    return out.is_dir() or out.suffix == ""


@app.command()
def recommend(
    model: Annotated[Path, typer.Option(help="Model directory written by `recsys fit`.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Output: a .parquet or .csv file (one table), or a directory (a path without a suffix, or an "
            "existing folder) for a resumable batch job: part-*.parquet shards with a fallback column, then _SUCCESS."
        ),
    ],
    users: Annotated[
        Path | None, typer.Option(help="Parquet or CSV file with a user_id column (default: every fitted user).")
    ] = None,
    k: Annotated[int, typer.Option(help="Recommendations per user.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Allow items already in the user's history.")] = False,
    explain: Annotated[
        bool,
        typer.Option(help="Add because_ids, because (similar history items) and reasons (top ranker features)."),
    ] = False,
    show: Annotated[int, typer.Option(help="Print the first N rows (with --explain: readable sentences).")] = 0,
    memory_budget_mb: Annotated[
        float, typer.Option(help="Batch job: working memory per chunk of users in MiB; sets the users per shard.")
    ] = BatchConfig.memory_budget_mb,
    overwrite: Annotated[
        bool, typer.Option(help="Batch job: replace another job's output in --out instead of refusing.")
    ] = False,
    history: Annotated[
        Path | None,
        typer.Option(
            help="Batch job: events (user_id, item_id, timestamp) of users the model has no events for; "
            "they are scored from these items' texts instead of getting popular items."
        ),
    ] = None,
    scheduler: Scheduler = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="Batch job on Dask: user partitions (= shards); default: as many as the memory budget needs."
        ),
    ] = None,
    cascade_top: Annotated[
        int | None,
        typer.Option(
            help="Two-stage ranking: the first fold ranker shortlists each user's best M candidates (at least K) "
            "and only those get the whole ensemble's score; faster, same top K in the benchmarks at M=50. "
            "Default: the model's own setting (50 unless the model was saved with it off); 0: off."
        ),
    ] = None,
    quotas: Annotated[
        str | None,
        typer.Option(
            help="Candidates per user as FAISS,TRANSITIONS,POPULARITY (for example 20,10,2): fewer serve faster "
            "at some cost in quality (the ranker was trained on the model's own, by default 200,100,20; "
            "benchmarks/README.md has the trade-off). Default: the model's own."
        ),
    ] = None,
) -> None:
    """Recommend the top K items for users with a saved model.

    With a directory --out this is a batch job: users are processed in chunks sized from --memory-budget-mb
    (progress bar with ETA), each chunk is committed as a part-NNNNN.parquet shard, and _SUCCESS is written
    last. Run the same command again after a crash to resume: committed shards are kept.

    With --scheduler the batch job runs on a Dask cluster: users are hash-partitioned into shards, one task per
    shard, with the same commit protocol; --out must be on a file system every worker shares.
    """
    if scheduler is None:
        _import_lightgbm_lean()
    wanted = read_users(users) if users is not None else None
    if _is_batch_output(out):
        if explain:
            raise ConfigError("--explain writes one table; give --out a .parquet file instead of a directory.")
        config = BatchConfig(
            k=k,
            exclude_seen=not include_seen,
            memory_budget_mb=memory_budget_mb,
            cascade_top=cascade_top,
            quotas=_quotas(quotas),
        )
        inline = read_table(history) if history is not None else None
        job = _batch_job(config, scheduler, partitions)
        report = job.run(model, out, wanted, history=inline, overwrite=overwrite)
        typer.echo(
            f"wrote {report.n_rows:,} rows for {report.n_users:,} users ({report.fallback_users:,} fallback) to "
            f"{out} in {report.n_shards} shard(s), {report.shards_reused} reused from an earlier run"
        )
        if show:
            _print_rows(read_table(out).head(show), Recommender.load(model), show, explain=False)
        return
    for name, value in (("--history", history), ("--scheduler", scheduler), ("--partitions", partitions)):
        if value is not None:
            raise ConfigError(f"{name} is for batch jobs; give --out a directory instead of a file.")
    recommender = Recommender.load(model)
    serve = BatchConfig(k=k, cascade_top=cascade_top, quotas=_quotas(quotas))  # checked as for a batch job
    recommender.config = dataclasses.replace(
        recommender.config, cascade_top=serve.cascade_for(recommender), **serve.candidate_fields()
    )
    recs = recommender.recommend(wanted, k=k, exclude_seen=not include_seen, explain=explain)
    _write_table(recs, out)
    typer.echo(f"wrote {recs.height:,} rows for {recs[USER_ID].n_unique():,} users to {out}")
    _print_rows(recs, recommender, show, explain)


@app.command()
def update(
    model: Annotated[Path, typer.Option(help="Model directory written by `recsys fit` (or an earlier update).")],
    interactions: Annotated[
        Path | None, typer.Option(help="New events (Parquet, CSV, JSON lines): user_id, item_id and the order column.")
    ] = None,
    items: Annotated[
        Path | None,
        typer.Option(help="New items: item_id and the text field(s); known ids with the same text are skipped."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the updated model here instead of replacing --model (atomically).")
    ] = None,
    text_field: Annotated[list[str] | None, typer.Option(help="Item text column; repeat for several.")] = None,
    order_column: Annotated[str, typer.Option(help="Interaction time or order column.")] = "timestamp",
    weight_column: Annotated[
        str | None, typer.Option(help="Weight column, e.g. rating (needed when the model was fitted with weights).")
    ] = None,
    keep_changed_text: Annotated[
        bool, typer.Option(help="Keep the model's text for known items whose text changed, instead of failing.")
    ] = False,
    repair: Annotated[
        bool, typer.Option(help="Drop bad rows (null ids, unknown items, NaN, ...) with a warning instead of failing.")
    ] = False,
) -> None:
    """Add new events and new items to a saved model without retraining.

    Only the memory states of users with new events are advanced (cost proportional to their new events); new
    items are embedded from their text and added to the FAISS index; popularity and feature statistics are
    recomputed on all events. The encoder and the ranker are not retrained. Events older than a user's last
    event in the model, events for unknown items, and a known item whose text changed are refused (exit 2).
    The model directory is replaced atomically (or --out is written).

    Example: recsys update --model runs/mine --interactions today.parquet --items new_items.csv
    """
    if interactions is None and items is None:
        raise typer.BadParameter("give --interactions FILE and/or --items FILE.")
    recommender = Recommender.load(model)
    config = DataConfig(
        text_fields=tuple(text_field or [TEXT]),
        order_column=order_column,
        weight_column=weight_column or (WEIGHT if WEIGHT in recommender.interactions_.columns else None),  # type: ignore[union-attr]
        on_invalid="repair" if repair else "raise",
    )
    updated, report = update_recommender(
        recommender,
        read_table(interactions) if interactions is not None else None,
        read_table(items) if items is not None else None,
        data=config,
        on_changed_text="keep" if keep_changed_text else "raise",
    )
    path = updated.save(out or model)
    typer.echo(f"updated {model}: {report.summary()}; wrote {path}")


@app.command()
def importance(
    model: Annotated[Path, typer.Option(help="Model directory written by `recsys fit`.")],
    out: Annotated[Path | None, typer.Option(help="Also write the table (.parquet or .csv).")] = None,
) -> None:
    """The trained ranker's feature importance (gain share, splits, and what each feature means)."""
    table = Recommender.load(model).feature_importance()
    if out is not None:
        _write_table(table, out)
    for row in table.iter_rows(named=True):
        typer.echo(f"{row['gain_share']:6.1%}  {row['feature']:<24} {row['group']:<13} {row['meaning']}")


@app.command()
def evaluate(
    dataset: Annotated[str, typer.Option(help="A dataset name (see `recsys datasets`).")] = "ml-latest-small",
    split: Annotated[str, typer.Option(help="loo, temporal or published.")] = "loo",
    model: Annotated[
        list[str] | None,
        typer.Option(help=f"Model(s) to run, from {', '.join(MODEL_NAMES)} (default: {', '.join(DEFAULT_MODELS)})."),
    ] = None,
    k: Annotated[list[int] | None, typer.Option(help="Cut-offs (repeat), default 10 and 50.")] = None,
    include_seen: Annotated[bool, typer.Option(help="Do not exclude history items from the ranking.")] = False,
    sampled: Annotated[int | None, typer.Option(help="Also report metrics over N sampled negatives.")] = None,
    max_users: Annotated[int | None, typer.Option(help="Evaluate a random subset of users.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
) -> None:
    """Fit models on a split and report full-catalogue ranking metrics on its test targets."""
    data = load_dataset(dataset, data_dir=data_dir)
    typer.echo(f"dataset {data.name}: {data.fingerprint()}")
    config = EvalConfig(
        split=cast(SplitKind, split),
        ks=tuple(k or (10, 50)),
        exclude_seen=not include_seen,
        sampled_negatives=sampled,
        max_users=max_users,
    )
    models = {name: make_model(name, _text_config(cache_dir)) for name in (model or DEFAULT_MODELS)}
    results = evaluate_many(models, data, config)
    typer.echo(results_table(results))
    if json_out is not None:
        typer.echo(f"wrote {save_results(results, json_out)}")


_EXIT_CODES: list[tuple[type[Exception], int]] = [(DatasetNotFoundError, 3), (ModelFormatError, 4), (RecsysError, 2)]


def main() -> None:
    """Entry point: run the app, mapping library errors to one-line messages and exit codes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("faiss.loader", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app(standalone_mode=False)
    except (typer.Abort, typer.Exit) as stop:
        sys.exit(getattr(stop, "exit_code", 1))
    except Exception as err:
        for kind, code in _EXIT_CODES:
            if isinstance(err, kind):
                typer.echo(f"error: {err}", err=True)
                sys.exit(code)
        if err.__class__.__module__.startswith("click"):
            typer.echo(f"error: {err}", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
