"""Per-user event sequences as flat numpy arrays (CSR layout), the hand-off format to numeric stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.errors import DataError, SchemaError
from recsys.schema import ITEM_ID, ITEM_IDX, TIMESTAMP, USER_ID, WEIGHT

__all__ = ["Histories", "item_index"]


def item_index(items: pl.DataFrame) -> pl.DataFrame:
    """``item_id -> item_idx (UInt32)``: the dense row number of each item in the catalogue ``items``."""
    return items.select(ITEM_ID).with_row_index(ITEM_IDX)


def _checked_events(events: pl.DataFrame, index: pl.DataFrame) -> pl.DataFrame:
    """``events`` with an Int64 ``timestamp``, after the checks :meth:`Histories.from_interactions` documents."""
    missing = [c for c in (USER_ID, ITEM_ID, TIMESTAMP) if c not in events.columns]
    if missing:
        raise SchemaError(
            f"events lack column(s) {missing}; they have {events.columns}. Pass user_id, item_id, timestamp."
        )
    expected = index.schema[ITEM_ID]
    if events.schema[ITEM_ID] == pl.Null:  # all null: reported as unknown items below
        events = events.with_columns(pl.col(ITEM_ID).cast(expected))
    if events.schema[ITEM_ID] != expected:
        raise SchemaError(
            f"events column 'item_id' has dtype {events.schema[ITEM_ID]} but the catalogue's item_id has dtype "
            f"{expected}. Fix: cast it, e.g. pl.col('item_id').cast(pl.{expected})."
        )
    events = events.with_columns(_timestamp_expr(events))
    if events[USER_ID].null_count():
        raise DataError(
            f"events column 'user_id' holds {events[USER_ID].null_count()} null(s); fill or remove those events."
        )
    for column in (TIMESTAMP, WEIGHT):
        values = events[column].cast(pl.Float64, strict=False).cast(pl.Float32) if column in events.columns else None
        if values is not None and not values.is_finite().fill_null(False).all():
            raise DataError(
                f"events column {column!r} holds null, NaN, infinite or non-numeric values; fix or remove those "
                "events (Dataset.from_frames with DataConfig(on_invalid='repair') drops them)."
            )
    return events


def _timestamp_expr(events: pl.DataFrame) -> pl.Expr:
    dtype = events.schema[TIMESTAMP]
    column = pl.col(TIMESTAMP)
    if isinstance(dtype, pl.Datetime):
        return column.dt.epoch("s")
    if dtype.is_float():
        whole = ((column == column.floor()) & (column.abs() < 2.0**63)) | ~column.is_finite()
        if not events.select(whole.fill_null(True).all()).item():
            raise SchemaError(
                f"events column 'timestamp' ({dtype}) holds fractional or out-of-range values; expected whole unix "
                "seconds or positions. Fix: pl.col('timestamp').round().cast(pl.Int64)."
            )
        return pl.when(column.is_finite()).then(column).cast(pl.Int64, strict=False)
    if dtype.is_integer() or dtype == pl.Null:
        return column.cast(pl.Int64, strict=False)
    raise SchemaError(
        f"events column 'timestamp' has dtype {dtype}; expected integer unix seconds or positions, or a Datetime. "
        "Fix: parse it, e.g. pl.col('timestamp').str.to_datetime()."
    )


@dataclass(frozen=True)
class Histories:
    """Events of ``n_users`` users, oldest first, in CSR layout.

    Attributes
    ----------
    user_ids:
        Series of length ``n_users``, in the requested order.
    indptr:
        int64 array of shape ``(n_users + 1,)``; user ``u``'s events are ``indptr[u]:indptr[u + 1]``.
    item_idx:
        int64 array of shape ``(n_events,)``: catalogue rows.
    timestamps:
        int64 array of shape ``(n_events,)``.
    weights:
        float32 array of shape ``(n_events,)``, or None when the data has no weight.
    """

    user_ids: pl.Series
    indptr: np.ndarray
    item_idx: np.ndarray
    timestamps: np.ndarray
    weights: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        """int64 array of shape ``(n_users,)``: events per user."""
        return np.diff(self.indptr)

    def items_of(self, u: int) -> np.ndarray:
        """Catalogue rows of user ``u``'s events, oldest first."""
        return self.item_idx[self.indptr[u] : self.indptr[u + 1]]

    def select(
        self, rows: np.ndarray, starts: np.ndarray | None = None, lengths: np.ndarray | None = None
    ) -> Histories:
        """Events ``starts[i] : starts[i] + lengths[i]`` (CSR positions; default: whole histories) of users
        ``rows``, as new Histories in that order."""
        rows = np.asarray(rows, np.int64)
        starts = self.indptr[rows] if starts is None else starts
        lengths = self.lengths[rows] if lengths is None else lengths
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        pos = np.repeat(starts, lengths) + offsets  # (n_selected,)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        weights = self.weights[pos] if self.weights is not None else None
        return Histories(self.user_ids[rows], indptr, self.item_idx[pos], self.timestamps[pos], weights)

    def last(self, n: int) -> Histories:
        """Each user's last ``n`` events."""
        lengths = np.minimum(self.lengths, n)
        return self.select(np.arange(self.n_users), self.indptr[1:] - lengths, lengths)

    def event_user(self) -> np.ndarray:
        """int64 array of shape ``(n_events,)``: the position of each event's user."""
        return np.repeat(np.arange(self.n_users), self.lengths)

    def event_age(self) -> np.ndarray:
        """int64 array of shape ``(n_events,)``: how many later events its user's history holds (0 for the
        newest event of each history)."""
        return np.repeat(self.indptr[1:] - 1, self.lengths) - np.arange(self.item_idx.size)

    @classmethod
    def from_interactions(
        cls, interactions: pl.DataFrame, index: pl.DataFrame, users: pl.Series | None = None
    ) -> Histories:
        """Gather the events of ``users`` (default: every user, in order of first appearance).

        ``index`` is :func:`item_index` of the catalogue. Users without events get an empty history.

        ``timestamp`` may be any integer type, a ``Datetime`` (converted to unix seconds, as validation does)
        or whole floats; ``weight``, when present, becomes float32.

        Raises
        ------
        SchemaError
            A column is missing, ``item_id`` has another dtype than the catalogue's, ``users`` cannot be cast
            to the events' ``user_id``, or ``timestamp`` is not a time or holds fractional values.
        DataError
            An event has a null user, references an item that is not in the catalogue, or has a null or
            non-finite timestamp or weight.
        """
        interactions = _checked_events(interactions, index)
        df = interactions.join(index, on=ITEM_ID, how="left")
        unknown = df.filter(pl.col(ITEM_IDX).is_null())
        if unknown.height:
            examples = unknown[ITEM_ID].unique(maintain_order=True).head(5).to_list()
            raise DataError(
                f"{unknown.height} event(s) reference item_id values not in the catalogue (for example {examples}). "
                "Fix: add these items (with text) before scoring, or remove their events."
            )
        if users is None:
            users = df[USER_ID].unique(maintain_order=True)
        try:
            positions = pl.DataFrame({USER_ID: users.cast(df.schema[USER_ID])}).with_row_index("_pos")
        except pl.exceptions.InvalidOperationError as err:
            raise SchemaError(
                f"users have dtype {users.dtype} but the events' user_id has dtype {df.schema[USER_ID]}; cast them."
            ) from err
        df = df.join(positions, on=USER_ID, how="inner").sort(["_pos", TIMESTAMP], maintain_order=True)
        counts = np.bincount(df["_pos"].to_numpy(), minlength=len(users)) if df.height else np.zeros(len(users))
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        weights = df[WEIGHT].to_numpy().astype(np.float32) if WEIGHT in df.columns else None
        return cls(
            user_ids=users.rename(USER_ID),
            indptr=indptr,
            item_idx=df[ITEM_IDX].to_numpy().astype(np.int64),
            timestamps=df[TIMESTAMP].to_numpy().astype(np.int64),
            weights=weights,
        )
