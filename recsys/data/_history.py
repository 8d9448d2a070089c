"""Per-user event sequences as flat numpy arrays (CSR layout), the hand-off format to numeric stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.errors import DataError
from recsys.schema import ITEM_ID, ITEM_IDX, TIMESTAMP, USER_ID, WEIGHT

__all__ = ["Histories", "item_index"]


def item_index(items: pl.DataFrame) -> pl.DataFrame:
    """``item_id -> item_idx (UInt32)``: the dense row number of each item in the catalogue ``items``."""
    return items.select(ITEM_ID).with_row_index(ITEM_IDX)


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

    @classmethod
    def from_interactions(
        cls, interactions: pl.DataFrame, index: pl.DataFrame, users: pl.Series | None = None
    ) -> Histories:
        """Gather the events of ``users`` (default: every user, in order of first appearance).

        ``index`` is :func:`item_index` of the catalogue. Users without events get an empty history.

        Raises
        ------
        DataError
            An event references an item that is not in the catalogue.
        """
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
        positions = pl.DataFrame({USER_ID: users.cast(df.schema[USER_ID])}).with_row_index("_pos")
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
