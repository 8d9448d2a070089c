"""Batch recommendation jobs: every requested user's top ``k`` as sharded Parquet, resumable after a crash.

:class:`BatchJob` is one small stage: ``BatchJob(BatchConfig(...)).run(model_dir, out_dir, users)`` loads the
model once, cuts the user list into shards sized from a memory budget, and writes::

    OUT/
      part-00000.parquet        user_id, item_id, score (f32), rank (u32), fallback (bool); one shard per chunk
      part-00001.parquet        ...
      _JOB.json                 the job's identity (model fingerprint, user list, k, ...), written before any shard
      _shards/part-00000.json   each shard's commit record: rows, users, sha256 (written after its rename)
      _SUCCESS                  written last: every shard's rows and sha256, totals, model fingerprint, config
      .lock                     held (``flock``) while a job writes here

Readers take ``OUT/part-*.parquet`` (files starting with ``_`` or ``.`` are ignored by Parquet dataset
readers) once ``OUT/_SUCCESS`` exists.

**Commit protocol.** Shard ``i`` is always the same slice of the user list (``users[i * S : (i + 1) * S]`` for
the ``S`` users per shard the budget gives), so a re-run recomputes exactly the same shards. Each shard is
validated (:func:`check_shard`), written to a temporary file in ``OUT`` and fsynced, then renamed over
``part-i.parquet`` (``os.replace`` is atomic); its commit record is then written the same way. A shard counts as
done only when its record names this job and the sha256 of ``part-i.parquet`` matches the record. We chose a
sidecar record over re-reading the Parquet file because reading proves only that a file decodes: it cannot tell a
shard of this job from a shard of another job, nor a complete shard from an altered one, while hashing the file
against its record does both without decoding. A kill between the rename and the record leaves a shard
without a record: it is simply recomputed, and the rename replaces it with the same bytes. Leftover temporary
files (``.*.tmp``) are deleted when a job starts. ``_SUCCESS`` is written only after every shard is committed,
and removed first whenever a shard must be redone.

**Resume.** Running the same job again keeps the committed shards and redoes the rest; the output is
byte-identical to an uninterrupted run (the same shards, the same deterministic model, the same Parquet writer).
A directory that holds another job's output (another model, user list, ``k``, ...) is refused with a
:class:`~recsys.errors.ConfigError`; ``overwrite=True`` (``--overwrite``) replaces it.

**Fallback.** Users without events in the model (ids it was not fitted on) get ``fallback = true``: popular
items, or, when ``history=`` gives events for them inline, recommendations from those items' texts. Users the
model knows are always scored from their fitted events.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from recsys import __version__
from recsys._batch_files import (
    JOB,
    RECORDS,
    SUCCESS,
    check_identity,
    clear,
    commit_shard,
    committed,
    json_bytes,
    locked,
    remove_stale,
    sha256,
    write_atomic,
)
from recsys.data import DataWarning, read_table
from recsys.errors import ConfigError, DataError, SchemaError
from recsys.models.ranker import RankerEnsemble
from recsys.pipeline import Recommender
from recsys.schema import ID_DTYPES, ITEM_ID, RANK, SCORE, TIMESTAMP, USER_ID

__all__ = [
    "FALLBACK",
    "OUTPUT_COLUMNS",
    "BatchConfig",
    "BatchJob",
    "BatchReport",
    "bytes_per_user",
    "check_history",
    "check_shard",
    "job_identity",
    "known_users",
    "open_output",
    "read_users",
    "recommend_shard",
    "serve_shards",
    "users_per_shard",
    "write_shard",
    "write_success",
]

logger = logging.getLogger(__name__)

FORMAT = "recsys-batch/1"
FALLBACK = "fallback"
"""Output column: true where the user had no events in the model (popular items, or an inline history)."""
OUTPUT_COLUMNS = (USER_ID, ITEM_ID, SCORE, RANK, FALLBACK)
_KEY_COLUMNS = 8  # query, item_idx, item_id, retrieval score and the source ranks beside the ranker features


@dataclass(frozen=True)
class BatchConfig:
    """Settings of a batch job.

    Parameters
    ----------
    k:
        Recommendations per user.
    exclude_seen:
        Never recommend an item in the user's history.
    memory_budget_mb:
        Working memory (MiB) for one chunk of users, on top of the loaded model. It sets the users per shard
        (one shard per chunk), see :func:`bytes_per_user`. Small budgets give many small shards.
    show_progress:
        A progress bar over users (rate and ETA).
    cascade_top:
        Two-stage ranking for this job (:attr:`RecommenderConfig.cascade_top <recsys.pipeline.RecommenderConfig>`):
        the model's first fold ranker shortlists each user's best ``cascade_top`` candidates (at least ``k``) and
        only those get the whole ensemble's score. None (default): the model's own setting, saved with it (50
        unless it was saved with None; a model saved before the setting existed loads with 50); 0: off. Part of
        the job's identity, so a resume never mixes shards made with and without it. No effect on a model with
        one ranker instead of a fold ensemble.
    quotas:
        Candidates per user for this job, ``(FAISS, transitions, popularity)``: the model's ``n_candidates``,
        ``n_transition_candidates`` and ``n_popularity_candidates`` while it serves (FAISS at least 1, the others
        at least 0 = that source off). None (default): the model's own (200, 100, 20 unless fitted otherwise).
        Fewer candidates serve faster at some cost in quality, since the ranker was trained on the model's own
        quotas (the throughput suite's sweep in ``benchmarks/README.md``: on unisrec, 20/10/2 with the two-stage
        ranker serves 2.1x the default's users/s at NDCG@10 0.1072 against 0.1082). Part of the job's identity
        when set.
    """

    k: int = 10
    exclude_seen: bool = True
    memory_budget_mb: float = 512.0
    show_progress: bool = True
    cascade_top: int | None = None
    quotas: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"BatchConfig.k={self.k!r} must be a positive integer (for example 10).")
        if not (isinstance(self.memory_budget_mb, int | float) and math.isfinite(self.memory_budget_mb)):
            raise ConfigError(f"BatchConfig.memory_budget_mb={self.memory_budget_mb!r} must be a finite number.")
        if self.memory_budget_mb <= 0:
            raise ConfigError(f"BatchConfig.memory_budget_mb={self.memory_budget_mb} must be > 0 (MiB).")
        top = self.cascade_top
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
            raise ConfigError(
                f"BatchConfig.cascade_top={top!r} must be None (the model's setting), 0 (off) or a positive "
                "integer (for example 50)."
            )
        if self.quotas is not None:
            quotas = tuple(self.quotas)
            if (
                len(quotas) != 3
                or any(isinstance(q, bool) or not isinstance(q, int) for q in quotas)
                or quotas[0] < 1
                or min(quotas) < 0
            ):
                raise ConfigError(
                    f"BatchConfig.quotas={self.quotas!r} must be three integers (FAISS, transitions, popularity), "
                    "FAISS at least 1 and the others at least 0, for example (20, 10, 2); None keeps the model's."
                )
            object.__setattr__(self, "quotas", quotas)

    def candidate_fields(self) -> dict[str, Any]:
        """The ``RecommenderConfig`` candidate fields that this job sets on the model it serves (empty: the
        model's own quotas)."""
        if self.quotas is None:
            return {}
        names = ("n_candidates", "n_transition_candidates", "n_popularity_candidates")
        return dict(zip(names, self.quotas, strict=True))

    def cascade_for(self, model: Recommender) -> int | None:
        """The ``cascade_top`` that ``model`` serves this job with: this job's where given (0: None), else its own;
        None for a model with one ranker (nothing to shortlist for)."""
        top = model.config.cascade_top if self.cascade_top is None else (self.cascade_top or None)
        return top if isinstance(model.ranker_, RankerEnsemble) else None


def serve_shards(model: Recommender, config: BatchConfig, chunk_users: int) -> None:
    """Set ``model`` up to serve a job's shards: one ``recommend`` chunk per shard, no nested progress bar (the
    job owns both), the job's ``cascade_top`` and its candidate ``quotas``."""
    model.config = dataclasses.replace(
        model.config,
        chunk_users=chunk_users,
        show_progress=False,
        cascade_top=config.cascade_for(model),
        **config.candidate_fields(),
    )


@dataclass(frozen=True)
class BatchReport:
    """What a run did: ``shards_written`` were computed now, ``shards_reused`` were already committed."""

    out_dir: Path
    n_users: int
    n_rows: int
    n_shards: int
    shards_written: int
    shards_reused: int
    fallback_users: int
    manifest: dict[str, Any]


# ------------------------------------------------------------------------------------------ sizing
def bytes_per_user(model: Recommender, k: int) -> int:
    """Estimated peak working memory (bytes) to recommend for one user, from the model's settings and data.

    ``40 * T + 9 * (P + L) + 2 * C * (F + 8) * 8 + 64 * k``, where

    - ``T``: the user's transition scores, stored sparsely (``Transitions.score_sparse``): about ``L * D``
      entries (``L`` the mean history length of the fitted users, ``D`` the mean entries per row of the
      transition matrix), at most ``n_items``, doubled for users above the mean; 40 bytes cover the csr entry
      and the sort keys of :func:`~recsys._topk.topk_positive` (0 when the transition source is off);
    - ``P + L``: the columns of the global popularity ranking scanned for the ``P`` popular candidates
      (:func:`~recsys._topk.topk_ranked`: a mask and a running count per column);
    - ``C``: candidates per user at most, ``min(max(n_candidates, k), n_items)`` from FAISS plus the transition
      and popularity quotas (each at most ``n_items``);
    - ``F``: ranker features, plus 8 id, rank and score columns, 8 bytes each, doubled for the copies that
      polars joins and sorts make;
    - ``64 * k``: the output rows.

    No term grows with the catalogue alone: candidate generation never builds a dense ``(users, n_items)``
    row. The model itself (vectors, FAISS index, feature statistics) is loaded once and not counted.
    """
    n_items = model.index_.height  # type: ignore[union-attr]
    cfg = model.config
    transitions = model.features_.transitions if cfg.n_transition_candidates else None  # type: ignore[union-attr]
    n_events, n_users = model.interactions_.height, max(1, model.interactions_[USER_ID].n_unique())  # type: ignore[union-attr, index]
    mean_length = n_events / n_users
    sparse = 0.0
    if transitions is not None:
        per_row = transitions.matrix_.nnz / max(1, n_items)
        sparse = min(float(n_items), 2 * mean_length * per_row)
    candidates = min(max(cfg.n_candidates, k), n_items)
    candidates += min(cfg.n_transition_candidates if transitions is not None else 0, n_items)
    candidates += min(cfg.n_popularity_candidates, n_items)
    n_features = len(model.ranker_.feature_names_)  # type: ignore[union-attr]
    scan = 9 * (cfg.n_popularity_candidates + mean_length)
    return int(40 * sparse + scan + 2 * candidates * (n_features + _KEY_COLUMNS) * 8 + 64 * k)


def users_per_shard(model: Recommender, config: BatchConfig) -> int:
    """Users per shard (= per chunk): ``floor(memory_budget_mb * 2**20 / bytes_per_user)``, at least 1, sized
    at the job's candidate quotas."""
    return max(1, int(config.memory_budget_mb * 2**20 // bytes_per_user(_serving_model(model, config), config.k)))


def _serving_model(model: Recommender, config: BatchConfig) -> Recommender:
    """``model`` itself, or a shallow copy whose config holds the job's candidate quotas (for sizing)."""
    if config.quotas is None:
        return model
    twin = copy.copy(model)
    twin.config = dataclasses.replace(model.config, **config.candidate_fields())
    return twin


# ------------------------------------------------------------------------------------------ inputs
def read_users(path: str | Path) -> pl.Series:
    """The ``user_id`` column of a Parquet, CSV, TSV or JSON-lines file (see :func:`recsys.data.read_table`)."""
    frame = read_table(path)
    if USER_ID not in frame.columns:
        raise SchemaError(
            f"users file {str(path)!r} has no {USER_ID!r} column (columns: {frame.columns}); add or rename one."
        )
    return frame[USER_ID]


def resolve_users(model: Recommender, users: pl.Series | Sequence[Any] | None) -> pl.Series:
    """The job's users in the model's ``user_id`` dtype: every fitted user (first-seen order) by default;
    otherwise ``users`` without nulls, duplicates dropped (first occurrence kept) with a :class:`DataWarning`."""
    fitted = model.interactions_[USER_ID]  # type: ignore[index]
    if users is None:
        return fitted.unique(maintain_order=True)
    series = users if isinstance(users, pl.Series) else pl.Series(USER_ID, list(users))
    if series.null_count():
        raise DataError(f"users hold {series.null_count()} null {USER_ID!r} value(s); remove them.")
    try:
        series = series.cast(fitted.dtype, strict=True).rename(USER_ID)
    except Exception as err:
        raise DataError(
            f"users have dtype {series.dtype}; the model's {USER_ID!r} has {fitted.dtype}. Cast them."
        ) from err
    if series.len() == 0:
        raise DataError(f"the user list is empty; give at least one {USER_ID!r}, or none for every fitted user.")
    unique = series.unique(maintain_order=True)
    if unique.len() < series.len():
        repeated = series.filter(series.is_duplicated()).unique(maintain_order=True).head(5).to_list()
        warnings.warn(
            f"users hold {series.len() - unique.len()} duplicate {USER_ID!r} value(s) (for example {repeated}); "
            f"each user is recommended once, at its first position ({unique.len()} users).",
            DataWarning,
            stacklevel=3,
        )
    return unique


def check_history(history: pl.DataFrame, model: Recommender) -> pl.DataFrame:
    """The inline history with ``user_id`` and ``item_id`` in the model's dtypes."""
    missing = [c for c in (USER_ID, ITEM_ID, TIMESTAMP) if c not in history.columns]
    if missing:
        raise SchemaError(f"history lacks column(s) {missing}; it needs {USER_ID}, {ITEM_ID} and {TIMESTAMP}.")
    dtypes = {USER_ID: model.interactions_.schema[USER_ID], ITEM_ID: model.index_.schema[ITEM_ID]}  # type: ignore[union-attr]
    for column, dtype in dtypes.items():
        try:
            history = history.with_columns(pl.col(column).cast(dtype, strict=True))
        except Exception as err:
            raise DataError(
                f"history column {column!r} has dtype {history.schema[column]}; the model's has {dtype}. Cast it."
            ) from err
    return history


def _frame_sha256(frame: pl.DataFrame) -> str:
    """sha256 of a frame's dtypes and CSV text (the same in every process)."""
    return sha256((str(frame.schema) + "\n" + frame.write_csv()).encode())


# ------------------------------------------------------------------------------------------ checks
def check_shard(frame: pl.DataFrame, users: pl.Series, k: int) -> None:
    """Validate a shard before it is committed.

    Checks the columns and dtypes (``user_id`` as ``users``, ``score`` Float32, ``rank`` UInt32, ``fallback``
    Boolean), no nulls, unique ``(user_id, item_id)``, finite scores, ranks ``1..n`` consecutive per user with
    ``n <= k``, one ``fallback`` value per user, and exactly the users of ``users``.

    Raises
    ------
    SchemaError
        A missing or mistyped column.
    DataError
        Any other violation; the message names the column and an example value.
    """
    _check_columns(frame, users.dtype)
    nulls = {c: n for c, n in zip(frame.columns, frame.null_count().row(0), strict=True) if n}
    if nulls:
        raise DataError(f"shard has null values {nulls} (column: count); every output column must be set.")
    repeated = frame.filter(pl.struct(USER_ID, ITEM_ID).is_duplicated())
    if repeated.height:
        raise DataError(
            f"{repeated.height} shard rows repeat a ({USER_ID}, {ITEM_ID}) pair, for example "
            f"{repeated.select(USER_ID, ITEM_ID).row(0)}; each item must appear once per user."
        )
    infinite = frame.filter(~pl.col(SCORE).is_finite())
    if infinite.height:
        raise DataError(
            f"column {SCORE!r} holds {infinite.height} non-finite value(s), for example {infinite.row(0)}; "
            "scores must be finite."
        )
    _check_users(frame, users, k)


def _check_columns(frame: pl.DataFrame, user_dtype: pl.DataType) -> None:
    if tuple(frame.columns) != OUTPUT_COLUMNS:
        raise SchemaError(f"shard columns are {frame.columns}; expected {list(OUTPUT_COLUMNS)}.")
    if frame.schema[ITEM_ID] not in ID_DTYPES:
        raise SchemaError(f"shard column {ITEM_ID!r} has dtype {frame.schema[ITEM_ID]}; expected one of {ID_DTYPES}.")
    expected = {USER_ID: user_dtype, SCORE: pl.Float32, RANK: pl.UInt32, FALLBACK: pl.Boolean}
    for column, dtype in expected.items():
        if frame.schema[column] != dtype:
            raise SchemaError(f"shard column {column!r} has dtype {frame.schema[column]}; expected {dtype}.")


def _check_users(frame: pl.DataFrame, users: pl.Series, k: int) -> None:
    per_user = frame.group_by(USER_ID, maintain_order=True).agg(
        n=pl.len(),
        lo=pl.col(RANK).min(),
        hi=pl.col(RANK).max(),
        distinct=pl.col(RANK).n_unique(),
        flags=pl.col(FALLBACK).n_unique(),
    )
    bad = per_user.filter((pl.col("lo") != 1) | (pl.col("hi") != pl.col("n")) | (pl.col("distinct") != pl.col("n")))
    if bad.height:
        raise DataError(
            f"column {RANK!r} is not 1..n consecutive for {bad.height} user(s), for example {USER_ID}="
            f"{bad[USER_ID][0]!r} ({bad['n'][0]} rows, ranks {bad['lo'][0]}..{bad['hi'][0]})."
        )
    long = per_user.filter(pl.col("n") > k)
    if long.height:
        raise DataError(
            f"{USER_ID}={long[USER_ID][0]!r} has {long['n'][0]} rows in the shard; at most k={k} are allowed."
        )
    mixed = per_user.filter(pl.col("flags") > 1)
    if mixed.height:
        raise DataError(f"column {FALLBACK!r} differs between rows of {USER_ID}={mixed[USER_ID][0]!r}.")
    extra = per_user.filter(~pl.col(USER_ID).is_in(users.implode()))
    if extra.height:
        raise DataError(f"the shard holds {extra.height} user(s) it was not given, for example {extra[USER_ID][0]!r}.")
    missing = users.filter(~users.is_in(per_user[USER_ID].implode()))
    if missing.len():
        raise DataError(
            f"{missing.len()} user(s) of the shard got no recommendations, for example {missing.head(5).to_list()}; "
            "they may have seen every item: rerun with exclude_seen=False (--include-seen)."
        )


# ------------------------------------------------------------------------------------------ the stage
class BatchJob:
    """Recommend for many users into a sharded, resumable Parquet directory (see the module docstring)."""

    def __init__(self, config: BatchConfig | None = None) -> None:
        self.config = config or BatchConfig()

    def run(
        self,
        model_dir: str | Path,
        out_dir: str | Path,
        users: pl.Series | Sequence[Any] | None = None,
        *,
        history: pl.DataFrame | None = None,
        overwrite: bool = False,
    ) -> BatchReport:
        """Write the top ``k`` of every user to ``out_dir``; resume a killed run of the same job.

        Parameters
        ----------
        model_dir:
            A directory written by :meth:`Recommender.save` (its manifest's sha256 is the model fingerprint).
        out_dir:
            The output directory (created if needed).
        users:
            User ids (duplicates dropped with a warning, first-seen order kept); default: every fitted user.
        history:
            Interactions (``user_id, item_id, timestamp``) of users without events in the model: they are scored
            from these items' texts instead of getting popular items. Fitted users keep their fitted events.
        overwrite:
            Replace another job's output in ``out_dir`` instead of refusing.
        """
        model_dir = Path(model_dir)
        model = Recommender.load(model_dir)
        fingerprint = sha256((model_dir / "manifest.json").read_bytes())
        wanted = resolve_users(model, users)
        inline = check_history(history, model) if history is not None else None
        job = job_identity(model, fingerprint, wanted, inline, self.config)
        serve_shards(model, self.config, job["shard_users"])
        out = Path(out_dir)
        with open_output(out, job, overwrite):
            records, written = self._write_shards(out, model, wanted, inline, job)
            manifest = write_success(out, job, self.config, records)
        return BatchReport(
            out_dir=out,
            n_users=wanted.len(),
            n_rows=manifest["total_rows"],
            n_shards=job["n_shards"],
            shards_written=written,
            shards_reused=job["n_shards"] - written,
            fallback_users=manifest["fallback_users"],
            manifest=manifest,
        )

    def _write_shards(
        self, out: Path, model: Recommender, users: pl.Series, history: pl.DataFrame | None, job: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], int]:
        """Commit every shard not committed yet; return all commit records (in shard order) and how many
        shards were written now."""
        size, n_shards, key = job["shard_users"], job["n_shards"], sha256(json_bytes(job))
        records = {i: r for i in range(n_shards) if (r := committed(out, i, key)) is not None}
        if len(records) < n_shards:
            (out / SUCCESS).unlink(missing_ok=True)  # never a _SUCCESS beside a shard being redone
        per_user = bytes_per_user(model, self.config.k) // 1024
        message = "batch: %d users in %d shard(s) of up to %d (budget %g MiB, ~%d KiB per user); %d already committed"
        logger.info(message, users.len(), n_shards, size, self.config.memory_budget_mb, per_user, len(records))
        known = known_users(model)
        done = sum(r["users"] for r in records.values())
        bar = tqdm(total=users.len(), initial=done, unit="user", desc="batch", disable=not self.config.show_progress)
        written = 0
        with bar:
            for i in range(n_shards):
                if i in records:
                    continue
                shard_users = users.slice(i * size, size)
                records[i] = write_shard(out, i, model, shard_users, known, history, self.config, key)
                written += 1
                bar.update(shard_users.len())
        return [records[i] for i in range(n_shards)], written


# ------------------------------------------------------------------------------------------ one shard
# The steps below are shared with the Dask job (:mod:`recsys.distributed`): a shard is computed, checked and
# committed the same way whichever process runs it.
def job_identity(
    model: Recommender, fingerprint: str, users: pl.Series, history: pl.DataFrame | None, config: BatchConfig
) -> dict[str, Any]:
    """Everything that determines the output bytes of a job that cuts ``users`` into fixed slices; a resume must
    match it exactly (``_JOB.json``)."""
    shard_users = users_per_shard(model, config)
    if config.cascade_top and config.cascade_for(model) is None:
        message = "cascade_top=%d has no effect: this model has one ranker, not a fold ensemble"
        logger.warning(message, config.cascade_top)
    return {
        "format": FORMAT,
        "recsys_version": __version__,
        "model_fingerprint": fingerprint,
        "users_sha256": _frame_sha256(users.to_frame()),
        "n_users": users.len(),
        "history_sha256": _frame_sha256(history) if history is not None else None,
        "k": config.k,
        "exclude_seen": config.exclude_seen,
        "cascade_top": config.cascade_for(model),
        **({"quotas": list(config.quotas)} if config.quotas is not None else {}),  # absent: older jobs resume
        "shard_users": shard_users,
        "n_shards": math.ceil(users.len() / shard_users),
    }


@contextlib.contextmanager
def open_output(out: Path, job: dict[str, Any], overwrite: bool) -> Iterator[None]:
    """Hold ``out`` (created if needed, locked) for job ``job``: clear it first with ``overwrite``, delete leftover
    temporary files, refuse another job's output (:func:`~recsys._batch_files.check_identity`), write ``_JOB.json``
    and the ``_shards`` folder.

    Raises
    ------
    ConfigError
        ``out`` is a file, another job writes there, or it holds another job's output.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; a batch job writes a directory. Choose another path.")
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        if overwrite:
            clear(out)
        removed = remove_stale(out)
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted job in %s", removed, out)
        check_identity(out, job)
        if not (out / JOB).exists():
            write_atomic(out / JOB, json_bytes(job))
        (out / RECORDS).mkdir(exist_ok=True)
        yield


def known_users(model: Recommender) -> pl.Series:
    """The ids of the users with events in the model (the others get ``fallback = true``)."""
    return model.interactions_[USER_ID].unique()  # type: ignore[index]


def recommend_shard(
    model: Recommender,
    users: pl.Series,
    known: pl.Series,
    history: pl.DataFrame | None,
    config: BatchConfig,
) -> pl.DataFrame:
    """A shard's rows (:data:`OUTPUT_COLUMNS`): ``users`` in the order given, best first; ``fallback`` for users
    not in ``known``, scored from their ``history`` rows when it has any. An empty ``users`` gives an empty shard
    with the same schema."""
    is_known = users.is_in(known.implode())
    parts = []
    for fallback, group in ((False, users.filter(is_known)), (True, users.filter(~is_known))):
        if group.len() == 0:
            continue
        inline = None
        if fallback and history is not None:
            inline = history.filter(pl.col(USER_ID).is_in(group.implode()))
        recs = model.recommend(
            group,
            k=config.k,
            history=inline if inline is not None and inline.height else None,
            exclude_seen=config.exclude_seen,
        )
        parts.append(recs.with_columns(pl.lit(fallback, pl.Boolean).alias(FALLBACK)))
    if not parts:
        item_dtype = model.index_.schema[ITEM_ID]  # type: ignore[union-attr]
        schema = {USER_ID: users.dtype, ITEM_ID: item_dtype, SCORE: pl.Float32, RANK: pl.UInt32, FALLBACK: pl.Boolean}
        return pl.DataFrame(schema=schema)
    positions = users.to_frame().with_row_index("_pos")
    frame = pl.concat(parts).join(positions, on=USER_ID, how="left")
    return frame.sort("_pos", RANK).select(OUTPUT_COLUMNS)


def write_shard(
    out: Path,
    i: int,
    model: Recommender,
    users: pl.Series,
    known: pl.Series,
    history: pl.DataFrame | None,
    config: BatchConfig,
    key: str,
) -> dict[str, Any]:
    """Compute shard ``i`` for ``users`` (:func:`recommend_shard`), check it (:func:`check_shard`) and commit it
    under job ``key`` (temporary file, fsync, rename, then its commit record); return the commit record.

    Idempotent: the same inputs write the same bytes, so a retried or repeated call leaves the same shard."""
    frame = recommend_shard(model, users, known, history, config)
    check_shard(frame, users, config.k)
    return _commit(out, i, frame, key)


def write_success(out: Path, job: dict[str, Any], config: BatchConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``_SUCCESS`` (atomically, last) from every shard's commit record (in shard order) and return it; equal
    jobs give equal bytes."""
    manifest = {
        "format": FORMAT,
        "job": job,
        "config": {name: getattr(config, name) for name in ("k", "exclude_seen", "memory_budget_mb")},
        "model_fingerprint": job["model_fingerprint"],
        "recsys_version": __version__,
        "k": job["k"],
        "columns": list(OUTPUT_COLUMNS),
        "total_users": sum(r["users"] for r in records),
        "total_rows": sum(r["rows"] for r in records),
        "fallback_users": sum(r["fallback_users"] for r in records),
        "shards": [{name: r[name] for name in ("file", "rows", "users", "fallback_users", "sha256")} for r in records],
    }
    write_atomic(out / SUCCESS, json_bytes(manifest))
    return manifest


def _commit(out: Path, i: int, frame: pl.DataFrame, key: str) -> dict[str, Any]:
    """Serialise shard ``i`` to Parquet and commit it with its row, user and fallback-user counts."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    counts = {
        "rows": frame.height,
        "users": frame[USER_ID].n_unique(),
        "fallback_users": frame.filter(pl.col(FALLBACK))[USER_ID].n_unique(),
    }
    return commit_shard(out, i, buffer.getvalue(), key, counts)
